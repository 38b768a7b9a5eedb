"""Optimizers as pure functions over parameter trees: SGD (momentum, Nesterov), Adam, AdamW.

Every optimizer is a pair of functions::

    state = adamw_init(params)
    new_params, new_state = adamw_step(params, grads, state, lr=1e-3, weight_decay=0.01)

Nothing is mutated: the step returns fresh trees, so the caller's ``params``, ``grads`` and
``state`` are untouched and an old state can be reused. The state is a dict of arrays only (it is
saved in checkpoints as it is): ``step`` (a 0-d int64 array, the number of updates done so far)
and one tree per moment, named as in PyTorch (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``).

The update rules follow PyTorch's ``torch.optim`` (non-fused, single tensor), so results agree
with it to rounding error. Below, ``g`` is the gradient, ``p`` the parameter and ``t`` the step
number starting at 1.

- SGD: ``d = g + wd p`` (L2 regularisation added to the gradient); with momentum ``mu`` the buffer
  is ``b_1 = d``, ``b_t = mu b_(t-1) + (1 - dampening) d``; Nesterov uses ``d + mu b_t``, plain
  momentum ``b_t``; then ``p <- p - lr d``.
- Adam (Kingma & Ba, 2015): ``d = g + wd p``; ``m_t = b1 m_(t-1) + (1 - b1) d``,
  ``v_t = b2 v_(t-1) + (1 - b2) d^2``; ``p <- p - lr m_hat / (sqrt(v_hat) + eps)`` with the
  bias-corrected ``m_hat = m_t / (1 - b1^t)``, ``v_hat = v_t / (1 - b2^t)``; ``eps`` is added
  *after* the square root.
- AdamW (Loshchilov & Hutter, 2019): the weight decay is decoupled from the gradient:
  ``p <- p (1 - lr wd)`` first, then the Adam update without the L2 term.

Arithmetic happens in the dtype of each parameter: hyperparameters are Python floats, which
numpy treats as "weak" scalars, so a float32 model stays float32.

For a training loop that picks its optimizer by name, :func:`get_optimizer` returns an
:class:`Optimizer`, a named tuple ``(name, init, step, hparams)`` whose ``step`` has the
hyperparameters bound and takes only ``lr``.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Callable, NamedTuple

import numpy as np

from ref.train.tree import check_float_tree, check_same_structure, tree_map, tree_zeros_like

__all__ = [
    "sgd_init",
    "sgd_step",
    "adam_init",
    "adam_step",
    "adamw_init",
    "adamw_step",
    "Optimizer",
    "OPTIMIZERS",
    "get_optimizer",
]


# ---------------------------------------------------------------------------------------------
# Validation shared by the three optimizers
# ---------------------------------------------------------------------------------------------


def _real(value, name: str, low: float = 0.0, high: float | None = None, high_open: bool = False) -> float:
    """Return ``value`` as a Python float in [low, high] (or [low, high)); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    value = float(value)
    if high is None:
        if value < low:
            raise ValueError(f"{name}: expected a number >= {low}, got {value!r}")
    elif value < low or value > high or (high_open and value == high):
        interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return value


def _betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    return (
        _real(betas[0], "betas[0]", 0.0, 1.0, high_open=True),
        _real(betas[1], "betas[1]", 0.0, 1.0, high_open=True),
    )


def _step_count(state) -> int:
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, np.ndarray) or step.shape != () or step.dtype.kind not in "iu" or step < 0:
        raise ValueError(f"state/step: expected a 0-d integer array >= 0 (the number of steps done), got {step!r}")
    return int(step)


def _check_inputs(params, grads, state, moments: tuple[str, ...]) -> int:
    """Validate the three trees of a step; return the number of steps already done."""
    check_float_tree(params, "params")
    check_same_structure(grads, params, "grads", "params")
    check_float_tree(grads, "grads", finite=True)
    if not isinstance(state, dict) or set(state) != {"step", *moments}:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state: expected a dict with keys {sorted(['step', *moments])}, got {got}")
    for m in moments:
        check_same_structure(state[m], params, f"state/{m}", "params")
    return _step_count(state)


def _new_state(step: int, **moments) -> dict:
    return {"step": np.asarray(step, dtype=np.int64), **moments}


# ---------------------------------------------------------------------------------------------
# SGD with momentum
# ---------------------------------------------------------------------------------------------


def _sgd_hparams(momentum, dampening, weight_decay, nesterov):
    momentum = _real(momentum, "momentum")
    dampening = _real(dampening, "dampening", 0.0, 1.0)
    weight_decay = _real(weight_decay, "weight_decay")
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov: expected True or False, got {nesterov!r}")
    if nesterov and (momentum == 0.0 or dampening != 0.0):
        raise ValueError(
            f"nesterov: expected momentum > 0 and dampening = 0 with Nesterov momentum, "
            f"got momentum={momentum}, dampening={dampening}"
        )
    return momentum, dampening, weight_decay, nesterov


def sgd_init(params) -> dict:
    """State of SGD: the step count and a zero momentum buffer shaped like ``params``."""
    check_float_tree(params, "params")
    return _new_state(0, momentum_buffer=tree_zeros_like(params))


def sgd_step(params, grads, state, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step (PyTorch semantics). Returns ``(new_params, new_state)``.

    ``momentum=0`` is plain gradient descent (the buffer is carried but unused). With momentum
    the first step sets the buffer to the gradient itself, as PyTorch does (so ``dampening``
    does not apply to it).
    """
    lr = _real(lr, "lr")
    momentum, dampening, weight_decay, nesterov = _sgd_hparams(momentum, dampening, weight_decay, nesterov)
    done = _check_inputs(params, grads, state, ("momentum_buffer",))
    buf = state["momentum_buffer"]

    # d = g + wd p                                (L2 regularisation, added to the gradient)
    d = tree_map(lambda g, p: g + weight_decay * p, grads, params) if weight_decay else grads
    if momentum:
        if done == 0:
            # b_1 = d
            buf = tree_map(np.copy, d)
        else:
            # b_t = mu b_(t-1) + (1 - dampening) d
            buf = tree_map(lambda b, d_: momentum * b + (1.0 - dampening) * d_, buf, d)
        if nesterov:
            # d = d + mu b_t
            d = tree_map(lambda d_, b: d_ + momentum * b, d, buf)
        else:
            # d = b_t
            d = buf
    # p = p - lr d
    new_params = tree_map(lambda p, d_: p - lr * d_, params, d)
    return new_params, _new_state(done + 1, momentum_buffer=tree_map(np.copy, buf))


# ---------------------------------------------------------------------------------------------
# Adam and AdamW
# ---------------------------------------------------------------------------------------------


def adam_init(params) -> dict:
    """State of Adam/AdamW: the step count and zero first and second moments."""
    check_float_tree(params, "params")
    return _new_state(0, exp_avg=tree_zeros_like(params), exp_avg_sq=tree_zeros_like(params))


adamw_init = adam_init


def _adam(params, grads, state, lr, betas, eps, weight_decay, decoupled):
    lr = _real(lr, "lr")
    beta1, beta2 = _betas(betas)
    eps = _real(eps, "eps")
    weight_decay = _real(weight_decay, "weight_decay")
    done = _check_inputs(params, grads, state, ("exp_avg", "exp_avg_sq"))
    t = done + 1

    if decoupled:
        # AdamW: p = p (1 - lr wd)                 (decoupled weight decay, applied first)
        params = tree_map(lambda p: p * (1.0 - lr * weight_decay), params)
    elif weight_decay:
        # Adam: g = g + wd p                       (L2 regularisation, added to the gradient)
        grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)

    # m_t = b1 m_(t-1) + (1 - b1) g
    m = tree_map(lambda m_, g: beta1 * m_ + (1.0 - beta1) * g, state["exp_avg"], grads)
    # v_t = b2 v_(t-1) + (1 - b2) g^2
    v = tree_map(lambda v_, g: beta2 * v_ + (1.0 - beta2) * (g * g), state["exp_avg_sq"], grads)

    # m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t);  p = p - lr m_hat / (sqrt(v_hat) + eps)
    # computed as PyTorch does: p = p - (lr / bc1) m_t / (sqrt(v_t) / sqrt(bc2) + eps)
    bc1 = 1.0 - beta1**t
    sqrt_bc2 = math.sqrt(1.0 - beta2**t)
    step_size = lr / bc1
    new_params = tree_map(lambda p, m_, v_: p - step_size * (m_ / (np.sqrt(v_) / sqrt_bc2 + eps)), params, m, v)
    return new_params, _new_state(t, exp_avg=m, exp_avg_sq=v)


def adam_step(params, grads, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """One Adam step (PyTorch semantics; ``weight_decay`` is L2 added to the gradient).

    Returns ``(new_params, new_state)``.
    """
    return _adam(params, grads, state, lr, betas, eps, weight_decay, decoupled=False)


def adamw_step(params, grads, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """One AdamW step (PyTorch semantics: ``p <- p (1 - lr wd)``, then the Adam update).

    Returns ``(new_params, new_state)``.
    """
    return _adam(params, grads, state, lr, betas, eps, weight_decay, decoupled=True)


# ---------------------------------------------------------------------------------------------
# Picking an optimizer by name
# ---------------------------------------------------------------------------------------------


class Optimizer(NamedTuple):
    """An optimizer as data: ``state = opt.init(params)``, ``params, state = opt.step(params, grads, state, lr=lr)``.

    ``step`` has the hyperparameters in ``hparams`` bound; only ``lr`` (which a schedule changes
    from step to step) is passed at each call.
    """

    name: str
    init: Callable
    step: Callable
    hparams: dict


def _check_adam_hparams(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    _betas(betas)
    _real(eps, "eps")
    _real(weight_decay, "weight_decay")


def _check_sgd_hparams(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    _sgd_hparams(momentum, dampening, weight_decay, nesterov)


# name -> (init, step, validator of the hyperparameters)
OPTIMIZERS = {
    "sgd": (sgd_init, sgd_step, _check_sgd_hparams),
    "adam": (adam_init, adam_step, _check_adam_hparams),
    "adamw": (adamw_init, adamw_step, _check_adam_hparams),
}


def get_optimizer(name: str, **hparams) -> Optimizer:
    """The optimizer called ``name`` (``"sgd"``, ``"adam"`` or ``"adamw"``) with ``hparams`` bound.

    ``get_optimizer("sgd", momentum=0.9, nesterov=True)``. Unknown names, unknown
    hyperparameters and bad values fail here, not at the first step.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name: expected one of {', '.join(map(repr, OPTIMIZERS))}, got {name!r}")
    init, step, check = OPTIMIZERS[name]
    if "lr" in hparams:
        raise ValueError("hparams: lr is not bound here; it is passed to each step (the schedule sets it)")
    allowed = list(inspect.signature(check).parameters)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(f"hparams: {name} takes {allowed}, got unknown {unknown}")
    check(**hparams)
    return Optimizer(name, init, functools.partial(step, **hparams), dict(hparams))
