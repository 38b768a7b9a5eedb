"""Losses: cross-entropy over logits (PyTorch semantics) and mean squared error.

cross_entropy(logits, targets): logits (..., V) unnormalized scores over V classes,
targets (...) integer class ids in [0, V) or ``ignore_index`` (default -100).
With p = log_softmax(logits) and label smoothing eps, the target distribution of a position is
    q = (1 - eps) onehot(target) + eps / V
and its loss is
    l = -sum_v q_v p_v = -(1 - eps) p[target] - eps / V * sum_v p_v         (0 where ignored)
Reductions: "none" gives l (...); "sum" gives sum l; "mean" gives sum l / (number of positions
that are not ignored), as ``torch.nn.functional.cross_entropy``. Class weights are not supported.

Every target ignored, reduction "mean": PyTorch returns 0/0 = NaN. Here the loss is 0.0 and
the gradient is zero (there is nothing to learn from), so a batch made only of padding never
poisons a run with NaN.

Backward w.r.t. the logits, from the upstream gradient dloss (a scalar, or (...) for "none"):
since sum_v q_v = 1,  dl/dlogits = softmax(logits) - q, so
    dlogits = (softmax(logits) - q) * keep * s
with keep = 0 at ignored positions and s = dloss / count ("mean"), dloss ("sum"), dloss[...]
("none"). The targets get no gradient (None).

mse(pred, target): pred and target of one shape; l = (pred - target)^2 elementwise, reduced by
"mean" (default), "sum" or "none". Backward: dpred = 2 (pred - target) * s = -dtarget.
The scalar losses are returned as 0-d arrays in the dtype of the input.
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.nn import _validate

__all__ = ["cross_entropy", "cross_entropy_backward", "mse", "mse_backward"]

_REDUCTIONS = ("mean", "sum", "none")


def _dloss(dloss, reduction: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """The upstream gradient of the loss: a scalar (0-d array or Python float) unless "none"."""
    if reduction != "none" and isinstance(dloss, numbers.Real) and not isinstance(dloss, bool):
        dloss = np.asarray(dloss, dtype=dtype)
    return _validate.cotangent(dloss, "dloss", shape if reduction == "none" else (), dtype, "(...)")


def cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
):
    """Forward. Returns ``(loss, cache)``: a 0-d array, or (...) for ``reduction="none"``."""
    logits = checks.float_array(logits, "logits")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., V) with V >= 1, got {logits.shape}")
    V = logits.shape[-1]
    targets = _validate.int_array(targets, "targets")
    checks.same_shape(targets, "targets", logits.shape[:-1], "(...)", "the leading axes of logits")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index: expected an integer, got {ignore_index!r}")
    eps = _validate.in_unit_interval(label_smoothing, "label_smoothing")
    reduction = checks.one_of(reduction, "reduction", _REDUCTIONS)
    keep = targets != ignore_index  # (...)
    bad = keep & ((targets < 0) | (targets >= V))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"targets: expected class ids in [0, V) = [0, {V}) or ignore_index = {ignore_index}, "
            f"got {targets[where]} at index {where}"
        )

    # p = log_softmax(logits)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (..., V)
    safe_targets = np.where(keep, targets, 0)  # any valid id where ignored; masked below
    logp_target = np.take_along_axis(logp, safe_targets[..., None], axis=-1)[..., 0]  # (...)
    # l = -(1 - eps) p[target] - eps / V * sum_v p_v, and 0 where ignored
    per_position = -(1.0 - eps) * logp_target
    if eps > 0:
        per_position = per_position - (eps / V) * logp.sum(axis=-1)
    per_position = np.where(keep, per_position, 0).astype(logits.dtype, copy=False)  # (...)
    count = int(keep.sum())
    if reduction == "none":
        loss = per_position
    elif reduction == "sum":
        loss = per_position.sum()
    else:
        # mean over the positions that are not ignored; 0 (not 0/0 = NaN) if there are none
        loss = per_position.sum() / max(count, 1)
    loss = np.asarray(loss, dtype=logits.dtype)
    cache = (logp, safe_targets, keep, count, eps, reduction)
    return loss, cache


def cross_entropy_backward(dloss, cache):
    """Backward. Returns ``(dlogits, None)``: no gradient for the integer targets."""
    logp, safe_targets, keep, count, eps, reduction = cache
    V, dtype = logp.shape[-1], logp.dtype
    dloss = _dloss(dloss, reduction, keep.shape, dtype)
    # q = (1 - eps) onehot(target) + eps / V
    q = np.full(logp.shape, eps / V, dtype=dtype)  # (..., V)
    np.put_along_axis(q, safe_targets[..., None], (1.0 - eps) + eps / V, axis=-1)
    # s = dloss / count (mean), dloss (sum), dloss[...] (none);  times keep
    s = dloss / max(count, 1) if reduction == "mean" else dloss
    s = np.where(keep, s, 0).astype(dtype, copy=False)  # (...)
    # dlogits = (softmax(logits) - q) * keep * s
    dlogits = (np.exp(logp) - q) * s[..., None]  # (..., V)
    return dlogits, None


def mse(pred: np.ndarray, target: np.ndarray, *, reduction: str = "mean"):
    """Forward. Returns ``(loss, cache)``: a 0-d array, or the shape of pred for ``reduction="none"``."""
    pred = checks.float_array(pred, "pred")
    target = checks.float_array(target, "target")
    checks.same_shape(target, "target", pred.shape, "(...)", "the shape of pred")
    checks.same_dtype(target, "target", pred.dtype, "the dtype of pred")
    reduction = checks.one_of(reduction, "reduction", _REDUCTIONS)
    diff = pred - target
    # l = (pred - target)^2
    sq = diff * diff
    if reduction == "none":
        loss = sq
    else:
        loss = np.asarray(sq.sum() if reduction == "sum" else sq.mean(), dtype=pred.dtype)
    cache = (diff, reduction)
    return loss, cache


def mse_backward(dloss, cache):
    """Backward. Returns ``(dpred, dtarget)``."""
    diff, reduction = cache
    dloss = _dloss(dloss, reduction, diff.shape, diff.dtype)
    # dpred = 2 (pred - target) * s,  s = dloss / size (mean), dloss (sum, none)
    s = dloss / diff.size if reduction == "mean" else dloss
    dpred = 2 * diff * s
    return dpred, -dpred
