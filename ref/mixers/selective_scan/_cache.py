"""The cache every form of the selective scan keeps, and the cotangent checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.selective_scan._inputs import SSInputs


@dataclass(frozen=True)
class SSCache:
    inp: SSInputs
    delta: np.ndarray  # (B, D, L) after bias and softplus
    a: np.ndarray  # (B, L, D, N)
    x: np.ndarray  # (B, L, D, N) every state
    y: np.ndarray  # (B, D, L) before D and z
    return_last_state: bool
    backend: str
    chunk_size: int = 0
    scan: object = None  # the linear scan's cache (parallel and chunked forms)


def check_cotangents(dout, dlast_state, cache: SSCache):
    u = cache.inp.u
    Bn, Dn, L = u.shape
    N = cache.inp.A.shape[1]
    if dout is None:
        dout = np.zeros_like(u)
    else:
        dout = checks.float_array(dout, "dout", ndim=3, dims="(B, D, L)")
        checks.same_shape(dout, "dout", u.shape, "(B, D, L)", "the shape of out")
        checks.same_dtype(dout, "dout", u.dtype, "the dtype of out")
    if dlast_state is not None:
        if not cache.return_last_state:
            raise ValueError("dlast_state: given, but the forward ran with return_last_state=False")
        dlast_state = checks.float_array(dlast_state, "dlast_state", ndim=3, dims="(B, D, N)")
        checks.same_shape(dlast_state, "dlast_state", (Bn, Dn, N), "(B, D, N)", "the shape of last_state")
        checks.same_dtype(dlast_state, "dlast_state", u.dtype, "the dtype of out")
    return dout, dlast_state
