"""The selective scan, parallel form: the state recurrence by a log-depth associative scan.

The discretised step x_t = a_t x_{t-1} + b_t is an affine map of the state, and affine maps compose
associatively: (a_s, b_s) . (a_t, b_t) = (a_s a_t, a_t b_s + b_t). So the L states come out of a
prefix scan in ceil(log2 L) vectorised rounds (``ref.mixers.linear_scan.parallel``), the form
Mamba's CUDA kernel uses inside a thread block. The backward is the same scan in reverse time.
"""

from __future__ import annotations

from ref.backend import resolve
from ref.mixers.linear_scan import linear_scan_parallel, linear_scan_parallel_backward
from ref.mixers.selective_scan import _via_linear_scan


def selective_scan_parallel(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
    initial_state=None, return_last_state=False, backend: str = "numpy",
):
    """Same arguments and results as ``selective_scan_recurrent``; the scan is associative."""
    backend = resolve(backend, ("numpy",), "selective_scan_parallel")
    return _via_linear_scan.forward(
        linear_scan_parallel, (u, delta, A, B, C, D, z, delta_bias, delta_softplus), {},
        initial_state=initial_state, return_last_state=return_last_state, backend=backend,
    )


def selective_scan_parallel_backward(dout, dlast_state, cache):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``."""
    return _via_linear_scan.backward(linear_scan_parallel_backward, dout, dlast_state, cache)
