"""RegBench (ref.tasks.regbench): random DFAs, sampled strings, the two metrics and the in-context
n-gram estimator, each against a brute-force definition."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ref.tasks.regbench import (
    DFA,
    RegBench,
    legal_accuracy,
    ngram_counts,
    ngram_probs,
    random_dfa,
    total_variation,
)

pytestmark = pytest.mark.icll

SMALL = RegBench(num_symbols=6, seq_len=40, min_states=2, max_states=4, max_out_edges=3, min_length=1, max_length=6)


def strings_of(row, sep):
    """The complete and partial strings of one input row (split at the separators)."""
    out, cur = [], []
    for tok in row.tolist():
        if tok == sep:
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return out + [cur]


@given(seed=st.integers(0, 2**32 - 1), S=st.integers(1, 7), E=st.integers(1, 4), V=st.integers(7, 12))
def test_random_dfa_properties(seed, S, E, V):
    rng = np.random.default_rng(seed)
    dfa = random_dfa(rng, V, S, max_out_edges=E)
    t = dfa.transitions
    assert t.shape == (S, V) and t.min() >= -1 and t.max() < S
    k = (t >= 0).sum(axis=1)  # edges per state
    assert np.all((k >= 1) & (k <= min(E, S)))
    assert len(dfa.alphabet) <= S  # the alphabet has num_states symbols, not all of them used
    for q in range(S):
        p = dfa.next_distribution(q)
        np.testing.assert_allclose(p[t[q] >= 0], 1.0 / k[q], rtol=0, atol=1e-15)
        assert np.all(p[t[q] < 0] == 0)
    for length in (0, 1, 9):
        word = dfa.sample(rng, length)
        assert len(word) == length and dfa.accepts(word)


def test_random_dfa_is_deterministic_in_the_seed():
    a = random_dfa(np.random.default_rng(3), 10, 5)
    b = random_dfa(np.random.default_rng(3), 10, 5)
    np.testing.assert_array_equal(a.transitions, b.transitions)
    x = SMALL.sample(np.random.default_rng(5), 3)
    y = SMALL.sample(np.random.default_rng(5), 3)
    np.testing.assert_array_equal(x.inputs, y.inputs)


@settings(max_examples=10)  # each example reruns the DFA at every position
@given(seed=st.integers(0, 2**32 - 1))
def test_every_sampled_string_is_accepted_and_legal_is_exact(seed):
    batch = SMALL.sample(np.random.default_rng(seed), 3)
    sep = SMALL.separator
    B, T = batch.inputs.shape
    assert batch.inputs.shape == batch.targets.shape == batch.score_mask.shape == (B, SMALL.seq_len)
    assert batch.legal.shape == (B, T, SMALL.num_symbols) and batch.loss_mask.all()
    np.testing.assert_array_equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    np.testing.assert_array_equal(batch.score_mask, batch.targets != sep)
    assert np.all(batch.inputs[:, 0] == sep)
    for b, dfa in enumerate(batch.dfas):
        for word in strings_of(np.append(batch.inputs[b], batch.targets[b, -1]), sep):
            assert dfa.accepts(word)
            assert len(word) <= SMALL.max_length
        for t in range(T):  # legal[t] by brute force: rerun the DFA on the current string
            prefix = strings_of(batch.inputs[b, : t + 1], sep)[-1]
            brute = [dfa.accepts(prefix + [a]) for a in range(SMALL.num_symbols)]
            np.testing.assert_array_equal(batch.legal[b, t], brute)
            if batch.score_mask[b, t]:
                assert batch.legal[b, t, batch.targets[b, t]]  # the data never leave the language


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_metrics_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    batch = SMALL.sample(rng, 2)
    probs = rng.dirichlet(np.ones(SMALL.vocab_size), size=batch.inputs.shape)  # (B, T, vocab)
    sep, A = SMALL.separator, SMALL.num_symbols
    right, tvd, n = 0, 0.0, 0
    for b, dfa in enumerate(batch.dfas):
        for t in range(SMALL.seq_len):
            if batch.targets[b, t] == sep:
                continue
            prefix = strings_of(batch.inputs[b, : t + 1], sep)[-1]
            greedy = int(np.argmax(probs[b, t, :A]))
            right += dfa.accepts(prefix + [greedy])
            true = dfa.next_distribution(dfa.run(prefix))
            tvd += 0.5 * np.abs(probs[b, t, :A] / probs[b, t, :A].sum() - true).sum()
            n += 1
    assert batch.accuracy(probs) == right / n
    np.testing.assert_allclose(batch.tvd(probs), tvd / n, rtol=1e-12)
    true_probs = np.concatenate([batch.true_probs, np.zeros(batch.legal.shape[:2] + (1,))], axis=-1)
    assert batch.accuracy(true_probs) == 1.0 and batch.tvd(true_probs) == 0.0


def brute_ngram_counts(x, n, V):
    """c_i(v) by its definition, one position at a time."""
    T = len(x)
    c = np.zeros((T, V))
    for i in range(T):
        if i - n + 2 < 0:
            continue
        window = list(x[i - n + 2 : i + 1])
        for s in range(max(1, n - 1), i + 1):
            if list(x[s - n + 1 : s]) == window:
                c[i, x[s]] += 1
    return c


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), V=st.integers(1, 4), T=st.integers(1, 12))
def test_ngram_counts_match_the_definition(seed, n, V, T):
    x = np.random.default_rng(seed).integers(0, V, size=(2, T))
    c = ngram_counts(x, n, V)
    for b in range(2):
        np.testing.assert_array_equal(c[b], brute_ngram_counts(x[b], n, V))


def test_ngram_probs_back_off():
    # symbols 0, 1; separator 2. At the last position the 3-gram window (0, 1) is new, the 2-gram
    # window (1,) was followed by 0 once and by the separator once: p_2 = e(0).
    x = np.array([[2, 1, 0, 2, 1, 2, 0, 1]])
    p3 = ngram_probs(x, 3, 2, 3)
    np.testing.assert_array_equal(p3[0, -1], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(p3[0, 0], [0.5, 0.5, 0.0])  # nothing seen: uniform over the symbols
    np.testing.assert_allclose(p3.sum(-1), 1.0, rtol=0, atol=1e-15)
    assert np.all(p3[..., 2] == 0)


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_states: expected an integer >= 4"):
        RegBench(min_states=4, max_states=3)
    with pytest.raises(ValueError, match="max_states: expected at most num_symbols"):
        RegBench(num_symbols=4, max_states=5)
    with pytest.raises(ValueError, match="alphabet_size: expected at most num_symbols = 3"):
        random_dfa(rng, 3, 2, alphabet_size=4)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        random_dfa(0, 3, 2)
    with pytest.raises(ValueError, match="transitions: expected every state to have an edge"):
        DFA(np.array([[0, -1], [-1, -1]]))
    with pytest.raises(ValueError, match=r"transitions: expected entries in \[-1, 1\]"):
        DFA(np.array([[0, 2], [1, 1]]))
    dfa = DFA(np.array([[1, -1], [0, 0]]))
    with pytest.raises(ValueError, match="string: expected a symbol in"):
        dfa.accepts([0, 7])
    assert dfa.run([1]) == -1 and not dfa.accepts([1, 0]) and dfa.accepts([0, 1, 0])
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        SMALL.sample(rng, 0)
    batch = SMALL.sample(rng, 2)
    probs = np.full(batch.inputs.shape + (SMALL.vocab_size,), 0.1)
    with pytest.raises(ValueError, match=r"probs: expected shape \(B, T, vocab\)"):
        batch.tvd(probs[:, :3])
    with pytest.raises(ValueError, match="probs: expected probabilities >= 0"):
        batch.tvd(-probs)
    zero_symbols = probs.copy()
    zero_symbols[..., : SMALL.num_symbols] = 0
    with pytest.raises(ValueError, match="some mass on the symbols"):
        batch.tvd(zero_symbols)
    with pytest.raises(ValueError, match="mask: expected at least one scored position"):
        legal_accuracy(probs, batch.legal, np.zeros(batch.inputs.shape, bool))
    with pytest.raises(ValueError, match="legal: expected a bool array"):
        total_variation(probs, batch.legal.astype(int), batch.score_mask)
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 2\]"):
        ngram_counts(np.array([[0, 3]]), 2, 3)
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        ngram_counts(np.array([[0, 1]]), 0, 3)
    with pytest.raises(ValueError, match="num_symbols: expected at most vocab_size"):
        ngram_probs(np.array([[0, 1]]), 2, 4, 3)
