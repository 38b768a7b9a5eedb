"""One small training loop, written out so that every step can be read.

Each step ``s`` (counted from 0) does::

    batch        = batches(rng, s)                  (or next(batches) for an iterator)
    loss, grads  = loss_and_grads(params, batch, rng)
    ||g||        = global_norm(grads)                (recorded before clipping)
    grads        = clip_grad_norm(grads, clip_norm)  (if clip_norm is set)
    lr_s         = lr_at(s, lr, warmup_steps, steps, min_lr)
    params, opt_state = optimizer.step(params, grads, opt_state, lr=lr_s)

and stops with a ValueError naming the step as soon as the loss or a gradient is NaN or
infinite: continuing would only spread the NaNs into every parameter.

Randomness. The one generator ``rng`` is passed to ``batches`` and then to ``loss_and_grads`` at
every step, in that order, so the same seed gives a bit-identical trajectory (on the same
machine and backend). Its state is saved in each checkpoint (``meta["train"]["rng_state"]``);
:func:`restore_rng` turns it back into a generator, so a run resumed from a checkpoint continues
exactly as if it had never stopped::

    ck = load_checkpoint(path, like=params0)
    rng = restore_rng(ck.meta["train"]["rng_state"])
    out = train(ck.params, loss_and_grads, batches, steps=total, rng=rng, opt_state=ck.opt_state, ...)

``steps`` is the total length of the run (it fixes the schedule); with an ``opt_state`` the loop
starts at the step count stored in it.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Callable, NamedTuple

import numpy as np
from tqdm import tqdm

from ref import checks
from ref.train.checkpoint import save_checkpoint
from ref.train.clip import clip_grad_norm, global_norm
from ref.train.optim import Optimizer, get_optimizer
from ref.train.schedule import lr_at
from ref.train.tree import check_float_tree, check_same_structure

__all__ = ["TrainResult", "train", "restore_rng"]


class TrainResult(NamedTuple):
    """What :func:`train` returns; unpacks as ``params, opt_state, history = train(...)``.

    ``history`` holds one entry per step run: ``step`` (int64), ``loss``, ``lr`` and
    ``grad_norm`` (float64; the global norm before clipping), each a 1-D array.
    """

    params: object
    opt_state: dict
    history: dict


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator in the saved ``bit_generator.state`` (e.g. ``meta["train"]["rng_state"]``)."""
    kind = getattr(np.random, str(state.get("bit_generator")), None) if isinstance(state, dict) else None
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ValueError(f"state: expected a bit_generator.state dict (as saved in a checkpoint), got {state!r}")
    bit_generator = kind()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _jsonable(obj):
    """A bit_generator.state as plain JSON data (MT19937 keeps an array in it)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _optional_positive(value, name: str, integer: bool):
    if value is None:
        return None
    if integer:
        return checks.positive_int(value, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
        raise ValueError(f"{name}: expected a finite number > 0 or None, got {value!r}")
    return float(value)


def train(
    params,
    loss_and_grads: Callable,
    batches,
    *,
    steps: int,
    rng: np.random.Generator,
    optimizer: str | Optimizer = "adamw",
    lr: float = 1e-3,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    clip_norm: float | None = None,
    opt_state: dict | None = None,
    progress: bool = True,
    log_every: int = 10,
    checkpoint_path=None,
    checkpoint_every: int | None = None,
    meta: dict | None = None,
) -> TrainResult:
    """Train ``params`` for ``steps`` steps; returns ``TrainResult(params, opt_state, history)``.

    - ``loss_and_grads(params, batch, rng) -> (loss, grads)``: a float and a tree shaped like params.
    - ``batches``: a callable ``(rng, step) -> batch`` or an iterator (or iterable) of batches.
    - ``optimizer``: a name (``"sgd"``, ``"adam"``, ``"adamw"``, default hyperparameters) or an
      :class:`Optimizer` from ``get_optimizer(name, **hparams)``.
    - the learning rate follows ``lr_at(step, lr, warmup_steps, steps, min_lr)``: linear warmup,
      then cosine decay to ``min_lr`` (``min_lr=lr`` keeps it constant).
    - ``clip_norm``: clip the global gradient norm to this value (None: no clipping).
    - ``opt_state``: resume from this optimizer state (the loop starts at its step count).
    - ``progress``: show a tqdm bar (hidden anyway when stderr is not a terminal); its postfix
      shows the mean loss, the lr and the gradient norm, refreshed every ``log_every`` steps.
    - ``checkpoint_path`` / ``checkpoint_every``: save a checkpoint every that many steps and at
      the end (with ``checkpoint_path`` alone: at the end only); ``meta`` (a JSON-able dict) is
      stored in it beside the loop's own ``meta["train"]`` (optimizer, schedule, rng state).
    """
    # --- validate everything before the first step ------------------------------------------
    steps = checks.positive_int(steps, "steps")
    log_every = checks.positive_int(log_every, "log_every")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    if not callable(loss_and_grads):
        raise ValueError(
            f"loss_and_grads: expected a callable (params, batch, rng) -> (loss, grads), got {loss_and_grads!r}"
        )
    if isinstance(optimizer, str):
        optimizer = get_optimizer(optimizer)
    elif not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer: expected a name or an Optimizer (get_optimizer), got {type(optimizer).__name__}")
    lr_at(0, lr, warmup_steps, steps, min_lr)  # validates the schedule arguments
    clip_norm = _optional_positive(clip_norm, "clip_norm", integer=False)
    checkpoint_every = _optional_positive(checkpoint_every, "checkpoint_every", integer=True)
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_path: expected a path when checkpoint_every is set, got None")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or "train" in meta:
        raise ValueError(f"meta: expected a dict without the key 'train' (the loop's own), got {meta!r}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta: expected JSON-serialisable data (it is stored in checkpoints), {e}") from None
    check_float_tree(params, "params")

    if opt_state is None:
        opt_state = optimizer.init(params)
        start = 0
    else:
        start = int(opt_state["step"]) if isinstance(opt_state, dict) and "step" in opt_state else -1
        if not 0 <= start <= steps:
            raise ValueError(f"opt_state: expected a state whose step count is in [0, steps = {steps}], got {start}")

    if callable(batches):
        next_batch = lambda step: batches(rng, step)  # noqa: E731
    else:
        try:
            iterator = iter(batches)
        except TypeError:
            raise ValueError(
                f"batches: expected a callable (rng, step) -> batch or an iterator, got {type(batches).__name__}"
            ) from None

        def next_batch(step):
            try:
                return next(iterator)
            except StopIteration:
                raise ValueError(
                    f"batches: the iterator ran out at step {step} (the run needs {steps - start} batches)"
                ) from None

    def save(step_done):
        train_meta = {
            "optimizer": optimizer.name,
            "hparams": _jsonable(optimizer.hparams),
            "lr": float(lr),
            "warmup_steps": int(warmup_steps),
            "min_lr": float(min_lr),
            "steps": steps,
            "clip_norm": clip_norm,
            "rng_state": _jsonable(rng.bit_generator.state),
        }
        save_checkpoint(checkpoint_path, params, opt_state, step=step_done, meta={**meta, "train": train_meta})

    # --- the loop ----------------------------------------------------------------------------
    history = {"step": [], "loss": [], "lr": [], "grad_norm": []}
    with tqdm(total=steps, initial=start, disable=None if progress else True, desc="train", unit="step") as bar:
        for step in range(start, steps):
            batch = next_batch(step)
            out = loss_and_grads(params, batch, rng)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                got = type(out).__name__
                raise ValueError(f"loss_and_grads: expected a pair (loss, grads), got {got} at step {step}")
            loss, grads = out
            try:
                loss = float(loss)
            except (TypeError, ValueError):
                raise ValueError(f"loss: expected a real number, got {type(loss).__name__} at step {step}") from None
            if not math.isfinite(loss):
                raise ValueError(f"loss: expected a finite value, got {loss} at step {step}")
            try:
                check_same_structure(grads, params, "grads", "params")
                check_float_tree(grads, "grads", finite=True)
            except ValueError as e:
                raise ValueError(f"{e} at step {step}") from None

            # ||g|| before clipping, then g <- g min(1, clip_norm / ||g||)
            grad_norm = global_norm(grads)
            if clip_norm is not None:
                grads, _ = clip_grad_norm(grads, clip_norm)

            lr_step = lr_at(step, lr, warmup_steps, steps, min_lr)
            params, opt_state = optimizer.step(params, grads, opt_state, lr=lr_step)

            history["step"].append(step)
            history["loss"].append(loss)
            history["lr"].append(lr_step)
            history["grad_norm"].append(grad_norm)
            bar.update(1)
            done = step + 1
            if done % log_every == 0 or done == steps:
                recent = history["loss"][-log_every:]
                mean_loss = sum(recent) / len(recent)
                bar.set_postfix(loss=f"{mean_loss:.4g}", lr=f"{lr_step:.3g}", gnorm=f"{grad_norm:.3g}")
            if checkpoint_path is not None and (done == steps or (checkpoint_every and done % checkpoint_every == 0)):
                save(done)

    history = {
        "step": np.asarray(history["step"], dtype=np.int64),
        "loss": np.asarray(history["loss"], dtype=np.float64),
        "lr": np.asarray(history["lr"], dtype=np.float64),
        "grad_norm": np.asarray(history["grad_norm"], dtype=np.float64),
    }
    return TrainResult(params, opt_state, history)
