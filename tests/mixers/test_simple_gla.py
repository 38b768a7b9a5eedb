"""Simple GLA (one scalar gate per head and step): every form, forward and backward, against each
other and finite differences; the decay-matrix form is the independent check of the GLA-based ones.

Error bound: simple GLA is GLA with gk_t[k] = g_t, so ``gla_cases.bounds`` on the broadcast gate
bounds o, ht, dq, dk, dv, dh0 and each dgk_t[k]. dg_t = sum_k dgk_t[k] adds the K - 1 roundings
of that sum, at most (K - 1) u sum_k dgkabs per form. The bound's factor is
2 (n + 2 T |G|max) u >= 2 n u > 4 K u (n = 2 (T + K + V) + 16), so (K - 1) u dgkabs < tol_dgk / 4
per form, and two forms stay within 2 (1/2 + 1/4) sum_k tol_dgk: tol_dg = 1.5 sum_k tol_dgk. The
decay-matrix form sums the same terms (q_t[k] k_s[k] D_ts do_t . v_s, ...) in another order with
no more roundings per term than n counts, so the same bound holds for it.
"""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.gla import gla_recurrent
from ref.mixers.simple_gla import FORMS, simple_gla_chunked, simple_gla_decay_matrix, simple_gla_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, draw_gates, gla_cases, log_sigmoid

pytestmark = pytest.mark.gla

NAMES = ("o", "ht", "dq", "dk", "dv", "dg", "dh0")


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, dt = case["B"], case["T"], case["H"], case["K"], case["V"], case["dtype"]
    q = rng.standard_normal((B, T, H, K)).astype(dt)
    k = rng.standard_normal((B, T, H, K)).astype(dt)
    v = rng.standard_normal((B, T, H, V)).astype(dt)
    g = draw_gates(rng, (B, T, H), case["gates"], dt)  # one gate per head and step
    h0 = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_h0"] else None
    do = rng.standard_normal((B, T, H, V)).astype(dt)
    dht = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_dht"] else None
    return q, k, v, g, h0, do, dht


def simple_bounds(q, k, v, g, h0, do, dht, scale, dtype):
    gk = None if g is None else np.broadcast_to(g[..., None], q.shape)
    tol = bounds(q, k, v, gk, h0, do, dht, scale, dtype)
    tol["dg"] = None if g is None else 1.5 * tol.pop("dgk").sum(axis=-1)
    return tol


def run(form, q, k, v, g, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    o, ht, cache = forward(q, k, v, g, scale=scale, initial_state=h0, **extra)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


@given(gla_cases())
def test_every_form_agrees_float64(case):
    q, k, v, g, h0, do, dht = make_arrays(case)
    want = run("recurrent", q, k, v, g, h0, do, dht, case["scale"], case["chunk_size"])
    tol = simple_bounds(q, k, v, g, h0, do, dht, case["scale"], np.float64)
    for form in ("parallel", "chunked", "decay_matrix"):
        got = run(form, q, k, v, g, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)))
def test_float32_against_float64(case):
    q, k, v, g, h0, do, dht = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", *map(up, (q, k, v, g, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = simple_bounds(q, k, v, g, h0, do, dht, case["scale"], np.float32)
    for form in FORMS:
        got = run(form, q, k, v, g, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("gated", [False, True])
def test_finite_differences(form, gated, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "g": log_sigmoid(rng.standard_normal((B, T, H))) if gated else None,
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, g, initial_state):
        return forward(q, k, v, g, scale=0.7, initial_state=initial_state, **extra)

    def bwd(do, dht, cache):
        dq, dk, dv, dg, dh0 = backward(do, dht, cache)
        assert (dg is None) == (not gated)
        return dq, dk, dv, dg, dh0

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"simple_gla_{form}")


def test_the_decay_matrix_is_retnets(rng):
    """(3): with a constant gate log(gamma), D_ts = gamma^(t - s): RetNet's decay matrix, built directly."""
    B, T, H, K, V, gamma = 1, 6, 1, 3, 2, 0.8
    q, k, v = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, V))
    t = np.arange(T)
    D = np.where(t[:, None] >= t[None, :], gamma ** (t[:, None] - t[None, :]).clip(0), 0.0)  # (T, T)
    want = (0.5 * (q[0, :, 0] @ k[0, :, 0].T) * D) @ v[0, :, 0]  # (T, V)
    o, _, _ = simple_gla_decay_matrix(q, k, v, np.full((B, T, H), np.log(gamma)), scale=0.5)
    np.testing.assert_allclose(o[0, :, 0], want, rtol=1e-13, atol=1e-13)


def test_the_gate_is_broadcast_not_copied(rng):
    q = rng.standard_normal((1, 4, 2, 3))
    g = log_sigmoid(rng.standard_normal((1, 4, 2)))
    _, _, cache = simple_gla_recurrent(q, q, q, g)
    assert cache.gk.shape == q.shape and cache.gk.strides[-1] == 0 and np.shares_memory(cache.gk, g)
    assert not cache.gk.flags.writeable


def test_a_zero_gate_is_no_gate(rng):
    q, k, v = (rng.standard_normal((2, 5, 2, 3)) for _ in range(3))
    o, ht, _ = simple_gla_chunked(q, k, v, np.zeros((2, 5, 2)), chunk_size=2)
    o_ref, ht_ref, _ = gla_recurrent(q, k, v)
    np.testing.assert_allclose(o, o_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ht, ht_ref, rtol=1e-12, atol=1e-12)


def _bad(**overrides):
    shape = (1, 4, 2, 3)
    args = dict(q=np.zeros(shape), k=np.zeros(shape), v=np.zeros((1, 4, 2, 5)), g=None, initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(g=np.full((1, 4, 2), 0.5)), r"g: expected natural-log gates <= 0 .*got 0.5 at index \(0, 0, 0\)"),
        (_bad(g=np.zeros((1, 4, 2, 3))), r"g: expected 3 axes \(B, T, H\), got shape \(1, 4, 2, 3\)"),
        (_bad(g=np.zeros((1, 4, 3))), r"g: expected shape \(B, T, H\) = \(1, 4, 2\) \(the \(B, T, H\) of q\), got"),
        (_bad(g=np.zeros((1, 4, 2), np.float32)), r"g: expected dtype float64 \(the dtype of q\), got float32"),
        (_bad(g=np.full((1, 4, 2), np.nan)), "g: expected finite values"),
        (_bad(q=np.zeros((1, 4, 2))), r"q: expected 4 axes \(B, T, H, K\), got shape \(1, 4, 2\)"),
        (_bad(initial_state=np.zeros((1, 2, 5, 3))), r"initial_state: expected shape \(B, H, K, V\) = \(1, 2, 3, 5\)"),
    ],
)
@pytest.mark.parametrize("form", list(FORMS))
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["q"], args["k"], args["v"], args["g"], initial_state=args["initial_state"])


def test_bad_options():
    x = np.zeros((1, 4, 1, 2))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        simple_gla_chunked(x, x, x, chunk_size=0)
    for form in FORMS:  # the backend reaches GLA's (or the decay-matrix form's) resolver
        with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
            FORMS[form][0](x, x, x, backend="gpu")
    _, _, cache = simple_gla_decay_matrix(x, x, x)
    with pytest.raises(ValueError, match=r"do: expected shape \(B, T, H, V\) = \(1, 4, 1, 2\)"):
        FORMS["decay_matrix"][1](np.zeros((1, 4, 1, 3)), None, cache)
