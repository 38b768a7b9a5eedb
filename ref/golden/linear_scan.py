"""Golden op ``linear_scan``: h_t = a_t h_{t-1} + b_t (ref.mixers.linear_scan)."""

import numpy as np

from ref.golden.cases import Case, decay_span
from ref.golden.registry import GoldenOp, Tensor, register
from ref.mixers.linear_scan import linear_scan_recurrent, linear_scan_recurrent_backward

# a_t ~ U[lo, hi]: "strong" forgets within a few steps, "weak" remembers for hundreds; negative a
# (allowed: the scan is linear in any real a) flips the sign of the state
_A_RANGE = {"strong": (-0.5, 0.5), "mid": (0.0, 1.0), "weak": (0.95, 1.0)}


def cases(rng):
    """T = 1, 63, 500; D not a power of two; strong and weak decays; with and without h_{-1} and dht."""
    plan = [  # name, B, T, D, decay, initial state, cotangent of ht
        ("T1", 2, 1, 5, "mid", True, True),
        ("T63_weak_h0", 2, 63, 6, "weak", True, False),
        ("T63_strong", 1, 63, 3, "strong", False, True),
        ("T500_weak_h0", 1, 500, 5, "weak", True, True),
        ("T500_mid", 1, 500, 3, "mid", False, False),
    ]
    out = []
    for name, B, T, D, decay, with_h0, with_dht in plan:
        arrays = {"a": rng.uniform(*_A_RANGE[decay], (B, T, D)), "b": rng.standard_normal((B, T, D))}  # (B, T, D)
        if with_h0:
            arrays["initial_state"] = rng.standard_normal((B, D))  # (B, D)
        arrays["dh"] = rng.standard_normal((B, T, D))
        if with_dht:
            arrays["dht"] = rng.standard_normal((B, D))
        description = (f"B={B} T={T} D={D}; {decay} decay a ~ U{_A_RANGE[decay]}; "
                       f"{'an initial state' if with_h0 else 'no initial state'}; "
                       f"cotangents dh{' and dht' if with_dht else ' only'}")
        # |log a| is unbounded near a = 0, but then the term it multiplies is negligible: clip at e^-40
        exponent = decay_span(np.log(np.maximum(np.abs(arrays["a"]), np.exp(-40.0))))
        out.append(Case(name, description, arrays, length=T, exponent=exponent))
    return out


def _forward(inputs, options):
    h, ht, cache = linear_scan_recurrent(inputs["a"], inputs["b"], inputs.get("initial_state"))

    def backward(cot):
        da, db, dh0 = linear_scan_recurrent_backward(cot["dh"], cot["dht"], cache)
        return {"da": da, "db": db, "dinitial_state": dh0}

    return {"h": h, "ht": ht}, backward


register(
    GoldenOp(
        name="linear_scan",
        mirrors="this package's definition (the first-order scan inside mamba_ssm's selective_scan_ref)",
        layout="time second: a, b, h (B, T, D); states (B, D)",
        inputs=(
            Tensor("a", "(B, T, D)", "decay coefficients"),
            Tensor("b", "(B, T, D)", "inputs"),
            Tensor("initial_state", "(B, D)", "h_{-1}; zeros if absent", optional=True),
        ),
        outputs=(Tensor("h", "(B, T, D)", "all states"), Tensor("ht", "(B, D)", "the final state h_{T-1}")),
        forward=_forward,
        notes="h_t = a_t * h_{t-1} + b_t, elementwise; no scale, no gate.",
        reference="linear_scan (this package)",
        state_layout="(B, D), one scalar state per channel",
        conventions=(
            "a is the decay itself, not its log (unlike FLA's gates and Mamba's delta * A)",
            "h holds every state h_0 .. h_{T-1}; ht = h_{T-1} is also returned, so dht adds to dh[:, -1]",
        ),
        cases=cases,
    )
)
