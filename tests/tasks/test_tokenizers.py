import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.tasks import ByteTokenizer, CharTokenizer, Tokenizer, load_text_corpus


def test_byte_tokenizer_encodes_utf8_bytes():
    tok = ByteTokenizer()
    ids = tok.encode("hé€")
    assert ids.dtype == np.int64 and ids.shape == (6,)
    np.testing.assert_array_equal(ids, [104, 0xC3, 0xA9, 0xE2, 0x82, 0xAC])
    assert tok.vocab_size == 256 and isinstance(tok, Tokenizer)
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


@given(st.text())
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_byte_tokenizer_round_trips_unpaired_surrogates_and_replaces_invalid_utf8():
    tok = ByteTokenizer()
    s = "a\ud800b"
    assert tok.decode(tok.encode(s)) == s
    # half of "é" (a model can sample this): replaced, not an exception
    assert tok.decode([104, 0xC3]) == "h\ufffd"
    assert tok.decode(np.array([0xFF, 65], dtype=np.uint8)) == "\ufffdA"


@pytest.mark.parametrize(
    "ids, match",
    [
        ([1, 256], r"ids: expected token ids in \[0, 256\), got 256 at index 1"),
        ([-1], r"got -1 at index 0"),
        (np.zeros(3), "ids: expected integer token ids, got dtype float64"),
        (np.array([True]), "ids: expected integer token ids, got dtype bool"),
        (np.zeros((2, 2), dtype=int), r"ids: expected a 1-D sequence of token ids \(T,\), got shape \(2, 2\)"),
    ],
)
def test_byte_tokenizer_bad_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        ByteTokenizer().decode(ids)


def test_encode_refuses_non_str():
    with pytest.raises(ValueError, match="text: expected a str, got bytes"):
        ByteTokenizer().encode(b"abc")
    with pytest.raises(ValueError, match="text: expected a str, got list"):
        CharTokenizer("ab").encode(["a"])


def test_char_tokenizer_vocabulary_is_sorted_code_points():
    tok = CharTokenizer.from_corpus("hello world\n")
    assert tok.chars == ("\n", " ", "d", "e", "h", "l", "o", "r", "w")
    assert tok.vocab_size == 9 and tok.unknown_id is None and isinstance(tok, Tokenizer)
    ids = tok.encode("hello")
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [4, 3, 5, 5, 6])
    assert tok.decode(ids) == "hello"
    assert tok.encode("").shape == (0,)


def test_char_tokenizer_unknown_error_names_the_character():
    tok = CharTokenizer.from_corpus("abc")
    with pytest.raises(ValueError, match=r"text: character 'z' \(U\+007A\) at index 2 is not in the vocabulary of 3"):
        tok.encode("abzz")


def test_char_tokenizer_unknown_replace():
    tok = CharTokenizer.from_corpus("abc", unknown="replace")
    assert tok.vocab_size == 4 and tok.unknown_id == 3
    np.testing.assert_array_equal(tok.encode("azb\U0001f600"), [0, 3, 1, 3])
    assert tok.decode(tok.encode("azb")) == "a\ufffdb"


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("",), {}, "chars: expected at least one character"),
        ((["ab"],), {}, "chars: expected single characters, got 'ab' at index 0"),
        (("abc",), {"unknown": "skip"}, "unknown: expected one of 'error', 'replace', got 'skip'"),
    ],
)
def test_char_tokenizer_bad_construction(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer(*args, **kwargs)


def test_char_tokenizer_decode_checks_range():
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 3\), got 3 at index 0"):
        CharTokenizer("abc").decode([3])


ALPHABET = "ab\n é€\U0001f600"


@given(st.text(alphabet=ALPHABET))
def test_char_tokenizer_round_trip(text):
    tok = CharTokenizer.from_corpus(ALPHABET)
    ids = tok.encode(text)
    assert ids.shape == (len(text),)
    assert tok.decode(ids) == text


def test_char_tokenizer_on_the_shakespeare_corpus():
    text = load_text_corpus()
    tok = CharTokenizer.from_corpus(text)
    assert tok.vocab_size == 61
    ids = tok.encode(text)
    assert ids.shape == (len(text),) and ids.max() == 60
    assert tok.decode(ids) == text
