"""Random cases and error bounds for the MoM mixer tests.

Error bound. Memory m is GLA over the whole sequence with its keys and gates zeroed where the token
is not routed to it, read with weight w_t[m] (the shared memory with weight 1), so every output and
gradient of the mixer is a sum over memories of GLA's sums of products, times routing weights.
As in ``gla_cases``: running ``gla_recurrent`` (an implementation independent of the MoM forms)
per memory on |q|, |k'|, |v|, |h0| with the cotangents |w| |do|, |dht| gives for each element x
the sum of the absolute values of its terms, xabs; summing over the memories gives the mixer's.
The gates are the one difference inside: dg = sum_K revcumsum(q dq - k dk) (+ <dht, ht>), bounded
by revcumsum(|q| dqabs + |k| dkabs) (+ <|dht|, htabs>), and dw_t[m] = <o^m_t, do_t> by
<oabs^m_t, |do_t|>. Each term carries at most n = 2 (T + K + V + H + M) + 16 roundings (the sums
over time, keys, values, heads and memories), and the decays a relative error of about
2 T u |G|max, so two forms differ by at most

    tol = 2 (n + 2 T |G|max) u xabs.

A bug (a missing term, a token written that was not routed, a shifted index) errs by xabs itself.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ref.mixers.gla import gla_recurrent, gla_recurrent_backward
from tests.mixers.gla_cases import draw_gates

ROUTINGS = ("top_k", "dense", "sparse", "idle")
GATES = ("none", "weak", "mid", "strong", "zero")
NAMES = ("o", "ht", "ht_shared", "dq", "dk", "dv", "dw", "dk_s", "dv_s", "dg", "dg_s", "dh0", "dh0_shared")


@st.composite
def mom_cases(draw, max_T=24, dtypes=(np.float64,)):
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    M = draw(st.integers(1, 4))
    shared = draw(st.booleans())
    return dict(
        B=draw(st.integers(1, 2)),
        T=T,
        H=draw(st.integers(1, 2)),
        K=draw(st.integers(1, 5)),
        V=draw(st.integers(1, 5)),
        M=M,
        top_k=draw(st.integers(1, M)),
        routing=draw(st.sampled_from(ROUTINGS)),
        shared=shared,
        gates=draw(st.sampled_from(GATES)),
        shared_gates=draw(st.sampled_from(GATES)) if shared else "none",
        chunk_size=draw(st.one_of(st.just(1), st.integers(1, 17), st.just(T), st.just(T + 3))),
        scale=draw(st.sampled_from([None, 0.1, 1.0])),
        with_h0=draw(st.booleans()),
        with_h0_shared=shared and draw(st.booleans()),
        with_dht=draw(st.booleans()),
        with_dht_shared=shared and draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def top_k_weights(logits, top_k):
    """The router's weights: softmax, keep the top_k, renormalise (zeros elsewhere)."""
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    order = np.argsort(-logits, axis=-1, kind="stable")
    keep = np.zeros(logits.shape, bool)
    np.put_along_axis(keep, order[..., :top_k], True, axis=-1)
    p = np.where(keep, p, 0)
    return p / p.sum(axis=-1, keepdims=True)


def draw_weights(rng, shape, routing, top_k):
    """Routing weights (B, T, M): exactly top_k per token, all memories, random, or memory 0 idle."""
    if routing == "dense":  # every memory at every token, weights away from 0
        return rng.uniform(0.1, 1.0, shape)
    if routing == "sparse":  # any subset per token, possibly none; a memory may never be used
        return rng.uniform(0.1, 1.0, shape) * (rng.random(shape) < 0.4)
    w = top_k_weights(rng.standard_normal(shape), top_k)
    if routing == "idle":  # memory 0 is never routed to: it must keep its initial state
        w[..., 0] = 0
    return w


def make_arrays(case):
    """The mixer's inputs and cotangents as a dict, in the argument names of the forms."""
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, M, dt = (case[n] for n in ("B", "T", "H", "K", "V", "M", "dtype"))
    a = dict(
        q=rng.standard_normal((B, T, H, K)),
        k=rng.standard_normal((B, T, M, H, K)),
        v=rng.standard_normal((B, T, M, H, V)),
        w=draw_weights(rng, (B, T, M), case["routing"], case["top_k"]),
        k_s=rng.standard_normal((B, T, H, K)) if case["shared"] else None,
        v_s=rng.standard_normal((B, T, H, V)) if case["shared"] else None,
        g=draw_gates(rng, (B, T, M, H), case["gates"], np.float64),
        g_s=draw_gates(rng, (B, T, H), case["shared_gates"], np.float64),
        initial_state=rng.standard_normal((B, M, H, K, V)) if case["with_h0"] else None,
        initial_state_shared=rng.standard_normal((B, H, K, V)) if case["with_h0_shared"] else None,
        do=rng.standard_normal((B, T, H, V)),
        dht=rng.standard_normal((B, M, H, K, V)) if case["with_dht"] else None,
        dht_shared=rng.standard_normal((B, H, K, V)) if case["with_dht_shared"] else None,
    )
    return {name: None if x is None else x.astype(dt) for name, x in a.items()}


def _abs(x):
    return None if x is None else np.abs(x).astype(np.float64)


def _revcumsum(x, axis=1):
    return np.flip(np.cumsum(np.flip(x, axis=axis), axis=axis), axis=axis)


def _memories(a):
    """Per memory (routed ones, then the shared one): k, v, w (B, T), g (B, T, H) or None, h0, dht."""
    B, T, M = a["w"].shape
    out = []
    for m in range(M):
        pick = lambda x: None if x is None else x[:, m]  # noqa: E731  (states: axis 1)
        g = None if a["g"] is None else a["g"][:, :, m]
        out.append((a["k"][:, :, m], a["v"][:, :, m], a["w"][:, :, m], g, pick(a["initial_state"]), pick(a["dht"])))
    if a["k_s"] is not None:
        ones = np.ones((B, T), a["w"].dtype)
        out.append((a["k_s"], a["v_s"], ones, a["g_s"], a["initial_state_shared"], a["dht_shared"]))
    return out


def bounds(a, scale, dtype):
    """Elementwise tolerances, by the names of ``NAMES``, for comparing two forms on inputs ``a``."""
    u = np.finfo(dtype).eps / 2
    B, T, H, K = a["q"].shape
    M = a["w"].shape[2]
    V = a["v"].shape[4]
    s = abs(K**-0.5 if scale is None else scale)
    gates = [x for x in (a["g"], a["g_s"]) if x is not None]
    G_max = max([float(np.abs(np.cumsum(g.astype(np.float64), axis=1)).max()) for g in gates], default=0.0)
    n = 2 * (T + K + V + H + M) + 16
    factor = 2 * (n + 2 * T * G_max) * u
    qa, doa = _abs(a["q"]), _abs(a["do"])

    oabs = np.zeros((B, T, H, V))
    dqabs = np.zeros((B, T, H, K))
    per = {name: [] for name in ("ht", "dk", "dv", "dw", "dg", "dh0")}
    for k, v, w, g, h0, dht in _memories(a):
        on = (w > 0).astype(np.float64)  # (B, T)
        ka = _abs(k) * on[:, :, None, None]
        gk = None if g is None else np.repeat((g.astype(np.float64) * on[:, :, None])[..., None], K, axis=-1)
        o_m, ht_m, cache = gla_recurrent(qa, ka, _abs(v), gk, scale=s, initial_state=_abs(h0))
        dq_m, dk_m, dv_m, _, dh0_m = gla_recurrent_backward(_abs(w)[:, :, None, None] * doa, _abs(dht), cache)
        oabs += _abs(w)[:, :, None, None] * o_m
        dqabs += dq_m
        dG = _revcumsum(qa * dq_m + ka * dk_m).sum(axis=-1)  # (B, T, H)
        if dht is not None:
            dG = dG + (_abs(dht) * ht_m).sum(axis=(-2, -1))[:, None]
        per["ht"].append(ht_m)
        per["dk"].append(dk_m * on[:, :, None, None])
        per["dv"].append(dv_m * on[:, :, None, None])
        per["dw"].append((o_m * doa).sum(axis=(-2, -1)) * on)
        per["dg"].append(dG * on[:, :, None])
        per["dh0"].append(dh0_m)

    tiny = np.finfo(dtype).tiny
    tol = lambda x: None if x is None else factor * x + tiny  # noqa: E731
    routed = lambda name, axis: tol(np.stack(per[name][:M], axis=axis))  # noqa: E731
    last = lambda name: tol(per[name][M]) if a["k_s"] is not None else None  # noqa: E731
    return dict(
        o=tol(oabs),
        ht=routed("ht", 1),
        ht_shared=last("ht"),
        dq=tol(dqabs),
        dk=routed("dk", 2),
        dv=routed("dv", 2),
        dw=routed("dw", 2),
        dk_s=last("dk"),
        dv_s=last("dv"),
        dg=None if a["g"] is None else routed("dg", 2),
        dg_s=None if a["g_s"] is None else last("dg"),
        dh0=None if a["initial_state"] is None else routed("dh0", 1),
        dh0_shared=None if a["initial_state_shared"] is None else last("dh0"),
    )
