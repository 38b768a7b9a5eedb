"""Retention (RetNet): every form, forward and backward, against each other, finite differences and
RetNet's decay matrix gamma^(t - s) built directly.

Error bound: retention is GLA with the constant gate gk_t[k] = log(gamma_h), so
``gla_cases.bounds`` with that gate bounds o, ht, dq, dk, dv and dh0 (no gate gradient here).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.retention import FORMS, default_gamma, retention_chunked, retention_parallel, retention_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, gla_cases

pytestmark = [pytest.mark.gla, pytest.mark.vir]

NAMES = ("o", "ht", "dq", "dk", "dv", "dh0")
DECAYS = ("default", "weak", "strong", "any")


def draw_gamma(rng, H, regime):
    """gamma (H,) in (0, 1): RetNet's default, slow (1 - 2^-12 .. 1 - 2^-6), fast (0.01 .. 0.5), anything."""
    if regime == "default":
        return None
    if regime == "weak":
        return 1.0 - 2.0 ** -rng.uniform(6, 12, H)
    if regime == "strong":
        return rng.uniform(0.01, 0.5, H)
    return rng.uniform(1e-3, 1 - 1e-3, H)


def make_arrays(case, decay):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, dt = case["B"], case["T"], case["H"], case["K"], case["V"], case["dtype"]
    q = rng.standard_normal((B, T, H, K)).astype(dt)
    k = rng.standard_normal((B, T, H, K)).astype(dt)
    v = rng.standard_normal((B, T, H, V)).astype(dt)
    gamma = draw_gamma(rng, H, decay)
    h0 = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_h0"] else None
    do = rng.standard_normal((B, T, H, V)).astype(dt)
    dht = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_dht"] else None
    return q, k, v, gamma, h0, do, dht


def retention_bounds(q, k, v, gamma, h0, do, dht, scale, dtype):
    H = q.shape[2]
    log_gamma = np.log(default_gamma(H) if gamma is None else gamma).astype(dtype)  # the gate the forms use
    tol = bounds(q, k, v, np.broadcast_to(log_gamma[:, None], q.shape), h0, do, dht, scale, dtype)
    tol.pop("dgk")
    return tol


def run(form, q, k, v, gamma, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    o, ht, cache = forward(q, k, v, gamma=gamma, scale=scale, initial_state=h0, **extra)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


@given(gla_cases(), st.sampled_from(DECAYS))
def test_every_form_agrees_float64(case, decay):
    q, k, v, gamma, h0, do, dht = make_arrays(case, decay)
    want = run("recurrent", q, k, v, gamma, h0, do, dht, case["scale"], case["chunk_size"])
    tol = retention_bounds(q, k, v, gamma, h0, do, dht, case["scale"], np.float64)
    for form in ("parallel", "chunked"):
        got = run(form, q, k, v, gamma, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)), st.sampled_from(DECAYS))
def test_float32_against_float64(case, decay):
    q, k, v, gamma, h0, do, dht = make_arrays(case, decay)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", *map(up, (q, k, v)), gamma, *map(up, (h0, do, dht)), case["scale"], case["chunk_size"])
    tol = retention_bounds(q, k, v, gamma, h0, do, dht, case["scale"], np.float32)
    for form in FORMS:
        got = run(form, q, k, v, gamma, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", list(FORMS))
def test_finite_differences(form, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, initial_state):
        return forward(q, k, v, gamma=np.array([0.9, 0.6]), scale=0.7, initial_state=initial_state, **extra)

    gradcheck(fwd, backward, inputs, rng=rng, name=f"retention_{form}")


def test_default_gamma_is_retnets():
    np.testing.assert_array_equal(default_gamma(4), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256])


@pytest.mark.parametrize("with_h0", [False, True])
def test_against_retnets_decay_matrix(with_h0, rng):
    """o = ((q k^T) * scale ⊙ D) v + scale gamma^(t+1) q_t S_{-1}, D_ts = gamma^(t - s), h by h."""
    B, T, H, K, V = 2, 9, 3, 4, 3
    q, k = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    h0 = rng.standard_normal((B, H, K, V)) if with_h0 else None
    o, _, _ = retention_parallel(q, k, v, scale=0.3, initial_state=h0)
    t = np.arange(T)
    for h, gamma in enumerate(default_gamma(H)):
        D = np.tril(gamma ** np.abs(t[:, None] - t[None, :]))  # (T, T)
        want = np.einsum("bts,bsv->btv", 0.3 * np.einsum("btk,bsk->bts", q[:, :, h], k[:, :, h]) * D, v[:, :, h])
        if with_h0:
            want += 0.3 * (gamma ** (t + 1))[None, :, None] * (q[:, :, h] @ h0[:, h])
        np.testing.assert_allclose(o[:, :, h], want, rtol=1e-12, atol=1e-12)


def _bad(**overrides):
    shape = (1, 4, 2, 3)
    args = dict(q=np.zeros(shape), k=np.zeros(shape), v=np.zeros((1, 4, 2, 5)), gamma=None, initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(gamma=np.array([0.5, 1.0])), r"gamma: expected decays in the open interval \(0, 1\), got 1.0 at head 1"),
        (_bad(gamma=np.array([0.0, 0.5])), r"gamma: expected decays in the open interval \(0, 1\), got 0.0 at head 0"),
        (_bad(gamma=np.array([-0.5, 0.5])), r"gamma: expected decays in the open interval \(0, 1\), got -0.5"),
        (_bad(gamma=np.array([0.5, np.nan])), "gamma: expected finite values"),
        (_bad(gamma=np.array([0.5, 0.5, 0.5])), r"gamma: expected shape \(H,\) = \(2,\) \(the number of heads of q\)"),
        (_bad(gamma=np.full((1, 2), 0.5)), r"gamma: expected 1 axes \(H,\), got shape \(1, 2\)"),
        (_bad(gamma=[0.5, 0.5]), "gamma: expected a numpy array of float32 or float64, got list"),
        (_bad(q=np.zeros((1, 4, 2))), r"q: expected 4 axes \(B, T, H, K\), got shape \(1, 4, 2\)"),
        (_bad(initial_state=np.zeros((1, 2, 5, 3))), r"initial_state: expected shape \(B, H, K, V\) = \(1, 2, 3, 5\)"),
    ],
)
@pytest.mark.parametrize("form", list(FORMS))
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["q"], args["k"], args["v"], gamma=args["gamma"], initial_state=args["initial_state"])


def test_bad_options():
    x = np.zeros((1, 4, 1, 2))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        retention_chunked(x, x, x, chunk_size=0)
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        retention_recurrent(x, x, x, backend="gpu")
