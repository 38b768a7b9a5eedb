"""Validation helpers shared by the ops of ``ref.nn`` (built on :mod:`ref.checks`).

Every helper raises ``ValueError`` naming the argument, what was expected and what was given,
and returns the value it checked (converted where documented).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ref import checks


def param(a, name: str, dtype: np.dtype, shape: tuple, dims: str, like: str) -> np.ndarray:
    """A floating parameter of exactly ``shape`` and the dtype of the input."""
    a = checks.float_array(a, name, ndim=len(shape), dims=dims)
    checks.same_shape(a, name, shape, dims, like)
    checks.same_dtype(a, name, dtype, "the dtype of x")
    return a


def cotangent(dy, name: str, shape: tuple, dtype: np.dtype, dims: str) -> np.ndarray:
    """The upstream gradient of an output: same shape and dtype as that output."""
    dy = checks.float_array(dy, name)
    checks.same_shape(dy, name, shape, dims, "the shape of the output")
    checks.same_dtype(dy, name, dtype, "the dtype of the output")
    return dy


def int_array(ids, name: str) -> np.ndarray:
    """An integer ndarray (bools refused: they index as masks, not as ids)."""
    if not isinstance(ids, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of integers, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer dtype, got {ids.dtype}")
    return ids


def real(value, name: str) -> float:
    """A finite real number (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


def positive(value, name: str) -> float:
    """A finite real number > 0 (eps, beta)."""
    if real(value, name) <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


def in_unit_interval(value, name: str) -> float:
    """A number in [0, 1] (a probability, a momentum, a smoothing weight)."""
    v = real(value, name)
    if not 0 <= v <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return v


def flag(value, name: str) -> bool:
    """A Python or numpy bool (not a truthy int or string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def axis(value, name: str, ndim: int) -> int:
    """An axis of an array with ``ndim`` axes, returned non-negative."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not -ndim <= value < ndim:
        raise ValueError(f"{name}: expected an integer axis in [{-ndim}, {ndim}) for {ndim} axes, got {value!r}")
    return int(value) % ndim


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum`` (stride, padding, kernel size)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(values) == 2 and all(
        not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= minimum for v in values
    )
    if not ok:
        raise ValueError(f"{name}: expected an integer >= {minimum} or a pair of them, got {value!r}")
    return int(values[0]), int(values[1])
