"""Ordinal sequences in filler text: a toy corpus in which successor heads are useful (lesson 23).

Successor heads (Gould et al. 2023, arXiv 2312.09230) increment the tokens of ordinal sequences:
numbers, days, months, letters. This module builds a small vocabulary with four such categories
and a generator of training prompts in which the next token is often the successor of an earlier
ordinal token.

The vocabulary (``ORDINAL_VOCAB``; ids in this order)::

    numbers   "0" .. "39"                   40 tokens, single tokens as in GPT-2 up to "999"
    days      "Monday" .. "Sunday"          7, cyclic (Sunday -> Monday)
    months    "January" .. "December"       12, cyclic (December -> January)
    letters   "A" .. "Z"                    26
    ","       the list separator
    fillers   "the", "of", "and", ...       FILLERS, 32 common English words

succ(t) is the next token of t's category; "39" and "Z" have none.

A prompt is a run of segments until it is ``seq_len + 1`` tokens long (the last token is cut off
mid-segment when needed):

* a **filler** segment: 1 to 4 filler words from a fixed bigram chain (each word's successors are
  drawn from a Zipf-like distribution over a few words that the seed fixes: "natural-ish" text),
  followed with probability ``p_stray`` by one stray ordinal token ("on Friday", "at 17") that
  starts no list;
* a **list** (probability ``p_list`` for each segment): an incrementing run of one category, its
  elements separated by commas, 2 to ``max_list`` elements::

      the of and 7 , 8 , 9 , 10 in the Tuesday a Monday , Tuesday , Wednesday of ...
                     ^^   ^^   ^^^                      ^^^^^^^   ^^^^^^^^^
                     successor positions: the target is succ(the ordinal two tokens back)

The comma is used only inside lists, so after a comma the next token is always succ(the ordinal
just before the comma): a head that attends from the comma to that ordinal and *outputs its
successor* predicts it perfectly. ``successor_mask`` marks those targets (the lesson's "incrementing
prompts"); everywhere else the target is filler, a stray ordinal or the first element of a list,
which no mechanism can predict exactly.

Layout of a batch (B batch, T = seq_len), the convention of ``ref.tasks.synthetic``:
``inputs`` (B, T) and ``targets`` (B, T) int64 with targets[:, t] = inputs[:, t + 1] (next-token
prediction at every position), ``successor_mask`` (B, T) bool. The same seed gives the same batch.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ref import checks

__all__ = ["FILLERS", "OrdinalVocab", "ORDINAL_VOCAB", "OrdinalBatch", "OrdinalSequences"]

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
FILLERS = (
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
)  # fmt: skip
SEPARATOR = ","


@dataclass(frozen=True)
class OrdinalVocab:
    """The words, and for each ordinal category the ids of its tokens in order.

    ``categories[name]`` lists the ids in order and, for a cyclic category, the first id again at
    the end, so that succ(ids[i]) = ids[i + 1] always (the format ``succession_score`` takes)."""

    words: tuple[str, ...]
    categories: dict = field(hash=False)
    separator: int
    fillers: np.ndarray = field(hash=False)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def successor_table(self) -> np.ndarray:
        """(vocab_size,) int64: succ(t) for every ordinal token with a successor, -1 elsewhere."""
        succ = np.full(self.vocab_size, -1, np.int64)
        for ids in self.categories.values():
            succ[ids[:-1]] = ids[1:]
        return succ


def _build_vocab() -> OrdinalVocab:
    words, categories = [], {}
    for name, items, cyclic in (
        ("numbers", tuple(str(n) for n in range(40)), False),
        ("days", DAYS, True),
        ("months", MONTHS, True),
        ("letters", tuple(chr(ord("A") + i) for i in range(26)), False),
    ):
        ids = list(range(len(words), len(words) + len(items)))
        words.extend(items)
        categories[name] = np.array(ids + ids[:1] if cyclic else ids, np.int64)
    separator = len(words)
    words.append(SEPARATOR)
    fillers = np.arange(len(words), len(words) + len(FILLERS), dtype=np.int64)
    words.extend(FILLERS)
    return OrdinalVocab(tuple(words), categories, separator, fillers)


ORDINAL_VOCAB = _build_vocab()


class OrdinalBatch(NamedTuple):
    inputs: np.ndarray  # (B, T) int64
    targets: np.ndarray  # (B, T) int64, inputs shifted by one
    successor_mask: np.ndarray  # (B, T) bool: the target is succ(the ordinal before the comma)


@dataclass(frozen=True)
class OrdinalSequences:
    """Prompts of ``seq_len`` tokens mixing filler text and incrementing lists (module docstring).

    ``p_list``: probability that a segment is a list; ``max_list``: the longest list (>= 2);
    ``p_stray``: probability that a filler segment ends with a stray ordinal; ``chain_seed``: the
    seed of the filler bigram chain (fixed: the same "language" for every batch)."""

    seq_len: int = 24
    p_list: float = 0.4
    max_list: int = 5
    p_stray: float = 0.3
    chain_seed: int = 0
    vocab: OrdinalVocab = field(default=ORDINAL_VOCAB, repr=False)

    def __post_init__(self):
        checks.positive_int(self.seq_len, "seq_len")
        for name in ("p_list", "p_stray"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
        # max_list >= 2: a list has at least two elements
        for name, low in (("max_list", 2), ("chain_seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    def filler_chain(self) -> np.ndarray:
        """(F, F) row-stochastic bigram matrix over the filler words: each word is followed by 6
        words (fixed by ``chain_seed``) with Zipf weights 1, 1/2, ..., 1/6."""
        F = len(self.vocab.fillers)
        rng = np.random.default_rng(self.chain_seed)
        P = np.zeros((F, F))
        zipf = 1.0 / np.arange(1, 7)
        for i in range(F):
            P[i, rng.choice(F, size=6, replace=False)] = zipf / zipf.sum()
        return P

    def _prompt(self, rng: np.random.Generator, P: np.ndarray, length: int):
        """One prompt of ``length`` tokens, and the mask of the tokens that are successors in a list."""
        v = self.vocab
        names = list(v.categories)
        tokens, is_succ = [], []
        word = int(rng.integers(len(v.fillers)))
        while len(tokens) < length:
            if rng.random() < self.p_list:
                ids = v.categories[names[rng.integers(len(names))]]
                n = int(rng.integers(2, self.max_list + 1))
                # any n consecutive entries of ids: for a cyclic category (its first id listed again
                # at the end) that includes the wrap, e.g. Saturday , Sunday , Monday
                start = int(rng.integers(len(ids) - n + 1))
                run = ids[start : start + n]
                for i, t in enumerate(run):
                    if i:
                        tokens.append(v.separator)
                        is_succ.append(False)
                    tokens.append(int(t))
                    is_succ.append(i > 0)
            else:
                for _ in range(int(rng.integers(1, 5))):
                    word = int(rng.choice(len(v.fillers), p=P[word]))
                    tokens.append(int(v.fillers[word]))
                    is_succ.append(False)
                if rng.random() < self.p_stray:
                    ids = v.categories[names[rng.integers(len(names))]]
                    tokens.append(int(ids[rng.integers(len(ids))]))
                    is_succ.append(False)
        return tokens[:length], is_succ[:length]

    def sample(self, rng: np.random.Generator, batch_size: int) -> OrdinalBatch:
        """A batch of ``batch_size`` prompts (module docstring for the layout)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(batch_size, "batch_size")
        P = self.filler_chain()
        tokens = np.zeros((B, self.seq_len + 1), np.int64)
        succ = np.zeros((B, self.seq_len + 1), bool)
        for b in range(B):
            tokens[b], succ[b] = self._prompt(rng, P, self.seq_len + 1)
        # the target at t is the token at t + 1
        return OrdinalBatch(tokens[:, :-1].copy(), tokens[:, 1:].copy(), succ[:, 1:].copy())
