"""Rotary position embedding (RoPE; Su et al., 2021, "RoFormer"), the rotate-half convention.

Shapes: x, y (B, T, H, K) with K even; positions (T,) or (B, T) integers (default 0 .. T-1).

Each token at position p rotates K/2 pairs of feature dims, pair i by the angle p * theta_i with

    theta_i = base^(-2i / K),   i = 0 .. K/2 - 1,   base = 10000                   (1)

Rotate-half convention (GPT-NeoX, Hugging Face Llama): dim i is paired with dim i + K/2. With
x = [x1, x2] split into halves and c = cos(p theta), s = sin(p theta), each (K/2,):

    y1 = x1 c - x2 s                                                             (2)
    y2 = x2 c + x1 s            i.e. y = x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1]

The interleaved convention (RoFormer, GPT-J, Meta's original Llama code) pairs adjacent dims
(2i, 2i + 1) instead, as the complex number x_2i + i x_2i+1 times exp(i p theta_i). Both are the
same rotation up to a fixed permutation Pi of the feature dims (Pi x = the even dims, then the
odd ones): interleaved(x) = Pi^T rope(Pi x). Attention only uses dot products q . k and
(Pi q) . (Pi k) = q . k, so weights trained with one convention work with the other after
permuting the output rows of the q and k projections (what Hugging Face's Llama conversion does).

Why it encodes relative positions: rotations compose, R(t)^T R(s) = R(s - t), so

    rope(q, t) . rope(k, s) = q^T R(t)^T R(s) k = q^T R(s - t) k                   (3)

depends on t and s only through t - s. Decoding passes explicit positions (the offset of the new
token in the sequence) so that a token gets the same rotation as in the full sequence.

Backward: R(p) is orthogonal, so dx = R(p)^T dy, the inverse rotation (angle -p theta):

    dx1 = dy1 c + dy2 s,   dx2 = dy2 c - dy1 s                                     (4)
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["rope", "rope_backward"]


def _check_positions(positions, B: int, T: int) -> np.ndarray:
    """Integer positions (T,) or (B, T); returned as (1 or B, T)."""
    if positions is None:
        return np.arange(T)[None]  # (1, T)
    positions = _validate.int_array(positions, "positions")
    if positions.shape not in ((T,), (B, T)):
        raise ValueError(f"positions: expected shape (T,) = ({T},) or (B, T) = {(B, T)}, got {positions.shape}")
    return positions.reshape(-1, T)  # (1 or B, T)


def rope(x: np.ndarray, *, positions=None, base: float = 10000.0):
    """Forward. Returns ``(y, cache)``; y (B, T, H, K) is x rotated by (2)."""
    x = checks.float_array(x, "x", ndim=4, dims="(B, T, H, K)")
    B, T, _, K = x.shape
    if K % 2:
        raise ValueError(f"x: expected an even number of features K (pairs of dims are rotated), got K = {K}")
    base = _validate.positive(base, "base")
    pos = _check_positions(positions, B, T)  # (1 or B, T)
    theta = base ** (-np.arange(K // 2) * 2.0 / K)  # (1): (K/2,) in float64
    angle = pos[:, :, None, None].astype(np.float64) * theta  # (1 or B, T, 1, K/2)
    c, s = np.cos(angle).astype(x.dtype), np.sin(angle).astype(x.dtype)
    x1, x2 = x[..., : K // 2], x[..., K // 2 :]  # (B, T, H, K/2) each
    y = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)  # (2): (B, T, H, K)
    return y, (c, s, x.shape, x.dtype)


def rope_backward(dy: np.ndarray, cache):
    """Backward: the inverse rotation (4). Returns ``(dx,)``."""
    c, s, shape, dtype = cache
    dy = _validate.cotangent(dy, "dy", shape, dtype, "(B, T, H, K) the shape of x")
    K = shape[3]
    dy1, dy2 = dy[..., : K // 2], dy[..., K // 2 :]
    dx = np.concatenate([dy1 * c + dy2 * s, dy2 * c - dy1 * s], axis=-1)  # (4): (B, T, H, K)
    return (dx,)
