"""Noun lists that recur: a toy corpus and the test paradigm of Armeni, Honey and Linzen,
*Characterizing Verbatim Short-Term Memory in Neural Language Models* (arXiv 2210.13569, section 2).

The paper's stimuli are English vignettes::

    Before the meeting, Mary wrote down the following list of words: patience, notion, movie.
    After the meeting, she took a break and had a cup of coffee. [...]
    When she got back, she read the list again: patience, notion, movie.

The second list is the first one (*repeated*), its nouns shuffled (*permuted*) or other nouns
(*novel*); the intervening text varies in length. This module is the token-level version for a
small model trained from scratch: a made-up language of filler words and nouns.

Vocabulary (``VerbatimLanguage``; ``vocab_size = 3 + n_filler + n_nouns``)::

    0 = "."      ends a filler sentence and a list
    1 = LIST     "wrote down the following list:"   (a list is introduced)
    2 = AGAIN    "read the list again:"            (the list is read again)
    3 .. 3 + n_filler - 1                          filler words
    3 + n_filler .. vocab_size - 1                 nouns

Filler text is a first-order Markov chain over the filler words and "."; its transition matrix is
fixed by ``language_seed`` (each row a Dirichlet(0.3) draw, so each word has a few likely
successors). Nouns appear only inside lists, drawn uniformly without replacement.

**Training documents** (:meth:`VerbatimLanguage.sample_documents`) are streams of events: filler
text, then ``LIST n_1 .. n_k .``, then filler of random length, then with probability
``p_repeat`` ``AGAIN`` and the same nouns in the same order (as in the vignettes: "again" announces
a verbatim repeat), otherwise another ``LIST`` with fresh nouns; and so on. Windows of T + 1 tokens
give ``(inputs, targets)``.

**The paradigm** (:meth:`VerbatimLanguage.paradigm`): for each trial, a filler prefix,
``LIST list1 .``, exactly ``gap`` filler tokens, ``AGAIN list2 .`` with list2, per condition,

- ``"repeat"``: list1 itself;
- ``"permuted"``: list1 in another order, no noun in its old place (a derangement);
- ``"novel"``: nouns not in list1.

The three conditions of a trial share everything but list2 (matched stimuli, as in the paper), so
list1 and its positions are the same in all three. The same seed gives the same data.
"""

from __future__ import annotations

import bisect
import numbers
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = ["VerbatimLanguage", "Paradigm", "CONDITIONS", "PERIOD", "LIST", "AGAIN"]

PERIOD, LIST, AGAIN = 0, 1, 2
N_SPECIAL = 3
CONDITIONS = ("repeat", "permuted", "novel")


def _int_in(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an integer {bound}, got {value!r}")
    return int(value)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


class Paradigm(NamedTuple):
    """Test stimuli: ``tokens[c]`` (n_trials, T) for each condition c in ``CONDITIONS``;
    ``list1`` and ``list2`` the positions (n,) of the two lists' nouns in every row."""

    tokens: dict
    list1: np.ndarray
    list2: np.ndarray
    list_length: int
    gap: int


@dataclass(frozen=True)
class VerbatimLanguage:
    """The toy language: ``n_filler`` filler words in a Markov chain, ``n_nouns`` nouns, three markers."""

    n_nouns: int = 32
    n_filler: int = 24
    language_seed: int = 0
    transition: np.ndarray = field(init=False, repr=False, compare=False)
    _cumulative: list = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _int_in(self.n_nouns, "n_nouns", 4)
        _int_in(self.n_filler, "n_filler", 1)
        _int_in(self.language_seed, "language_seed", 0)
        rng = np.random.default_rng(self.language_seed)
        # state 0 is ".", states 1..n_filler the filler words; "." never follows "."
        P = rng.dirichlet(np.full(self.n_filler + 1, 0.3), size=self.n_filler + 1)  # (F + 1, F + 1)
        P[0, 0] = 0.0
        P /= P.sum(axis=1, keepdims=True)
        object.__setattr__(self, "transition", P)
        object.__setattr__(self, "_cumulative", np.cumsum(P, axis=1).tolist())

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_filler + self.n_nouns

    @property
    def first_noun(self) -> int:
        return N_SPECIAL + self.n_filler

    def is_noun(self, tokens) -> np.ndarray:
        return np.asarray(tokens) >= self.first_noun

    # --- pieces -------------------------------------------------------------------------------
    def filler(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """``length`` tokens of filler text (words and "."), starting after a sentence end."""
        rng = _check_rng(rng)
        length = _int_in(length, "length", 0)
        out = np.empty(length, dtype=np.int64)
        state = 0
        for t, u in enumerate(rng.random(length).tolist()):
            # inverse-CDF sampling of the next state from row `state` of the chain
            state = min(bisect.bisect_right(self._cumulative[state], u), self.n_filler)
            out[t] = PERIOD if state == 0 else N_SPECIAL + state - 1
        return out

    def nouns(self, rng: np.random.Generator, n: int, exclude=()) -> np.ndarray:
        """``n`` distinct nouns, none of them in ``exclude``."""
        pool = np.setdiff1d(np.arange(self.first_noun, self.vocab_size), np.asarray(exclude, dtype=np.int64))
        if n > pool.size:
            raise ValueError(f"n: expected at most {pool.size} nouns (n_nouns = {self.n_nouns} minus the excluded), got {n}")
        return rng.choice(pool, size=n, replace=False)

    # --- training documents -------------------------------------------------------------------
    def sample_documents(
        self,
        rng: np.random.Generator,
        batch: int,
        T: int,
        *,
        list_lengths: tuple[int, int] = (2, 10),
        gap_range: tuple[int, int] = (0, 48),
        p_repeat: float = 0.7,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` (batch, T): next-token windows of documents (module docstring).
        List lengths are uniform in ``list_lengths`` and filler stretches in ``gap_range``
        (both inclusive)."""
        rng = _check_rng(rng)
        B, T = _int_in(batch, "batch", 1), _int_in(T, "T", 1)
        lo, hi = self._range(list_lengths, "list_lengths", 1, self.n_nouns)
        glo, ghi = self._range(gap_range, "gap_range", 0, None)
        if isinstance(p_repeat, bool) or not isinstance(p_repeat, numbers.Real) or not 0.0 <= p_repeat <= 1.0:
            raise ValueError(f"p_repeat: expected a probability in [0, 1], got {p_repeat!r}")
        docs = np.empty((B, T + 1), dtype=np.int64)
        for b in range(B):
            parts = [self.filler(rng, int(rng.integers(glo, ghi + 1)))]
            n_tok = parts[0].size
            while n_tok < T + 1:
                words = self.nouns(rng, int(rng.integers(lo, hi + 1)))
                parts += [np.array([LIST]), words, np.array([PERIOD]), self.filler(rng, int(rng.integers(glo, ghi + 1)))]
                if rng.random() < p_repeat:  # "read the list again": the same nouns, the same order
                    parts += [np.array([AGAIN]), words, np.array([PERIOD]), self.filler(rng, int(rng.integers(glo, ghi + 1)))]
                n_tok = sum(p.size for p in parts)
            docs[b] = np.concatenate(parts)[: T + 1]
        return docs[:, :-1], docs[:, 1:]

    @staticmethod
    def _range(pair, name, low, high):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}: expected a pair (low, high), got {pair!r}")
        a, b = _int_in(pair[0], f"{name}[0]", low, high), _int_in(pair[1], f"{name}[1]", low, high)
        if a > b:
            raise ValueError(f"{name}: expected low <= high, got {pair!r}")
        return a, b

    # --- the test paradigm --------------------------------------------------------------------
    def paradigm(self, rng: np.random.Generator, n_trials: int, list_length: int, gap: int, *, prefix: int = 8) -> Paradigm:
        """Matched stimuli for the three conditions (module docstring): per trial a ``prefix``
        of filler, ``LIST list1 .``, ``gap`` filler tokens, ``AGAIN list2 .``."""
        rng = _check_rng(rng)
        n_trials = _int_in(n_trials, "n_trials", 1)
        n = _int_in(list_length, "list_length", 2, self.n_nouns // 2)  # novel lists need n fresh nouns
        gap = _int_in(gap, "gap", 0)
        prefix = _int_in(prefix, "prefix", 0)
        start1 = prefix + 1  # after the prefix and LIST
        start2 = start1 + n + 1 + gap + 1  # after list1, ".", the gap and AGAIN
        T = start2 + n + 1
        tokens = {c: np.empty((n_trials, T), dtype=np.int64) for c in CONDITIONS}
        for i in range(n_trials):
            list1 = self.nouns(rng, n)
            head = np.concatenate([self.filler(rng, prefix), [LIST], list1, [PERIOD], self.filler(rng, gap), [AGAIN]])
            second = {
                "repeat": list1,
                "permuted": list1[_derangement(rng, n)],
                "novel": self.nouns(rng, n, exclude=list1),
            }
            for c in CONDITIONS:
                tokens[c][i] = np.concatenate([head, second[c], [PERIOD]])
        return Paradigm(tokens, np.arange(start1, start1 + n), np.arange(start2, start2 + n), n, gap)


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) with no fixed point (rejection sampling; n >= 2)."""
    while True:
        p = rng.permutation(n)
        if np.all(p != np.arange(n)):
            return p
