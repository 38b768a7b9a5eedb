"""Transformers (ref.models.transformer): finite differences on every parameter of the attention
layer, both blocks, both language models and the encoder; the forward against from-scratch NumPy
references written after openai/gpt-2 and Hugging Face's Llama; KV-cache decoding against the full
forward; generation (greedy against a naive re-forward loop, seeded sampling, top-k); the encoder's
bidirectionality and padding; the ``ref.models.lm`` block interface; bad input."""

import copy
import math

import numpy as np
import pytest

from ref.mixers.attention import KVCache
from ref.models import lm
from ref.models.transformer import (
    prefix_lm_mask,
    KV_CAPACITY,
    attention_layer,
    attention_layer_backward,
    attention_layer_step,
    encoder_backward,
    encoder_forward,
    generate,
    gpt2_block,
    gpt2_block_backward,
    gpt2_block_step,
    init_attention_layer,
    init_encoder,
    init_gpt2_block,
    init_kv_caches,
    init_llama_block,
    init_transformer_lm,
    llama_block,
    llama_block_backward,
    llama_block_step,
    sample_token,
    transformer_lm_backward,
    transformer_lm_decode,
    transformer_lm_forward,
    transformer_lm_loss_and_grads,
    transformer_lm_prefill,
)
from ref.train import train, tree_flatten
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.attention

BLOCK_FNS = {
    "gpt2": (init_gpt2_block, gpt2_block, gpt2_block_backward, gpt2_block_step),
    "llama": (init_llama_block, llama_block, llama_block_backward, llama_block_step),
}


def small_lm(rng, arch, vocab=7, D=8, n_layers=2, **kw):
    extra = {"max_len": 24} if arch == "gpt2" else {"num_kv_heads": 1}
    return init_transformer_lm(rng, vocab, D, n_layers, arch, num_heads=2, **{**extra, **kw})


# ------------------------------------------------------------------------------------------------
# from-scratch references (plain NumPy, none of ref.nn / ref.mixers)


def _softmax(w):
    e = np.exp(w - w.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def naive_gpt2(p, X):
    """GPT-2 as openai/gpt-2 src/model.py lays it out: one fused c_attn, the causal mask as
    w*b - 1e10*(1-b), tanh GELU, pre-LN blocks, ln_f, logits = h wte^T."""

    def norm(x, g, b):
        u = x.mean(-1, keepdims=True)
        s = ((x - u) ** 2).mean(-1, keepdims=True)
        return (x - u) / np.sqrt(s + 1e-5) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    B, T = X.shape
    h = p["embed"][X] + p["pos_embed"][np.arange(T)]
    for entry in p["blocks"]:
        blk = entry["gpt2"]
        a = blk["attn"]
        D, H, K = a["W_q"].shape
        w_attn = np.concatenate([a[n].reshape(D, H * K) for n in ("W_q", "W_k", "W_v")], axis=1)  # c_attn
        b_attn = np.concatenate([a[n].reshape(H * K) for n in ("b_q", "b_k", "b_v")])
        c = norm(h, blk["norm1"]["weight"], blk["norm1"]["bias"]) @ w_attn + b_attn
        q, k, v = (z.reshape(B, T, H, K).transpose(0, 2, 1, 3) for z in np.split(c, 3, axis=2))
        w = q @ k.transpose(0, 1, 3, 2) / np.sqrt(K)
        m = np.tril(np.ones((T, T)))
        w = _softmax(w * m - 1e10 * (1 - m))
        o = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, H * K)
        h = h + o @ a["W_o"] + a["b_o"]
        mlp = blk["mlp"]
        n2 = norm(h, blk["norm2"]["weight"], blk["norm2"]["bias"])
        h = h + gelu(n2 @ mlp["W_fc"] + mlp["b_fc"]) @ mlp["W_proj"] + mlp["b_proj"]
    h = norm(h, p["norm"]["weight"], p["norm"]["bias"])
    return h @ p["embed"].T


def naive_llama(p, X):
    """Llama as Hugging Face's modeling_llama lays it out: RMSNorm, cos/sin of cat(freqs, freqs)
    with rotate_half, repeat_kv for GQA, SwiGLU, the final norm and an untied head."""

    def rms(x, w):
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * w

    def rotate_half(x):
        half = x.shape[-1] // 2
        return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    B, T = X.shape
    h = p["embed"][X]
    for entry in p["blocks"]:
        blk = entry["llama"]
        a = blk["attn"]
        D, HQ, K = a["W_q"].shape
        H = a["W_k"].shape[1]
        inv_freq = 1.0 / 10000 ** (np.arange(0, K, 2) / K)
        freqs = np.outer(np.arange(T), inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)  # (T, K)
        cos, sin = np.cos(emb), np.sin(emb)
        x = rms(h, blk["norm1"]["weight"])
        q = (x @ a["W_q"].reshape(D, -1)).reshape(B, T, HQ, K).transpose(0, 2, 1, 3)
        k = (x @ a["W_k"].reshape(D, -1)).reshape(B, T, H, K).transpose(0, 2, 1, 3)
        v = (x @ a["W_v"].reshape(D, -1)).reshape(B, T, H, K).transpose(0, 2, 1, 3)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, HQ // H, axis=1), np.repeat(v, HQ // H, axis=1)  # repeat_kv
        w = q @ k.transpose(0, 1, 3, 2) / math.sqrt(K) + np.triu(np.full((T, T), -np.inf), 1)
        o = (_softmax(w) @ v).transpose(0, 2, 1, 3).reshape(B, T, HQ * K)
        h = h + o @ a["W_o"]
        mlp = blk["mlp"]
        z = rms(h, blk["norm2"]["weight"])
        g = z @ mlp["W_gate"]
        h = h + (g / (1 + np.exp(-g)) * (z @ mlp["W_up"])) @ mlp["W_down"]
    return rms(h, p["norm"]["weight"]) @ p["head"]


def test_gpt2_equals_the_openai_layout(rng):
    params = randomize(small_lm(rng, "gpt2"), rng)
    tokens = rng.integers(0, 7, (2, 9))
    logits, _ = transformer_lm_forward(params, tokens)
    assert_within("logits", logits, naive_gpt2(params, tokens), 1e-11)


def test_llama_equals_the_hugging_face_layout(rng):
    params = randomize(init_transformer_lm(rng, 7, 16, 2, "llama", num_heads=4, num_kv_heads=2), rng)
    tokens = rng.integers(0, 7, (2, 9))
    logits, _ = transformer_lm_forward(params, tokens)
    assert_within("logits", logits, naive_llama(params, tokens), 1e-11)


# ------------------------------------------------------------------------------------------------
# gradients


def _drop_key_bias(tree):
    if isinstance(tree, dict):
        return {k: _drop_key_bias(v) for k, v in tree.items() if k != "b_k"}
    if isinstance(tree, list):
        return [_drop_key_bias(v) for v in tree]
    return tree


def _with_key_bias(tree, full):
    """``tree`` with the ``b_k`` leaves of ``full`` put back."""
    if isinstance(full, dict):
        return {k: v if k == "b_k" else _with_key_bias(tree[k], v) for k, v in full.items()}
    if isinstance(full, list):
        return [_with_key_bias(t, f) for t, f in zip(tree, full)]
    return tree


def gradcheck_params(forward, backward, params, data, *, returns_dx=True, **kw):
    """``gradcheck_tree`` on every parameter but the key biases ``b_k`` (GPT-2), whose gradient is
    asserted to be zero instead: adding q_t . b_k to every score of a row leaves its softmax
    unchanged, so the loss does not depend on b_k at all, and its finite differences are pure
    round-off (1e-10), which no relative tolerance can compare with an exact 0."""
    rest = _drop_key_bias(params)

    def fwd(p, *args, **options):
        return forward(_with_key_bias(p, params), *args, **options)

    def bwd(p, cache, dy):
        out = backward(_with_key_bias(p, params), cache, dy)
        grads = out[1] if returns_dx else out
        for path, g in tree_flatten(grads).items():
            if path.rsplit("/", 1)[-1] == "b_k":
                assert np.abs(g).max() < 1e-12, f"{path}: expected a zero gradient, got {g.ravel()[:4]}"
        grads = _drop_key_bias(grads)
        return (out[0], grads) if returns_dx else grads

    return gradcheck_tree(fwd, bwd, rest, data, returns_dx=returns_dx, **kw)


@pytest.mark.parametrize(
    "bias, rotary, kv_heads, mode",
    [(True, False, 2, "parallel"), (False, True, 1, "recurrent"), (False, True, 2, "parallel")],
)
def test_attention_layer_gradcheck_every_parameter(rng, bias, rotary, kv_heads, mode):
    params = randomize(init_attention_layer(rng, 4, 4, num_kv_heads=kv_heads, head_dim=2, bias=bias), rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_params(
        attention_layer, attention_layer_backward, params, {"x": x}, rng=rng, name="attn", rotary=rotary, mode=mode
    )


def test_attention_layer_gradcheck_bidirectional_with_padding(rng):
    params = randomize(init_attention_layer(rng, 4, 2, bias=True), rng)
    x = rng.standard_normal((2, 5, 4))
    padding_mask = np.array([[True] * 5, [True, True, True, False, False]])
    gradcheck_params(
        attention_layer,
        attention_layer_backward,
        params,
        {"x": x},
        rng=rng,
        name="attn",
        mask="bidirectional",
        padding_mask=padding_mask,
    )


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_block_gradcheck_every_parameter(rng, kind):
    init, forward, backward, _ = BLOCK_FNS[kind]
    extra = {"num_kv_heads": 1} if kind == "llama" else {}
    params = randomize(init(rng, 4, 2, mlp_hidden=5, **extra), rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_params(forward, backward, params, {"x": x}, rng=rng, name=kind)


# Whole models: deep in the stack some gradients (q and k of the last block, behind a LayerNorm
# over 4 channels) are 1e-4 of the largest, where the float64 differences carry ~1e-9 absolute
# noise, up to 3e-6 relative (seen over 12 random draws of the encoder). Layers and blocks are
# checked at rtol 1e-6; here the check is of the wiring, where a mistake is off by O(1) (as
# tests/models/test_lm.py does).
MODEL_RTOL = 3e-5


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lm_gradcheck_every_parameter(rng, arch):
    params = randomize(small_lm(rng, arch, vocab=5, D=4, mlp_hidden=3, max_len=6 if arch == "gpt2" else None), rng)
    assert ("head" in params) == (arch == "llama") and ("pos_embed" in params) == (arch == "gpt2")
    tokens = rng.integers(0, 5, (2, 5))
    gradcheck_params(
        transformer_lm_forward,
        transformer_lm_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name=arch,
        returns_dx=False,
        rtol=MODEL_RTOL,
    )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prefix_lm_gradcheck_every_parameter(rng, arch):
    """A prefix LM: the first prefix_len[b] tokens attend both ways (a different prefix per row)."""
    params = randomize(small_lm(rng, arch, vocab=5, D=4, mlp_hidden=3, max_len=6 if arch == "gpt2" else None), rng)
    tokens = rng.integers(0, 5, (2, 5))

    def forward(params, tokens):
        return transformer_lm_forward(params, tokens, prefix_len=np.array([3, 1]))

    gradcheck_params(forward, transformer_lm_backward, params, {"tokens": tokens}, rng=rng, name=f"{arch} prefix-LM",
                     returns_dx=False, rtol=MODEL_RTOL)  # fmt: skip


def test_prefix_lm_mask_and_what_each_position_can_see(rng):
    m = prefix_lm_mask(np.array([0, 2, 4]), 3, 4)
    assert np.array_equal(m[0], np.tri(4, dtype=bool))  # no prefix: causal
    assert np.array_equal(m[2], np.ones((4, 4), bool))  # all prefix: bidirectional
    assert np.array_equal(m[1], np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool))
    params = randomize(small_lm(rng, "llama"), rng)
    tokens = rng.integers(0, 7, (2, 8))
    causal, _ = transformer_lm_forward(params, tokens)
    assert_within("prefix 0 = causal", transformer_lm_forward(params, tokens, prefix_len=0)[0], causal, 0.0)
    base, _ = transformer_lm_forward(params, tokens, prefix_len=3)
    changed = tokens.copy()
    changed[:, 2] = (changed[:, 2] + 1) % 7  # a prefix token: every position sees it
    assert np.all(np.abs(transformer_lm_forward(params, changed, prefix_len=3)[0] - base).max(-1) > 0)
    changed = tokens.copy()
    changed[:, 5] = (changed[:, 5] + 1) % 7  # after the prefix: only positions >= 5 see it
    moved = np.abs(transformer_lm_forward(params, changed, prefix_len=3)[0] - base).max(-1) > 0
    assert not moved[:, :5].any() and moved[:, 5:].all()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prefix_lm_prefill_then_decode_gives_the_forwards_logits(rng, arch):
    params = randomize(small_lm(rng, arch), rng)
    tokens = rng.integers(0, 7, (2, 9))
    logits, _ = transformer_lm_forward(params, tokens, prefix_len=4)
    first, caches = transformer_lm_prefill(params, tokens[:, :4], prefix_len=4)
    rest, _ = transformer_lm_decode(params, tokens[:, 4:], caches)
    assert_within("prefill of the prefix", first, logits[:, :4], 1e-11)
    assert_within("causal decode after it", rest, logits[:, 4:], 1e-11)
    batch = type("Batch", (), dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], prefix_len=np.array([2, 5])))()
    loss, _ = transformer_lm_loss_and_grads(params, batch)
    want, _ = transformer_lm_forward(params, tokens[:, :-1], prefix_len=np.array([2, 5]))
    logp = want - np.log(np.exp(want).sum(-1, keepdims=True))
    assert loss == pytest.approx(-np.take_along_axis(logp, tokens[:, 1:, None], -1).mean(), rel=1e-12)


def test_prefix_lm_bad_inputs(rng):
    params = small_lm(rng, "llama")
    tokens = rng.integers(0, 7, (2, 5))
    with pytest.raises(ValueError, match=r"prefix_len: expected 0 <= prefix_len <= T = 5, got \[6, 6\]"):
        transformer_lm_forward(params, tokens, prefix_len=6)
    with pytest.raises(ValueError, match=r"prefix_len: expected .*\(B,\)"):
        transformer_lm_forward(params, tokens, prefix_len=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="prefix_len: expected an int"):
        transformer_lm_forward(params, tokens, prefix_len=1.5)
    with pytest.raises(ValueError, match="prefix_len: a prefix must be prefilled into new caches"):
        transformer_lm_prefill(params, tokens, init_kv_caches(params, 2, 8), prefix_len=2)


@pytest.mark.parametrize("output", ["tokens", "pooled"])
def test_encoder_gradcheck_every_parameter(rng, output):
    params = randomize(init_encoder(rng, 5, 4, 2, num_heads=2, mlp_hidden=3, max_len=6), rng)
    tokens = rng.integers(0, 5, (2, 5))
    padding_mask = np.array([[True] * 5, [True, True, True, True, False]])
    gradcheck_params(
        encoder_forward,
        encoder_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name="encoder",
        returns_dx=False,
        rtol=MODEL_RTOL,
        padding_mask=padding_mask,
        output=output,
    )


def test_loss_and_grads_trains_a_model_that_then_continues_the_pattern(rng):
    """Next-token training on one repeating sequence, then greedy generation reproduces it."""
    pattern = np.array([3, 1, 4, 1, 5, 2] * 3)
    batch = (pattern[None, :-1], pattern[None, 1:])
    params = init_transformer_lm(rng, 6, 16, 1, "llama", num_heads=2)
    loss0, grads = transformer_lm_loss_and_grads(params, batch)
    assert tree_flatten(grads).keys() == tree_flatten(params).keys()
    result = train(params, transformer_lm_loss_and_grads, [batch] * 150, steps=150, rng=rng, lr=1e-2, progress=False)
    assert transformer_lm_loss_and_grads(result.params, batch)[0] < 0.05 < loss0
    out = generate(result.params, pattern[None, :6], 12, temperature=0)
    assert np.array_equal(out[0], pattern)


# ------------------------------------------------------------------------------------------------
# decoding through the KV cache


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_block_step_by_step_equals_the_forward(rng, kind):
    """Past KV_CAPACITY tokens, so the cache a step allocates on its own has to grow."""
    init, forward, _, step = BLOCK_FNS[kind]
    extra = {"num_kv_heads": 2} if kind == "llama" else {}
    params = randomize(init(rng, 8, 4, **extra), rng)
    T = KV_CAPACITY + 3
    x = rng.standard_normal((2, T, 8))
    y, _ = forward(params, x)
    y_rec, _ = forward(params, x, mode="recurrent")
    assert_within("recurrent form", y_rec, y, 1e-12)
    state = None
    for t in range(T):
        y_t, state = step(params, x[:, t], state)
        assert_within(f"step {t}", y_t, y[:, t], 1e-12)
    assert isinstance(state, KVCache) and state.length == T and state.max_len >= T


def test_layer_step_equals_the_layer(rng):
    params = randomize(init_attention_layer(rng, 8, 4, num_kv_heads=1, bias=True), rng)
    x = rng.standard_normal((3, 6, 8))
    y, _ = attention_layer(params, x, rotary=True)
    state = KVCache.empty(3, 6, 1, 2, 2)
    for t in range(6):
        y_t, state = attention_layer_step(params, x[:, t], state, rotary=True)
        assert_within(f"step {t}", y_t, y[:, t], 1e-12)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prefill_and_decode_give_the_forwards_logits(rng, arch):
    params = randomize(small_lm(rng, arch), rng)
    tokens = rng.integers(0, 7, (2, 11))
    logits, _ = transformer_lm_forward(params, tokens)
    assert_within("recurrent form", transformer_lm_forward(params, tokens, mode="recurrent")[0], logits, 1e-11)
    decoded, caches = transformer_lm_decode(params, tokens)  # token by token from empty caches
    assert_within("decode", decoded, logits, 1e-11)
    assert [c.length for c in caches] == [11, 11]
    first, caches = transformer_lm_prefill(params, tokens[:, :4], init_kv_caches(params, 2, 11))
    rest, caches = transformer_lm_decode(params, tokens[:, 4:], caches)
    assert_within("prefill", first, logits[:, :4], 1e-11)
    assert_within("decode after prefill", rest, logits[:, 4:], 1e-11)
    more, _ = transformer_lm_prefill(params, tokens[:, 4:8], transformer_lm_prefill(params, tokens[:, :4])[1])
    assert_within("prefill after prefill", more, logits[:, 4:8], 1e-11)


# ------------------------------------------------------------------------------------------------
# generation


def naive_greedy(params, prompt, n):
    """Re-run the whole forward for every new token: what the KV cache saves."""
    seq = prompt
    for _ in range(n):
        logits, _ = transformer_lm_forward(params, seq)
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return seq


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_generation_equals_the_naive_loop_and_is_deterministic(rng, arch):
    params = randomize(small_lm(rng, arch), rng)
    prompt = rng.integers(0, 7, (3, 4))
    out = generate(params, prompt, 8, temperature=0)
    assert out.shape == (3, 12) and out.dtype == np.int64
    assert np.array_equal(out, naive_greedy(params, prompt, 8))
    assert np.array_equal(out, generate(params, prompt, 8, temperature=0))
    assert np.array_equal(generate(params, prompt, 0, temperature=0), prompt)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sampling_is_seeded_and_respects_top_k(rng, arch):
    params = randomize(small_lm(rng, arch), rng)
    prompt = rng.integers(0, 7, (4, 3))
    a = generate(params, prompt, 10, temperature=1.5, top_k=3, rng=np.random.default_rng(5))
    b = generate(params, prompt, 10, temperature=1.5, top_k=3, rng=np.random.default_rng(5))
    c = generate(params, prompt, 10, temperature=1.5, top_k=3, rng=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    logits, _ = transformer_lm_forward(params, a)
    top3 = np.argsort(logits, axis=-1)[:, :, -3:]  # (B, T, 3)
    for t in range(3, 13):
        assert all(a[i, t] in top3[i, t - 1] for i in range(4)), f"token {t} outside the top 3"
    greedy = generate(params, prompt, 10, temperature=0)
    assert np.array_equal(generate(params, prompt, 10, top_k=1, rng=np.random.default_rng(0)), greedy)


def test_sample_token_draws_from_the_tempered_top_k_softmax(rng):
    logits = np.array([2.0, 1.0, 0.5, -1.0, 0.0])
    draws = sample_token(np.tile(logits, (40000, 1)), temperature=2.0, rng=rng)
    want = _softmax(logits / 2.0)
    assert_within("frequencies", np.bincount(draws, minlength=5) / draws.size, want, 0.01)
    draws = sample_token(np.tile(logits, (40000, 1)), temperature=1.0, top_k=2, rng=rng)
    want = np.r_[_softmax(logits[:2]), 0, 0, 0]
    assert_within("top-2 frequencies", np.bincount(draws, minlength=5) / draws.size, want, 0.01)
    assert np.array_equal(sample_token(np.tile(logits, (3, 1)), temperature=0), [0, 0, 0])


# ------------------------------------------------------------------------------------------------
# the encoder


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_encoder_is_bidirectional_and_ignores_padding(rng, arch):
    extra = {"max_len": 16} if arch == "gpt2" else {"num_kv_heads": 1}
    params = randomize(init_encoder(rng, 9, 8, 2, arch, num_heads=2, **extra), rng)
    tokens = rng.integers(0, 9, (2, 7))
    h, _ = encoder_forward(params, tokens)
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 9
    h2, _ = encoder_forward(params, changed)
    assert np.abs(h2[:, 0] - h[:, 0]).min() > 1e-6  # the first token sees the last one
    # padding: the real tokens of a padded batch are encoded as the unpadded sequence
    padded = np.concatenate([tokens, rng.integers(0, 9, (2, 3))], axis=1)
    mask = np.arange(10) < 7
    hp, _ = encoder_forward(params, padded, padding_mask=np.tile(mask, (2, 1)))
    assert_within("padded", hp[:, :7], h, 1e-12)
    pooled, _ = encoder_forward(params, tokens, output="pooled")
    assert pooled.shape == (2, 8) and np.all(np.abs(pooled) < 1)


# ------------------------------------------------------------------------------------------------
# the ref.models.lm scaffold


def test_the_blocks_plug_into_the_lm_scaffold(rng, monkeypatch):
    """Registered as the lead's one line each would register them, the scaffold runs the Llama
    model unchanged (same parameter layout): same logits, same decode, same gradients; and a
    hybrid stack passes its linear-attention options to the attention blocks."""
    for kind, (init, forward, backward, step) in BLOCK_FNS.items():
        monkeypatch.setitem(lm.BLOCKS, kind, lm.BlockSpec(init, forward, backward, step))
    params = randomize(small_lm(rng, "llama"), rng)
    tokens = rng.integers(0, 7, (2, 6))
    logits, cache = transformer_lm_forward(params, tokens)
    lm_logits, lm_cache = lm.lm_forward(params, tokens)
    assert_within("lm_forward", lm_logits, logits, 1e-12)
    assert_within("lm_decode", lm.lm_decode(params, tokens)[0], logits, 1e-11)
    dlogits = rng.standard_normal(logits.shape)
    ours, theirs = tree_flatten(transformer_lm_backward(params, cache, dlogits)), tree_flatten(
        lm.lm_backward(params, lm_cache, dlogits)
    )
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert_within(key, theirs[key], ours[key], 1e-12)
    hybrid = lm.init_lm(rng, 7, 8, 3, ["gla", "llama", "gpt2"], num_heads=2)
    y, _ = lm.lm_forward(hybrid, tokens, chunk_size=3)
    y_rec, _ = lm.lm_forward(hybrid, tokens, mode="recurrent")
    assert_within("hybrid: recurrent", y_rec, y, 1e-11)
    assert_within("hybrid: decode", lm.lm_decode(hybrid, tokens)[0], y, 1e-11)


# ------------------------------------------------------------------------------------------------
# initialisation and bad input


def test_init_follows_gpt2_and_llama(rng):
    N, D = 4, 64
    p = init_transformer_lm(rng, 50, D, N, "gpt2", num_heads=4, max_len=128)
    assert "head" not in p and p["pos_embed"].shape == (128, D) and set(p["norm"]) == {"weight", "bias"}
    blk = p["blocks"][0]["gpt2"]
    assert blk["mlp"]["W_fc"].shape == (D, 4 * D) and blk["attn"]["b_q"].shape == (4, 16)
    assert all(not blk["attn"][b].any() for b in ("b_q", "b_k", "b_v", "b_o"))
    residual = np.concatenate([b["gpt2"]["attn"]["W_o"].ravel() for b in p["blocks"]])
    assert 0.9 < residual.std() / (0.02 / math.sqrt(2 * N)) < 1.1
    assert 0.9 < p["embed"].std() / 0.02 < 1.1 and 0.9 < p["pos_embed"].std() / 0.01 < 1.1
    q = init_transformer_lm(rng, 50, D, N, "llama", num_heads=8, num_kv_heads=2)
    blk = q["blocks"][0]["llama"]
    assert q["head"].shape == (D, 50) and "pos_embed" not in q and set(q["norm"]) == {"weight"}
    assert blk["attn"]["W_q"].shape == (D, 8, 8) and blk["attn"]["W_k"].shape == (D, 2, 8)
    assert set(blk["attn"]) == {"W_q", "W_k", "W_v", "W_o"} and blk["mlp"]["W_gate"].shape == (D, int(8 * D / 3))


def test_the_decode_state_is_updated_in_place_and_can_be_copied(rng):
    params = randomize(init_llama_block(rng, 8, 2), rng)
    x = rng.standard_normal((1, 3, 8))
    _, state = llama_block_step(params, x[:, 0])
    branch = copy.deepcopy(state)
    y1, s1 = llama_block_step(params, x[:, 1], state)
    y2, s2 = llama_block_step(params, x[:, 1], branch)
    assert s1 is state and state.length == 2 and branch.length == 2
    assert_within("branch", y2, y1, 0.0)


def test_bad_inputs_name_the_argument(rng):
    gpt2 = small_lm(rng, "gpt2")
    llama = small_lm(rng, "llama")
    tokens = rng.integers(0, 7, (2, 5))
    with pytest.raises(ValueError, match="num_kv_heads: expected a divisor of num_heads = 4"):
        init_llama_block(rng, 8, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_heads: RoPE needs an even head dim"):
        init_llama_block(rng, 6, 2)
    with pytest.raises(ValueError, match="num_kv_heads: only for arch='llama'"):
        init_transformer_lm(rng, 7, 8, 1, "gpt2", num_kv_heads=1)
    with pytest.raises(ValueError, match="max_len: only for arch='gpt2'"):
        init_transformer_lm(rng, 7, 8, 1, "llama", max_len=8)
    with pytest.raises(ValueError, match="arch: expected one of"):
        init_transformer_lm(rng, 7, 8, 1, "bert")
    with pytest.raises(ValueError, match="tokens: positions 0 .. 24 exceed the 24 learned positions"):
        transformer_lm_forward(gpt2, rng.integers(0, 7, (1, 25)))
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, vocab_size = 7\)"):
        transformer_lm_forward(llama, tokens + 7)
    with pytest.raises(ValueError, match="tokens: expected an integer dtype"):
        transformer_lm_forward(llama, tokens.astype(float))
    with pytest.raises(ValueError, match="mode: expected one of"):
        transformer_lm_forward(llama, tokens, mode="fused")
    with pytest.raises(ValueError, match="rng: sampling"):
        generate(llama, tokens, 3)
    with pytest.raises(ValueError, match="temperature: expected a number >= 0"):
        generate(llama, tokens, 3, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_k: expected None or an integer in \[1, vocab_size = 7\]"):
        generate(llama, tokens, 3, top_k=8, rng=rng)
    with pytest.raises(ValueError, match="max_new_tokens: expected an integer >= 0"):
        generate(llama, tokens, -1, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens: the prompt"):
        generate(gpt2, tokens, 21, temperature=0)
    with pytest.raises(ValueError, match=r"prompt_tokens: expected ids in \[0, vocab_size = 7\)"):
        generate(llama, tokens - 1, 3, temperature=0)
    with pytest.raises(ValueError, match="prompt_tokens: expected 2 axes"):
        generate(llama, tokens[0], 3, temperature=0)
    with pytest.raises(ValueError, match="caches: expected a list of 2 KVCaches"):
        transformer_lm_decode(llama, tokens, caches=[None])
    blk = llama["blocks"][0]["llama"]
    x = rng.standard_normal((2, 5, 8))
    with pytest.raises(ValueError, match="state: expected None or a KVCache"):
        llama_block_step(blk, x[:, 0], np.zeros(3))
    with pytest.raises(ValueError, match=r"state: expected a KVCache for \(B, H, K, V\)"):
        llama_block_step(blk, x[:, 0], KVCache.empty(2, 4, 2, 4, 4))
    with pytest.raises(ValueError, match="x_t: expected shape"):
        llama_block_step(blk, x[:, 0, :4])
    with pytest.raises(ValueError, match="x: expected shape"):
        llama_block(blk, x[..., :4])
    with pytest.raises(ValueError, match="mask: expected one of"):
        llama_block(blk, x, mask="prefix_lm")
    with pytest.raises(ValueError, match=r"padding_mask: expected shape \(B, T\)"):
        llama_block(blk, x, padding_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="padding_mask: expected a bool array"):
        llama_block(blk, x, padding_mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match="params/attn: expected a parameter 'W_o'"):
        llama_block({**blk, "attn": {k: v for k, v in blk["attn"].items() if k != "W_o"}}, x)
    with pytest.raises(ValueError, match=r"params/norm1: expected \['bias', 'weight'\]"):
        gpt2_block({**blk}, x)
    with pytest.raises(ValueError, match="params/attn: expected a parameter 'b_k'"):
        g = gpt2["blocks"][0]["gpt2"]
        gpt2_block({**g, "attn": {k: v for k, v in g["attn"].items() if k != "b_k"}}, x)
    with pytest.raises(ValueError, match="output: expected one of"):
        encoder_forward(init_encoder(rng, 7, 8, 1, num_heads=2, max_len=8), tokens, output="mean")
    with pytest.raises(ValueError, match="params: expected a model"):
        encoder_forward(llama, tokens)
