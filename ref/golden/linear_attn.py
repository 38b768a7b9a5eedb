"""Golden op ``linear_attn``: unnormalised linear attention (ref.mixers.linear_attention).

Mirrors flash-linear-attention's ``naive_recurrent_linear_attn(q, k, v, scale=None,
initial_state=None, output_final_state=False, normalize=False)`` with ``normalize=False``: the
normalised variant's state is a pair (S, z) that FLA's reference does not return.
"""

from ref.golden.cases import FLA_LAYOUT_TRAP, FLA_STATE_LAYOUT, fla_cases
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.linear_attention import linear_attention_recurrent, linear_attention_recurrent_backward


def _forward(inputs, options):
    o, ht, cache = linear_attention_recurrent(
        inputs["q"], inputs["k"], inputs["v"], scale=options["scale"], initial_state=inputs.get("initial_state")
    )

    def backward(cot):
        dq, dk, dv, dh0 = linear_attention_recurrent_backward(cot["do"], cot["dht"], cache)
        return {"dq": dq, "dk": dk, "dv": dv, "dinitial_state": dh0}

    outputs = {"o": o, "ht": ht} if options["output_final_state"] else {"o": o}
    return outputs, backward


register(
    GoldenOp(
        name="linear_attn",
        mirrors="naive_recurrent_linear_attn with normalize=False, fla/ops/linear_attn/naive.py, "
        "fla-org/flash-linear-attention @bc3b101 (v0.5.2)",
        layout="FLA time-first: q, k (B, T, H, K); v, o (B, T, H, V); states (B, H, K, V)",
        inputs=(
            Tensor("q", "(B, T, H, K)", "queries"),
            Tensor("k", "(B, T, H, K)", "keys"),
            Tensor("v", "(B, T, H, V)", "values"),
            Tensor("initial_state", "(B, H, K, V)", "S_{-1}; zeros if absent", optional=True),
        ),
        outputs=(
            Tensor("o", "(B, T, H, V)", "outputs"),
            Tensor("ht", "(B, H, K, V)", "the final state, only when output_final_state", when="output_final_state"),
        ),
        options=(
            Option("scale", float, None, "multiplies q; default K^-0.5"),
            Option("output_final_state", bool, False, "output ht"),
        ),
        forward=_forward,
        notes="S_t = S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t  (no normalisation).",
        reference="naive_recurrent_linear_attn",
        state_layout=FLA_STATE_LAYOUT,
        conventions=(
            "normalize=False only: with normalize=True FLA's state is a pair (S, z) that the reference does not return",
            "no feature map: q and k are used as given (apply elu+1 or any other map before the op)",
            "scale: None means K^-0.5",
            "naive_chunk_linear_attn hard-codes chunks of 64 and needs T % 64 == 0; the golden lengths (1, 63, 500) "
            "are not multiples on purpose",
            FLA_LAYOUT_TRAP,
        ),
        cases=lambda rng: fla_cases(rng),
    )
)
