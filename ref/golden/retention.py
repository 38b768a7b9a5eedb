"""Golden op ``retention``: RetNet's retention with FLA's fixed decays (ref.mixers.retention).

Mirrors flash-linear-attention's ``fused_recurrent_retention(q, k, v, scale=None,
initial_state=None, output_final_state=False)`` (and ``chunk_retention``), which run simple GLA
with the constant log-decay g_gamma = log(1 - 2^(-5 - h)) for head h. FLA's ``naive_retention``
is stale (head-first layout, no state, no scale) and is not the reference.
"""

import numpy as np

from ref.golden.cases import FLA_LAYOUT_TRAP, FLA_STATE_LAYOUT, fla_cases
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.retention import default_gamma, retention_recurrent, retention_recurrent_backward


def _span(arrays):
    """The exponent range of the fixed decays: T |log gamma_h| for the fastest-decaying head (h = 0)."""
    _, T, H, _ = arrays["q"].shape
    return float(T * np.abs(np.log(default_gamma(H))).max())


def _forward(inputs, options):
    o, ht, cache = retention_recurrent(
        inputs["q"], inputs["k"], inputs["v"], scale=options["scale"], initial_state=inputs.get("initial_state")
    )

    def backward(cot):
        dq, dk, dv, dh0 = retention_recurrent_backward(cot["do"], cot["dht"], cache)
        return {"dq": dq, "dk": dk, "dv": dv, "dinitial_state": dh0}

    outputs = {"o": o, "ht": ht} if options["output_final_state"] else {"o": o}
    return outputs, backward


register(
    GoldenOp(
        name="retention",
        mirrors="fused_recurrent_retention, fla/ops/retention/fused_recurrent.py, "
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
        notes="S_t = gamma_h S_{t-1} + k_t^T v_t;  o_t = scale * q_t S_t;  gamma_h = 1 - 2^(-5-h), fixed (no grad).",
        reference="fused_recurrent_retention",
        state_layout=FLA_STATE_LAYOUT,
        conventions=(
            "the decay is fixed per head: g_gamma = log(1 - 2^(-5 - h)) in natural log, h = 0 .. H-1; "
            "it depends on H, so a kernel must be given the same number of heads",
            "equivalent to simple GLA with g = g_gamma broadcast to (B, T, H), which is how FLA computes it",
            "FLA's naive_retention is stale (head-first [B, H, T, K], no state, no scale): do not compare with it",
            "scale: None means K^-0.5",
            FLA_LAYOUT_TRAP,
        ),
        cases=lambda rng: fla_cases(rng, span=_span),
    )
)
