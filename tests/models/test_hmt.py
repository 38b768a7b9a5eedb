"""HMT (arXiv 2405.06067): the gradients of the whole multi-segment recurrence (BPTT through the
memories and the cache, float64 finite differences, every parameter), the recall attention against a
direct softmax, the cache of the last N memories, the two baselines against the backbone (no memory:
the backbone per segment; RMT: HMT with one cached memory), one segment against the backbone with the
memory tokens, truncated BPTT, and bad inputs."""

import numpy as np
import pytest

from ref.models.hmt import (
    hmt_backward,
    hmt_forward,
    hmt_loss_and_grads,
    init_hmt,
    memory_recall,
    memory_recall_backward,
    update_cache,
)
from ref.models.transformer import transformer_lm_backward, transformer_lm_forward
from ref.nn import gradcheck
from ref.tasks.synthetic import Batch
from ref.train import tree_flatten
from tests.models.model_cases import gradcheck_tree, randomize
from tests.models.test_transformer import gradcheck_params

pytestmark = pytest.mark.hmt

BACKBONE_KEYS = ("embed", "blocks", "norm", "head", "pos_embed")
# four segments of 2 tokens, one sensory token, a prefix of 1, a cache of 2 (segment 3 reads m_1, m_2:
# m_0 has been evicted)
OPTIONS = {"segment_len": 2, "cache_size": 2, "sensory_len": 1, "prefix_len": 1}
# The recall path is weak at these sizes: the cached memories are final-norm outputs at the same
# (trailing) position of similar passes, so the softmax over them moves little, and the gradients of
# W_q, W_k and the prompt T are 1e-4 to 1e-5 of the largest ones. At gradcheck's step eps = 1e-6 the
# rounding noise of the float64 differences (about 1e-9 absolute) is then 1e-5 to 1e-4 of them; a step
# of 1e-4 cuts that noise a hundredfold while the O(eps^2) truncation error stays near 1e-8 relative.
# A wrong gradient is off by O(1), far above the tolerance.
RECALL_STEPS = {"W_q": 1e-4, "W_k": 1e-4, "prompt": 1e-4}


def tiny(rng, arch="llama", **kw):
    """A one-block backbone, D = 4, with every parameter random and non-zero."""
    extra = {"max_len": 12} if arch == "gpt2" else {}
    params = init_hmt(rng, 5, 4, 1, arch, num_heads=1, mlp_hidden=4, recall_dim=3, **extra, **kw)
    return randomize(params, rng)


def backbone(params):
    return {k: v for k, v in params.items() if k in BACKBONE_KEYS}


def test_gradcheck_every_parameter_through_every_segment(rng):
    """Full BPTT, Llama backbone with an untied head: the memories' gradients flow back through the
    recurrence and through the cache (keys and values of the recall)."""
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 8))
    gradcheck_tree(hmt_forward, hmt_backward, params, {"tokens": tokens}, rng=rng, name="hmt", returns_dx=False,
                   steps=RECALL_STEPS, **OPTIONS)


def test_gradcheck_gpt2_backbone_tied_with_positions_and_a_short_last_segment(rng):
    """GPT-2 backbone: tied head, learned positions (each pass starts at position 0), T = 5 is not a
    multiple of L = 2. The key biases' gradients are exactly zero (softmax ignores them)."""
    params = tiny(rng, "gpt2")
    assert "head" not in params and "pos_embed" in params
    tokens = rng.integers(0, 5, (2, 5))
    gradcheck_params(hmt_forward, hmt_backward, params, {"tokens": tokens}, rng=rng, name="hmt-gpt2",
                     returns_dx=False, steps=RECALL_STEPS, **OPTIONS)


def test_recall_equals_a_direct_softmax(rng):
    s, M = rng.standard_normal((3, 6)), rng.standard_normal((3, 4, 6))
    W_q, W_k = rng.standard_normal((2, 6, 5))
    P, weights, _ = memory_recall(s, M, W_q, W_k)
    for b in range(3):
        scores = np.array([(s[b] @ W_q) @ (M[b, i] @ W_k) / np.sqrt(5) for i in range(4)])
        w = np.exp(scores) / np.exp(scores).sum()
        np.testing.assert_allclose(weights[b], w, rtol=1e-13)
        np.testing.assert_allclose(P[b], sum(w[i] * M[b, i] for i in range(4)), rtol=1e-12, atol=1e-14)

    def fwd(s, M, W_q, W_k):
        P, _, cache = memory_recall(s, M, W_q, W_k)
        return P, cache

    gradcheck(fwd, memory_recall_backward, {"s": s, "M": M, "W_q": W_q, "W_k": W_k}, rng=rng, name="recall")


def test_one_memory_recalls_it_exactly(rng):
    """The softmax over a single memory is 1: the recall returns it and passes no gradient to W_q, W_k."""
    s, M = rng.standard_normal((2, 4)), rng.standard_normal((2, 1, 4))
    W_q, W_k = rng.standard_normal((2, 4, 3))
    P, weights, cache = memory_recall(s, M, W_q, W_k)
    np.testing.assert_array_equal(weights, 1.0)
    np.testing.assert_array_equal(P, M[:, 0])
    ds, dM, dW_q, dW_k = memory_recall_backward(rng.standard_normal((2, 4)), cache)
    assert not ds.any() and not dW_q.any() and not dW_k.any()


def test_cache_keeps_the_last_n_memories(rng):
    assert update_cache([], 0, 3) == [0]
    ids = [1, 2, 3]
    assert update_cache(ids, 4, 3) == [2, 3, 4] and ids == [1, 2, 3]
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 14))  # 7 segments of 2
    for N in (1, 2, 3, None):
        _, cache = hmt_forward(params, tokens, segment_len=2, cache_size=N)
        segs = cache["segments"]
        assert len(cache["memories"]) == 7 and segs[0]["read"] == "init"
        for n in range(1, 7):
            first = 0 if N is None else max(0, n - N)
            assert segs[n]["read"] == "recall" and segs[n]["cache_ids"] == list(range(first, n))
            w = segs[n]["weights"]
            assert w.shape == (2, n - first)
            np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-14)


def test_rmt_is_hmt_with_a_cache_of_one(rng):
    """N = 1: the recall returns m_{n-1}, RMT's carried memory: same logits, same gradients (and
    zero gradients for the recall's W_q, W_k and the prompt T)."""
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 8))
    dlogits = rng.standard_normal((2, 8, 5))
    opts = {"segment_len": 2, "sensory_len": 1}
    y_hmt, c_hmt = hmt_forward(params, tokens, cache_size=1, **opts)
    y_rmt, c_rmt = hmt_forward(params, tokens, memory="rmt", **opts)
    np.testing.assert_allclose(y_hmt, y_rmt, rtol=1e-13, atol=1e-15)
    g_hmt = tree_flatten(hmt_backward(params, c_hmt, dlogits))
    g_rmt = tree_flatten(hmt_backward(params, c_rmt, dlogits))
    for path in g_hmt:
        np.testing.assert_allclose(g_hmt[path], g_rmt[path], rtol=1e-11, atol=1e-14, err_msg=path)
        if path in ("W_q", "W_k", "prompt"):
            assert not g_rmt[path].any() and np.abs(g_hmt[path]).max() < 1e-14, path


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_no_memory_is_the_backbone_on_each_segment(rng, arch):
    params = tiny(rng, arch)
    tokens = rng.integers(0, 5, (2, 7))
    dlogits = rng.standard_normal((2, 7, 5))
    logits, cache = hmt_forward(params, tokens, segment_len=3, memory="none")
    grads = hmt_backward(params, cache, dlogits)
    want = {k: np.zeros_like(v) for k, v in tree_flatten(backbone(params)).items()}
    for a in (0, 3, 6):
        y, c = transformer_lm_forward(backbone(params), tokens[:, a : a + 3])
        np.testing.assert_allclose(logits[:, a : a + 3], y, rtol=1e-12, atol=1e-14)
        for path, g in tree_flatten(transformer_lm_backward(backbone(params), c, dlogits[:, a : a + 3])).items():
            want[path] += g
    got = tree_flatten(grads)
    for path, g in want.items():
        np.testing.assert_allclose(got[path], g, rtol=1e-11, atol=1e-14, err_msg=path)
    for path in ("W_q", "W_k", "prompt", "memory"):
        assert not got[path].any()


def test_sensory_tokens_are_the_previous_segments_last_tokens(rng):
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 9))
    logits, _ = hmt_forward(params, tokens, segment_len=3, sensory_len=2, memory="none")
    for a in (3, 6):
        y, _ = transformer_lm_forward(backbone(params), tokens[:, a - 2 : a + 3])
        np.testing.assert_allclose(logits[:, a : a + 3], y[:, 2:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("memory", ["hmt", "rmt"])
def test_one_segment_is_the_backbone_between_two_memory_tokens(rng, memory):
    """With T <= L there is one segment: the backbone on [m_init || x || m_init]. The reference puts
    m_init into the embedding table as an extra token and runs the transformer LM on the ids."""
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 6))
    logits, cache = hmt_forward(params, tokens, segment_len=8, memory=memory)
    ref = backbone(params)
    ref["embed"] = np.concatenate([params["embed"], params["memory"][None]], axis=0)  # id 5 = m_init
    ref["head"] = np.concatenate([params["head"], np.zeros((4, 1))], axis=1)
    ids = np.concatenate([np.full((2, 1), 5), tokens, np.full((2, 1), 5)], axis=1)
    y, c = transformer_lm_forward(ref, ids)
    np.testing.assert_allclose(logits, y[:, 1:-1, :5], rtol=1e-12, atol=1e-14)
    assert len(cache["memories"]) == 1
    # the gradient of m_init is the sum of the gradients of the two rows that hold it
    dlogits = rng.standard_normal(logits.shape)
    dy = np.zeros(y.shape)
    dy[:, 1:-1, :5] = dlogits
    g_ref = transformer_lm_backward(ref, c, dy)
    g = hmt_backward(params, cache, dlogits)
    np.testing.assert_allclose(g["memory"], g_ref["embed"][5], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(g["embed"], g_ref["embed"][:5], rtol=1e-11, atol=1e-14)


def test_truncated_bptt(rng):
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 8))
    targets = rng.integers(0, 5, (2, 8))
    last = np.zeros((2, 8), bool)
    last[:, 6:] = True  # the loss reads the last segment only
    batch = (tokens, np.where(last, targets, -100))

    def grads(bptt):
        return tree_flatten(hmt_loss_and_grads(params, batch, bptt_segments=bptt, **OPTIONS)[1])

    full, long_enough, none = grads(None), grads(4), grads(0)
    for path in full:
        np.testing.assert_array_equal(long_enough[path], full[path], err_msg=path)
    # cut at once: the last segment's loss reaches the earlier segments only through its own inputs
    assert not none["memory"].any() and np.abs(full["memory"]).max() > 1e-6
    assert np.abs(none["W_q"]).max() > 0 and not np.allclose(none["W_q"], full["W_q"])


def test_loss_and_grads_ignores_unmasked_positions(rng):
    params = tiny(rng)
    tokens = rng.integers(0, 5, (2, 8))
    mask = np.zeros((2, 8), bool)
    mask[:, 5] = True
    a = hmt_loss_and_grads(params, Batch(tokens, tokens, mask), segment_len=2)
    b = hmt_loss_and_grads(params, (tokens, np.where(mask, tokens, -100)), segment_len=2)
    assert a[0] == b[0]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"memory": "lstm"}, "memory: expected one of"),
        ({"segment_len": 0}, "segment_len"),
        ({"cache_size": 0}, "cache_size"),
        ({"sensory_len": 3}, r"sensory_len: expected an integer in \[0, segment_len = 2\]"),
        ({"prefix_len": 0}, "prefix_len"),
        ({"bptt_segments": -1}, "bptt_segments"),
    ],
)
def test_bad_options(rng, kw, match):
    params = tiny(rng)
    with pytest.raises(ValueError, match=match):
        hmt_forward(params, np.zeros((1, 4), int), **{"segment_len": 2, **kw})


def test_bad_inputs(rng):
    params = tiny(rng)
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, vocab_size = 5\)"):
        hmt_forward(params, np.full((1, 4), 5), segment_len=2)
    with pytest.raises(ValueError, match="tokens: expected 2 axes"):
        hmt_forward(params, np.zeros(4, int), segment_len=2)
    with pytest.raises(ValueError, match="params: expected the backbone's"):
        hmt_forward({k: v for k, v in params.items() if k != "prompt"}, np.zeros((1, 4), int), segment_len=2)
    with pytest.raises(ValueError, match="params/W_k"):
        hmt_forward({**params, "W_k": params["W_k"][:, :2]}, np.zeros((1, 4), int), segment_len=2)
    _, cache = hmt_forward(params, np.zeros((1, 4), int), segment_len=2)
    with pytest.raises(ValueError, match="dlogits"):
        hmt_backward(params, cache, np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"M: expected shape \(B, m, D\)"):
        memory_recall(np.zeros((2, 4)), np.zeros((2, 0, 4)), np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="N"):
        update_cache([], 0, 0)
