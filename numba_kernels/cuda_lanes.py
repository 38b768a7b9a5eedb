"""Exchanges between the lanes of a group of threads in a CUDA kernel (numba-cuda).

A *group* is ``lanes`` consecutive threads of a block (``lanes`` a power of two up to 32, so a group
never straddles two warps); thread ``tid`` is lane ``tid % lanes`` of its group. Four exchanges:

    shfl_up(buf, tid, lane, v, off)           v of lane - off (the thread's own v for lane < off)
    shfl_down(buf, tid, lane, v, off, lanes)  v of lane + off (lane + off < lanes; past the group's
                                              end the value is unspecified: the caller masks it)
    shfl_idx(buf, tid, lane, v, src)          v of lane src
    shfl_xor(buf, tid, lane, v, off)          v of lane ^ off (off < lanes)

and, built on them, a segmented sum over runs of lanes that share a key (``run_steps``, ``run_starts``,
``run_sum``), which lets the lanes that add into one address add once.

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
    def shfl_down(buf, tid, lane, v, off, lanes):
        cuda.syncthreads()
        buf[tid] = v
        cuda.syncthreads()
        return buf[tid + off] if lane + off < lanes else v

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
    def shfl_down(buf, tid, lane, v, off, lanes):
        return cuda.shfl_down_sync(FULL_MASK, v, off)

    @cuda.jit(device=True, inline="always")
    def shfl_idx(buf, tid, lane, v, src):
        return cuda.shfl_sync(FULL_MASK, v, tid % 32 - lane + src)

    @cuda.jit(device=True, inline="always")
    def shfl_xor(buf, tid, lane, v, off):
        return cuda.shfl_xor_sync(FULL_MASK, v, off)


@cuda.jit(device=True, inline="always")
def run_steps(buf, tid, lane, key, lanes):
    """The steps of ``run_sum`` for this lane: bit k is set when lane + 2^k is in the group and
    holds the same key. Keys must form runs of consecutive lanes (a key never recurs after
    another); a negative key marks a lane that takes part in no sum."""
    steps = 0
    off = 1
    k = 0
    while off < lanes:
        other = shfl_down(buf, tid, lane, key, off, lanes)
        if lane + off < lanes and other == key:
            steps |= 1 << k
        off *= 2
        k += 1
    return steps


@cuda.jit(device=True, inline="always")
def run_starts(buf, tid, lane, key):
    """True on the first lane of its run of equal keys: the lane that holds the run's sum."""
    before = shfl_up(buf, tid, lane, key, 1)
    return lane == 0 or before != key


@cuda.jit(device=True, inline="always")
def run_sum(buf, tid, lane, v, steps, lanes):
    """v summed from this lane to the end of its run (``steps`` from ``run_steps``): on a run's
    first lane, the sum over the run. A segmented suffix scan: after the step of offset 2^k a
    lane holds the sum of up to 2^(k+1) lanes of its run from itself, so log2(lanes) steps."""
    off = 1
    k = 0
    while off < lanes:
        other = shfl_down(buf, tid, lane, v, off, lanes)
        if (steps >> k) & 1:
            v += other
        off *= 2
        k += 1
    return v
