"""From the continuous SSM x' = A x + B u to the discrete x_k = Ā x_{k-1} + B̄ u_k, step Δ.

Two rules (S4 paper, eq. (3) is the bilinear one; the S4D paper adds ZOH):

* bilinear (Tustin; S4's choice):
      Ā = (I - Δ/2 A)^{-1} (I + Δ/2 A)        B̄ = (I - Δ/2 A)^{-1} Δ B                   (1)
* zero-order hold (u held constant over each step; exact for such inputs; S4D's default):
      Ā = exp(Δ A)                            B̄ = A^{-1} (exp(Δ A) - I) B                  (2)

For a diagonal A = diag(a) both act entry by entry:

      bilinear:  Ā = (1 + Δa/2) / (1 - Δa/2),    B̄ = Δ B / (1 - Δa/2)                      (1d)
      ZOH:       Ā = exp(Δa),                    B̄ = (exp(Δa) - 1) / a · B                 (2d)

(2d) uses expm1 for exp(Δa) - 1: no cancellation when |Δa| is small. Bilinear and ZOH agree to
O(Δ^3) in Ā (tested).

Backward of the diagonal rules, in the convention of ``_inputs`` (dz = ∂ℒ/∂Re z + i ∂ℒ/∂Im z,
holomorphic f gives dz = conj(f'(z)) dw; Δ real gives dΔ = Re(conj(∂w/∂Δ) dw)). With x = Δa:

      ZOH:       ∂Ā/∂a = Δ Ā,   ∂Ā/∂Δ = a Ā;   B̄ = F B with F = expm1(x)/a,
                 ∂F/∂a = (Δ Ā a - expm1(x)) / a^2,   ∂F/∂Δ = Ā                               (3)
      bilinear:  ∂Ā/∂x = 1/(1 - x/2)^2 (then ∂x/∂a = Δ, ∂x/∂Δ = a);  B̄ = G B with
                 G = Δ/(1 - x/2),  ∂G/∂a = Δ^2 / (2 (1 - x/2)^2),  ∂G/∂Δ = 1/(1 - x/2)^2     (4)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ref import checks
from ref.mixers.s4._inputs import DISCRETIZATIONS

__all__ = ["discretize_dense", "discretize_diag", "discretize_diag_backward"]


def discretize_dense(A, B, dt: float, method: str = "bilinear"):
    """(1) or (2) for a dense ``A`` (N, N) and ``B`` (N,), real or complex; returns ``(Abar, Bbar)``.

    The reference for small N (solves and a matrix exponential); ZOH needs A invertible.
    """
    method = checks.one_of(method, "method", DISCRETIZATIONS)
    A, B = np.asarray(A), np.asarray(B)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A: expected a square matrix (N, N), got shape {A.shape}")
    N = A.shape[0]
    if B.shape != (N,):
        raise ValueError(f"B: expected shape (N,) = ({N},) (from A), got {B.shape}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: expected a finite step > 0, got {dt!r}")
    I = np.eye(N)
    if method == "bilinear":
        BL = I - (dt / 2) * A  # (N, N) "backward Euler" half step
        Abar = np.linalg.solve(BL, I + (dt / 2) * A)  # (1)
        Bbar = np.linalg.solve(BL, dt * B)  # (1)
    else:
        Abar = scipy.linalg.expm(dt * A)  # (2)
        Bbar = np.linalg.solve(A, (Abar - I) @ B)  # (2)
    return Abar, Bbar


def discretize_diag(a, B, dt, method: str = "zoh"):
    """(1d) or (2d) entry by entry for complex ``a`` and ``B`` and real ``dt`` (broadcasting, e.g.
    a (H, N/2) with dt (H, 1)). Returns ``(Abar, Bbar)``; B = 1 gives B̄ for a unit input matrix."""
    x = dt * a  # Δa
    if method == "zoh":
        Abar = np.exp(x)  # (2d)
        Bbar = np.expm1(x) / a * B  # (2d)
    elif method == "bilinear":
        Abar = (1 + x / 2) / (1 - x / 2)  # (1d)
        Bbar = dt * B / (1 - x / 2)  # (1d)
    else:
        raise ValueError(f"discretization: expected one of {', '.join(map(repr, DISCRETIZATIONS))}, got {method!r}")
    return Abar, Bbar


def discretize_diag_backward(dAbar, dBbar, a, B, dt, method: str = "zoh"):
    """Backward of ``discretize_diag`` by (3) / (4): from the complex cotangents ``dAbar``, ``dBbar``
    (same shape as a) to ``(ddt, da, dB)``, each entry by entry (the caller sums ``ddt`` over the
    entries that share a step). ``dB`` is the complex cotangent of B (ignore it when B is fixed)."""
    x = dt * a
    if method == "zoh":
        Abar = np.exp(x)
        F = np.expm1(x) / a  # B̄ = F B
        dF = np.conj(B) * dBbar  # (4) of _inputs
        dB = F.conj() * dBbar
        dF_da = (dt * Abar * a - np.expm1(x)) / a**2  # (3)
        da = (dt * Abar).conj() * dAbar + dF_da.conj() * dF  # (3)
        ddt = ((a * Abar).conj() * dAbar).real + (Abar.conj() * dF).real  # (3)
    else:
        den = 1 - x / 2
        G = dt / den  # B̄ = G B
        dG = np.conj(B) * dBbar
        dB = G.conj() * dBbar
        dx = (1 / den**2).conj() * dAbar  # (4): d/dx of (1 + x/2)/(1 - x/2)
        da = dt * dx + (dt**2 / (2 * den**2)).conj() * dG  # (4)
        ddt = (a.conj() * dx).real + ((1 / den**2).conj() * dG).real  # (4)
    return ddt, da, dB
