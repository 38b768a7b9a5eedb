"""Mamba's selective scan (S6), with the semantics of mamba_ssm's ``selective_scan_ref``, in three forms.

    x_t = exp(delta_t A) * x_{t-1} + delta_t B_t u_t,   out_t = (C_t . x_t + D u_t) * silu(z_t)

u, delta, z, out (B, D, L); A (D, N) negative real; B and C fixed (D, N), variable (B, N, L) or
grouped (B, G, N, L); optional D (D,), z, delta_bias (D,); ``delta_softplus`` (linear above 20);
``return_last_state``. Extension: ``initial_state`` (B, D, N) and its gradient.

* ``selective_scan_recurrent``: the loop over time (the definition).
* ``selective_scan_parallel``: the states by a log-depth associative scan.
* ``selective_scan_chunked``: scan inside chunks, carry across them.

All return ``out, last_state, cache``; each ``*_backward(dout, dlast_state, cache)`` returns
``du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state`` (None for inputs not given).
Complex A (mamba_ssm's complex mode) is not supported.
"""

from ref.mixers.selective_scan.chunked import selective_scan_chunked, selective_scan_chunked_backward
from ref.mixers.selective_scan.parallel import selective_scan_parallel, selective_scan_parallel_backward
from ref.mixers.selective_scan.recurrent import selective_scan_recurrent, selective_scan_recurrent_backward

FORMS = {
    "recurrent": (selective_scan_recurrent, selective_scan_recurrent_backward),
    "parallel": (selective_scan_parallel, selective_scan_parallel_backward),
    "chunked": (selective_scan_chunked, selective_scan_chunked_backward),
}

__all__ = [
    "FORMS",
    "selective_scan_recurrent",
    "selective_scan_recurrent_backward",
    "selective_scan_parallel",
    "selective_scan_parallel_backward",
    "selective_scan_chunked",
    "selective_scan_chunked_backward",
]
