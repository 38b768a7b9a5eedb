"""S4: the diagonal-plus-low-rank (DPLR) SSM, its kernel by Cauchy sums and Woodbury, its recurrence,
with hand-written backward for every parameter.

Per channel h the continuous SSM has (S4 paper, Sec. 3; ``hippo.hippo_legs_dplr`` gives HiPPO's)

    A = Λ - P P^*,   B,   C̃,   Δ = exp(log_dt)                                              (1)

with Λ diagonal and complex. Like S4D we store one mode of each conjugate pair, N/2 of them, and
rebuild all N as [x, conj(x)] (``_inputs.with_conjugates``); every formula below runs on all N.
As in annotated-s4 and state-spaces/s4, the trained output vector is C̃ = C̄ (I - Ā^L) rather than
C̄ (it saves a matrix power in the kernel; ``s4_discrete`` recovers C̄ for the recurrence).
Parameters, as real arrays: log_dt (H,); Lambda_re (< 0), Lambda_im, P_re, P_im, B_re, B_im,
Ct_re, Ct_im (H, N/2); D (H,) optional. Discretisation: bilinear.

**The kernel** (S4 paper, Alg. 1; annotated-s4 ``kernel_DPLR``). By ``ssm.py`` (4) the kernel's
FFT is the generating function at the roots of unity z_k = exp(-2πik/L). For the bilinear rule,

    K̂(z) = C̃ (I - Ā z)^{-1} B̄ = c(z) C̃ (g(z) - A)^{-1} B,
           g(z) = (2/Δ) (1 - z)/(1 + z),   c(z) = 2/(1 + z)                                 (2)

(substitute Ā = (I - Δ/2 A)^{-1}(I + Δ/2 A): I - Ā z = (I - Δ/2 A)^{-1} (1 + z) (g - A) Δ/2).
Woodbury turns the inverse of g - Λ + P P^* into a diagonal one, R = (g - Λ)^{-1}:

    (g - Λ + P P^*)^{-1} = R - R P (1 + P^* R P)^{-1} P^* R                                (3)

so that, with the Cauchy sums  k_ab(z) = sum_n a_n b_n / (g(z) - λ_n),

    K̂(z) = c(z) [ k(C̃, B) - k(C̃, P) k(P̄, B) / (1 + k(P̄, P)) ]                             (4)
    K = Re IFFT(K̂(z_0), ..., K̂(z_{L-1}))                                                   (5)

Four Cauchy sums over (L nodes) x (N modes): O(N L) instead of the O(N^2 L) of powers. (At
z = -1, k = L/2, c and g are infinite; in floating point z_{L/2} = -1 - 1.2e-16 i and the product
c k stays exact because c and g carry the same 1/(1 + z).)

**The recurrence** (S4 paper, App. C; annotated-s4 ``discrete_DPLR``). The bilinear rule needs
(I - Δ/2 A)^{-1}, which Woodbury (3) gives without a dense inverse:

    I + Δ/2 A = (Δ/2) A0,         A0 = 2/Δ I + Λ - P P^*            ("forward Euler")
    (I - Δ/2 A)^{-1} = (2/Δ) A1,  A1 = R - R P (1 + P^* R P)^{-1} P^* R,  R = (2/Δ - Λ)^{-1}
    Ā = A1 A0,   B̄ = 2 A1 B,   C̄ = C̃ (I - Ā^L)^{-1}                                       (6)
    x_k = Ā x_{k-1} + B̄ u_k,   y_k = Re(C̄ x_k) + D u_k                                      (7)

(the imaginary part of C̄ x_k is rounding: the modes come in conjugate pairs). The convolutional
form is y = K * u + D u (``conv.causal_conv``); the two forms agree forward and backward (tested).

**Backward of the kernel**, in the convention of ``_inputs`` (dz = ∂ℒ/∂Re z + i ∂ℒ/∂Im z). With
ρ = 1/(1 + k11) and Q_ln = 1/(g_l - λ_n) the Cauchy matrix:

    dK̂ = FFT(dK) / L                        (the adjoint of Re IFFT; dK real)              (8)
    dk00 = conj(c) dK̂,  dτ = -conj(c) dK̂ for the correction τ = k01 k10 ρ:
         dk01 = conj(k10 ρ) dτ,  dk10 = conj(k01 ρ) dτ,  dk11 = -conj(ρ^2) conj(k01 k10) dτ  (9)
    k_ab = Q v_ab:  dv_ab = Q^H dk_ab,   dQ_ln = sum_ab dk_ab,l conj(v_ab,n)                  (10)
    ∂Q_ln/∂λ_n = Q_ln^2 = -∂Q_ln/∂g_l:  dλ_n = sum_l conj(Q_ln^2) dQ_ln,
         dg_l = -sum_n conj(Q_ln^2) dQ_ln,   dΔ = Re sum_l conj(-g_l/Δ) dg_l                (11)
    v00 = C̃ B, v01 = C̃ P, v10 = P̄ B, v11 = |P|^2:
         dC̃ = conj(B) dv00 + conj(P) dv01,   dB = conj(C̃) dv00 + P dv10,
         dP = conj(C̃) dv01 + B conj(dv10) + 2 Re(dv11) P                                   (12)

then ``fold_conjugates`` back to the stored halves and dlog_dt = Δ dΔ.

**Backward of the recurrence**: (7) backwards in time as S4D's (with matrices: g_k = conj(C̄) dy_k
+ Ā^H g_{k+1}, dĀ = sum_k g_k x_{k-1}^H, dB̄ = sum_k u_k g_k, du_k = Re(B̄^H g_k) + D dy_k), then (6):

    C̄ = C̃ Y, Y = M^{-1}, M = I - Ā^L:  dC̃ = dC̄ Y^H,  dM = -Y^H (C̃^H dC̄) Y^H,
         dĀ += sum_{j<L} (Ā^H)^j (-dM) (Ā^H)^{L-1-j}                                       (13)
    Ā = E^{-1} F, B̄ = Δ E^{-1} B with E = I - Δ/2 A and F = I + Δ/2 A, so that (6) gives
         E^{-1} = (2/Δ) A1 and F = (Δ/2) A0:
         dE^{-1} = dĀ F^H + Δ dB̄ B^H,  dF = E^{-H} dĀ,  dB = Δ E^{-H} dB̄,
         dE = -E^{-H} dE^{-1} E^{-H},  dA = Δ/2 (dF - dE),
         dΔ = Re sum conj(A/2) ⊙ (dF - dE) + Re sum conj(E^{-1} B) ⊙ dB̄                     (14)
    A = diag(λ) - P P^*:  dλ = diag(dA),  dP = -(dA + dA^H) P                               (15)

The backward of (6) differentiates the function Ā(A, Δ), not Woodbury's algorithm for it: the
same derivative, in fewer lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.s4 import _inputs as inp
from ref.mixers.s4.conv import causal_conv, causal_conv_backward

__all__ = [
    "s4_kernel",
    "s4_kernel_backward",
    "s4_discrete",
    "s4_convolutional",
    "s4_convolutional_backward",
    "s4_recurrent",
    "s4_recurrent_backward",
]


@dataclass(frozen=True)
class S4SSM:
    """The validated parameters with all N modes rebuilt (complex, (H, N))."""

    dt: np.ndarray  # (H,)
    lam: np.ndarray  # (H, N) Λ
    p: np.ndarray  # (H, N) P
    b: np.ndarray  # (H, N) B
    ct: np.ndarray  # (H, N) C̃ (a row vector per channel)
    D: np.ndarray | None  # (H,)
    dtype: np.dtype  # the real dtype of the inputs


def _ssm(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, D) -> S4SSM:
    log_dt = inp.check_log_dt(log_dt)
    H, dtype = log_dt.shape[0], log_dt.dtype
    Lambda_re, Lambda_im = inp.check_pair(Lambda_re, Lambda_im, "Lambda", H, dtype)
    inp.check_negative(Lambda_re, "Lambda_re", "Lambda_re")
    like = ("Lambda_re", Lambda_re)
    P_re, P_im = inp.check_pair(P_re, P_im, "P", H, dtype, like)
    B_re, B_im = inp.check_pair(B_re, B_im, "B", H, dtype, like)
    Ct_re, Ct_im = inp.check_pair(Ct_re, Ct_im, "Ct", H, dtype, like)
    D = inp.check_skip(D, H, dtype)
    full = lambda re, im: inp.with_conjugates(inp.to_complex(re, im))  # noqa: E731  (H, N/2) -> (H, N)
    return S4SSM(np.exp(log_dt), full(Lambda_re, Lambda_im), full(P_re, P_im), full(B_re, B_im),
                 full(Ct_re, Ct_im), D, dtype)


def _fold_and_split(ssm: S4SSM, ddt, dlam, dp, db, dct):
    """Full-mode complex gradients -> ``(dlog_dt, dLambda_re, dLambda_im, dP_re, dP_im, dB_re, dB_im,
    dCt_re, dCt_im)`` of the stored halves."""
    out = [(ssm.dt * ddt).astype(ssm.dtype)]  # dlog_dt = Δ dΔ
    for d in (dlam, dp, db, dct):
        out.extend(inp.split(inp.fold_conjugates(d), ssm.dtype))
    return tuple(out)


# --- the kernel (2)-(5) and its backward (8)-(12) -----------------------------------------------


@dataclass(frozen=True)
class S4KernelCache:
    ssm: S4SSM
    g: np.ndarray  # (H, L)
    c: np.ndarray  # (L,)
    Q: np.ndarray  # (H, L, N) Cauchy matrix 1/(g_l - λ_n)
    v: np.ndarray  # (4, H, N): C̃B, C̃P, P̄B, P̄P
    k: np.ndarray  # (4, H, L): k00, k01, k10, k11


def _kernel(ssm: S4SSM, L: int):
    cdtype = ssm.lam.dtype
    z = np.exp(-2j * np.pi * (np.arange(L) / L)).astype(cdtype)  # (L,) roots of unity
    g = (2 / ssm.dt)[:, None] * ((1 - z) / (1 + z))  # (H, L), (2)
    c = 2 / (1 + z)  # (L,), (2)
    Q = 1 / (g[:, :, None] - ssm.lam[:, None, :])  # (H, L, N) Cauchy matrix
    pc = ssm.p.conj()
    v = np.stack([ssm.ct * ssm.b, ssm.ct * ssm.p, pc * ssm.b, pc * ssm.p])  # (4, H, N)
    k = np.einsum("hln,ahn->ahl", Q, v)  # (4, H, L): the Cauchy sums k_ab, (4)
    k00, k01, k10, k11 = k
    Khat = c * (k00 - k01 * k10 / (1 + k11))  # (4): Woodbury's correction
    K = np.fft.ifft(Khat, axis=-1).real  # (5)
    return np.ascontiguousarray(K, dtype=ssm.dtype), S4KernelCache(ssm, g, c, Q, v, k)


def _kernel_backward(dK, cache: S4KernelCache):
    """(8)-(12): full-mode complex cotangents (dΔ real (H,), dλ, dP, dB, dC̃ (H, N))."""
    ssm, g, c, Q, v = cache.ssm, cache.g, cache.c, cache.Q, cache.v
    k00, k01, k10, k11 = cache.k
    L = g.shape[1]
    dKhat = np.fft.fft(dK, axis=-1) / L  # (8)
    rho = 1 / (1 + k11)
    dk00 = c.conj() * dKhat  # (9)
    dtau = -c.conj() * dKhat  # (9): the correction τ = k01 k10 ρ
    dk01 = (k10 * rho).conj() * dtau  # (9)
    dk10 = (k01 * rho).conj() * dtau  # (9)
    dk11 = -(rho**2).conj() * (k01 * k10).conj() * dtau  # (9): via dρ = conj(k01 k10) dτ
    dk = np.stack([dk00, dk01, dk10, dk11])  # (4, H, L)
    dv = np.einsum("hln,ahl->ahn", Q.conj(), dk)  # (10): Q^H dk
    dQ = np.einsum("ahl,ahn->hln", dk, v.conj())  # (10)
    dQ2 = (Q**2).conj() * dQ  # (H, L, N)
    dlam = dQ2.sum(axis=1)  # (11)
    dg = -dQ2.sum(axis=2)  # (11)
    ddt = ((-g / ssm.dt[:, None]).conj() * dg).real.sum(axis=1)  # (11)
    dv00, dv01, dv10, dv11 = dv
    dct = ssm.b.conj() * dv00 + ssm.p.conj() * dv01  # (12)
    db = ssm.ct.conj() * dv00 + ssm.p * dv10  # (12)
    dp = ssm.ct.conj() * dv01 + ssm.b * dv10.conj() + 2 * dv11.real * ssm.p  # (12)
    return ddt, dlam, dp, db, dct


def s4_kernel(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, *, L: int):
    """The S4 kernel (2)-(5) by Cauchy sums, Woodbury and an inverse FFT: ``K`` (H, L), cache.

    log_dt (H,); the rest (H, N/2), one mode of each conjugate pair; Lambda_re < 0.
    """
    L = checks.positive_int(L, "L")
    return _kernel(_ssm(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, None), L)


def s4_kernel_backward(dK, cache: S4KernelCache):
    """Gradients ``(dlog_dt, dLambda_re, dLambda_im, dP_re, dP_im, dB_re, dB_im, dCt_re, dCt_im)``."""
    H, L = cache.g.shape
    dK = inp.check_output_cotangent(dK, (H, L), "dK", "(H, L)", "K")
    return _fold_and_split(cache.ssm, *_kernel_backward(dK, cache))


# --- the convolutional form ---------------------------------------------------------------------


@dataclass(frozen=True)
class S4ConvCache:
    kernel: S4KernelCache
    conv: object  # conv.ConvCache


def s4_convolutional(u, log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, D=None):
    """y = K * u + D u with the kernel (2)-(5) for L = u's length. u (B, H, L) -> ``y`` (B, H, L), cache."""
    ssm = _ssm(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, D)
    u = inp.check_signal(u, ssm.dt.shape[0], ssm.dtype)
    K, kcache = _kernel(ssm, u.shape[2])
    y, ccache = causal_conv(u, K, ssm.D)
    return y, S4ConvCache(kcache, ccache)


def s4_convolutional_backward(dy, cache: S4ConvCache):
    """Gradients ``(du, dlog_dt, dLambda_re, dLambda_im, dP_re, dP_im, dB_re, dB_im, dCt_re, dCt_im, dD)``."""
    dy = inp.check_output_cotangent(dy, cache.conv.u.shape)
    du, dK, dD = causal_conv_backward(dy, cache.conv)
    return (du, *_fold_and_split(cache.kernel.ssm, *_kernel_backward(dK, cache.kernel)), dD)


# --- the recurrence (6)-(7) and its backward (13)-(15) ------------------------------------------


@dataclass(frozen=True)
class S4Discrete:
    A: np.ndarray  # (H, N, N) continuous A = Λ - P P^*
    A0: np.ndarray  # (H, N, N)
    A1: np.ndarray  # (H, N, N)
    Abar: np.ndarray  # (H, N, N)
    Bbar: np.ndarray  # (H, N)
    powers: np.ndarray  # (H, L+1, N, N): Ā^0 .. Ā^L
    Minv: np.ndarray  # (H, N, N): (I - Ā^L)^{-1}
    Cbar: np.ndarray  # (H, N)


def _discrete(ssm: S4SSM, L: int) -> S4Discrete:
    H, N = ssm.lam.shape
    I = np.eye(N)
    two_dt = (2 / ssm.dt)[:, None, None]  # (H, 1, 1): 2/Δ
    A = ssm.lam[:, :, None] * I - ssm.p[:, :, None] * ssm.p.conj()[:, None, :]  # (H, N, N): Λ - P P^*
    A0 = two_dt * I + A  # (6): forward Euler, I + Δ/2 A = (Δ/2) A0
    r = 1 / ((2 / ssm.dt)[:, None] - ssm.lam)  # (H, N): R = (2/Δ - Λ)^{-1}
    Rp = r * ssm.p  # (H, N): R P
    pR = ssm.p.conj() * r  # (H, N): P^* R
    A1 = r[:, :, None] * I - Rp[:, :, None] * pR[:, None, :] / (1 + (pR * ssm.p).sum(-1))[:, None, None]  # (6)
    Abar = A1 @ A0  # (6)
    Bbar = 2 * np.einsum("hnm,hm->hn", A1, ssm.b)  # (6)
    powers = np.empty((H, L + 1, N, N), Abar.dtype)  # Ā^j, j = 0 .. L
    powers[:, 0] = I
    for j in range(L):
        powers[:, j + 1] = powers[:, j] @ Abar
    Minv = np.linalg.inv(I - powers[:, L])  # (H, N, N)
    Cbar = np.einsum("hn,hnm->hm", ssm.ct, Minv)  # (6): C̄ = C̃ (I - Ā^L)^{-1}
    return S4Discrete(A, A0, A1, Abar, Bbar, powers, Minv, Cbar)


def s4_discrete(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, *, L: int):
    """The discrete SSM (6) with all N modes: ``(Abar (H, N, N), Bbar (H, N), Cbar (H, N))``, complex.

    ``L`` is the length the kernel was trained for (C̃ = C̄ (I - Ā^L)). The recurrence (7) one step
    at a time: x = Abar @ x + Bbar u_k, y_k = Re(Cbar @ x) + D u_k.
    """
    L = checks.positive_int(L, "L")
    disc = _discrete(_ssm(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, None), L)
    return disc.Abar, disc.Bbar, disc.Cbar


@dataclass(frozen=True)
class S4RecurrentCache:
    ssm: S4SSM
    disc: S4Discrete
    u: np.ndarray  # (B, H, L)
    x: np.ndarray  # (B, L, H, N) complex: every state


def s4_recurrent(u, log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, D=None):
    """(6)-(7): discretise with Woodbury, recover C̄, run the recurrence. Arguments and results as
    ``s4_convolutional``. O(N^2) per step and O(N^3 L) to set up: the slow, obvious form."""
    ssm = _ssm(log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, D)
    u = inp.check_signal(u, ssm.dt.shape[0], ssm.dtype)
    Bn, H, L = u.shape
    disc = _discrete(ssm, L)
    N = ssm.lam.shape[1]
    xs = np.empty((Bn, L, H, N), disc.Abar.dtype)
    x = np.zeros((Bn, H, N), disc.Abar.dtype)  # x_{-1} = 0
    for k in range(L):
        x = np.einsum("hnm,bhm->bhn", disc.Abar, x) + disc.Bbar * u[:, :, k, None]  # (7)
        xs[:, k] = x
    y = np.einsum("bkhn,hn->bhk", xs, disc.Cbar).real  # (7): y_k = Re(C̄ x_k)
    if ssm.D is not None:
        y = y + ssm.D[:, None] * u
    return np.ascontiguousarray(y, dtype=ssm.dtype), S4RecurrentCache(ssm, disc, u, xs)


def _hermitian(X):
    """X^H, the conjugate transpose of the last two axes."""
    return np.conj(np.swapaxes(X, -1, -2))


def _discrete_backward(ssm: S4SSM, disc: S4Discrete, dAbar, dBbar, dCbar):
    """(13)-(15): from the cotangents of Ā (H, N, N), B̄ and C̄ (H, N) to the full-mode gradients
    (dΔ real (H,), dλ, dP, dB, dC̃ (H, N))."""
    L = disc.powers.shape[1] - 1
    # (13): C̄ = C̃ Y with Y = M^{-1}, M = I - Ā^L
    Y = disc.Minv  # (H, N, N)
    dct = np.einsum("hm,hnm->hn", dCbar, Y.conj())  # dC̃ = dC̄ Y^H
    dY = ssm.ct.conj()[:, :, None] * dCbar[:, None, :]  # C̃^H dC̄ (an outer product)
    dPower = _hermitian(Y) @ dY @ _hermitian(Y)  # the cotangent of Ā^L, which is -dM
    dAbar = dAbar.copy()
    for j in range(L):  # Ā^L = Ā^j Ā Ā^{L-1-j}
        dAbar += _hermitian(disc.powers[:, j]) @ dPower @ _hermitian(disc.powers[:, L - 1 - j])  # (13)
    # (14): Ā = E^{-1} F, B̄ = Δ E^{-1} B, with E^{-1} = (2/Δ) A1 and F = (Δ/2) A0 from (6)
    dt = ssm.dt[:, None, None]  # (H, 1, 1)
    Einv, F = (2 / dt) * disc.A1, (dt / 2) * disc.A0  # (H, N, N)
    dEinv = dAbar @ _hermitian(F) + dt * dBbar[:, :, None] * ssm.b.conj()[:, None, :]  # (14)
    dF = _hermitian(Einv) @ dAbar  # (14)
    db = ssm.dt[:, None] * np.einsum("hmn,hm->hn", Einv.conj(), dBbar)  # (14): Δ E^{-H} dB̄
    dE = -_hermitian(Einv) @ dEinv @ _hermitian(Einv)  # (14)
    dA = (dt / 2) * (dF - dE)  # (14): E = I - Δ/2 A, F = I + Δ/2 A
    EinvB = np.einsum("hnm,hm->hn", Einv, ssm.b)  # (H, N)
    ddt = ((disc.A / 2).conj() * (dF - dE)).real.sum(axis=(1, 2)) + (EinvB.conj() * dBbar).real.sum(axis=1)  # (14)
    # (15): A = diag(λ) - P P^*
    dlam = np.diagonal(dA, axis1=1, axis2=2).copy()
    dp = -np.einsum("hnm,hm->hn", dA + _hermitian(dA), ssm.p)
    return ddt, dlam, dp, db, dct


def s4_recurrent_backward(dy, cache: S4RecurrentCache):
    """Backwards through (7) in time, then (13)-(15). Gradients as ``s4_convolutional_backward``."""
    ssm, disc, u, xs = cache.ssm, cache.disc, cache.u, cache.x
    dy = inp.check_output_cotangent(dy, u.shape)
    Bn, H, L = u.shape
    dCbar = np.einsum("bhk,bkhn->hn", dy, xs.conj())  # y_k = Re(C̄ x_k): dC̄ = sum_k conj(x_k) dy_k
    dAbar = np.zeros_like(disc.Abar)
    dBbar = np.zeros_like(disc.Bbar)
    du = np.empty(u.shape, ssm.dtype)
    g = np.zeros((Bn, H, xs.shape[3]), xs.dtype)  # (B, H, N): the cotangent of x_k
    for k in range(L - 1, -1, -1):
        g = g + disc.Cbar.conj() * dy[:, :, k, None]  # from y_k = Re(C̄ x_k)
        dBbar += (g * u[:, :, k, None]).sum(axis=0)
        if k > 0:
            dAbar += np.einsum("bhn,bhm->hnm", g, xs[:, k - 1].conj())  # g_k x_{k-1}^H
        du[:, :, k] = np.einsum("hn,bhn->bh", disc.Bbar.conj(), g).real  # Re(B̄^H g_k)
        g = np.einsum("hmn,bhm->bhn", disc.Abar.conj(), g)  # Ā^H g_k: carried to x_{k-1}
    dD = None
    if ssm.D is not None:
        du += ssm.D[:, None] * dy
        dD = (dy * u).sum(axis=(0, 2)).astype(ssm.dtype)
    return (du, *_fold_and_split(ssm, *_discrete_backward(ssm, disc, dAbar, dBbar, dCbar)), dD)
