"""Successor heads (arXiv 2312.09230): the one-layer model's backward, the effective OV circuit, the
succession score against a brute-force count, hand-built heads, the ordinal-sequence task."""

import numpy as np
import pytest

from ref.models.successor_heads import (
    ablate_head,
    effective_embedding,
    head_ov_matrix,
    init_successor_model,
    mod10_probe_accuracy,
    ov_logits,
    succession_score,
    successor_model_backward,
    successor_model_forward,
    successor_model_loss_and_grads,
)
from ref.nn import gelu
from ref.tasks.ordinal_sequences import ORDINAL_VOCAB, OrdinalSequences
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.successor_heads

CATEGORIES = ORDINAL_VOCAB.categories
V = ORDINAL_VOCAB.vocab_size


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def small_model(rng, vocab_size=11, D=8, H=2):
    return randomize(init_successor_model(rng, vocab_size, D, H, mlp_hidden=6), rng)


def test_model_gradcheck_every_parameter(rng):
    params = small_model(rng)
    tokens = rng.integers(0, 11, (2, 5))
    gradcheck_tree(
        successor_model_forward,
        successor_model_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name="successor_model",
        returns_dx=False,
    )


def test_loss_and_grads_match_forward_backward(rng):
    params = small_model(rng)
    inputs, targets = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    loss, grads = successor_model_loss_and_grads(params, (inputs, targets))
    logits, _ = successor_model_forward(params, inputs)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert loss == pytest.approx(-np.take_along_axis(logp, targets[..., None], -1).mean(), rel=1e-12)
    assert set(grads) == set(params)


def test_ov_logits_equal_the_model_when_a_head_attends_to_one_token(rng):
    """At T = 1 every head attends to the only token with weight 1, so the logits are
    e(t) W_U + sum_h ov_h(t): the effective OV circuit is exact in this model."""
    params = small_model(rng)
    ids = np.arange(11)
    logits, _ = successor_model_forward(params, ids[:, None])
    direct = effective_embedding(params, ids) @ params["unembed"]
    assert np.allclose(logits[:, 0], direct + sum(ov_logits(params, h, ids) for h in range(2)), rtol=1e-12, atol=1e-12)
    # and the MLP0 part alone is what the paper writes MLP0(W_E t)
    x = params["embed"]
    m = gelu(x @ params["mlp0"]["W_fc"] + params["mlp0"]["b_fc"], approximate="tanh")[0] @ params["mlp0"]["W_proj"]
    mlp0_only = effective_embedding(params, ids, include_embedding=False)
    assert np.allclose(mlp0_only, m + params["mlp0"]["b_proj"], rtol=1e-12)


def brute_force_score(logits, categories):
    """(3) one token at a time, with Python loops."""
    hits = []
    for ids in categories.values():
        members = sorted(set(int(i) for i in ids))
        for i in range(len(ids) - 1):
            t, succ = int(ids[i]), int(ids[i + 1])
            best = max(members, key=lambda u: logits[t, u])
            hits.append(best == succ)
    return sum(hits) / len(hits)


def test_succession_score_equals_brute_force(rng):
    params = init_successor_model(rng, V, 16, 2)
    for h in range(2):
        logits = ov_logits(params, h, np.arange(V))
        assert succession_score(logits, CATEGORIES)["all"] == brute_force_score(logits, CATEGORIES)
    one = {"days": CATEGORIES["days"]}
    assert succession_score(logits, one)["days"] == brute_force_score(logits, one)


def hand_built_successor_model(ov_map):
    """D = V one-hot embeddings, MLP0 = 0, W_U = I, one head whose W_OV is ``ov_map`` (V, V)."""
    params = init_successor_model(np.random.default_rng(0), V, V, 1)
    params["embed"] = np.eye(V)
    params["mlp0"] = {k: np.zeros_like(v) for k, v in params["mlp0"].items()}
    params["unembed"] = np.eye(V)
    params["attn"]["W_v"] = np.eye(V)[:, None, :]  # (D, 1, V): W_V^0 = I
    params["attn"]["W_o"] = ov_map  # W_O^0 (V, D)
    return params


def test_the_successor_permutation_scores_one_and_a_copying_head_zero():
    succ = ORDINAL_VOCAB.successor_table()
    perm = np.eye(V)
    has = succ >= 0
    perm[has] = np.eye(V)[succ[has]]  # row t -> one-hot succ(t)
    params = hand_built_successor_model(perm)
    assert np.allclose(head_ov_matrix(params, 0), perm)
    scores = succession_score(ov_logits(params, 0, np.arange(V)), CATEGORIES)
    assert all(s == 1.0 for s in scores.values())
    copying = succession_score(ov_logits(hand_built_successor_model(np.eye(V)), 0, np.arange(V)), CATEGORIES)
    assert copying["all"] == 0.0


def test_random_heads_score_about_one_over_the_category_size(rng):
    n = {k: len(v) - 1 for k, v in CATEGORIES.items()}  # tokens with a successor
    size = {k: len(set(v.tolist())) for k, v in CATEGORIES.items()}
    expected = sum(n[k] / size[k] for k in n) / sum(n.values())  # E[score] of i.i.d. random logits
    draws = [succession_score(rng.standard_normal((V, V)), CATEGORIES)["all"] for _ in range(200)]
    # 200 draws of a mean of 83 Bernoullis: the standard error of the average is below 0.003
    assert np.mean(draws) == pytest.approx(expected, abs=0.015)


def test_ablating_a_head_removes_exactly_its_contribution(rng):
    params = small_model(rng)
    ids = np.arange(11)
    logits, _ = successor_model_forward(params, ids[:, None])
    ablated, _ = successor_model_forward(ablate_head(params, 1), ids[:, None])
    assert np.allclose(logits[:, 0] - ablated[:, 0], ov_logits(params, 1, ids), rtol=1e-12, atol=1e-12)
    assert np.abs(ov_logits(ablate_head(params, 1), 1, ids)).max() == 0.0
    assert params["attn"]["W_o"].any()  # the original is untouched


def test_mod10_probe_finds_a_planted_last_digit_and_not_noise(rng):
    values = np.arange(40)
    planted = np.concatenate([np.eye(10)[values % 10], rng.standard_normal((40, 6))], axis=1)
    train, test = values < 30, values >= 30
    assert mod10_probe_accuracy(planted, values, train, test) == 1.0
    assert mod10_probe_accuracy(rng.standard_normal((40, 16)), values, train, test) <= 0.5


def test_task_is_deterministic_and_successor_targets_are_successors():
    task = OrdinalSequences(seq_len=30)
    a, b = task.sample(np.random.default_rng(3), 8), task.sample(np.random.default_rng(3), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(a.inputs[:, 1:], a.targets[:, :-1])
    succ = ORDINAL_VOCAB.successor_table()
    m = a.successor_mask
    assert m.any()
    # a successor target follows a comma, and is succ(the ordinal before it)
    assert np.all(a.inputs[m] == ORDINAL_VOCAB.separator)
    prev = np.zeros_like(a.inputs)
    prev[:, 1:] = a.inputs[:, :-1]
    assert np.array_equal(succ[prev[m]], a.targets[m])
    # and the comma is used only there
    assert np.array_equal(a.inputs[:, 1:] == ORDINAL_VOCAB.separator, m[:, 1:])


def test_bad_inputs(rng):
    params = small_model(rng)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of D"):
        init_successor_model(rng, 11, 8, 3)
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 11\)"):
        successor_model_forward(params, np.array([[0, 11]]))
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        successor_model_forward(params, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"head: expected an integer in \[0, 2\)"):
        ablate_head(params, 2)
    with pytest.raises(ValueError, match="params: expected a dict with keys"):
        successor_model_forward({"embed": params["embed"]}, np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="categories"):
        succession_score(np.zeros((11, 11)), {"x": [3]})
    with pytest.raises(ValueError, match="categories"):
        succession_score(np.zeros((11, 11)), {"x": [3, 12]})
    with pytest.raises(ValueError, match="p_list: expected a probability"):
        OrdinalSequences(p_list=1.5)
    with pytest.raises(ValueError, match="max_list: expected an integer >= 2"):
        OrdinalSequences(max_list=1)
    with pytest.raises(ValueError, match="chain_seed: expected an integer >= 0"):
        OrdinalSequences(chain_seed=-1)
    with pytest.raises(ValueError, match="batch_size"):
        OrdinalSequences().sample(rng, 0)
