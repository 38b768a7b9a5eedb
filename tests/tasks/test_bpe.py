import json
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.tasks import BPETokenizer, load_text_corpus, train_bpe


def naive_train(text, vocab_size, min_count=2):
    """The definition, recounting every pair after every merge: (merges, final token sequence)."""
    ids = list(text.encode("utf-8", "surrogatepass"))
    merges = []
    while len(merges) < vocab_size - 256:
        counts = Counter(zip(ids, ids[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest pair
        if counts[pair] < min_count:
            break
        new, out, i = 256 + len(merges), [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
        merges.append(pair)
    return merges, ids


@pytest.fixture(scope="module")
def shakespeare_bpe():
    return train_bpe(load_text_corpus()[:20_000], 400)


def test_worked_example_by_hand():
    """Wikipedia's example, worked out in the module docstring of ref.tasks.bpe."""
    tok = train_bpe("aaabdaaabac", 1000)
    assert tok.merges == ((97, 97), (97, 98), (256, 257))  # aa; ab (tie with (256, 97): smaller wins); aaab
    assert tok.vocab_size == 259
    assert tok.vocab[256:] == (b"aa", b"ab", b"aaab")
    np.testing.assert_array_equal(tok.encode("aaabdaaabac"), [258, 100, 258, 97, 99])
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_overlapping_runs_merge_left_to_right():
    tok = train_bpe("aaaaa", 257)
    assert tok.merges == ((97, 97),)
    np.testing.assert_array_equal(tok.encode("aaaaa"), [256, 256, 97])
    np.testing.assert_array_equal(tok.encode("aaa"), [256, 97])


def test_min_count_stops_training():
    tok = train_bpe("abab", 300)  # (a, b) twice, then (256, 256) once: one merge
    assert tok.merges == ((97, 98),)
    assert train_bpe("abab", 300, min_count=1).merges == ((97, 98), (256, 256))
    assert train_bpe("", 300).merges == () and train_bpe("x", 300).vocab_size == 256


@given(st.text(alphabet="abc \n", max_size=200), st.integers(256, 300))
def test_fast_training_matches_the_naive_definition(text, vocab_size):
    merges, final = naive_train(text, vocab_size)
    tok = train_bpe(text, vocab_size)
    assert [list(m) for m in tok.merges] == [list(m) for m in merges]
    # encoding the training text reproduces the training sequence
    assert tok.encode(text).tolist() == final


def test_fast_training_matches_naive_on_real_text():
    text = load_text_corpus()[:3000]
    merges, final = naive_train(text, 320)
    tok = train_bpe(text, 320)
    assert list(tok.merges) == merges and len(merges) == 64
    assert tok.encode(text).tolist() == final


@given(st.text())
def test_round_trip_any_string(shakespeare_bpe, text):
    ids = shakespeare_bpe.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert shakespeare_bpe.decode(ids) == text


def test_round_trip_unseen_characters(shakespeare_bpe):
    for s in ["", "\U0001f600 naïve façade", "a\ud800b", "\x00\x7f", "First Citizen:\n"]:
        assert shakespeare_bpe.decode(shakespeare_bpe.encode(s)) == s


def test_decode_of_arbitrary_ids_replaces_invalid_utf8(shakespeare_bpe):
    assert shakespeare_bpe.decode([0xC3]) == "\ufffd"
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 400\), got 400"):
        shakespeare_bpe.decode([400])


def test_training_is_deterministic():
    text = load_text_corpus()[:10_000]
    assert train_bpe(text, 350) == train_bpe(text, 350)
    assert train_bpe(text, 350).merges[:44] == train_bpe(text, 300).merges  # a prefix of a longer run


def test_more_merges_give_fewer_tokens():
    text = load_text_corpus()[:20_000]
    big = train_bpe(text, 600)
    counts = [len(BPETokenizer(big.merges[: v - 256]).encode(text)) for v in (256, 300, 400, 600)]
    assert counts[0] == len(text.encode())
    assert counts[0] > counts[1] > counts[2] > counts[3]
    assert counts[3] < 0.5 * counts[0]


def test_training_500_merges_on_100kb_is_fast():
    text = load_text_corpus()[:100_000]
    t0 = time.perf_counter()
    tok = train_bpe(text, 756)
    elapsed = time.perf_counter() - t0
    assert tok.vocab_size == 756
    assert elapsed < 10.0, f"training took {elapsed:.1f} s"


def test_save_load_round_trip(tmp_path, shakespeare_bpe):
    path = shakespeare_bpe.save(tmp_path / "bpe.json")
    obj = json.loads(path.read_text())
    assert obj["format"] == "ref.tasks.bpe" and obj["version"] == 1 and obj["vocab_size"] == 400
    assert len(obj["merges"]) == 144
    loaded = BPETokenizer.load(path)
    assert loaded == shakespeare_bpe
    text = "Before we proceed any further, hear me speak."
    np.testing.assert_array_equal(loaded.encode(text), shakespeare_bpe.encode(text))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def _write(tmp_path, obj):
    p = tmp_path / "bpe.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


GOOD = {"format": "ref.tasks.bpe", "version": 1, "vocab_size": 257, "merges": [[97, 98]]}


@pytest.mark.parametrize(
    "obj, match",
    [
        ("{not json", "not a valid BPE JSON file"),
        ([1, 2], "expected a JSON object, got list"),
        ({**GOOD, "format": "other"}, "expected format 'ref.tasks.bpe' version 1, got format 'other'"),
        ({**GOOD, "version": 2}, "version 2"),
        ({**GOOD, "merges": {"a": 1}}, "expected 'merges' to be a list of pairs, got dict"),
        ({**GOOD, "merges": [[97, 98, 99]]}, r"merges\[0\]: expected a pair of integer token ids"),
        ({**GOOD, "merges": [[97, True]]}, r"merges\[0\]: expected a pair of integer token ids"),
        ({**GOOD, "merges": [[97, 256]]}, r"merges\[0\]: expected ids in \[0, 256\)"),
        (
            {**GOOD, "vocab_size": 258, "merges": [[97, 98], [97, 98]]},
            r"merges\[1\]: the pair \[97, 98\] is merged twice",
        ),
        ({**GOOD, "vocab_size": 300}, "'vocab_size' is 300 but 256 \\+ 1 merges = 257"),
    ],
)
def test_load_validates_the_file(tmp_path, obj, match):
    path = _write(tmp_path, obj)
    with pytest.raises(ValueError, match=match) as err:
        BPETokenizer.load(path)
    assert "bpe.json" in str(err.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="path: expected an existing BPE JSON file"):
        BPETokenizer.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "args, match",
    [
        (("abc", 255), "vocab_size: expected an integer >= 256"),
        (("abc", 300.0), "vocab_size: expected an integer >= 1"),
        ((b"abc", 300), "text: expected a str, got bytes"),
    ],
)
def test_train_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        train_bpe(*args)
