"""Input validation shared by every public function.

Bad input must fail loudly and early, with a message that names the argument, what was
expected and what was given, e.g.::

    ValueError: b: expected shape (B, T, D) = (2, 7, 3) (the shape of a), got (2, 7, 4)

Never a silent broadcast: shapes are compared exactly. Every checker returns the value it
checked (converted where documented) so that callers can write ``a = float_array(a, "a")``.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(x, name: str, ndim: int | None = None, dims: str | None = None) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray; raise ValueError otherwise.

    ``ndim`` checks the number of axes; ``dims`` (e.g. ``"(B, T, D)"``) names them in the message.
    Integer, boolean, complex and object arrays are refused rather than silently cast.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of float32 or float64, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        what = f"{ndim} axes {dims}" if dims else f"{ndim} axes"
        raise ValueError(f"{name}: expected {what}, got shape {x.shape}")
    return x


def finite(x: np.ndarray, name: str) -> np.ndarray:
    """Raise ValueError if ``x`` holds a NaN or an infinity, saying where the first one is."""
    # (not np.dot(x, x): BLAS threads left spinning after the call stall numba's thread pool)
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name}: expected finite values, got {len(bad)} non-finite (first at index {first}: {x[first]})"
        )
    return x


def same_shape(x: np.ndarray, name: str, shape: tuple, dims: str, like: str) -> np.ndarray:
    """Require ``x.shape == shape`` exactly; ``dims`` names the axes, ``like`` where ``shape`` came from."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {dims} = {tuple(shape)} ({like}), got {tuple(x.shape)}")
    return x


def same_dtype(x: np.ndarray, name: str, dtype: np.dtype, like: str) -> np.ndarray:
    """Require ``x.dtype == dtype``; mixed precision is an error, not an implicit upcast."""
    if x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)} ({like}), got {x.dtype}")
    return x


def positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is an integer >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def positive_float(value, name: str) -> float:
    """Return ``value`` as a float if it is a real number > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def nonempty_time(T: int, name: str) -> int:
    """Sequence lengths must be >= 1: T = 0 has no final state to return."""
    if T < 1:
        raise ValueError(f"{name}: expected a time axis of length >= 1, got length {T}")
    return T


def one_of(value, name: str, choices) -> object:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def sequence_input(x, name: str, D: int, dtype, D_from: str = "from the parameters") -> np.ndarray:
    """A model's input x (B, T, D): D columns as the parameters say, T >= 1, their dtype."""
    x = float_array(x, name, ndim=3, dims="(B, T, D)")
    if x.shape[2] != D:
        raise ValueError(f"{name}: expected shape (B, T, D) with D = {D} ({D_from}), got {x.shape}")
    nonempty_time(x.shape[1], name)
    same_dtype(x, name, dtype, "the dtype of the parameters")
    return x


def state_part(x, name: str, shape: tuple, dims: str, dtype) -> np.ndarray:
    """One array of a decode state: the shape the input and the parameters imply, their dtype."""
    x = float_array(x, name, ndim=len(shape), dims=dims)
    same_shape(x, name, shape, dims, "from x and the parameters")
    same_dtype(x, name, dtype, "the dtype of the parameters")
    return x


def output_cotangent(dy, name: str, shape: tuple, dtype, dims: str = "(B, T, D)") -> np.ndarray:
    """A cotangent: the shape and dtype of the output it belongs to."""
    dy = float_array(dy, name, ndim=len(shape), dims=dims)
    same_shape(dy, name, shape, dims, "the shape of the output")
    same_dtype(dy, name, dtype, "the dtype of the output")
    return dy


def form_options(mode, chunk_size, forms) -> tuple:
    """``mode`` one of ``forms``; ``chunk_size`` an integer >= 1 when the mode is "chunked"."""
    one_of(mode, "mode", forms)
    if mode == "chunked":
        chunk_size = positive_int(chunk_size, "chunk_size")
    return mode, chunk_size


def query_key_value(q, k, v, k_name: str = "k") -> tuple:
    """q, k (B, T, H, K) and v (B, T, H, V): T >= 1, shapes and dtypes agreeing with q, finite values."""
    q = float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    B, T, H, K = q.shape
    nonempty_time(T, "q")
    k = float_array(k, k_name, ndim=4, dims="(B, T, H, K)")
    same_shape(k, k_name, q.shape, "(B, T, H, K)", "the shape of q")
    v = float_array(v, "v", ndim=4, dims="(B, T, H, V)")
    if v.shape[:3] != (B, T, H):
        raise ValueError(f"v: expected shape (B, T, H, V) with (B, T, H) = {(B, T, H)} (from q), got {v.shape}")
    for x, name in ((q, "q"), (k, k_name), (v, "v")):
        same_dtype(x, name, q.dtype, "the dtype of q")
        finite(x, name)
    return q, k, v
