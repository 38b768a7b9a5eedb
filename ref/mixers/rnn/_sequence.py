"""What every RNN cell shares: its two affine maps, the loop over time, and backprop through time.

A cell is a pair of pure functions

    h_t, state_t, cache_t = step(x_t, state_{t-1}, params)
    dx_t, dstate_{t-1}, dparams_t = step_backward(dh_t, dstate_t, cache_t)

where ``state`` is a tuple of (B, H) arrays, ``(h,)`` or ``(h, c)``, and ``dh_t`` is the gradient
of the loss with respect to the output ``h_t`` from above (the layer's ``dy[:, t]``), ``dstate_t``
the gradient carried back from step t + 1. The output ``h_t`` is also the first entry of the state,
so the step's backward starts from their sum.

Backprop through time (BPTT) runs the steps backwards, carrying ``dstate`` from step t to step
t - 1 and summing the parameter gradients of every step:

    dparams = sum_t dparams_t                                               (B1)
    dstate_{t-1} = step_backward(dy_t, dstate_t, cache_t)[1],   dstate_{T-1} = (dhT, dcT)  (B2)

Truncated BPTT with ``truncation = k`` splits the T steps into segments of k steps,
[0, k), [k, 2k), ..., the last one possibly shorter, and drops the gradient carried across a
segment boundary: the ``dstate`` leaving step t = k, 2k, ... backwards is set to zero instead of
reaching step t - 1. The gradients are then exactly those of the model whose state entering
each segment after the first is treated as a constant (``detach()`` in PyTorch, the state handed
over between the chunks of truncated training): every input and weight gets the gradient of the
losses of its own segment, ``dh0``/``dc0`` the gradient through the first segment only, and the
final-state cotangent reaches only the last segment. ``truncation >= T`` is full BPTT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ref.mixers.rnn._inputs import check_cotangent, check_truncation


def sigmoid(a):
    """1 / (1 + exp(-a)) without overflow for large |a|."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def affine(x_t, h, params):
    """The two pre-activations, input side and hidden side, as PyTorch keeps them apart:

    gi = x_t W_ih^T + b_ih     (B, G H)
    gh = h W_hh^T + b_hh       (B, G H)
    """
    gi = x_t @ params["weight_ih"].T  # (B, G H)
    if params.get("bias_ih") is not None:
        gi = gi + params["bias_ih"]
    gh = h @ params["weight_hh"].T  # (B, G H)
    if params.get("bias_hh") is not None:
        gh = gh + params["bias_hh"]
    return gi, gh


def affine_backward(dgi, dgh, x_t, h, params):
    """Backward of :func:`affine`: ``(dx_t, dh, dparams)`` from the gradients of gi and gh."""
    dparams = {
        "weight_ih": dgi.T @ x_t,  # (G H, I)
        "weight_hh": dgh.T @ h,  # (G H, H)
        "bias_ih": None if params.get("bias_ih") is None else dgi.sum(axis=0),  # (G H,)
        "bias_hh": None if params.get("bias_hh") is None else dgh.sum(axis=0),  # (G H,)
    }
    return dgi @ params["weight_ih"], dgh @ params["weight_hh"], dparams  # (B, I), (B, H)


def scan(step, x, state: tuple, params: dict):
    """Run ``step`` over x (B, T, I) from ``state``; return ``y`` (B, T, H), the final state, the caches."""
    ys, caches = [], []
    for t in range(x.shape[1]):
        h, state, cache = step(x[:, t], state, params)
        ys.append(h)
        caches.append(cache)
    return np.stack(ys, axis=1), state, caches  # y: (B, T, H)


def scan_backward(step_backward, dy, dstate: tuple, caches: list, truncation: int | None):
    """BPTT over the caches of :func:`scan`: ``(dx, dstate0, dparams)``; see the module docstring."""
    T = len(caches)
    dxs = [None] * T
    dparams = None
    for t in range(T - 1, -1, -1):
        dxs[t], dstate, dp = step_backward(dy[:, t], dstate, caches[t])  # (B2)
        if dparams is None:
            dparams = dp
        else:  # (B1)
            dparams = {k: None if v is None else dparams[k] + v for k, v in dp.items()}
        if truncation is not None and t > 0 and t % truncation == 0:
            # step t opens a segment: its incoming state counts as a constant, nothing flows further back
            dstate = tuple(np.zeros_like(d) for d in dstate)
    return np.stack(dxs, axis=1), dstate, dparams  # dx: (B, T, I)


@dataclass(frozen=True)
class SequenceCache:
    """What a sequence call's backward needs: the per-step caches and the step's backward."""

    step_backward: Callable
    caches: list
    x_shape: tuple  # (B, T, I)
    hidden_size: int
    given: tuple  # for each state entry, whether the caller gave it (else its gradient is None)
    dtype: np.dtype


def sequence_backward(dy, dfinal: dict, cache: SequenceCache, truncation):
    """The backward of a one-layer sequence call: validate the cotangents, run BPTT.

    ``dy`` (B, T, H) and ``dfinal`` (name -> (B, H) or None, e.g. ``{"dhT": ..., "dcT": ...}``)
    may be None (zero). Returns ``(dx, dstate0, dparams)``, ``dstate0`` a tuple with None for
    each initial state the caller did not give.
    """
    B, T, _ = cache.x_shape
    H = cache.hidden_size
    dy = check_cotangent(dy, "dy", (B, T, H), "(B, T, H)", cache.dtype, "y")
    dstate = tuple(check_cotangent(d, n, (B, H), "(B, H)", cache.dtype, n[1:]) for n, d in dfinal.items())
    truncation = check_truncation(truncation)
    dx, dstate0, dparams = scan_backward(cache.step_backward, dy, dstate, cache.caches, truncation)
    dstate0 = tuple(d if given else None for d, given in zip(dstate0, cache.given))
    return dx, dstate0, dparams
