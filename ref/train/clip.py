"""Gradient clipping by global norm (Pascanu et al., 2013; ``torch.nn.utils.clip_grad_norm_``).

The global norm treats the whole gradient tree as one long vector::

    ||g|| = sqrt( sum over leaves, sum over entries of g^2 )

and, when it exceeds ``max_norm``, scales every leaf by the same factor so that the clipped
gradient has norm ``max_norm`` exactly (up to rounding)::

    g <- g * max_norm / ||g||          if ||g|| > max_norm, else g unchanged

The direction is kept; only the length shrinks. The sum of squares is accumulated in float64
(float32 squares overflow above ~1.8e19) in the canonical leaf order, so the norm is
reproducible to the bit. Unlike PyTorch, no 1e-6 is added to the denominator: it is only ever
divided when ``||g|| > max_norm > 0``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ref.train.tree import check_float_tree, tree_map

__all__ = ["global_norm", "clip_grad_norm"]


def global_norm(tree) -> float:
    """``sqrt(sum of squares of every entry of every leaf)``, as a Python float (float64 sums)."""
    flat = check_float_tree(tree, "tree")
    total = 0.0
    for leaf in flat.values():
        x = leaf.astype(np.float64, copy=False)
        total += float(np.sum(x * x))
    return math.sqrt(total)


def clip_grad_norm(grads, max_norm: float):
    """Scale ``grads`` so that their global norm is at most ``max_norm``.

    Returns ``(clipped_grads, total_norm)`` with ``total_norm`` the norm *before* clipping. Below
    the threshold the leaves come back unchanged (the very same arrays; nothing is copied). A
    non-finite gradient raises ValueError naming its path.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not (0 < max_norm < math.inf):
        raise ValueError(f"max_norm: expected a finite number > 0, got {max_norm!r}")
    check_float_tree(grads, "grads", finite=True)
    total_norm = global_norm(grads)
    if total_norm <= max_norm:
        return grads, total_norm
    # g <- g * max_norm / ||g||
    scale = float(max_norm) / total_norm
    return tree_map(lambda g: g * scale, grads), total_norm
