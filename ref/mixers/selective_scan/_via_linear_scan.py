"""The selective scan through any form of the linear scan (``ref.mixers.linear_scan``).

The scan x_t = a_t x_{t-1} + b_t runs elementwise over the (D, N) state entries, so flattening
them gives exactly the linear scan's layout (B, T, D*N): the parallel and chunked forms of the
selective scan are the parallel and chunked forms of the linear scan between the discretisation
and the readout, forward and backward.
"""

from __future__ import annotations

from ref.mixers.selective_scan._cache import SSCache, check_cotangents
from ref.mixers.selective_scan._inputs import check_inputs, discretize, discretize_backward, readout, readout_backward


def forward(scan, args, kwargs, *, initial_state, return_last_state, backend, chunk_size=0):
    inp = check_inputs(*args, initial_state=initial_state, **kwargs)
    delta_eff, a, b = discretize(inp)  # (B, L, D, N)
    Bn, L, Dn, N = a.shape
    h0 = None if inp.initial_state is None else inp.initial_state.reshape(Bn, Dn * N)
    x, xt, scan_cache = scan(a.reshape(Bn, L, Dn * N), b.reshape(Bn, L, Dn * N), h0)  # (B, L, D*N)
    x = x.reshape(Bn, L, Dn, N)
    out, y = readout(x, inp)
    cache = SSCache(inp, delta_eff, a, x, y, return_last_state, backend, chunk_size, scan_cache)
    return out, (xt.reshape(Bn, Dn, N) if return_last_state else None), cache


def backward(scan_backward, dout, dlast_state, cache: SSCache):
    inp, a = cache.inp, cache.a
    dout, dlast_state = check_cotangents(dout, dlast_state, cache)
    dx_out, dC, dD, dz, du = readout_backward(dout, cache.x, cache.y, inp)
    Bn, L, Dn, N = a.shape
    dht = None if dlast_state is None else dlast_state.reshape(Bn, Dn * N)
    da, db, dh0 = scan_backward(dx_out.reshape(Bn, L, Dn * N), dht, cache.scan)
    ddelta, dA, dB, ddelta_bias, du = discretize_backward(
        da.reshape(a.shape), db.reshape(a.shape), a, cache.delta, inp, du
    )
    dinitial_state = None if dh0 is None else dh0.reshape(Bn, Dn, N)
    return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state
