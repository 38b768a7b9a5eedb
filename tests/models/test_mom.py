"""The MoM layer: router, top-k, mixer, norm, projection and the load-balancing loss, each gradient
against finite differences (the top-k selection held fixed, inputs away from ties), the forms of
the mixer agreeing inside the layer, the balance loss against the official code's steps."""

import numpy as np
import pytest

from ref.mixers.mom import FORMS
from ref.models.mom import (
    init_mom_block,
    init_mom_layer,
    load_balancing_loss,
    mom_block,
    mom_block_backward,
    mom_block_step,
    mom_layer,
    mom_layer_backward,
    route,
)
from ref.nn import gradcheck
from ref.train import tree_flatten, tree_map, tree_structure, tree_unflatten

pytestmark = pytest.mark.mom

PREFIX = "params/"


def random_layer(rng, B, T, D, H, K, V, M, top_k, *, shared=True, gated=False, min_gap=0.05):
    """Random parameters (every leaf redrawn, biases and norm weight included) and x, redrawn until
    the top_k-th and the next router logit differ by at least ``min_gap`` at every token, so that a
    finite-difference step (1e-6) never changes the selection."""
    for _ in range(100):
        params = init_mom_layer(rng, D, H, K, V, M, top_k, shared=shared, gated=gated)
        params = tree_map(lambda a: 0.7 * rng.standard_normal(a.shape), params)
        x = rng.standard_normal((B, T, D))
        if top_k == M:
            return params, x
        logits = np.sort(x @ params["router"]["W"], axis=-1)[..., ::-1]  # largest first
        if (logits[..., top_k - 1] - logits[..., top_k]).min() > min_gap:
            return params, x
    raise AssertionError("no draw without a near-tie in 100 tries")


def gradcheck_layer(params, x, *, rng, name, **options):
    """``gradcheck`` of (y, aux_loss) with random cotangents (dy, daux) on x and every parameter."""
    structure = tree_structure(params)
    inputs = {"x": x, **{PREFIX + p: leaf for p, leaf in tree_flatten(params).items()}}

    def fwd(**arrays):
        p = tree_unflatten({k[len(PREFIX) :]: v for k, v in arrays.items() if k != "x"}, structure)
        y, aux, cache = mom_layer(p, arrays["x"], **options)
        return y, np.asarray(aux), (p, cache)

    def bwd(dy, daux, cache):
        p, c = cache
        dx, grads = mom_layer_backward(p, c, dy, daux)
        assert tree_structure(grads) == structure, "grads are not shaped like params"
        return {"x": dx, **{PREFIX + k: g for k, g in tree_flatten(grads).items()}}

    return gradcheck(fwd, bwd, inputs, rng=rng, name=name)


@pytest.mark.parametrize(
    "form, shared, gated, top_k",
    [
        ("chunked", True, True, 2),
        ("recurrent", True, False, 2),
        ("varlen", False, True, 2),
        ("parallel", True, True, 3),
    ],
)
def test_finite_differences(form, shared, gated, top_k, rng):
    B, T, D, H, K, V, M = 2, 5, 4, 2, 2, 3, 3
    params, x = random_layer(rng, B, T, D, H, K, V, M, top_k, shared=shared, gated=gated)
    options = dict(top_k=top_k, form=form, chunk_size=2, aux_loss_scale=0.5)
    gradcheck_layer(params, x, rng=rng, name=f"mom_layer[{form}]", **options)


def test_forms_agree_in_the_layer(rng):
    B, T, D, H, K, V, M, top_k = 2, 9, 6, 2, 3, 2, 4, 2
    params, x = random_layer(rng, B, T, D, H, K, V, M, top_k, gated=True)
    dy = rng.standard_normal((B, T, D))
    results = {}
    for form in FORMS:
        y, aux, cache = mom_layer(params, x, top_k=top_k, form=form, chunk_size=4)
        dx, grads = mom_layer_backward(params, cache, dy, 0.3)
        results[form] = (y, aux, dx, tree_flatten(grads))
    y, aux, dx, grads = results["recurrent"]
    for form, (y2, aux2, dx2, grads2) in results.items():
        np.testing.assert_allclose(y2, y, atol=1e-12, err_msg=form)
        assert aux2 == aux
        np.testing.assert_allclose(dx2, dx, atol=1e-12, err_msg=form)
        for path in grads:
            np.testing.assert_allclose(grads2[path], grads[path], atol=1e-12, err_msg=f"{form}: {path}")


def test_top_1_routing_gives_the_router_no_gradient(rng):
    """With top_k = 1 the renormalised weight is 1 whatever the logits, and P = f in the balance
    loss: the router's gradient is exactly zero (as in the official code with topk = 1)."""
    params, x = random_layer(rng, 2, 6, 4, 2, 2, 3, 3, 1, gated=True)
    y, aux, cache = mom_layer(params, x, top_k=1)
    dx, grads = mom_layer_backward(params, cache, rng.standard_normal(y.shape), 1.0)
    assert not grads["router"]["W"].any()


def test_routing_is_the_renormalised_top_k(rng):
    """Exactly top_k nonzero weights per token, summing to 1, equal to a softmax over the selected
    logits alone; ties go to the lower memory index."""
    B, T, M, top_k = 2, 7, 5, 2
    logits = rng.standard_normal((B, T, M))
    logits[0, 0] = [1.0, 3.0, 3.0, 3.0, 0.0]  # a three-way tie for the top: memories 1 and 2 win
    w, selected, _ = route(logits, top_k)
    assert (selected.sum(axis=-1) == top_k).all() and ((w > 0) == selected).all()
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-15)
    e = np.where(selected, np.exp(logits), 0)
    np.testing.assert_allclose(w, e / e.sum(axis=-1, keepdims=True), atol=1e-15)
    np.testing.assert_array_equal(selected[0, 0], [False, True, True, False, False])


def _official_balance_loss(logits, M, top_k):
    """The official ``load_balancing_loss_func`` for one layer, step by step with loops:
    top-k of the logits, softmax over those k, scattered; one-hot mask; means over time; M^2 mean."""
    B, T, _ = logits.shape
    weights_full = np.zeros((B, T, M))
    mask = np.zeros((B, T, M))
    for b in range(B):
        for t in range(T):
            top = np.argsort(-logits[b, t], kind="stable")[:top_k]
            e = np.exp(logits[b, t, top] - logits[b, t, top].max())
            weights_full[b, t, top] = e / e.sum()
            mask[b, t, top] = 1
    tokens_per_group_and_expert = mask.mean(axis=1)  # (B, M)
    router_prob_per_group_and_expert = weights_full.mean(axis=1)  # (B, M)
    return np.mean(tokens_per_group_and_expert * router_prob_per_group_and_expert) * M**2


def test_balance_loss_is_the_official_one(rng):
    B, T, D, H, K, V, M, top_k = 3, 11, 5, 1, 2, 2, 4, 2
    params, x = random_layer(rng, B, T, D, H, K, V, M, top_k)
    _, aux, _ = mom_layer(params, x, top_k=top_k, aux_loss_scale=0.01)
    want = 0.01 * _official_balance_loss(x @ params["router"]["W"], M, top_k)
    assert aux == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("M, top_k", [(4, 1), (4, 2), (3, 3)])
def test_balance_loss_values(M, top_k):
    """Balanced routing gives top_k; all tokens to the same top_k memories gives M."""
    T = 12
    balanced = np.zeros((1, T, M), bool)
    for t in range(T):  # token t goes to memories t, t+1, ... (mod M): each memory equally often
        balanced[0, t, [(t + j) % M for j in range(top_k)]] = True
    w = balanced / top_k
    assert load_balancing_loss(w, balanced)[0] == pytest.approx(top_k)
    collapsed = np.zeros((1, T, M), bool)
    collapsed[..., :top_k] = True
    assert load_balancing_loss(collapsed / top_k, collapsed)[0] == pytest.approx(M)


def test_float32_layer(rng):
    params = init_mom_layer(rng, 6, 2, 3, 2, 4, 2, gated=True, dtype=np.float32)
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    y, aux, cache = mom_layer(params, x)
    dx, grads = mom_layer_backward(params, cache, np.ones_like(y), 1.0)
    assert y.dtype == dx.dtype == np.float32 and isinstance(aux, float)
    assert all(g.dtype == np.float32 for g in tree_flatten(grads).values())


def test_init_shapes(rng):
    params = init_mom_layer(rng, 8, 2, 3, 5, 4, 2, gated=True)
    shapes = {path: a.shape for path, a in tree_flatten(params).items()}
    assert shapes["router/W"] == (8, 4) and shapes["q_proj/W"] == (8, 6) and shapes["o_proj/W"] == (10, 8)
    assert shapes["memories/3/k_proj/W"] == (8, 6) and shapes["memories/3/v_proj/W"] == (8, 10)
    assert shapes["memories/0/g_proj/W"] == (8, 2) and shapes["shared/g_proj/b"] == (2,)
    assert shapes["norm/weight"] == (5,)
    assert "shared" not in init_mom_layer(rng, 8, 2, 3, 5, 4, shared=False)


def _layer(rng, **kw):
    return init_mom_layer(rng, 4, 2, 3, 2, 3, 2, **kw), rng.standard_normal((1, 5, 4))


def test_bad_input(rng):
    params, x = _layer(rng)
    with pytest.raises(ValueError, match=r"x: expected 3 axes \(B, T, D\), got shape \(5, 4\)"):
        mom_layer(params, x[0])
    with pytest.raises(ValueError, match=r"top_k: expected an integer in \[1, M\] = \[1, 3\], got 4"):
        mom_layer(params, x, top_k=4)
    with pytest.raises(ValueError, match=r"top_k: expected an integer in \[1, M\] = \[1, 3\], got 0"):
        init_mom_layer(rng, 4, 2, 3, 2, 3, 0)
    with pytest.raises(ValueError, match="form: expected one of 'recurrent', 'parallel', 'chunked', 'varlen'"):
        mom_layer(params, x, form="fused")
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\) with D = 4 \(the rows of params router/W\)"):
        mom_layer(params, x[..., :3])
    bad = tree_map(lambda a: a, params)
    bad["memories"][1]["v_proj"]["W"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match="params: expected the structure of init_mom_layer.*'memories/1/v_proj/W'"):
        mom_layer(bad, x)
    with pytest.raises(ValueError, match="params: expected the tree of init_mom_layer"):
        mom_layer({"router": params["router"]}, x)
    bad = tree_map(lambda a: a, params)
    bad["q_proj"]["W"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match="params: q_proj/W has 5 columns, not a multiple of H = 2"):
        mom_layer(bad, x)
    y, aux, cache = mom_layer(params, x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, D\) = \(1, 5, 4\)"):
        mom_layer_backward(params, cache, y[:, :4], 1.0)
    with pytest.raises(ValueError, match="daux: expected a finite real number"):
        mom_layer_backward(params, cache, y, float("nan"))


# ----------------------------------------------------------------------------- the block


def _router_gap(cache, top_k):
    """The smallest gap between the top_k-th and the next router logit over all tokens of a
    MoM layer's cache (inf when every memory is selected)."""
    x, W, _ = cache.router
    logits = np.sort(x @ W, axis=-1)[..., ::-1]
    return np.inf if top_k == logits.shape[-1] else float((logits[..., top_k - 1] - logits[..., top_k]).min())


def random_block(rng, B, T, D, top_k, *, min_gap=0.05, **init):
    """A block with every leaf redrawn (std 1/sqrt(rows) for matrices, 0.5 for vectors) and an x,
    redrawn until no token is within ``min_gap`` of a tie in its top_k selection."""
    for _ in range(100):
        params = init_mom_block(rng, D, **init)
        params = tree_map(
            lambda a: (1 / np.sqrt(a.shape[0]) if a.ndim == 2 else 0.5) * rng.standard_normal(a.shape), params
        )
        x = rng.standard_normal((B, T, D))
        _, _, cache = mom_block(params, x, top_k=top_k, mode="recurrent")
        if _router_gap(cache.mixer, top_k) > min_gap:
            return params, x
    raise AssertionError("no draw without a near-tie in 100 tries")


def gradcheck_block(params, x, *, rng, name, **options):
    """``gradcheck`` of the block's (y, aux_loss) with random cotangents (dy, daux)."""
    structure = tree_structure(params)
    inputs = {"x": x, **{PREFIX + p: leaf for p, leaf in tree_flatten(params).items()}}

    def fwd(**arrays):
        p = tree_unflatten({k[len(PREFIX) :]: v for k, v in arrays.items() if k != "x"}, structure)
        y, aux, cache = mom_block(p, arrays["x"], **options)
        return y, np.asarray(aux), (p, cache)

    def bwd(dy, daux, cache):
        p, c = cache
        dx, grads = mom_block_backward(p, c, dy, daux)
        assert tree_structure(grads) == structure, "grads are not shaped like params"
        return {"x": dx, **{PREFIX + k: g for k, g in tree_flatten(grads).items()}}

    return gradcheck(fwd, bwd, inputs, rng=rng, name=name)


@pytest.mark.parametrize(
    "mode, conv_size, shared, gated, top_k",
    [
        ("recurrent", 3, True, False, 2),
        ("chunked", None, True, True, 1),
        ("varlen", 2, False, True, 2),
        ("parallel", 4, False, False, 3),
    ],
)
def test_block_finite_differences(mode, conv_size, shared, gated, top_k, rng):
    """Every parameter of the block (12)-(13), x, and the balance loss's path (daux random)."""
    B, T, D = 2, 5, 4
    init = dict(num_heads=2, num_memories=3, key_dim=4, value_dim=6, shared=shared, gated=gated, conv_size=conv_size, mlp_hidden=5)
    params, x = random_block(rng, B, T, D, top_k, **init)
    assert ("conv" in params) == (conv_size is not None)
    options = dict(top_k=top_k, mode=mode, chunk_size=2, aux_loss_scale=0.5)
    gradcheck_block(params, x, rng=rng, name=f"mom_block[{mode}]", **options)


def test_block_without_mixture_is_linear_attention(rng):
    """num_memories=1, shared=False: the one memory takes every token at weight 1, so the block is
    pre-norm linear attention (o_t = K^-1/2 q_t sum_s k_s^T v_s) and the balance loss a constant."""
    D, T = 6, 7
    params = init_mom_block(rng, D, 1, num_memories=1, key_dim=3, value_dim=4, shared=False)
    x = rng.standard_normal((2, T, D))
    y, aux, _ = mom_block(params, x)
    assert aux == pytest.approx(0.01)  # M^2 f P with M = 1, f = P = 1, times 0.01
    mix = params["mixer"]
    n = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * params["norm1"]["weight"]
    q, k, v = n @ mix["q_proj"]["W"], n @ mix["memories"][0]["k_proj"]["W"], n @ mix["memories"][0]["v_proj"]["W"]
    scores = np.einsum("btk,bsk->bts", q, k) * 3**-0.5 * np.tril(np.ones((T, T)))
    o = scores @ v  # (B, T, V): causal linear attention
    o = o / np.sqrt((o**2).mean(-1, keepdims=True) + 1e-6) * mix["norm"]["weight"]
    h = x + o @ mix["o_proj"]["W"]
    want = h + mlp_reference(params, h)
    np.testing.assert_allclose(y, want, atol=1e-12)


def mlp_reference(params, h):
    n = h / np.sqrt((h**2).mean(-1, keepdims=True) + 1e-6) * params["norm2"]["weight"]
    a = n @ params["mlp"]["W_gate"]
    return (a / (1 + np.exp(-a)) * (n @ params["mlp"]["W_up"])) @ params["mlp"]["W_down"]


@pytest.mark.parametrize("conv_size, shared, gated", [(4, True, True), (None, False, False)])
def test_block_forms_agree_and_decode_equals_forward(conv_size, shared, gated, rng):
    params = init_mom_block(rng, 6, 2, num_memories=4, key_dim=4, value_dim=6, shared=shared, gated=gated, conv_size=conv_size)
    params = tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape), params)
    x = rng.standard_normal((2, 9, 6))
    y, aux, _ = mom_block(params, x, mode="recurrent")
    for mode in ("parallel", "chunked", "varlen"):
        y2, aux2, _ = mom_block(params, x, mode=mode, chunk_size=4)
        np.testing.assert_allclose(y2, y, atol=1e-12, err_msg=mode)
        assert aux2 == pytest.approx(aux, rel=1e-14)
    state, steps = None, []
    for t in range(x.shape[1]):
        y_t, state = mom_block_step(params, x[:, t], state)
        steps.append(y_t)
    np.testing.assert_allclose(np.stack(steps, axis=1), y, atol=1e-12)
    assert state["memories"].shape == (2, 4, 2, 2, 3) and (state["shared"] is None) is not shared
    assert (state["conv"] is None) is (conv_size is None)


def test_block_default_top_k_is_the_official_two(rng):
    params = init_mom_block(rng, 4, 1, num_memories=4, key_dim=2, value_dim=4)
    x = rng.standard_normal((1, 6, 4))
    _, _, cache = mom_block(params, x)
    assert (cache.mixer.selected.sum(-1) == 2).all()  # the selection: top-2 of 4
    _, _, cache = mom_block(init_mom_block(rng, 4, 1, num_memories=1, key_dim=2, value_dim=4), x)
    assert (cache.mixer.selected.sum(-1) == 1).all()  # one memory: top-1


def test_block_bad_input(rng):
    params = init_mom_block(rng, 4, 1, num_memories=3, key_dim=2, value_dim=4, conv_size=2)
    x = rng.standard_normal((1, 5, 4))
    with pytest.raises(ValueError, match=r"top_k: expected an integer in \[1, M\] = \[1, 3\], got 4"):
        mom_block(params, x, top_k=4)
    with pytest.raises(ValueError, match="mode: expected one of 'recurrent', 'parallel', 'chunked', 'varlen'"):
        mom_block(params, x, mode="fused")
    with pytest.raises(ValueError, match="params: expected a MoM block"):
        mom_block({**params, "extra": {}}, x)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of the key width key_dim = 2"):
        init_mom_block(rng, 4, 3, key_dim=2, value_dim=6)
    with pytest.raises(ValueError, match="conv_size: expected an integer >= 1, got 0"):
        init_mom_block(rng, 4, 1, conv_size=0)
    y, aux, cache = mom_block(params, x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, D\)"):
        mom_block_backward(params, cache, y[:, :3], 1.0)
    with pytest.raises(ValueError, match="state: expected None or the dict"):
        mom_block_step(params, x[:, 0], {"memories": None})
