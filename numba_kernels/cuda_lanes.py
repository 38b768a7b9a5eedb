"""Exchanges between the lanes of a group of threads in a CUDA kernel (numba-cuda).

A *group* is ``lanes`` consecutive threads of a block (``lanes`` a power of two up to 32, so a group
never straddles two warps); thread ``tid`` is lane ``tid % lanes`` of its group. Three exchanges:

    shfl_up(buf, tid, lane, v, off)    v of lane - off (the thread's own v for lane < off)
    shfl_idx(buf, tid, lane, v, src)   v of lane src
    shfl_xor(buf, tid, lane, v, off)   v of lane ^ off (off < lanes)

On a GPU they are warp shuffles (``cuda.shfl_*_sync`` over the full warp) and ``buf`` is unused.
numba's CUDA simulator has no shuffles, so there the same exchange goes through ``buf``, a shared
array of one value per thread of the block, between two ``syncthreads``: the simulator tests check
a kernel's arithmetic and indexing, ``compile_ptx`` (tests/test_cuda_ptx.py) that the shuffles
compile. Either way every thread of a block must make the same exchanges (idle threads included):
the barriers need it, and the full-mask shuffles need every lane of the warp.

The functions are ``inline="always"`` device functions: inlined into the kernel before it is typed,
so ``compile_ptx`` needs no GPU (a separately compiled device function would ask the driver for
the current device's compute capability).
"""

from numba import config, cuda

FULL_MASK = 0xFFFFFFFF

if config.ENABLE_CUDASIM:

    @cuda.jit(device=True, inline="always")
    def shfl_up(buf, tid, lane, v, off):
        cuda.syncthreads()
        buf[tid] = v
        cuda.syncthreads()
        return buf[tid - off] if lane >= off else v

    @cuda.jit(device=True, inline="always")
    def shfl_idx(buf, tid, lane, v, src):
        cuda.syncthreads()
        buf[tid] = v
        cuda.syncthreads()
        return buf[tid - lane + src]

    @cuda.jit(device=True, inline="always")
    def shfl_xor(buf, tid, lane, v, off):
        cuda.syncthreads()
        buf[tid] = v
        cuda.syncthreads()
        return buf[tid - lane + (lane ^ off)]

else:

    @cuda.jit(device=True, inline="always")
    def shfl_up(buf, tid, lane, v, off):
        return cuda.shfl_up_sync(FULL_MASK, v, off)

    @cuda.jit(device=True, inline="always")
    def shfl_idx(buf, tid, lane, v, src):
        return cuda.shfl_sync(FULL_MASK, v, tid % 32 - lane + src)

    @cuda.jit(device=True, inline="always")
    def shfl_xor(buf, tid, lane, v, off):
        return cuda.shfl_xor_sync(FULL_MASK, v, off)
