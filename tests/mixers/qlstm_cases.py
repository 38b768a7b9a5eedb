"""Random cases and error bounds for the quasi-LSTM tests (shared by the CUDA-simulator tests).

Error bound. Both forms compute c_t = sum_s (f_{s+1} ... f_t) u_s + (f_0 ... f_t) c_{-1}; they differ
in how the products are formed (repeated multiplication, or exp of a segment sum of log f over a
block of L steps) and in the order of the additions. Per step, a factor f_t carries a relative
error of about (|fx_t + 1| (1 - f_t) + 4) u (the rounding of the argument times log sigmoid', plus
the sigmoid's own), and the segment sum adds (L + 2) u |log f_t|; i, z, o add at most
(|ix| + |ox| + 2 |zx| + 8) u. So every term of c_t is within K u of its exact value, relative, with

    K = T + 24 + sum_t [ |fx_t + 1| (1 - f_t) + (L + 2) |log f_t| ] + max_t (|ix_t| + |ox_t| + 2 |zx_t|)

per (batch, channel), and |c_form - c_exact| <= K u cabs, cabs the recurrence run on f, |u|,
|c_{-1}|. Through the chain rule (tanh' and sigmoid' are <= 1, |tanh c| <= |c|):
h within (K + 4) u o cabs; the direct gradient of c within 2 (K + 2) u w, w = |dh| o (1 + cabs);
g (the total gradient of c) within K3 u gabs, K3 = 3 K + 4, gabs the reverse recurrence run on
f, w, |dct|; and the input gradients follow from g by one more product each, whose factor
1 - s (s = f, i, o, or z^2) is a difference with an absolute rounding error of a few u
(``bounds``). Two forms: twice that. A bug (a missing term, a shifted index) errs by the size of the values.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ref.mixers.qlstm import FORMS

NAMES = ("h", "ct", "dfx", "dix", "dzx", "dox", "dc0")
# forget-gate pre-activations: f = sigmoid(fx + 1)
REGIMES = {
    "mixed": (0.0, 2.0),  # f anywhere in (0, 1)
    "strong": (-5.0, 1.0),  # f ~ 0.02: forgets almost at once
    "weak": (8.0, 1.0),  # f ~ 0.9999: remembers almost everything
    "extreme": (0.0, 30.0),  # f rounds to 0 or 1 at some steps
}


@st.composite
def qlstm_cases(draw, max_T=40, dtypes=(np.float64,)):
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    return dict(
        B=draw(st.integers(1, 2)),
        T=T,
        D=draw(st.integers(1, 5)),
        block_length=draw(st.one_of(st.just(1), st.integers(1, 17), st.just(T), st.just(T + 3))),
        regime=draw(st.sampled_from(sorted(REGIMES))),
        with_c0=draw(st.booleans()),
        with_dct=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, D, dt = case["B"], case["T"], case["D"], case["dtype"]
    mean, std = REGIMES[case["regime"]]
    fx = (mean + std * rng.standard_normal((B, T, D))).astype(dt)
    ix, zx, ox = (2 * rng.standard_normal((3, B, T, D))).astype(dt)
    c0 = rng.standard_normal((B, D)).astype(dt) if case["with_c0"] else None
    dh = rng.standard_normal((B, T, D)).astype(dt)
    dct = rng.standard_normal((B, D)).astype(dt) if case["with_dct"] else None
    return (fx, ix, zx, ox), c0, dh, dct


def run(form, backend, xs, c0, dh, dct, block_length):
    forward, backward = FORMS[form]
    kwargs = {"backend": backend}
    if form == "block_parallel":
        kwargs["block_length"] = block_length
    h, ct, cache = forward(*xs, c0, **kwargs)
    grads = backward(dh, dct, cache)
    return dict(zip(NAMES, (h, ct, *grads)))


def _scan(a, b, s0, reverse=False):
    """s_t = a_t s_{t-1} + b_t (or g_t = b_t + a_{t+1} g_{t+1} when reverse), float64."""
    out = np.empty_like(b)
    T = a.shape[1]
    s = s0
    for t in range(T - 1, -1, -1) if reverse else range(T):
        s = b[:, t] + (a[:, t + 1] * s if t + 1 < T else s) if reverse else a[:, t] * s + b[:, t]
        out[:, t] = s
    return out


def bounds(xs, c0, dh, dct, block_length, dtype):
    """Elementwise tolerances for NAMES when comparing two forms (module docstring)."""
    u = np.finfo(dtype).eps / 2
    fx, ix, zx, ox = (x.astype(np.float64) for x in xs)
    T = fx.shape[1]
    a = fx + 1.0
    f = 1 / (1 + np.exp(-a))
    logf = -np.logaddexp(0, -a)
    i, z, o = 1 / (1 + np.exp(-ix)), np.tanh(zx), 1 / (1 + np.exp(-ox))
    K = (
        T
        + 24
        + np.sum(np.abs(a) * (1 - f) + (block_length + 2) * np.abs(logf), axis=1)
        + np.max(np.abs(ix) + np.abs(ox) + 2 * np.abs(zx), axis=1)
    )[:, None, :]  # (B, 1, D)
    K3 = 3 * K + 4
    zeros = np.zeros((fx.shape[0], fx.shape[2]))
    c0abs = zeros if c0 is None else np.abs(c0).astype(np.float64)
    cabs = _scan(f, np.abs(i * z), c0abs)
    cabs_prev = np.concatenate([c0abs[:, None], cabs[:, :-1]], axis=1)
    dh = np.abs(dh).astype(np.float64)
    w = dh * o * (1 + cabs)
    gabs = _scan(f, w, zeros if dct is None else np.abs(dct).astype(np.float64), reverse=True)
    tiny = np.finfo(dtype).tiny
    # an input gradient is X s' with s' = 1 - f, 1 - i, 1 - z^2 or 1 - o, formed as a difference:
    # K' u X s' from the errors of X and s, plus 4 u X from the rounding of the difference
    X_f, X_i, X_z, X_o = gabs * f * cabs_prev, gabs * i * np.abs(z), gabs * i, dh * o * (1 + cabs)
    tol = dict(
        h=(K + 4) * u * o * cabs,
        dfx=(K3 + K + 4) * u * X_f * (1 - f) + 4 * u * X_f,
        dix=(K3 + 4) * u * X_i * (1 - i) + 4 * u * X_i,
        dzx=(K3 + 4) * u * X_z * (1 - z * z) + 4 * u * X_z,
        dox=(K + 4) * u * X_o * (1 - o) + 4 * u * X_o,
        dc0=(K3[:, 0] + 2) * u * f[:, 0] * gabs[:, 0],
    )
    tol["ct"] = K[:, 0] * u * cabs[:, -1]
    return {name: 2 * t + tiny for name, t in tol.items()}
