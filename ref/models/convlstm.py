"""ConvLSTM (Shi et al., "Convolutional LSTM Network", NeurIPS 2015): an LSTM whose state is an
image, its matrix products replaced by convolutions; the baseline of the ConvS5 paper (Smith et al.,
arXiv 2310.19694), with backpropagation through time written out by hand.

The cell (B batch, H, W image size, X input features, Q hidden channels, k odd, 'same' padding;
[a, b] the concatenation along channels; Shi et al.'s peephole terms are left out, as in most
modern implementations and in the NVlabs ConvSSM baseline):

    [z_i, z_f, z_o, z_g] = W * [x_t, h_{t-1}] + b            (one k x k conv, X + Q -> 4Q)      (1)
    i, f, o = σ(z_i), σ(z_f), σ(z_o),   g = tanh(z_g)                                           (2)
    c_t = f ⊙ c_{t-1} + i ⊙ g                                                                   (3)
    h_t = o ⊙ tanh(c_t)                                                                         (4)

Each step needs h_{t-1}: the convolution of (1) cannot run for all frames at once, so training is
a loop over time (the paper's point: "their sequential computation makes them slow to train").

Backward through time, with dh_t the gradient arriving from the output at t plus the one carried
back from step t + 1, and dc carried back the same way:

    dc_t = dc_{t+1 -> t} + dh_t ⊙ o ⊙ (1 - tanh²(c_t))                                         (5)
    do = dh_t ⊙ tanh(c_t),  di = dc_t ⊙ g,  dg = dc_t ⊙ i,  df = dc_t ⊙ c_{t-1}
    dz_{i,f,o} = d{i,f,o} ⊙ σ (1 - σ),  dz_g = dg ⊙ (1 - g²)
    [dx_t, dh_{t-1}] = conv2d_backward(dz) (and dW, db summed over t),  dc_{t-1} = dc_t ⊙ f      (6)

The next-frame model around the cell (as ``ref.models.convs5``, the same encoder and decoder):
u_0 = W_enc * x_t + b_enc, u_l = ConvLSTM_l(u_{l-1}) (the hidden states h_t), z_t = W_dec * u_L +
b_dec. Frames x (B, T, H, W, C) channels last. Parameters::

    enc    {W (D, C, k_enc, k_enc), b (D,)}
    layers [{W (4Q, X + Q, k, k), b (4Q,)}]     X = D for the first layer, Q after; gates i, f, o, g
    dec    {W (C, Q, k_dec, k_dec), b (C,)}

Initialisation: He-normal convolutions, zero biases except the forget gate's, 1 (Jozefowicz et al.,
2015), so that the cell starts by remembering.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.models.convs5 import init_frame_conv, frame_conv, frame_conv_backward
from ref.nn import conv2d, conv2d_backward

__all__ = ["init_convlstm_model", "convlstm_layer", "convlstm_layer_backward", "convlstm_model",
           "convlstm_model_backward", "convlstm_model_step"]

FORGET_BIAS = 1.0


def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))  # σ(x), stable for large |x|


def init_convlstm_model(rng: np.random.Generator, channels: int = 1, D: int = 8, hidden: int = 8, n_layers: int = 1,
                        *, k: int = 3, k_enc: int = 3, k_dec: int = 3, dtype=np.float64) -> dict:
    """Parameters of the next-frame ConvLSTM: C = ``channels``, D encoder features, Q = ``hidden``."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    C, D, Q, L = (checks.positive_int(v, n) for v, n in
                  ((channels, "channels"), (D, "D"), (hidden, "hidden"), (n_layers, "n_layers")))
    for kk, name in ((k, "k"), (k_enc, "k_enc"), (k_dec, "k_dec")):
        if checks.positive_int(kk, name) % 2 == 0:
            raise ValueError(f"{name}: expected an odd kernel size (same padding), got {kk}")
    layers = []
    for layer in range(L):
        cell = init_frame_conv(rng, 4 * Q, (D if layer == 0 else Q) + Q, k, dtype)
        cell["b"][Q : 2 * Q] = FORGET_BIAS
        layers.append(cell)
    enc, dec = init_frame_conv(rng, D, C, k_enc, dtype), init_frame_conv(rng, C, Q, k_dec, dtype)
    return {"enc": enc, "layers": layers, "dec": dec}


def _cell(cell, x_img, h, c):
    """One step (1)-(4) on images (NCHW): x_img (B, X, H, W), h and c (B, Q, H, W)."""
    Q = h.shape[1]
    inp = np.concatenate([x_img, h], axis=1)  # [x_t, h_{t-1}]: (B, X + Q, H, W)
    z, c_conv = conv2d(inp, cell["W"], cell["b"], padding=cell["W"].shape[2] // 2)  # (1): (B, 4Q, H, W)
    i, f, o = _sigmoid(z[:, :Q]), _sigmoid(z[:, Q : 2 * Q]), _sigmoid(z[:, 2 * Q : 3 * Q])  # (2)
    g = np.tanh(z[:, 3 * Q :])  # (2)
    c_new = f * c + i * g  # (3)
    tc = np.tanh(c_new)
    h_new = o * tc  # (4)
    return h_new, c_new, (c_conv, i, f, o, g, c, tc)


def convlstm_layer(cell: dict, u: np.ndarray):
    """The hidden states h (B, T, H, W, Q) of one ConvLSTM layer over u (B, T, H, W, X), from zero
    states; a loop over time. Returns ``(h, cache)``."""
    Bn, T, H, W, _ = u.shape
    Q = cell["W"].shape[0] // 4
    h = np.zeros((Bn, Q, H, W), u.dtype)
    c = np.zeros_like(h)
    out = np.empty((Bn, T, H, W, Q), u.dtype)
    steps = []
    for t in range(T):
        x_img = np.ascontiguousarray(u[:, t].transpose(0, 3, 1, 2))  # (B, X, H, W)
        h, c, step = _cell(cell, x_img, h, c)
        out[:, t] = h.transpose(0, 2, 3, 1)
        steps.append(step)
    return out, (steps, u.shape)


def convlstm_layer_backward(cell: dict, cache, dh_out: np.ndarray):
    """Backward through time (5)-(6). Returns ``(du (B, T, H, W, X), {"W": dW, "b": db})``."""
    steps, u_shape = cache
    Bn, T, H, W, X = u_shape
    Q = cell["W"].shape[0] // 4
    du = np.empty(u_shape, dh_out.dtype)
    dW = np.zeros_like(cell["W"])
    db = np.zeros_like(cell["b"])
    dh_next = np.zeros((Bn, Q, H, W), dh_out.dtype)  # gradient reaching h_t from step t + 1
    dc_next = np.zeros_like(dh_next)  # gradient reaching c_t from step t + 1
    for t in range(T - 1, -1, -1):
        c_conv, i, f, o, g, c_prev, tc = steps[t]
        dh = dh_out[:, t].transpose(0, 3, 1, 2) + dh_next  # (B, Q, H, W)
        dc = dc_next + dh * o * (1 - tc**2)  # (5)
        dz = np.concatenate(
            [
                dc * g * i * (1 - i),  # dz_i
                dc * c_prev * f * (1 - f),  # dz_f
                dh * tc * o * (1 - o),  # dz_o
                dc * i * (1 - g**2),  # dz_g
            ],
            axis=1,
        )  # (B, 4Q, H, W)
        dinp, dW_t, db_t = conv2d_backward(dz, c_conv)  # (6): (B, X + Q, H, W)
        dW += dW_t
        db += db_t
        du[:, t] = dinp[:, :X].transpose(0, 2, 3, 1)
        dh_next = dinp[:, X:]
        dc_next = dc * f  # (6)
    return du, {"W": dW, "b": db}


def _check(params, x):
    if not isinstance(params, dict) or set(params) != {"enc", "layers", "dec"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a ConvLSTM model {{'enc', 'layers', 'dec'}}, got {got}")
    C = params["enc"]["W"].shape[1]
    x = checks.float_array(x, "x", ndim=5, dims="(B, T, H, W, C)")
    if x.shape[4] != C:
        raise ValueError(f"x: expected shape (B, T, H, W, C) with C = {C} (axis 1 of enc/W), got {x.shape}")
    checks.same_dtype(x, "x", params["enc"]["W"].dtype, "the dtype of the parameters")
    checks.nonempty_time(x.shape[1], "x")
    return x


def convlstm_model(params: dict, x: np.ndarray):
    """Logits (B, T, H, W, C) for frames x (B, T, H, W, C). Returns ``(logits, cache)``."""
    x = _check(params, x)
    u, c_enc = frame_conv(x, params["enc"])  # (B, T, H, W, D)
    c_layers = []
    for cell in params["layers"]:
        u, c = convlstm_layer(cell, u)  # (B, T, H, W, Q)
        c_layers.append(c)
    z, c_dec = frame_conv(u, params["dec"])
    return z, (c_enc, c_layers, c_dec)


def convlstm_model_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``(dx, grads)`` with ``grads`` shaped like ``params``."""
    c_enc, c_layers, c_dec = cache
    du, g_dec = frame_conv_backward(dlogits, c_dec)
    g_layers = [None] * len(c_layers)
    for i in range(len(c_layers) - 1, -1, -1):
        du, g_layers[i] = convlstm_layer_backward(params["layers"][i], c_layers[i], du)
    dx, g_enc = frame_conv_backward(du, c_enc)
    return dx, {"enc": g_enc, "layers": g_layers, "dec": g_dec}


def convlstm_model_step(params: dict, x_t: np.ndarray, states: list | None = None):
    """Decode one frame: x_t (B, H, W, C) -> ``(logits_t, states)``, one (h, c) pair (B, Q, H, W) per
    layer (None at the start). Equals :func:`convlstm_model` fed the frames one at a time."""
    x_t = checks.float_array(x_t, "x_t", ndim=4, dims="(B, H, W, C)")
    _check(params, x_t[:, None])
    states = [None] * len(params["layers"]) if states is None else list(states)
    u, _ = frame_conv(x_t, params["enc"])  # (B, H, W, D)
    x_img = np.ascontiguousarray(u.transpose(0, 3, 1, 2))  # (B, D, H, W)
    for i, cell in enumerate(params["layers"]):
        Q = cell["W"].shape[0] // 4
        if states[i] is None:
            zero = np.zeros((x_img.shape[0], Q) + x_img.shape[2:], x_img.dtype)
            states[i] = (zero, zero)
        h, c, _ = _cell(cell, x_img, *states[i])
        states[i] = (h, c)
        x_img = h
    z, _ = frame_conv(np.ascontiguousarray(x_img.transpose(0, 2, 3, 1)), params["dec"])
    return z, states
