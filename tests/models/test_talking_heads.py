"""Talking heads (ref.models.talking_heads, ref.tasks.laundry_list): finite differences on every
parameter, the SVD components rebuild W_OV, the composition score against a direct computation and
its invariance to rescaling, the intervention (scale 1 = identity, scale 0 = the head removed),
the task's layout and determinism, bad input."""

import copy

import numpy as np
import pytest

from ref.models.talking_heads import (
    attn_only_backward,
    attn_only_forward,
    attn_only_loss_and_grads,
    component_composition_scores,
    composition_score,
    init_attn_only,
    ov_components,
    ov_matrix,
    qk_matrix,
    scaled_ov,
)
from ref.tasks.laundry_list import FIRST_OBJECT, QUERY, SEP, LaundryList
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.talking_heads


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny(rng, n_layers=2, D=6, heads=2):
    task = LaundryList(num_items=3, num_objects=5)
    batch = task.sample(rng, 2)
    params = randomize(init_attn_only(rng, task.vocab_size, D=D, n_layers=n_layers, n_heads=heads), rng)
    return task, batch, params


@pytest.mark.parametrize("n_layers", [1, 2])
def test_gradcheck_every_parameter(rng, n_layers):
    task, batch, params = tiny(rng, n_layers)
    batch.inputs[0, :2] = batch.inputs[0, 3]  # a token seen three times: the scatter of dE must add
    gradcheck_tree(attn_only_forward, attn_only_backward, params,
                   {"tokens": batch.inputs, "segments": task.segment_ids(batch.inputs)},
                   rng=rng, name="attn_only", returns_dx=False)


def test_loss_and_grads_match_masked_cross_entropy(rng):
    task, batch, params = tiny(rng)
    seg = task.segment_ids(batch.inputs)
    loss, grads = attn_only_loss_and_grads(params, batch.inputs, seg, batch.targets, batch.loss_mask)
    logits, _ = attn_only_forward(params, batch.inputs, seg)
    last = logits[:, -1]  # only the query position is scored
    logp = last - last.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -logp[np.arange(2), batch.targets[:, -1]].mean()
    assert np.isclose(loss, expected, rtol=1e-12)
    assert grads["layers"][0]["W_q"].shape == params["layers"][0]["W_q"].shape


def test_components_rebuild_ov_and_have_rank_at_most_k(rng):
    params = randomize(  # D = 7, K = 3: not powers of two
init_attn_only(rng, 9, D=7, n_heads=2, head_dim=3), rng)
    W = ov_matrix(params, 0, 1)
    np.testing.assert_allclose(W, params["layers"][0]["W_v"][:, 1] @ params["layers"][0]["W_o"][1], rtol=0, atol=0)
    U, sigma, Vt = ov_components(W)
    rebuilt = sum(sigma[r] * np.outer(U[:, r], Vt[r]) for r in range(len(sigma)))
    np.testing.assert_allclose(rebuilt, W, rtol=0, atol=1e-13)
    assert np.all(sigma[3:] < 1e-13 * sigma[0])  # rank <= K = 3
    U3, s3, Vt3 = ov_components(W, rank=3)
    np.testing.assert_allclose((U3 * s3) @ Vt3, W, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_score_direct_and_scale_invariant(rng, kind):
    A, B = rng.standard_normal((2, 5, 5))
    product = A @ B.T if kind == "k" else A @ B
    direct = np.sqrt((product ** 2).sum()) / (np.sqrt((A ** 2).sum()) * np.sqrt((B ** 2).sum()))
    assert np.isclose(composition_score(A, B, kind), direct, rtol=1e-13)
    assert np.isclose(composition_score(3.5 * A, -0.01 * B, kind), direct, rtol=1e-13)
    assert 0 <= direct <= 1


def test_component_scores_equal_rank_one_formula(rng):
    _, _, params = tiny(rng)
    for kind in ("q", "k", "v"):
        cs = component_composition_scores(params, (0, 0), (1, 1), kind)
        U, sigma, Vt = ov_components(ov_matrix(params, 0, 0), rank=3)
        B = ov_matrix(params, 1, 1) if kind == "v" else qk_matrix(params, 1, 1)
        B = B.T if kind == "k" else B
        # a rank-1 A = sigma u v^T: CS = ||v^T B|| / ||B||, whatever sigma
        np.testing.assert_allclose(cs, np.linalg.norm(Vt @ B, axis=1) / np.linalg.norm(B), rtol=1e-12)


def test_intervention_identity_and_removal(rng):
    task, batch, params = tiny(rng)
    seg = task.segment_ids(batch.inputs)
    plain, _ = attn_only_forward(params, batch.inputs, seg)
    same, _ = attn_only_forward(params, batch.inputs, seg, interventions={(0, 1): np.ones(3), (1, 0): np.ones(3)})
    np.testing.assert_allclose(same, plain, rtol=0, atol=1e-13)
    removed = copy.deepcopy(params)
    removed["layers"][0]["W_o"][1] = 0.0
    expected, _ = attn_only_forward(removed, batch.inputs, seg)
    zeroed, _ = attn_only_forward(params, batch.inputs, seg, interventions={(0, 1): np.zeros(3)})
    np.testing.assert_allclose(zeroed, expected, rtol=0, atol=1e-13)


def test_intervention_equals_edited_weights(rng):
    """Scaling components in the forward = running the model with W_o edited so W_V W_O' = W_OV'."""
    task, batch, params = tiny(rng)
    seg = task.segment_ids(batch.inputs)
    scales = np.array([2.0, 0.0, 0.5])
    target = scaled_ov(ov_matrix(params, 0, 0), scales)
    edited = copy.deepcopy(params)
    W_v = params["layers"][0]["W_v"][:, 0]  # (D, K): W_OV' lies in its column space
    edited["layers"][0]["W_o"][0] = np.linalg.lstsq(W_v, target, rcond=None)[0]
    np.testing.assert_allclose(ov_matrix(edited, 0, 0), target, atol=1e-12)
    a, _ = attn_only_forward(params, batch.inputs, seg, interventions={(0, 0): scales})
    b, _ = attn_only_forward(edited, batch.inputs, seg)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_laundry_list_layout_and_determinism():
    task = LaundryList(num_items=5, num_objects=9)
    b1 = task.sample(np.random.default_rng(3), 16)
    b2 = task.sample(np.random.default_rng(3), 16)
    np.testing.assert_array_equal(b1.inputs, b2.inputs)
    assert b1.inputs.shape == (16, 11) and task.vocab_size == 11
    assert np.all(b1.inputs[:, 4] == SEP) and np.all(b1.inputs[:, -1] == QUERY)
    for row, target in zip(b1.inputs, b1.targets[:, -1]):
        mentioned, listed = set(row[:4]), row[5:10]
        assert len(set(listed)) == 5 and mentioned < set(listed)
        assert set(listed) - mentioned == {target} and target >= FIRST_OBJECT
    assert b1.loss_mask.sum() == 16 and b1.loss_mask[:, -1].all()
    np.testing.assert_array_equal(task.segment_ids(b1.inputs)[0], [0] * 4 + [1] * 7)


def test_bad_inputs(rng):
    task, batch, params = tiny(rng)
    seg = task.segment_ids(batch.inputs)
    with pytest.raises(ValueError, match="num_items"):
        LaundryList(num_items=1)
    with pytest.raises(ValueError, match="num_items"):
        LaundryList(num_items=6, num_objects=5)
    with pytest.raises(ValueError, match="tokens"):
        attn_only_forward(params, batch.inputs + 100, seg)
    with pytest.raises(ValueError, match="segments"):
        attn_only_forward(params, batch.inputs, seg[:, :-1])
    with pytest.raises(ValueError, match="interventions"):
        attn_only_forward(params, batch.inputs, seg, interventions={(0, 1): np.ones(2)})
    with pytest.raises(ValueError, match="interventions"):
        attn_only_forward(params, batch.inputs, seg, interventions={(2, 0): np.ones(3)})
    with pytest.raises(ValueError, match="kind"):
        composition_score(np.eye(3), np.eye(3), "x")
    with pytest.raises(ValueError, match="receiver"):
        component_composition_scores(params, (1, 0), (0, 1))
    with pytest.raises(ValueError, match="cache"):
        _, cache = attn_only_forward(params, batch.inputs, seg, interventions={(0, 0): np.ones(3)})
        attn_only_backward(params, cache, np.zeros((2, 7, task.vocab_size)))
    with pytest.raises(ValueError, match="n_heads"):
        init_attn_only(rng, 10, D=7, n_heads=2)
