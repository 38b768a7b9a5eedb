"""MoM (mixture of memories): the four forms against each other, finite differences, and the
properties the paper relies on (one memory is linear attention; mixing the memories first gives
the same output; unrouted tokens leave a memory untouched)."""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.gla import gla_recurrent, gla_recurrent_backward
from ref.mixers.mom import FORMS, mom_chunked, mom_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import log_sigmoid
from tests.mixers.mom_cases import NAMES, bounds, make_arrays, mom_cases, top_k_weights

pytestmark = pytest.mark.mom

INPUTS = ("q", "k", "v", "w", "k_s", "v_s", "g", "g_s")


def run(form, a, scale, chunk_size):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    o, ht, ht_shared, cache = forward(
        *(a[n] for n in INPUTS),
        scale=scale,
        initial_state=a["initial_state"],
        initial_state_shared=a["initial_state_shared"],
        **extra,
    )
    grads = backward(a["do"], a["dht"], a["dht_shared"], cache)
    return dict(zip(NAMES, (o, ht, ht_shared, *grads)))


@given(mom_cases())
def test_every_form_agrees_float64(case):
    a = make_arrays(case)
    want = run("recurrent", a, case["scale"], case["chunk_size"])
    tol = bounds(a, case["scale"], np.float64)
    for form in ("parallel", "chunked", "varlen"):
        got = run(form, a, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(mom_cases(max_T=12, dtypes=(np.float32,)))
def test_float32_against_float64(case):
    a = make_arrays(case)
    up = {n: None if x is None else x.astype(np.float64) for n, x in a.items()}
    want = run("recurrent", up, case["scale"], case["chunk_size"])
    tol = bounds(a, case["scale"], np.float32)
    for form in FORMS:
        got = run(form, a, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


def _gradcheck_inputs(rng, B, T, M, H, K, V, shared, gated, with_h0):
    a = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, M, H, K)),
        "v": rng.standard_normal((B, T, M, H, V)),
        "w": rng.uniform(0.2, 1.0, (B, T, M)),
    }
    if shared:
        a["k_s"], a["v_s"] = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, V))
    if gated:
        a["g"] = log_sigmoid(rng.standard_normal((B, T, M, H)))
        if shared:
            a["g_s"] = log_sigmoid(rng.standard_normal((B, T, H)))
    if with_h0:
        a["initial_state"] = rng.standard_normal((B, M, H, K, V))
        if shared:
            a["initial_state_shared"] = rng.standard_normal((B, H, K, V))
    return a


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize(
    "routing, shared, gated, with_h0",
    [("sparse", True, True, True), ("sparse", False, False, False), ("dense", True, True, False)],
)
def test_finite_differences(form, routing, shared, gated, with_h0, rng):
    """Every gradient against central differences, the routing held fixed.

    Sparse routing: w = mask * w_free with a fixed 0/1 mask (some tokens routed to no memory, one
    memory to no token), so finite differences never cross w = 0; the analytic dw_free is dw * mask.
    Dense routing: every weight > 0, w itself is the input.
    """
    B, T, M, H, K, V = 1, 5, 3, 2, 2, 3
    inputs = _gradcheck_inputs(rng, B, T, M, H, K, V, shared, gated, with_h0)
    mask = np.ones((B, T, M))
    if routing == "sparse":
        mask = (rng.random((B, T, M)) < 0.5).astype(float)
        mask[:, :, 2] = 0  # memory 2 is never routed to
        mask[:, 1] = 0  # token 1 is routed to no memory
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}
    names = list(inputs)

    def fwd(**kw):
        kw = dict(kw)
        kw["w"] = kw["w"] * mask
        states = {n: kw.pop(n) for n in ("initial_state", "initial_state_shared") if n in kw}
        return forward(**kw, scale=0.7, **states, **extra)

    def bwd(do, dht, dht_shared, cache):
        grads = dict(zip(("q", "k", "v", "w", "k_s", "v_s", "g", "g_s", "initial_state", "initial_state_shared"),
                         backward(do, dht, dht_shared, cache)))
        grads["w"] = grads["w"] * mask
        for n in grads:
            if n not in names:
                assert grads[n] is None, f"d{n} should be None for an input not given"
        return {n: grads[n] for n in names}

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"mom_{form}")


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("gated", [False, True])
def test_one_memory_is_linear_attention(form, gated, rng):
    """M = 1, w = 1 at every token, no shared memory: GLA with a scalar gate (linear attention without)."""
    B, T, H, K, V = 2, 7, 2, 3, 5
    q, k = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, 1, H, K))
    v = rng.standard_normal((B, T, 1, H, V))
    g = log_sigmoid(rng.standard_normal((B, T, 1, H))) if gated else None
    h0, dht = rng.standard_normal((B, 1, H, K, V)), rng.standard_normal((B, 1, H, K, V))
    do = rng.standard_normal((B, T, H, V))
    extra = {"chunk_size": 3} if form == "chunked" else {}
    forward, backward = FORMS[form]
    o, ht, ht_shared, cache = forward(q, k, v, np.ones((B, T, 1)), None, None, g, initial_state=h0, **extra)
    dq, dk, dv, dw, dk_s, dv_s, dg, dg_s, dh0, dh0_s = backward(do, dht, None, cache)

    gk = None if g is None else np.repeat(g[:, :, 0, :, None], K, axis=-1)  # (B, T, H, K)
    o_la, ht_la, c = gla_recurrent(q, k[:, :, 0], v[:, :, 0], gk, initial_state=h0[:, 0])
    dq_la, dk_la, dv_la, dgk_la, dh0_la = gla_recurrent_backward(do, dht[:, 0], c)
    tol = 1e-12
    np.testing.assert_allclose(o, o_la, atol=tol)
    np.testing.assert_allclose(ht[:, 0], ht_la, atol=tol)
    np.testing.assert_allclose(dq, dq_la, atol=tol)
    np.testing.assert_allclose(dk[:, :, 0], dk_la, atol=tol)
    np.testing.assert_allclose(dv[:, :, 0], dv_la, atol=tol)
    np.testing.assert_allclose(dh0[:, 0], dh0_la, atol=tol)
    np.testing.assert_allclose(dw[:, :, 0], (o_la * do).sum(axis=(-2, -1)), atol=tol)  # o is linear in w
    if gated:
        np.testing.assert_allclose(dg[:, :, 0], dgk_la.sum(axis=-1), atol=tol)
    assert ht_shared is None and dk_s is None and dv_s is None and dg_s is None and dh0_s is None


@pytest.mark.parametrize("gated", [False, True])
def test_mixing_the_memories_first(gated, rng):
    """o_t = scale * q_t (sum_m w_t[m] M^m_t + M^s_t): mix the states, then read once (linearity).

    M^m_t is the final state of the prefix up to t, from separate runs on x[:, :t + 1].
    """
    B, T, M, H, K, V, top_k = 2, 6, 4, 2, 3, 2, 2
    a = _gradcheck_inputs(rng, B, T, M, H, K, V, shared=True, gated=gated, with_h0=True)
    a["w"] = top_k_weights(rng.standard_normal((B, T, M)), top_k)
    states = {n: a.pop(n) for n in ("initial_state", "initial_state_shared")}
    o, *_ = mom_recurrent(**a, scale=0.5, **states, top_k=top_k)
    for t in range(T):
        prefix = {n: x[:, : t + 1] for n, x in a.items()}
        _, ht, ht_s, _ = mom_recurrent(**prefix, scale=0.5, **states)
        mixed = np.einsum("bm,bmhkv->bhkv", a["w"][:, t], ht) + ht_s  # (B, H, K, V)
        np.testing.assert_allclose(o[:, t], 0.5 * np.einsum("bhk,bhkv->bhv", a["q"][:, t], mixed), atol=1e-12)


@pytest.mark.parametrize("form", list(FORMS))
def test_unrouted_tokens_leave_a_memory_untouched(form, rng):
    """k, v, g at a token not routed to m change nothing and get zero gradient; dw = 0 there; a memory
    no token is routed to keeps its initial state, and its final-state gradient flows straight back."""
    B, T, M, H, K, V = 2, 8, 3, 2, 2, 3
    a = _gradcheck_inputs(rng, B, T, M, H, K, V, shared=True, gated=True, with_h0=True)
    a["w"] = top_k_weights(rng.standard_normal((B, T, M)), 1)
    a["w"][:, :, 2] = 0  # memory 2: never routed to
    off = a["w"] == 0  # (B, T, M)
    states = {n: a.pop(n) for n in ("initial_state", "initial_state_shared")}
    extra = {"chunk_size": 3} if form == "chunked" else {}
    forward, backward = FORMS[form]
    do, dht = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, M, H, K, V))

    o, ht, ht_s, cache = forward(**a, scale=0.7, **states, **extra)
    dq, dk, dv, dw, *_, dg, dg_s, dh0, dh0_s = backward(do, dht, None, cache)
    changed = dict(a)
    changed["k"] = np.where(off[..., None, None], 10 * rng.standard_normal(a["k"].shape), a["k"])
    changed["v"] = np.where(off[..., None, None], 10 * rng.standard_normal(a["v"].shape), a["v"])
    changed["g"] = np.where(off[..., None], -10 * rng.random(a["g"].shape), a["g"])
    o2, ht2, ht_s2, _ = forward(**changed, scale=0.7, **states, **extra)
    np.testing.assert_array_equal(o2, o)
    np.testing.assert_array_equal(ht2, ht)
    assert not dk[off].any() and not dv[off].any() and not dg[off].any() and not dw[off].any()
    np.testing.assert_array_equal(ht[:, 2], states["initial_state"][:, 2])
    np.testing.assert_array_equal(dh0[:, 2], dht[:, 2])


def _bad(**overrides):
    B, T, M, H, K, V = 1, 4, 3, 2, 3, 5
    args = dict(
        q=np.zeros((B, T, H, K)),
        k=np.zeros((B, T, M, H, K)),
        v=np.zeros((B, T, M, H, V)),
        w=np.full((B, T, M), 0.5),
        k_s=np.zeros((B, T, H, K)),
        v_s=np.zeros((B, T, H, V)),
        g=None,
        g_s=None,
        initial_state=None,
        initial_state_shared=None,
        top_k=None,
    )
    args.update(overrides)
    return args


W_NEG = np.full((1, 4, 3), 0.5)
W_NEG[0, 2, 1] = -0.25

BAD = [
    (_bad(w=W_NEG), r"w: expected routing weights >= 0 .*got -0.25 at index \(0, 2, 1\)"),
    (_bad(top_k=2), r"w: expected at most top_k = 2 nonzero weights per token .*got 3 at \(b, t\) = \(0, 0\)"),
    (_bad(w=np.full((1, 4, 3), np.nan)), "w: expected finite values"),
    (_bad(w=np.zeros((1, 4, 2))), r"w: expected shape \(B, T, M\) = \(1, 4, 3\)"),
    (_bad(k=np.zeros((1, 4, 3, 2, 4))), r"k: expected shape \(B, T, M, H, K\) with .* \(H, K\) = \(2, 3\)"),
    (_bad(k=np.zeros((1, 4, 2, 3))), r"k: expected 5 axes \(B, T, M, H, K\), got shape \(1, 4, 2, 3\)"),
    (_bad(v=np.zeros((1, 4, 2, 2, 5))), r"v: expected shape \(B, T, M, H, V\) with \(B, T, M, H\) = \(1, 4, 3, 2\)"),
    (_bad(k_s=np.zeros((1, 4, 2, 2))), r"k_s: expected shape \(B, T, H, K\) = \(1, 4, 2, 3\)"),
    (_bad(v_s=None), "v_s: expected an array since k_s is given"),
    (_bad(k_s=None), "k_s: expected an array since v_s is given"),
    (_bad(g=np.full((1, 4, 3, 2), 0.5)), r"g: expected natural-log gates <= 0 .*got 0.5 at index \(0, 0, 0, 0\)"),
    (_bad(g=np.zeros((1, 4, 3, 2, 3))), r"g: expected 4 axes \(B, T, M, H\)"),
    (_bad(g_s=np.full((1, 4, 2), 1e-3)), r"g_s: expected natural-log gates <= 0 .*got 0.001"),
    (_bad(k_s=None, v_s=None, g_s=np.zeros((1, 4, 2))), "g_s: given without a shared memory"),
    (_bad(initial_state=np.zeros((1, 3, 2, 5, 3))), r"initial_state: expected shape .* = \(1, 3, 2, 3, 5\)"),
    (_bad(initial_state_shared=np.zeros((1, 2, 3))), r"initial_state_shared: expected 4 axes \(B, H, K, V\)"),
    (_bad(k_s=None, v_s=None, initial_state_shared=np.zeros((1, 2, 3, 5))), "initial_state_shared: given without"),
    (_bad(w=np.full((1, 4, 3), 0.5, np.float32)), r"w: expected dtype float64 \(the dtype of q\), got float32"),
    (_bad(q=np.zeros((1, 0, 2, 3)), k=np.zeros((1, 0, 3, 2, 3)), v=np.zeros((1, 0, 3, 2, 5)), w=np.zeros((1, 0, 3)),
          k_s=None, v_s=None), "q: expected a time axis"),
]


@pytest.mark.parametrize("args, match", BAD)
@pytest.mark.parametrize("form", list(FORMS))
def test_bad_input(form, args, match):
    args = dict(args)
    states = {n: args.pop(n) for n in ("initial_state", "initial_state_shared", "top_k")}
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](*(args[n] for n in INPUTS), **states)


def test_bad_options():
    a = _bad()
    args = [a[n] for n in INPUTS]
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        mom_chunked(*args, chunk_size=0)
    with pytest.raises(ValueError, match="scale: expected a finite number or None"):
        mom_recurrent(*args, scale=float("inf"))
    with pytest.raises(ValueError, match="top_k: expected an integer >= 1, got 0"):
        mom_recurrent(*args, top_k=0)
    _, _, _, cache = mom_recurrent(*args)
    backward = FORMS["recurrent"][1]
    with pytest.raises(ValueError, match=r"dht: expected shape \(B, M, H, K, V\) = \(1, 3, 2, 3, 5\)"):
        backward(None, np.zeros((1, 2, 2, 3, 5)), None, cache)
    with pytest.raises(ValueError, match=r"do: expected shape \(B, T, H, V\) = \(1, 4, 2, 5\)"):
        backward(np.zeros((1, 4, 2, 3)), None, None, cache)
    _, _, _, cache = mom_recurrent(a["q"], a["k"], a["v"], a["w"])
    with pytest.raises(ValueError, match="dht_shared: given without a shared memory"):
        backward(None, None, np.zeros((1, 2, 3, 5)), cache)
