"""A recurrent network with a linear head, for the RNN review lesson (Lipton, Berkowitz & Elkan,
"A Critical Review of Recurrent Neural Networks for Sequence Learning", arXiv 1506.00019).

The recurrent part is ``ref.mixers.rnn.stacked_rnn`` (vanilla RNN, LSTM or GRU, PyTorch's
conventions, one or both directions); the head reads it out:

    y = stacked_rnn(mode, x)                         (B, T, D H), D = 2 if bidirectional else 1
    readout "last":  out = y[:, -1] W + b            (B, O)      one answer per sequence
    readout "all":   out_t = y[:, t] W + b           (B, T, O)   one answer per step

With a bidirectional layer, y_t = [h_t, z_t] (h the forward pass, z the backward one) and the
"all" readout is the review's BRNN output, eq. (16): ŷ_t = W_hy h_t + W_zy z_t + b_y (W stacks
W_hy over W_zy), before the softmax of the loss.

Parameters::

    rnn   {weight_ih_l0 (G H, I), weight_hh_l0 (G H, H), bias_ih_l0, bias_hh_l0 (G H,), and the
           same with the suffix _reverse when bidirectional}        G = 1 (rnn), 4 (lstm), 3 (gru)
    head  {W (D H, O), b (O,)}

Initialisation is PyTorch's default (``nn.RNN/LSTM/GRU`` and ``nn.Linear``): every weight and bias
uniform in (-1/sqrt(fan), 1/sqrt(fan)), fan = H for the recurrent layer and D H for the head, so
that what the lesson finds is what a PyTorch user with default settings would find.

Besides the forward/backward pair: two losses with their gradients (mean squared error for
regression, cross-entropy per step for tagging), and :func:`hidden_state_gradients`, which runs
backpropagation through time one step at a time with the cells' step API and records the total
gradient dL/dh_t at every step: the quantity whose decay with distance is the vanishing gradient.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.rnn import CELLS, param_names, stacked_rnn, stacked_rnn_backward
from ref.nn import cross_entropy, cross_entropy_backward, linear, linear_backward, mse, mse_backward

__all__ = [
    "READOUTS",
    "init_rnn_model",
    "rnn_model",
    "rnn_model_backward",
    "regression_loss_and_grads",
    "tagging_loss_and_grads",
    "hidden_state_gradients",
]

READOUTS = ("last", "all")


def _config(params):
    """(num_layers, bidirectional) from the names of the recurrent parameters."""
    if not isinstance(params, dict) or set(params) != {"rnn", "head"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with the keys 'head' and 'rnn' (init_rnn_model), got {got}")
    names = params["rnn"]
    if not isinstance(names, dict) or "weight_ih_l0" not in names:
        raise ValueError("params['rnn']: expected a dict in PyTorch's names (weight_ih_l0, ...), see init_rnn_model")
    num_layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in names)
    return num_layers, "weight_ih_l0_reverse" in names


def init_rnn_model(rng: np.random.Generator, mode: str, input_size: int, hidden_size: int, output_size: int, *,
                   bidirectional: bool = False, num_layers: int = 1, dtype=np.float64) -> dict:
    """Parameters of the model, PyTorch's default initialisation (module docstring)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    cell = CELLS[checks.one_of(mode, "mode", tuple(CELLS))]
    I, H, O, L = (checks.positive_int(v, n) for v, n in ((input_size, "input_size"), (hidden_size, "hidden_size"),
                                                         (output_size, "output_size"), (num_layers, "num_layers")))
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional: expected True or False, got {bidirectional!r}")
    D = 2 if bidirectional else 1
    bound = 1.0 / np.sqrt(H)
    rnn = {}
    for name in param_names(L, bidirectional):
        kind, layer = name.split("_l")[0], int(name.split("_l")[1].split("_")[0])
        width = I if layer == 0 else D * H
        shape = {"weight_ih": (cell.gates * H, width), "weight_hh": (cell.gates * H, H)}.get(kind, (cell.gates * H,))
        rnn[name] = rng.uniform(-bound, bound, shape).astype(dtype)
    hb = 1.0 / np.sqrt(D * H)
    head = {"W": rng.uniform(-hb, hb, (D * H, O)).astype(dtype), "b": rng.uniform(-hb, hb, (O,)).astype(dtype)}
    return {"rnn": rnn, "head": head}


def rnn_model(params: dict, x: np.ndarray, mode: str, *, readout: str = "last"):
    """Forward. x (B, T, I); returns ``out`` ((B, O) for readout "last", (B, T, O) for "all") and
    the cache."""
    num_layers, bidirectional = _config(params)
    readout = checks.one_of(readout, "readout", READOUTS)
    y, _, rnn_cache = stacked_rnn(mode, x, params["rnn"], num_layers=num_layers, bidirectional=bidirectional)
    features = y[:, -1] if readout == "last" else y  # (B, D H) or (B, T, D H)
    out, head_cache = linear(features, params["head"]["W"], params["head"]["b"])
    return out, (rnn_cache, head_cache, readout, y.shape)


def rnn_model_backward(params: dict, cache, dout: np.ndarray, *, truncation: int | None = None):
    """Backward: ``(dx, grads)``, grads shaped like params. ``truncation=k``: truncated backprop
    through time (``ref.mixers.rnn``: the gradient carried through the state is cut every k steps)."""
    rnn_cache, head_cache, readout, y_shape = cache
    dfeatures, dW, db = linear_backward(dout, head_cache)
    if readout == "last":
        dy = np.zeros(y_shape, dfeatures.dtype)  # (B, T, D H): only the last step is read
        dy[:, -1] = dfeatures
    else:
        dy = dfeatures
    dx, _, drnn = stacked_rnn_backward(dy, None, rnn_cache, truncation=truncation)
    return dx, {"rnn": drnn, "head": {"W": dW, "b": db}}


def regression_loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray, mode: str, *,
                              truncation: int | None = None):
    """Mean squared error of the "last" readout against y (B, O): ``(loss, grads)``."""
    out, cache = rnn_model(params, x, mode, readout="last")
    loss, loss_cache = mse(out, y)
    dout, _ = mse_backward(1.0, loss_cache)
    _, grads = rnn_model_backward(params, cache, dout, truncation=truncation)
    return float(loss), grads


def tagging_loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, mode: str, *,
                           truncation: int | None = None):
    """Cross-entropy of the "all" readout (logits (B, T, O)) against labels (B, T) (-100: no
    label), averaged over the labelled steps: ``(loss, grads)``."""
    logits, cache = rnn_model(params, x, mode, readout="all")
    loss, loss_cache = cross_entropy(logits, labels)
    dlogits, _ = cross_entropy_backward(1.0, loss_cache)
    _, grads = rnn_model_backward(params, cache, dlogits, truncation=truncation)
    return float(loss), grads


def hidden_state_gradients(params: dict, x: np.ndarray, dout: np.ndarray, mode: str, *,
                           truncation: int | None = None):
    """dL/dh_t for every step t of a one-layer, one-direction model with the "last" readout and
    L = sum(dout * out): backprop through time written out with the cells' step functions.

    Returns ``g`` (B, T, H) with g[:, t] = dL/dh_t, the *total* derivative (through every later
    step), and for the LSTM also ``gc`` (B, T, H), the gradient of the state (h_t, c_t) taken as a
    pair: gc[:, t] = dL/dc_t with h_t held fixed, the error carried back into step t along the
    cell (zero at t = T - 1, since the head reads h only); None for the other cells. With
    ``truncation=k`` the carried gradient is cut where ``stacked_rnn_backward`` cuts it.

    The recurrence it runs is

        g_{T-1} = dout W^T,     (g_{t-1}, gc_{t-1}) = step_backward(0, (g_t, gc_t), cache_t)[1]

    i.e. g_{t-1} = J_t^T g_t with J_t = dh_t/dh_{t-1} the Jacobian of one step: the product of
    Jacobians whose norm decides whether gradients vanish.
    """
    num_layers, bidirectional = _config(params)
    if num_layers != 1 or bidirectional:
        raise ValueError("params: hidden_state_gradients expects one layer and one direction "
                         f"(got num_layers = {num_layers}, bidirectional = {bidirectional})")
    cell = CELLS[checks.one_of(mode, "mode", tuple(CELLS))]
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, I)")
    truncation = None if truncation is None else checks.positive_int(truncation, "truncation")
    B, T, _ = x.shape
    p = {k: params["rnn"].get(f"{k}_l0") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    H = p["weight_hh"].shape[1]
    state = tuple(np.zeros((B, H), x.dtype) for _ in cell.state_names)
    caches = []
    for t in range(T):  # the forward pass, one step at a time
        _, state, c = cell.step(x[:, t], state, p)
        caches.append(c)
    dout = checks.float_array(dout, "dout", ndim=2, dims="(B, O)")
    W = params["head"]["W"]
    if dout.shape != (B, W.shape[1]):
        raise ValueError(f"dout: expected shape (B, O) = {(B, W.shape[1])}, got {dout.shape}")
    g = np.zeros((B, T, H), x.dtype)
    gc = np.zeros((B, T, H), x.dtype) if len(cell.state_names) == 2 else None
    dstate = tuple(np.zeros((B, H), x.dtype) for _ in cell.state_names)
    dstate = (dout @ W.T,) + dstate[1:]  # dL/dh_{T-1} from the head; dL/dc_{T-1} = 0 (the head reads h)
    zero = np.zeros((B, H), x.dtype)
    for t in range(T - 1, -1, -1):
        g[:, t] = dstate[0]
        if gc is not None:
            gc[:, t] = dstate[1]
        _, dstate, _ = cell.step_backward(zero, dstate, caches[t])  # g_{t-1} = J_t^T g_t
        if truncation is not None and t > 0 and t % truncation == 0:
            dstate = tuple(np.zeros_like(d) for d in dstate)  # as stacked_rnn_backward: cut here
    return g, gc
