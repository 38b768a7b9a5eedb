"""Validation, the cache, and the grouped-query helpers shared by the forms of attention."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.attention.masks import MaskSpec


@dataclass(frozen=True)
class AttentionCache:
    """What the backward of either form needs: the inputs, the output and one number per row.

    ``lse`` is the log-sum-exp of each row's allowed scores, log sum_s exp(scale q_t . k_s), the
    softmax normaliser in log form (-inf for a fully masked row). The backward recomputes the
    probabilities from it, P_ts = exp(scale q_t . k_s - lse_t), as FlashAttention does, instead of
    storing the (T, S) matrix. (FLA's ``naive_parallel_attn`` returns the row max of the scores,
    ``max_logits``, instead: max_logits <= lse <= max_logits + log S.)
    """

    q: np.ndarray  # (B, T, HQ, K)
    k: np.ndarray  # (B, S, H, K)
    v: np.ndarray  # (B, S, H, V)
    o: np.ndarray  # (B, T, HQ, V)
    lse: np.ndarray  # (B, T, HQ)
    scale: float
    mask: MaskSpec
    backend: str = "numpy"  # where the forward ran; the backward runs there too


def check_scale(scale, K: int) -> float:
    """None means K^-0.5; otherwise a finite real number."""
    if scale is None:
        return K**-0.5
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float, np.floating, np.integer))
        or not np.isfinite(scale)
    ):
        raise ValueError(f"scale: expected a finite number or None (K^-0.5), got {scale!r}")
    return float(scale)


def check_inputs(q, k, v, scale):
    """Validate q (B, T, HQ, K), k (B, S, H, K), v (B, S, H, V) with H dividing HQ; return them and scale."""
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, HQ, K)")
    B, T, HQ, K = q.shape
    checks.nonempty_time(T, "q")
    k = checks.float_array(k, "k", ndim=4, dims="(B, S, H, K)")
    checks.same_dtype(k, "k", q.dtype, "the dtype of q")
    _, S, H, _ = k.shape
    if k.shape[0] != B or k.shape[3] != K:
        raise ValueError(f"k: expected shape (B, S, H, K) with B = {B} and K = {K} (from q), got {k.shape}")
    checks.nonempty_time(S, "k")
    check_groups(HQ, H)
    v = checks.float_array(v, "v", ndim=4, dims="(B, S, H, V)")
    checks.same_dtype(v, "v", q.dtype, "the dtype of q")
    if v.shape[:3] != (B, S, H):
        raise ValueError(f"v: expected shape (B, S, H, V) with (B, S, H) = {(B, S, H)} (from k), got {v.shape}")
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        checks.finite(x, name)
    return q, k, v, check_scale(scale, K)


def check_groups(HQ: int, H: int) -> int:
    """Grouped-query attention: the H key/value heads must divide the HQ query heads; return G = HQ / H."""
    if H < 1 or HQ % H:
        raise ValueError(
            f"k: expected a number of heads H that divides HQ = {HQ} (the heads of q: MHA H = HQ, GQA, MQA H = 1), "
            f"got H = {H}"
        )
    return HQ // H


def check_cotangent(do, cache: AttentionCache) -> np.ndarray:
    """``do`` (B, T, HQ, V), the shape and dtype of ``o``."""
    do = checks.float_array(do, "do", ndim=4, dims="(B, T, HQ, V)")
    checks.same_shape(do, "do", cache.o.shape, "(B, T, HQ, V)", "the shape of o")
    checks.same_dtype(do, "do", cache.o.dtype, "the dtype of o")
    return do


def repeat_kv(x: np.ndarray, groups: int) -> np.ndarray:
    """(B, S, H, X) -> (B, S, H * groups, X): query head h reads key/value head h // groups."""
    return np.repeat(x, groups, axis=2)


def sum_groups(dx: np.ndarray, H: int) -> np.ndarray:
    """The adjoint of ``repeat_kv``: (B, S, HQ, X) -> (B, S, H, X), summing the G = HQ / H copies."""
    B, S, HQ, X = dx.shape
    return dx.reshape(B, S, H, HQ // H, X).sum(axis=3)  # (B, S, H, G, X) -> (B, S, H, X)


def head_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 2, 1)  # (B, T, H, X) -> (B, H, T, X)


def time_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, 2))  # (B, H, T, X) -> (B, T, H, X)
