"""Golden cases: the inputs, options and cotangents that ``python -m ref golden export`` writes.

Each op module has a ``cases(rng)`` generator returning a list of ``Case``. Together an op's cases
cover what kernels get wrong (notes/golden-conventions.md, section 6):

* T = 1, and lengths that are not multiples of the usual chunk sizes (63, 500);
* head and state sizes that are not powers of two (3, 5, 6, 10, 12);
* strong and weak decays (gates ``logsigmoid(x) / tau`` with tau = 0.1 and 10, as FLA's tests);
* with and without an initial state, with and without the final state and its cotangent.

A case also records the two numbers its tolerance is derived from (ref/golden/CONVENTIONS.md,
"Tolerances"): ``length``, how many terms the longest sum of the computation adds up (time steps
plus the reduced head dims), and ``exponent``, the largest magnitude of an exponent the op takes
(a sum of log-decays over the sequence, an attention score), whose rounding error every
exp() carries into the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# what the four FLA linear-attention ops (linear_attn, retention, simple_gla, gla) share
FLA_STATE_LAYOUT = (
    "[K, V] per head: (B, H, K, V), FLA's default state_v_first=False "
    "(FLA's layers pass state_v_first=True: (B, H, V, K))"
)
FLA_LAYOUT_TRAP = (
    "layout: time-first [B, T, H, K] (FLA since 2025-04, commit 40de3097); older code and naive_retention "
    "are head-first [B, H, T, K]: transpose, do not reshape"
)

# tau of the FLA-style gate logsigmoid(x) / tau; "strong" reaches decays of e^-30 per step
DECAYS = {"weak": 10.0, "mid": 1.0, "strong": 0.1}


@dataclass(frozen=True)
class Case:
    """One golden case: ``arrays`` holds the op's inputs, its options as 0-d arrays and the
    cotangents ``d<output>``, all float64 (options in their own type), as ``golden.run`` takes them."""

    name: str  # a file name without extension: "T63_weak_h0"
    description: str
    arrays: dict
    length: int  # terms in the longest accumulated sum (for the tolerance)
    exponent: float  # largest |exponent| evaluated (for the tolerance)


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


def log_gates(rng, shape, decay):
    """Natural-log decays <= 0 as GLA makes them: logsigmoid(x) / tau, x ~ N(0, 1)."""
    return log_sigmoid(rng.standard_normal(shape)) / DECAYS[decay]


def decay_span(log_decay, time_axis=1) -> float:
    """The largest sum of |log-decay| over the whole sequence: the exponent range of a cumsum."""
    return float(np.abs(log_decay).sum(axis=time_axis).max()) if log_decay.size else 0.0


def option(value):
    """An option as the 0-d array that an IN.npz holds."""
    return np.array(value)


def fla_cases(rng, *, gate=None, span=None):
    """The cases shared by FLA's linear-attention ops (linear_attn, retention, simple_gla, gla).

    ``gate``: None (no gate argument), "g" (one gate per head, (B, T, H)) or "gk" (one per key dim,
    (B, T, H, K)). ``span(arrays)`` gives the exponent range when the op has a fixed decay
    (retention); otherwise it is that of the gate.
    """
    # name, B, T, H, K, V, decay, initial state, final state (+ its cotangent), scale
    plan = [
        ("T1", 2, 1, 2, 5, 6, "mid", True, True, None),
        ("T63_weak_h0", 2, 63, 2, 12, 10, "weak", True, True, None),
        ("T63_strong", 1, 63, 3, 6, 5, "strong", False, False, 0.1),
        ("T500_strong_h0", 1, 500, 1, 3, 5, "strong", True, True, None),
        ("T500_weak", 1, 500, 1, 5, 3, "weak", False, True, 1.0),
    ]
    cases = []
    for name, B, T, H, K, V, decay, with_h0, final, scale in plan:
        arrays = {
            "q": rng.standard_normal((B, T, H, K)),  # (B, T, H, K)
            "k": rng.standard_normal((B, T, H, K)),  # (B, T, H, K)
            "v": rng.standard_normal((B, T, H, V)),  # (B, T, H, V)
        }
        if gate == "g":
            arrays["g"] = log_gates(rng, (B, T, H), decay)  # (B, T, H)
        elif gate == "gk":
            arrays["gk"] = log_gates(rng, (B, T, H, K), decay)  # (B, T, H, K)
        if with_h0:
            arrays["initial_state"] = rng.standard_normal((B, H, K, V))  # (B, H, K, V)
        if scale is not None:
            arrays["scale"] = option(scale)
        arrays["output_final_state"] = option(final)
        arrays["do"] = rng.standard_normal((B, T, H, V))
        if final:
            arrays["dht"] = rng.standard_normal((B, H, K, V))
        if gate is None:
            name = name.replace("_weak", "").replace("_strong", "")
            exponent = span(arrays) if span else 0.0
            what = ""
        else:
            exponent = decay_span(arrays[gate])
            what = f"{decay} decay, "
        description = (
            f"B={B} T={T} H={H} K={K} V={V}; {what}"
            f"{'an initial state' if with_h0 else 'no initial state'}; "
            f"{'final state ht and its cotangent dht' if final else 'no final state'}; "
            f"scale {'default K^-0.5' if scale is None else scale}"
        )
        cases.append(Case(name, description, arrays, length=T + K + V, exponent=exponent))
    return cases
