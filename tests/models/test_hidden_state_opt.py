"""Inference-time state updates (ref.models.hidden_state_opt): gradcheck of the state gradients of
one step, of the error signals and of the HSO window; alpha = 0 and lr = 0 change nothing, bit for
bit; a small step lowers the loss it was taken on; the Markov sources; search; bad input."""

import numpy as np
import pytest

from ref.models.hidden_state_opt import (
    beam_search,
    error_signal,
    exhaustive_mode,
    frozen_nll,
    hso_nll,
    lm_step,
    lm_step_backward,
    recode,
    recoding_nll,
    state_gradient,
    window_loss_and_grads,
    zero_state,
)
from ref.models.lstm_lm import init_lstm_lm, lstm_lm_forward
from ref.nn import gradcheck
from ref.tasks.markov_sources import MarkovSource

pytestmark = [pytest.mark.recoding, pytest.mark.making_the_most]

V, D, L, B = 7, 5, 2, 3


@pytest.fixture
def model():
    rng = np.random.default_rng(0)
    params = init_lstm_lm(rng, V, D, L, hidden=6)
    state = rng.standard_normal((B, L, 2, 6)) * 0.5
    return params, state, rng


def test_step_state_gradient(model):
    params, state, rng = model
    tokens = rng.integers(0, V, B)

    def fwd(state):
        return lm_step(params, tokens, state)

    def bwd(dlogits, dstate, cache):
        return {"state": lm_step_backward(params, cache, dlogits, dstate)}

    gradcheck(fwd, bwd, {"state": state}, rng=rng, name="lm_step")


@pytest.mark.parametrize("signal", ["surprisal", "entropy"])
def test_error_signal_gradient(signal):
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((4, V)) * 2, rng.integers(0, V, 4)

    def fwd(logits):
        E, dz = error_signal(logits, targets, signal)
        return E, dz

    gradcheck(fwd, lambda dE, dz: {"logits": dE[:, None] * dz}, {"logits": logits}, rng=rng, name=signal)


@pytest.mark.parametrize("signal", ["surprisal", "entropy"])
def test_state_gradient_end_to_end(model, signal):
    params, state, rng = model
    tokens, targets = rng.integers(0, V, B), rng.integers(0, V, B)

    def fwd(state):
        E, g = state_gradient(params, tokens, targets, state, signal)
        return E, g

    gradcheck(fwd, lambda dE, g: {"state": dE[:, None, None, None] * g}, {"state": state}, rng=rng, name=signal)


def test_window_gradient(model):
    params, base, rng = model
    W = 4
    tokens, targets = rng.integers(0, V, (B, W)), rng.integers(0, V, (B, W))
    deltas = rng.standard_normal((W,) + base.shape) * 0.2

    def fwd(deltas):
        losses, g, _ = window_loss_and_grads(params, tokens, targets, base, deltas)
        return losses.sum(1), g

    gradcheck(fwd, lambda dl, g: {"deltas": dl[None, :, None, None, None] * g}, {"deltas": deltas}, rng=rng, name="window")


def test_zero_step_changes_nothing_exactly(model):
    params, _, rng = model
    tokens = rng.integers(0, V, (B, 9))
    frozen = frozen_nll(params, tokens)
    logits, _ = lstm_lm_forward(params, tokens)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(frozen, -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0], rtol=1e-12)
    for signal in ("surprisal", "entropy"):
        assert np.array_equal(recoding_nll(params, tokens, 0.0, signal), frozen)
    for window in (1, 3):
        assert np.array_equal(hso_nll(params, tokens, 0.0, window=window), frozen)
    assert not np.array_equal(hso_nll(params, tokens, 0.1, window=3), frozen)


@pytest.mark.parametrize("signal", ["surprisal", "entropy"])
def test_small_recoding_step_lowers_its_signal(model, signal):
    params, state, rng = model
    tokens, targets = rng.integers(0, V, B), rng.integers(0, V, B)
    new_state, E = recode(params, tokens, targets, state, 1e-3, signal)
    E_after, _ = state_gradient(params, tokens, targets, new_state, signal)
    assert (E_after < E).all()


def test_small_hso_step_lowers_the_window_loss(model):
    params, base, rng = model
    tokens, targets = rng.integers(0, V, (B, 3)), rng.integers(0, V, (B, 3))
    deltas = np.zeros((3,) + base.shape)
    losses, g, _ = window_loss_and_grads(params, tokens, targets, base, deltas)
    # the first Adam step of each state is lr * sign(g) (up to eps): a small step must descend
    after, _, _ = window_loss_and_grads(params, tokens, targets, base, deltas - 1e-4 * np.sign(g))
    assert (after.sum(1) < losses.sum(1)).all()


def test_markov_source():
    src = MarkovSource.random(8, 3, 2, seed=5)
    a = src.sample(np.random.default_rng(0), 4, 20)
    assert np.array_equal(a, src.sample(np.random.default_rng(0), 4, 20))
    assert (src.transitions.max(0)[a[:, :-1], a[:, 1:]] > 0).all()  # only transitions some topic allows
    one = MarkovSource(src.transitions[:1])  # one topic: the filter is the chain itself
    x = one.sample(np.random.default_rng(1), 3, 10)
    np.testing.assert_allclose(one.bayes_nll(x), -np.log(one.transitions[0][x[:, :-1], x[:, 1:]]))
    shifted = src.shifted(0.3)
    assert shifted.switch == 0.3 and shifted.transitions is src.transitions
    assert np.isfinite(shifted.bayes_nll(shifted.sample(np.random.default_rng(2), 3, 30))).all()


def test_search():
    rng = np.random.default_rng(0)
    table = np.log(rng.dirichlet(np.ones(3), size=(3,) * 3 + (1,))[..., 0, :])  # depends on up to 3 tokens

    def next_logprobs(prefixes):
        out = np.empty((len(prefixes), 3))
        for i, p in enumerate(prefixes):
            idx = tuple(p) + (0,) * (3 - len(p))
            out[i] = table[idx]
        return out

    seq, lp = exhaustive_mode(next_logprobs, 3, 3)
    seq_b, lp_b = beam_search(next_logprobs, 3, 3, beam_size=27)
    assert np.array_equal(seq, seq_b) and lp == pytest.approx(lp_b)
    no_zero = lambda s: np.where((s == seq[0]).any(1), -np.inf, 0.0)  # noqa: E731  condition: avoid one token
    seq_c, _ = beam_search(next_logprobs, 3, 3, beam_size=27, condition=no_zero)
    seq_e, _ = exhaustive_mode(next_logprobs, 3, 3, condition=no_zero)
    assert np.array_equal(seq_c, seq_e) and seq[0] not in seq_c


def test_bad_inputs(model):
    params, state, rng = model
    tokens = rng.integers(0, V, (B, 5))
    with pytest.raises(ValueError, match="tokens: expected ids in"):
        frozen_nll(params, tokens + V)
    with pytest.raises(ValueError, match="at least 2 time steps"):
        frozen_nll(params, tokens[:, :1])
    with pytest.raises(ValueError, match="state: expected"):
        lm_step(params, tokens[:, 0], state[:, :1])
    with pytest.raises(ValueError, match="alpha: expected a finite number >= 0"):
        recoding_nll(params, tokens, -0.1)
    with pytest.raises(ValueError, match="signal: expected one of"):
        recoding_nll(params, tokens, 0.1, "variance")
    with pytest.raises(ValueError, match="window: expected an integer >= 1"):
        hso_nll(params, tokens, 0.1, window=0)
    with pytest.raises(ValueError, match="lr: expected"):
        hso_nll(params, tokens, float("nan"))
    with pytest.raises(ValueError, match="params: expected an LSTM language model"):
        zero_state({"embed": 1}, 2)
    with pytest.raises(ValueError, match="branching: expected at most"):
        MarkovSource.random(4, 2, 5)
    with pytest.raises(ValueError, match="switch: expected a probability"):
        MarkovSource.random(4, 2, 2).shifted(1.5)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(lambda p: np.zeros((len(p), 2)), 2, 2, 0)


def test_prefix_distribution_matches_bayes_nll():
    src = MarkovSource.random(6, 3, 3, seed=2).shifted(0.1)
    x = src.sample(np.random.default_rng(3), 5, 7)
    logp, nxt = src.prefix_distribution(x[:, :6])
    np.testing.assert_allclose(logp, -np.log(6) - src.bayes_nll(x[:, :6]).sum(1), rtol=1e-12)
    np.testing.assert_allclose(-np.log(nxt[np.arange(5), x[:, 6]]), src.bayes_nll(x)[:, -1], rtol=1e-12)
    np.testing.assert_allclose(nxt.sum(1), 1.0)
