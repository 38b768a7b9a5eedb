"""ViR: finite differences on every parameter, every retention form, the authors' parallel formula,
the constant-memory recurrent path against the parallel forward, and the class-token position.
The ViT baseline: finite differences under both masks, softmax attention written out, KV-cache
decoding against the parallel forward, and what the class token's position does under each mask."""

import functools
import math

import numpy as np
import pytest

from ref.mixers.attention import KVCache
from ref.models.vir import (
    VIR_MODES,
    _embed,
    init_vir,
    init_vir_block,
    init_vir_retention,
    vir_backward,
    vir_block,
    vir_block_backward,
    vir_forward,
    vir_gammas,
    vir_loss_and_grads,
    vir_recurrent,
    vir_retention,
    vit_attention,
    vit_attention_backward,
    vit_backward,
    vit_block,
    vit_block_backward,
    vit_block_step,
    vit_forward,
    vit_loss_and_grads,
    vit_recurrent,
)
from ref.nn import cross_entropy, cross_entropy_backward
from ref.tasks import load_digits
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.vir


def small_vir(rng, **kwargs):
    config = dict(image_size=4, patch_size=2, num_classes=3, D=4, depth=1, num_heads=2, mlp_ratio=2)
    return randomize(init_vir(rng, **{**config, **kwargs}), rng)


def test_decay_schedule_is_the_authors():
    g = vir_gammas(5)
    assert g[0] == pytest.approx(1 - 1 / 32) and g[-1] == pytest.approx(1 - 1 / 512)
    ratios = (1 - g[1:]) / (1 - g[:-1])  # 1 - gamma is geometric from 1/32 to 1/512
    assert np.allclose(ratios, ratios[0]) and ratios[0] == pytest.approx(16**-0.25)
    assert vir_gammas(1)[0] == pytest.approx(1 - 1 / 32)


@pytest.mark.parametrize(
    "class_token, mode", [("last", "chunked"), ("first", "parallel"), ("last", "decay_matrix"), ("last", "recurrent")]
)
def test_model_gradcheck_every_parameter(rng, class_token, mode):
    params = small_vir(rng)
    images = rng.standard_normal((2, 1, 4, 4))
    gradcheck_tree(
        vir_forward,
        vir_backward,
        params,
        {"images": images},
        rng=rng,
        name="vir",
        returns_dx=False,
        class_token=class_token,
        mode=mode,
        chunk_size=2,
    )


def test_block_gradcheck_every_parameter(rng):
    params = randomize(init_vir_block(rng, 4, 2, mlp_ratio=1.5), rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_tree(vir_block, vir_block_backward, params, {"x": x}, rng=rng, name="vir_block", mode="recurrent")


def test_loss_and_grads_is_the_gradient_of_the_loss(rng):
    params = small_vir(rng, num_classes=4)
    images, labels = rng.standard_normal((3, 1, 4, 4)), np.array([0, 3, 1])

    def loss(p, images):
        logits, cache = vir_forward(p, images)
        value, c_loss = cross_entropy(logits, labels)
        return value, (cache, c_loss)

    def loss_backward(p, cache, dloss):
        cache, c_loss = cache
        return vir_backward(p, cache, cross_entropy_backward(dloss, c_loss)[0])

    gradcheck_tree(loss, loss_backward, params, {"images": images}, rng=rng, name="vir loss", returns_dx=False)
    value, grads = vir_loss_and_grads(params, (images, labels), rng)
    want, cache = loss(params, images)
    assert value == pytest.approx(float(want))
    assert_within("grads", grads["head"]["W"], loss_backward(params, cache, 1.0)["head"]["W"], 0)


def test_retention_equals_the_authors_parallel_formula(rng):
    """((q / sqrt(K)) k^T ⊙ mask) v with mask_nm = gamma^(n-m) for n >= m (no softmax), then W_o."""
    p = randomize(init_vir_retention(rng, 8, 2), rng)
    x = rng.standard_normal((2, 7, 8))
    B, T, _ = x.shape
    q = np.einsum("btd,dhk->bhtk", x, p["W_q"]) + p["b_q"][:, None, :]
    k = np.einsum("btd,dhk->bhtk", x, p["W_k"]) + p["b_k"][:, None, :]
    v = np.einsum("btd,dhk->bhtk", x, p["W_v"]) + p["b_v"][:, None, :]
    gammas = 1 - np.exp(np.linspace(math.log(1 / 32), math.log(1 / 512), 2))
    n, m = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = np.where(n >= m, gammas[:, None, None] ** np.maximum(n - m, 0), 0.0)  # (H, T, T)
    o = ((q / 2) @ np.swapaxes(k, -1, -2) * mask) @ v  # K = 4
    want = np.moveaxis(o, 1, 2).reshape(B, T, 8) @ p["W_o"] + p["b_o"]
    assert set(VIR_MODES) == {"parallel", "decay_matrix", "chunked", "recurrent"}
    for mode in VIR_MODES:
        y, _ = vir_retention(p, x, mode=mode, chunk_size=3)
        assert_within(mode, y, want, 1e-12)


@pytest.mark.parametrize("class_token", ["last", "first"])
def test_recurrent_inference_equals_every_parallel_form(rng, class_token):
    params = small_vir(rng, image_size=(4, 6), depth=2)
    images = rng.standard_normal((3, 1, 4, 6))  # 6 patches + the class token
    logits, _ = vir_forward(params, images, class_token=class_token)
    for chunk_size in (1, 3, 16):
        chunked, _ = vir_forward(params, images, class_token=class_token, mode="chunked", chunk_size=chunk_size)
        assert_within(f"chunked {chunk_size}", chunked, logits, 1e-12)
    decay_matrix, _ = vir_forward(params, images, class_token=class_token, mode="decay_matrix")
    assert_within("decay_matrix", decay_matrix, logits, 1e-12)
    recurrent, states = vir_recurrent(params, images, class_token=class_token)
    assert_within("recurrent", recurrent, logits, 1e-12)
    assert [s.shape for s in states] == [(3, 2, 2, 2)] * 2  # (B, H, K, V) per block


def test_recurrent_state_does_not_grow_with_the_image(rng):
    small = init_vir(rng, image_size=4, patch_size=2, D=8, depth=1, num_heads=2)
    large = init_vir(rng, image_size=16, patch_size=2, D=8, depth=1, num_heads=2)
    _, s_small = vir_recurrent(small, rng.random((1, 1, 4, 4)))  # 4 patches
    _, s_large = vir_recurrent(large, rng.random((1, 1, 16, 16)))  # 64 patches
    assert s_small[0].shape == s_large[0].shape == (1, 2, 4, 4)


def test_a_class_token_read_first_sees_nothing(rng):
    """Causal retention: the first token's output depends on no other token, so with the class
    token first every image gets the same logits (the ablation the lesson trains to chance)."""
    params = small_vir(rng, depth=2)
    images = rng.standard_normal((4, 1, 4, 4))
    first, _ = vir_forward(params, images, class_token="first")
    assert_within("first", first, np.broadcast_to(first[0], first.shape), 1e-12)
    last, _ = vir_forward(params, images, class_token="last")
    assert np.abs(last - last[0]).max() > 1e-3


def test_patches_are_tokens_in_row_major_order(rng):
    params = init_vir(rng, image_size=(4, 6), patch_size=2, D=4, depth=1, num_heads=1)
    params = {**params, "blocks": [{**params["blocks"][0], "ls1": np.zeros(4), "ls2": np.zeros(4)}]}
    images = np.zeros((1, 1, 4, 6))
    images[0, 0, 2:4, 4:6] = rng.random((2, 2))  # the patch at grid row 1, column 2: token 1 * 3 + 2
    x_tokens, _ = vir_forward(params, images, class_token="last")  # smoke: the model runs
    x, _ = _embed(params, images, "last")  # the token sequence before the blocks
    moved = np.abs(x[0, :6] - params["pos_embed"] - params["patch"]["b"]).max(axis=-1)  # (6,)
    assert np.flatnonzero(moved > 1e-12).tolist() == [5] and x_tokens.shape == (1, 10)


def test_init_follows_the_authors(rng):
    p = init_vir(rng, D=16, depth=2, num_heads=4)
    assert p["patch"]["W"].shape == (16, 1, 2, 2) and p["pos_embed"].shape == (16, 16)  # 8x8 digits: 16 patches
    assert np.all(p["blocks"][1]["ls1"] == 1e-5) and np.all(p["blocks"][0]["ls2"] == 1e-5)
    assert np.abs(p["cls_token"]).max() < 1e-5
    assert p["blocks"][0]["mlp"]["W_1"].shape == (16, 64)
    assert p["blocks"][0]["mixer"]["W_q"].shape == (16, 4, 4) and not p["blocks"][0]["mixer"]["b_q"].any()


def test_trains_on_digits_with_the_training_loop(rng):
    from ref.train import train

    X, y = load_digits()
    X, y = (X[:256] / 16.0).reshape(-1, 1, 8, 8), y[:256]  # 8 batches of 32 images, in turn
    params = init_vir(rng, D=8, depth=1, num_heads=2)  # the paper's LayerScale 1e-5
    batches = lambda r, s: (X[s % 8 * 32 : (s % 8 + 1) * 32], y[s % 8 * 32 : (s % 8 + 1) * 32])
    out = train(params, vir_loss_and_grads, batches, steps=100, rng=rng, lr=1e-2, progress=False)
    assert out.history["loss"][-8:].mean() < 0.85 * out.history["loss"][:8].mean()  # from ln 10 = 2.30
    first = functools.partial(vir_loss_and_grads, class_token="first")
    loss, grads = first(params, (X[:4], y[:4]), rng)
    assert np.isfinite(loss)
    assert not grads["patch"]["W"].any() and not grads["pos_embed"].any()  # read first, no patch reaches the head


def test_bad_inputs_name_the_argument(rng):
    params = init_vir(rng, image_size=4, patch_size=2, D=4, depth=1, num_heads=2)
    images = rng.random((2, 1, 4, 4))
    with pytest.raises(ValueError, match="images: 6x6 images in 2x2 patches give N = 9 tokens"):
        vir_forward(params, rng.random((2, 1, 6, 6)))
    with pytest.raises(ValueError, match=r"images: expected shape \(B, C, H, W\) with C = 1"):
        vir_forward(params, rng.random((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="images: expected 4 axes"):
        vir_forward(params, images[:, 0])
    with pytest.raises(ValueError, match="class_token: expected one of 'last', 'first'"):
        vir_forward(params, images, class_token="middle")
    with pytest.raises(ValueError, match="mode: expected one of 'parallel', 'decay_matrix', 'chunked', 'recurrent'"):
        vir_forward(params, images, mode="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        vir_forward(params, images, mode="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="batch: expected a pair"):
        vir_loss_and_grads(params, images)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of the model width"):
        init_vir(rng, D=6, num_heads=4)
    with pytest.raises(ValueError, match="patch_size: expected a divisor of both image sides"):
        init_vir(rng, image_size=8, patch_size=3)
    with pytest.raises(ValueError, match=r"params/blocks/0: expected a ViR block"):
        vir_forward({**params, "blocks": [{"mixer": {}}]}, images)
    logits, cache = vir_forward(params, images)
    with pytest.raises(ValueError, match="dlogits: expected shape"):
        vir_backward(params, cache, logits[:, :2])


# ------------------------------------------------------------------------------------------------
# the ViT baseline: the same backbone with softmax attention


def _strip_key_bias(tree):
    if isinstance(tree, dict):
        return {k: _strip_key_bias(v) for k, v in tree.items() if k != "b_k"}
    if isinstance(tree, list):
        return [_strip_key_bias(v) for v in tree]
    return tree


def _put_key_bias(tree, full):
    if isinstance(full, dict):
        return {k: _put_key_bias(tree[k], v) if k in tree else v for k, v in full.items()}
    if isinstance(full, list):
        return [_put_key_bias(t, f) for t, f in zip(tree, full)]
    return tree


def _key_biases(tree):
    if isinstance(tree, dict):
        return [a for k, v in tree.items() for a in ([v] if k == "b_k" else _key_biases(v))]
    if isinstance(tree, list):
        return [a for v in tree for a in _key_biases(v)]
    return []


def gradcheck_softmax_attention(forward, backward, params, data, *, rng, name, returns_dx=False, **options):
    """``gradcheck_tree`` on every parameter but the key biases, whose gradient must be exactly 0:
    b_k adds q_n . b_k to every score of row n, and a softmax does not change when a constant is
    added to its row. (Finite differences would compare rounding noise with rounding noise.)"""

    def fwd(stripped, *args, **kw):
        full = _put_key_bias(stripped, params)
        y, cache = forward(full, *args, **kw)
        return y, (full, cache)

    def bwd(stripped, cache, dy):
        full, c = cache
        out = backward(full, c, dy)
        grads = out[1] if returns_dx else out
        largest = max(np.abs(a).max() for a in _strip_leaves(grads))
        for db_k in _key_biases(grads):
            assert np.abs(db_k).max() <= 1e-12 * largest, f"{name}: the key bias got a gradient {db_k}"
        return (out[0], _strip_key_bias(grads)) if returns_dx else _strip_key_bias(grads)

    gradcheck_tree(fwd, bwd, _strip_key_bias(params), data, rng=rng, name=name, returns_dx=returns_dx, **options)


def _strip_leaves(tree):
    if isinstance(tree, dict):
        return [a for v in tree.values() for a in _strip_leaves(v)]
    if isinstance(tree, list):
        return [a for v in tree for a in _strip_leaves(v)]
    return [tree]


@pytest.mark.parametrize("class_token, mask", [("first", "bidirectional"), ("last", "causal"), ("first", "causal")])
def test_vit_gradcheck_every_parameter(rng, class_token, mask):
    params = small_vir(rng)
    images = rng.standard_normal((2, 1, 4, 4))
    gradcheck_softmax_attention(
        vit_forward, vit_backward, params, {"images": images}, rng=rng, name="vit", class_token=class_token, mask=mask
    )


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_vit_block_gradcheck_every_parameter(rng, mask):
    params = randomize(init_vir_block(rng, 4, 2, mlp_ratio=1.5), rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_softmax_attention(
        vit_block, vit_block_backward, params, {"x": x}, rng=rng, name="vit_block", returns_dx=True, mask=mask
    )


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_vit_attention_gradcheck_and_formula(rng, mask):
    """softmax(q k^T / sqrt(K) + (-inf off the mask)) v, then W_o, as timm's ViT attention."""
    p = randomize(init_vir_retention(rng, 6, 2), rng)
    x = rng.standard_normal((2, 5, 6))
    gradcheck_softmax_attention(
        vit_attention, vit_attention_backward, p, {"x": x}, rng=rng, name="vit_attention", returns_dx=True, mask=mask
    )
    B, T, _ = x.shape
    q = np.einsum("btd,dhk->bhtk", x, p["W_q"]) + p["b_q"][:, None, :]
    k = np.einsum("btd,dhk->bhtk", x, p["W_k"]) + p["b_k"][:, None, :]
    v = np.einsum("btd,dhk->bhtk", x, p["W_v"]) + p["b_v"][:, None, :]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(3)  # (B, H, T, T), K = 3
    if mask == "causal":
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    a = np.exp(s - s.max(axis=-1, keepdims=True))
    o = (a / a.sum(axis=-1, keepdims=True)) @ v
    want = np.moveaxis(o, 1, 2).reshape(B, T, 6) @ p["W_o"] + p["b_o"]
    y, _ = vit_attention(p, x, mask=mask)
    assert_within(mask, y, want, 1e-12)


def test_vit_loss_and_grads_is_the_gradient_of_the_loss(rng):
    params = small_vir(rng, num_classes=4)
    images, labels = rng.standard_normal((3, 1, 4, 4)), np.array([0, 3, 1])
    value, grads = vit_loss_and_grads(params, (images, labels), rng, class_token="last", mask="causal")
    logits, cache = vit_forward(params, images, class_token="last", mask="causal")
    want, c_loss = cross_entropy(logits, labels)
    assert value == pytest.approx(float(want))
    expected = vit_backward(params, cache, cross_entropy_backward(1.0, c_loss)[0])
    assert_within("grads", grads["blocks"][0]["mixer"]["W_q"], expected["blocks"][0]["mixer"]["W_q"], 0)


def test_bidirectional_vit_does_not_care_where_the_class_token_sits(rng):
    """The class token carries no position embedding and unmasked attention treats the tokens as
    a set, so first and last give the same logits."""
    params = small_vir(rng, depth=2)
    images = rng.standard_normal((3, 1, 4, 4))
    first, _ = vit_forward(params, images, class_token="first", mask="bidirectional")
    last, _ = vit_forward(params, images, class_token="last", mask="bidirectional")
    assert_within("first vs last", first, last, 1e-12)
    assert np.abs(first - first[0]).max() > 1e-3


def test_causal_vit_with_the_class_token_first_sees_nothing(rng):
    params = small_vir(rng, depth=2)
    images = rng.standard_normal((4, 1, 4, 4))
    first, _ = vit_forward(params, images, class_token="first", mask="causal")
    assert_within("first", first, np.broadcast_to(first[0], first.shape), 1e-12)
    _, grads = vit_loss_and_grads(params, (images, np.array([0, 1, 2, 0])), rng, class_token="first", mask="causal")
    assert not grads["patch"]["W"].any() and not grads["pos_embed"].any()


@pytest.mark.parametrize("class_token", ["last", "first"])
def test_kv_cache_decoding_equals_the_causal_parallel_forward(rng, class_token):
    params = small_vir(rng, image_size=(4, 6), depth=2)
    images = rng.standard_normal((3, 1, 4, 6))  # 6 patches + the class token
    logits, _ = vit_forward(params, images, class_token=class_token, mask="causal")
    decoded, caches = vit_recurrent(params, images, class_token=class_token)
    assert_within("decoded", decoded, logits, 1e-12)
    T = 7 if class_token == "last" else 1
    assert all(isinstance(c, KVCache) and c.length == T for c in caches)
    assert [(c.k.shape, c.v.shape) for c in caches] == [((3, T, 2, 2), (3, T, 2, 2))] * 2  # (B, T, H, K|V)


def test_kv_cache_grows_with_the_image_the_retention_state_does_not(rng):
    sizes = {}
    for side in (4, 8, 16):  # 4, 16, 64 patches
        params = init_vir(rng, image_size=side, patch_size=2, D=8, depth=1, num_heads=2)
        image = rng.random((1, 1, side, side))
        _, caches = vit_recurrent(params, image)
        _, states = vir_recurrent(params, image)
        sizes[side] = (caches[0].k.nbytes + caches[0].v.nbytes, states[0].nbytes)
    T = {4: 5, 8: 17, 16: 65}
    for side, (kv, state) in sizes.items():
        assert kv == 2 * T[side] * 8 * 8  # 2 x T x (H K = 8) float64
        assert state == 2 * 4 * 4 * 8  # H x K x V float64, whatever T


def test_vit_bad_inputs_name_the_argument(rng):
    params = init_vir(rng, image_size=4, patch_size=2, D=4, depth=1, num_heads=2)
    images = rng.random((2, 1, 4, 4))
    with pytest.raises(ValueError, match="mask: expected one of 'bidirectional', 'causal'"):
        vit_forward(params, images, mask="sliding_window")
    with pytest.raises(ValueError, match="class_token: expected one of 'last', 'first'"):
        vit_recurrent(params, images, class_token="middle")
    with pytest.raises(ValueError, match="kv_cache: expected a KVCache"):
        vit_block_step(params["blocks"][0], images[:, 0, 0], None)
    with pytest.raises(ValueError, match="batch: expected a pair"):
        vit_loss_and_grads(params, images)
    cache = KVCache.empty(2, 1, 2, 2, 2)
    vit_block_step(params["blocks"][0], rng.random((2, 4)), cache)
    with pytest.raises(ValueError, match="kv_cache: cannot append 1 token"):
        vit_block_step(params["blocks"][0], rng.random((2, 4)), cache)  # full
