"""LRCN for activity recognition (Donahue et al., "Long-term Recurrent Convolutional Networks for
Visual Recognition and Description", arXiv 1411.4389), and the single-frame CNN baseline it is
compared with; backward passes written out by hand.

LRCN (the paper's Section 3 and its activity-recognition instantiation, Section 4; B batch,
T frames, C channels, H x W pixels, D feature size, Q LSTM hidden size, K classes):

    φ_t = φ_V(x_t)                 the same CNN applied to every frame x_t (B, C, H, W) -> (B, D)   (1)
    h_t, c_t = LSTM(φ_t, h_{t-1}, c_{t-1})            (the LSTM of ``ref.mixers.rnn.lstm``)        (2)
    z_t = h_t W_y + b_y            per-step class scores (B, K)                                      (3)
    P(y | x_1..x_T) = (1/T) Σ_t softmax(z_t)          the video's prediction averages the steps    (4)

and it is trained with the video's label at every time step: loss = (1/T) Σ_t CE(z_t, y).

The single-frame baseline drops the recurrence: z_t = φ_V(x_t) W_y + b_y, the same averaging (4)
and the same per-step loss. Each of its steps sees one frame; averaging over frames is
order-invariant, so it cannot tell a video from the same video played backwards.

The per-frame CNN φ_V (small stand-in for the paper's CaffeNet; one 'same' k x k convolution, a
2 x 2 max pool, one fully connected layer):

    a = relu(conv2d(x_t, W_conv) + b_conv)                          (B, F, H, W)                  (5)
    p = max_pool_2x2(a)                                             (B, F, H/2, W/2)
    φ_t = relu(flatten(p) W_fc + b_fc)                              (B, D)

Every frame goes through the same weights, so the T frames of B videos are one batch of B T
images: the CNN runs once on (B T, C, H, W), and its parameter gradients are summed over frames
and videos by the batched backward. Backward, in reverse order: (3) by ``linear_backward``, (2) by
``lstm_backward`` (backprop through time), (5) by relu / max-pool / conv2d backward.

Parameters (nested dicts)::

    cnn   {conv {W (F, C, k, k), b (F,)},  fc {W (F (H/2)(W/2), D), b (D,)}}
    lstm  {weight_ih (4Q, D), weight_hh (4Q, Q), bias_ih (4Q,), bias_hh (4Q,)}  PyTorch's gates i, f, g, o
    head  {W (Q, K), b (K,)}                       LRCN
    head  {W (D, K), b (K,)}                       single-frame baseline

Frames (B, T, C, H, W); logits (B, T, K); labels (B,) integers in [0, K).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.mixers.rnn import lstm, lstm_backward
from ref.nn import (
    conv2d,
    conv2d_backward,
    cross_entropy,
    cross_entropy_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    softmax,
)

__all__ = [
    "init_frame_cnn",
    "init_lrcn",
    "init_single_frame",
    "frame_cnn",
    "frame_cnn_backward",
    "lrcn",
    "lrcn_backward",
    "single_frame",
    "single_frame_backward",
    "video_probabilities",
    "per_step_loss",
    "lrcn_loss_and_grads",
    "single_frame_loss_and_grads",
]

FORGET_BIAS = 1.0


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")


def init_frame_cnn(rng: np.random.Generator, channels: int = 1, size: int = 12, conv_channels: int = 8,
                   features: int = 32, *, k: int = 3, dtype=np.float64) -> dict:
    """The per-frame CNN φ_V (5) for ``size`` x ``size`` frames: He-normal weights, zero biases."""
    _check_rng(rng)
    C, S, F, D = (checks.positive_int(v, n) for v, n in
                  ((channels, "channels"), (size, "size"), (conv_channels, "conv_channels"), (features, "features")))
    if checks.positive_int(k, "k") % 2 == 0:
        raise ValueError(f"k: expected an odd kernel size ('same' padding), got {k}")
    if S < 2:
        raise ValueError(f"size: expected at least 2 (one 2 x 2 pooling window), got {S}")
    flat = F * (S // 2) ** 2
    conv = {"W": (rng.standard_normal((F, C, k, k)) * np.sqrt(2.0 / (C * k * k))).astype(dtype),
            "b": np.zeros(F, dtype)}
    fc = {"W": (rng.standard_normal((flat, D)) * np.sqrt(2.0 / flat)).astype(dtype), "b": np.zeros(D, dtype)}
    return {"conv": conv, "fc": fc}


def _head(rng, n_in, K, dtype):
    return {"W": (rng.standard_normal((n_in, K)) / np.sqrt(n_in)).astype(dtype), "b": np.zeros(K, dtype)}


def init_lrcn(rng: np.random.Generator, channels: int = 1, size: int = 12, n_classes: int = 4, *,
              conv_channels: int = 8, features: int = 32, hidden: int = 32, k: int = 3, dtype=np.float64) -> dict:
    """LRCN parameters: CNN (5), LSTM (2) (PyTorch's uniform ±1/√Q init, forget-gate bias 1), head (3)."""
    cnn = init_frame_cnn(rng, channels, size, conv_channels, features, k=k, dtype=dtype)
    D, Q, K = features, checks.positive_int(hidden, "hidden"), checks.positive_int(n_classes, "n_classes")
    bound = 1 / np.sqrt(Q)
    lstm_p = {
        "weight_ih": rng.uniform(-bound, bound, (4 * Q, D)).astype(dtype),
        "weight_hh": rng.uniform(-bound, bound, (4 * Q, Q)).astype(dtype),
        "bias_ih": np.zeros(4 * Q, dtype),
        "bias_hh": np.zeros(4 * Q, dtype),
    }
    lstm_p["bias_ih"][Q : 2 * Q] = FORGET_BIAS  # gate rows i, f, g, o: start by remembering
    return {"cnn": cnn, "lstm": lstm_p, "head": _head(rng, Q, K, dtype)}


def init_single_frame(rng: np.random.Generator, channels: int = 1, size: int = 12, n_classes: int = 4, *,
                      conv_channels: int = 8, features: int = 32, k: int = 3, dtype=np.float64) -> dict:
    """Single-frame baseline parameters: the same CNN (5) and a linear classifier on φ_t."""
    cnn = init_frame_cnn(rng, channels, size, conv_channels, features, k=k, dtype=dtype)
    return {"cnn": cnn, "head": _head(rng, features, checks.positive_int(n_classes, "n_classes"), dtype)}


# ---------------------------------------------------------------- the per-frame CNN


def _check_frames(frames, cnn):
    frames = checks.float_array(frames, "frames", ndim=5, dims="(B, T, C, H, W)")
    W = cnn["conv"]["W"]
    checks.same_dtype(frames, "frames", W.dtype, "the dtype of the parameters")
    B, T, C, H, Wd = frames.shape
    if B < 1 or T < 1:
        raise ValueError(f"frames: expected at least one video and one frame, got shape {frames.shape}")
    if C != W.shape[1]:
        raise ValueError(f"frames: expected C = {W.shape[1]} channels (cnn.conv.W), got shape {frames.shape}")
    flat = W.shape[0] * (H // 2) * (Wd // 2)
    if cnn["fc"]["W"].shape[0] != flat:
        raise ValueError(
            f"frames: expected an image size whose pooled features match cnn.fc.W "
            f"({cnn['fc']['W'].shape[0]} rows), got H x W = {H} x {Wd} ({flat} features)"
        )
    return frames


def frame_cnn(cnn: dict, frames: np.ndarray):
    """φ_V (1), (5) on every frame at once. frames (B, T, C, H, W) -> φ (B, T, D), cache."""
    frames = _check_frames(frames, cnn)
    B, T = frames.shape[:2]
    x = frames.reshape(B * T, *frames.shape[2:])  # (B T, C, H, W): frames of all videos as one batch
    W = cnn["conv"]["W"]
    z, c_conv = conv2d(x, W, cnn["conv"]["b"], padding=W.shape[2] // 2)  # (5): (B T, F, H, W)
    a, c_relu1 = relu(z)
    p, c_pool = max_pool2d(a, kernel_size=2)  # (B T, F, H/2, W/2)
    flat = p.reshape(B * T, -1)  # (B T, F (H/2)(W/2))
    u, c_fc = linear(flat, cnn["fc"]["W"], cnn["fc"]["b"])  # (B T, D)
    phi, c_relu2 = relu(u)
    cache = (B, T, p.shape, c_conv, c_relu1, c_pool, c_fc, c_relu2)
    return phi.reshape(B, T, -1), cache  # (B, T, D)


def frame_cnn_backward(cnn: dict, cache, dphi: np.ndarray):
    """Backward of :func:`frame_cnn`: ``(dframes, dcnn)``, the weight gradients summed over all frames."""
    B, T, p_shape, c_conv, c_relu1, c_pool, c_fc, c_relu2 = cache
    D = cnn["fc"]["W"].shape[1]
    dphi = checks.output_cotangent(dphi, "dphi", (B, T, D), cnn["fc"]["W"].dtype, "(B, T, D)")
    (du,) = relu_backward(dphi.reshape(B * T, D), c_relu2)  # (B T, D)
    dflat, dW_fc, db_fc = linear_backward(du, c_fc)
    (da,) = max_pool2d_backward(dflat.reshape(p_shape), c_pool)  # (B T, F, H, W)
    (dz,) = relu_backward(da, c_relu1)
    dx, dW_conv, db_conv = conv2d_backward(dz, c_conv)  # (B T, C, H, W)
    dframes = dx.reshape(B, T, *dx.shape[1:])  # (B, T, C, H, W)
    return dframes, {"conv": {"W": dW_conv, "b": db_conv}, "fc": {"W": dW_fc, "b": db_fc}}


# ---------------------------------------------------------------- the two models


def lrcn(params: dict, frames: np.ndarray, *, backend: str = "numpy"):
    """LRCN (1)-(3): per-step logits (B, T, K) and the cache. ``backend`` is the LSTM's
    ("numpy" or "numba", see ``ref.mixers.rnn.lstm``)."""
    phi, c_cnn = frame_cnn(params["cnn"], frames)  # (1): (B, T, D)
    p = params["lstm"]
    h, _, _, c_lstm = lstm(phi, None, None, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"],
                           backend=backend)  # (2): (B, T, Q)
    logits, c_head = linear(h, params["head"]["W"], params["head"]["b"])  # (3): (B, T, K)
    return logits, (c_cnn, c_lstm, c_head)


def lrcn_backward(params: dict, cache, dlogits: np.ndarray):
    """Backward of :func:`lrcn`: ``(dframes, grads)`` with ``grads`` shaped like ``params``."""
    c_cnn, c_lstm, c_head = cache
    K = params["head"]["W"].shape[1]
    B, T = c_cnn[:2]
    dlogits = checks.output_cotangent(dlogits, "dlogits", (B, T, K), params["head"]["W"].dtype, "(B, T, K)")
    dh, dW_y, db_y = linear_backward(dlogits, c_head)  # (3)
    dphi, _, _, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(dh, None, None, c_lstm)  # (2), through time
    dframes, dcnn = frame_cnn_backward(params["cnn"], c_cnn, dphi)  # (1)
    grads = {
        "cnn": dcnn,
        "lstm": {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db_ih, "bias_hh": db_hh},
        "head": {"W": dW_y, "b": db_y},
    }
    return dframes, grads


def single_frame(params: dict, frames: np.ndarray):
    """The single-frame baseline: z_t = φ_V(x_t) W_y + b_y, logits (B, T, K), and the cache."""
    phi, c_cnn = frame_cnn(params["cnn"], frames)  # (B, T, D)
    logits, c_head = linear(phi, params["head"]["W"], params["head"]["b"])  # (B, T, K)
    return logits, (c_cnn, c_head)


def single_frame_backward(params: dict, cache, dlogits: np.ndarray):
    """Backward of :func:`single_frame`: ``(dframes, grads)``."""
    c_cnn, c_head = cache
    K = params["head"]["W"].shape[1]
    B, T = c_cnn[:2]
    dlogits = checks.output_cotangent(dlogits, "dlogits", (B, T, K), params["head"]["W"].dtype, "(B, T, K)")
    dphi, dW_y, db_y = linear_backward(dlogits, c_head)
    dframes, dcnn = frame_cnn_backward(params["cnn"], c_cnn, dphi)
    return dframes, {"cnn": dcnn, "head": {"W": dW_y, "b": db_y}}


# ---------------------------------------------------------------- prediction and loss


def video_probabilities(logits: np.ndarray, steps: int | None = None) -> np.ndarray:
    """(4): the average over the first ``steps`` time steps (default: all) of the per-step class
    probabilities softmax(z_t). logits (B, T, K) -> (B, K)."""
    logits = checks.float_array(logits, "logits", ndim=3, dims="(B, T, K)")
    T = logits.shape[1]
    if steps is None:
        steps = T
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise ValueError(f"steps: expected an integer in [1, T = {T}], got {steps!r}")
    probs, _ = softmax(logits[:, :steps])  # (B, steps, K)
    return probs.mean(axis=1)  # (4): (B, K)


def _check_labels(labels, B, K):
    labels = np.asarray(labels)
    if labels.shape != (B,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected an integer array of shape (B,) = ({B},), got {labels.dtype} {labels.shape}")
    if (labels < 0).any() or (labels >= K).any():
        raise ValueError(f"labels: expected classes in [0, K = {K}), got values from {labels.min()} to {labels.max()}")
    return labels


def per_step_loss(logits: np.ndarray, labels: np.ndarray):
    """The training loss (1/T) Σ_t CE(z_t, y), averaged over videos: ``(loss, dlogits)``.
    Every step of a video is trained towards the video's label, as in the paper."""
    logits = checks.float_array(logits, "logits", ndim=3, dims="(B, T, K)")
    B, T, K = logits.shape
    labels = _check_labels(labels, B, K)
    targets = np.broadcast_to(labels[:, None], (B, T))  # (B, T): the video label at each step
    loss, cache = cross_entropy(logits, targets)
    (dlogits, _) = cross_entropy_backward(1.0, cache)
    return float(loss), dlogits


def lrcn_loss_and_grads(params: dict, batch, rng=None, *, backend: str = "numpy"):
    """``(loss, grads)`` of LRCN on ``batch = (frames, labels)`` (the signature of ``ref.train.train``)."""
    frames, labels = batch
    logits, cache = lrcn(params, frames, backend=backend)
    loss, dlogits = per_step_loss(logits, labels)
    return loss, lrcn_backward(params, cache, dlogits)[1]


def single_frame_loss_and_grads(params: dict, batch, rng=None):
    """``(loss, grads)`` of the single-frame baseline on ``batch = (frames, labels)``."""
    frames, labels = batch
    logits, cache = single_frame(params, frames)
    loss, dlogits = per_step_loss(logits, labels)
    return loss, single_frame_backward(params, cache, dlogits)[1]
