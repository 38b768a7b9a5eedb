"""The CUDA kernels of GLA under numba's CUDA simulator (tiny sizes; run by test_cuda_simulator.py)."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numba_kernels import gla_cuda
from ref.mixers.gla import FORMS
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, gla_cases, log_sigmoid, make_arrays

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.gla, pytest.mark.cudasim]

NAMES = ("o", "ht", "dq", "dk", "dv", "dgk", "dh0")


def run(form, backend, q, k, v, gk, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {"scale": scale, "initial_state": h0, "backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    o, ht, cache = forward(q, k, v, gk, **kwargs)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


# Small score tiles (TJ, TY, RM, KS): several tiles per chunk and several steps over the key dims
# at the tiny sizes the simulator can run; rows per tile (TY RM) equal to, above and below TJ.
SMALL_TILES = ((4, 2, 2, 2), (2, 3, 1, 4), (4, 1, 2, 1))


@settings(max_examples=10)
@given(
    gla_cases(max_T=9, dtypes=(np.float64, np.float32)),
    st.sampled_from(SMALL_TILES),
    st.sampled_from([1, 2, 4, 16]),
)
def test_cuda_kernels_agree_with_numpy(case, tile, lanes):
    """Recurrent and chunked, forward and backward, float64 and float32 (against float64); the
    recurrent form with 1, 2, 4 or 16 lanes per column (K, V <= 5: several entries per lane, or
    idle lanes)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gla_cuda, "SCORE_TILE", tile)
        mp.setattr(gla_cuda, "LANES", lanes)
        check_against_numpy(case)


def test_the_default_score_tiles():
    """The GPU's tiles once: chunks of 36 steps (two row and two column tiles, one of them upper)
    and K = 33 (two steps over the key dims), forward and backward."""
    assert gla_cuda.SCORE_TILE == (32, 8, 4, 32)
    case = dict(B=1, T=40, H=1, K=33, V=2, chunk_size=36, gates="mid", scale=None, with_h0=True,
                with_dht=True, dtype=np.float64, seed=11)  # fmt: skip
    check_against_numpy(case, forms=("chunked",))


def check_against_numpy(case, forms=("recurrent", "chunked")):
    q, k, v, gk, h0, do, dht = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", "numpy", *map(up, (q, k, v, gk, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, gk, h0, do, dht, case["scale"], case["dtype"])
    for form in forms:
        got = run(form, "cuda", q, k, v, gk, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == case["dtype"], f"{form}/cuda: {name} is {got[name].dtype}"
            assert_within(f"{form}/cuda: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_cuda_finite_differences(form, rng, monkeypatch):
    monkeypatch.setattr(gla_cuda, "SCORE_TILE", SMALL_TILES[0])  # 16 simulated threads a block, not 256
    monkeypatch.setattr(gla_cuda, "LANES", 2)  # one lane exchange (two simulated barriers) a step, not four
    B, T, H, K, V = 1, 5, 1, 2, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "gk": log_sigmoid(rng.standard_normal((B, T, H, K))),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, gk, initial_state):
        return forward(q, k, v, gk, scale=0.7, initial_state=initial_state, backend="cuda", **extra)

    gradcheck(fwd, backward, inputs, rng=rng, name=f"gla_{form}[cuda]")


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_any_head_dims(form, rng, monkeypatch):
    """No state row or column sits in a local array of fixed size: K = 1 and V = 300 work, with
    lanes that hold one key dim or none (4 lanes for K = 1), or 75 value dims each."""
    monkeypatch.setattr(gla_cuda, "SCORE_TILE", SMALL_TILES[0])
    monkeypatch.setattr(gla_cuda, "LANES", 4)
    B, T, H, K, V = 1, 3, 1, 1, 300
    q, k = rng.standard_normal((2, B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    gk = log_sigmoid(rng.standard_normal((B, T, H, K)))
    h0 = rng.standard_normal((B, H, K, V))
    do = rng.standard_normal((B, T, H, V))
    dht = rng.standard_normal((B, H, K, V))
    got = run(form, "cuda", q, k, v, gk, h0, do, dht, 0.5, 2)
    want = run("recurrent", "numpy", q, k, v, gk, h0, do, dht, 0.5, 2)
    for name in NAMES:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
