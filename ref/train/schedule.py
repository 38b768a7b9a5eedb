"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

With ``W = warmup_steps`` and ``S = total_steps`` (steps counted from 0)::

    lr(s) = base_lr * s / W                                          for 0 <= s < W
    lr(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2   for W <= s < S
    lr(s) = min_lr                                                   for s >= S

so ``lr(0) = 0`` when there is a warmup (the first update only moves the optimizer's moments),
``lr(W) = base_lr`` exactly, the midpoint of the decay is ``(base_lr + min_lr) / 2`` and
``lr(S) = min_lr``. This is Hugging Face's ``get_cosine_schedule_with_warmup`` with a floor;
``warmup_steps = 0`` starts straight at ``base_lr``, and ``min_lr = base_lr`` gives a constant rate
after the warmup.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["lr_at"]


def _nonneg_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def _nonneg_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate at ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``."""
    step = _nonneg_int(step, "step")
    base_lr = _nonneg_real(base_lr, "base_lr")
    warmup_steps = _nonneg_int(warmup_steps, "warmup_steps")
    total_steps = _nonneg_int(total_steps, "total_steps")
    min_lr = _nonneg_real(min_lr, "min_lr")
    if total_steps < 1:
        raise ValueError(f"total_steps: expected an integer >= 1, got {total_steps}")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps: expected at most total_steps = {total_steps}, got {warmup_steps}")
    if min_lr > base_lr:
        raise ValueError(f"min_lr: expected at most base_lr = {base_lr}, got {min_lr}")

    if step < warmup_steps:
        # lr = base_lr s / W
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    # progress in [0, 1): how far through the decay we are
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    # lr = min_lr + (base_lr - min_lr) (1 + cos(pi progress)) / 2
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
