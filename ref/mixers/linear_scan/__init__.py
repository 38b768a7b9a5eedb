"""The first-order linear recurrence, in three forms.

    h_t = a_t * h_{t-1} + b_t,    h_{-1} = initial_state (zeros if None),    t = 0 .. T-1

elementwise over a batch of channels: ``a``, ``b`` and the states ``h`` have layout (B, T, D),
the initial and final states (B, D). It is the skeleton of every diagonal linear RNN and SSM
(Mamba's selective scan is this recurrence with a_t = exp(delta_t A), b_t = delta_t B_t u_t).

Forms (all return ``h, ht, cache``; each ``*_backward(dh, dht, cache)`` returns
``da, db, dinitial_state``):

* ``linear_scan_recurrent``: the loop over time, O(T) sequential steps. Backends numpy, numba, cuda.
* ``linear_scan_parallel``: Hillis-Steele associative scan over (a, b) pairs, O(log T) steps.
* ``linear_scan_chunked``: scan inside chunks of ``chunk_size`` from a zero state, then carry the
  state across chunks. Backends numpy, numba, cuda (the time-chunked kernels that fill a GPU).

The backward of a linear recurrence is the same recurrence run in reverse time:

    g_t = dh_t + a_{t+1} g_{t+1},   g_{T-1} = dh_{T-1} + dht        (g_t = dL/dh_t, total)
    da_t = g_t h_{t-1},   db_t = g_t,   dinitial_state = a_0 g_0
"""

from ref.mixers.linear_scan.chunked import linear_scan_chunked, linear_scan_chunked_backward
from ref.mixers.linear_scan.parallel import associative_scan, linear_scan_parallel, linear_scan_parallel_backward
from ref.mixers.linear_scan.recurrent import linear_scan_recurrent, linear_scan_recurrent_backward

FORMS = {
    "recurrent": (linear_scan_recurrent, linear_scan_recurrent_backward),
    "parallel": (linear_scan_parallel, linear_scan_parallel_backward),
    "chunked": (linear_scan_chunked, linear_scan_chunked_backward),
}

__all__ = [
    "FORMS",
    "associative_scan",
    "linear_scan_recurrent",
    "linear_scan_recurrent_backward",
    "linear_scan_parallel",
    "linear_scan_parallel_backward",
    "linear_scan_chunked",
    "linear_scan_chunked_backward",
]
