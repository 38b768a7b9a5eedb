"""SUMA (arXiv 2406.15109): shared weights (n cycles = the layer applied n times), permutation
equivariance without positions, padding never leaks, the Welch t of the localizer equals scipy's,
the localizer finds planted selective units, the stimulus conditions, and bad inputs. The model is
untrained and forward-only: there is no backward to gradcheck."""

import numpy as np
import pytest
import scipy.stats

from ref.models.suma import (
    init_suma,
    last_token,
    localize,
    pad_batch,
    suma_forward,
    suma_layer,
    suma_units,
    top_units,
    welch_t,
)
from ref.tasks.language_conditions import (
    CONDITIONS,
    FUNCTION_WORDS,
    build_conditions,
    corpus_sentences,
    split_sentences,
)

pytestmark = pytest.mark.brain_like

V, D, H = 11, 8, 4


@pytest.fixture
def params():
    return init_suma(np.random.default_rng(0), V, D, H, init_std=0.5)


def test_two_cycles_apply_the_same_layer_twice(params):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, V, (2, 5))
    h, sites = suma_forward(params, tokens, n_cycles=2)
    h1, z1, a1 = suma_layer(params, params["embed"][tokens])
    h2, z2, a2 = suma_layer(params, h1)
    np.testing.assert_allclose(h, h2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sites[0]["attn"], a1, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sites[1]["norm"], z2, rtol=1e-13, atol=1e-13)
    # and the second cycle really changes the state (the recurrence is not a no-op)
    assert np.abs(h2 - h1).max() > 1e-3
    # there is only one set of weights to share
    assert set(params) == {"embed", "norm", "attn"} and set(params["attn"]) == {"W_q", "W_k", "W_v", "W_o"}


def test_initialisation_is_the_papers(params):
    p = init_suma(np.random.default_rng(0), 50, 64, 8)  # default init_std = 0.02
    np.testing.assert_array_equal(p["norm"]["weight"], 1.0)
    for w in (p["embed"], p["attn"]["W_q"], p["attn"]["W_o"]):
        assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002
    assert p["attn"]["W_q"].shape == (64, 8, 8)


def test_permutation_equivariance_without_positions(params):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, V, (3, 6))
    perm = rng.permutation(6)
    h, _ = suma_forward(params, tokens)
    h_perm, _ = suma_forward(params, tokens[:, perm])
    np.testing.assert_allclose(h_perm, h[:, perm], rtol=1e-12, atol=1e-13)


def test_padding_does_not_leak(params):
    """A stimulus padded with any tokens gives the same real-token outputs as the stimulus alone."""
    rng = np.random.default_rng(3)
    short = rng.integers(0, V, 4)
    tokens, mask = pad_batch([short, rng.integers(0, V, 6)])
    tokens_other = tokens.copy()
    tokens_other[0, 4:] = (tokens[0, 4:] + 3) % V
    h_alone, _ = suma_forward(params, short[None])
    for t in (tokens, tokens_other):
        h, _ = suma_forward(params, t, mask)
        np.testing.assert_allclose(h[0, :4], h_alone[0], rtol=1e-12, atol=1e-13)
    units = suma_units(params, [short, tokens[1]], batch_size=1)
    _, sites = suma_forward(params, short[None])
    np.testing.assert_allclose(units[0, :D], sites[-1]["norm"][0, -1], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(units[0, D:], sites[-1]["attn"][0, -1], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(suma_units(params, [short, tokens[1]], batch_size=1), suma_units(params, [short, tokens[1]]))


def test_last_token_and_pad_batch():
    tokens, mask = pad_batch([[1, 2, 3], [4]])
    np.testing.assert_array_equal(tokens, [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(mask, [[True] * 3, [True, False, False]])
    x = np.arange(2 * 3 * 1, dtype=float).reshape(2, 3, 1)
    np.testing.assert_array_equal(last_token(x, mask)[:, 0], [2.0, 3.0])


@pytest.mark.parametrize("n_a, n_b", [(5, 5), (7, 3), (2, 9)])
def test_welch_t_equals_scipy(n_a, n_b):
    rng = np.random.default_rng(n_a * 10 + n_b)
    a = rng.standard_normal((n_a, 6)) * rng.uniform(0.5, 3, 6) + 0.3
    b = rng.standard_normal((n_b, 6)) * rng.uniform(0.5, 3, 6)
    np.testing.assert_allclose(welch_t(a, b), scipy.stats.ttest_ind(a, b, axis=0, equal_var=False).statistic, rtol=1e-12)


def test_localizer_finds_planted_units():
    rng = np.random.default_rng(4)
    U, planted = 200, [3, 17, 50, 121]
    s = rng.standard_normal((40, U))
    n = rng.standard_normal((40, U))
    s[:, planted] += 2.0  # language-selective: higher for sentences
    n[:, 90] += 5.0  # selective for the *other* condition: must not be picked
    mask, t = localize(s, n, fraction=0.02)
    assert mask.sum() == 4 and sorted(np.flatnonzero(mask)) == planted
    assert t[90] < 0
    mask_k, _ = localize(s, n, k=4)
    np.testing.assert_array_equal(mask, mask_k)


def test_top_units_ties_and_nan():
    t = np.array([1.0, np.nan, 3.0, 3.0, -1.0])
    np.testing.assert_array_equal(top_units(t, k=2), [False, False, True, True, False])
    np.testing.assert_array_equal(top_units(t, k=3), [True, False, True, True, False])
    assert top_units(t, fraction=0.01).sum() == 1  # at least one unit


def test_conditions_are_matched_and_deterministic():
    text = (
        "First Citizen:\nBefore we proceed any further, hear me speak now.\n"
        "All:\nYou are all resolved rather to die than to famish today?\n"
    )
    sentences = corpus_sentences(text, 8, 12)
    assert sentences[0][:3] == ["before", "we", "proceed"] and len(sentences) == 2
    c1 = build_conditions(sentences, np.random.default_rng(0))
    c2 = build_conditions(sentences, np.random.default_rng(0))
    assert c1 == c2 and set(c1) == set(CONDITIONS)
    vocab = {w for s in sentences for w in s}
    for i, s in enumerate(sentences):
        assert c1["S"][i] == " ".join(s)
        assert sorted(c1["W"][i].split()) == sorted(s) and c1["W"][i] != c1["S"][i]
        jab = c1["J"][i].split()
        assert len(jab) == len(s)
        for w, j in zip(s, jab):
            assert (j == w) == (w in FUNCTION_WORDS)  # function words kept, content words replaced
        nonwords = c1["N"][i].split()
        assert len(nonwords) == len(s) and not set(nonwords) & vocab
    first, rest = split_sentences(list(range(10)), 4, np.random.default_rng(0))
    assert len(first) == 4 and sorted(first + rest) == list(range(10))


def test_bad_inputs(params):
    tokens = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="tokens: expected ids in"):
        suma_forward(params, tokens + V)
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        suma_forward(params, tokens.astype(float))
    with pytest.raises(ValueError, match="padding_mask: expected a bool array"):
        suma_forward(params, tokens, np.ones((2, 3)))
    with pytest.raises(ValueError, match="padding_mask: expected at least one real token"):
        suma_forward(params, tokens, np.array([[True] * 3, [False] * 3]))
    with pytest.raises(ValueError, match="n_cycles: expected a positive integer"):
        suma_forward(params, tokens, n_cycles=0)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of D"):
        init_suma(np.random.default_rng(0), V, 8, 3)
    with pytest.raises(ValueError, match="rng: expected a numpy Generator"):
        init_suma(0, V, 8, 2)
    with pytest.raises(ValueError, match="b: expected 6 units"):
        welch_t(np.zeros((3, 6)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        welch_t(np.zeros((1, 6)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="fraction, k: expected exactly one"):
        top_units(np.zeros(5))
    with pytest.raises(ValueError, match="fraction: expected a number in"):
        top_units(np.zeros(5), fraction=1.5)
    with pytest.raises(ValueError, match="k: expected at most"):
        top_units(np.zeros(5), k=6)
    with pytest.raises(ValueError, match="sequences\\[0\\]: expected a non-empty"):
        pad_batch([[]])
    with pytest.raises(ValueError, match="max_words: expected at least"):
        corpus_sentences("a b c.", 5, 3)
    with pytest.raises(ValueError, match="n_first: expected fewer than"):
        split_sentences([1, 2], 2, np.random.default_rng(0))
