"""Random cases, an independent reference and error bounds for the selective-scan tests.

Error bound. The three forms share the discretisation (delta, a = exp(delta A), b = delta B u) and
the readout code; they differ only in how the linear scan x_t = a_t x_{t-1} + b_t and its reverse
(for da, db) are run. So the scan's own bound (``tests/mixers/scan_cases.py``: 4 (L + 2) u times
the scan of absolute values) bounds the difference of the states x, of da and of db, and every
other difference is that bound pushed through the shared linear maps, with absolute values:

    out:   sum_n |C| tol_x |silu z|          dC:  sum |dy| tol_x        dz: |dout s (1 + z (1 - s))| tol_y
    du:    sum_n |B delta| tol_db            dA:  sum |a delta| tol_da  dB: sum |delta u| tol_db
    ddelta: sum_n (|a A| tol_da + |B u| tol_db) |softplus'|, ddelta_bias: its sum

doubled for the roundings of those maps themselves (at most a few per term, applied to inputs that
differ by less than the bound). A bug errs by the size of the values, far above.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ref.mixers.selective_scan._inputs import as_BLDN, check_inputs, discretize, softplus
from tests.mixers.scan_cases import bounds as scan_bounds

MODES = ("fixed", "variable", "grouped")


@st.composite
def ss_cases(draw, max_L=30, dtypes=(np.float64,)):
    L = draw(st.one_of(st.just(1), st.integers(1, max_L)))
    G = draw(st.sampled_from([1, 2]))
    return dict(
        B=draw(st.integers(1, 2)),
        D=G * draw(st.integers(1, 3)),
        L=L,
        N=draw(st.integers(1, 5)),
        G=G,
        B_mode=draw(st.sampled_from(MODES)),
        C_mode=draw(st.sampled_from(MODES)),
        with_D=draw(st.booleans()),
        with_z=draw(st.booleans()),
        with_bias=draw(st.booleans()),
        softplus=draw(st.booleans()),
        with_h0=draw(st.booleans()),
        with_dlast=draw(st.booleans()),
        decay=draw(st.sampled_from(["weak", "strong"])),
        chunk_size=draw(st.one_of(st.just(1), st.integers(1, 9), st.just(L), st.just(L + 2))),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _bc(rng, mode, B, D, N, L, G, dt):
    shape = {"fixed": (D, N), "variable": (B, N, L), "grouped": (B, G, N, L)}[mode]
    return rng.standard_normal(shape).astype(dt)


def make_arrays(case):
    """Inputs as mamba_ssm's tests draw them: A = -0.5 rand (here bounded away from 0), delta = 0.5 rand."""
    rng = np.random.default_rng(case["seed"])
    B, D, L, N, G, dt = case["B"], case["D"], case["L"], case["N"], case["G"], case["dtype"]
    u = rng.standard_normal((B, D, L)).astype(dt)
    delta = (0.5 * rng.uniform(size=(B, D, L)) - (0.25 if case["softplus"] else 0)).astype(dt)
    scale = 0.5 if case["decay"] == "weak" else 8.0
    A = (-scale * (0.1 + rng.uniform(size=(D, N)))).astype(dt)
    args = dict(
        u=u,
        delta=delta,
        A=A,
        B=_bc(rng, case["B_mode"], B, D, N, L, G, dt),
        C=_bc(rng, case["C_mode"], B, D, N, L, G, dt),
        D=rng.standard_normal(D).astype(dt) if case["with_D"] else None,
        z=rng.standard_normal((B, D, L)).astype(dt) if case["with_z"] else None,
        delta_bias=(0.5 * rng.uniform(size=D)).astype(dt) if case["with_bias"] else None,
        delta_softplus=case["softplus"],
        initial_state=rng.standard_normal((B, D, N)).astype(dt) if case["with_h0"] else None,
    )
    dout = rng.standard_normal((B, D, L)).astype(dt)
    dlast = rng.standard_normal((B, D, N)).astype(dt) if case["with_dlast"] else None
    return args, dout, dlast


def selective_scan_by_definition(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                 initial_state=None):
    """mamba_ssm's selective_scan_ref written with scalar loops: an independent reference (float64)."""
    Bn, Dn, L = u.shape
    N = A.shape[1]

    def coef(X, b, d, n, t):
        if X.ndim == 2:
            return X[d, n]
        if X.ndim == 3:
            return X[b, n, t]
        G = X.shape[1]
        return X[b, d // (Dn // G), n, t]

    out = np.zeros((Bn, Dn, L))
    last = np.zeros((Bn, Dn, N))
    for b in range(Bn):
        for d in range(Dn):
            x = [0.0 if initial_state is None else float(initial_state[b, d, n]) for n in range(N)]
            for t in range(L):
                dl = float(delta[b, d, t]) + (0.0 if delta_bias is None else float(delta_bias[d]))
                if delta_softplus:
                    dl = dl if dl > 20 else float(np.log1p(np.exp(dl)))
                y = 0.0
                for n in range(N):
                    x[n] = np.exp(dl * A[d, n]) * x[n] + dl * coef(B, b, d, n, t) * u[b, d, t]
                    y += x[n] * coef(C, b, d, n, t)
                if D is not None:
                    y += D[d] * u[b, d, t]
                if z is not None:
                    y *= z[b, d, t] / (1 + np.exp(-z[b, d, t]))
                out[b, d, t] = y
            last[b, d] = x
    return out, last


def bounds(args, dout, dlast, dtype):
    """Elementwise tolerances for (out, last_state, du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0)."""
    inp = check_inputs(*(args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")),
                       initial_state=args["initial_state"])
    delta, a, b = discretize(inp)  # (B, L, D, N)
    Bn, L, Dn, N = a.shape
    flat = lambda x: x.reshape(Bn, L, Dn * N)  # noqa: E731
    h0 = None if inp.initial_state is None else inp.initial_state.reshape(Bn, Dn * N)
    Cx = np.broadcast_to(as_BLDN(inp.C, inp.C_mode, Dn), a.shape)
    z = inp.z
    s = None if z is None else 1 / (1 + np.exp(-z))
    gate = 1.0 if z is None else np.abs(z * s)  # |silu z|, (B, D, L)
    dout_y = dout if z is None else dout * z * s  # the cotangent of y + D u
    dx_out = np.moveaxis(dout_y, 2, 1)[..., None] * Cx  # (B, L, D, N)
    dht = None if dlast is None else dlast.reshape(Bn, Dn * N)
    sb = scan_bounds(flat(a), flat(b), h0, flat(dx_out), dht, dtype)
    tol_x, tol_da, tol_db = (sb[k].reshape(a.shape) for k in ("h", "da", "db"))
    tol_y = np.moveaxis((np.abs(Cx) * tol_x).sum(-1), 1, 2)  # (B, D, L)
    out = 2 * tol_y * gate
    Bx = np.broadcast_to(as_BLDN(inp.B, inp.B_mode, Dn), a.shape)
    dl = np.moveaxis(delta, 2, 1)[..., None]  # (B, L, D, 1)
    ul = np.moveaxis(inp.u, 2, 1)[..., None]
    ddelta = (np.abs(a * inp.A) * tol_da + np.abs(Bx * ul) * tol_db).sum(-1)  # (B, L, D)
    if inp.delta_softplus:
        pre = inp.delta_raw if inp.delta_bias is None else inp.delta_raw + inp.delta_bias[:, None]
        ddelta = ddelta * np.moveaxis(np.where(pre > 20, 1.0, 1 / (1 + np.exp(-pre))), 2, 1)
    ddelta = 2 * np.moveaxis(ddelta, 1, 2)
    tiny = np.finfo(dtype).tiny

    def reduce_bc(t_BLDN, X, mode):
        if mode == "fixed":
            return t_BLDN.sum(axis=(0, 1))
        if mode == "variable":
            return np.moveaxis(t_BLDN.sum(axis=2), 1, 2)
        G = X.shape[1]
        return np.moveaxis(t_BLDN.reshape(Bn, L, G, Dn // G, N).sum(axis=3), 1, 3)

    dz = None
    if z is not None:
        dz = 2 * np.abs(dout * s * (1 + z * (1 - s))) * tol_y + tiny
    return dict(
        out=out + tiny,
        last_state=2 * sb["ht"].reshape(Bn, Dn, N) + tiny,
        du=2 * np.moveaxis((np.abs(Bx * dl) * tol_db).sum(-1), 1, 2) + tiny,
        ddelta=ddelta + tiny,
        dA=2 * np.einsum("bldn,bldn->dn", np.abs(a * dl), tol_da) + tiny,
        dB=2 * reduce_bc(np.abs(dl * ul) * tol_db, inp.B, inp.B_mode) + tiny,
        dC=2 * reduce_bc(np.abs(np.moveaxis(dout_y, 2, 1)[..., None]) * tol_x, inp.C, inp.C_mode) + tiny,
        dD=np.zeros(Dn) + tiny if inp.D is not None else None,
        dz=dz,
        ddelta_bias=None if inp.delta_bias is None else ddelta.sum(axis=(0, 2)) + tiny,
        dh0=None if h0 is None else 2 * sb["dh0"].reshape(Bn, Dn, N) + tiny,
    )


__all__ = ["MODES", "ss_cases", "make_arrays", "selective_scan_by_definition", "bounds", "softplus"]
