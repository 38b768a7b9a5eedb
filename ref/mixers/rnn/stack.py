"""Stacked and bidirectional RNNs over any cell, as ``torch.nn.RNN/LSTM/GRU(num_layers=L,
bidirectional=..., batch_first=True)``.

Layer l reads the output of layer l - 1 (layer 0 reads x). A bidirectional layer runs two
independent cells, one forwards over time and one over the reversed sequence, and concatenates
their outputs on the feature axis:

    y^fwd = cell(x_0, ..., x_{T-1})                                         (1)
    y^rev = reverse(cell'(x_{T-1}, ..., x_0))                                 (2)
    y = [y^fwd, y^rev]        (B, T, 2H): the input of the next layer       (3)

Backward: the layers in reverse order; a bidirectional layer splits dy into its two halves,
runs BPTT for each direction (the reverse one in its own, reversed, time) and sums the two
gradients of its input.

Parameters use PyTorch's ``state_dict`` names: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``, with the suffix ``_reverse`` for the reverse direction
(biases may be absent). States are stacked as PyTorch's ``h_n``: (L * D, B, H), entry
``l * D + d`` for layer l and direction d (0 forward, 1 reverse); the LSTM's state is
``(h, c)``, the others' ``(h,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from ref import checks
from ref.mixers.rnn._inputs import check_cotangent, check_params, check_truncation, check_x
from ref.mixers.rnn._sequence import scan, scan_backward
from ref.mixers.rnn.gru import _step as _gru_step, _step_backward as _gru_step_backward
from ref.mixers.rnn.lstm import _step as _lstm_step, _step_backward as _lstm_step_backward
from ref.mixers.rnn.rnn import _step as _rnn_step, _step_backward as _rnn_step_backward


@dataclass(frozen=True)
class Cell:
    """A recurrent cell: its gate blocks per weight row, the names of its state, its step pair."""

    gates: int
    state_names: tuple
    step: Callable
    step_backward: Callable


CELLS = {  # PyTorch's mode names
    "rnn_tanh": Cell(1, ("h",), partial(_rnn_step, nonlinearity="tanh"), _rnn_step_backward),
    "rnn_relu": Cell(1, ("h",), partial(_rnn_step, nonlinearity="relu"), _rnn_step_backward),
    "lstm": Cell(4, ("h", "c"), _lstm_step, _lstm_step_backward),
    "gru": Cell(3, ("h",), _gru_step, _gru_step_backward),
}


_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class StackCache:
    cell: Cell
    caches: list  # caches[layer][direction]: the step caches of that scan
    num_layers: int
    directions: int
    x_shape: tuple  # (B, T, I)
    hidden_size: int
    param_names: tuple  # the keys of params, for the gradients
    has_state0: bool
    dtype: np.dtype


def param_names(num_layers: int, bidirectional: bool) -> list[str]:
    """PyTorch's parameter names, layer by layer: weight_ih_l0, weight_hh_l0, bias_ih_l0, ..."""
    suffixes = ("", "_reverse") if bidirectional else ("",)
    return [f"{p}_l{layer}{s}" for layer in range(num_layers) for s in suffixes for p in _KINDS]


def _layer_params(params, layer, suffix):
    return {k: params.get(f"{k}_l{layer}{suffix}") for k in _KINDS}


def stacked_rnn(mode, x, params, state0=None, *, num_layers=1, bidirectional=False):
    """Run ``num_layers`` layers of the cell ``mode`` ("rnn_tanh", "rnn_relu", "lstm", "gru").

    x (B, T, I); ``params`` a dict in PyTorch's names (see the module docstring); ``state0`` None
    (zeros) or a tuple of arrays (L * D, B, H): ``(h0,)``, or ``(h0, c0)`` for the LSTM.
    Returns ``y`` (B, T, D * H) (the last layer's outputs), the final state (a tuple like
    ``state0``) and the cache.
    """
    cell = CELLS[checks.one_of(mode, "mode", tuple(CELLS))]
    num_layers = checks.positive_int(num_layers, "num_layers")
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional: expected True or False, got {bidirectional!r}")
    D = 2 if bidirectional else 1
    x = check_x(x)
    B, T, I = x.shape
    if not isinstance(params, dict):
        raise ValueError(f"params: expected a dict of arrays by PyTorch's names, got {type(params).__name__}")
    known = param_names(num_layers, bidirectional)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"params: unexpected entry {unknown[0]!r} for num_layers = {num_layers}, bidirectional = {bidirectional} "
            f"(expected names like {known[0]!r})"
        )
    H = None
    for layer in range(num_layers):
        for d, suffix in enumerate(("", "_reverse")[:D]):
            width, what = (I, "x") if layer == 0 else (D * H, f"the output of layer {layer - 1} (D * H)")
            h = check_params(_layer_params(params, layer, suffix), cell.gates, width, x.dtype,
                             suffix=f"_l{layer}{suffix}", what=what)
            if H is None:
                H = h
            elif h != H:
                raise ValueError(
                    f"weight_hh_l{layer}{suffix}: expected hidden size H = {H} (from weight_hh_l0), got {h}"
                )
    shape = (num_layers * D, B, H)
    if state0 is not None:
        if not isinstance(state0, tuple) or len(state0) != len(cell.state_names):
            names = ", ".join(n + "0" for n in cell.state_names)
            given = f"a tuple of length {len(state0)}" if isinstance(state0, tuple) else type(state0).__name__
            raise ValueError(f"state0: expected None or a tuple ({names}) for mode {mode!r}, got {given}")
        for name, s in zip(cell.state_names, state0):
            s = checks.float_array(s, name + "0", ndim=3, dims="(L * D, B, H)")
            checks.same_shape(s, name + "0", shape, "(L * D, B, H)", "num_layers * directions, batch of x, hidden size")
            checks.same_dtype(s, name + "0", x.dtype, "the dtype of x")
            checks.finite(s, name + "0")
    zero = np.zeros(shape, x.dtype)
    state0_arrays = state0 if state0 is not None else tuple(zero for _ in cell.state_names)

    inp = x  # (B, T, I) for layer 0, then (B, T, D H)
    finals = [np.empty(shape, x.dtype) for _ in cell.state_names]
    caches = []
    for layer in range(num_layers):
        outs, layer_caches = [], []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            p = _layer_params(params, layer, suffix)
            s0 = tuple(s[layer * D + d] for s in state0_arrays)  # (B, H) each
            xin = inp if d == 0 else inp[:, ::-1]  # (2): the reverse direction reads time backwards
            y_d, sT, step_caches = scan(cell.step, xin, s0, p)  # (1), (2)
            outs.append(y_d if d == 0 else y_d[:, ::-1])  # (2): back in the original time order
            for f, s in zip(finals, sT):
                f[layer * D + d] = s
            layer_caches.append(step_caches)
        inp = np.concatenate(outs, axis=2)  # (3): (B, T, D H)
        caches.append(layer_caches)
    cache = StackCache(cell, caches, num_layers, D, x.shape, H, tuple(params), state0 is not None, x.dtype)
    return inp, tuple(finals), cache


def stacked_rnn_backward(dy, dstate, cache: StackCache, *, truncation=None):
    """Gradients ``(dx, dstate0, dparams)`` of :func:`stacked_rnn`.

    ``dy`` (B, T, D * H) or None; ``dstate`` None or a tuple like the final state, entries
    (L * D, B, H) or None (zero). ``dstate0`` is None when ``state0`` was; ``dparams`` has the keys
    of ``params``. ``truncation=k`` truncates BPTT in every layer and direction (each direction
    counts its segments in its own processing order).
    """
    cell, D, L, H = cache.cell, cache.directions, cache.num_layers, cache.hidden_size
    B, T, _ = cache.x_shape
    dy = check_cotangent(dy, "dy", (B, T, D * H), "(B, T, D * H)", cache.dtype, "y")
    n = len(cell.state_names)
    if dstate is None:
        dstate = (None,) * n
    if not isinstance(dstate, tuple) or len(dstate) != n:
        raise ValueError(f"dstate: expected None or a tuple of {n} arrays (L * D, B, H), got {type(dstate).__name__}")
    dstate = tuple(
        check_cotangent(d, "d" + name + "T", (L * D, B, H), "(L * D, B, H)", cache.dtype, "the final state")
        for name, d in zip(cell.state_names, dstate)
    )
    truncation = check_truncation(truncation)

    dparams = {}
    dstate0 = [np.zeros((L * D, B, H), cache.dtype) for _ in range(n)]
    dinp = dy  # (B, T, D H): the gradient of the current layer's output
    for layer in range(L - 1, -1, -1):
        dxs = []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            dy_d = dinp[:, :, d * H:(d + 1) * H]  # (3): this direction's half, (B, T, H)
            if d == 1:
                dy_d = dy_d[:, ::-1]  # (2): into the reverse direction's own time
            dsT = tuple(s[layer * D + d] for s in dstate)
            dx_d, ds0, dp = scan_backward(cell.step_backward, dy_d, dsT, cache.caches[layer][d], truncation)
            dxs.append(dx_d if d == 0 else dx_d[:, ::-1])
            for acc, s in zip(dstate0, ds0):
                acc[layer * D + d] = s
            for k, v in dp.items():
                dparams[f"{k}_l{layer}{suffix}"] = v
        dinp = dxs[0] if D == 1 else dxs[0] + dxs[1]  # both directions read the same input
    dparams = {k: dparams[k] for k in cache.param_names}
    return dinp, (tuple(dstate0) if cache.has_state0 else None), dparams
