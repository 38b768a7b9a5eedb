"""Helpers for the model tests: random parameters and ``gradcheck`` over a parameter tree."""

from __future__ import annotations

import numpy as np

from ref.nn import gradcheck
from ref.train import check_same_structure, tree_flatten, tree_map, tree_structure, tree_unflatten

PREFIX = "params/"

# GLA's forget gate enters as logsigmoid(.) / 16: the gradients of W_a1, W_a2, b_a are 1e-3 to
# 1e-5 of the largest ones, so at gradcheck's default step eps = 1e-6 the rounding noise of the
# float64 differences (about 1e-9 absolute) reaches 1e-6 of them. These three tensors are checked
# with a step of 1e-5, which cuts that noise tenfold while their O(eps^2) truncation error stays
# tiny (the gate is smooth and damped by 1/16); every other tensor keeps 1e-6, since a larger step
# would meet the strong curvature of a GroupNorm over few channels. A wrong gradient is off by
# O(1), far above the tolerance.
GATE_STEPS = {"W_a1": 1e-5, "W_a2": 1e-5, "b_a": 1e-5}


def randomize(params, rng: np.random.Generator):
    """Every leaf redrawn at random (biases, norm scales and LayerScale included), so that no
    gradient is hidden behind a zero or a one. Matrices get std 1/sqrt(rows) (activations stay
    O(1): no gate saturates, so every gradient stays well above the finite differences' noise),
    vectors std 0.5."""

    def draw(a):
        std = 1 / np.sqrt(a.shape[0]) if a.ndim >= 2 else 0.5
        return (std * rng.standard_normal(a.shape)).astype(a.dtype)

    return tree_map(draw, params)


def gradcheck_tree(
    forward,
    backward,
    params,
    data: dict,
    *,
    rng,
    name: str,
    returns_dx: bool = True,
    steps: dict | None = None,
    rtol: float = 1e-6,
    **options,
):
    """``gradcheck`` of ``forward(params, *data.values(), **options) -> (y, cache)`` against
    ``backward(params, cache, dy)`` on every leaf of ``params`` and, when ``returns_dx``, the
    first entry of ``data`` (backward then returns ``(dx, grads)``; otherwise ``grads``).
    Non-float data (token ids) is passed through. Also checks that grads are shaped like params.

    ``steps`` maps a parameter name (the last part of its path) to its finite-difference step
    (default 1e-6, gradcheck's; see :data:`GATE_STEPS`): one ``gradcheck`` call per step, all
    with the same random cotangent. Returns the reports."""
    structure = tree_structure(params)
    inputs = {PREFIX + path: leaf for path, leaf in tree_flatten(params).items()}
    data_names = list(data)
    inputs.update(data)

    def fwd(**arrays):
        p = tree_unflatten({k[len(PREFIX) :]: v for k, v in arrays.items() if k.startswith(PREFIX)}, structure)
        y, cache = forward(p, *(arrays[k] for k in data_names), **options)
        return y, (p, cache)

    def bwd(dy, cache):
        p, c = cache
        out = backward(p, c, dy)
        named = {}
        if returns_dx:
            dx, grads = out
            named[data_names[0]] = dx
        else:
            grads = out
        check_same_structure(grads, p, "grads", "params")
        named.update({PREFIX + path: g for path, g in tree_flatten(grads).items()})
        return named

    wrt = [k for k in inputs if k.startswith(PREFIX)]
    if returns_dx:
        wrt.append(data_names[0])
    by_step: dict[float, list[str]] = {}
    for k in wrt:
        by_step.setdefault((steps or {}).get(k.rsplit("/", 1)[-1], 1e-6), []).append(k)
    seed = int(rng.integers(2**31))
    return [
        gradcheck(fwd, bwd, inputs, wrt=names, eps=eps, rtol=rtol, rng=np.random.default_rng(seed), name=name)
        for eps, names in by_step.items()
    ]
