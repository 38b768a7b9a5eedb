"""GLA (per-key gates): every form, forward and backward, against each other and finite differences."""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.gla import FORMS, gla_chunked, gla_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, log_sigmoid, make_arrays, gla_cases

pytestmark = pytest.mark.gla

VARIANTS = [("parallel", None), ("chunked", "numpy")]
NAMES = ("o", "ht", "dq", "dk", "dv", "dgk", "dh0")


def run(form, backend, q, k, v, gk, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {"scale": scale, "initial_state": h0}
    if backend is not None:
        kwargs["backend"] = backend
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    o, ht, cache = forward(q, k, v, gk, **kwargs)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


@given(gla_cases())
def test_every_form_agrees_float64(case):
    q, k, v, gk, h0, do, dht = make_arrays(case)
    want = run("recurrent", "numpy", q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], np.float64)
    for form, backend in VARIANTS:
        got = run(form, backend, q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)))
def test_float32_against_float64(case):
    q, k, v, gk, h0, do, dht = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", *map(up, (q, k, v, gk, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], np.float32)
    for form, backend in [("recurrent", "numpy"), *VARIANTS]:
        got = run(form, backend, q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}/{backend}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
@pytest.mark.parametrize("gates", ["none", "mid"])
def test_finite_differences(form, gates, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "gk": None if gates == "none" else log_sigmoid(rng.standard_normal((B, T, H, K))),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, gk, initial_state):
        return forward(q, k, v, gk, scale=0.7, initial_state=initial_state, **extra)

    if inputs["gk"] is None:
        inputs.pop("gk")
        fwd_ = lambda q, k, v, initial_state: fwd(q, k, v, None, initial_state)  # noqa: E731

        def bwd(do, dht, cache):
            dq, dk, dv, dgk, dh0 = backward(do, dht, cache)
            assert dgk is None
            return dq, dk, dv, dh0

        gradcheck(fwd_, bwd, inputs, rng=rng, name=f"gla_{form}")
    else:
        gradcheck(fwd, backward, inputs, rng=rng, name=f"gla_{form}")


@pytest.mark.slow
@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_chunked_is_stable_at_65536(tau):
    """Near-total forgetting (logsigmoid/0.1) to weak decay (/10): finite, and within 1e-6 relative."""
    rng = np.random.default_rng(7)
    B, T, H, K, V = 1, 65536, 1, 4, 3
    q, k = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    gk = log_sigmoid(rng.standard_normal((B, T, H, K))) / tau
    h0 = rng.standard_normal((B, H, K, V))
    do, dht = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    o_r, ht_r, c_r = gla_recurrent(q, k, v, gk, initial_state=h0)
    o_c, ht_c, c_c = gla_chunked(q, k, v, gk, initial_state=h0, chunk_size=64)
    grads_r = FORMS["recurrent"][1](do, dht, c_r)
    grads_c = FORMS["chunked"][1](do, dht, c_c)
    for name, x, y in zip(NAMES, (o_c, ht_c, *grads_c), (o_r, ht_r, *grads_r)):
        assert np.isfinite(x).all(), name
        rel = np.abs(x - y).max() / np.abs(y).max()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e} at T = 65,536 with logsigmoid/{tau} gates"


def _bad(**overrides):
    shape = (1, 4, 2, 3)
    args = dict(q=np.zeros(shape), k=np.zeros(shape), v=np.zeros((1, 4, 2, 5)), gk=None, initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(gk=np.full((1, 4, 2, 3), 0.5)), r"gk: expected natural-log gates <= 0 .*got 0.5 at index \(0, 0, 0, 0\)"),
        (_bad(gk=np.zeros((1, 4, 2))), r"gk: expected 4 axes \(B, T, H, K\), got shape \(1, 4, 2\)"),
        (_bad(gk=np.zeros((1, 4, 2, 4))), r"gk: expected shape \(B, T, H, K\) = \(1, 4, 2, 3\)"),
        (_bad(gk=np.full((1, 4, 2, 3), -np.inf)), "gk: expected finite values"),
        (_bad(k=np.zeros((1, 4, 2, 2))), r"k: expected shape \(B, T, H, K\) = \(1, 4, 2, 3\) \(the shape of q\)"),
        (_bad(v=np.zeros((1, 3, 2, 5))), r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(1, 4, 2\)"),
        (_bad(initial_state=np.zeros((1, 2, 5, 3))), r"initial_state: expected shape \(B, H, K, V\) = \(1, 2, 3, 5\)"),
        (_bad(q=np.zeros((1, 0, 2, 3)), k=np.zeros((1, 0, 2, 3)), v=np.zeros((1, 0, 2, 5))), "q: expected a time axis"),
        (_bad(q=np.zeros((1, 4, 2, 3), np.float32)), r"k: expected dtype float32 \(the dtype of q\)"),
    ],
)
@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["q"], args["k"], args["v"], args["gk"], initial_state=args["initial_state"])


def test_bad_options():
    x, v = np.zeros((1, 4, 1, 2)), np.zeros((1, 4, 1, 2))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        gla_chunked(x, x, v, chunk_size=0)
    with pytest.raises(ValueError, match="scale: expected a finite number or None"):
        gla_recurrent(x, x, v, scale=float("nan"))
    _, _, cache = gla_recurrent(x, x, v)
    with pytest.raises(ValueError, match=r"dht: expected shape \(B, H, K, V\) = \(1, 1, 2, 2\)"):
        FORMS["recurrent"][1](None, np.zeros((1, 1, 2, 3)), cache)
