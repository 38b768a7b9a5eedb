"""Optimizers against independent scalar implementations of the published update rules.

The references below loop over one scalar parameter at a time with Python floats and the
``math`` module, in the textbook form of each rule (Adam with explicit ``m_hat`` and ``v_hat``),
so they share no code and no arrangement of the arithmetic with ``ref.train.optim``.
"""

import math

import numpy as np
import pytest

from ref.train import (
    adam_init,
    adam_step,
    adamw_init,
    adamw_step,
    get_optimizer,
    lr_at,
    sgd_init,
    sgd_step,
    tree_flatten,
    tree_leaves,
    tree_map,
)


def make_params(rng, dtype=np.float64):
    return {
        "blocks": [
            {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)},
            {"W": rng.standard_normal((4, 2)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)},
        ],
        "emb": rng.standard_normal(5).astype(dtype),
    }


def random_grads(rng, params, n_steps):
    return [tree_map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params) for _ in range(n_steps)]


# --- scalar references (one parameter, Python floats) ------------------------------------------


def sgd_scalar(p, gs, lrs, momentum, dampening, weight_decay, nesterov):
    """SGD as in the PyTorch documentation of torch.optim.SGD."""
    b = None
    for g, lr in zip(gs, lrs):
        g = g + weight_decay * p
        if momentum != 0:
            b = g if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p, (0.0 if b is None else b)


def adam_scalar(p, gs, lrs, beta1, beta2, eps, weight_decay, decoupled):
    """Algorithm 1 of Kingma & Ba (2015); decoupled=True: Algorithm 2 of Loshchilov & Hutter (2019)."""
    m = v = 0.0
    for t, (g, lr) in enumerate(zip(gs, lrs), start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p, m, v


def scalar_reference(params, grads_seq, fn):
    """Run ``fn(p, [g_1, g_2, ...])`` on every scalar of every leaf; returns trees of its outputs."""
    flat_p = tree_flatten(params)
    flat_gs = [tree_flatten(g) for g in grads_seq]
    outs = {}
    for path, p in flat_p.items():
        results = [fn(float(p.flat[i]), [float(g[path].flat[i]) for g in flat_gs]) for i in range(p.size)]
        outs[path] = [np.array([r[k] for r in results]).reshape(p.shape) for k in range(len(results[0]))]
    return outs


def run(step, init, params, grads_seq, lrs, **hparams):
    state = init(params)
    for g, lr in zip(grads_seq, lrs):
        params, state = step(params, g, state, lr=lr, **hparams)
    return params, state


LRS = [lr_at(s, 0.1, 2, 6) for s in range(6)]  # a warmup and a decay: the lr changes every step


@pytest.mark.parametrize(
    "hparams",
    [
        dict(momentum=0.0),
        dict(momentum=0.9),
        dict(momentum=0.9, dampening=0.3),
        dict(momentum=0.8, nesterov=True),
        dict(momentum=0.9, weight_decay=0.05),
        dict(momentum=0.0, dampening=0.5, weight_decay=0.05),  # dampening unused without momentum
    ],
)
def test_sgd_matches_scalar_reference(rng, hparams):
    params = make_params(rng)
    grads_seq = random_grads(rng, params, len(LRS))
    new_params, state = run(sgd_step, sgd_init, params, grads_seq, LRS, **hparams)
    h = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False) | hparams
    ref = scalar_reference(params, grads_seq, lambda p, gs: sgd_scalar(p, gs, LRS, **h))
    assert int(state["step"]) == len(LRS)
    for path, p in tree_flatten(new_params).items():
        np.testing.assert_allclose(p, ref[path][0], rtol=1e-13, atol=1e-15, err_msg=path)
        if h["momentum"]:
            np.testing.assert_allclose(tree_flatten(state["momentum_buffer"])[path], ref[path][1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "step, init, decoupled, hparams",
    [
        (adam_step, adam_init, False, dict()),
        (adam_step, adam_init, False, dict(weight_decay=0.1, betas=(0.8, 0.99))),
        (adam_step, adam_init, False, dict(eps=0.3)),  # a large eps: added after the square root
        (adamw_step, adamw_init, True, dict()),  # weight_decay defaults to 0.01
        (adamw_step, adamw_init, True, dict(weight_decay=0.5, betas=(0.0, 0.5), eps=1e-3)),
    ],
)
def test_adam_and_adamw_match_scalar_reference(rng, step, init, decoupled, hparams):
    params = make_params(rng)
    grads_seq = random_grads(rng, params, len(LRS))
    new_params, state = run(step, init, params, grads_seq, LRS, **hparams)
    h = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01 if decoupled else 0.0) | hparams
    (b1, b2), eps, wd = h["betas"], h["eps"], h["weight_decay"]
    ref = scalar_reference(params, grads_seq, lambda p, gs: adam_scalar(p, gs, LRS, b1, b2, eps, wd, decoupled))
    assert int(state["step"]) == len(LRS) and state["step"].dtype == np.int64
    for path, p in tree_flatten(new_params).items():
        p_ref, m_ref, v_ref = ref[path]
        np.testing.assert_allclose(p, p_ref, rtol=1e-13, atol=1e-15, err_msg=path)
        np.testing.assert_allclose(tree_flatten(state["exp_avg"])[path], m_ref, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(tree_flatten(state["exp_avg_sq"])[path], v_ref, rtol=1e-13, atol=1e-15)


def test_first_adam_step_moves_each_weight_by_lr(rng):
    """With bias correction, step 1 is p - lr g / (|g| + eps): a move of lr * sign(g) (eps -> 0)."""
    params = make_params(rng)
    grads = random_grads(rng, params, 1)[0]
    new, _ = adam_step(params, grads, adam_init(params), lr=0.01, eps=0.0)
    for p, q, g in zip(*(tree_flatten(t).values() for t in (params, new, grads))):
        np.testing.assert_allclose(q - p, -0.01 * np.sign(g), rtol=1e-12)


def test_adamw_decay_is_decoupled(rng):
    """With a zero gradient Adam's moments stay zero: AdamW only shrinks p by (1 - lr wd), Adam does nothing."""
    params = make_params(rng)
    zeros = tree_map(np.zeros_like, params)
    new, _ = adamw_step(params, zeros, adamw_init(params), lr=0.1, weight_decay=0.5)
    for p, q in zip(tree_flatten(params).values(), tree_flatten(new).values()):
        np.testing.assert_array_equal(q, p * (1 - 0.1 * 0.5))
    new, _ = adam_step(params, zeros, adam_init(params), lr=0.1, weight_decay=0.0)
    for p, q in zip(tree_flatten(params).values(), tree_flatten(new).values()):
        np.testing.assert_array_equal(q, p)


@pytest.mark.parametrize(
    "step, init, hparams",
    [
        (sgd_step, sgd_init, dict(momentum=0.9, weight_decay=0.1, nesterov=True)),
        (adam_step, adam_init, dict(weight_decay=0.1)),
        (adamw_step, adamw_init, dict()),
    ],
)
def test_steps_are_pure(rng, step, init, hparams):
    """Inputs are never modified, float32 stays float32, and the same inputs give the same outputs."""
    params = make_params(rng, np.float32)
    grads_seq = random_grads(rng, params, 2)
    state = init(params)
    params, state = step(params, grads_seq[0], state, lr=0.1, **hparams)  # a state with non-zero moments
    inputs = [params, grads_seq[1], state]
    snapshot = [x.copy() for x in tree_leaves(inputs)]
    out1 = step(params, grads_seq[1], state, lr=0.1, **hparams)
    out2 = step(params, grads_seq[1], state, lr=0.1, **hparams)
    after = tree_leaves(inputs)
    for before, now in zip(snapshot, after):
        np.testing.assert_array_equal(before, now)
    for a, b in zip(tree_flatten(list(out1)).values(), tree_flatten(list(out2)).values()):
        np.testing.assert_array_equal(a, b)
        if a.ndim:
            assert a.dtype == np.float32
    new_params, new_state = out1
    for leaf in [*tree_flatten(new_params).values(), *tree_flatten(new_state).values()]:
        assert not any(np.shares_memory(leaf, old) for old in after)


def least_squares(rng, n=64, d=4):
    """min_w,b  L = |X w + b - y|^2 / (2 n), solved exactly by lstsq."""
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n)
    A = np.hstack([X, np.ones((n, 1))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]

    def loss_and_grads(params):
        r = X @ params["w"] + params["b"] - y  # (n,)
        return r @ r / (2 * n), {"w": X.T @ r / n, "b": np.array([r.sum() / n])}

    return loss_and_grads, {"w": sol[:d], "b": sol[d:]}


@pytest.mark.parametrize(
    "name, hparams, lr",
    [
        ("sgd", dict(), 0.3),
        ("sgd", dict(momentum=0.9), 0.05),
        ("sgd", dict(momentum=0.9, nesterov=True), 0.05),
        ("adam", dict(), 0.1),
        ("adamw", dict(weight_decay=0.0), 0.1),
    ],
)
def test_converges_on_least_squares(rng, name, hparams, lr):
    loss_and_grads, solution = least_squares(rng)
    opt = get_optimizer(name, **hparams)
    params = {"w": np.zeros(4), "b": np.zeros(1)}
    state = opt.init(params)
    steps = 400
    for s in range(steps):
        _, grads = loss_and_grads(params)
        params, state = opt.step(params, grads, state, lr=lr_at(s, lr, 10, steps))
    for key in ("w", "b"):
        np.testing.assert_allclose(params[key], solution[key], atol=1e-4, err_msg=f"{name} {hparams}")


def test_adamw_weight_decay_shrinks_the_solution(rng):
    """Decoupled decay pulls the fixed point towards 0: a smaller norm than the least-squares solution."""
    loss_and_grads, solution = least_squares(rng)
    params = {"w": np.zeros(4), "b": np.zeros(1)}
    state = adamw_init(params)
    for s in range(400):
        _, grads = loss_and_grads(params)
        params, state = adamw_step(params, grads, state, lr=lr_at(s, 0.1, 10, 400), weight_decay=0.5)
    assert np.linalg.norm(params["w"]) < 0.99 * np.linalg.norm(solution["w"])


def test_get_optimizer_binds_hparams(rng):
    params = make_params(rng)
    grads = random_grads(rng, params, 1)[0]
    opt = get_optimizer("sgd", momentum=0.9, nesterov=True)
    assert opt.name == "sgd" and opt.hparams == {"momentum": 0.9, "nesterov": True}
    a, _ = opt.step(params, grads, opt.init(params), lr=0.1)
    b, _ = sgd_step(params, grads, sgd_init(params), lr=0.1, momentum=0.9, nesterov=True)
    for x, y in zip(tree_flatten(a).values(), tree_flatten(b).values()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "name, hparams, match",
    [
        ("rmsprop", {}, "name: expected one of 'sgd', 'adam', 'adamw', got 'rmsprop'"),
        ("adam", {"momentum": 0.9}, r"hparams: adam takes \['betas', 'eps', 'weight_decay'\], got unknown \['momentum'\]"),
        ("adamw", {"lr": 0.1}, "hparams: lr is not bound here"),
        ("adamw", {"betas": (0.9, 1.0)}, r"betas\[1\]: expected a number in \[0.0, 1.0\), got 1.0"),
        ("sgd", {"nesterov": True}, "nesterov: expected momentum > 0 and dampening = 0"),
    ],
)
def test_get_optimizer_refuses_bad_choices(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        get_optimizer(name, **hparams)


def bad_step_cases(rng):
    p = make_params(rng)
    g = random_grads(rng, p, 1)[0]
    nan = tree_map(np.copy, g)
    nan["blocks"][1]["W"][2, 1] = np.nan
    shape = tree_map(np.copy, g)
    shape["blocks"][1]["W"] = np.zeros((2, 4))
    dtype = tree_map(lambda x: x.astype(np.float32), g)
    ints = tree_map(np.copy, p)
    ints["emb"] = np.arange(5)
    s = adam_init(p)
    return [
        (adam_step, (p, g, s), dict(lr=-0.1), r"lr: expected a number >= 0.0, got -0.1"),
        (adam_step, (p, g, s), dict(lr=float("nan")), "lr: expected a finite real number, got nan"),
        (adam_step, (p, g, s), dict(lr=0.1, betas=(1.0, 0.9)), r"betas\[0\]: expected a number in \[0.0, 1.0\)"),
        (adam_step, (p, g, s), dict(lr=0.1, betas=(-0.1, 0.9)), r"betas\[0\]: expected a number in \[0.0, 1.0\)"),
        (adam_step, (p, g, s), dict(lr=0.1, betas=0.9), r"betas: expected a pair \(beta1, beta2\), got 0.9"),
        (adam_step, (p, g, s), dict(lr=0.1, eps=-1e-8), "eps: expected a number >= 0.0"),
        (adamw_step, (p, g, s), dict(lr=0.1, weight_decay=-0.01), "weight_decay: expected a number >= 0.0"),
        (adam_step, (p, nan, s), dict(lr=0.1), r"grads/blocks/1/W: expected finite values, got 1 non-finite \(first at index \(2, 1\)"),
        (adam_step, (p, shape, s), dict(lr=0.1), r"grads: expected the structure of params; at 'blocks/1/W': expected shape \(4, 2\), got \(2, 4\)"),
        (adam_step, (p, dtype, s), dict(lr=0.1), r"grads: .* at 'blocks/0/W': expected dtype float64, got float32"),
        (adam_step, (ints, g, s), dict(lr=0.1), "params/emb: expected dtype float32 or float64, got int64"),
        (adam_step, (p, g, sgd_init(p)), dict(lr=0.1), r"state: expected a dict with keys \['exp_avg', 'exp_avg_sq', 'step'\]"),
        (adam_step, (p, g, {**s, "step": 3}), dict(lr=0.1), "state/step: expected a 0-d integer array >= 0"),
        (adam_step, (p, g, {**s, "exp_avg": shape}), dict(lr=0.1), "state/exp_avg: expected the structure of params"),
        (sgd_step, (p, g, sgd_init(p)), dict(lr=0.1, momentum=-0.9), "momentum: expected a number >= 0.0"),
        (sgd_step, (p, g, sgd_init(p)), dict(lr=0.1, momentum=0.9, dampening=1.5), r"dampening: expected a number in \[0.0, 1.0\]"),
        (sgd_step, (p, g, sgd_init(p)), dict(lr=0.1, nesterov=True), "nesterov: expected momentum > 0"),
    ]


def test_bad_inputs_name_the_argument(rng):
    for step, args, kwargs, match in bad_step_cases(rng):
        with pytest.raises(ValueError, match=match):
            step(*args, **kwargs)
