"""The segment-attention block of the Titans lesson: gradients by finite differences, the segment
mask (nothing before the segment is seen), bad input."""

import numpy as np
import pytest

from ref.mixers.attention import attention_parallel
from ref.models.titans_lesson import (
    init_segment_attention_block,
    segment_attention_block,
    segment_attention_block_backward,
)
from ref.nn import gradcheck

pytestmark = pytest.mark.titans


@pytest.mark.parametrize("T, C", [(7, 3), (6, 6), (5, 1)])
def test_segment_attention_gradcheck(T, C):
    rng = np.random.default_rng(T + C)
    p = init_segment_attention_block(rng, 6, num_heads=2)

    def fwd(x, W_q, W_k, W_v, W_o):
        return segment_attention_block({"W_q": W_q, "W_k": W_k, "W_v": W_v, "W_o": W_o}, x, segment_len=C)

    def bwd(dy, cache):
        dx, g = segment_attention_block_backward(p, cache, dy)
        return {"x": dx, **g}

    inputs = {"x": rng.standard_normal((2, T, 6)), **p}
    gradcheck(fwd, bwd, inputs, rng=rng, name="segment_attention_block")


def test_segment_attention_sees_only_its_segment():
    rng = np.random.default_rng(0)
    p = init_segment_attention_block(rng, 8, num_heads=2)
    x = rng.standard_normal((1, 12, 8))
    y, _ = segment_attention_block(p, x, segment_len=4)
    x2 = x.copy()
    x2[:, :4] += rng.standard_normal((1, 4, 8))  # change the first segment only
    y2, _ = segment_attention_block(p, x2, segment_len=4)
    assert np.array_equal(y[:, 4:], y2[:, 4:])
    assert not np.allclose(y[:, :4], y2[:, :4])


def test_segment_attention_equals_causal_within_one_segment():
    rng = np.random.default_rng(1)
    p = init_segment_attention_block(rng, 8, num_heads=2)
    x = rng.standard_normal((2, 5, 8))
    y, _ = segment_attention_block(p, x, segment_len=5)
    q, k, v = (np.einsum("btd,dhk->bthk", x, p[n]) for n in ("W_q", "W_k", "W_v"))
    o, _ = attention_parallel(q, k, v, mask="causal")
    np.testing.assert_allclose(y, x + o.reshape(2, 5, -1) @ p["W_o"], rtol=1e-12, atol=1e-12)


def test_segment_attention_bad_input():
    rng = np.random.default_rng(2)
    p = init_segment_attention_block(rng, 8, num_heads=2)
    with pytest.raises(ValueError, match="segment_len"):
        segment_attention_block(p, rng.standard_normal((1, 4, 8)), segment_len=0)
    with pytest.raises(ValueError, match="params"):
        segment_attention_block({"W_q": p["W_q"]}, rng.standard_normal((1, 4, 8)))
    with pytest.raises(ValueError):
        segment_attention_block(p, rng.standard_normal((1, 4, 7)))
