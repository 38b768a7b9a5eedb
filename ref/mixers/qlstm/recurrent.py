"""The sequential form: the loop over time.

    f, i, z, o = sigmoid(fx + 1), sigmoid(ix), tanh(zx), sigmoid(ox)       (1)
    u_t = i_t * z_t                                                         (2)
    c_t = f_t * c_{t-1} + u_t                                               (3)
    h_t = o_t * tanh(c_t)                                                   (4)

Since no gate reads the state, (1), (2) and (4) are elementwise over all of (B, T, D) at once;
only (3) runs step by step, and it is the first-order linear recurrence of
``ref.mixers.linear_scan`` with a = f, b = u: that module's loop (or its numba/CUDA kernels)
runs it.

Backward. With g_t = dL/dc_t (total), the linear scan's backward gives

    g_t = dc_t + f_{t+1} g_{t+1},   g_{T-1} = dc_{T-1} + dct,   dc_t = dh_t o_t (1 - tanh^2 c_t)   (5)
    dL/df_t = g_t c_{t-1},   dL/du_t = g_t,   dinitial_state = f_0 g_0                         (6)

and the elementwise chain rule through (1), (2), (4) finishes (``_inputs.gates_backward``).
"""

from __future__ import annotations

from ref.backend import resolve
from ref.mixers.linear_scan import linear_scan_recurrent, linear_scan_recurrent_backward
from ref.mixers.qlstm._inputs import (
    FORGET_BIAS,
    QLSTMCache,
    check_cotangents,
    check_inputs,
    gates,
    gates_backward,
    output,
    output_backward,
)


def qlstm_recurrent(fx, ix, zx, ox, initial_state=None, *, forget_bias: float = FORGET_BIAS, backend: str = "numpy"):
    """The quasi-LSTM cell by a loop over time.

    fx, ix, zx, ox: the pre-activations of the forget, input, candidate and output gates (B, T, D)
    (Languini's x W + b); initial_state: c_{-1} (B, D) or None (zeros). Returns ``h`` (B, T, D),
    the final cell state ``ct`` (B, D) and the cache for :func:`qlstm_recurrent_backward`.
    backend: where the scan (3) runs: "numpy", "numba" (``numba_kernels.scan_cpu``), "cuda"
    (``numba_kernels.scan_cuda``) or "auto"; the elementwise parts (1), (2), (4) are NumPy.
    """
    backend = resolve(backend, ("numpy", "numba", "cuda"), "qlstm_recurrent")
    fx, ix, zx, ox, initial_state, forget_bias = check_inputs(fx, ix, zx, ox, initial_state, forget_bias)
    # (1), (2)
    f, i, z, o, u = gates(fx, ix, zx, ox, forget_bias)  # (B, T, D) each
    # (3) c_t = f_t c_{t-1} + u_t
    c, ct, scan_cache = linear_scan_recurrent(f, u, initial_state, backend=backend)
    # (4)
    h, tanh_c = output(o, c)
    cache = QLSTMCache(f, i, z, o, c, tanh_c, initial_state, backend, scan_cache=scan_cache)
    return h, ct, cache


def qlstm_recurrent_backward(dh, dct, cache: QLSTMCache):
    """Gradients ``(dfx, dix, dzx, dox, dinitial_state)`` from the cotangents of ``h`` (B, T, D)
    and ``ct`` (B, D), either None for zero. ``dinitial_state`` is None when there was none."""
    dh, dct = check_cotangents(dh, dct, cache.c.shape, cache.c.dtype)
    # (4) the direct part of dL/dc_t, and dox
    dc, dox = output_backward(dh, cache.o, cache.tanh_c)
    # (5), (6) through the linear scan's backward
    df, du, dc0 = linear_scan_recurrent_backward(dc, dct, cache.scan_cache)
    dlogf = df * cache.f  # dL/dlog f = f dL/df
    dfx, dix, dzx = gates_backward(dlogf, du, cache)
    return dfx, dix, dzx, dox, dc0
