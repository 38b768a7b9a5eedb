"""Synthetic gradients for a recurrent controller trained with truncated backprop through time.

Decoupled neural interfaces (DNI; Jaderberg et al., "Decoupled Neural Interfaces using Synthetic
Gradients", ICML 2017, section 3.2) and their use for the controller of a neural memory network
in "Fast & Slow Learning: Incorporating Synthetic Gradients in Neural Memory Controllers"
(Fernando, Denman, Sridharan & Fookes, arXiv 2011.05438): the controller learns fast from
gradients that a small second network, trained slowly, predicts.

**The controller.** Tokens x_t (one-hot, I = vocabulary size) drive an LSTM
(``ref.mixers.rnn.lstm``, PyTorch's gate order) whose state is s_t = (h_t, c_t); a linear readout
gives the logits::

    (h_t, c_t) = LSTM(x_t, (h_{t-1}, c_{t-1}))                                      (C1)
    z_t = h_t W_out + b_out                                           (B, T, V)     (C2)
    L = (1 / N) sum_{b, t scored} CE(z_{b,t}, y_{b,t})         N = number of scored positions   (C3)

**Truncated BPTT.** The sequence is cut into windows [0, k), [k, 2k), ... of ``truncation`` = k
steps. Each window starts from the last state of the previous one, treated as a constant, and
backpropagates only its own losses: the gradient leaving a window's first step backwards is
dropped, so nothing learns from losses more than k steps away.

**Synthetic gradients.** At the end of window n (state s_e, e = (n+1)k - 1) a linear module
predicts the gradient that the future would send back, for one sequence::

    g_hat(s) = [h, c] W_sg + b_sg   ~   d ell / d[h, c]                 (B, 2H)     (SG1)

where ell = sum_{t scored} CE_t is the summed loss of the sequence (so the prediction does not
depend on the batch size or on N; ``W_sg``, ``b_sg`` start at zero as in DNI). The window is
then backpropagated with that prediction as the cotangent of its last state::

    dL/ds_e  :=  g_hat(s_e) / N                   (0 at the end of the last window)    (SG2)

and what arrives at the window's first state s_{nk-1} is the **bootstrapped target** for the
prediction made there at the end of the previous window: the true gradient of the window's own
losses plus the synthetic gradient of the future carried back through the window::

    target_n = N * dL/ds_{nk-1}  =  d ell_window / ds_{nk-1}  +  (ds_e / ds_{nk-1})^T g_hat(s_e)   (SG3)

The module is trained by regression on it, the target and the state being constants::

    L_sg = sum_{n >= 1} (1 / (2B)) sum_b || g_hat(s_{nk-1, b}) - target_{n, b} ||^2          (SG4)

Two exact limits, both tested: with g_hat = 0 the update is plain truncated BPTT; with g_hat
replaced by the true future gradient (an oracle from full BPTT) it is full BPTT. The controller's
gradients and the module's gradients are returned together in one tree shaped like the parameters
(``{"lstm": ..., "head": ..., "sg": ...}``) so that one optimizer step updates both.

Shapes: tokens, targets, loss_mask (B, T); H hidden size, V vocabulary size.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.rnn import lstm, lstm_backward
from ref.nn import cross_entropy, cross_entropy_backward, linear, linear_backward

__all__ = [
    "BOUNDARY_MODES",
    "init_sg_controller",
    "controller_forward",
    "controller_backward",
    "synthetic_gradient",
    "synthetic_gradient_backward",
    "sg_regression_loss",
    "sg_train_step",
    "oracle_boundary_grads",
    "full_bptt_step",
    "predict",
]

BOUNDARY_MODES = ("sg", "zero")


def init_sg_controller(rng: np.random.Generator, vocab_size: int, hidden_size: int) -> dict:
    """Parameters ``{"lstm": {weight_ih, weight_hh, bias_ih, bias_hh}, "head": {W, b}, "sg": {W, b}}``.

    The LSTM and the readout use PyTorch's default uniform(-1/sqrt(H), 1/sqrt(H)); the synthetic
    gradient module starts at zero (DNI): at first it predicts no future gradient at all.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    V = checks.positive_int(vocab_size, "vocab_size")
    H = checks.positive_int(hidden_size, "hidden_size")
    bound = 1.0 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-bound, bound, shape)  # noqa: E731
    return {
        "lstm": {"weight_ih": u(4 * H, V), "weight_hh": u(4 * H, H), "bias_ih": u(4 * H), "bias_hh": u(4 * H)},
        "head": {"W": u(H, V), "b": u(V)},
        "sg": {"W": np.zeros((2 * H, 2 * H)), "b": np.zeros(2 * H)},
    }


def _check_params(params) -> tuple[int, int]:
    if not isinstance(params, dict) or not {"lstm", "head"} <= set(params):
        raise ValueError("params: expected a dict with 'lstm' and 'head' (from init_sg_controller)")
    H = params["lstm"]["weight_hh"].shape[1]
    V = params["head"]["W"].shape[1]
    return H, V


def controller_forward(params: dict, x: np.ndarray, state: tuple, *, backend: str = "numpy"):
    """(C1)-(C2) over one window. ``x`` (B, T, V) float one-hot tokens, ``state = (h, c)`` (B, H) each.
    Returns ``logits`` (B, T, V), the final state ``(h, c)`` and the cache."""
    p = params["lstm"]
    h0, c0 = state
    y, hT, cT, lstm_cache = lstm(x, h0, c0, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], backend=backend)
    logits, head_cache = linear(y, params["head"]["W"], params["head"]["b"])  # (C2) (B, T, V)
    return logits, (hT, cT), (lstm_cache, head_cache)


def controller_backward(dlogits: np.ndarray, dstate: tuple, cache):
    """Backward of :func:`controller_forward` (full BPTT inside the window).

    ``dlogits`` (B, T, V); ``dstate = (dh, dc)`` the cotangent of the final state (e.g. a synthetic
    gradient). Returns ``(dx, (dh0, dc0), grads)`` with ``grads = {"lstm": ..., "head": ...}``."""
    lstm_cache, head_cache = cache
    dy, dW, db = linear_backward(dlogits, head_cache)  # (B, T, H)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(dy, dstate[0], dstate[1], lstm_cache)
    grads = {
        "lstm": {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db_ih, "bias_hh": db_hh},
        "head": {"W": dW, "b": db},
    }
    return dx, (dh0, dc0), grads


def synthetic_gradient(sg: dict, h: np.ndarray, c: np.ndarray):
    """(SG1): the predicted gradient ``(g_h, g_c)`` (B, H) each of the summed sequence loss with
    respect to the state (h, c). Returns ``g_h, g_c, cache``."""
    H = h.shape[-1]
    s = np.concatenate([h, c], axis=-1)  # (B, 2H)
    g, cache = linear(s, sg["W"], sg["b"])  # (SG1) (B, 2H)
    return g[:, :H], g[:, H:], (cache, H)


def synthetic_gradient_backward(dg_h: np.ndarray, dg_c: np.ndarray, cache):
    """Backward of :func:`synthetic_gradient`: ``(dh, dc, {"W": dW, "b": db})``."""
    lin_cache, H = cache
    ds, dW, db = linear_backward(np.concatenate([dg_h, dg_c], axis=-1), lin_cache)  # (B, 2H)
    return ds[:, :H], ds[:, H:], {"W": dW, "b": db}


def sg_regression_loss(prediction: np.ndarray, target: np.ndarray):
    """(SG4) for one boundary: ``0.5 * mean_b ||prediction_b - target_b||^2`` and its gradient
    with respect to the prediction (the target is a constant). Both (B, 2H)."""
    diff = prediction - target  # (B, 2H)
    B = prediction.shape[0]
    return 0.5 * float((diff * diff).sum()) / B, diff / B


def _check_batch(params, tokens, targets, loss_mask):
    _, V = _check_params(params)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens: expected an integer array (B, T), got dtype {tokens.dtype} and shape {tokens.shape}")
    checks.nonempty_time(tokens.shape[1], "tokens")
    if tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(
            f"tokens: expected ids in [0, {V}) (the vocabulary of the parameters), got [{tokens.min()}, {tokens.max()}]"
        )
    targets = np.asarray(targets)
    checks.same_shape(targets, "targets", tokens.shape, "(B, T)", "the shape of tokens")
    loss_mask = np.asarray(loss_mask)
    checks.same_shape(loss_mask, "loss_mask", tokens.shape, "(B, T)", "the shape of tokens")
    if loss_mask.dtype != np.bool_:
        raise ValueError(f"loss_mask: expected dtype bool, got {loss_mask.dtype}")
    n = int(loss_mask.sum())
    if n == 0:
        raise ValueError("loss_mask: expected at least one scored position, got none")
    x = np.eye(V)[tokens]  # (B, T, V) one-hot
    return x, np.where(loss_mask, targets, -100), n


def _windows(T: int, truncation) -> list[tuple[int, int]]:
    """The windows [0, k), [k, 2k), ... of T steps; one window (full BPTT) for ``truncation=None``."""
    k = T if truncation is None else checks.positive_int(truncation, "truncation")
    return [(s, min(s + k, T)) for s in range(0, T, k)]


def _add(a, b):
    """a + b over two parameter trees of the same structure (a may be None)."""
    if a is None:
        return {k: dict(v) for k, v in b.items()}
    return {name: {k: a[name][k] + b[name][k] for k in b[name]} for name in b}


def sg_train_step(params, tokens, targets, loss_mask, *, truncation, boundary="sg", backend="numpy"):
    """One training step of the controller on a long sequence, processed window by window.

    ``truncation`` = k >= 1, the window length (None: one window, full BPTT). ``boundary`` says
    what the cotangent of the last state of each window but the last is:

    * ``"sg"``: the synthetic gradient (SG1)-(SG2), and the module is trained on (SG3)-(SG4);
    * ``"zero"``: nothing, plain truncated BPTT;
    * a list of ``(g_h, g_c)`` pairs, one per boundary, each (B, H): a given gradient of the summed
      sequence loss, e.g. the oracle :func:`oracle_boundary_grads` (then the update is full BPTT).

    Returns ``(loss, grads, info)``: the mean loss (C3), a gradient tree shaped like ``params``
    (``grads["sg"]`` is the gradient of (SG4), zero unless ``boundary="sg"``) and ``info`` with
    ``sg_loss`` (SG4), the per-boundary ``predictions`` and bootstrapped ``targets`` (SG3)
    as (B, 2H) arrays.
    """
    H, V = _check_params(params)
    x, labels, N = _check_batch(params, tokens, targets, loss_mask)
    B, T = labels.shape
    windows = _windows(T, truncation)
    use_sg = isinstance(boundary, str) and boundary == "sg"
    if isinstance(boundary, str):
        checks.one_of(boundary, "boundary", BOUNDARY_MODES)
        if use_sg and "sg" not in params:
            raise ValueError("params: boundary='sg' needs the synthetic gradient module params['sg']")
    elif len(boundary) != len(windows) - 1:
        raise ValueError(
            f"boundary: expected 'sg', 'zero' or a list of {len(windows) - 1} (g_h, g_c) pairs "
            f"(one per window boundary), got a list of {len(boundary)}"
        )

    state = (np.zeros((B, H)), np.zeros((B, H)))
    grads, total, sg_loss = None, 0.0, 0.0
    dsg = {"W": np.zeros((2 * H, 2 * H)), "b": np.zeros(2 * H)}
    previous = None  # the prediction made at the end of the previous window, and its cache
    predictions, sg_targets = [], []
    for n, (s, e) in enumerate(windows):
        logits, end_state, cache = controller_forward(params, x[:, s:e], state, backend=backend)
        # (C3): this window's share of the mean loss, with the global N
        loss_sum, ce_cache = cross_entropy(logits, labels[:, s:e], reduction="sum")
        total += float(loss_sum) / N
        dlogits, _ = cross_entropy_backward(1.0 / N, ce_cache)  # (B, k, V)
        last = n == len(windows) - 1
        if last:
            g = (np.zeros((B, H)), np.zeros((B, H)))  # no future after the last window
        elif use_sg:
            g_h, g_c, sg_cache = synthetic_gradient(params["sg"], *end_state)  # (SG1)
            g = (g_h, g_c)
        elif isinstance(boundary, str):
            g = (np.zeros((B, H)), np.zeros((B, H)))  # plain truncated BPTT
        else:
            g = tuple(checks.state_part(a, f"boundary[{n}]", (B, H), "(B, H)", np.float64) for a in boundary[n])
        # (SG2): the window's backward starts from g / N at its last state
        _, (dh0, dc0), window_grads = controller_backward(dlogits, (g[0] / N, g[1] / N), cache)
        grads = _add(grads, window_grads)
        if use_sg and previous is not None:
            target = N * np.concatenate([dh0, dc0], axis=-1)  # (SG3) (B, 2H)
            prev_pred, prev_cache = previous
            loss_n, dpred = sg_regression_loss(prev_pred, target)  # (SG4)
            sg_loss += loss_n
            _, _, d = synthetic_gradient_backward(dpred[:, :H], dpred[:, H:], prev_cache)
            dsg = {k: dsg[k] + d[k] for k in dsg}
            sg_targets.append(target)
        if use_sg and not last:
            previous = (np.concatenate(g, axis=-1), sg_cache)
            predictions.append(previous[0])
        state = end_state  # the next window starts from this state, treated as a constant
    if "sg" in params:
        grads["sg"] = dsg
    info = {"sg_loss": sg_loss, "predictions": predictions, "targets": sg_targets}
    return total, grads, info


def full_bptt_step(params, tokens, targets, loss_mask, *, backend="numpy"):
    """Full backprop through time over the whole sequence (one window): ``(loss, grads)``."""
    loss, grads, _ = sg_train_step(params, tokens, targets, loss_mask, truncation=None, boundary="zero", backend=backend)
    return loss, grads


def oracle_boundary_grads(params, tokens, targets, loss_mask, *, truncation, backend="numpy"):
    """The true gradient of the summed loss ell with respect to the last state of each window but
    the last, from full BPTT: a list of ``(g_h, g_c)`` pairs, each (B, H). Passed as ``boundary``
    to :func:`sg_train_step` it turns truncated BPTT into full BPTT."""
    H, _ = _check_params(params)
    x, labels, N = _check_batch(params, tokens, targets, loss_mask)
    B, T = labels.shape
    windows = _windows(T, truncation)
    state, caches = (np.zeros((B, H)), np.zeros((B, H))), []
    for s, e in windows:  # forward over every window, keeping the caches
        logits, state, cache = controller_forward(params, x[:, s:e], state, backend=backend)
        _, ce_cache = cross_entropy(logits, labels[:, s:e], reduction="sum")
        caches.append((cache, ce_cache))
    out = []
    dstate = (np.zeros((B, H)), np.zeros((B, H)))
    for cache, ce_cache in reversed(caches[1:]):  # backwards, carrying the true gradient across
        dlogits, _ = cross_entropy_backward(1.0, ce_cache)  # the summed loss ell
        _, dstate, _ = controller_backward(dlogits, dstate, cache)
        out.append(dstate)
    return out[::-1]


def predict(params, tokens, *, backend="numpy"):
    """The controller's predictions ``argmax_v z_t`` (B, T) over the whole sequence."""
    H, V = _check_params(params)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(
            f"tokens: expected integer ids in [0, {V}) of shape (B, T), got dtype {tokens.dtype}, shape {tokens.shape}"
        )
    B = tokens.shape[0]
    logits, _, _ = controller_forward(params, np.eye(V)[tokens], (np.zeros((B, H)), np.zeros((B, H))), backend=backend)
    return logits.argmax(-1)
