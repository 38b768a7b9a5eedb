"""Validation shared by the RNN cells, their sequence forms and the stacked/bidirectional layers.

PyTorch's shapes, with G the number of gate blocks stacked in the weight rows (1 for the vanilla
RNN, 4 for the LSTM: i, f, g, o; 3 for the GRU: r, z, n):

    x (B, T, I)   h0, c0 (B, H)   weight_ih (G H, I)   weight_hh (G H, H)   bias_ih, bias_hh (G H,)

The hidden size H is read from the columns of ``weight_hh``; every other shape must agree with it
and with the batch and feature sizes of ``x``. Biases may be None (PyTorch's ``bias=False``), and
so may the initial states (zeros).
"""

from __future__ import annotations

import numpy as np

from ref import checks

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def check_params(params: dict, gates: int, input_size: int, dtype, *, suffix: str = "", what: str = "x") -> int:
    """Validate one direction of one layer's weights; return the hidden size H.

    ``params`` maps ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` to arrays (biases may be
    None). ``suffix`` is appended to the names in messages (``_l1_reverse`` for a stacked layer).
    ``input_size`` is the number of input features I, taken from ``what``.
    """
    rows = {1: "H", 3: "3H", 4: "4H"}[gates]
    missing = [n for n in ("weight_ih", "weight_hh") if params.get(n) is None]
    if missing:
        raise ValueError(f"{missing[0]}{suffix}: missing (expected an array of shape ({rows}, ...))")
    w_hh = checks.float_array(params["weight_hh"], "weight_hh" + suffix, ndim=2, dims=f"({rows}, H)")
    H = w_hh.shape[1]
    if H < 1:
        raise ValueError(f"weight_hh{suffix}: expected a hidden size H >= 1 (its columns), got shape {w_hh.shape}")
    checks.same_shape(w_hh, "weight_hh" + suffix, (gates * H, H), f"({rows}, H)", f"hidden size H = {H}, its columns")
    checks.same_dtype(w_hh, "weight_hh" + suffix, dtype, f"the dtype of {what}")
    w_ih = checks.float_array(params["weight_ih"], "weight_ih" + suffix, ndim=2, dims=f"({rows}, I)")
    checks.same_shape(
        w_ih, "weight_ih" + suffix, (gates * H, input_size), f"({rows}, I)",
        f"hidden size H = {H} from weight_hh, I = {input_size} from {what}",
    )
    checks.same_dtype(w_ih, "weight_ih" + suffix, dtype, f"the dtype of {what}")
    for name in PARAM_NAMES:
        value = params.get(name)
        if name.startswith("bias") and value is not None:
            checks.float_array(value, name + suffix, ndim=1, dims=f"({rows},)")
            checks.same_shape(value, name + suffix, (gates * H,), f"({rows},)", f"hidden size H = {H} from weight_hh")
            checks.same_dtype(value, name + suffix, dtype, f"the dtype of {what}")
        if value is not None:
            checks.finite(value, name + suffix)
    return H


def check_x(x, name: str = "x") -> np.ndarray:
    x = checks.float_array(x, name, ndim=3, dims="(B, T, I)")
    checks.nonempty_time(x.shape[1], name)
    checks.finite(x, name)
    return x


def check_state(s, name: str, shape: tuple, dims: str, dtype, like: str):
    """An initial state (or its cotangent): None, or exactly ``shape`` and ``dtype``."""
    if s is None:
        return None
    s = checks.float_array(s, name, ndim=len(shape), dims=dims)
    checks.same_shape(s, name, shape, dims, like)
    checks.same_dtype(s, name, dtype, "the dtype of x")
    checks.finite(s, name)
    return s


def check_sequence(x, states: dict, params: dict, gates: int):
    """Validate a one-layer sequence call: ``x`` (B, T, I), ``states`` name -> (B, H) or None.

    Returns ``(x, states, H)`` with the states zero-filled where None was given.
    """
    x = check_x(x)
    B, T, I = x.shape
    H = check_params(params, gates, I, x.dtype)
    filled = {}
    for name, s in states.items():
        s = check_state(s, name, (B, H), "(B, H)", x.dtype, f"batch B = {B} from x, hidden size H = {H} from weight_hh")
        filled[name] = np.zeros((B, H), x.dtype) if s is None else s
    return x, filled, H


def check_step(x_t, state: tuple, params: dict, gates: int, state_names: tuple):
    """Validate a single step: ``x_t`` (B, I), ``state`` a tuple of (B, H) arrays."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, I)")
    checks.finite(x_t, "x_t")
    B, I = x_t.shape
    H = check_params(params, gates, I, x_t.dtype, what="x_t")
    if not isinstance(state, tuple) or len(state) != len(state_names):
        raise ValueError(f"state: expected a tuple ({', '.join(state_names)}), got {type(state).__name__}")
    for name, s in zip(state_names, state):
        if s is None:
            raise ValueError(f"{name}: expected an array (B, H), got None (pass zeros for a zero state)")
        check_state(s, name, (B, H), "(B, H)", x_t.dtype, f"batch B = {B} from x_t, hidden size H = {H} from weight_hh")
    return x_t, state


def check_cotangent(d, name: str, shape: tuple, dims: str, dtype, of: str):
    """The cotangent ``name`` of the output ``of``: None (zero) or exactly its shape and dtype."""
    if d is None:
        return np.zeros(shape, dtype)
    d = checks.float_array(d, name, ndim=len(shape), dims=dims)
    checks.same_shape(d, name, shape, dims, f"the shape of {of}")
    checks.same_dtype(d, name, dtype, f"the dtype of {of}")
    return d


def check_truncation(truncation):
    """``truncation``: None (full backprop through time) or an integer k >= 1."""
    if truncation is None:
        return None
    return checks.positive_int(truncation, "truncation")
