"""Pointer Networks (ref.models.pointer_net): finite differences on every parameter (pointer and
fixed-vocabulary baseline, LSTM and set encoders), permutation equivariance, greedy decoding against
the teacher-forced forward, bad input."""

import numpy as np
import pytest

from ref.models.pointer_net import (
    IGNORE,
    init_pointer_net,
    pointer_net,
    pointer_net_backward,
    pointer_net_decode,
    pointer_scores,
    pointer_scores_backward,
)
from ref.nn import gradcheck
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.attention


def targets_for(B, n, m, rng, pad=True):
    """Random pointers in 1..n, END somewhere, IGNORE after it (a ragged batch)."""
    t = rng.integers(1, n + 1, (B, m))
    if pad:
        for b in range(B):
            stop = int(rng.integers(1, m))
            t[b, stop] = 0
            t[b, stop + 1 :] = IGNORE
    return t


@pytest.mark.parametrize("encoder", ["lstm", "set"])
def test_gradcheck_pointer(rng, encoder):
    params = randomize(init_pointer_net(rng, 2, hidden=3, attention=4, encoder=encoder), rng)
    x = rng.standard_normal((2, 4, 2))  # (B, n, I)
    t = targets_for(2, 4, 5, rng)
    t[0, 1] = t[0, 2] = 3  # one input fed back twice: the scatter of dx must add
    gradcheck_tree(pointer_net, pointer_net_backward, params, {"x": x, "targets": t}, rng=rng,
                   name=f"pointer_net[{encoder}]")


def test_gradcheck_fixed_vocabulary_baseline(rng):
    params = randomize(init_pointer_net(rng, 2, hidden=3, vocab=5), rng)
    x = rng.standard_normal((2, 4, 2))
    t = targets_for(2, 4, 4, rng)
    gradcheck_tree(pointer_net, pointer_net_backward, params, {"x": x, "targets": t}, rng=rng,
                   name="pointer_net[vocab]")


def test_gradcheck_pointer_scores(rng):
    inputs = {"E": rng.standard_normal((2, 5, 3)), "D": rng.standard_normal((2, 4, 3)),
              "W1": rng.standard_normal((3, 6)), "W2": rng.standard_normal((3, 6)), "v": rng.standard_normal(6)}
    gradcheck(pointer_scores, pointer_scores_backward, inputs, rng=rng, name="pointer_scores")


def test_scores_match_the_equation(rng):
    E, D = rng.standard_normal((1, 5, 3)), rng.standard_normal((1, 2, 3))
    W1, W2, v = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    u, _ = pointer_scores(E, D, W1, W2, v)
    for i in range(2):
        for j in range(5):  # u_j^i = v^T tanh(W1 e_j + W2 d_i), column vectors
            ref = v @ np.tanh(W1.T @ E[0, j] + W2.T @ D[0, i])
            assert abs(u[0, i, j] - ref) < 1e-13


def test_pointer_stage_is_permutation_equivariant(rng):
    """What holds for any encoder: permuting the encodings permutes the scores."""
    E, D = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 4, 3))
    W1, W2, v = rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    perm = rng.permutation(6)
    u, _ = pointer_scores(E, D, W1, W2, v)
    up, _ = pointer_scores(E[:, perm], D, W1, W2, v)
    np.testing.assert_allclose(up, u[:, :, perm], rtol=1e-13, atol=1e-13)


def test_set_encoder_permuting_the_input_permutes_the_pointers(rng):
    params = randomize(init_pointer_net(rng, 2, hidden=8, attention=8, encoder="set"), rng)
    x = rng.random((3, 7, 2))
    perm = rng.permutation(7)
    ptr, logits = pointer_net_decode(params, x)
    ptr_p, logits_p = pointer_net_decode(params, x[:, perm])
    # input j of the shuffled set is input perm[j] of the original: slot j + 1 <-> slot perm[j] + 1
    slots = np.concatenate([[0], perm + 1])
    np.testing.assert_allclose(logits_p, logits[:, :, slots], rtol=1e-12, atol=1e-12)
    inverse = np.argsort(slots)  # original slot -> shuffled slot
    np.testing.assert_array_equal(ptr_p, np.where(ptr >= 0, inverse[np.maximum(ptr, 0)], IGNORE))


def test_lstm_encoder_is_order_dependent(rng):
    """The paper's LSTM encoder reads the inputs in order: shuffling them changes the encodings."""
    params = randomize(init_pointer_net(rng, 2, hidden=8, attention=8), rng)
    x = rng.random((2, 6, 2))
    perm = np.array([5, 4, 3, 2, 1, 0])
    _, logits = pointer_net_decode(params, x, max_steps=1)
    _, logits_p = pointer_net_decode(params, x[:, perm], max_steps=1)
    assert not np.allclose(logits_p, logits[:, :, np.concatenate([[0], perm + 1])])


@pytest.mark.parametrize("vocab", [None, 9])
def test_greedy_decoding_equals_teacher_forcing_on_its_path(rng, vocab):
    x = rng.random((6, 6, 2))
    for _ in range(50):  # random networks until one decodes sequences of several lengths
        params = randomize(init_pointer_net(rng, 2, hidden=6, attention=5, vocab=vocab), rng)
        ptr, logits = pointer_net_decode(params, x, max_steps=9)
        lengths = (ptr != IGNORE).sum(axis=1)
        if len(set(lengths.tolist())) >= 2 and lengths.max() >= 3:
            break
    else:
        pytest.fail("no random network decoded sequences of several lengths")
    tf, _ = pointer_net(params, x, ptr)
    keep = ptr != IGNORE
    np.testing.assert_allclose(tf[keep], logits[keep], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ptr[keep], logits.argmax(-1)[keep])


def test_backward_twice_and_shapes(rng):
    params = init_pointer_net(rng, 1, hidden=4, attention=3)
    x = rng.random((2, 5, 1))
    t = targets_for(2, 5, 6, rng)
    logits, cache = pointer_net(params, x, t)
    assert logits.shape == (2, 6, 6)
    dy = rng.standard_normal(logits.shape)
    dx1, g1 = pointer_net_backward(params, cache, dy)
    dx2, g2 = pointer_net_backward(params, cache, dy)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(g1["W1"], g2["W1"])
    assert init_pointer_net(rng, 2, 4, vocab=8)["out"]["W"].shape == (4, 9)


def test_bad_input(rng):
    params = init_pointer_net(rng, 2, hidden=4, attention=3)
    x = rng.random((2, 5, 2))
    t = targets_for(2, 5, 6, rng)
    with pytest.raises(ValueError, match="x: expected shape"):
        pointer_net(params, rng.random((2, 5, 3)), t)
    with pytest.raises(ValueError, match="x: expected dtype"):
        pointer_net(params, x.astype(np.float32), t)
    with pytest.raises(ValueError, match="x: expected finite"):
        pointer_net(params, np.where(x > 0.5, np.nan, x), t)
    with pytest.raises(ValueError, match="targets: expected pointers in \\[0, 5\\]"):
        pointer_net(params, x, np.full((2, 3), 6))
    with pytest.raises(ValueError, match="targets: expected shape"):
        pointer_net(params, x, t[:1])
    with pytest.raises(ValueError, match="targets: expected an integer"):
        pointer_net(params, x, t.astype(float))
    with pytest.raises(ValueError, match="encoder"):
        init_pointer_net(rng, 2, encoder="gru")
    with pytest.raises(ValueError, match="max_steps"):
        pointer_net_decode(params, x, max_steps=0)
    baseline = init_pointer_net(rng, 2, hidden=4, vocab=3)  # outputs END, 1..3: index 4 is not expressible
    with pytest.raises(ValueError, match="targets: expected pointers in \\[0, 3\\]"):
        pointer_net(baseline, x, np.array([[4, 0], [1, 0]]))


def test_bad_cotangent(rng):
    params = init_pointer_net(rng, 2, hidden=4, attention=3)
    x = rng.random((2, 5, 2))
    logits, cache = pointer_net(params, x, targets_for(2, 5, 6, rng))
    with pytest.raises(ValueError, match="dlogits: expected shape"):
        pointer_net_backward(params, cache, np.zeros((2, 6, 5)))
