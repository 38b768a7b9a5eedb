"""Configuration of the CUDA-simulator process.

The simulator runs every GPU thread as a Python thread, and its block manager busy-polls them to
release a ``syncthreads`` barrier. With Python's default 5 ms thread switch interval the poller
keeps the interpreter while the threads it waits for cannot run, so each barrier costs
milliseconds; a 0.1 ms interval lets them run (about 10x faster for the kernels with barriers).
"""

import sys

sys.setswitchinterval(1e-4)
