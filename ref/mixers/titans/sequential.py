"""Titans' memory, the sequential form: one token at a time (paper eqs. 12-15).

For t = 1 .. T, with the inner gradient taken at the anchor memory M_a::

    G_t = grad_M l(M_a; k_t, v_t)                    (eq. 12, ``memory.inner_grad``)
    S_t = eta_t S_(t-1) - theta_t G_t                (eq. 14, momentary surprise with momentum)
    M_t = (1 - alpha_t) M_(t-1) + S_t                (eq. 13, forgetting)
    y_t = M_t(q_t)                                   (eq. 15, a read without an update)

With ``chunk_size = 1`` the anchor is M_(t-1): the fully sequential update of the paper. With
``chunk_size = b`` the anchor is the memory entering the chunk, M_(t') (t' the last token of the
chunk before), as in the paper's mini-batch training (section 3.2); this loop is the reference
that the chunked matmul/scan form (``chunked.py``) must equal for every b.

The read: eq. 15 writes y_t = M*(q_t) without an index; we read the memory *after* token t's
update, M_t, so that y_t sees x_t (as linear attention's o_t = q_t S_t). MAC reads the memory
entering the segment instead (``ref.models.titans``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref.mixers.titans._inputs import axpy, check_cotangents, check_inputs, dot, scale
from ref.mixers.titans.memory import inner_grad, inner_grad_backward, memory_forward, memory_forward_backward


@dataclass(frozen=True)
class SequentialCache:
    q: np.ndarray  # (B, T, H, K)
    k: np.ndarray
    v: np.ndarray  # (B, T, H, V)
    eta: np.ndarray  # (B, T, H)
    theta: np.ndarray
    alpha: np.ndarray
    memories: list  # M_0 .. M_T, each a tuple of (B, H, out, in)
    surprises: list  # S_0 .. S_T
    anchors: list  # the anchor of each token (the same tuple object within a chunk)
    chunk_size: int


def titans_sequential(q, k, v, eta, theta, alpha, initial_memory, initial_surprise=None, *, chunk_size=1):
    """The token-by-token loop. q, k (B, T, H, K); v (B, T, H, V); eta, theta, alpha (B, T, H) in [0, 1].

    ``initial_memory``: a tuple of L weight arrays (B, H, out_l, in_l), K -> ... -> V (L = 1: a
    linear memory (B, H, V, K)); ``initial_surprise`` likewise (None: zeros). ``chunk_size``: how
    many tokens share the anchor memory of their inner gradients (1: fully sequential).

    Returns ``y`` (B, T, H, V), ``final_memory``, ``final_surprise`` (tuples like the initial
    ones) and the cache.
    """
    q, k, v, eta, theta, alpha, M, S, b = check_inputs(
        q, k, v, eta, theta, alpha, initial_memory, initial_surprise, chunk_size
    )
    B, T, H, _ = q.shape
    y = np.empty((B, T, H, v.shape[3]), q.dtype)
    memories, surprises, anchors = [M], [S], []
    for t in range(T):
        if t % b == 0:
            anchor = M  # gradients of this chunk are taken at the memory entering it
        G, _ = inner_grad(anchor, k[:, t], v[:, t])  # eq. 12: (B, H, out, in) per layer
        S = axpy(eta[:, t], S, scale(-theta[:, t], G))  # eq. 14: S_t = eta_t S_(t-1) - theta_t G_t
        M = axpy(1.0 - alpha[:, t], M, S)  # eq. 13: M_t = (1 - alpha_t) M_(t-1) + S_t
        y[:, t], _ = memory_forward(M, q[:, t])  # eq. 15: y_t = M_t(q_t)
        memories.append(M)
        surprises.append(S)
        anchors.append(anchor)
    cache = SequentialCache(q, k, v, eta, theta, alpha, memories, surprises, anchors, b)
    return y, M, S, cache


def titans_sequential_backward(dy, dfinal_memory, dfinal_surprise, cache: SequentialCache):
    """Backward of the loop. Returns ``dq, dk, dv, deta, dtheta, dalpha, dinitial_memory, dinitial_surprise``.

    The loop reversed: dM and dS carry the gradient of M_t and S_t back in time; the gradient
    reaching an anchor through the inner gradients of its chunk (``dA``) joins dM at the chunk
    start, where the anchor was M_(t'-1).
    """
    c = cache
    B, T, H, _ = c.q.shape
    dy, dM, dS = check_cotangents(dy, dfinal_memory, dfinal_surprise, c.memories[0], (B, T, H, c.v.shape[3]),
                                  c.q.dtype)
    dq, dk, dv = np.zeros_like(c.q), np.zeros_like(c.k), np.zeros_like(c.v)
    deta, dtheta, dalpha = np.zeros_like(c.eta), np.zeros_like(c.theta), np.zeros_like(c.alpha)
    dA = tuple(np.zeros_like(w) for w in dM)
    for t in range(T - 1, -1, -1):
        M, M_prev, S_prev = c.memories[t + 1], c.memories[t], c.surprises[t]
        _, read = memory_forward(M, c.q[:, t])
        dW_read, dq[:, t] = memory_forward_backward(dy[:, t], read)
        dM = tuple(a + b for a, b in zip(dM, dW_read))  # y_t = M_t(q_t)
        dS = tuple(a + b for a, b in zip(dS, dM))  # M_t = (1 - alpha_t) M_(t-1) + S_t
        dalpha[:, t] = -dot(dM, M_prev)
        dM = scale(1.0 - c.alpha[:, t], dM)
        G, inner = inner_grad(c.anchors[t], c.k[:, t], c.v[:, t])  # S_t = eta_t S_(t-1) - theta_t G_t
        deta[:, t] = dot(dS, S_prev)
        dtheta[:, t] = -dot(dS, G)
        dG = scale(-c.theta[:, t], dS)
        dS = scale(c.eta[:, t], dS)
        dW_anchor, dk[:, t], dv[:, t] = inner_grad_backward(dG, inner)
        dA = tuple(a + b for a, b in zip(dA, dW_anchor))
        if t % c.chunk_size == 0:  # the anchor of this chunk is M_(t-1)
            dM = tuple(a + b for a, b in zip(dM, dA))
            dA = tuple(np.zeros_like(w) for w in dA)
    return dq, dk, dv, deta, dtheta, dalpha, dM, dS
