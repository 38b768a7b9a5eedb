"""The LSTM (Hochreiter & Schmidhuber, 1997), in PyTorch's conventions (``torch.nn.LSTM``).

The gate rows of the weights are stacked in PyTorch's order i, f, g, o:
weight_ih = [W_ii; W_if; W_ig; W_io] (4H, I), weight_hh = [W_hi; W_hf; W_hg; W_ho] (4H, H),
and likewise the biases (4H,). With a = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh (B, 4H):

    i_t = sigmoid(a_i)        input gate                                   (1)
    f_t = sigmoid(a_f)        forget gate                                  (2)
    g_t = tanh(a_g)           cell candidate                               (3)
    o_t = sigmoid(a_o)        output gate                                  (4)
    c_t = f_t * c_{t-1} + i_t * g_t                                        (5)
    h_t = o_t * tanh(c_t)                                                  (6)

Backward of one step, from dh_t and dc_t (the total gradients of h_t and c_t):

    do_t = dh_t * tanh(c_t)                                                (7)
    dc = dc_t + dh_t * o_t * (1 - tanh(c_t)^2)                             (8)
    di_t = dc * g_t,   df_t = dc * c_{t-1},   dg_t = dc * i_t,   dc_{t-1} = dc * f_t   (9)
    da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]                     (10)
    dx_t = da W_ih,   dh_{t-1} = da W_hh,   dW_ih += da^T x_t,  dW_hh += da^T h_{t-1},
    db_ih += sum_B da,   db_hh += sum_B da                                 (11)

Backends of the sequence form: ``lstm(..., backend="numpy")`` loops the step above (the
reference); ``backend="numba"`` runs ``numba_kernels.lstm_cpu``: the input projection
x W_ih^T + b of all steps as one matrix product, the recurrence jitted and parallel over the
batch, and in the backward dx, dW_ih, dW_hh, db as matrix products over all steps at once.
``"auto"`` picks numba. ``lstm_backward`` runs on the forward's backend (its cache says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref.backend import resolve
from ref.mixers.rnn._inputs import check_cotangent, check_sequence, check_step, check_truncation
from ref.mixers.rnn._sequence import SequenceCache, affine, affine_backward, scan, sequence_backward, sigmoid


def _step(x_t, state, params):
    h_prev, c_prev = state
    gi, gh = affine(x_t, h_prev, params)
    a = gi + gh  # (B, 4H)
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)  # (B, H) each, PyTorch's order i, f, g, o
    i = sigmoid(a_i)  # (1)
    f = sigmoid(a_f)  # (2)
    g = np.tanh(a_g)  # (3)
    o = sigmoid(a_o)  # (4)
    c = f * c_prev + i * g  # (5)
    tanh_c = np.tanh(c)
    h = o * tanh_c  # (6)
    cache = (x_t, h_prev, c_prev, i, f, g, o, tanh_c, params)
    return h, (h, c), cache


def _step_backward(dh, dstate, cache):
    x_t, h_prev, c_prev, i, f, g, o, tanh_c, params = cache
    dh = dh + dstate[0]  # h_t is the output and the state: both gradients meet here
    do = dh * tanh_c  # (7)
    dc = dstate[1] + dh * o * (1.0 - tanh_c * tanh_c)  # (8)
    di, df, dg, dc_prev = dc * g, dc * c_prev, dc * i, dc * f  # (9)
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)  # (10)
    dx_t, dh_prev, dparams = affine_backward(da, da, x_t, h_prev, params)  # (11)
    return dx_t, (dh_prev, dc_prev), dparams


def lstm_step(x_t, state, params):
    """One step, (1)-(6). ``x_t`` (B, I); ``state = (h, c)``, each (B, H); ``params`` a dict with
    ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``, ``bias_hh`` (4H,) or None.
    Returns ``(h_t, (h_t, c_t), cache)``."""
    x_t, state = check_step(x_t, state, params, 4, ("h", "c"))
    return _step(x_t, state, params)


def lstm_step_backward(dh, dstate, cache):
    """Backward of :func:`lstm_step`: ``dh`` (B, H) the gradient of the output h_t; ``dstate =
    (dh_t, dc_t)`` the gradients of the state from the next step (None: zero). Returns
    ``(dx_t, (dh_{t-1}, dc_{t-1}), dparams)``, ``dparams`` shaped like ``params``."""
    dstate = (np.zeros_like(dh), np.zeros_like(dh)) if dstate is None else dstate
    return _step_backward(dh, dstate, cache)


@dataclass(frozen=True)
class KernelCache:
    """What the numba backward needs: the inputs (initial states zero-filled), the outputs ``y``
    and what the kernel saved, the activated gates (B, T, 4H), c and tanh(c) (B, T, H)."""

    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    params: dict
    y: np.ndarray
    gates: np.ndarray
    c: np.ndarray
    tanh_c: np.ndarray
    given: tuple  # whether the caller gave h0, c0 (else their gradients are None)


def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, backend: str = "numpy"):
    """The LSTM over a sequence, batch first, one layer: ``torch.nn.LSTM(I, H, batch_first=True)``
    with ``(h_0, c_0) = (h0[None], c0[None])``.

    x (B, T, I); h0, c0 (B, H) or None (zeros); weight_ih (4H, I); weight_hh (4H, H);
    bias_ih, bias_hh (4H,) or None. Returns ``y`` (B, T, H) (every h_t), ``hT``, ``cT`` (B, H)
    and the cache. ``backend``: "numpy" (the loop over :func:`lstm_step`), "numba"
    (``numba_kernels.lstm_cpu``) or "auto" (numba).
    """
    backend = resolve(backend, ("numpy", "numba"), "lstm")
    params = dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)
    x, states, H = check_sequence(x, {"h0": h0, "c0": c0}, params, gates=4)
    given = (h0 is not None, c0 is not None)
    if backend == "numba":
        from numba_kernels.lstm_cpu import lstm_cpu

        y, hT, cT, gates, c, tanh_c = lstm_cpu(x, states["h0"], states["c0"], **params)
        cache = KernelCache(x, states["h0"], states["c0"], params, y, gates, c, tanh_c, given)
        return y, hT, cT, cache
    y, (hT, cT), caches = scan(_step, x, (states["h0"], states["c0"]), params)
    cache = SequenceCache(_step_backward, caches, x.shape, H, given, x.dtype)
    return y, hT, cT, cache


def _kernel_backward(dy, dhT, dcT, cache: KernelCache, truncation):
    from numba_kernels.lstm_cpu import lstm_cpu_backward

    B, T, _ = cache.x.shape
    H, dtype, p = cache.y.shape[2], cache.x.dtype, cache.params
    dy = check_cotangent(dy, "dy", (B, T, H), "(B, T, H)", dtype, "y")
    dhT = check_cotangent(dhT, "dhT", (B, H), "(B, H)", dtype, "hT")
    dcT = check_cotangent(dcT, "dcT", (B, H), "(B, H)", dtype, "cT")
    truncation = check_truncation(truncation)
    dx, dh0, dc0, dw_ih, dw_hh, db = lstm_cpu_backward(
        dy, dhT, dcT, cache.x, cache.h0, cache.c0, p["weight_ih"], p["weight_hh"],
        cache.y, cache.gates, cache.c, cache.tanh_c, truncation,
    )
    # both biases enter the pre-activation as a sum, so they share one gradient
    db_ih = None if p["bias_ih"] is None else db
    db_hh = None if p["bias_hh"] is None else db.copy()
    return dx, dh0 if cache.given[0] else None, dc0 if cache.given[1] else None, dw_ih, dw_hh, db_ih, db_hh


def lstm_backward(dy, dhT, dcT, cache, *, truncation=None):
    """Gradients ``(dx, dh0, dc0, dweight_ih, dweight_hh, dbias_ih, dbias_hh)`` from ``dy``
    (B, T, H), ``dhT`` and ``dcT`` (B, H) (each may be None: zero); None for an input that was None.
    ``truncation=k``: truncated BPTT, the gradient through (h, c) cut every k steps
    (``ref.mixers.rnn._sequence``). Runs on the backend of the forward that made ``cache``."""
    if isinstance(cache, KernelCache):
        return _kernel_backward(dy, dhT, dcT, cache, truncation)
    dx, (dh0, dc0), dp = sequence_backward(dy, {"dhT": dhT, "dcT": dcT}, cache, truncation)
    return dx, dh0, dc0, dp["weight_ih"], dp["weight_hh"], dp["bias_ih"], dp["bias_hh"]
