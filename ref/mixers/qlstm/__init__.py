"""The quasi-LSTM of the Languini Kitchen (Stanić et al., 2023, arXiv 2309.11197): an LSTM cell
whose gates read the input only, so that everything but a per-channel gated scan is parallel.

    f_t = sigmoid(fx_t + 1),  i_t = sigmoid(ix_t),  z_t = tanh(zx_t),  o_t = sigmoid(ox_t)   (1)
    u_t = i_t * z_t                                                                          (2)
    c_t = f_t * c_{t-1} + u_t,        c_{-1} = initial_state (zeros if None)                 (3)
    h_t = o_t * tanh(c_t)                                                                    (4)

fx, ix, zx, ox are the pre-activations x W + b of the forget, input, candidate and output gates
(Languini's ``linear_Fx`` ... ``linear_Ox``); the forget gate's offset of +1 (``forget_bias``)
makes a fresh layer remember (f ~ 0.73). Layout (B, T, D) for every per-step tensor, (B, D) for
the cell states: the cell is elementwise over channels, so heads are only a reshape (the layer
``ref.models.qlstm`` splits D = H * K into heads).

Forms (both return ``h, ct, cache``; each ``*_backward(dh, dct, cache)`` returns
``dfx, dix, dzx, dox, dinitial_state``):

* ``qlstm_recurrent``: the loop over time; (3) is ``ref.mixers.linear_scan``'s recurrence with
  a = f, b = u. Backends numpy, numba, cuda (the linear-scan kernels).
* ``qlstm_block_parallel(..., block_length)``: Languini's fast form, c = F [c_in; u] per block
  with F from segment sums of log f, the state carried across blocks. Backends numpy, numba,
  cuda (the chunked linear-scan kernels).

Kernels. The compiled backends run only the scan (3), on the linear-scan kernels
(``numba_kernels.scan_cpu`` / ``scan_cuda``); (1), (2), (4) stay NumPy. A fused CPU kernel (gates,
scan and output in one numba pass, the gates recomputed in the backward) was measured against this
on the 2-core reference machine at B = 4, T = 1024, D = 512 (best of 11, a loaded machine): float32
forward 364 ms fused vs 163 ms unfused, forward + backward 712 vs 304 ms (numba has no SVML here,
so the fused loop calls scalar exp/tanh while NumPy's are vectorised); float64 forward 317 vs
404 ms, forward + backward 664 vs 568 ms. Not clearly faster, so not kept. (A fused CUDA kernel
would spare the host-side NumPy gates; it awaits a GPU to measure it.)
"""

from ref.mixers.qlstm._inputs import FORGET_BIAS
from ref.mixers.qlstm.block_parallel import qlstm_block_parallel, qlstm_block_parallel_backward
from ref.mixers.qlstm.recurrent import qlstm_recurrent, qlstm_recurrent_backward

FORMS = {
    "recurrent": (qlstm_recurrent, qlstm_recurrent_backward),
    "block_parallel": (qlstm_block_parallel, qlstm_block_parallel_backward),
}

__all__ = [
    "FORGET_BIAS",
    "FORMS",
    "qlstm_recurrent",
    "qlstm_recurrent_backward",
    "qlstm_block_parallel",
    "qlstm_block_parallel_backward",
]
