"""Initialisations: S4D's diagonal A (Lin, Inv, Real, LegS) and S4's HiPPO-LegS DPLR parameters.

S4D paper ("On the Parameterization and Initialization of Diagonal State Space Models"),
for n = 0 .. N/2 - 1 (one mode of each conjugate pair; N the full state size):

    S4D-Lin:   a_n = -1/2 + i π n                         (Fourier-like frequencies)
    S4D-Inv:   a_n = -1/2 + i (N/π) (N/(2n+1) - 1)        (HiPPO-LegS's asymptotic spectrum)
    S4D-Real:  a_n = -(n+1)                               (HiPPO-LegS's diagonal)
    S4D-LegS:  a_n = the eigenvalues of HiPPO-LegS's normal part S (``hippo.hippo_legs_dplr``),
               with B_n = (V^* B_HiPPO)_n

and log Δ ~ U[log dt_min, log dt_max] (dt_min = 1e-3, dt_max = 1e-1), C ~ complex standard normal
(real and imaginary parts N(0, 1/2), as ``torch.randn(..., dtype=cfloat)``), B = 1 except for LegS,
D ~ N(0, 1). Signs: state-spaces/s4 ``dplr.py`` stores -1/2 - i π n (the conjugate), its minimal
``s4d.py`` +i π n as here; either gives the same family of real kernels.

Sources: state-spaces/s4 src/models/sequence/kernels/dplr.py @1eb1007 (``dplr``: 'lin', 'inv',
'real', 'legs'), models/s4/s4d.py @2ed46fc (``S4DKernel``).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.s4.hippo import hippo_legs_dplr

__all__ = ["S4D_INITS", "s4d_init", "s4_init"]

S4D_INITS = ("lin", "inv", "real", "legs")


def _common(H, N, rng, dt_min, dt_max, dtype):
    H = checks.positive_int(H, "H")
    N = checks.positive_int(N, "N")
    if N % 2:
        raise ValueError(f"N: expected an even state size (N/2 stored conjugate pairs), got {N}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min!r}, {dt_max!r}")
    dtype = checks.one_of(np.dtype(dtype), "dtype", checks.FLOAT_DTYPES)
    log_dt = rng.uniform(np.log(dt_min), np.log(dt_max), H)  # (H,)
    C = (rng.standard_normal((H, N // 2)) + 1j * rng.standard_normal((H, N // 2))) / np.sqrt(2)  # (H, N/2)
    D = rng.standard_normal(H)
    return H, N, dtype, log_dt, C, D


def _pair(name, z, H, dtype):
    z = np.broadcast_to(z, (H, z.shape[-1]))
    return {f"{name}_re": np.ascontiguousarray(z.real, dtype), f"{name}_im": np.ascontiguousarray(z.imag, dtype)}


def s4d_init(H: int, N: int, rng: np.random.Generator, *, init: str = "lin", dt_min: float = 1e-3,
             dt_max: float = 1e-1, dtype=np.float64) -> dict:
    """S4D parameters for ``s4d_convolutional(u, **params)``: log_dt (H,), A_re, A_im, C_re, C_im,
    B_re, B_im (H, N/2) and D (H,), with A from ``init`` in "lin", "inv", "real", "legs"."""
    init = checks.one_of(init, "init", S4D_INITS)
    H, N, dtype, log_dt, C, D = _common(H, N, rng, dt_min, dt_max, dtype)
    n = np.arange(N // 2, dtype=np.float64)
    B = np.ones(N // 2, complex)
    if init == "lin":
        a = -0.5 + 1j * np.pi * n
    elif init == "inv":
        a = -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1)
    elif init == "real":
        a = -(n + 1) + 0j
    else:
        a, _, B, _ = hippo_legs_dplr(N)
    return {"log_dt": log_dt.astype(dtype), **_pair("A", a, H, dtype), **_pair("C", C, H, dtype),
            **_pair("B", B, H, dtype), "D": D.astype(dtype)}


def s4_init(H: int, N: int, rng: np.random.Generator, *, dt_min: float = 1e-3, dt_max: float = 1e-1,
            dtype=np.float64) -> dict:
    """S4 parameters for ``s4_convolutional(u, **params)``: HiPPO-LegS in DPLR form (Λ, P, B from
    ``hippo_legs_dplr``, the same for every channel), a random complex C̃, log_dt and D."""
    H, N, dtype, log_dt, Ct, D = _common(H, N, rng, dt_min, dt_max, dtype)
    Lambda, P, B, _ = hippo_legs_dplr(N)
    return {"log_dt": log_dt.astype(dtype), **_pair("Lambda", Lambda, H, dtype), **_pair("P", P, H, dtype),
            **_pair("B", B, H, dtype), **_pair("Ct", Ct, H, dtype), "D": D.astype(dtype)}
