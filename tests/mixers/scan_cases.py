"""Random cases and error bounds for the linear-scan tests (shared by the CUDA-simulator tests).

Error bound. Every form computes each h_t = sum_s (a_{s+1} ... a_t) b_s + (a_0 ... a_t) h_{-1}
as a different sequence of multiplications and additions. Each term passes through at most
T + 2 roundings in any form (the loop: t; Hillis-Steele: 2 log2 T; chunked: C + n + 2), each
of relative size <= u (unit round-off), so

    |h_form - h_exact| <= 2 (T + 2) u habs_t,   habs = the same scan run on |a|, |b|, |h_{-1}|

(standard forward error analysis of sums and products; FMA only removes roundings). Comparing
two forms doubles it: 4 (T + 2) u habs. The backward recurrence g has the same structure with
gabs (the reverse scan of |a|, |dh|, |dht|); da_t = g_t h_{t-1} adds both errors, so its bound
is 4 (T + 2) u (gabs_t habs_{t-1}) * 2 + u |da|. A real bug (an off-by-one in time, a missing
term) produces an error of the size of the values themselves, far above these bounds.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.compare import assert_within  # noqa: F401  (re-exported for the scan tests)

REGIMES = ("mixed", "near_zero", "near_one", "exact_zero", "negative_near_one")


def draw_a(rng, shape, regime, dtype):
    if regime == "mixed":  # anywhere in (-1, 1)
        a = rng.uniform(-1, 1, shape)
    elif regime == "near_zero":  # forgets almost at once
        a = rng.uniform(-1e-3, 1e-3, shape)
    elif regime == "near_one":  # remembers almost everything
        a = 1 - rng.uniform(0, 1e-3, shape)
    elif regime == "exact_zero":  # some steps reset the state exactly
        a = rng.uniform(0, 1, shape) * (rng.uniform(size=shape) > 0.3)
    else:  # oscillating sign, slow decay
        a = -(1 - rng.uniform(0, 1e-2, shape))
    return a.astype(dtype)


@st.composite
def scan_cases(draw, max_T=70, dtypes=(np.float64,)):
    """(B, T, D), chunk size, regime, flags and a seed: T = 1 and T not a multiple of C included."""
    B = draw(st.integers(1, 3))
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    D = draw(st.integers(1, 5))
    C = draw(st.one_of(st.just(1), st.integers(1, 17), st.just(T), st.just(T + 3)))
    return dict(
        B=B,
        T=T,
        D=D,
        chunk_size=C,
        regime=draw(st.sampled_from(REGIMES)),
        with_h0=draw(st.booleans()),
        with_dht=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, D, dt = case["B"], case["T"], case["D"], case["dtype"]
    a = draw_a(rng, (B, T, D), case["regime"], dt)
    b = rng.standard_normal((B, T, D)).astype(dt)
    h0 = rng.standard_normal((B, D)).astype(dt) if case["with_h0"] else None
    dh = rng.standard_normal((B, T, D)).astype(dt)
    dht = rng.standard_normal((B, D)).astype(dt) if case["with_dht"] else None
    return a, b, h0, dh, dht


def _abs_scan(a, b, h0, reverse=False):
    """The recurrence on absolute values, in float64, forward or (for g) backward in time."""
    a, b = np.abs(a).astype(np.float64), np.abs(b).astype(np.float64)
    out = np.empty_like(b)
    s = np.zeros_like(b[:, 0]) if h0 is None else np.abs(h0).astype(np.float64)
    T = a.shape[1]
    for t in range(T - 1, -1, -1) if reverse else range(T):
        if reverse:  # g_t = dh_t + a_{t+1} g_{t+1}
            s = b[:, t] + (a[:, t + 1] * s if t + 1 < T else s)
        else:
            s = a[:, t] * s + b[:, t]
        out[:, t] = s
    return out


def bounds(a, b, h0, dh, dht, dtype):
    """Elementwise tolerances for (h, ht, da, db, dh0) when comparing two forms in ``dtype``."""
    u = np.finfo(dtype).eps / 2
    T = a.shape[1]
    k = 4 * (T + 2) * u
    habs = _abs_scan(a, b, h0)
    gabs = _abs_scan(a, dh, dht, reverse=True)
    habs_prev = np.concatenate([np.zeros_like(habs[:, :1]) if h0 is None else np.abs(h0)[:, None], habs[:, :-1]], 1)
    tiny = np.finfo(dtype).tiny
    return dict(
        h=k * habs + tiny,
        ht=k * habs[:, -1] + tiny,
        da=2 * k * gabs * habs_prev + u * gabs * habs_prev + tiny,
        db=k * gabs + tiny,
        dh0=2 * k * np.abs(a[:, 0]) * gabs[:, 0] + tiny,
    )
