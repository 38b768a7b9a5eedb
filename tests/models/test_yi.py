"""Yi's depth up-scaling (arXiv 2403.04652): the up-scaled model runs the original blocks in the
duplicated order, its arrays are copies, the cosine diagnostic equals a direct per-token computation,
the up-scaled model's backward passes gradcheck, GQA equals MHA with repeated key/value heads, and
bad inputs name the argument."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ref.models.transformer import (
    attention_layer,
    gpt2_block,
    init_attention_layer,
    init_transformer_lm,
    llama_block,
    transformer_lm_backward,
    transformer_lm_forward,
)
from ref.models.yi import depth_upscale, layer_cosine_similarity, pick_range, residual_streams, upscaled_order
from ref.train import tree_flatten
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.yi


def small_llama(rng, L=4, vocab=7, D=8, mlp_hidden=6, **kw):
    return randomize(init_transformer_lm(rng, vocab, D, L, "llama", num_heads=2, mlp_hidden=mlp_hidden, **kw), rng)


def llama_logits_by_hand(params, tokens, order):
    """Embedding, the original blocks in ``order``, RMSNorm (eps 1e-6), head: written out here."""
    h = params["embed"][tokens]  # (B, T, D)
    for i in order:
        h, _ = llama_block(params["blocks"][i]["llama"], h)
    n = h / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + 1e-6) * params["norm"]["weight"]
    return n @ params["head"]  # (B, T, vocab)


@pytest.mark.parametrize(
    "L, start, stop, order",
    [
        (4, 1, 3, [0, 1, 2, 1, 2, 3]),
        (4, 0, 4, [0, 1, 2, 3, 0, 1, 2, 3]),
        (4, 3, 4, [0, 1, 2, 3, 3]),
        (5, 0, 1, [0, 0, 1, 2, 3, 4]),
        (5, 2, 4, [0, 1, 2, 3, 2, 3, 4]),
    ],
)
def test_upscaled_model_runs_the_original_blocks_in_the_duplicated_order(rng, L, start, stop, order):
    params = small_llama(rng, L)
    tokens = rng.integers(0, 7, (2, 6))
    up = depth_upscale(params, start, stop)
    assert len(up["blocks"]) == L + stop - start
    assert upscaled_order(L, start, stop) == order
    logits, _ = transformer_lm_forward(up, tokens)
    np.testing.assert_allclose(logits, llama_logits_by_hand(params, tokens, order), rtol=1e-12, atol=1e-12)


@settings(max_examples=20)
@given(st.integers(1, 9), st.data())
def test_each_position_holds_the_expected_original_block(L, data):
    start = data.draw(st.integers(0, L - 1))
    stop = data.draw(st.integers(start + 1, L))
    # tag each original block by a constant norm scale: the tag says which block sits where
    params = {
        "embed": np.zeros((3, 2)),
        "blocks": [{"llama": {"norm1": {"weight": np.full(2, float(i))}}} for i in range(L)],
        "norm": {"weight": np.ones(2)},
    }
    up = depth_upscale(params, start, stop)
    tags = [int(b["llama"]["norm1"]["weight"][0]) for b in up["blocks"]]
    assert tags == list(range(stop)) + list(range(start, stop)) + list(range(stop, L))


def test_upscaled_arrays_are_copies_not_views(rng):
    params = small_llama(rng, 3)
    before = {k: v.copy() for k, v in tree_flatten(params).items()}
    up = depth_upscale(params, 0, 2)
    new = list(tree_flatten(up).values())
    old = list(tree_flatten(params).values())
    assert not any(np.shares_memory(a, b) for a in new for b in old)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(new) for b in new[i + 1 :])
    for a in new:
        a += 1.0  # training the up-scaled model ...
    for k, v in tree_flatten(params).items():  # ... leaves the original alone
        np.testing.assert_array_equal(v, before[k])


def _cosine_by_loops(h_in, h_out):
    total = 0.0
    for b in range(h_in.shape[0]):
        for t in range(h_in.shape[1]):
            x, y = h_in[b, t], h_out[b, t]
            dot = sum(float(xi) * float(yi) for xi, yi in zip(x, y))
            total += dot / (math.sqrt(sum(float(xi) ** 2 for xi in x)) * math.sqrt(sum(float(yi) ** 2 for yi in y)))
    return total / (h_in.shape[0] * h_in.shape[1])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cosine_equals_a_direct_per_token_computation(rng, arch):
    extra = {"num_heads": 2, "mlp_hidden": 6} | ({"max_len": 8} if arch == "gpt2" else {})
    params = randomize(init_transformer_lm(rng, 7, 8, 3, arch, **extra), rng)
    tokens = rng.integers(0, 7, (2, 5))
    block = llama_block if arch == "llama" else gpt2_block
    h = params["embed"][tokens] + (params["pos_embed"][:5] if arch == "gpt2" else 0.0)
    expected_streams, expected_cos = [h], []
    for entry in params["blocks"]:
        y, _ = block(entry[arch], h)
        expected_cos.append(_cosine_by_loops(h, y))
        expected_streams.append(y)
        h = y
    for got, want in zip(residual_streams(params, tokens), expected_streams, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer_cosine_similarity(params, tokens), expected_cos, rtol=1e-12, atol=1e-12)


def test_a_block_that_passes_its_input_through_has_cosine_one_and_duplicates_for_free(rng):
    params = small_llama(rng, 3)
    identity = params["blocks"][1]["llama"]
    identity["attn"]["W_o"][:] = 0.0  # both residual branches add zero: block 1 is the identity
    identity["mlp"]["W_down"][:] = 0.0
    tokens = rng.integers(0, 7, (2, 6))
    cos = layer_cosine_similarity(params, tokens)
    assert cos[1] == pytest.approx(1.0, abs=1e-14) and abs(cos[0]) < 0.999 and abs(cos[2]) < 0.999
    up_logits, _ = transformer_lm_forward(depth_upscale(params, 1, 2), tokens)
    np.testing.assert_allclose(up_logits, transformer_lm_forward(params, tokens)[0], rtol=1e-13, atol=1e-13)


def test_upscaled_model_backward_passes_gradcheck(rng):
    # the up-scaled model at step 0: the two copies of block 1 still hold equal weights
    params = depth_upscale(small_llama(rng, 2, vocab=5, D=4, mlp_hidden=3, num_kv_heads=1), 1, 2)
    assert np.array_equal(params["blocks"][1]["llama"]["mlp"]["W_up"], params["blocks"][2]["llama"]["mlp"]["W_up"])
    tokens = rng.integers(0, 5, (2, 4))
    # rtol 3e-5 for a whole model, derived in tests/models/test_transformer.py (MODEL_RTOL)
    gradcheck_tree(
        transformer_lm_forward, transformer_lm_backward, params, {"tokens": tokens}, rng=rng, name="yi-upscaled",
        returns_dx=False, rtol=3e-5,
    )


def test_gqa_equals_mha_with_each_key_value_head_repeated_over_its_group(rng):
    gqa = randomize(init_attention_layer(rng, 8, 4, num_kv_heads=2, head_dim=4), rng)
    mha = dict(gqa, W_k=np.repeat(gqa["W_k"], 2, axis=1), W_v=np.repeat(gqa["W_v"], 2, axis=1))  # heads 0,0,1,1
    x = rng.standard_normal((2, 6, 8))
    y_gqa, _ = attention_layer(gqa, x, rotary=True)
    y_mha, _ = attention_layer(mha, x, rotary=True)
    np.testing.assert_allclose(y_gqa, y_mha, rtol=1e-13, atol=1e-13)


def test_pick_range_takes_the_window_of_highest_or_lowest_mean(rng):
    c = np.array([0.5, 0.9, 0.95, 0.99, 0.97, 0.6])
    assert pick_range(c, 2) == (3, 5)
    assert pick_range(c, 2, highest=False) == (0, 2)
    assert pick_range(c, 6) == (0, 6)
    assert pick_range(np.ones(4), 2) == (0, 2)  # the first window on ties
    for _ in range(20):
        c, n = rng.random(7), int(rng.integers(1, 8))
        means = [c[s : s + n].mean() for s in range(8 - n)]
        assert pick_range(c, n) == (int(np.argmax(means)), int(np.argmax(means)) + n)
        assert pick_range(list(c), n, highest=False) == (int(np.argmin(means)), int(np.argmin(means)) + n)


def test_bad_inputs_name_the_argument(rng):
    params = small_llama(rng, 3)
    tokens = rng.integers(0, 7, (2, 4))
    for start, stop in ((2, 2), (2, 1), (-1, 2), (0, 4)):
        with pytest.raises(ValueError, match=r"start, stop: expected a non-empty range .* L = 3"):
            depth_upscale(params, start, stop)
    with pytest.raises(ValueError, match="start: expected an integer"):
        depth_upscale(params, 1.0, 2)
    with pytest.raises(ValueError, match="stop: expected an integer"):
        depth_upscale(params, 0, True)
    with pytest.raises(ValueError, match="params: expected a model"):
        depth_upscale({"blocks": []}, 0, 1)
    with pytest.raises(ValueError, match="params/blocks: expected a non-empty list"):
        depth_upscale(dict(params, blocks=[]), 0, 1)
    with pytest.raises(ValueError, match="params/blocks/1: expected"):
        depth_upscale(dict(params, blocks=[params["blocks"][0], {"mamba": {}}]), 0, 1)
    with pytest.raises(ValueError, match="n_layers: expected"):
        upscaled_order(0, 0, 1)
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        layer_cosine_similarity(params, tokens.astype(float))
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        layer_cosine_similarity(params, tokens[0])
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, vocab_size = 7\)"):
        residual_streams(params, tokens + 7)
    with pytest.raises(ValueError, match="n: expected a window of at most L = 3"):
        pick_range([0.1, 0.2, 0.3], 4)
    with pytest.raises(ValueError, match="cosines: expected finite values"):
        pick_range([0.1, np.nan, 0.3], 1)
    with pytest.raises(ValueError, match="cosines: expected 1 axes"):
        pick_range(np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="cosines: expected a sequence of numbers"):
        pick_range(["high", "low"], 1)
    with pytest.raises(ValueError, match="highest: expected True or False"):
        pick_range([0.1, 0.2], 1, highest=1)
