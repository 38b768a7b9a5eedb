"""S4D: the diagonal state space model, as a convolution and as a recurrence, with hand-written backward.

Per channel h (H independent single-input single-output SSMs) the state matrix is diagonal,
A = diag(a_n), with complex a_n in conjugate pairs; we store one mode of each pair, N/2 modes for a
state of size N (state-spaces/s4 ``models/s4/s4d.py``). Parameters, as real arrays:

    log_dt (H,)           Δ = exp(log_dt), one step per channel
    A_re, A_im (H, N/2)   a = A_re + i A_im, A_re < 0   (state-spaces stores log_A_real = log(-A_re))
    C_re, C_im (H, N/2)   C = C_re + i C_im
    B_re, B_im (H, N/2)   optional; B = 1 when absent (the minimal S4D's fixed input matrix)
    D (H,)                optional skip connection

Discretise each mode (``discretize.discretize_diag``: ZOH by default, or bilinear):

    Ā_n = exp(Δ a_n),   B̄_n = (exp(Δ a_n) - 1) / a_n · B_n                                (1)

The kernel is a Vandermonde product (the S4D paper's two-line kernel); the conjugate modes contribute the
complex conjugate of the stored ones, hence 2 Re:

    K_l = C Ā^l B̄ = 2 Re sum_n C_n B̄_n Ā_n^l,    l = 0 .. L-1                             (2)

(Ā_n^l is computed as exp(l log Ā_n), log Ā_n = Δ a_n for ZOH, as the reference computes
exp(dtA · l)). Then the two forms of the layer, u, y (B, H, L), are

    convolutional:  y = K * u + D u          (``conv.causal_conv``: FFT, zero-padded to 2L)  (3)
    recurrent:      x_k = Ā x_{k-1} + B̄ u_k,   y_k = 2 Re(C · x_k) + D u_k,  x_{-1} = 0      (4)

and they are the same function (tested, forward and backward).

Backward, in the complex convention of ``_inputs`` (dz = ∂ℒ/∂Re z + i ∂ℒ/∂Im z; for
w = a b: da = conj(b) dw; for w = Re z: dz = dw). For (2), with G_l = 2 dK_l the cotangent of the
complex sum and W_n = C_n B̄_n:

    dW_n = sum_l conj(Ā_n^l) G_l,       dC_n = conj(B̄_n) dW_n,     dB̄_n = conj(C_n) dW_n      (5)
    dĀ_n = conj(W_n) sum_{l>=1} l conj(Ā_n^{l-1}) G_l          (d/dĀ of Ā^l is l Ā^{l-1})   (6)

For (4), carrying g_k = the total cotangent of the state x_k backwards in time:

    g_k = conj(C) 2 dy_k + conj(Ā) g_{k+1}                                                  (7)
    dĀ = sum_k conj(x_{k-1}) g_k,   dB̄ = sum_k u_k g_k,   dC = sum_k conj(x_k) 2 dy_k,
    du_k = Re sum_n conj(B̄_n) g_{k,n} + D dy_k                                             (8)

Both forms then share the discretisation's backward (``discretize_diag_backward``) to
(dΔ, da, dB), and dlog_dt = Δ dΔ, dA_re + i dA_im = da, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.s4 import _inputs as inp
from ref.mixers.s4.conv import causal_conv, causal_conv_backward
from ref.mixers.s4.discretize import discretize_diag, discretize_diag_backward

__all__ = [
    "s4d_discrete",
    "s4d_kernel",
    "s4d_kernel_backward",
    "s4d_convolutional",
    "s4d_convolutional_backward",
    "s4d_recurrent",
    "s4d_recurrent_backward",
]


@dataclass(frozen=True)
class S4DSSM:
    """The validated parameters (complex ones combined) and their discretisation."""

    dt: np.ndarray  # (H, 1) step per channel
    a: np.ndarray  # (H, N/2) complex
    B: np.ndarray | None  # (H, N/2) complex, None: B = 1 (fixed)
    C: np.ndarray  # (H, N/2) complex
    D: np.ndarray | None  # (H,)
    Abar: np.ndarray  # (H, N/2) complex
    Bbar: np.ndarray  # (H, N/2) complex
    method: str  # "zoh" | "bilinear"
    dtype: np.dtype  # the real dtype of the inputs


def _ssm(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, D, discretization) -> S4DSSM:
    log_dt = inp.check_log_dt(log_dt)
    H, dtype = log_dt.shape[0], log_dt.dtype
    A_re, A_im = inp.check_pair(A_re, A_im, "A", H, dtype)
    inp.check_negative(A_re, "A_re", "A_re")
    C_re, C_im = inp.check_pair(C_re, C_im, "C", H, dtype, ("A_re", A_re))
    B_re, B_im = inp.check_pair(B_re, B_im, "B", H, dtype, ("A_re", A_re), optional=True)
    D = inp.check_skip(D, H, dtype)
    method = checks.one_of(discretization, "discretization", inp.DISCRETIZATIONS)
    dt = np.exp(log_dt)[:, None]  # (H, 1)
    a = inp.to_complex(A_re, A_im)  # (H, N/2)
    B = None if B_re is None else inp.to_complex(B_re, B_im)
    Abar, Bbar = discretize_diag(a, 1.0 if B is None else B, dt, method)  # (1)
    return S4DSSM(dt, a, B, inp.to_complex(C_re, C_im), D, Abar, Bbar, method, dtype)


def _grads_from_discrete(ssm: S4DSSM, dAbar, dBbar, dC):
    """From the cotangents of Ā, B̄ (complex, (H, N/2)) and C to the parameters' gradients
    ``(dlog_dt, dA_re, dA_im, dC_re, dC_im, dB_re, dB_im)`` (dB None when B was fixed)."""
    ddt, da, dB = discretize_diag_backward(dAbar, dBbar, ssm.a, 1.0 if ssm.B is None else ssm.B, ssm.dt, ssm.method)
    dlog_dt = (ssm.dt[:, 0] * ddt.sum(axis=-1)).astype(ssm.dtype)  # Δ = exp(log_dt): dlog_dt = Δ dΔ
    dA_re, dA_im = inp.split(da, ssm.dtype)
    dC_re, dC_im = inp.split(dC, ssm.dtype)
    dB_re, dB_im = inp.split(None if ssm.B is None else dB, ssm.dtype)
    return dlog_dt, dA_re, dA_im, dC_re, dC_im, dB_re, dB_im


def s4d_discrete(log_dt, A_re, A_im, C_re, C_im, B_re=None, B_im=None, *, discretization: str = "zoh"):
    """The discrete diagonal SSM (1): ``(Abar, Bbar, C)``, each complex (H, N/2), for the recurrence
    (4) one step at a time (decoding): x = Abar * x + Bbar * u_k, y_k = 2 Re sum(C * x) + D u_k."""
    ssm = _ssm(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, None, discretization)
    return ssm.Abar, ssm.Bbar, ssm.C


# --- the kernel (2) and its backward (5)-(6) ---------------------------------------------------


@dataclass(frozen=True)
class S4DKernelCache:
    ssm: S4DSSM
    V: np.ndarray  # (H, N/2, L) Vandermonde matrix V_nl = Ā_n^l
    W: np.ndarray  # (H, N/2) C B̄


def _kernel(ssm: S4DSSM, L: int):
    log_Abar = ssm.dt * ssm.a if ssm.method == "zoh" else np.log(ssm.Abar)  # (H, N/2)
    V = np.exp(log_Abar[..., None] * np.arange(L))  # (H, N/2, L): Ā_n^l
    W = ssm.C * ssm.Bbar  # (H, N/2)
    K = 2 * np.einsum("hn,hnl->hl", W, V).real  # (2)
    return K.astype(ssm.dtype), S4DKernelCache(ssm, V, W)


def _kernel_backward(dK, cache: S4DKernelCache):
    """(5)-(6): complex cotangents (dĀ, dB̄, dC), each (H, N/2)."""
    ssm, V, W = cache.ssm, cache.V, cache.W
    L = V.shape[-1]
    G = 2 * dK  # (H, L): cotangent of the complex sum in (2), by Re's rule
    dW = np.einsum("hl,hnl->hn", G, V.conj())  # (5)
    dC = ssm.Bbar.conj() * dW  # (5)
    dBbar = ssm.C.conj() * dW  # (5)
    lG = G[:, 1:] * np.arange(1, L)  # (H, L-1): l G_l
    dAbar = W.conj() * np.einsum("hl,hnl->hn", lG, V[..., :-1].conj())  # (6)
    return dAbar, dBbar, dC


def s4d_kernel(log_dt, A_re, A_im, C_re, C_im, B_re=None, B_im=None, *, L: int, discretization: str = "zoh"):
    """The S4D convolution kernel (2): ``K`` (H, L) and the cache.

    log_dt (H,); A_re (< 0), A_im, C_re, C_im, and optionally B_re, B_im (H, N/2); the
    discretisation "zoh" (default, as state-spaces/s4's minimal S4D) or "bilinear".
    """
    L = checks.positive_int(L, "L")
    return _kernel(_ssm(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, None, discretization), L)


def s4d_kernel_backward(dK, cache: S4DKernelCache):
    """Gradients ``(dlog_dt, dA_re, dA_im, dC_re, dC_im, dB_re, dB_im)``; dB_* None when B was not given."""
    H, L = cache.V.shape[0], cache.V.shape[-1]
    dK = inp.check_output_cotangent(dK, (H, L), "dK", "(H, L)", "K")
    return _grads_from_discrete(cache.ssm, *_kernel_backward(dK, cache))


# --- the convolutional form (3) -----------------------------------------------------------------


@dataclass(frozen=True)
class S4DConvCache:
    kernel: S4DKernelCache
    conv: object  # conv.ConvCache


def s4d_convolutional(u, log_dt, A_re, A_im, C_re, C_im, D=None, B_re=None, B_im=None, *,
                      discretization: str = "zoh"):
    """(3): the kernel (2) for L = u's length, then the causal FFT convolution, + D u.

    u (B, H, L) channel-first; parameters as ``s4d_kernel``; D (H,) or None.
    Returns ``y`` (B, H, L) and the cache.
    """
    ssm = _ssm(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, D, discretization)
    u = inp.check_signal(u, ssm.dt.shape[0], ssm.dtype)
    K, kcache = _kernel(ssm, u.shape[2])  # (H, L)
    y, ccache = causal_conv(u, K, ssm.D)  # (3)
    return y, S4DConvCache(kcache, ccache)


def s4d_convolutional_backward(dy, cache: S4DConvCache):
    """Gradients ``(du, dlog_dt, dA_re, dA_im, dC_re, dC_im, dD, dB_re, dB_im)`` (None for absent D, B)."""
    dy = inp.check_output_cotangent(dy, cache.conv.u.shape)
    du, dK, dD = causal_conv_backward(dy, cache.conv)  # correlations
    dlog_dt, dA_re, dA_im, dC_re, dC_im, dB_re, dB_im = _grads_from_discrete(
        cache.kernel.ssm, *_kernel_backward(dK, cache.kernel))
    return du, dlog_dt, dA_re, dA_im, dC_re, dC_im, dD, dB_re, dB_im


# --- the recurrent form (4) ---------------------------------------------------------------------


@dataclass(frozen=True)
class S4DRecurrentCache:
    ssm: S4DSSM
    u: np.ndarray  # (B, H, L)
    x: np.ndarray  # (B, L, H, N/2) complex: every state, for the backward


def s4d_recurrent(u, log_dt, A_re, A_im, C_re, C_im, D=None, B_re=None, B_im=None, *, discretization: str = "zoh"):
    """(4): the diagonal recurrence, one step per time step. Arguments and results as
    ``s4d_convolutional``; the state x (B, H, N/2) is complex and starts at 0."""
    ssm = _ssm(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, D, discretization)
    u = inp.check_signal(u, ssm.dt.shape[0], ssm.dtype)
    Bn, H, L = u.shape
    xs = np.empty((Bn, L, H, ssm.a.shape[1]), ssm.a.dtype)  # (B, L, H, N/2)
    x = np.zeros((Bn, H, ssm.a.shape[1]), ssm.a.dtype)  # x_{-1} = 0
    for k in range(L):
        x = ssm.Abar * x + ssm.Bbar * u[:, :, k, None]  # (4): x_k = Ā x_{k-1} + B̄ u_k
        xs[:, k] = x
    y = 2 * np.einsum("bkhn,hn->bhk", xs, ssm.C).real  # (4): y_k = 2 Re(C · x_k)
    if ssm.D is not None:
        y = y + ssm.D[:, None] * u  # (4): + D u_k
    return np.ascontiguousarray(y, dtype=ssm.dtype), S4DRecurrentCache(ssm, u, xs)


def s4d_recurrent_backward(dy, cache: S4DRecurrentCache):
    """(7)-(8) backwards in time, then the discretisation's backward. Gradients as
    ``s4d_convolutional_backward``."""
    ssm, u, xs = cache.ssm, cache.u, cache.x
    dy = inp.check_output_cotangent(dy, u.shape)
    Bn, H, L = u.shape
    G = 2 * dy  # (B, H, L): cotangent of C · x_k, by Re's rule
    dC = np.einsum("bhk,bkhn->hn", G, xs.conj())  # (8)
    dAbar = np.zeros_like(ssm.Abar)
    dBbar = np.zeros_like(ssm.Bbar)
    du = np.empty(u.shape, ssm.dtype)
    g = np.zeros(xs.shape[:1] + xs.shape[2:], xs.dtype)  # (B, H, N/2): cotangent of x_k
    for k in range(L - 1, -1, -1):
        g = g + ssm.C.conj() * G[:, :, k, None]  # (7): from y_k
        dBbar += (g * u[:, :, k, None]).sum(axis=0)  # (8)
        if k > 0:
            dAbar += (g * xs[:, k - 1].conj()).sum(axis=0)  # (8); x_{-1} = 0 adds nothing
        du[:, :, k] = (ssm.Bbar.conj() * g).sum(axis=-1).real  # (8)
        g = ssm.Abar.conj() * g  # (7): carried to x_{k-1}
    dD = None
    if ssm.D is not None:
        du += ssm.D[:, None] * dy  # (8)
        dD = (dy * u).sum(axis=(0, 2)).astype(ssm.dtype)
    dlog_dt, dA_re, dA_im, dC_re, dC_im, dB_re, dB_im = _grads_from_discrete(ssm, dAbar, dBbar, dC)
    return du, dlog_dt, dA_re, dA_im, dC_re, dC_im, dD, dB_re, dB_im
