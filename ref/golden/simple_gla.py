"""Golden op ``simple_gla``: simple GLA, one scalar gate per head and step (ref.mixers.simple_gla).

Mirrors flash-linear-attention's ``naive_recurrent_simple_gla(q, k, v, g, scale=None,
initial_state=None, output_final_state=True)``; note that its ``output_final_state`` defaults to
True, unlike the other FLA references.
"""

from ref.golden.cases import FLA_LAYOUT_TRAP, FLA_STATE_LAYOUT, fla_cases
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.simple_gla import simple_gla_recurrent, simple_gla_recurrent_backward


def _forward(inputs, options):
    o, ht, cache = simple_gla_recurrent(
        inputs["q"],
        inputs["k"],
        inputs["v"],
        inputs["g"],
        scale=options["scale"],
        initial_state=inputs.get("initial_state"),
    )

    def backward(cot):
        dq, dk, dv, dg, dh0 = simple_gla_recurrent_backward(cot["do"], cot["dht"], cache)
        return {"dq": dq, "dk": dk, "dv": dv, "dg": dg, "dinitial_state": dh0}

    outputs = {"o": o, "ht": ht} if options["output_final_state"] else {"o": o}
    return outputs, backward


register(
    GoldenOp(
        name="simple_gla",
        mirrors="naive_recurrent_simple_gla, fla/ops/simple_gla/naive.py, "
        "fla-org/flash-linear-attention @bc3b101 (v0.5.2)",
        layout="FLA time-first: q, k (B, T, H, K); v, o (B, T, H, V); g (B, T, H); states (B, H, K, V)",
        inputs=(
            Tensor("q", "(B, T, H, K)", "queries"),
            Tensor("k", "(B, T, H, K)", "keys"),
            Tensor("v", "(B, T, H, V)", "values"),
            Tensor("g", "(B, T, H)", "natural-log decays <= 0, one per head and step"),
            Tensor("initial_state", "(B, H, K, V)", "S_{-1}; zeros if absent", optional=True),
        ),
        outputs=(
            Tensor("o", "(B, T, H, V)", "outputs"),
            Tensor("ht", "(B, H, K, V)", "the final state, only when output_final_state", when="output_final_state"),
        ),
        options=(
            Option("scale", float, None, "multiplies q; default K^-0.5"),
            Option("output_final_state", bool, True, "output ht (FLA's naive reference defaults to True)"),
        ),
        forward=_forward,
        notes="S_t = exp(g_t) S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t.",
        reference="naive_recurrent_simple_gla",
        state_layout=FLA_STATE_LAYOUT,
        conventions=(
            "g: natural-log decays <= 0, one scalar per head and step, shape (B, T, H) (not (B, T, H, K))",
            "output_final_state defaults to True in naive_recurrent_simple_gla, False in chunk_simple_gla: "
            "every golden case sets it explicitly",
            "chunk_simple_gla's g_gamma (H,) is a constant log-decay per head: pass g = g_gamma broadcast to (B, T, H)",
            "scale: None means K^-0.5",
            FLA_LAYOUT_TRAP,
        ),
        cases=lambda rng: fla_cases(rng, gate="g"),
    )
)
