"""Titans' memory, the chunked-parallel form: matmuls and scans inside chunks of b tokens (section 3.2).

Inside a chunk every inner gradient is taken at the memory entering it, M_c (the paper's M_(t')),
so the b gradients G_i = grad l(M_c; k_i, v_i) are independent: one batched call. What is left,
momentum and forgetting, are linear recurrences; unrolled inside the chunk (t, i, j local)::

    S_t = E_t S_c - sum_(i<=t) P[t, i] G_i,      P[t, i] = theta_i prod_(j=i+1..t) eta_j,
                                                 E_t = prod_(j<=t) eta_j
    M_t = A_t M_c + sum_(j<=t) Da[t, j] S_j,     Da[t, j] = prod_(l=j+1..t) (1 - alpha_l),
                                                 A_t = prod_(l<=t) (1 - alpha_l)
        = A_t M_c + C_t S_c - sum_(i<=t) X[t, i] G_i,    X = Da P,   C = Da E

(the paper's eqs. 16-18; without momentum, X[t, i] = theta_i beta_t / beta_i, beta = A). The
decay matrices are built by their own recurrence (``chunk_decays``, R_t = g_t R_(t-1) + e_t):
exact products, no division by beta, no logarithm of a zero gate.

The read y_t = M_t(q_t) needs the memory of every token. For a linear memory (L = 1), with
G_i = delta_i k_i^T and delta_i = 2 (M_c k_i - v_i), it is the attention-like matmul form::

    y_t = A_t M_c q_t + C_t S_c q_t - sum_(i<=t) X[t, i] (k_i . q_t) delta_i

and for an MLP memory the per-token weights M_t are formed for the chunk (b copies) and read.
The backward recomputes each chunk from the memory and surprise entering it (checkpointing) and
reverses these steps; it forms the per-token weights for both kinds of memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref.mixers.titans._inputs import check_cotangents, check_inputs, dot
from ref.mixers.titans.memory import inner_grad, inner_grad_backward, memory_forward, memory_forward_backward


@dataclass(frozen=True)
class ChunkedCache:
    q: np.ndarray  # (B, T, H, K)
    k: np.ndarray
    v: np.ndarray  # (B, T, H, V)
    eta: np.ndarray  # (B, T, H)
    theta: np.ndarray
    alpha: np.ndarray
    memories: list  # the memory entering each chunk (and the final one), tuples of (B, H, out, in)
    surprises: list
    chunk_size: int


def chunk_decays(g):
    """R (..., n, n + 1): R[t, 0] = prod_(j<=t) g_j, R[t, i + 1] = prod_(j=i+1..t) g_j for i <= t, else 0.

    Built by the scan R_t = g_t R_(t-1) + e_(t+1) from R_(-1) = e_0. g (..., n).
    """
    n = g.shape[-1]
    R = np.zeros(g.shape + (n + 1,), g.dtype)  # (..., n, n + 1)
    prev = np.zeros(g.shape[:-1] + (n + 1,), g.dtype)
    prev[..., 0] = 1.0
    for t in range(n):
        R[..., t, :] = g[..., t, None] * prev
        R[..., t, t + 1] = 1.0
        prev = R[..., t, :]
    return R


def chunk_decays_backward(dR, R, g):
    """dg (..., n) of ``chunk_decays``, the scan reversed."""
    n = g.shape[-1]
    dg = np.zeros_like(g)
    carry = np.zeros_like(dR[..., 0, :])
    for t in range(n - 1, -1, -1):
        carry = carry + dR[..., t, :]
        if t > 0:
            prev = R[..., t - 1, :]
        else:
            prev = np.zeros_like(carry)
            prev[..., 0] = 1.0
        dg[..., t] = np.sum(carry * prev, axis=-1)
        carry = g[..., t, None] * carry
        carry[..., t] = 0.0  # R_(t-1) has no entry at column t (e_t was added, not scaled)
    return dg


def _heads_first(x):
    return np.moveaxis(x, 1, 2)  # (B, T, H, ...) -> (B, H, T, ...)


def _mixing(eta, theta, alpha):
    """The chunk's decay matrices from its gates (B, H, n): E, A, C (B, H, n); P, X (B, H, n, n)."""
    R_eta = chunk_decays(eta)
    R_a = chunk_decays(1.0 - alpha)
    E, D_eta = R_eta[..., 0], R_eta[..., 1:]
    A, D_a = R_a[..., 0], R_a[..., 1:]
    P = D_eta * theta[..., None, :]  # P[t, i] = theta_i prod_(j=i+1..t) eta_j
    X = D_a @ P  # (B, H, n, n)
    C = np.einsum("bhtj,bhj->bht", D_a, E)
    return dict(R_eta=R_eta, R_a=R_a, E=E, A=A, D_a=D_a, D_eta=D_eta, P=P, X=X, C=C)


def _token_memories(Wc, Sc, G, m):
    """M_t = A_t M_c + C_t S_c - sum_i X[t, i] G_i for every token t: tuple of (B, H, n, out, in)."""
    return tuple(
        m["A"][..., None, None] * w[:, :, None] + m["C"][..., None, None] * s[:, :, None]
        - np.einsum("bhti,bhioj->bhtoj", m["X"], g)
        for w, s, g in zip(Wc, Sc, G)
    )


def linear_chunk_read(Wc, Sc, k, q, delta, m):
    """The matmul form of the read for a linear memory: y (B, H, n, V) from M_c, S_c (B, H, V, K)."""
    scores = (q @ np.swapaxes(k, -1, -2)) * m["X"]  # X[t, i] (q_t . k_i): (B, H, n, n)
    return (
        m["A"][..., None] * np.einsum("bhvk,bhtk->bhtv", Wc, q)
        + m["C"][..., None] * np.einsum("bhvk,bhtk->bhtv", Sc, q)
        - scores @ delta
    )


def _chunk_forward(Wc, Sc, q, k, v, eta, theta, alpha):
    """One chunk, heads first: q, k (B, H, n, K); gates (B, H, n). Returns y, M_end, S_end and parts."""
    G, inner = inner_grad(tuple(w[:, :, None] for w in Wc), k, v)  # eq. 12 at M_c: (B, H, n, out, in)
    m = _mixing(eta, theta, alpha)
    if len(Wc) == 1:
        _, _, _, (delta,), _ = inner  # delta (B, H, n, V): G_i = delta_i k_i^T
        y = linear_chunk_read(Wc[0], Sc[0], k, q, delta, m)
        M_end = (m["A"][..., -1, None, None] * Wc[0] + m["C"][..., -1, None, None] * Sc[0]
                 - np.einsum("bhi,bhiv,bhik->bhvk", m["X"][..., -1, :], delta, k),)
    else:
        Mt = _token_memories(Wc, Sc, G, m)
        y, _ = memory_forward(Mt, q)  # eq. 15: y_t = M_t(q_t)
        M_end = tuple(w[:, :, -1] for w in Mt)
    S_end = tuple(  # eq. 14 unrolled: S_end = E_end S_c - sum_i P[end, i] G_i
        m["E"][..., -1, None, None] * s - np.einsum("bhi,bhioj->bhoj", m["P"][..., -1, :], g) for s, g in zip(Sc, G)
    )
    return y, M_end, S_end, (G, inner, m)


def titans_chunked(q, k, v, eta, theta, alpha, initial_memory, initial_surprise=None, *, chunk_size=16):
    """The chunked-parallel form; same arguments and outputs as ``titans_sequential``.

    It equals ``titans_sequential(..., chunk_size=chunk_size)`` (the same anchors) for every
    chunk size, and the fully sequential update for ``chunk_size = 1``. T need not be a multiple
    of the chunk size: the last chunk is shorter.
    """
    q, k, v, eta, theta, alpha, M, S, b = check_inputs(
        q, k, v, eta, theta, alpha, initial_memory, initial_surprise, chunk_size
    )
    B, T, H, _ = q.shape
    y = np.empty((B, T, H, v.shape[3]), q.dtype)
    memories, surprises = [M], [S]
    for s in range(0, T, b):
        e = min(s + b, T)
        parts = [_heads_first(x[:, s:e]) for x in (q, k, v, eta, theta, alpha)]
        yc, M, S, _ = _chunk_forward(M, S, *parts)
        y[:, s:e] = np.moveaxis(yc, 1, 2)  # (B, n, H, V)
        memories.append(M)
        surprises.append(S)
    cache = ChunkedCache(q, k, v, eta, theta, alpha, memories, surprises, b)
    return y, M, S, cache


def _chunk_backward(dy, dM_end, dS_end, Wc, Sc, q, k, v, eta, theta, alpha):
    """Reverse one chunk; returns dWc, dSc, dq, dk, dv, deta, dtheta, dalpha (heads first)."""
    G, inner = inner_grad(tuple(w[:, :, None] for w in Wc), k, v)
    m = _mixing(eta, theta, alpha)
    Mt = _token_memories(Wc, Sc, G, m)
    _, read = memory_forward(Mt, q)
    dMt, dq = memory_forward_backward(dy, read)  # y_t = M_t(q_t)
    dMt = tuple(d.copy() for d in dMt)
    for d, de in zip(dMt, dM_end):
        d[:, :, -1] += de  # M_end = M_(last token)
    # M_t = A_t M_c + C_t S_c - sum_i X[t, i] G_i
    dA = dot(dMt, tuple(w[:, :, None] for w in Wc))
    dC = dot(dMt, tuple(s[:, :, None] for s in Sc))
    dX = -sum(np.einsum("bhtoj,bhioj->bhti", d, g) for d, g in zip(dMt, G))
    dG = [-np.einsum("bhti,bhtoj->bhioj", m["X"], d) for d in dMt]
    dWc = [np.einsum("bht,bhtoj->bhoj", m["A"], d) for d in dMt]
    dSc = [np.einsum("bht,bhtoj->bhoj", m["C"], d) for d in dMt]
    # S_end = E_end S_c - sum_i P[end, i] G_i
    dE = np.zeros_like(m["E"])
    dE[..., -1] = dot(dS_end, Sc)
    dP = np.zeros_like(m["P"])
    dP[..., -1, :] = -sum(np.einsum("bhoj,bhioj->bhi", d, g) for d, g in zip(dS_end, G))
    for l, d in enumerate(dS_end):
        dSc[l] = dSc[l] + m["E"][..., -1, None, None] * d
        dG[l] = dG[l] - m["P"][..., -1, :, None, None] * d[:, :, None]
    # X = D_a P and C = D_a E
    dD_a = dX @ np.swapaxes(m["P"], -1, -2) + dC[..., :, None] * m["E"][..., None, :]
    dP = dP + np.swapaxes(m["D_a"], -1, -2) @ dX
    dE = dE + np.einsum("bhtj,bht->bhj", m["D_a"], dC)
    # P = D_eta diag(theta)
    dD_eta = dP * theta[..., None, :]
    dtheta = np.sum(dP * m["D_eta"], axis=-2)
    deta = chunk_decays_backward(np.concatenate([dE[..., None], dD_eta], axis=-1), m["R_eta"], eta)
    dalpha = -chunk_decays_backward(np.concatenate([dA[..., None], dD_a], axis=-1), m["R_a"], 1.0 - alpha)
    # G_i = grad l(M_c; k_i, v_i), all at the chunk-start memory
    dW_inner, dk, dv = inner_grad_backward(tuple(dG), inner)
    dWc = tuple(a + np.sum(b, axis=2) for a, b in zip(dWc, dW_inner))
    return dWc, tuple(dSc), dq, dk, dv, deta, dtheta, dalpha


def titans_chunked_backward(dy, dfinal_memory, dfinal_surprise, cache: ChunkedCache):
    """Backward, chunk by chunk in reverse. Returns the gradients of ``titans_sequential_backward``."""
    c = cache
    B, T, H, _ = c.q.shape
    dy, dM, dS = check_cotangents(dy, dfinal_memory, dfinal_surprise, c.memories[0], (B, T, H, c.v.shape[3]),
                                  c.q.dtype)
    grads = [np.zeros_like(x) for x in (c.q, c.k, c.v, c.eta, c.theta, c.alpha)]
    starts = list(range(0, T, c.chunk_size))
    for n in range(len(starts) - 1, -1, -1):
        s, e = starts[n], min(starts[n] + c.chunk_size, T)
        parts = [_heads_first(x[:, s:e]) for x in (c.q, c.k, c.v, c.eta, c.theta, c.alpha)]
        dM, dS, *dparts = _chunk_backward(_heads_first(dy[:, s:e]), dM, dS, c.memories[n], c.surprises[n], *parts)
        for g, d in zip(grads, dparts):
            g[:, s:e] = np.moveaxis(d, 1, 2)
    return (*grads, dM, dS)
