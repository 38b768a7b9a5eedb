"""A small byte-level BPE (byte-pair encoding) tokenizer: train, encode, decode, save, load.

Vocabulary: ids 0..255 are the 256 byte values; merge ``i`` (0-based) creates id ``256 + i``, the
concatenation of the bytes of its two parts. ``vocab_size = 256 + len(merges)``.

Training (``train_bpe(text, vocab_size)``), on the UTF-8 bytes of ``text`` as one sequence:

    repeat vocab_size - 256 times:
        count every adjacent pair (a, b) of the current sequence (overlaps count: "aaa" has 2 x (a, a))
        take the most frequent pair; ties go to the smallest pair, (a, b) < (a', b') as tuples
        stop if it occurs fewer than ``min_count`` (default 2) times
        replace its occurrences, left to right, by the new id 256 + i   ("aaaa" -> "AA", "aaa" -> "Aa")

Worked example (the one on Wikipedia): "aaabdaaabac" = 97 97 97 98 100 97 97 97 98 97 99.
(97, 97) occurs 4 times -> 256 ("aa"): 256 97 98 100 256 97 98 97 99. Now (256, 97) and (97, 98) both
occur twice; the smaller pair (97, 98) wins -> 257 ("ab"): 256 257 100 256 257 97 99. Then
(256, 257) x 2 -> 258 ("aaab"): 258 100 258 97 99. Every remaining pair occurs once: stop.

Recounting every pair after every merge costs O(len(text)) per merge. Instead the sequence is kept as
a doubly linked list with, for every adjacent pair, the set of positions where it starts; a merge
only touches the neighbours of its occurrences, and a heap with lazy deletion finds the most frequent
pair. 500 merges on 100 KB take well under a second.

Encoding applies the merges in training order (rank order), each to all of its occurrences left to
right. This equals the usual "repeatedly merge the lowest-rank pair present", and on the training
text it reproduces the training sequence exactly. Any str round-trips exactly: decode(encode(s)) == s
(unpaired surrogates included; see ``tokenizers.encode_utf8``).

Files (``save``/``load``) are JSON, written atomically::

    {"format": "ref.tasks.bpe", "version": 1, "vocab_size": 258, "merges": [[97, 97], [97, 98]]}
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ref import checks, io
from ref.tasks.tokenizers import check_text, decode_utf8, encode_utf8, token_ids

__all__ = ["BPETokenizer", "train_bpe", "FORMAT", "VERSION"]

FORMAT = "ref.tasks.bpe"
VERSION = 1

Pair = tuple[int, int]


class _PairIndex:
    """A token sequence as a doubly linked list, with the start positions of every adjacent pair.

    ``tok[i]`` is the token at position i (-1 once merged into its left neighbour); ``nxt``/``prv``
    link the live positions; ``where[(a, b)]`` is the set of positions i with tok[i] = a and
    tok[nxt[i]] = b. The count of a pair is ``len(where[pair])``.
    """

    def __init__(self, ids: Sequence[int]):
        n = len(ids)
        self.tok = list(ids)
        self.nxt = list(range(1, n + 1))
        self.prv = list(range(-1, n - 1))
        if n:
            self.nxt[-1] = -1
        self.where: dict[Pair, set[int]] = {}
        for i in range(n - 1):
            self.where.setdefault((self.tok[i], self.tok[i + 1]), set()).add(i)

    def _remove(self, pair: Pair, i: int, touched: set | None) -> None:
        s = self.where.get(pair)
        if s is not None:
            s.discard(i)
            if not s:
                del self.where[pair]
            if touched is not None:
                touched.add(pair)

    def _add(self, pair: Pair, i: int, touched: set | None) -> None:
        self.where.setdefault(pair, set()).add(i)
        if touched is not None:
            touched.add(pair)

    def merge(self, pair: Pair, new: int, touched: set | None = None) -> int:
        """Replace every occurrence of ``pair``, left to right, by ``new``; return how many were merged.

        ``touched`` collects the pairs whose count changed (for the training heap).
        """
        positions = self.where.pop(pair, None)
        if not positions:
            return 0
        a, b = pair
        tok, nxt, prv = self.tok, self.nxt, self.prv
        merged = 0
        for p in sorted(positions):  # left to right: "aaa" -> "Aa"
            q = nxt[p]
            # an occurrence can be gone already (overlap: in "aaa" merging at 0 consumes the one at 1)
            if tok[p] != a or q == -1 or tok[q] != b:
                continue
            before, after = prv[p], nxt[q]
            if before != -1:  # (x, a) at before -> (x, new)
                self._remove((tok[before], a), before, touched)
                self._add((tok[before], new), before, touched)
            if after != -1:  # (b, y) at q -> (new, y) at p
                self._remove((b, tok[after]), q, touched)
                self._add((new, tok[after]), p, touched)
            tok[p] = new
            tok[q] = -1
            nxt[p] = after
            if after != -1:
                prv[after] = p
            merged += 1
        return merged

    def tokens(self) -> list[int]:
        out = []
        i = 0 if self.tok else -1  # position 0 is never merged away: it is always the head
        while i != -1:
            out.append(self.tok[i])
            i = self.nxt[i]
        return out


def train_bpe(text: str, vocab_size: int, min_count: int = 2) -> BPETokenizer:
    """Learn up to ``vocab_size - 256`` merges on the UTF-8 bytes of ``text``.

    Deterministic: the most frequent pair wins, ties go to the smallest pair. Training stops early
    (fewer merges, a smaller ``vocab_size``) when no pair occurs ``min_count`` times any more.
    """
    check_text(text)
    vocab_size = checks.positive_int(vocab_size, "vocab_size")
    if vocab_size < 256:
        raise ValueError(f"vocab_size: expected an integer >= 256 (the byte vocabulary), got {vocab_size}")
    min_count = checks.positive_int(min_count, "min_count")

    index = _PairIndex(list(encode_utf8(text)))
    # max-heap by count, then min by pair: entries (-count, a, b); stale entries are skipped on pop
    heap = [(-len(s), a, b) for (a, b), s in index.where.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while len(merges) < vocab_size - 256 and heap:
        neg, a, b = heapq.heappop(heap)
        count = len(index.where.get((a, b), ()))
        if count != -neg:  # stale: the count changed after this entry was pushed
            continue
        if count < min_count:
            break
        touched: set[Pair] = set()
        index.merge((a, b), 256 + len(merges), touched)
        merges.append((a, b))
        for pair in touched:  # push the new counts; the old entries become stale
            c = len(index.where.get(pair, ()))
            if c:
                heapq.heappush(heap, (-c, *pair))
    return BPETokenizer(merges)


class BPETokenizer:
    """Byte-level BPE defined by its list of merges (see the module docstring).

    Build one with ``train_bpe(text, vocab_size)`` (also reachable as ``BPETokenizer.train``), from a
    list of merges, or with ``BPETokenizer.load(path)``.
    """

    def __init__(self, merges: Sequence[Sequence[int]]):
        clean: list[Pair] = []
        seen: set[Pair] = set()
        for i, m in enumerate(merges):
            if (
                not isinstance(m, (tuple, list))
                or len(m) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in m)
            ):
                raise ValueError(f"merges[{i}]: expected a pair of integer token ids, got {m!r}")
            pair = (int(m[0]), int(m[1]))
            if not all(0 <= x < 256 + i for x in pair):
                raise ValueError(
                    f"merges[{i}]: expected ids in [0, {256 + i}) (bytes and earlier merges), got {list(pair)}"
                )
            if pair in seen:
                raise ValueError(f"merges[{i}]: the pair {list(pair)} is merged twice")
            seen.add(pair)
            clean.append(pair)
        self.merges: tuple[Pair, ...] = tuple(clean)
        vocab = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            vocab.append(vocab[a] + vocab[b])
        self._vocab: tuple[bytes, ...] = tuple(vocab)

    train = staticmethod(train_bpe)

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    @property
    def vocab(self) -> tuple[bytes, ...]:
        """``vocab[id]`` = the bytes that token ``id`` stands for."""
        return self._vocab

    def encode(self, text: str) -> np.ndarray:
        """str -> int64 array (T,)."""
        index = _PairIndex(list(encode_utf8(check_text(text))))
        for rank, pair in enumerate(self.merges):
            if not index.where:  # a single token is left: nothing more to merge
                break
            index.merge(pair, 256 + rank)
        return np.array(index.tokens(), dtype=np.int64)

    def decode(self, ids) -> str:
        """ids (T,) -> str; invalid UTF-8 (possible for arbitrary ids) becomes U+FFFD."""
        arr = token_ids(ids, self.vocab_size)
        return decode_utf8(b"".join(self._vocab[i] for i in arr.tolist()))

    def save(self, path) -> Path:
        """Write the merges as JSON, atomically (temp file + rename)."""
        obj = {
            "format": FORMAT,
            "version": VERSION,
            "vocab_size": self.vocab_size,
            "merges": [list(m) for m in self.merges],
        }
        return io.write_json(path, obj)

    @classmethod
    def load(cls, path) -> BPETokenizer:
        """Read a file written by :meth:`save`; raise ValueError naming the file if it is not valid."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path: expected an existing BPE JSON file, got {str(path)!r} (not found)")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{str(path)!r}: not a valid BPE JSON file: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{str(path)!r}: expected a JSON object, got {type(obj).__name__}")
        if obj.get("format") != FORMAT or obj.get("version") != VERSION:
            raise ValueError(
                f"{str(path)!r}: expected format {FORMAT!r} version {VERSION}, "
                f"got format {obj.get('format')!r} version {obj.get('version')!r}"
            )
        merges = obj.get("merges")
        if not isinstance(merges, list):
            raise ValueError(f"{str(path)!r}: expected 'merges' to be a list of pairs, got {type(merges).__name__}")
        try:
            tok = cls(merges)
        except ValueError as e:
            raise ValueError(f"{str(path)!r}: {e}") from None
        if obj.get("vocab_size") != tok.vocab_size:
            raise ValueError(
                f"{str(path)!r}: 'vocab_size' is {obj.get('vocab_size')!r} "
                f"but 256 + {len(merges)} merges = {tok.vocab_size}"
            )
        return tok

    def __eq__(self, other) -> bool:
        return isinstance(other, BPETokenizer) and self.merges == other.merges

    def __hash__(self) -> int:
        return hash(self.merges)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
