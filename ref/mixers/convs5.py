"""ConvS5: a convolutional state space model with a tensor-valued state, as a loop and as a parallel scan.

Paper: Smith, De Mello, Kautz, Linderman, Byeon, "Convolutional State Space Models for Long-Range
Spatiotemporal Modeling" (arXiv 2310.19694; code NVlabs/ConvSSM, ``src/models/convS5``). A ConvSSM
keeps a state image X_t (H, W, P) per batch element and updates it with convolutions; ConvS5 makes
the state kernel pointwise and diagonal (S5's diagonal Λ, one number per state channel), so

    X_t = Ā ⊙ X_{t-1} + B̄ * U_t                                                          (1)
    Y_t = 2 Re(C * X_t) + D ⊙ U_t                                                         (2)

with * a 2-D convolution ("same" zero padding, odd kernels): B̄ a k x k kernel from U features to
P state channels, C a kc x kc kernel from P state channels to U output features (1 x 1 makes C a
per-pixel readout; the released Moving-MNIST config uses 3 x 3 for both B and C), D one number per
feature (the code's layer puts a 3 x 3 convolutional D into a ResNet block around the SSM: that is
the layer's business, not the op's). Ā and B̄ come from continuous parameters by zero-order hold,
per state channel p (``ref.mixers.s4.discretize``):

    Ā_p = exp(Λ_p Δ_p),    B̄_p = (Ā_p - 1) / Λ_p · B_p      (B_p the kernel slice of channel p)   (3)

**Complex, as S5.** Λ is complex (Re Λ < 0) and so are B, C and the state: we store the P modes of
one half of each conjugate pair, and the other half is implicit, which is why (2) takes 2 Re (as
S5 and the NVlabs code do). A real negative Λ is the special case Λ_im = 0. Complex parameters are
passed as real pairs (``Lambda_re``, ``Lambda_im`` ...) and their gradients come back the same way
(the convention of ``ref.mixers.s4._inputs``). Re Λ >= 0 is refused (the code clips it to
<= -1e-4). ``convs5_init`` gives S5's initialisation: Λ the eigenvalues of HiPPO-LegS's normal
part (HiPPO-N, real part -1/2), optionally in ``blocks`` repeated blocks; B = V^{-1} B_0 and
C = C_0 V with V the eigenvectors and B_0, C_0 He-normal; log Δ ~ U[log dt_min, log dt_max], one
step per state channel.

**Layout.** u, y (B, T, H, W, U): batch, time, image height and width, features last (channels
last, as the NVlabs code; it puts time first, (T, B, H, W, U), we keep the library's (B, T, ...)).
H and W are image sizes here, as in ``ref.nn.conv2d``; U the input and output features, P the
stored complex state channels. Parameters: Lambda_re, Lambda_im, log_step (P,); B_re, B_im
(P, U, k, k); C_re, C_im (U, P, kc, kc); D (U,) or None; the state (B, H, W, P) complex, passed
and returned as a pair (x_re, x_im).

**Why a scan works.** Ā acts pointwise, so (1) is, for every pixel and state channel separately,
the first-order recurrence x_t = Ā x_{t-1} + b_t with b_t = (B̄ * U_t) at that pixel: the
convolution touches only the inputs, never the state. Both forms compute the input images
B̄ * U_t first; then

* ``convs5_recurrent``: a loop over time, one convolution per step (the form that decodes one
  frame at a time, as the code's ``apply_convSSM_sequential``);
* ``convs5_parallel``: all input convolutions at once, then the associative scan of
  ``ref.mixers.linear_scan`` over the affine pairs (Ā, B̄ * U_t) on the state flattened to
  H W P entries, then all output convolutions at once (the code's ``apply_convSSM_parallel``).

With 1 x 1 kernels B and C no pixel talks to another: ConvS5 is S5 (x_t = Ā x_{t-1} + B̄ u_t,
y_t = 2 Re(C x_t) + D u_t, B̄ (P, U), C (U, P)) run on every pixel, the equivalence between
ConvSSMs and SSMs that the paper establishes. A k x k kernel B lets every pixel's state read its k x k input
neighbourhood; since the state kernel is pointwise, the receptive field does not grow with time.

**Backward.** Each complex intermediate z carries dz = dℒ/dRe z + i dℒ/dIm z. A complex
convolution of a real input is two real ones (B̄ * U = Re B̄ * U + i Im B̄ * U), and
2 Re(C * X) = 2 Re C * Re X - 2 Im C * Im X, so every convolution is ``ref.nn.conv2d`` on stacked
real and imaginary channels, and its backward is ``conv2d_backward``. With dX_t from (2), the
total cotangent of the state runs backwards in time, through the same scan in the parallel form:

    g_t = dX_t + conj(Ā) g_{t+1},   g_{T-1} also gets dht                                   (4)
    dĀ = sum over batch, time and pixels of conj(X_{t-1}) g_t,   d(B̄ * U_t) = g_t,
    dinitial_state = conj(Ā) g_0                                                             (5)

then (dĀ, dB̄) go back through (3) (``discretize_diag_backward``), and dlog_step = Δ dΔ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ref import checks
from ref.backend import resolve
from ref.mixers.linear_scan._inputs import previous_states, reverse_scan_inputs
from ref.mixers.linear_scan import associative_scan
from ref.mixers.s4._inputs import check_negative, complex_dtype, split, to_complex
from ref.mixers.s4.discretize import discretize_diag, discretize_diag_backward
from ref.mixers.s4.hippo import hippo_legs_dplr
from ref.nn.conv2d import conv2d, conv2d_backward

__all__ = [
    "FORMS",
    "convs5_discrete",
    "convs5_init",
    "convs5_recurrent",
    "convs5_recurrent_backward",
    "convs5_parallel",
    "convs5_parallel_backward",
]


# ---------------------------------------------------------------- parameters and their discretisation (3)


@dataclass(frozen=True)
class ConvS5Params:
    """The validated parameters, combined into complex arrays, and their discretisation (3)."""

    Lam: np.ndarray  # (P,) complex Λ
    step: np.ndarray  # (P,) Δ = exp(log_step)
    Bt: np.ndarray  # (P, U, k, k) complex B
    C: np.ndarray  # (U, P, kc, kc) complex
    D: np.ndarray | None  # (U,)
    Abar: np.ndarray  # (P,) complex
    F: np.ndarray  # (P,) complex: B̄_p = F_p B_p, F = (Ā - 1) / Λ
    Bbar: np.ndarray  # (P, U, k, k) complex
    dtype: np.dtype


def _real(x, name, shape, dims, like, dtype):
    x = checks.float_array(x, name, ndim=len(shape), dims=dims)
    checks.same_shape(x, name, shape, dims, like)
    checks.same_dtype(x, name, dtype, "the dtype of u")
    return checks.finite(x, name)


def _kernel(re, im, name, rows, cols, dtype, rows_name, cols_name):
    """A complex convolution kernel (rows, cols, k, k) with k odd, given as (re, im)."""
    re = checks.float_array(re, f"{name}_re", ndim=4, dims=f"({rows_name}, {cols_name}, k, k)")
    if re.shape[:2] != (rows, cols) or re.shape[2] != re.shape[3] or re.shape[2] % 2 == 0:
        raise ValueError(
            f"{name}_re: expected shape ({rows_name}, {cols_name}, k, k) = ({rows}, {cols}, k, k) with k odd "
            f"(same padding), got {re.shape}"
        )
    checks.same_dtype(re, f"{name}_re", dtype, "the dtype of u")
    checks.finite(re, f"{name}_re")
    im = _real(im, f"{name}_im", re.shape, f"({rows_name}, {cols_name}, k, k)", f"the shape of {name}_re", dtype)
    return to_complex(re, im)


def _discretization(Lambda_re, Lambda_im, log_step, B_re, B_im, U, dtype):
    """Validate Λ, log Δ and B (U input features); return (Λ, Δ, B, Ā, F, B̄) by (3)."""
    Lambda_re = checks.float_array(Lambda_re, "Lambda_re", ndim=1, dims="(P,)")
    P = Lambda_re.shape[0]
    if P < 1:
        raise ValueError("Lambda_re: expected at least one state channel (P >= 1), got shape (0,)")
    Lambda_re = _real(Lambda_re, "Lambda_re", (P,), "(P,)", "from Lambda_re", dtype)
    check_negative(Lambda_re, "Lambda_re", "Re Λ")
    Lambda_im = _real(Lambda_im, "Lambda_im", (P,), "(P,)", "the shape of Lambda_re", dtype)
    log_step = _real(log_step, "log_step", (P,), "(P,)", "the shape of Lambda_re", dtype)
    Bt = _kernel(B_re, B_im, "B", P, U, dtype, "P", "U")
    Lam = to_complex(Lambda_re, Lambda_im)
    step = np.exp(log_step)
    Abar, F = discretize_diag(Lam, 1.0, step, "zoh")  # (3): Ā = exp(ΛΔ), F = (Ā - 1) / Λ
    Bbar = F[:, None, None, None] * Bt  # (3): B̄_p = F_p B_p
    return Lam, step, Bt, Abar, F, Bbar


def _params(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D) -> ConvS5Params:
    u = checks.float_array(u, "u", ndim=5, dims="(B, T, H, W, U)")
    checks.nonempty_time(u.shape[1], "u")
    checks.finite(u, "u")
    U, dtype = u.shape[4], u.dtype
    Lam, step, Bt, Abar, F, Bbar = _discretization(Lambda_re, Lambda_im, log_step, B_re, B_im, U, dtype)
    C = _kernel(C_re, C_im, "C", U, Lam.shape[0], dtype, "U", "P")
    if D is not None:
        D = _real(D, "D", (U,), "(U,)", "the features of u", dtype)
    return ConvS5Params(Lam, step, Bt, C, D, Abar, F, Bbar, np.dtype(dtype))


def convs5_discrete(Lambda_re, Lambda_im, log_step, B_re, B_im):
    """The discretisation (3): ``(Abar (P,), Bbar (P, U, k, k))``, both complex, e.g. for decoding a
    frame at a time: X = Abar * X + (Bbar * U_t), Y_t = 2 Re(C * X) + D U_t."""
    B_re = checks.float_array(B_re, "B_re", ndim=4, dims="(P, U, k, k)")
    _, _, _, Abar, _, Bbar = _discretization(Lambda_re, Lambda_im, log_step, B_re, B_im, B_re.shape[1], B_re.dtype)
    return Abar, Bbar


def convs5_init(U: int, P: int, rng: np.random.Generator, *, k_B: int = 3, k_C: int = 1, blocks: int = 1,
                dt_min: float = 1e-3, dt_max: float = 1e-1, dtype=np.float64) -> dict:
    """S5's initialisation for ``convs5_*(u, **params)``: Lambda_re, Lambda_im, log_step (P,), B_re, B_im
    (P, U, k_B, k_B), C_re, C_im (U, P, k_C, k_C) and D (U,).

    The real state has 2P dims in ``blocks`` blocks of 2P / blocks; each block's Λ are the P / blocks
    eigenvalues -1/2 + i μ (μ > 0) of HiPPO-LegS's normal part (``hippo_legs_dplr``; the NVlabs code
    keeps the conjugate half, μ < 0: the same real model), V the block-diagonal eigenvectors.
    B_0 (2P, U, k_B, k_B) and C_0 (U, 2P, k_C, k_C) are He-normal (std sqrt(2 / fan_in), untruncated);
    B = V^* B_0 (V's columns are orthonormal, so V^* is V^{-1} on its range) and C = C_0 V.
    """
    U, P = checks.positive_int(U, "U"), checks.positive_int(P, "P")
    blocks = checks.positive_int(blocks, "blocks")
    if P % blocks:
        raise ValueError(f"blocks: expected a divisor of P = {P}, got {blocks}")
    for k, name in ((k_B, "k_B"), (k_C, "k_C")):
        if checks.positive_int(k, name) % 2 == 0:
            raise ValueError(f"{name}: expected an odd kernel size (same padding), got {k}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min!r}, {dt_max!r}")
    dtype = checks.one_of(np.dtype(dtype), "dtype", checks.FLOAT_DTYPES)
    Lam_block, _, _, V_block = hippo_legs_dplr(2 * P // blocks)  # (P / blocks,), (2P / blocks, P / blocks)
    Lam = np.tile(Lam_block, blocks)  # (P,)
    V = scipy.linalg.block_diag(*([V_block] * blocks))  # (2P, P)
    B0 = rng.standard_normal((2 * P, U, k_B, k_B)) * np.sqrt(2 / (U * k_B**2))
    C0 = rng.standard_normal((U, 2 * P, k_C, k_C)) * np.sqrt(2 / (2 * P * k_C**2))
    Bt = np.einsum("np,nukl->pukl", V.conj(), B0)  # V^* B_0: (P, U, k_B, k_B)
    C = np.einsum("unkl,np->upkl", C0, V)  # C_0 V: (U, P, k_C, k_C)
    log_step = rng.uniform(np.log(dt_min), np.log(dt_max), P)
    as_dtype = lambda x: np.ascontiguousarray(x, dtype=dtype)  # noqa: E731
    return dict(Lambda_re=as_dtype(Lam.real), Lambda_im=as_dtype(Lam.imag), log_step=as_dtype(log_step),
                B_re=as_dtype(Bt.real), B_im=as_dtype(Bt.imag), C_re=as_dtype(C.real), C_im=as_dtype(C.imag),
                D=as_dtype(rng.standard_normal(U)))


def _check_state(pair, name, shape, dtype, allow_none=False):
    """A complex state (B, H, W, P) given as a pair of real arrays; returns it complex, or None."""
    if pair is None:
        return None
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}: expected a pair (re, im) of arrays (B, H, W, P), got {type(pair).__name__}")
    parts = []
    for i, x in enumerate(pair):
        if x is None and allow_none:
            x = np.zeros(shape, dtype)
        parts.append(_real(x, f"{name}[{i}]", shape, "(B, H, W, P)", "from u and Lambda_re", dtype))
    return to_complex(*parts)


# ---------------------------------------------------------------- the convolutions, as real conv2d


def _frames(x):
    """(B, T, H, W, X) -> (B T, X, H, W): every frame as an image for conv2d (NCHW)."""
    Bn, T, H, W, X = x.shape
    return np.ascontiguousarray(x.reshape(Bn * T, H, W, X).transpose(0, 3, 1, 2))


def _unframes(x, Bn):
    """(B T, X, H, W) -> (B, T, H, W, X)."""
    BT, X, H, W = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(Bn, BT // Bn, H, W, X)


def _input_conv(u_img, p: ConvS5Params):
    """B̄ * U for images u (n, U, H, W): complex (n, P, H, W) and the conv2d cache.

    One real convolution with the real and imaginary parts of B̄ stacked as 2P output channels."""
    weight = np.concatenate([p.Bbar.real, p.Bbar.imag]).astype(p.dtype)  # (2P, U, k, k)
    out, cache = conv2d(u_img, weight, padding=weight.shape[2] // 2)  # (n, 2P, H, W)
    P = p.Abar.shape[0]
    return out[:, :P] + 1j * out[:, P:], cache


def _input_conv_backward(dBU, cache, p: ConvS5Params):
    """From d(B̄ * U) (n, P, H, W) complex: du (n, U, H, W) and dB̄ (P, U, k, k) complex."""
    du, dweight, _ = conv2d_backward(np.concatenate([dBU.real, dBU.imag], axis=1).astype(p.dtype), cache)
    P = p.Abar.shape[0]
    return du, dweight[:P] + 1j * dweight[P:]


def _output_conv(x_img, p: ConvS5Params):
    """2 Re(C * X) for complex states (n, P, H, W): real (n, U, H, W) and the cache.

    2 Re(C * X) = 2 Re C * Re X - 2 Im C * Im X: one convolution over the 2P stacked channels."""
    weight = np.concatenate([2 * p.C.real, -2 * p.C.imag], axis=1).astype(p.dtype)  # (U, 2P, kc, kc)
    x_stacked = np.concatenate([x_img.real, x_img.imag], axis=1).astype(p.dtype)  # (n, 2P, H, W)
    return conv2d(x_stacked, weight, padding=weight.shape[2] // 2)


def _output_conv_backward(dy_img, cache, p: ConvS5Params):
    """From dy (n, U, H, W): dX (n, P, H, W) complex and dC (U, P, kc, kc) complex."""
    dx, dweight, _ = conv2d_backward(dy_img, cache)  # (n, 2P, H, W), (U, 2P, kc, kc)
    P = p.Abar.shape[0]
    return dx[:, :P] + 1j * dx[:, P:], 2 * dweight[:, :P] - 2j * dweight[:, P:]


# ---------------------------------------------------------------- shared by both forms


@dataclass(frozen=True)
class ConvS5Cache:
    p: ConvS5Params
    u: np.ndarray  # (B, T, H, W, U)
    x: np.ndarray  # (B, T, H, W, P) complex: every state
    initial_state: np.ndarray | None  # (B, H, W, P) complex
    conv_caches: tuple  # (input, output) conv2d caches: one pair per step (recurrent) or one pair (parallel)
    form: str


def _check_cotangents(dy, dht, cache: ConvS5Cache):
    u, dtype = cache.u, cache.p.dtype
    dy = checks.float_array(dy, "dy", ndim=5, dims="(B, T, H, W, U)")
    checks.same_shape(dy, "dy", u.shape, "(B, T, H, W, U)", "the shape of y")
    checks.same_dtype(dy, "dy", dtype, "the dtype of y")
    Bn, _, H, W, _ = u.shape
    dht = _check_state(dht, "dht", (Bn, H, W, cache.p.Abar.shape[0]), dtype, allow_none=True)
    return dy, dht


def _parameter_grads(p: ConvS5Params, dAbar, dBbar, dC, dD, du, dx0):
    """Back through (3) and into the real pairs: the gradients in the order of the forward's arguments."""
    dF = np.einsum("pukl,pukl->p", p.Bt.conj(), dBbar)  # B̄_p = F_p B_p: dF_p = sum conj(B_p) dB̄_p
    dBt = p.F.conj()[:, None, None, None] * dBbar  # dB_p = conj(F_p) dB̄_p
    dstep, dLam, _ = discretize_diag_backward(dAbar, dF, p.Lam, 1.0, p.step, "zoh")
    dlog_step = (p.step * dstep).astype(p.dtype)  # Δ = exp(log_step)
    dLambda_re, dLambda_im = split(dLam, p.dtype)
    dB_re, dB_im = split(dBt, p.dtype)
    dC_re, dC_im = split(dC, p.dtype)
    dh0 = None if dx0 is None else split(dx0, p.dtype)
    return du, dLambda_re, dLambda_im, dlog_step, dB_re, dB_im, dC_re, dC_im, dD, dh0


def _skip(u, p: ConvS5Params):
    return 0 if p.D is None else p.D * u  # D ⊙ U, per feature


# ---------------------------------------------------------------- the loop over time


def convs5_recurrent(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D=None, *, initial_state=None,
                     backend: str = "numpy"):
    """(1)-(3) by a loop over time, one frame at a time.

    u (B, T, H, W, U); parameters as the module docstring; initial_state (x_re, x_im), each
    (B, H, W, P), or None. Returns ``y`` (B, T, H, W, U), the final state ``(ht_re, ht_im)`` and the cache.
    """
    resolve(backend, ("numpy",), "convs5_recurrent")
    p = _params(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D)
    Bn, T, H, W, U = u.shape
    P = p.Abar.shape[0]
    x0 = _check_state(initial_state, "initial_state", (Bn, H, W, P), p.dtype)
    xs = np.empty((Bn, T, H, W, P), complex_dtype(p.dtype))
    y = np.empty(u.shape, p.dtype)
    state = np.zeros((Bn, H, W, P), xs.dtype) if x0 is None else x0
    caches = []
    for t in range(T):
        u_img = np.ascontiguousarray(u[:, t].transpose(0, 3, 1, 2))  # (B, U, H, W)
        BU, in_cache = _input_conv(u_img, p)  # B̄ * U_t: (B, P, H, W)
        state = p.Abar * state + BU.transpose(0, 2, 3, 1)  # (1): (B, H, W, P)
        xs[:, t] = state
        y_img, out_cache = _output_conv(np.ascontiguousarray(state.transpose(0, 3, 1, 2)), p)  # (2): (B, U, H, W)
        y[:, t] = y_img.transpose(0, 2, 3, 1) + _skip(u[:, t], p)  # (2)
        caches.append((in_cache, out_cache))
    cache = ConvS5Cache(p, u, xs, x0, tuple(caches), "recurrent")
    return y, split(state, p.dtype), cache


def convs5_recurrent_backward(dy, dht, cache: ConvS5Cache):
    """Gradients ``(du, dLambda_re, dLambda_im, dlog_step, dB_re, dB_im, dC_re, dC_im, dD,
    dinitial_state)`` by (4)-(5) step by step; dht a pair (either part may be None) or None;
    dinitial_state a pair, None without an initial state; dD None without D."""
    if cache.form != "recurrent":
        raise ValueError(f"cache: expected the cache of convs5_recurrent, got that of the {cache.form} form")
    dy, dht = _check_cotangents(dy, dht, cache)
    p, u, xs, x0 = cache.p, cache.u, cache.x, cache.initial_state
    Bn, T, H, W, U = u.shape
    du = np.empty_like(u)
    dAbar = np.zeros_like(p.Abar)
    dBbar = np.zeros_like(p.Bbar)
    dC = np.zeros_like(p.C)
    g = np.zeros_like(xs[:, 0]) if dht is None else dht  # (B, H, W, P)
    for t in range(T - 1, -1, -1):
        in_cache, out_cache = cache.conv_caches[t]
        dX, dC_t = _output_conv_backward(np.ascontiguousarray(dy[:, t].transpose(0, 3, 1, 2)), out_cache, p)
        dC += dC_t
        g = g + dX.transpose(0, 2, 3, 1)  # (4): g_t = dX_t + conj(Ā) g_{t+1}
        if t > 0 or x0 is not None:  # X_{-1} = 0 adds nothing
            x_prev = xs[:, t - 1] if t > 0 else x0
            dAbar += (x_prev.conj() * g).sum(axis=(0, 1, 2))  # (5)
        du_img, dBbar_t = _input_conv_backward(np.ascontiguousarray(g.transpose(0, 3, 1, 2)), in_cache, p)  # (5)
        dBbar += dBbar_t
        du[:, t] = du_img.transpose(0, 2, 3, 1) + _skip(dy[:, t], p)
        g = p.Abar.conj() * g  # carried to t-1
    dD = None if p.D is None else (dy * u).sum(axis=(0, 1, 2, 3))
    return _parameter_grads(p, dAbar, dBbar, dC, dD, du, None if x0 is None else g)


# ---------------------------------------------------------------- the parallel scan over time


def convs5_parallel(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D=None, *, initial_state=None,
                    backend: str = "numpy"):
    """(1)-(3) with every convolution at once and the states by a log-depth associative scan over
    time. Arguments and results as ``convs5_recurrent``."""
    resolve(backend, ("numpy",), "convs5_parallel")
    p = _params(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D)
    Bn, T, H, W, U = u.shape
    P = p.Abar.shape[0]
    x0 = _check_state(initial_state, "initial_state", (Bn, H, W, P), p.dtype)
    BU, in_cache = _input_conv(_frames(u), p)  # B̄ * U_t for every frame: (B T, P, H, W)
    b = _unframes(BU, Bn).reshape(Bn, T, H * W * P)  # the scan's b_t, state flattened: (B, T, H W P)
    a = np.broadcast_to(np.tile(p.Abar, H * W), b.shape)  # Ā at every pixel and step: (B, T, H W P)
    h0 = None if x0 is None else x0.reshape(Bn, H * W * P)
    xs = associative_scan(a, b, h0).reshape(Bn, T, H, W, P)  # (1) for all t: the pairs (Ā, B̄ * U_t) scanned
    y_img, out_cache = _output_conv(_frames(xs), p)  # (2): (B T, U, H, W)
    y = _unframes(y_img, Bn) + _skip(u, p)  # (2)
    cache = ConvS5Cache(p, u, xs, x0, (in_cache, out_cache), "parallel")
    return y, split(xs[:, -1], p.dtype), cache


def convs5_parallel_backward(dy, dht, cache: ConvS5Cache):
    """Gradients as ``convs5_recurrent_backward``: the reverse recurrence (4) by the same scan on
    flipped inputs, every convolution's backward at once."""
    if cache.form != "parallel":
        raise ValueError(f"cache: expected the cache of convs5_parallel, got that of the {cache.form} form")
    dy, dht = _check_cotangents(dy, dht, cache)
    p, u, xs, x0 = cache.p, cache.u, cache.x, cache.initial_state
    Bn, T, H, W, U = u.shape
    P = p.Abar.shape[0]
    in_cache, out_cache = cache.conv_caches
    dX, dC = _output_conv_backward(_frames(dy), out_cache, p)  # from (2): (B T, P, H, W)
    dX = _unframes(dX, Bn).reshape(Bn, T, H * W * P)
    a_conj = np.broadcast_to(np.tile(p.Abar.conj(), H * W), dX.shape)  # conj(Ā): (B, T, H W P)
    carry_in = None if dht is None else dht.reshape(Bn, H * W * P)
    g = associative_scan(*reverse_scan_inputs(a_conj, dX, carry_in))[:, ::-1]  # (4), back in forward time
    h0 = None if x0 is None else x0.reshape(Bn, H * W * P)
    x_prev = previous_states(xs.reshape(Bn, T, H * W * P), h0)  # X_{t-1}, X_{-1} = x0 or 0
    dAbar = (x_prev.conj() * g).reshape(-1, P).sum(axis=0)  # (5)
    dx0 = None if x0 is None else (p.Abar.conj() * g[:, 0].reshape(Bn, H, W, P))  # (5)
    du_img, dBbar = _input_conv_backward(_frames(g.reshape(Bn, T, H, W, P)), in_cache, p)  # (5)
    du = _unframes(du_img, Bn) + _skip(dy, p)
    dD = None if p.D is None else (dy * u).sum(axis=(0, 1, 2, 3))
    return _parameter_grads(p, dAbar, dBbar, dC, dD, du, dx0)


FORMS = {
    "recurrent": (convs5_recurrent, convs5_recurrent_backward),
    "parallel": (convs5_parallel, convs5_parallel_backward),
}
