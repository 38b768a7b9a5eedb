"""Validation, the discretisation shared by every form, and its backward.

Every form of the selective scan computes, with mamba_ssm's ``selective_scan_ref`` semantics:

    delta  <- softplus(delta + delta_bias)        (bias, then softplus, each optional)     (1)
    a_t    = exp(delta_t A)                        (B, D, N) per step: the decay            (2)
    b_t    = delta_t B_t u_t                       (B, D, N) per step: Euler on the input    (3)
    x_t    = a_t * x_{t-1} + b_t                   the linear scan, x_{-1} = initial state  (4)
    y_t    = sum_n x_t C_t                                                                  (5)
    out_t  = (y_t + D u_t) * silu(z_t)             (D and z optional)                       (6)

The forms differ only in how they run the scan (4); (1)-(3) and (5)-(6) and their gradients
are here. Layout: u, delta, z, out (B, D, L); A (D, N); B, C fixed (D, N), variable (B, N, L) or
grouped (B, G, N, L) (group g serves channels [g D/G, (g+1) D/G)); states (B, D, N). Internally the
scan runs on (B, L, D, N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above it, as torch's F.softplus and the CUDA kernel


@dataclass(frozen=True)
class SSInputs:
    """The validated inputs, B and C as (B, L, D, N) arrays (a read-only view when fixed or grouped)."""

    u: np.ndarray  # (B, D, L)
    delta_raw: np.ndarray  # (B, D, L), before bias and softplus
    A: np.ndarray  # (D, N)
    B: np.ndarray  # as given
    C: np.ndarray  # as given
    D: np.ndarray | None  # (D,)
    z: np.ndarray | None  # (B, D, L)
    delta_bias: np.ndarray | None  # (D,)
    delta_softplus: bool
    initial_state: np.ndarray | None  # (B, D, N)
    B_mode: str  # "fixed" | "variable" | "grouped"
    C_mode: str


def _bc_mode(X, name, Bn, Dn, L, N, dtype):
    X = checks.float_array(X, name)
    checks.same_dtype(X, name, dtype, "the dtype of u")
    checks.finite(X, name)
    if X.ndim == 2:
        checks.same_shape(X, name, (Dn, N), "(D, N)", "fixed: from u and A")
        return X, "fixed"
    if X.ndim == 3:
        checks.same_shape(X, name, (Bn, N, L), "(B, N, L)", "variable: from u and A")
        return X, "variable"
    if X.ndim == 4:
        G = X.shape[1]
        if X.shape != (Bn, G, N, L) or G < 1 or Dn % G:
            raise ValueError(
                f"{name}: expected shape (B, G, N, L) = ({Bn}, G, {N}, {L}) with G dividing D = {Dn} (grouped), "
                f"got {X.shape}"
            )
        return X, "grouped"
    raise ValueError(f"{name}: expected (D, N), (B, N, L) or (B, G, N, L), got shape {X.shape}")


def check_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *, initial_state=None) -> SSInputs:
    u = checks.float_array(u, "u", ndim=3, dims="(B, D, L)")
    Bn, Dn, L = u.shape
    checks.nonempty_time(L, "u")
    checks.finite(u, "u")
    delta = checks.float_array(delta, "delta", ndim=3, dims="(B, D, L)")
    checks.same_shape(delta, "delta", u.shape, "(B, D, L)", "the shape of u")
    checks.same_dtype(delta, "delta", u.dtype, "the dtype of u")
    checks.finite(delta, "delta")
    A = checks.float_array(A, "A", ndim=2, dims="(D, N)")
    if A.shape[0] != Dn:
        raise ValueError(f"A: expected shape (D, N) with D = {Dn} (from u), got {A.shape}")
    checks.same_dtype(A, "A", u.dtype, "the dtype of u")
    checks.finite(A, "A")
    if A.size and A.max() >= 0:
        i = tuple(int(j) for j in np.unravel_index(int(np.argmax(A)), A.shape))
        raise ValueError(
            f"A: expected negative real values (a decay exp(delta A) < 1; Mamba uses A = -exp(A_log)), "
            f"got {float(A[i])} at index {i}"
        )
    N = A.shape[1]
    B, B_mode = _bc_mode(B, "B", Bn, Dn, L, N, u.dtype)
    C, C_mode = _bc_mode(C, "C", Bn, Dn, L, N, u.dtype)
    vectors = {}
    for x, name in ((D, "D"), (delta_bias, "delta_bias")):
        if x is not None:
            x = checks.float_array(x, name, ndim=1, dims="(D,)")
            checks.same_shape(x, name, (Dn,), "(D,)", "the channels of u")
            checks.same_dtype(x, name, u.dtype, "the dtype of u")
            checks.finite(x, name)
        vectors[name] = x
    if z is not None:
        z = checks.float_array(z, "z", ndim=3, dims="(B, D, L)")
        checks.same_shape(z, "z", u.shape, "(B, D, L)", "the shape of u")
        checks.same_dtype(z, "z", u.dtype, "the dtype of u")
        checks.finite(z, "z")
    if not isinstance(delta_softplus, (bool, np.bool_)):
        raise ValueError(f"delta_softplus: expected True or False, got {delta_softplus!r}")
    if initial_state is not None:
        initial_state = checks.float_array(initial_state, "initial_state", ndim=3, dims="(B, D, N)")
        checks.same_shape(initial_state, "initial_state", (Bn, Dn, N), "(B, D, N)", "from u and A")
        checks.same_dtype(initial_state, "initial_state", u.dtype, "the dtype of u")
        checks.finite(initial_state, "initial_state")
    return SSInputs(
        u, delta, A, B, C, vectors["D"], z, vectors["delta_bias"], bool(delta_softplus), initial_state, B_mode, C_mode
    )


def as_BLDN(X, mode, Dn):
    """B or C as (B|1, L|1, D|1, N), a view: fixed (D, N) -> (1, 1, D, N); variable (B, N, L) ->
    (B, L, 1, N); grouped (B, G, N, L) -> (B, L, D, N) repeating group g over its D/G channels."""
    if mode == "fixed":
        return X[None, None]  # (1, 1, D, N)
    if mode == "variable":
        return np.moveaxis(X, 2, 1)[:, :, None, :]  # (B, L, 1, N)
    G = X.shape[1]
    Xg = np.moveaxis(X, 3, 1)  # (B, L, G, N)
    return np.repeat(Xg, Dn // G, axis=2)  # (B, L, D, N)


def reduce_like(dX_BLDN, X, mode):
    """The gradient of B or C in its own layout, from the gradient of its (B, L, D, N) expansion."""
    if mode == "fixed":
        return dX_BLDN.sum(axis=(0, 1))  # (D, N)
    if mode == "variable":
        return np.moveaxis(dX_BLDN.sum(axis=2), 1, 2)  # (B, N, L)
    Bn, L, Dn, N = dX_BLDN.shape
    G = X.shape[1]
    dg = dX_BLDN.reshape(Bn, L, G, Dn // G, N).sum(axis=3)  # (B, L, G, N)
    return np.moveaxis(dg, 1, 3)  # (B, G, N, L)


def softplus(x):
    """log(1 + e^x), linear above the threshold (torch's F.softplus, beta = 1, threshold = 20)."""
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD))))


def discretize(inp: SSInputs):
    """(1)-(3): delta (B, D, L) after bias/softplus, a = exp(delta A) and b = delta B u, (B, L, D, N)."""
    delta = inp.delta_raw if inp.delta_bias is None else inp.delta_raw + inp.delta_bias[:, None]
    if inp.delta_softplus:
        delta = softplus(delta)  # (1)
    dl = np.moveaxis(delta, 2, 1)  # (B, L, D)
    a = np.exp(dl[..., None] * inp.A)  # (2): (B, L, D, N)
    Bx = as_BLDN(inp.B, inp.B_mode, inp.A.shape[0])
    b = (dl * np.moveaxis(inp.u, 2, 1))[..., None] * Bx  # (3): (B, L, D, N)
    return delta, a, b


def readout(x, inp: SSInputs):
    """(5)-(6) from the states x (B, L, D, N): returns out (B, D, L) and y (B, D, L) before D and z."""
    Cx = as_BLDN(inp.C, inp.C_mode, inp.A.shape[0])
    y = np.moveaxis((x * Cx).sum(axis=-1), 1, 2)  # (5): (B, D, L)
    out = y if inp.D is None else y + inp.D[:, None] * inp.u
    if inp.z is not None:
        out = out * inp.z / (1 + np.exp(-inp.z))  # (6): silu(z) = z sigmoid(z)
    return out, y


def readout_backward(dout, x, y, inp: SSInputs):
    """Back through (5)-(6): returns dx from the outputs (B, L, D, N), dC, dD, dz and the part of du."""
    u, z = inp.u, inp.z
    dD = dz = None
    du = np.zeros_like(u)
    if z is not None:
        sig = 1 / (1 + np.exp(-z))
        pre = y if inp.D is None else y + inp.D[:, None] * u  # the value silu(z) multiplies
        dz = dout * pre * sig * (1 + z * (1 - sig))  # d silu(z)/dz = sig (1 + z (1 - sig))
        dout = dout * z * sig
    if inp.D is not None:
        dD = (dout * u).sum(axis=(0, 2))
        du += dout * inp.D[:, None]
    dyl = np.moveaxis(dout, 2, 1)[..., None]  # (B, L, D, 1)
    Cx = as_BLDN(inp.C, inp.C_mode, inp.A.shape[0])
    dx = dyl * Cx  # (B, L, D, N)
    dC = reduce_like(np.broadcast_to(dyl * x, x.shape), inp.C, inp.C_mode)
    return dx, dC, dD, dz, du


def discretize_backward(da, db, a, delta, inp: SSInputs, du):
    """Back through (1)-(3) from da, db (B, L, D, N): ddelta_raw, dA, dB, ddelta_bias, du (added to)."""
    dl = np.moveaxis(delta, 2, 1)  # (B, L, D)
    ul = np.moveaxis(inp.u, 2, 1)  # (B, L, D)
    Bx = as_BLDN(inp.B, inp.B_mode, inp.A.shape[0])
    da_a = da * a  # d/d(delta A) of exp(delta A)
    dA = np.einsum("bldn,bld->dn", da_a, dl)  # (2)
    ddelta_l = (da_a * inp.A).sum(axis=-1)  # (2): (B, L, D)
    dbB = db * Bx  # (B, L, D, N)
    ddelta_l = ddelta_l + dbB.sum(axis=-1) * ul  # (3)
    du = du + np.moveaxis(dbB.sum(axis=-1) * dl, 1, 2)  # (3)
    dB = reduce_like(db * (dl * ul)[..., None], inp.B, inp.B_mode)  # (3)
    ddelta = np.moveaxis(ddelta_l, 1, 2)  # (B, D, L)
    if inp.delta_softplus:
        pre = inp.delta_raw if inp.delta_bias is None else inp.delta_raw + inp.delta_bias[:, None]
        # (1): softplus' = sigmoid below the threshold, 1 above it
        ddelta = ddelta * np.where(pre > SOFTPLUS_THRESHOLD, np.ones_like(pre), 1 / (1 + np.exp(-np.minimum(pre, SOFTPLUS_THRESHOLD))))
    ddelta_bias = None if inp.delta_bias is None else ddelta.sum(axis=(0, 2))
    return ddelta, dA, dB, ddelta_bias, du
