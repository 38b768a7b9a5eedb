"""Embedding: look up one row of a table per integer id.

Shapes: ids (...) integers in [0, V), table (V, D), y (..., D) with y[i] = table[ids[i]].
Here V is the vocabulary size (number of rows) and D the embedding width.

Backward, from dL/dy = dy (..., D):
    dtable[v] = sum of dy[i] over every position i with ids[i] = v
An id that occurs several times collects the sum of its upstream gradients; ``np.add.at``
does that (a plain ``dtable[ids] += dy`` would keep only one of the repeated writes).
The ids are integers and get no gradient (None).

``backend="numba"``: the backward's scatter-add in parallel over blocks of columns
(``numba_kernels.embedding_cpu``), the same sums in the same order; the forward is NumPy's gather
on every backend (one pass already).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.nn import _validate

__all__ = ["embedding", "embedding_backward"]


def embedding(ids: np.ndarray, table: np.ndarray, *, backend: str = "numpy"):
    """Forward. Returns ``(y, cache)`` with ``y = table[ids]`` of shape ``ids.shape + (D,)``.
    ``backend`` ("numpy" or "numba") is the one the backward runs on."""
    backend = resolve(backend, ("numpy", "numba"), "embedding")
    ids = _validate.int_array(ids, "ids")
    table = checks.float_array(table, "table", ndim=2, dims="(V, D)")
    V = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = np.argwhere((ids < 0) | (ids >= V))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(
            f"ids: expected values in [0, V) = [0, {V}) (the rows of table), got {ids[where]} at index {where}"
        )
    # y[i] = table[ids[i]]
    y = table[ids]  # (..., D)
    cache = (ids, table.shape, table.dtype, backend)
    return y, cache


def embedding_backward(dy: np.ndarray, cache):
    """Backward. Returns ``(None, dtable)``: no gradient for the integer ids."""
    ids, (V, D), dtype, backend = cache
    dy = _validate.cotangent(dy, "dy", ids.shape + (D,), dtype, "(..., D)")
    if backend == "numba":
        from numba_kernels.embedding_cpu import embedding_cpu_backward  # imported on first use

        return None, embedding_cpu_backward(ids.reshape(-1), dy.reshape(-1, D), V)
    dtable = np.zeros((V, D), dtype=dtype)
    # dtable[v] = sum_{i : ids[i] = v} dy[i]   (unbuffered: repeated ids add up)
    np.add.at(dtable, ids.reshape(-1), dy.reshape(-1, D))  # ids (M,), dy (M, D)
    return None, dtable
