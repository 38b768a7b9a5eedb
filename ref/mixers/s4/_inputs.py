"""Validation and the complex-number plumbing shared by S4 and S4D.

**Complex parameters as real pairs.** Trainable complex parameters (A, B, C of S4D; Λ, P, B, C̃ of
S4) are stored and passed as two real arrays, ``X_re`` and ``X_im``, as state-spaces/s4 stores
them (``torch.view_as_real``). Their gradients come back the same way, ``dX_re = ∂ℒ/∂X_re`` and
``dX_im = ∂ℒ/∂X_im``, so every op here is a real function of real arrays and ``ref.nn.gradcheck``
checks it as it is.

**The gradient convention inside the backward passes.** For a real loss ℒ and a complex
intermediate z = x + iy the backward passes carry one complex number per entry,

    dz := ∂ℒ/∂x + i ∂ℒ/∂y  ( = 2 ∂ℒ/∂z̄, twice the conjugate Wirtinger derivative)       (1)

(PyTorch's ``.grad`` of a complex tensor is the same number). Then ``dx_re, dx_im = dz.real,
dz.imag``, and to first order

    δℒ = Re Σ conj(dz) δz.                                                              (2)

Every rule used in the backward passes follows from (2):

* w = f(z), f holomorphic (exp, 1/z, products with constants):   dz = conj(f'(z)) dw      (3)
* w = a b (both complex):                      da = conj(b) dw,   db = conj(a) dw          (4)
* w = conj(z):                                 dz = conj(dw)                              (5)
* w = Re z (w real, dw real):                  dz = dw  (a real number)                   (6)
* a real input r used inside complex arithmetic: dr = Re(dr_complex)                      (7)
* z used in several places: the dz of each use add up.

For example (4): δw = b δa, so Re conj(dw) b δa = Re conj(conj(b) dw) δa, which is (2) for a.

**Conjugate pairs.** A real SSM's eigenvalues come in conjugate pairs (λ, λ̄), with B and C
entries that are conjugate too. S4D and our S4 store one mode of each pair (N/2 modes for a state
of size N, as state-spaces/s4); ``with_conjugates`` rebuilds the full set
``[x, conj(x)]`` and ``fold_conjugates`` is its backward: by (5), d x = d(first half) +
conj(d(second half)).
"""

from __future__ import annotations

import numpy as np

from ref import checks

DISCRETIZATIONS = ("zoh", "bilinear")


def complex_dtype(dtype) -> np.dtype:
    """float32 -> complex64, float64 -> complex128: complex arithmetic in the precision of the inputs."""
    return np.dtype(np.complex64) if np.dtype(dtype) == np.float32 else np.dtype(np.complex128)


def to_complex(re: np.ndarray, im: np.ndarray) -> np.ndarray:
    """re + i im in the complex dtype of their precision."""
    z = np.empty(re.shape, complex_dtype(re.dtype))
    z.real, z.imag = re, im
    return z


def split(z: np.ndarray | None, dtype) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A complex gradient dz = ∂ℒ/∂re + i ∂ℒ/∂im, returned as the pair (∂ℒ/∂re, ∂ℒ/∂im)."""
    if z is None:
        return None, None
    return np.ascontiguousarray(z.real, dtype=dtype), np.ascontiguousarray(z.imag, dtype=dtype)


def with_conjugates(x: np.ndarray) -> np.ndarray:
    """(..., N/2) stored modes -> (..., N) all modes: [x, conj(x)]."""
    return np.concatenate([x, x.conj()], axis=-1)


def fold_conjugates(dx_full: np.ndarray) -> np.ndarray:
    """Backward of ``with_conjugates``: (..., N) -> (..., N/2), dx = d(first) + conj(d(second)), by (5)."""
    half = dx_full.shape[-1] // 2
    return dx_full[..., :half] + dx_full[..., half:].conj()


def check_log_dt(log_dt) -> np.ndarray:
    log_dt = checks.float_array(log_dt, "log_dt", ndim=1, dims="(H,)")
    if log_dt.shape[0] < 1:
        raise ValueError("log_dt: expected at least one channel (H >= 1), got shape (0,)")
    return checks.finite(log_dt, "log_dt")


def check_modes(x, name: str, H: int, dtype, *, shape=None, like: str = "") -> np.ndarray:
    """One real or imaginary part of a complex parameter: (H, N/2), finite, in the dtype of log_dt."""
    x = checks.float_array(x, name, ndim=2, dims="(H, N/2)")
    if shape is None:
        if x.shape[0] != H or x.shape[1] < 1:
            raise ValueError(f"{name}: expected shape (H, N/2) with H = {H} (from log_dt) and N/2 >= 1, got {x.shape}")
    else:
        checks.same_shape(x, name, shape, "(H, N/2)", like)
    checks.same_dtype(x, name, dtype, "the dtype of log_dt")
    return checks.finite(x, name)


def check_negative(x: np.ndarray, name: str, what: str) -> np.ndarray:
    """Real parts of eigenvalues must be < 0: the mode decays, and (e^{dt A} - 1)/A and the Cauchy
    denominators g - λ (g is imaginary) never vanish."""
    if x.size and x.max() >= 0:
        i = tuple(int(j) for j in np.unravel_index(int(np.argmax(x)), x.shape))
        raise ValueError(f"{name}: expected negative real parts ({what} < 0, a stable, decaying mode), "
                         f"got {float(x[i])} at index {i}")
    return x


def check_pair(re, im, name: str, H: int, dtype, like=None, *, optional: bool = False):
    """A complex parameter given as ``name_re``, ``name_im``; both or (if optional) neither. ``like``:
    (the name of) an array already checked whose shape both parts must have."""
    if re is None and im is None and optional:
        return None, None
    if re is None or im is None:
        missing = f"{name}_re" if re is None else f"{name}_im"
        raise ValueError(f"{missing}: expected an array (the {'real' if re is None else 'imaginary'} part of "
                         f"{name}; give both parts{' or neither' if optional else ''}), got None")
    shape, where = (None, "") if like is None else (like[1].shape, f"the shape of {like[0]}")
    re = check_modes(re, f"{name}_re", H, dtype, shape=shape, like=where)
    im = check_modes(im, f"{name}_im", H, dtype, shape=re.shape, like=f"the shape of {name}_re")
    return re, im


def check_skip(D, H: int, dtype):
    """The skip connection D (H,) or None."""
    if D is None:
        return None
    D = checks.float_array(D, "D", ndim=1, dims="(H,)")
    checks.same_shape(D, "D", (H,), "(H,)", "from log_dt")
    checks.same_dtype(D, "D", dtype, "the dtype of log_dt")
    return checks.finite(D, "D")


def check_signal(u, H: int, dtype) -> np.ndarray:
    """The input u (B, H, L): channel-first, as state-spaces/s4's S4D (``transposed=True``)."""
    u = checks.float_array(u, "u", ndim=3, dims="(B, H, L)")
    if u.shape[1] != H:
        raise ValueError(f"u: expected shape (B, H, L) with H = {H} (from log_dt), got {u.shape}")
    checks.nonempty_time(u.shape[2], "u")
    checks.same_dtype(u, "u", dtype, "the dtype of log_dt")
    return checks.finite(u, "u")


def check_output_cotangent(dy, shape: tuple, name: str = "dy", dims: str = "(B, H, L)", what: str = "y"):
    dy = checks.float_array(dy, name, ndim=len(shape), dims=dims)
    checks.same_shape(dy, name, shape, dims, f"the shape of {what}")
    return checks.finite(dy, name)
