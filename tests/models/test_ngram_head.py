"""The n-gram head (ref.models.ngram_head): it is the in-context n-gram count estimator, it is
softmax attention under a hard mask, and the LM with n-gram heads feeding its logits has a correct
hand-written backward."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.attention import attention_parallel
from ref.models.lm import lm_forward
from ref.models.ngram_head import (
    init_ngram_lm,
    ngram_head,
    ngram_lm_backward,
    ngram_lm_forward,
    ngram_lm_loss_and_grads,
    ngram_logits,
    ngram_logits_backward,
    ngram_mask,
)
from ref.nn import gradcheck
from ref.tasks.regbench import RegBench, ngram_counts

pytestmark = pytest.mark.icll


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), V=st.integers(1, 5), T=st.integers(1, 24))
def test_head_equals_the_count_estimator_exactly(seed, n, V, T):
    x = np.random.default_rng(seed).integers(0, V, size=(3, T))
    o, matched = ngram_head(x, n, V)
    c = ngram_counts(x, n, V)  # the definition, a dictionary of counts
    total = c.sum(axis=-1, keepdims=True)
    np.testing.assert_array_equal(matched, total[..., 0] > 0)
    np.testing.assert_array_equal(o, np.where(total > 0, c / np.where(total > 0, total, 1), 0.0))  # bit for bit


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4))
def test_head_on_regbench_and_as_masked_softmax_attention(seed, n):
    task = RegBench(num_symbols=5, seq_len=30, min_states=2, max_states=4)
    x = task.sample(np.random.default_rng(seed), 2).inputs
    V = task.vocab_size
    o, _ = ngram_head(x, n, V)
    c = ngram_counts(x, n, V)
    total = c.sum(axis=-1, keepdims=True)
    np.testing.assert_array_equal(o, np.where(total > 0, c / np.where(total > 0, total, 1), 0.0))
    # softmax attention with equal scores (q = k = 0) under the mask, values one-hot
    zeros = np.zeros(x.shape + (1, 2))  # (B, T, 1, K)
    onehot = np.eye(V)[x][:, :, None, :]  # (B, T, 1, V)
    o_attn, _ = attention_parallel(zeros, zeros, onehot, mask=ngram_mask(x, n))
    np.testing.assert_allclose(o_attn[:, :, 0], o, rtol=0, atol=1e-15)


def test_mask_by_hand():
    x = np.array([[0, 1, 0, 1, 0]])
    M = ngram_mask(x, 2)[0]  # query i attends to s when x_{s-1} = x_i, 1 <= s <= i
    expect = np.zeros((5, 5), bool)
    expect[2, 1] = True  # x_2 = 0 = x_0 -> s = 1
    expect[3, 2] = True  # x_3 = 1 = x_1 -> s = 2
    expect[4, [1, 3]] = True  # x_4 = 0 = x_0 = x_2 -> s = 1, 3
    np.testing.assert_array_equal(M, expect)
    np.testing.assert_array_equal(ngram_mask(x, 1)[0], np.tril(np.ones((5, 5), bool)) & (np.arange(5) >= 1))


def test_ngram_logits_gradcheck(rng):
    features = rng.standard_normal((2, 2, 5, 4))  # (N, B, T, V)
    W = rng.standard_normal((2, 4, 3))
    gradcheck(ngram_logits, ngram_logits_backward, {"features": features, "W": W}, rng=rng, name="ngram_logits")


def test_ngram_lm_gradcheck(rng):
    V, orders = 4, (1, 2)
    params = init_ngram_lm(rng, V, D=8, n_layers=1, block="llama", orders=orders, num_heads=2)
    params["ngram"]["W"] = rng.standard_normal(params["ngram"]["W"].shape)  # random, non-zero
    tokens = rng.integers(0, V, size=(2, 6))

    def forward(W, embed, head):
        p = {"lm": {**params["lm"], "embed": embed, "head": head}, "ngram": {"W": W}}
        logits, cache = ngram_lm_forward(p, tokens, orders=orders)
        return logits, (p, cache)

    def backward(dlogits, cache):
        p, c = cache
        g = ngram_lm_backward(p, c, dlogits)
        return {"W": g["ngram"]["W"], "embed": g["lm"]["embed"], "head": g["lm"]["head"]}

    inputs = {"W": params["ngram"]["W"], "embed": params["lm"]["embed"], "head": params["lm"]["head"]}
    gradcheck(forward, backward, inputs, rng=rng, name="ngram_lm")


def test_ngram_lm_starts_as_the_plain_lm_and_trains(rng):
    V = 5
    params = init_ngram_lm(rng, V, D=8, n_layers=1, block="llama", orders=(2, 3), num_heads=2)
    tokens = rng.integers(0, V, size=(2, 7))
    logits, _ = ngram_lm_forward(params, tokens, orders=(2, 3))
    np.testing.assert_array_equal(logits, lm_forward(params["lm"], tokens)[0])
    loss, grads = ngram_lm_loss_and_grads(params, (tokens[:, :-1], tokens[:, 1:]), orders=(2, 3))
    assert np.isfinite(loss) and grads["ngram"]["W"].shape == (2, V, V) and np.abs(grads["ngram"]["W"]).max() > 0


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        ngram_mask(np.zeros((1, 3), int), 0)
    with pytest.raises(ValueError, match=r"tokens: expected an integer array \(B, T\)"):
        ngram_head(np.zeros((3,), int), 2, 4)
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 3\]"):
        ngram_head(np.array([[0, 4]]), 2, 4)
    with pytest.raises(ValueError, match="orders: expected distinct n-gram orders"):
        init_ngram_lm(rng, 4, D=4, n_layers=1, block="llama", orders=(2, 2), num_heads=2)
    params = init_ngram_lm(rng, 4, D=4, n_layers=1, block="llama", orders=(2, 3), num_heads=2)
    with pytest.raises(ValueError, match="orders: expected 2 orders"):
        ngram_lm_forward(params, np.zeros((1, 3), int), orders=(2,))
    with pytest.raises(ValueError, match=r"W: expected shape \(N, V, V'\)"):
        ngram_logits(np.zeros((2, 1, 3, 4)), np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="params: expected"):
        ngram_lm_forward({"lm": params["lm"]}, np.zeros((1, 3), int))
