"""Surprisal, repeat surprisal and the verbatim-lists paradigm (Armeni, Honey and Linzen, 2022).

Nothing in ``ref/models/repeat_surprisal.py`` has a backward pass (the models it measures are
``ref.models.transformer`` and ``ref.models.lstm_lm``, whose backward passes are checked in their
own tests), so there is no gradcheck here.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ref.models.repeat_surprisal import (
    induction_logits,
    lm_logits_fn,
    paradigm_repeat_surprisal,
    repeat_surprisal,
    token_surprisal,
    uniform_logits,
)
from ref.models.transformer import init_transformer_lm
from ref.tasks.verbatim_lists import AGAIN, CONDITIONS, LIST, PERIOD, VerbatimLanguage

pytestmark = pytest.mark.verbatim_stm

LANG = VerbatimLanguage(n_nouns=16, n_filler=6)


# --- surprisal -----------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(2, 6), V=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_token_surprisal_is_minus_log_softmax(B, T, V, seed):
    rng = np.random.default_rng(seed)
    logits = 5 * rng.standard_normal((B, T, V))
    tokens = rng.integers(0, V, (B, T))
    s = token_surprisal(logits, tokens)
    assert np.all(np.isnan(s[:, 0]))
    for b in range(B):
        for t in range(1, T):
            p = np.exp(logits[b, t - 1]) / np.exp(logits[b, t - 1]).sum()  # softmax, written out
            assert s[b, t] == pytest.approx(-np.log(p[tokens[b, t]]), rel=1e-12, abs=1e-12)


def test_token_surprisal_is_stable_for_large_logits():
    logits = np.array([[[1000.0, 0.0], [0.0, 0.0]]])
    s = token_surprisal(logits, np.array([[0, 1]]))
    assert s[0, 1] == pytest.approx(1000.0, rel=1e-14)


def test_repeat_surprisal_equals_a_hand_computation():
    s = np.array([[np.nan, 2.0, 4.0, 9.0, 1.0, 0.5], [np.nan, 1.0, 1.0, 9.0, 3.0, 1.0]])
    got = repeat_surprisal(s, np.array([1, 2]), np.array([4, 5]))
    np.testing.assert_allclose(got, [100 * 0.75 / 3.0, 100 * 2.0 / 1.0], rtol=1e-14)


# --- the paradigm --------------------------------------------------------------------------------


@pytest.mark.parametrize("n, gap", [(2, 0), (3, 5), (8, 4)])
def test_paradigm_lists_match_by_condition(n, gap):
    par = LANG.paradigm(np.random.default_rng(0), 20, n, gap, prefix=3)
    l1, l2 = par.list1, par.list2
    assert l2[0] - l1[-1] == gap + 3  # ".", the gap, AGAIN
    first = par.tokens["repeat"][:, l1]
    for c in CONDITIONS:
        tok = par.tokens[c]
        np.testing.assert_array_equal(tok[:, : l2[0]], par.tokens["repeat"][:, : l2[0]])  # matched up to list2
        assert np.all(tok[:, l1[0] - 1] == LIST) and np.all(tok[:, l2[0] - 1] == AGAIN) and np.all(tok[:, -1] == PERIOD)
        assert np.all(LANG.is_noun(tok[:, l1])) and np.all(LANG.is_noun(tok[:, l2]))
        assert not np.any(LANG.is_noun(np.delete(tok, np.r_[l1, l2], axis=1)))  # nouns only in the lists
    for row in range(20):
        assert len(set(first[row])) == n
        second = {c: par.tokens[c][row, l2] for c in CONDITIONS}
        np.testing.assert_array_equal(second["repeat"], first[row])
        assert sorted(second["permuted"]) == sorted(first[row]) and np.all(second["permuted"] != first[row])
        assert len(set(second["novel"])) == n and not set(second["novel"]) & set(first[row])


def test_paradigm_and_documents_are_deterministic():
    a = LANG.paradigm(np.random.default_rng(7), 4, 3, 6)
    b = LANG.paradigm(np.random.default_rng(7), 4, 3, 6)
    for c in CONDITIONS:
        np.testing.assert_array_equal(a.tokens[c], b.tokens[c])
    x1, y1 = LANG.sample_documents(np.random.default_rng(3), 4, 40)
    x2, y2 = LANG.sample_documents(np.random.default_rng(3), 4, 40)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one
    assert x1.min() >= 0 and x1.max() < LANG.vocab_size


def test_documents_repeat_lists_verbatim_after_again():
    x, _ = LANG.sample_documents(np.random.default_rng(1), 16, 120, list_lengths=(3, 3), gap_range=(1, 4), p_repeat=1.0)
    checked = 0
    for row in x:
        for t in np.flatnonzero(row == AGAIN):
            if t + 4 <= row.size:
                starts = np.flatnonzero(row[:t] == LIST)
                np.testing.assert_array_equal(row[t + 1 : t + 4], row[starts[-1] + 1 : starts[-1] + 4])
                checked += 1
    assert checked > 0


# --- the metric's bounds, with the reference models ------------------------------------------------


def test_memoryless_model_gives_100_and_copier_gives_about_0():
    par = LANG.paradigm(np.random.default_rng(2), 8, 4, 5)
    V = LANG.vocab_size
    memoryless = paradigm_repeat_surprisal(lambda tok: uniform_logits(tok, V), par)
    for c in CONDITIONS:
        np.testing.assert_allclose(memoryless[c], 100.0, rtol=1e-12)
    copier = paradigm_repeat_surprisal(lambda tok: induction_logits(tok, V, strength=30.0), par)
    # list2 after AGAIN: the first noun follows AGAIN, which has not occurred before: uniform,
    # surprisal log V; the other n - 1 nouns are copied. So 100 * (log V / n) / log V = 100 / n, up to e^-30.
    np.testing.assert_allclose(copier["repeat"], 100.0 / 4, rtol=1e-9)
    assert np.all(copier["novel"] >= 100.0 - 1e-9)  # copying predicts nothing about fresh nouns


def test_induction_rule_copies_from_the_second_token_on():
    tokens = np.array([[5, 6, 7, 8, 5, 6, 7, 8]])
    s = token_surprisal(induction_logits(tokens, 9, strength=40.0), tokens)
    assert np.all(s[0, 5:] < 1e-12) and s[0, 4] == pytest.approx(np.log(9))


def test_lm_logits_fn_wraps_a_transformer():
    params = init_transformer_lm(np.random.default_rng(0), LANG.vocab_size, 8, 1, "llama", num_heads=2)
    par = LANG.paradigm(np.random.default_rng(0), 3, 2, 1)
    rs = paradigm_repeat_surprisal(lm_logits_fn("transformer", params), par, batch=2)
    assert set(rs) == set(CONDITIONS) and all(v.shape == (3,) and np.all(np.isfinite(v)) for v in rs.values())


# --- bad inputs ----------------------------------------------------------------------------------------


def test_bad_inputs():
    logits, tokens = np.zeros((1, 3, 4)), np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="logits: expected 3 axes"):
        token_surprisal(np.zeros((3, 4)), tokens)
    with pytest.raises(ValueError, match="tokens: expected ids in"):
        token_surprisal(logits, np.array([[0, 1, 4]]))
    with pytest.raises(ValueError, match="tokens: expected shape"):
        token_surprisal(logits, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        token_surprisal(logits, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="logits: expected finite"):
        token_surprisal(np.full((1, 3, 4), np.nan), tokens)
    s = token_surprisal(logits, tokens)
    with pytest.raises(ValueError, match="list1: expected positions in"):
        repeat_surprisal(s, np.array([0, 1]), np.array([2]))
    with pytest.raises(ValueError, match="list2: expected a non-empty"):
        repeat_surprisal(s, np.array([1]), np.array([], dtype=int))
    with pytest.raises(ValueError, match="positive mean on list1"):
        repeat_surprisal(np.array([[np.nan, 0.0, 1.0]]), np.array([1]), np.array([2]))
    with pytest.raises(ValueError, match="vocab_size: expected an integer >= 2"):
        uniform_logits(tokens, 1)
    with pytest.raises(ValueError, match="kind: expected one of"):
        lm_logits_fn("gru", {})
    with pytest.raises(ValueError, match="logits_fn: expected a callable"):
        paradigm_repeat_surprisal(None, LANG.paradigm(np.random.default_rng(0), 1, 2, 0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="list_length: expected an integer in"):
        LANG.paradigm(rng, 2, 9, 3)  # 16 nouns: novel lists of 9 need 18
    with pytest.raises(ValueError, match="gap: expected an integer >= 0"):
        LANG.paradigm(rng, 2, 3, -1)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        LANG.paradigm(0, 2, 3, 1)
    with pytest.raises(ValueError, match="p_repeat: expected a probability"):
        LANG.sample_documents(rng, 2, 10, p_repeat=1.5)
    with pytest.raises(ValueError, match="gap_range: expected low <= high"):
        LANG.sample_documents(rng, 2, 10, gap_range=(5, 2))
    with pytest.raises(ValueError, match="n_nouns: expected an integer >= 4"):
        VerbatimLanguage(n_nouns=2)
