"""The CUDA kernels of softmax attention under numba's CUDA simulator (tiny sizes; run by
test_cuda_simulator.py), with the cases and error bounds of tests/mixers/test_attention_kernels.py."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numba_kernels import attention_cuda
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.nn import gradcheck
from tests.mixers.test_attention_kernels import NAMES, assert_agree, attention_cases, bounds, make_arrays, run, up

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.attention, pytest.mark.cudasim]


# Small tile shapes (TY, TX, RM, CN): TY x TX threads, RM x CN entries each; tiles of 1-4 rows and
# columns, so T <= 9 spans several; TX = 1, 2, 4 lanes per row (the row reductions' exchanges).
SMALL_TILES = [(1, 2, 1, 1), (2, 2, 1, 2), (1, 4, 2, 1), (2, 1, 2, 2), (2, 2, 2, 1), (3, 1, 1, 3)]


GPU_CONFIGS = attention_cuda.CONFIGS


@pytest.fixture(autouse=True)
def small_default_tiles(monkeypatch):
    """Calls without a tile shape (``backend="cuda"``) get 2 x 2 threads with 1 x 2 entries each:
    the GPU's 128-thread blocks would cost 128 Python threads per block in the simulator."""
    monkeypatch.setattr(attention_cuda, "CONFIGS", ((2, 2, 1, 2),))


def run_cuda(q, k, v, do, kwargs, tile):
    scale = q.shape[3] ** -0.5 if kwargs["scale"] is None else kwargs["scale"]
    mask_args = {name: kwargs.get(name) for name in ("window", "chunk_size", "prefix_len")}
    o, lse = attention_cuda.attention_cuda(q, k, v, scale, kwargs["mask"], **mask_args, tile=tile)
    grads = attention_cuda.attention_cuda_backward(q, k, v, o, lse, do, scale, kwargs["mask"], **mask_args, tile=tile)
    return dict(zip(NAMES, (o, lse, *grads)))


@settings(max_examples=8)
@given(attention_cases(max_T=9, dtypes=(np.float64, np.float32), blocks=(2, 3, 4)), st.sampled_from(SMALL_TILES))
def test_cuda_kernels_agree_with_numpy(case, tile):
    """Forward and backward, every mask, small tiles (several tiles, T not a multiple)."""
    q, k, v, do, kwargs = make_arrays(case)
    want = run("numpy", *map(up, (q, k, v, do)), kwargs)
    got = run_cuda(q, k, v, do, kwargs, tile)
    assert_agree(f"cuda tile {tile}", got, want, bounds(q, k, v, do, kwargs, case["dtype"]), case["dtype"])


@pytest.mark.parametrize("tile", SMALL_TILES)
def test_every_small_tile_with_a_boolean_mask_and_gqa(tile, rng):
    """Each tile shape once on the hardest case: a boolean mask with an empty row and fully masked
    tiles, 4 query heads on 2 key heads, S = 7 > T = 5, K = 3 != V = 2, float64."""
    q, k, v = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((2, 7, 2, 3)), rng.standard_normal((2, 7, 2, 2))
    do = rng.standard_normal((2, 5, 4, 2))
    m = rng.random((5, 7)) < 0.5
    m[2] = False
    m[:, 4:6] = False
    kwargs = {"mask": m, "scale": None}
    got = run_cuda(q, k, v, do, kwargs, tile)
    want = run("numpy", q, k, v, do, kwargs)
    assert_agree(f"cuda tile {tile}", got, want, bounds(q, k, v, do, kwargs, np.float64), np.float64)


def test_default_tiles_of_the_gpu(rng, monkeypatch):
    """The tile shapes a GPU gets by default (8 x 16 threads), float32 with K = V = 64: forward
    tiles of 64 x 32, backward 32 x 32; T = 40 and S = 45 end inside a tile, causal."""
    monkeypatch.setattr(attention_cuda, "CONFIGS", GPU_CONFIGS)
    shapes = attention_cuda.kernels(np.float32, 64, 64).shapes
    assert shapes == {"forward": (8, 16, 8, 2), "dq": (8, 16, 4, 2), "dkdv": (8, 16, 4, 2)}
    q = rng.standard_normal((1, 40, 1, 64)).astype(np.float32)
    k, v = (rng.standard_normal((1, 45, 1, 64)).astype(np.float32) for _ in range(2))
    do = rng.standard_normal((1, 40, 1, 64)).astype(np.float32)
    kwargs = {"mask": "causal", "scale": None}
    got = run_cuda(q, k, v, do, kwargs, None)
    want = run("numpy", *map(up, (q, k, v, do)), kwargs)
    assert_agree("cuda default tiles", got, want, bounds(q, k, v, do, kwargs, np.float32), np.float32)


def test_tile_shapes_fit_the_shared_memory(monkeypatch):
    """Every head size up to MAX_DIM gets shapes within 48 KiB, in both dtypes; a shape that does
    not fit, or whose lanes per row are not a power of two, is refused."""
    monkeypatch.setattr(attention_cuda, "CONFIGS", GPU_CONFIGS)
    for dtype in (np.float32, np.float64):
        for K in (1, 16, 64, 100, 128):
            for V in (1, 64, 128):
                ks = attention_cuda.kernels(dtype, K, V)
                for kernel, (TY, TX, RM, CN) in ks.shapes.items():
                    need = attention_cuda.shared_bytes(kernel, np.dtype(dtype).itemsize, TY * RM, TX * CN, K, V)
                    assert need <= attention_cuda.SHARED_BYTES, (dtype, K, V, kernel)
    with pytest.raises(ValueError, match=r"tile: \(8, 16, 8, 4\) needs \d+ bytes of shared memory in forward"):
        attention_cuda.kernels(np.float32, 64, 64, tile=(8, 16, 8, 4))
    with pytest.raises(ValueError, match=r"tile: expected \(TY, TX, RM, CN\) >= 1 with TX a power of two"):
        attention_cuda.kernels(np.float32, 4, 4, tile=(2, 3, 1, 1))


def test_cuda_backend_with_a_fully_masked_row(rng):
    """``backend="cuda"`` (the module's default tiles, small here): a boolean mask with an empty row,
    GQA, S > T."""
    q, k, v = rng.standard_normal((1, 5, 4, 3)), rng.standard_normal((1, 7, 2, 3)), rng.standard_normal((1, 7, 2, 2))
    do = rng.standard_normal((1, 5, 4, 2))
    m = rng.random((5, 7)) < 0.6
    m[2] = False
    got = run("cuda", q, k, v, do, {"mask": m, "scale": None})
    want = run("numpy", q, k, v, do, {"mask": m, "scale": None})
    assert np.all(got["o"][:, 2] == 0) and np.all(got["dq"][:, 2] == 0)
    assert_agree("cuda", got, want, bounds(q, k, v, do, {"mask": m, "scale": None}, np.float64), np.float64)


def test_cuda_finite_differences(rng):
    inputs = {"q": rng.standard_normal((1, 3, 2, 2)), "k": rng.standard_normal((1, 4, 1, 2)),
              "v": rng.standard_normal((1, 4, 1, 2))}  # fmt: skip

    def fwd(q, k, v):
        return attention_parallel(q, k, v, mask="sliding_window", window=2, scale=0.7, backend="cuda")

    gradcheck(fwd, attention_parallel_backward, inputs, rng=rng, name="attention_parallel[cuda]")


def test_head_dims_beyond_the_shared_tiles_are_refused():
    big = attention_cuda.MAX_DIM + 1
    q = np.zeros((1, 2, 1, big), np.float32)
    with pytest.raises(ValueError, match=rf"q: .* expected K <= {attention_cuda.MAX_DIM}, got K = {big}"):
        attention_parallel(q, q, np.zeros((1, 2, 1, 3), np.float32), backend="cuda")
    q = np.zeros((1, 2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=rf"v: .* expected V <= {attention_cuda.MAX_DIM}, got V = {big}"):
        attention_parallel(q, q, np.zeros((1, 2, 1, big), np.float32), backend="cuda")
