"""Comparison with an elementwise error bound, reporting the worst offender."""

import numpy as np


def assert_within(name, got, want, tol):
    """Elementwise |got - want| <= tol, with a report naming the tensor and the worst element."""
    if want is None:
        assert got is None, f"{name}: expected None, got an array"
        return
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got64.shape == want64.shape, f"{name}: shape {got64.shape} != {want64.shape}"
    err = np.abs(got64 - want64)
    bad = err > tol
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        worst = float((err / tol).max())
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {err.size} elements outside the bound (worst {worst:.3g}x the bound); "
            f"first at {i}: got {got64[i]!r}, want {want64[i]!r}, bound {np.broadcast_to(tol, err.shape)[i]:.3e}"
        )
