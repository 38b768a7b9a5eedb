"""Span corruption with sentinels (CodeGen2): the exact inverse, disjoint spans, sentinels that never
collide with data, the mixture batches, the infill prompt and the KV-cache infill decoder."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ref.models.transformer import (
    init_transformer_lm,
    prefix_lm_mask,
    transformer_lm_forward,
    transformer_lm_loss_and_grads,
)
from ref.tasks import Batch
from ref.tasks.span_corruption import (
    PrefixLMBatch,
    SentinelVocab,
    corrupted_length,
    infill,
    infill_prompt,
    middle_nll,
    mixture_batch,
    sample_spans,
    span_corrupt,
    span_uncorrupt,
)

pytestmark = pytest.mark.codegen2


@st.composite
def window_and_spans(draw):
    data_vocab = draw(st.integers(1, 12))
    max_spans = draw(st.integers(1, 4))
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, min(max_spans, n)))
    max_len = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vocab = SentinelVocab(data_vocab, max_spans)
    x = rng.integers(0, data_vocab, n)
    return vocab, x, sample_spans(rng, n, k, max_len), max_len


@given(window_and_spans())
def test_uncorrupt_inverts_corrupt_exactly(case):
    vocab, x, spans, _ = case
    c = span_corrupt(x, spans, vocab)
    assert len(c) == corrupted_length(len(x), len(spans))
    np.testing.assert_array_equal(span_uncorrupt(c, vocab), x)


@given(window_and_spans())
def test_spans_are_sorted_disjoint_nonempty_and_bounded(case):
    vocab, x, spans, max_len = case
    prev = 0
    for s, e in spans:
        assert prev <= s < e <= len(x)
        assert e - s <= max_len
        prev = e


@given(window_and_spans())
def test_sentinels_never_collide_with_data(case):
    vocab, x, spans, _ = case
    c = span_corrupt(x, spans, vocab)
    special = c >= vocab.data_vocab
    # exactly the k sentinels in place, <sep>, and <mask_j> ... <eom> around each moved span
    assert special.sum() == 3 * len(spans) + 1
    assert (c < vocab.vocab_size).all()
    specials = {vocab.sep, vocab.eom} | {vocab.mask(j) for j in range(1, vocab.max_spans + 1)}
    assert len(specials) == 2 + vocab.max_spans and min(specials) == vocab.data_vocab
    assert max(specials) == vocab.vocab_size - 1
    # the data tokens of (2) are those of x, body first then spans, unchanged
    body = np.concatenate([x[prev:s] for prev, s in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [len(x)])])
    moved = np.concatenate([x[s:e] for s, e in spans])
    np.testing.assert_array_equal(c[~special], np.concatenate([body, moved]))


def test_worked_example():
    v = SentinelVocab(10, 2)
    x = np.arange(8)
    c = span_corrupt(x, [(1, 3), (5, 6)], v)
    m1, m2, sep, eom = v.mask(1), v.mask(2), v.sep, v.eom
    np.testing.assert_array_equal(c, [0, m1, 3, 4, m2, 6, 7, sep, m1, 1, 2, eom, m2, 5, eom])
    assert [v.name(t) for t in (sep, eom, m1, m2)] == ["<sep>", "<eom>", "<mask_1>", "<mask_2>"]


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_mixture_batch_rows_are_windows_or_valid_corruptions(seed, fraction):
    rng = np.random.default_rng(seed)
    v = SentinelVocab(7, 3)
    data = rng.integers(0, 7, 300)
    b = mixture_batch(rng, data, 6, 20, v, span_fraction=fraction, max_span_len=4)
    assert b.inputs.shape == b.targets.shape == b.loss_mask.shape == (6, 20)
    np.testing.assert_array_equal(b.inputs[:, 1:], b.targets[:, :-1])
    for row, mask in zip(np.concatenate([b.inputs, b.targets[:, -1:]], axis=1), b.loss_mask):
        if (row < v.data_vocab).all():
            assert mask.all()  # a causal window: every target counts
            assert any(np.array_equal(data[s : s + 21], row) for s in range(len(data) - 20))
        else:
            x = span_uncorrupt(row, v)  # a valid corruption of a window of the data
            assert any(np.array_equal(data[s : s + len(x)], x) for s in range(len(data) - len(x) + 1))
            sep_at = int(np.flatnonzero(row == v.sep)[0])
            # no loss exactly on the sentinels placed in the body (targets are row[1:])
            np.testing.assert_array_equal(~mask, (row[1:] > v.eom) & (np.arange(20) < sep_at))


def test_mixture_fraction_zero_is_causal():
    rng = np.random.default_rng(0)
    b = mixture_batch(rng, np.arange(50) % 5, 4, 10, SentinelVocab(5, 1), span_fraction=0.0)
    assert (b.inputs < 5).all() and b.loss_mask.all()


@settings(max_examples=20)
@given(st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_prefix_lm_mixture_same_rows_prefix_through_sep_and_no_loss_a_position_can_see(seed, fraction):
    v = SentinelVocab(7, 3)
    data = np.random.default_rng(seed).integers(0, 7, 300)
    plain = mixture_batch(np.random.default_rng(seed), data, 6, 20, v, span_fraction=fraction, max_span_len=4)
    b = mixture_batch(np.random.default_rng(seed), data, 6, 20, v, span_fraction=fraction, max_span_len=4,
                      prefix_lm=True)
    assert isinstance(b, PrefixLMBatch) and not isinstance(plain, PrefixLMBatch)
    np.testing.assert_array_equal(b.inputs, plain.inputs)  # the same draws: the same rows
    np.testing.assert_array_equal(b.targets, plain.targets)
    assert b.prefix_len.shape == (6,) and b.prefix_len.dtype == np.int64
    for i, row in enumerate(b.inputs):
        seps = np.flatnonzero(np.append(row, b.targets[i, -1]) == v.sep)
        if len(seps) == 0:  # a causal row: no prefix, every target counts
            assert b.prefix_len[i] == 0 and b.loss_mask[i].all()
        else:  # (4): up to and including <sep>, the loss from the target <mask_1> on
            assert b.prefix_len[i] == seps[0] + 1
            np.testing.assert_array_equal(b.loss_mask[i], np.arange(20) >= seps[0])
            assert b.targets[i, seps[0]] == v.mask(1)
    # no target with a loss is visible to the position that predicts it (target t is token t + 1)
    allowed = prefix_lm_mask(b.prefix_len, 6, 20)  # (B, T, T)
    t = np.arange(19)
    assert not allowed[:, t, t + 1][b.loss_mask[:, :-1]].any()


def test_prefix_lm_batch_drives_the_loss_with_its_prefix():
    v = SentinelVocab(6, 1)
    params = _tiny_model(v, seed=4, layers=2)  # one block would not tell: its keys come from the embeddings
    rng = np.random.default_rng(5)
    b = mixture_batch(rng, rng.integers(0, 6, 200), 3, 12, v, span_fraction=1.0, prefix_lm=True)
    loss, _ = transformer_lm_loss_and_grads(params, b)
    logits, _ = transformer_lm_forward(params, b.inputs, prefix_len=b.prefix_len)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, b.targets[..., None], 2)[..., 0]
    np.testing.assert_allclose(loss, nll[b.loss_mask].mean(), rtol=1e-10)
    causal_loss, _ = transformer_lm_loss_and_grads(params, Batch(b.inputs, b.targets, b.loss_mask))
    assert abs(causal_loss - loss) > 1e-6  # the prefix changed what the model reads


def test_infill_prompt_is_the_start_of_a_one_span_corruption():
    v = SentinelVocab(9, 2)
    x = np.array([1, 2, 3, 4, 5, 6])
    prompt = infill_prompt(x[:2], x[4:], v)
    np.testing.assert_array_equal(prompt, span_corrupt(x, [(2, 4)], v)[: len(prompt)])
    batched = infill_prompt(np.stack([x[:2], x[:2]]), np.stack([x[4:], x[4:]]), v)
    np.testing.assert_array_equal(batched, np.stack([prompt, prompt]))


def _tiny_model(vocab, seed=0, layers=1):
    return init_transformer_lm(np.random.default_rng(seed), vocab.vocab_size, 8, layers, "llama", num_heads=2)


def _greedy_by_full_forward(params, prompt, n, eom, prefix_len=None):
    """The definition of greedy decoding: re-run the whole sequence for every new token."""
    seq = list(prompt)
    out = []
    for _ in range(n):
        logits, _ = transformer_lm_forward(params, np.array([seq]), prefix_len=prefix_len)
        t = int(np.argmax(logits[0, -1]))
        if t == eom:
            break
        out.append(t)
        seq.append(t)
    return out


def test_infill_matches_greedy_decoding_without_cache():
    v = SentinelVocab(6, 1)
    params = _tiny_model(v, seed=1)
    # make <eom> likely after a few tokens but not at once: bias the head column of <eom>
    params["head"][:, v.eom] += 0.05
    rng = np.random.default_rng(2)
    p, s = rng.integers(0, 6, (3, 4)), rng.integers(0, 6, (3, 3))
    got = infill(params, p, s, v, max_new_tokens=6)
    for i in range(3):
        want = _greedy_by_full_forward(params, infill_prompt(p[i], s[i], v), 6, v.eom)
        assert got[i].tolist() == want
    one = infill(params, p[0], s[0], v, max_new_tokens=6)
    assert len(one) == 1 and one[0].tolist() == got[0].tolist()
    # a prefix LM (4): the prompt through <sep> (4 + 1 + 3 + 1 tokens) read both ways, the rest causally
    # (two blocks: with one, the keys come from the embeddings and the mask of the prefix changes nothing)
    params = _tiny_model(v, seed=1, layers=2)
    params["head"][:, v.eom] += 0.05
    got = infill(params, p, s, v, max_new_tokens=6, prefix_lm=True)
    for i in range(3):
        want = _greedy_by_full_forward(params, infill_prompt(p[i], s[i], v), 6, v.eom, prefix_len=9)
        assert got[i].tolist() == want


def test_infill_stops_at_eom_and_returns_everything_without_it():
    v = SentinelVocab(4, 1)
    params = _tiny_model(v)
    params["embed"][:] = 1.0  # every token embeds to the same vector: the final hidden state ~ ones
    params["head"][:, v.eom] = 1.0  # ... so <eom> wins at every position
    out = infill(params, np.array([[1, 2], [0, 3]]), np.array([[3], [1]]), v, max_new_tokens=5)
    assert [o.tolist() for o in out] == [[], []]
    params["head"][:, v.eom] = -1.0
    params["head"][:, 2] = 1.0  # now data token 2 wins, <eom> never comes: all 5 tokens come back
    (out,) = infill(params, np.array([1, 2]), np.array([3]), v, max_new_tokens=5)
    assert out.tolist() == [2] * 5


def test_middle_nll_matches_a_direct_computation():
    v = SentinelVocab(5, 1)
    params = _tiny_model(v, seed=3)
    p, m, s = np.array([1, 2, 3]), np.array([4, 0]), np.array([2])
    seq = np.concatenate([infill_prompt(p, s, v), m])  # prompt, middle (the model reads these)
    target = np.concatenate([m, [v.eom]])
    logits, _ = transformer_lm_forward(params, seq[None])
    z = logits[0, len(seq) - 3 :]  # the positions predicting the middle and <eom>
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -np.mean(logp[np.arange(3), target])
    np.testing.assert_allclose(middle_nll(params, p, m, s, v), [want], rtol=1e-12)
    want_no_eom = -np.mean(logp[np.arange(2), target[:2]])
    np.testing.assert_allclose(middle_nll(params, p, m, s, v, include_eom=False), [want_no_eom], rtol=1e-12)
    logits, _ = transformer_lm_forward(params, np.concatenate([p, m[:1]])[None])
    z = logits[0, 2:]
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(middle_nll(params, p, m, s, v, format="causal"), [-np.mean(logp[[0, 1], m])], rtol=1e-12)
    np.testing.assert_allclose(  # a plain sequence is read causally by the prefix LM too (prefix_len = 0)
        middle_nll(params, p, m, s, v, format="causal", prefix_lm=True), [-np.mean(logp[[0, 1], m])], rtol=1e-12
    )
    # a prefix LM (4): prefix <mask_1> suffix <sep> (3 + 1 + 1 + 1 tokens) read both ways (two blocks)
    params = _tiny_model(v, seed=3, layers=2)
    logits, _ = transformer_lm_forward(params, seq[None], prefix_len=6)
    z = logits[0, len(seq) - 3 :]
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        middle_nll(params, p, m, s, v, prefix_lm=True), [-np.mean(logp[np.arange(3), target])], rtol=1e-12
    )
    assert abs(middle_nll(params, p, m, s, v, prefix_lm=True)[0] - middle_nll(params, p, m, s, v)[0]) > 1e-6


def test_bad_inputs():
    v = SentinelVocab(5, 2)
    x = np.arange(5)
    with pytest.raises(ValueError, match="data_vocab"):
        SentinelVocab(0)
    with pytest.raises(ValueError, match="j: expected an integer in"):
        v.mask(3)
    with pytest.raises(ValueError, match="tokens: expected data ids"):
        span_corrupt(np.array([0, 5]), [(0, 1)], v)  # 5 is <sep>, not data
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        span_corrupt(np.zeros(3), [(0, 1)], v)
    with pytest.raises(ValueError, match="spans: expected 1 to max_spans"):
        span_corrupt(x, [(0, 1), (1, 2), (2, 3)], v)
    with pytest.raises(ValueError, match="non-empty"):
        span_corrupt(x, [(2, 2)], v)
    with pytest.raises(ValueError, match="sorted, disjoint"):
        span_corrupt(x, [(1, 3), (2, 4)], v)
    with pytest.raises(ValueError, match="start < end <= N"):
        span_corrupt(x, [(3, 6)], v)
    with pytest.raises(ValueError, match="spans: expected a sequence"):
        span_corrupt(x, [3], v)
    with pytest.raises(ValueError, match="vocab: expected a SentinelVocab"):
        span_corrupt(x, [(0, 1)], 5)
    c = span_corrupt(x, [(1, 2), (3, 4)], v)
    with pytest.raises(ValueError, match="exactly one <sep>"):
        span_uncorrupt(np.delete(c, np.flatnonzero(c == v.sep)), v)
    with pytest.raises(ValueError, match="no <eom>"):
        span_uncorrupt(c[:-1], v)
    with pytest.raises(ValueError, match="unexpected ids after"):
        span_uncorrupt(np.append(c, 0), v)
    with pytest.raises(ValueError, match="in order before <sep>"):
        span_uncorrupt(np.where(c == v.mask(1), v.mask(2), np.where(c == v.mask(2), v.mask(1), c)), v)
    with pytest.raises(ValueError, match="ids in"):
        span_uncorrupt(np.append(c, 99), v)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_spans: expected at most"):
        sample_spans(rng, 2, 3, 1)
    with pytest.raises(ValueError, match="rng"):
        sample_spans(0, 2, 1, 1)
    with pytest.raises(ValueError, match="span_fraction"):
        mixture_batch(rng, np.arange(40) % 5, 2, 10, v, span_fraction=1.5)
    with pytest.raises(ValueError, match="seq_len: expected at least"):
        mixture_batch(rng, np.arange(40) % 5, 2, 7, v)
    with pytest.raises(ValueError, match="tokens: expected at least"):
        mixture_batch(rng, np.arange(8) % 5, 2, 10, v)
    with pytest.raises(ValueError, match="prefix_lm: expected True or False"):
        mixture_batch(rng, np.arange(40) % 5, 2, 10, v, prefix_lm=1)
    ids = np.zeros((2, 4), np.int64)
    with pytest.raises(ValueError, match=r"prefix_len: expected an integer array \(B,\)"):
        PrefixLMBatch(ids, ids, np.ones((2, 4), bool), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="prefix_len: expected 0 <= prefix_len <= T"):
        PrefixLMBatch(ids, ids, np.ones((2, 4), bool), np.array([0, 5]))
    with pytest.raises(ValueError, match="prefix, suffix"):
        infill_prompt(np.zeros((1, 2), int), np.zeros(2, int), v)
    with pytest.raises(ValueError, match="suffix: expected the batch"):
        infill_prompt(np.zeros((1, 2), int), np.zeros((2, 2), int), v)
    params = _tiny_model(SentinelVocab(5, 1))
    with pytest.raises(ValueError, match="params: expected a transformer LM"):
        infill(params, x[:2], x[3:], v, 3)  # the model lacks <mask_2>
    v1 = SentinelVocab(5, 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        infill(params, x[:2], x[3:], v1, 0)
    with pytest.raises(ValueError, match="format"):
        middle_nll(params, x[:2], x[2:3], x[3:], v1, format="prefix")
    with pytest.raises(ValueError, match="include_eom"):
        middle_nll(params, x[:2], x[2:3], x[3:], v1, include_eom=1)
    with pytest.raises(ValueError, match="prefix_lm: expected True or False"):
        middle_nll(params, x[:2], x[2:3], x[3:], v1, prefix_lm="yes")
    with pytest.raises(ValueError, match="prefix_lm: expected True or False"):
        infill(params, x[:2], x[3:], v1, 3, prefix_lm=None)
    with pytest.raises(ValueError, match="non-empty prefix"):
        middle_nll(params, x[:0], x[2:3], x[3:], v1, format="causal")
    with pytest.raises(ValueError, match="middle: expected"):
        middle_nll(params, x[:2], x[:0], x[3:], v1)
