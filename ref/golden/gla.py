"""Golden op ``gla``: gated linear attention, a gate per key dim (ref.mixers.gla).

Mirrors flash-linear-attention's ``naive_recurrent_gla(q, k, v, gk, initial_state=None,
output_final_state=False)``. That reference hard-codes scale = K^-0.5; the option ``scale`` (the
argument of FLA's ``chunk_gla`` and ``fused_recurrent_gla``) defaults to the same value.
"""

from ref.golden.cases import FLA_LAYOUT_TRAP, FLA_STATE_LAYOUT, fla_cases
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.gla import gla_recurrent, gla_recurrent_backward


def _forward(inputs, options):
    o, ht, cache = gla_recurrent(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["gk"],
        scale=options["scale"],
        initial_state=inputs.get("initial_state"),
    )

    def backward(cot):
        dq, dk, dv, dgk, dh0 = gla_recurrent_backward(cot["do"], cot["dht"], cache)
        return {"dq": dq, "dk": dk, "dv": dv, "dgk": dgk, "dinitial_state": dh0}

    outputs = {"o": o, "ht": ht} if options["output_final_state"] else {"o": o}
    return outputs, backward


register(
    GoldenOp(
        name="gla",
        mirrors="naive_recurrent_gla, fla/ops/gla/naive.py, fla-org/flash-linear-attention @bc3b101 (v0.5.2)",
        layout="FLA time-first: q, k, gk (B, T, H, K); v, o (B, T, H, V); states (B, H, K, V)",
        inputs=(
            Tensor("q", "(B, T, H, K)", "queries"),
            Tensor("k", "(B, T, H, K)", "keys"),
            Tensor("v", "(B, T, H, V)", "values"),
            Tensor("gk", "(B, T, H, K)", "natural-log decays <= 0, one per key dim"),
            Tensor("initial_state", "(B, H, K, V)", "S_{-1}; zeros if absent", optional=True),
        ),
        outputs=(
            Tensor("o", "(B, T, H, V)", "outputs"),
            Tensor("ht", "(B, H, K, V)", "the final state, only when output_final_state", when="output_final_state"),
        ),
        options=(
            Option("scale", float, None, "multiplies q; default K^-0.5 (hard-coded in naive_recurrent_gla)"),
            Option("output_final_state", bool, False, "output ht"),
        ),
        forward=_forward,
        notes="S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t.",
        reference="naive_recurrent_gla",
        state_layout=FLA_STATE_LAYOUT,
        conventions=(
            "gk: natural-log decays <= 0 (FLA's layer uses logsigmoid(x) / 16); the Triton kernels convert to log2 "
            "internally, the reference does not",
            "gk decays the key rows of the state: S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t, decay before the update",
            "scale: naive_recurrent_gla hard-codes K^-0.5 and has no scale argument; chunk_gla and "
            "fused_recurrent_gla take scale=None meaning K^-0.5",
            "output_final_state defaults to False: ht and dht exist only when it is set",
            FLA_LAYOUT_TRAP,
        ),
        cases=lambda rng: fla_cases(rng, gate="gk"),
    )
)
