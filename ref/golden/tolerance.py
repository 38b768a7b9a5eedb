"""Tolerances of ``python -m ref golden check``: relative RMS error allowed per dtype and case.

Derived in ref/golden/CONVENTIONS.md ("Tolerances"):

    tolerance = 4 * ( (u_acc + u_64) * (sqrt(length) + exponent) + sqrt(8) * u_store )

* ``u_acc``: unit roundoff of the dtype sums are carried in: float64 for float64, float32 for
  float32, float16 and bfloat16 (kernels accumulate low-precision data in float32, as FLA's and
  Mamba's do). Rounding errors of a sum of ``length`` terms add up like a random walk: relative
  RMS ~ sqrt(length) u_acc.
* ``exponent``: the largest |x| whose exp(x) the op evaluates (a cumulative log-decay, an attention
  score): x carries an absolute error ~ |x| u_acc, hence a relative error |x| u_acc in exp(x).
* ``u_store``: unit roundoff of the storage dtype, counted when coarser than u_acc (float16,
  bfloat16): up to 8 independent roundings to it on one path (the output itself; the attention or
  decay matrix and the chunk states cast for tensor-core matmuls; the same in the backward pass)
  give a relative RMS error ~ sqrt(8) u_store.
* ``u_64``: the golden values are float64 computations too and carry the same kind of error at
  u_64 = 2^-53; it matters only when checking a float64 implementation, where the two add.
* 4: a safety factor over these RMS estimates (their constants and the spread of an RMS over few
  elements). Nothing here is tuned to a particular implementation.
"""

from __future__ import annotations

import math

DTYPES = ("float64", "float32", "float16", "bfloat16")
# unit roundoff u = 2^-(mantissa bits + 1)
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
ACCUMULATOR = {"float64": "float64", "float32": "float32", "float16": "float32", "bfloat16": "float32"}
SAFETY = 4.0  # the statistical estimates below are RMS values; 4x covers their spread and the constants
ROUNDINGS = 8  # roundings to a float16/bfloat16 storage dtype along one path of a kernel (see the docs)


def tolerance(dtype: str, length: int, exponent: float) -> float:
    """The relative-RMS tolerance of a tensor computed in ``dtype`` for a case (ref/golden/CONVENTIONS.md)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    u_acc = UNIT_ROUNDOFF[ACCUMULATOR[dtype]]
    u_store = UNIT_ROUNDOFF[dtype]
    storage = math.sqrt(ROUNDINGS) * u_store if u_store > u_acc else 0.0
    u_golden = UNIT_ROUNDOFF["float64"]
    return SAFETY * ((u_acc + u_golden) * (math.sqrt(length) + exponent) + storage)
