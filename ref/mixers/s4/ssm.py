"""The discrete SSM in general (any Ā): its recurrence, its convolution kernel by powers, and the
same kernel from its generating function. Slow, obvious references that S4 and S4D are checked
against (small N; they take plain arrays, real or complex, and have no backward).

Unrolling the recurrence from x_{-1} = 0 (S4 paper, eqs. (4)-(5)):

    x_k = Ā x_{k-1} + B̄ u_k,   y_k = C x_k                                                (1)
    y_k = sum_{j<=k} C Ā^{k-j} B̄ u_j = (K * u)_k,   K_l = C Ā^l B̄,  l = 0 .. L-1         (2)

Generating function (S4 paper, Sec. 3 and App. C). Truncated at L terms,

    K̂(z) = sum_{l<L} K_l z^l = C (I - Ā^L z^L) (I - Ā z)^{-1} B̄                          (3)

and at the L-th roots of unity z_k = exp(-2πik/L) the factor z^L is 1, so with C̃ = C (I - Ā^L)

    K̂(z_k) = C̃ (I - Ā z_k)^{-1} B̄ = sum_l K_l exp(-2πi kl/L) = FFT(K)_k                  (4)

and K = IFFT(K̂(z)). A matrix power became a resolvent (an inverse): the step S4 builds on.
(annotated-s4 evaluates at exp(+2πik/L) and reverses the order of the result, the same thing.)
"""

from __future__ import annotations

import numpy as np

from ref import checks

__all__ = ["ssm_recurrence", "ssm_kernel_powers", "ssm_kernel_generating"]


def _check(Abar, Bbar, C):
    Abar, Bbar, C = np.asarray(Abar), np.asarray(Bbar), np.asarray(C)
    N = Bbar.shape[0] if Bbar.ndim == 1 else -1
    if Bbar.ndim != 1 or C.shape != (N,) or Abar.shape not in ((N,), (N, N)):
        raise ValueError(
            f"Abar, Bbar, C: expected Abar (N, N) or (N,) (diagonal), Bbar (N,) and C (N,), "
            f"got {Abar.shape}, {Bbar.shape}, {C.shape}"
        )
    return Abar, Bbar, C


def _apply(Abar, x):
    """Ā x for a dense (N, N) or diagonal (N,) Ā."""
    return Abar * x if Abar.ndim == 1 else Abar @ x


def ssm_recurrence(Abar, Bbar, C, u):
    """(1) by a loop: ``u`` (L,) -> ``y`` (L,) (complex if the SSM is)."""
    Abar, Bbar, C = _check(Abar, Bbar, C)
    x = np.zeros(Bbar.shape, np.result_type(Abar, Bbar, C, u))
    y = np.empty(len(u), x.dtype)
    for k, u_k in enumerate(u):
        x = _apply(Abar, x) + Bbar * u_k  # (1)
        y[k] = C @ x  # (1)
    return y


def ssm_kernel_powers(Abar, Bbar, C, L: int):
    """(2) by L - 1 matrix-vector products: ``K`` (L,) with K_l = C Ā^l B̄. O(N^2 L)."""
    Abar, Bbar, C = _check(Abar, Bbar, C)
    L = checks.positive_int(L, "L")
    K = np.empty(L, np.result_type(Abar, Bbar, C))
    x = Bbar.astype(K.dtype)  # Ā^0 B̄
    for l in range(L):
        K[l] = C @ x  # (2)
        x = _apply(Abar, x)  # Ā^{l+1} B̄
    return K


def ssm_kernel_generating(Abar, Bbar, C, L: int):
    """(3)-(4): evaluate the truncated generating function at the roots of unity, then IFFT.

    Returns ``K`` (L,) complex (its imaginary part is rounding when the SSM is real). O(N^3 L).
    """
    Abar, Bbar, C = _check(Abar, Bbar, C)
    L = checks.positive_int(L, "L")
    N = Bbar.shape[0]
    A = np.diag(Abar) if Abar.ndim == 1 else Abar  # (N, N)
    I = np.eye(N)
    Ct = C @ (I - np.linalg.matrix_power(A, L))  # C̃ = C (I - Ā^L), (4)
    z = np.exp(-2j * np.pi * (np.arange(L) / L))  # (L,) roots of unity
    Khat = np.array([Ct @ np.linalg.solve(I - A * zk, Bbar) for zk in z])  # (4): K̂(z_k)
    return np.fft.ifft(Khat)  # K = IFFT(K̂)
