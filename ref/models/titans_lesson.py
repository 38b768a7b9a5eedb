"""A block for the Titans lesson (lessons/17_titans_memory.py): segment attention, the baseline
"attention limited to a segment" that MAC (``ref.models.titans.mac_block``) extends with a memory.

Segment attention on x (B, T, D), segments of C tokens starting at position 0::

    q, k, v = x W_Q, x W_K, x W_V                    (B, T, H, K) / (B, T, H, V)
    o_t     = softmax over s <= t with s // C == t // C of (q_t . k_s / sqrt(K)) v_s     (chunked mask)
    out     = x + concat_heads(o) W_O

It is MAC's attention (``ref.models.titans``, eq. 23) without the persistent tokens and without
the memory's retrieved tokens: whatever lies before the current segment is invisible to it.

Functions: ``init_segment_attention_block``, ``segment_attention_block`` (``segment_len`` a keyword,
as ``mac_block``'s), ``segment_attention_block_backward``, which returns ``(dx, grads)`` with
``grads`` shaped like ``params``. In the LM scaffold: ``register_block("segattn",
init_segment_attention_block, functools.partial(segment_attention_block, segment_len=8),
segment_attention_block_backward)``.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.models.gla import check_cotangent, check_input, head_linear, head_linear_backward
from ref.models.transformer import init_attention_layer
from ref.nn.linear import linear, linear_backward

__all__ = [
    "init_segment_attention_block",
    "segment_attention_block",
    "segment_attention_block_backward",
]


def init_segment_attention_block(rng, D, num_heads=2, *, dtype=np.float64, **_unused):
    """W_q, W_k, W_v (D, H, K) and W_o (H*V, D), normal(D^-1/2) as MAC's attention."""
    return init_attention_layer(rng, D, num_heads, std=D**-0.5, dtype=dtype)


def segment_attention_block(params: dict, x: np.ndarray, *, segment_len: int = 8):
    """out = x + SegmentAttention(x) on x (B, T, D), segments of ``segment_len``. Returns ``(out, cache)``."""
    C = checks.positive_int(segment_len, "segment_len")
    attn = params  # W_q, W_k, W_v, W_o
    if not isinstance(attn, dict) or set(attn) != {"W_q", "W_k", "W_v", "W_o"}:
        got = sorted(attn) if isinstance(attn, dict) else type(attn).__name__
        raise ValueError(f"params: expected a dict with exactly W_q, W_k, W_v, W_o, got {got}")
    D = attn["W_q"].shape[0]
    x = check_input(x, D, attn["W_q"].dtype)
    q, cq = head_linear(x, attn["W_q"])  # (B, T, H, K)
    k, ck = head_linear(x, attn["W_k"])
    v, cv = head_linear(x, attn["W_v"])  # (B, T, H, V)
    o, c_attn = attention_parallel(q, k, v, mask="chunked", chunk_size=C)  # causal inside segments
    B, T, H, V = o.shape
    y, c_out = linear(o.reshape(B, T, H * V), attn["W_o"])  # (B, T, D)
    return x + y, (cq, ck, cv, c_attn, c_out, o.shape, x.shape)


def segment_attention_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    cq, ck, cv, c_attn, c_out, o_shape, x_shape = cache
    dy = check_cotangent(dy, x_shape, params["W_q"].dtype)
    g = {}
    do, g["W_o"], _ = linear_backward(dy, c_out)
    dq, dk, dv = attention_parallel_backward(do.reshape(o_shape), c_attn)
    dx = dy
    for name, d, c in (("W_q", dq, cq), ("W_k", dk, ck), ("W_v", dv, cv)):
        dx_p, g[name], _ = head_linear_backward(d, c)
        dx = dx + dx_p
    return dx, {key: g[key] for key in params}
