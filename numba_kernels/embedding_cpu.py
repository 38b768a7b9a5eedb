"""The embedding's backward, a scatter-add, in parallel (``ref.nn.embedding`` with ``backend="numba"``).

From ``ref/nn/embedding.py``: dtable[v] = sum of dy[i] over every position i with ids[i] = v.
NumPy's ``np.add.at`` adds the rows one at a time through a general (unbuffered) ufunc loop; at a
language model's sizes (4,096 tokens of width 128) that is about 10 ms, a few per cent of a training
step. Here the columns of the table are split into blocks, one block per parallel task: a task walks
every position in order and adds its slice of dy[i] into the row ids[i] of its slice of dtable. No
two tasks write the same entry, and every entry receives its terms in position order, as in
``np.add.at``: the two give the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

COLS_PER_BLOCK = 32  # columns per parallel task: a contiguous slice of a row, vectorised


@njit(parallel=True, cache=True, fastmath=False)
def _scatter_add_rows(ids, dy, dtable):
    M, D = dy.shape
    nblk = -(-D // COLS_PER_BLOCK)
    for blk in prange(nblk):
        d0 = blk * COLS_PER_BLOCK
        d1 = min(d0 + COLS_PER_BLOCK, D)
        for i in range(M):
            row = dtable[ids[i]]
            src = dy[i]
            # dtable[ids[i], d0:d1] += dy[i, d0:d1]
            for d in range(d0, d1):
                row[d] += src[d]


def embedding_cpu_backward(ids: np.ndarray, dy: np.ndarray, V: int) -> np.ndarray:
    """dtable (V, D) from ids (M,) in [0, V) and dy (M, D), checked by the caller."""
    dtable = np.zeros((V, dy.shape[1]), dtype=dy.dtype)
    _scatter_add_rows(np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(dy), dtable)
    return dtable
