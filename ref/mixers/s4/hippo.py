"""HiPPO-LegS and its normal-plus-low-rank (NPLR) and diagonal-plus-low-rank (DPLR) forms.

The HiPPO-LegS matrix (S4 paper, eq. (2)) makes the state x(t) of x' = A x + B u hold the
coefficients of u's history in scaled Legendre polynomials:

             ⎧ -sqrt(2n+1) sqrt(2k+1)   n > k
    A_nk =   ⎨ -(n+1)                   n = k          B_n = sqrt(2n+1)                   (1)
             ⎩ 0                        n < k

It is not normal, so it cannot be diagonalised stably (its eigenvector matrix is exponentially
ill-conditioned: S4 paper, Sec. 3.1). But adding a rank-one term makes it normal (S4, Thm. 1):

    A = S - P P^T,   P_n = sqrt(n + 1/2)                                                   (2)
    S = A + P P^T = -1/2 I + K,   K skew-symmetric  (K_nk = -sqrt(n+1/2) sqrt(k+1/2) for n > k,
                                                    +sqrt(n+1/2) sqrt(k+1/2) for n < k)

and a normal matrix has a unitary eigenbasis: S = V Λ V^*. The eigenvalues are -1/2 + i μ with
μ the (real) eigenvalues of the Hermitian matrix -iK, so ``numpy.linalg.eigh`` finds them stably
(in float64, as state-spaces/s4's ``nplr``). In that basis A is diagonal plus low rank:

    V^* A V = Λ - (V^* P)(V^* P)^*                                                         (3)

K is real, so its eigenvalues come in pairs ±iμ with conjugate eigenvectors: for even N we keep
the N/2 modes with μ > 0 (state-spaces/s4 keeps the other half, μ < 0: conjugating every mode
gives the same real SSM) and recover the rest as conjugates, so with V (N, N/2):

    S = V Λ V^* + conj(V Λ V^*) = 2 Re(V Λ V^*),    A = 2 Re(V Λ V^*) - P P^T              (4)

References: annotated-s4 ``make_HiPPO`` / ``make_NPLR_HiPPO`` / ``make_DPLR_HiPPO``
(srush/annotated-s4 s4/s4.py); state-spaces/s4 ``transition('legs')``, ``rank_correction`` and
``nplr`` (src/models/hippo/hippo.py @bfd9eb1).
"""

from __future__ import annotations

import numpy as np

from ref import checks

__all__ = ["hippo_legs", "hippo_legs_nplr", "hippo_legs_dplr"]


def hippo_legs(N: int):
    """The HiPPO-LegS pair (1): ``A`` (N, N) and ``B`` (N,), float64."""
    N = checks.positive_int(N, "N")
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * n + 1)  # (N,)
    # (1): -sqrt(2n+1) sqrt(2k+1) strictly below the diagonal, -(n+1) on it, 0 above
    A = -np.tril(np.outer(r, r), k=-1) - np.diag(n + 1)  # (N, N)
    return A, r.copy()


def hippo_legs_nplr(N: int):
    """The normal-plus-low-rank form (2): ``S`` (N, N) normal, ``P`` (N,), ``B`` (N,) with A = S - P P^T."""
    A, B = hippo_legs(N)
    P = np.sqrt(np.arange(N, dtype=np.float64) + 0.5)  # (N,)
    S = A + np.outer(P, P)  # (2): -1/2 I + skew
    return S, P, B


def hippo_legs_dplr(N: int):
    """The diagonal-plus-low-rank form (3)-(4), one mode of each conjugate pair.

    Returns ``Lambda`` (N/2,) complex with real part -1/2 and imaginary part > 0 (ascending),
    ``P`` = V^* P and ``B`` = V^* B (N/2,) complex, and ``V`` (N, N/2) complex with orthonormal
    columns, such that S = 2 Re(V diag(Lambda) V^*) and A = S - P P^T. N must be even.
    """
    N = checks.positive_int(N, "N")
    if N % 2:
        raise ValueError(f"N: expected an even state size (the modes come in conjugate pairs), got {N}")
    S, P, B = hippo_legs_nplr(N)
    # (2): S = -1/2 I + K. Take K exactly skew, and the real part of the spectrum from the diagonal.
    K = 0.5 * (S - S.T)  # (N, N) skew
    lam_re = float(np.mean(np.diag(S)))  # -1/2
    # K v = i mu v  <=>  (-i K) v = mu v with -iK Hermitian: eigh, in float64
    mu, W = np.linalg.eigh(-1j * K)  # (N,), (N, N); mu ascending, pairs +-mu
    keep = np.arange(N // 2, N)  # the N/2 largest: mu > 0 (their conjugates have -mu)
    Lambda = lam_re + 1j * mu[keep]  # (N/2,)
    V = W[:, keep]  # (N, N/2)
    Vh = V.conj().T  # (N/2, N)
    return Lambda, Vh @ P, Vh @ B, V
