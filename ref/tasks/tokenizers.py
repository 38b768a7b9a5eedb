"""Byte and character tokenizers: text <-> 1-D arrays of integer token ids.

Every tokenizer here (and :class:`ref.tasks.bpe.BPETokenizer`) follows one small protocol::

    tok.vocab_size            # int: ids are 0 .. vocab_size - 1
    ids = tok.encode(text)    # str -> np.ndarray of int64, shape (T,)
    text = tok.decode(ids)    # 1-D sequence of ints -> str

``ByteTokenizer``: one token per UTF-8 byte (vocab 256). Every string round-trips exactly, including
unpaired surrogates (encoded with ``surrogatepass``). Decoding an arbitrary id sequence may produce
invalid UTF-8 (e.g. half of a multi-byte character, as a model's sample can); those bytes become
U+FFFD instead of raising.

``CharTokenizer``: one token per Unicode code point, vocabulary = the sorted set of characters of a
corpus, so id order is code-point order (``"\\n" < " " < "A" < "a"``). The *unknown-character policy*
is explicit: ``unknown="error"`` (default) raises a ValueError naming the first unseen character and
its position; ``unknown="replace"`` appends one extra id, ``vocab_size - 1``, that every unseen
character maps to and that decodes to U+FFFD (so encode/decode is then lossy for unseen characters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from ref import checks

__all__ = ["Tokenizer", "ByteTokenizer", "CharTokenizer", "UNKNOWN_CHAR", "decode_utf8"]

#: what an unknown character (CharTokenizer) or invalid UTF-8 (byte-level tokenizers) decodes to
UNKNOWN_CHAR = "\ufffd"


@runtime_checkable
class Tokenizer(Protocol):
    """What the training code needs from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...


def check_text(text, name: str = "text") -> str:
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected a str, got {type(text).__name__}")
    return text


def token_ids(ids, vocab_size: int, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array with every value in [0, vocab_size); raise ValueError otherwise.

    Accepts lists, tuples and integer arrays; bool and float arrays are refused (no silent casts).
    """
    arr = np.asarray(ids)
    if arr.size == 0:
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sequence of token ids (T,), got shape {arr.shape}")
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of token ids (T,), got shape {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr >= vocab_size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}: expected token ids in [0, {vocab_size}), got {int(arr[i])} at index {i} ({bad.size} out of range)"
        )
    return arr.astype(np.int64, copy=False)


def encode_utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``; unpaired surrogates pass through so that every str round-trips."""
    return text.encode("utf-8", errors="surrogatepass")


def decode_utf8(data: bytes) -> str:
    """Inverse of :func:`encode_utf8`; invalid UTF-8 (possible for arbitrary ids) becomes U+FFFD."""
    try:
        return data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace")


class ByteTokenizer:
    """One token per UTF-8 byte: ``vocab_size = 256``, id = byte value."""

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """str -> int64 array (T,), T = number of UTF-8 bytes of ``text``."""
        data = encode_utf8(check_text(text))
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)  # (T,)

    def decode(self, ids) -> str:
        """ids (T,) -> str; invalid UTF-8 becomes U+FFFD."""
        arr = token_ids(ids, self.vocab_size)
        return decode_utf8(arr.astype(np.uint8).tobytes())

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters it was built from.

    ``CharTokenizer.from_corpus(text)`` is the usual constructor. ``unknown`` is the policy for a
    character that is not in the vocabulary: ``"error"`` raises, ``"replace"`` maps it to the extra
    id ``unknown_id = vocab_size - 1``, which decodes to U+FFFD.
    """

    def __init__(self, chars: Iterable[str], unknown: str = "error"):
        checks.one_of(unknown, "unknown", ("error", "replace"))
        items = list(chars)
        for i, c in enumerate(items):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars: expected single characters, got {c!r} at index {i}")
        vocab = sorted(set(items))  # code-point order
        if not vocab:
            raise ValueError("chars: expected at least one character, got none")
        self.chars: tuple[str, ...] = tuple(vocab)
        self.unknown = unknown
        # code points of the vocabulary, sorted: encode looks them up with searchsorted
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)  # (V,)
        table = list(self.chars) + ([UNKNOWN_CHAR] if unknown == "replace" else [])
        self._table = np.array(table, dtype=object)  # id -> character, for decode

    @classmethod
    def from_corpus(cls, text: str, unknown: str = "error") -> CharTokenizer:
        """Vocabulary = the distinct characters of ``text``."""
        return cls(check_text(text), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + (1 if self.unknown == "replace" else 0)

    @property
    def unknown_id(self) -> int | None:
        """The id unseen characters map to (``unknown="replace"``), else None."""
        return len(self.chars) if self.unknown == "replace" else None

    def encode(self, text: str) -> np.ndarray:
        """str -> int64 array (T,), T = len(text)."""
        check_text(text)
        cps = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4").astype(np.int64)  # (T,)
        pos = np.searchsorted(self._codepoints, cps)  # (T,) insertion points
        pos_c = np.minimum(pos, len(self.chars) - 1)
        known = self._codepoints[pos_c] == cps  # (T,) bool
        if known.all():
            return pos_c
        if self.unknown == "error":
            i = int(np.flatnonzero(~known)[0])
            c = text[i]
            raise ValueError(
                f"text: character {c!r} (U+{ord(c):04X}) at index {i} is not in the vocabulary of "
                f"{len(self.chars)} characters; build the tokenizer with unknown='replace' to map "
                "unseen characters to one extra id"
            )
        return np.where(known, pos_c, self.unknown_id)

    def decode(self, ids) -> str:
        """ids (T,) -> str; the unknown id decodes to U+FFFD."""
        arr = token_ids(ids, self.vocab_size)
        return "".join(self._table[arr])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"
