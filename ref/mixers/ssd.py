"""Mamba-2's state space duality (SSD): the same scalar-decay SSM as a recurrence, as masked
attention (the "quadratic" form) and as the four-step chunked algorithm.

Conventions of mamba_ssm's ``ssd_minimal_discrete``: X (b, l, h, p), A (b, l, h) *already
discretised* (A_t = dt_t A_head <= 0, a natural-log decay), B, C (b, l, h, n), states (b, h, p, n)
(``p`` the head dim, ``n`` the state size). The recurrence (Mamba-2 paper, Sec. 3):

    H_t = exp(A_t) H_{t-1} + X_t^T B_t        H: (p, n) per batch and head                 (1)
    Y_t = H_t C_t                                                                         (2)

It is simple GLA (``ref.mixers.simple_gla``) with q = C, k = B, v = X, g = A, scale 1 and the
state transposed ((p, n) here, (K, V) = (n, p) there); ``ssd_recurrent`` and ``ssd_quadratic``
(simple GLA's decay-matrix form: Y = (L ⊙ C B^T) X with L_ts = exp(segsum(A))_ts) use that. The
chunked form is written out as ``ssd_minimal`` computes it, in four steps over chunks of
``block_len`` positions (any length: the last chunk is padded with A = 0, B = C = X = 0, which
leaves every state unchanged):

    1. intra-chunk outputs:   Y_diag = (L_c ⊙ C B^T) X within each chunk (L_c from a segsum)   (3)
    2. chunk states:          S_c = sum_j exp(Acs_last - Acs_j) X_j^T B_j                    (4)
    3. inter-chunk recurrence: states entering chunk z = sum_{c < z} exp(segsum over chunk
                               decays)_zc S_c, plus the initial state; the last is the final  (5)
    4. state -> output:       Y_off = exp(Acs_i) C_i (state entering the chunk)             (6)

(Acs = the cumulative sum of A within the chunk.) Steps 1, 2 and 4 are independent per chunk;
step 3 is a small (chunks x chunks) product.

``ssd_chunked(..., backend="numba")`` runs the same four steps as compiled CPU kernels
(``numba_kernels.ssd_cpu``: parallel over batch, head and chunk, step 3 over chunks); its backward
runs there too.

Backward: each step's gradient in reverse order for dX, dB, dC and the initial state; dA from the
identity dA_t = sum_{t' >= t} (C . dC - B . dB)_t' (+ the final state's term), as for GLA
(``ref.mixers.gla._inputs.gate_gradient``): the decays enter only through exp(Acs_t - Acs_s)
between a read at t and a write at s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.simple_gla import (
    simple_gla_decay_matrix,
    simple_gla_decay_matrix_backward,
    simple_gla_recurrent,
    simple_gla_recurrent_backward,
)

__all__ = [
    "FORMS",
    "segsum",
    "ssd_recurrent",
    "ssd_recurrent_backward",
    "ssd_quadratic",
    "ssd_quadratic_backward",
    "ssd_chunked",
    "ssd_chunked_backward",
]


def check_inputs(X, A, B, C, initial_states):
    X = checks.float_array(X, "X", ndim=4, dims="(b, l, h, p)")
    b, l, h, p = X.shape
    checks.nonempty_time(l, "X")
    A = checks.float_array(A, "A", ndim=3, dims="(b, l, h)")
    checks.same_shape(A, "A", (b, l, h), "(b, l, h)", "from X")
    B = checks.float_array(B, "B", ndim=4, dims="(b, l, h, n)")
    if B.shape[:3] != (b, l, h):
        raise ValueError(f"B: expected shape (b, l, h, n) with (b, l, h) = {(b, l, h)} (from X), got {B.shape}")
    C = checks.float_array(C, "C", ndim=4, dims="(b, l, h, n)")
    checks.same_shape(C, "C", B.shape, "(b, l, h, n)", "the shape of B")
    for x, name in ((A, "A"), (B, "B"), (C, "C")):
        checks.same_dtype(x, name, X.dtype, "the dtype of X")
    for x, name in ((X, "X"), (A, "A"), (B, "B"), (C, "C")):
        checks.finite(x, name)
    if A.size and A.max() > 0:
        i = tuple(int(j) for j in np.unravel_index(int(np.argmax(A)), A.shape))
        raise ValueError(f"A: expected discretised log-decays <= 0 (dt * A with A < 0), got {float(A[i])} at index {i}")
    if initial_states is not None:
        n = B.shape[3]
        initial_states = checks.float_array(initial_states, "initial_states", ndim=4, dims="(b, h, p, n)")
        checks.same_shape(initial_states, "initial_states", (b, h, p, n), "(b, h, p, n)", "from X and B")
        checks.same_dtype(initial_states, "initial_states", X.dtype, "the dtype of X")
        checks.finite(initial_states, "initial_states")
    return X, A, B, C, initial_states


def _T(S):
    """(b, h, p, n) <-> (b, h, n, p): SSD's state layout against GLA's (K, V)."""
    return None if S is None else np.ascontiguousarray(np.swapaxes(S, -1, -2))


def _via_simple_gla(forward, X, A, B, C, initial_states):
    X, A, B, C, initial_states = check_inputs(X, A, B, C, initial_states)
    Y, ht, cache = forward(C, B, X, A, scale=1.0, initial_state=_T(initial_states))
    return Y, _T(ht), cache


def _grads_via_simple_gla(backward, dY, dfinal_state, cache):
    dC, dB, dX, dA, dh0 = backward(dY, _T(dfinal_state), cache)
    return dX, dA, dB, dC, _T(dh0)


def ssd_recurrent(X, A, B, C, *, initial_states=None):
    """(1)-(2) by a loop over time. Returns ``Y`` (b, l, h, p), ``final_state`` (b, h, p, n), cache."""
    return _via_simple_gla(simple_gla_recurrent, X, A, B, C, initial_states)


def ssd_recurrent_backward(dY, dfinal_state, cache):
    """Gradients ``(dX, dA, dB, dC, dinitial_states)``."""
    return _grads_via_simple_gla(simple_gla_recurrent_backward, dY, dfinal_state, cache)


def ssd_quadratic(X, A, B, C, *, initial_states=None):
    """The quadratic ("attention") form: Y = (L ⊙ C B^T) X with L = exp(segsum(A)), O(l^2)."""
    return _via_simple_gla(simple_gla_decay_matrix, X, A, B, C, initial_states)


def ssd_quadratic_backward(dY, dfinal_state, cache):
    """Gradients ``(dX, dA, dB, dC, dinitial_states)``, dA written out term by term."""
    return _grads_via_simple_gla(simple_gla_decay_matrix_backward, dY, dfinal_state, cache)


# --- the four-step chunked algorithm ------------------------------------------------------------


def segsum(x):
    """segsum(x)[..., i, j] = x_{j+1} + ... + x_i for i >= j (0 on the diagonal), -inf for i < j.

    Computed as masked cumulative sums of x repeated along a new axis, not as a difference of
    cumulative sums, so no cancellation occurs.   (..., T) -> (..., T, T)
    """
    T = x.shape[-1]
    xr = np.repeat(x[..., None], T, axis=-1)  # (..., T, T): xr[..., i, j] = x_i
    below = np.tril(np.ones((T, T), dtype=bool), k=-1)
    xs = np.cumsum(np.where(below, xr, 0), axis=-2)  # sum over i' <= i of x_{i'} for i' > j
    return np.where(np.tril(np.ones((T, T), dtype=bool)), xs, -np.inf)


@dataclass(frozen=True)
class SSDChunkCache:
    X: np.ndarray  # (b, c, L, h, p) padded, in chunks
    A: np.ndarray  # (b, h, c, L)
    B: np.ndarray  # (b, c, L, h, n)
    C: np.ndarray  # (b, c, L, h, n)
    Lmat: np.ndarray  # (b, h, c, L, L) exp(segsum(A)) within chunks
    decay_states: np.ndarray  # (b, h, c, L)
    decay_chunk: np.ndarray  # (b, h, c+1, c+1)
    states_in: np.ndarray  # (b, c, h, p, n) entering each chunk
    final_state: np.ndarray  # (b, h, p, n)
    exp_Acs: np.ndarray  # (b, h, c, L)
    length: int
    has_initial: bool


@dataclass(frozen=True)
class SSDKernelCache:
    """What the numba kernels' backward needs: the inputs and the chunk-entering states."""

    X: np.ndarray  # (b, l, h, p)
    A: np.ndarray  # (b, l, h)
    B: np.ndarray  # (b, l, h, n)
    C: np.ndarray  # (b, l, h, n)
    states: np.ndarray  # (b, c+1, h, p, n): entering each chunk, then the final state
    block_len: int
    has_initial: bool
    backend: str


def _chunk(x, c, L):
    """(b, l, ...) padded with zeros to c*L steps and split: (b, c, L, ...)."""
    pad = c * L - x.shape[1]
    x = np.concatenate([x, np.zeros((x.shape[0], pad, *x.shape[2:]), x.dtype)], axis=1)
    return x.reshape(x.shape[0], c, L, *x.shape[2:])


def ssd_chunked(X, A, B, C, *, block_len: int = 64, initial_states=None, backend: str = "numpy"):
    """The four steps (3)-(6) of ``ssd_minimal`` over chunks of ``block_len``; any length l.

    backend: "numpy" (below), "numba" (``numba_kernels.ssd_cpu``) or "auto"."""
    X, A, B, C, initial_states = check_inputs(X, A, B, C, initial_states)
    L = checks.positive_int(block_len, "block_len")
    backend = resolve(backend, ("numpy", "numba"), "ssd_chunked")
    if backend == "numba":
        from numba_kernels.ssd_cpu import ssd_cpu_chunked

        Y, states = ssd_cpu_chunked(X, A, B, C, initial_states, L)
        cache = SSDKernelCache(X, A, B, C, states, L, initial_states is not None, backend)
        return Y, states[:, -1].copy(), cache
    b, l, h, p = X.shape
    n = B.shape[3]
    c = -(-l // L)
    Xc, Bc, Cc = _chunk(X, c, L), _chunk(B, c, L), _chunk(C, c, L)  # (b, c, L, h, .)
    Ac = np.moveaxis(_chunk(A, c, L), 3, 1)  # (b, h, c, L)
    Acs = np.cumsum(Ac, axis=-1)  # (b, h, c, L)

    # 1. intra-chunk (diagonal blocks), (3)
    Lmat = np.exp(segsum(Ac))  # (b, h, c, L, L)
    # (ssd_minimal writes this as one four-operand einsum; NumPy, unlike torch, would evaluate that
    # as one nested loop over all seven indices, so the masked scores W come first, as in the backward)
    W = np.einsum("bclhn,bcshn,bhcls->bchls", Cc, Bc, Lmat)  # (b, c, h, L, L): C_l . B_s L_ls
    Y_diag = np.einsum("bchls,bcshp->bclhp", W, Xc)  # (b, c, L, h, p)
    # 2. the state each chunk produces from a zero start, (4)
    decay_states = np.exp(Acs[..., -1:] - Acs)  # (b, h, c, L)
    states = np.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, Xc)  # (b, c, h, p, n)
    # 3. inter-chunk recurrence, (5): a (c+1) x (c+1) decay matrix over the chunk boundaries
    init = np.zeros((b, h, p, n), X.dtype) if initial_states is None else initial_states
    states = np.concatenate([init[:, None], states], axis=1)  # (b, c+1, h, p, n)
    chunk_decays = np.concatenate([np.zeros((b, h, 1), X.dtype), Acs[..., -1]], axis=-1)  # (b, h, c+1)
    decay_chunk = np.exp(segsum(chunk_decays))  # (b, h, c+1, c+1)
    new_states = np.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)  # (b, c+1, h, p, n)
    states_in, final_state = new_states[:, :-1], new_states[:, -1]
    # 4. state -> output, (6)
    exp_Acs = np.exp(Acs)  # (b, h, c, L)
    Y_off = np.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states_in, exp_Acs)
    Y = (Y_diag + Y_off).reshape(b, c * L, h, p)[:, :l]
    cache = SSDChunkCache(Xc, Ac, Bc, Cc, Lmat, decay_states, decay_chunk, states_in, final_state, exp_Acs, l,
                          initial_states is not None)
    return np.ascontiguousarray(Y), final_state.copy(), cache


def ssd_chunked_backward(dY, dfinal_state, cache: SSDChunkCache):
    """Gradients ``(dX, dA, dB, dC, dinitial_states)``: steps 4, 3, 2, 1 in reverse, dA by the identity."""
    if isinstance(cache, SSDKernelCache):
        return _chunked_backward_on_kernels(dY, dfinal_state, cache)
    Xc, Bc, Cc = cache.X, cache.B, cache.C
    b, c, L, h, p = Xc.shape
    n = Bc.shape[-1]
    l = cache.length
    dY = checks.float_array(dY, "dY", ndim=4, dims="(b, l, h, p)")
    checks.same_shape(dY, "dY", (b, l, h, p), "(b, l, h, p)", "the shape of Y")
    if dfinal_state is not None:
        dfinal_state = checks.float_array(dfinal_state, "dfinal_state", ndim=4, dims="(b, h, p, n)")
        checks.same_shape(dfinal_state, "dfinal_state", (b, h, p, n), "(b, h, p, n)", "the shape of final_state")
    dYc = _chunk(dY, c, L)  # (b, c, L, h, p)

    # 4. Y_off = exp(Acs_i) C_i S_in
    dC = np.einsum("bclhp,bchpn,bhcl->bclhn", dYc, cache.states_in, cache.exp_Acs)
    dstates_in = np.einsum("bclhp,bclhn,bhcl->bchpn", dYc, Cc, cache.exp_Acs)  # (b, c, h, p, n)
    # 3. new_states = decay_chunk @ states  (over the chunk axis)
    dnew = np.concatenate(
        [dstates_in, (np.zeros((b, h, p, n), Xc.dtype) if dfinal_state is None else dfinal_state)[:, None]], axis=1
    )  # (b, c+1, h, p, n)
    dstates = np.einsum("bhzc,bzhpn->bchpn", cache.decay_chunk, dnew)  # (b, c+1, h, p, n)
    dinit = dstates[:, 0] if cache.has_initial else None
    dlocal = dstates[:, 1:]  # (b, c, h, p, n)
    # 2. states = sum_j decay_states_j X_j^T B_j
    dB = np.einsum("bchpn,bhcl,bclhp->bclhn", dlocal, cache.decay_states, Xc)
    dX = np.einsum("bchpn,bhcl,bclhn->bclhp", dlocal, cache.decay_states, Bc)
    # 1. Y_diag = ((C B^T) ⊙ Lmat) X within each chunk
    W = np.einsum("bclhn,bcshn,bhcls->bchls", Cc, Bc, cache.Lmat)  # (b, c, h, L, L)
    dX += np.einsum("bchls,bclhp->bcshp", W, dYc)
    dW = np.einsum("bclhp,bcshp->bchls", dYc, Xc) * np.moveaxis(cache.Lmat, 1, 2)  # masked by Lmat (0 above)
    dC += np.einsum("bchls,bcshn->bclhn", dW, Bc)
    dB += np.einsum("bchls,bclhn->bcshn", dW, Cc)

    unchunk = lambda x: x.reshape(b, c * L, *x.shape[3:])[:, :l]  # noqa: E731  (b, l, ...)
    dX, dB, dC = unchunk(dX), unchunk(dB), unchunk(dC)
    Bf, Cf = unchunk(Bc), unchunk(Cc)
    # dA_t = sum_{t' >= t} (C . dC - B . dB)_t'  (+ the final state's term at every t)
    dG = (Cf * dC).sum(-1) - (Bf * dB).sum(-1)  # (b, l, h)
    dA = np.flip(np.cumsum(np.flip(dG, axis=1), axis=1), axis=1)
    if dfinal_state is not None:
        dA = dA + (dfinal_state * cache.final_state).sum(axis=(-1, -2))[:, None]
    return np.ascontiguousarray(dX), dA, np.ascontiguousarray(dB), np.ascontiguousarray(dC), dinit


def _chunked_backward_on_kernels(dY, dfinal_state, cache: SSDKernelCache):
    from numba_kernels.ssd_cpu import ssd_cpu_chunked_backward

    b, l, h, p = cache.X.shape
    n = cache.B.shape[3]
    dY = checks.float_array(dY, "dY", ndim=4, dims="(b, l, h, p)")
    checks.same_shape(dY, "dY", (b, l, h, p), "(b, l, h, p)", "the shape of Y")
    if dfinal_state is not None:
        dfinal_state = checks.float_array(dfinal_state, "dfinal_state", ndim=4, dims="(b, h, p, n)")
        checks.same_shape(dfinal_state, "dfinal_state", (b, h, p, n), "(b, h, p, n)", "the shape of final_state")
    return ssd_cpu_chunked_backward(cache.X, cache.A, cache.B, cache.C, cache.states, dY, dfinal_state, cache.block_len,
                                    cache.has_initial)


FORMS = {
    "recurrent": (ssd_recurrent, ssd_recurrent_backward),
    "quadratic": (ssd_quadratic, ssd_quadratic_backward),
    "chunked": (ssd_chunked, ssd_chunked_backward),
}
