"""The vanilla (Elman) RNN, in PyTorch's conventions (``torch.nn.RNN``, nonlinearity tanh or relu):

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)                   (1)

(relu in place of tanh with ``nonlinearity="relu"``). Shapes: x (B, T, I), h (B, H),
weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh (H,).

Backward of one step, from dh_t (the total gradient of h_t, from above and from step t + 1):

    da = dh_t * (1 - h_t^2)      (tanh)    or    dh_t * [a_t > 0]   (relu)   (2)
    dx_t = da W_ih,   dh_{t-1} = da W_hh                                     (3)
    dW_ih += da^T x_t,   dW_hh += da^T h_{t-1},   db_ih += sum_B da,   db_hh += sum_B da   (4)
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ref import checks
from ref.mixers.rnn._inputs import check_sequence, check_step
from ref.mixers.rnn._sequence import SequenceCache, affine, affine_backward, scan, sequence_backward

NONLINEARITIES = ("tanh", "relu")


def _step(x_t, state, params, nonlinearity="tanh"):
    (h_prev,) = state
    gi, gh = affine(x_t, h_prev, params)  # (B, H) each
    a = gi + gh  # (B, H)
    h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)  # (1)
    cache = (x_t, h_prev, a, h, params, nonlinearity)
    return h, (h,), cache


def _step_backward(dh, dstate, cache):
    x_t, h_prev, a, h, params, nonlinearity = cache
    dh = dh + dstate[0]  # h_t is the output and the state: both gradients meet here
    da = dh * (1.0 - h * h) if nonlinearity == "tanh" else dh * (a > 0)  # (2)
    dx_t, dh_prev, dparams = affine_backward(da, da, x_t, h_prev, params)  # (3), (4)
    return dx_t, (dh_prev,), dparams


def rnn_step(x_t, state, params, *, nonlinearity="tanh"):
    """One step of (1). ``x_t`` (B, I); ``state = (h,)`` with h (B, H); ``params`` a dict with
    ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (biases may be None).
    Returns ``(h_t, (h_t,), cache)``."""
    checks.one_of(nonlinearity, "nonlinearity", NONLINEARITIES)
    x_t, state = check_step(x_t, state, params, 1, ("h",))
    return _step(x_t, state, params, nonlinearity)


def rnn_step_backward(dh, dstate, cache):
    """Backward of :func:`rnn_step`: ``dh`` (B, H) the gradient of the output h_t, ``dstate = (dh_t,)``
    the gradient of the state h_t from the next step (None: zero). Returns
    ``(dx_t, (dh_{t-1},), dparams)`` with ``dparams`` shaped like ``params``."""
    dstate = (np.zeros_like(dh),) if dstate is None else dstate
    return _step_backward(dh, dstate, cache)


def rnn(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, nonlinearity="tanh"):
    """The RNN (1) over a sequence, batch first, one layer: ``torch.nn.RNN(I, H, nonlinearity,
    batch_first=True)`` with ``h_0 = h0[None]``.

    x (B, T, I); h0 (B, H) or None (zeros); weights (H, I), (H, H); biases (H,) or None.
    Returns ``y`` (B, T, H), ``hT`` (B, H) and the cache.
    """
    checks.one_of(nonlinearity, "nonlinearity", NONLINEARITIES)
    params = dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)
    x, states, H = check_sequence(x, {"h0": h0}, params, gates=1)
    step = partial(_step, nonlinearity=nonlinearity)
    y, (hT,), caches = scan(step, x, (states["h0"],), params)
    cache = SequenceCache(_step_backward, caches, x.shape, H, (h0 is not None,), x.dtype)
    return y, hT, cache


def rnn_backward(dy, dhT, cache: SequenceCache, *, truncation=None):
    """Gradients ``(dx, dh0, dweight_ih, dweight_hh, dbias_ih, dbias_hh)`` from ``dy`` (B, T, H) and
    ``dhT`` (B, H) (either may be None: zero); None for an input that was None.
    ``truncation=k``: truncated BPTT, the gradient through the state cut every k steps
    (``ref.mixers.rnn._sequence``)."""
    dx, (dh0,), dp = sequence_backward(dy, {"dhT": dhT}, cache, truncation)
    return dx, dh0, dp["weight_ih"], dp["weight_hh"], dp["bias_ih"], dp["bias_hh"]
