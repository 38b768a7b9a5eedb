"""The CUDA kernels of softmax attention under numba's CUDA simulator (tiny sizes; run by
test_cuda_simulator.py), with the cases and error bounds of tests/mixers/test_attention_kernels.py."""

import os

import numpy as np
import pytest
from hypothesis import given, settings

from numba_kernels import attention_cuda
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.nn import gradcheck
from tests.mixers.test_attention_kernels import NAMES, assert_agree, attention_cases, bounds, make_arrays, run, up

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.attention, pytest.mark.cudasim]


@settings(max_examples=8)
@given(attention_cases(max_T=9, dtypes=(np.float64, np.float32), blocks=(2, 3, 4)))
def test_cuda_kernels_agree_with_numpy(case):
    """Forward and backward, every mask, tiles of 2-4 rows (several tiles, T not a multiple)."""
    q, k, v, do, kwargs = make_arrays(case)
    want = run("numpy", *map(up, (q, k, v, do)), kwargs)
    scale = q.shape[3] ** -0.5 if kwargs["scale"] is None else kwargs["scale"]
    mask_args = {name: kwargs.get(name) for name in ("window", "chunk_size", "prefix_len")}
    tile = case["blocks"][0]
    o, lse = attention_cuda.attention_cuda(q, k, v, scale, kwargs["mask"], **mask_args, tile=tile)
    grads = attention_cuda.attention_cuda_backward(q, k, v, o, lse, do, scale, kwargs["mask"], **mask_args, tile=tile)
    got = dict(zip(NAMES, (o, lse, *grads)))
    assert_agree(f"cuda tile {tile}", got, want, bounds(q, k, v, do, kwargs, case["dtype"]), case["dtype"])


def test_cuda_backend_with_a_fully_masked_row(rng):
    """``backend="cuda"`` with the default tiles: a boolean mask with an empty row, GQA, S > T."""
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
