"""The GRU (Cho et al., 2014), in PyTorch's conventions (``torch.nn.GRU``).

The gate rows are stacked in PyTorch's order r, z, n: weight_ih = [W_ir; W_iz; W_in] (3H, I),
weight_hh = [W_hr; W_hz; W_hn] (3H, H), and likewise the biases (3H,). PyTorch keeps the input
and hidden pre-activations apart, because the reset gate multiplies the hidden side of the
candidate *including its bias* b_hn:

    gi = x_t W_ih^T + b_ih,   gh = h_{t-1} W_hh^T + b_hh      (B, 3H) each (1)
    r_t = sigmoid(gi_r + gh_r)          reset gate                          (2)
    z_t = sigmoid(gi_z + gh_z)          update gate                         (3)
    n_t = tanh(gi_n + r_t * gh_n)       i.e. W_in x + b_in + r * (W_hn h + b_hn)   (4)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}                                   (5)

(The original paper, and cuDNN's other mode, put r inside: W_hn (r * h). PyTorch's order changes
the gradients as well as the outputs.)

Backward of one step, from dh_t (the total gradient of h_t):

    dn = dh_t (1 - z_t),   dz = dh_t (h_{t-1} - n_t),   dh_{t-1} = dh_t z_t + ...   (6)
    dan = dn (1 - n_t^2),   dr = dan * gh_n                                 (7)
    dar = dr r(1-r),   daz = dz z(1-z)                                      (8)
    dgi = [dar, daz, dan],   dgh = [dar, daz, dan * r_t]                    (9)
    dx_t = dgi W_ih,   dh_{t-1} += dgh W_hh,   dW_ih += dgi^T x_t,   dW_hh += dgh^T h_{t-1},
    db_ih += sum_B dgi,   db_hh += sum_B dgh                               (10)
"""

from __future__ import annotations

import numpy as np

from ref.mixers.rnn._inputs import check_sequence, check_step
from ref.mixers.rnn._sequence import SequenceCache, affine, affine_backward, scan, sequence_backward, sigmoid


def _step(x_t, state, params):
    (h_prev,) = state
    gi, gh = affine(x_t, h_prev, params)  # (1): (B, 3H) each
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)  # (B, H) each, PyTorch's order r, z, n
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = sigmoid(gi_r + gh_r)  # (2)
    z = sigmoid(gi_z + gh_z)  # (3)
    n = np.tanh(gi_n + r * gh_n)  # (4)
    h = (1.0 - z) * n + z * h_prev  # (5)
    cache = (x_t, h_prev, r, z, n, gh_n, params)
    return h, (h,), cache


def _step_backward(dh, dstate, cache):
    x_t, h_prev, r, z, n, gh_n, params = cache
    dh = dh + dstate[0]  # h_t is the output and the state: both gradients meet here
    dn = dh * (1.0 - z)  # (6)
    dz = dh * (h_prev - n)  # (6)
    dan = dn * (1.0 - n * n)  # (7)
    dr = dan * gh_n  # (7)
    dar = dr * r * (1.0 - r)  # (8)
    daz = dz * z * (1.0 - z)  # (8)
    dgi = np.concatenate([dar, daz, dan], axis=1)  # (9): (B, 3H)
    dgh = np.concatenate([dar, daz, dan * r], axis=1)  # (9): (B, 3H)
    dx_t, dh_prev, dparams = affine_backward(dgi, dgh, x_t, h_prev, params)  # (10)
    dh_prev = dh_prev + dh * z  # (6): the direct path of (5)
    return dx_t, (dh_prev,), dparams


def gru_step(x_t, state, params):
    """One step, (1)-(5). ``x_t`` (B, I); ``state = (h,)`` with h (B, H); ``params`` a dict with
    ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih``, ``bias_hh`` (3H,) or None.
    Returns ``(h_t, (h_t,), cache)``."""
    x_t, state = check_step(x_t, state, params, 3, ("h",))
    return _step(x_t, state, params)


def gru_step_backward(dh, dstate, cache):
    """Backward of :func:`gru_step`: ``dh`` (B, H) the gradient of the output h_t; ``dstate = (dh_t,)``
    the gradient of the state from the next step (None: zero). Returns
    ``(dx_t, (dh_{t-1},), dparams)``, ``dparams`` shaped like ``params``."""
    dstate = (np.zeros_like(dh),) if dstate is None else dstate
    return _step_backward(dh, dstate, cache)


def gru(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """The GRU over a sequence, batch first, one layer: ``torch.nn.GRU(I, H, batch_first=True)``
    with ``h_0 = h0[None]``.

    x (B, T, I); h0 (B, H) or None (zeros); weight_ih (3H, I); weight_hh (3H, H);
    bias_ih, bias_hh (3H,) or None. Returns ``y`` (B, T, H), ``hT`` (B, H) and the cache.
    """
    params = dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)
    x, states, H = check_sequence(x, {"h0": h0}, params, gates=3)
    y, (hT,), caches = scan(_step, x, (states["h0"],), params)
    cache = SequenceCache(_step_backward, caches, x.shape, H, (h0 is not None,), x.dtype)
    return y, hT, cache


def gru_backward(dy, dhT, cache: SequenceCache, *, truncation=None):
    """Gradients ``(dx, dh0, dweight_ih, dweight_hh, dbias_ih, dbias_hh)`` from ``dy`` (B, T, H) and
    ``dhT`` (B, H) (either may be None: zero); None for an input that was None.
    ``truncation=k``: truncated BPTT, the gradient through h cut every k steps
    (``ref.mixers.rnn._sequence``)."""
    dx, (dh0,), dp = sequence_backward(dy, {"dhT": dhT}, cache, truncation)
    return dx, dh0, dp["weight_ih"], dp["weight_hh"], dp["bias_ih"], dp["bias_hh"]
