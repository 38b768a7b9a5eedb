"""Random cases and error bounds for the GLA-family tests.

Error bound. Every output and gradient of GLA is a sum of products of inputs (q, k, v, the initial
state, do, dht) with positive decay factors exp(G_t - G_s); dgk = revcumsum(q dq - k dk) is the
one difference. Running the recurrent form on |q|, |k|, |v|, |h0|, |do|, |dht| with the same gates
gives, for each element x, the sum of the absolute values of its terms, xabs (for dgk:
revcumsum(|q| dqabs + |k| dkabs) + sum |dht| htabs). Each term carries at most
n = 2 (T + K + V) + 16 roundings, and the decay exp(G_t - G_s) a relative error of about
2 T u |G|max from the accumulated gate sums (the recurrent form multiplies T rounded factors
instead). So each form is within (n + 2 T |G|max) u xabs of the exact value, and two forms within

    tol = 2 (n + 2 T |G|max) u xabs.

A bug (a missing term, a shifted index, a wrong sign) errs by the size of xabs itself.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ref.mixers.gla import gla_recurrent, gla_recurrent_backward

GATES = ("none", "weak", "mid", "strong", "zero")


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


def draw_gates(rng, shape, regime, dtype):
    """Natural-log gates as GLA makes them: logsigmoid(x) / tau (FLA tests tau in 0.1, 1, 10)."""
    if regime == "none":
        return None
    if regime == "zero":  # g = 0: no decay at all, passed explicitly
        return np.zeros(shape, dtype)
    tau = {"weak": 10.0, "mid": 1.0, "strong": 0.1}[regime]
    return (log_sigmoid(rng.standard_normal(shape)) / tau).astype(dtype)


@st.composite
def gla_cases(draw, max_T=40, dtypes=(np.float64,)):
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    return dict(
        B=draw(st.integers(1, 2)),
        T=T,
        H=draw(st.integers(1, 2)),
        K=draw(st.integers(1, 5)),
        V=draw(st.integers(1, 5)),
        chunk_size=draw(st.one_of(st.just(1), st.integers(1, 17), st.just(T), st.just(T + 3))),
        gates=draw(st.sampled_from(GATES)),
        scale=draw(st.sampled_from([None, 0.1, 1.0])),
        with_h0=draw(st.booleans()),
        with_dht=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, dt = case["B"], case["T"], case["H"], case["K"], case["V"], case["dtype"]
    q = rng.standard_normal((B, T, H, K)).astype(dt)
    k = rng.standard_normal((B, T, H, K)).astype(dt)
    v = rng.standard_normal((B, T, H, V)).astype(dt)
    gk = draw_gates(rng, (B, T, H, K), case["gates"], dt)
    h0 = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_h0"] else None
    do = rng.standard_normal((B, T, H, V)).astype(dt)
    dht = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_dht"] else None
    return q, k, v, gk, h0, do, dht


def _abs(x):
    return None if x is None else np.abs(x).astype(np.float64)


def bounds(q, k, v, gk, h0, do, dht, scale, dtype):
    """Elementwise tolerances for (o, ht, dq, dk, dv, dgk, dh0) when comparing two forms."""
    u = np.finfo(dtype).eps / 2
    B, T, H, K = q.shape
    V = v.shape[3]
    g64 = None if gk is None else gk.astype(np.float64)
    G_max = 0.0 if gk is None else float(np.abs(np.cumsum(g64, axis=1)).max())
    n = 2 * (T + K + V) + 16
    factor = 2 * (n + 2 * T * G_max) * u
    s = abs(K**-0.5 if scale is None else scale)
    oabs, htabs, cache = gla_recurrent(_abs(q), _abs(k), _abs(v), g64, scale=s, initial_state=_abs(h0))
    dqabs, dkabs, dvabs, _, dh0abs = gla_recurrent_backward(_abs(do), _abs(dht), cache)
    dgabs = None
    if gk is not None:
        dG = np.abs(q) * dqabs + np.abs(k) * dkabs
        dgabs = np.flip(np.cumsum(np.flip(dG, axis=1), axis=1), axis=1)
        if dht is not None:
            dgabs = dgabs + (np.abs(dht) * htabs).sum(axis=-1)[:, None]
    tiny = np.finfo(dtype).tiny
    tol = lambda x: None if x is None else factor * x + tiny  # noqa: E731
    return dict(o=tol(oabs), ht=tol(htabs), dq=tol(dqabs), dk=tol(dkabs), dv=tol(dvabs), dgk=tol(dgabs), dh0=tol(dh0abs))
