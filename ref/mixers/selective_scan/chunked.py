"""The selective scan, chunked form: scan inside chunks of time, carry the state across them.

Within a chunk every (b, d, n) entry of the state is scanned from zero while the products of the
decays a_t are accumulated; then one short sequential pass carries the state across chunks and a
final vectorised pass adds (products x entering state) to every step
(``ref.mixers.linear_scan.chunked``). This is the structure of Mamba's CUDA kernel across thread
blocks of time, and of the time-chunked GPU kernels here. The backward is the same in reverse.

``backend="cuda"`` runs those time-chunked kernels (``numba_kernels.selective_scan_cuda``: a thread
per channel and chunk, three passes); there is no CPU kernel for this form: on a CPU the
sequential kernel of ``selective_scan_recurrent(backend="numba")`` is already parallel over the
B * D channels.
"""

from __future__ import annotations

from ref import checks
from ref.backend import resolve
from ref.mixers.linear_scan import linear_scan_chunked, linear_scan_chunked_backward
from ref.mixers.selective_scan import _via_linear_scan
from ref.mixers.selective_scan._inputs import check_inputs
from ref.mixers.selective_scan.recurrent import backward_on_kernels, forward_on_kernels


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
    initial_state=None, return_last_state=False, chunk_size: int = 64, backend: str = "numpy",
):
    """Same arguments and results as ``selective_scan_recurrent``, by chunks of ``chunk_size`` steps.

    backend: "numpy" (``ref.mixers.linear_scan.linear_scan_chunked`` between the discretisation and
    the readout), "cuda" (the time-chunked kernels) or "auto"; the backward runs on the same backend.
    """
    C_ = checks.positive_int(chunk_size, "chunk_size")
    backend = resolve(backend, ("numpy", "cuda"), "selective_scan_chunked")
    if backend != "numpy":
        inp = check_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=initial_state)
        return forward_on_kernels(inp, backend, return_last_state, chunk_size=C_)

    def scan(a, b, h0):
        return linear_scan_chunked(a, b, h0, chunk_size=C_)

    return _via_linear_scan.forward(
        scan, (u, delta, A, B, C, D, z, delta_bias, delta_softplus), {},
        initial_state=initial_state, return_last_state=return_last_state, backend=backend, chunk_size=C_,
    )


def selective_scan_chunked_backward(dout, dlast_state, cache):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``."""
    if cache.backend != "numpy":
        return backward_on_kernels(dout, dlast_state, cache)
    return _via_linear_scan.backward(linear_scan_chunked_backward, dout, dlast_state, cache)
