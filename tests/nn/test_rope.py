"""RoPE: the definition, finite differences, relative positions, decode positions, the interleaved
convention, bad input."""

import math

import numpy as np
import pytest

from ref.nn import gradcheck
from ref.nn.rope import rope, rope_backward

pytestmark = pytest.mark.attention


def test_forward_matches_the_definition(rng):
    B, T, H, K = 2, 5, 3, 6
    x = rng.standard_normal((B, T, H, K))
    pos = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    y, _ = rope(x, positions=pos)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                for i in range(K // 2):
                    angle = pos[b, t] * 10000.0 ** (-2 * i / K)
                    c, s = math.cos(angle), math.sin(angle)
                    x1, x2 = x[b, t, h, i], x[b, t, h, i + K // 2]  # rotate-half pairs dims i and i + K/2
                    assert math.isclose(y[b, t, h, i], x1 * c - x2 * s, rel_tol=1e-13, abs_tol=1e-15)
                    assert math.isclose(y[b, t, h, i + K // 2], x2 * c + x1 * s, rel_tol=1e-13, abs_tol=1e-15)


@pytest.mark.parametrize("positions", [None, np.arange(3, 7), np.array([[0, 1, 2, 3], [100, 101, 102, 103]])])
def test_gradcheck(positions, rng):
    x = rng.standard_normal((2, 4, 3, 6))
    gradcheck(lambda x: rope(x, positions=positions, base=500.0), rope_backward, {"x": x}, rng=rng, name="rope")


def test_rotation_keeps_norms_and_position_zero_is_the_identity(rng):
    x = rng.standard_normal((1, 6, 2, 8))
    y, _ = rope(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-14)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])


def test_scores_depend_only_on_the_relative_position(rng):
    """rope(q, t) . rope(k, s) = q^T R(s - t) k: the same for every pair with the same t - s."""
    K, T = 8, 12
    q, k = rng.standard_normal(K), rng.standard_normal(K)
    qs, _ = rope(np.broadcast_to(q, (1, T, 1, K)).copy())  # q at every position 0 .. T-1
    ks, _ = rope(np.broadcast_to(k, (1, T, 1, K)).copy())
    scores = qs[0, :, 0] @ ks[0, :, 0].T  # (T, T): scores[t, s]
    for d in range(-(T - 1), T):
        diagonal = np.diagonal(scores, offset=-d)  # every (t, s) with t - s = d
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-12, atol=1e-12, err_msg=f"t - s = {d}")
    assert not np.allclose(scores[0, 0], scores[1, 0])  # but it does depend on t - s


def test_decode_positions_equal_the_full_sequence(rng):
    x = rng.standard_normal((2, 7, 3, 4))
    full, _ = rope(x)
    for t in range(7):
        step, _ = rope(x[:, t : t + 1], positions=np.array([t]))
        np.testing.assert_array_equal(step, full[:, t : t + 1])
    # per-batch offsets: each sequence continues from its own length
    offsets = np.array([2, 5])
    pos = offsets[:, None] + np.arange(2)  # (B, T)
    tokens = np.stack([x[b, offsets[b] : offsets[b] + 2] for b in range(2)])  # (B, 2, H, K)
    part, _ = rope(tokens, positions=pos)
    for b in range(2):
        np.testing.assert_array_equal(part[b], full[b, offsets[b] : offsets[b] + 2])


def _rope_interleaved(x, positions):
    """The RoFormer / GPT-J convention, as complex numbers: (x_2i + i x_2i+1) exp(i p theta_i)."""
    K = x.shape[-1]
    theta = 10000.0 ** (-np.arange(K // 2) * 2.0 / K)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * positions[None, :, None, None] * theta)
    y = np.empty_like(x)
    y[..., 0::2], y[..., 1::2] = z.real, z.imag
    return y


def test_interleaved_convention_is_rotate_half_up_to_a_permutation(rng):
    K = 8
    x = rng.standard_normal((1, 5, 2, K))
    pos = np.arange(5)
    perm = np.concatenate([np.arange(0, K, 2), np.arange(1, K, 2)])  # Pi: the even dims, then the odd ones
    y_half, _ = rope(x[..., perm])
    y_interleaved = np.empty_like(x)
    y_interleaved[..., perm] = y_half  # Pi^T
    np.testing.assert_allclose(y_interleaved, _rope_interleaved(x, pos), rtol=1e-13, atol=1e-15)


def test_float32_stays_float32(rng):
    x = rng.standard_normal((1, 3, 1, 4)).astype(np.float32)
    y, cache = rope(x, positions=np.array([0, 1000, 100000]))
    (dx,) = rope_backward(np.ones_like(y), cache)
    assert y.dtype == dx.dtype == np.float32
    y64, _ = rope(x.astype(np.float64), positions=np.array([0, 1000, 100000]))
    np.testing.assert_allclose(y, y64, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((1, 3, 2, 5)), {}, "x: expected an even number of features K .*got K = 5"),
        (np.zeros((1, 3, 5)), {}, r"x: expected 4 axes \(B, T, H, K\), got shape \(1, 3, 5\)"),
        (np.zeros((1, 3, 2, 4), int), {}, "x: expected dtype float32 or float64, got int64"),
        (
            np.zeros((2, 3, 2, 4)),
            {"positions": np.arange(4)},
            r"positions: expected shape \(T,\) = \(3,\) or \(B, T\) = \(2, 3\), got \(4,\)",
        ),
        (np.zeros((2, 3, 2, 4)), {"positions": np.zeros((3, 3), int)}, r"positions: expected shape .*got \(3, 3\)"),
        (np.zeros((2, 3, 2, 4)), {"positions": np.arange(3.0)}, "positions: expected an integer dtype, got float64"),
        (np.zeros((2, 3, 2, 4)), {"base": 0.0}, "base: expected a number > 0, got 0.0"),
    ],
)
def test_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rope(x, **kwargs)


def test_bad_cotangent():
    _, cache = rope(np.zeros((1, 3, 2, 4)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, H, K\) the shape of x = \(1, 3, 2, 4\)"):
        rope_backward(np.zeros((1, 3, 2, 2)), cache)
