"""The four stimulus conditions of the classic language-localizer experiments (Fedorenko, Hsieh,
Nieto-Castanon, Whitfield-Gabrieli and Kanwisher, 2010), built from the bundled text corpus:

* **S**, sentences: real sentences (lexical meaning + syntax);
* **W**, word lists: the words of a sentence in a random order (lexical meaning, no syntax);
* **J**, Jabberwocky: the sentence with every content word replaced by a pronounceable non-word,
  keeping the function words and common inflections ("the gods know" -> "the fotes bralk")
  (syntax, no lexical meaning);
* **N**, non-word lists: as many pronounceable non-words as the sentence has words (neither).

The four are *matched*: item i of W, J and N is built from sentence i, so the conditions differ
only in what the manipulation removes. Text is lower-case words (letters and inner apostrophes),
no punctuation, joined by single spaces, as the fMRI stimuli (one word at a time, no punctuation).

Everything is deterministic given the seed (an ``np.random.Generator``) and the corpus.
"""

from __future__ import annotations

import re

import numpy as np

from ref import checks

__all__ = [
    "CONDITIONS",
    "FUNCTION_WORDS",
    "corpus_sentences",
    "make_nonword",
    "jabberwocky",
    "word_list",
    "nonword_list",
    "build_conditions",
    "split_sentences",
]

CONDITIONS = ("S", "W", "J", "N")

# closed-class words (articles, pronouns, prepositions, conjunctions, auxiliaries, negation, ...),
# early-modern forms included (thou, thee, thy, hath, doth, art, 'tis ...): Jabberwocky keeps these
FUNCTION_WORDS = frozenset(
    """a an the this that these those some any no every each all both such what which who whom whose
    i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
    thou thee thy thine ye myself himself herself itself ourselves yourself yourselves themselves
    of to in on at by for with from into upon about against between through under over after before
    up down out off than as like unto till until since o
    and or but nor if so yet because though although while when where whence whither how why then there
    here not nay yea
    is am are was were be been being do does did doth dost done have has had hath hast having
    will would shall should can could may might must art wilt shalt 'tis let""".split()
)

_SPEAKER = re.compile(r"^[A-Z][A-Za-z ]*:$")  # a speaker line of the play, "First Citizen:"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # a lower-case word with inner apostrophes
_ONSETS = ("b", "bl", "br", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "k", "l", "m", "n", "p", "pl",
           "pr", "r", "s", "sl", "sp", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ee", "oo")
_CODAS = ("", "", "", "n", "m", "l", "r", "t", "k", "s", "nd", "st")
_SUFFIXES = ("ing", "ed", "es", "ly", "s", "'s")  # inflections Jabberwocky keeps


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def corpus_sentences(text: str, min_words: int = 8, max_words: int = 12) -> list[list[str]]:
    """The sentences of ``text`` (split at . ! ? ; :, speaker lines removed) with ``min_words`` to
    ``max_words`` words, each a list of lower-case words, in corpus order."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text: expected a non-empty str, got {type(text).__name__}")
    min_words = checks.positive_int(min_words, "min_words")
    max_words = checks.positive_int(max_words, "max_words")
    if max_words < min_words:
        raise ValueError(f"max_words: expected at least min_words = {min_words}, got {max_words}")
    lines = [line for line in text.splitlines() if not _SPEAKER.match(line.strip())]
    out = []
    for chunk in re.split(r"[.!?;:]", " ".join(lines)):
        words = _WORD.findall(chunk.lower())
        if min_words <= len(words) <= max_words:
            out.append(words)
    return out


def make_nonword(rng: np.random.Generator, avoid=frozenset(), syllables: int | None = None) -> str:
    """A pronounceable non-word: 1-3 (onset, vowel, coda) syllables, never a word of ``avoid``."""
    rng = _check_rng(rng)
    for _ in range(1000):
        n = int(rng.integers(1, 4)) if syllables is None else syllables
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(n)
        )
        if word not in avoid and word not in FUNCTION_WORDS:
            return word
    raise ValueError("avoid: expected a vocabulary that leaves some non-words free, every draw was a real word")


def _syllables(word: str) -> int:
    """A rough syllable count (vowel groups), 1 to 3: non-words as long as the words they replace."""
    return int(np.clip(len(re.findall(r"[aeiouy]+", word)), 1, 3))


def jabberwocky(words: list[str], rng: np.random.Generator, vocabulary=frozenset()) -> list[str]:
    """The Jabberwocky version of a sentence: function words kept in place, every content word
    replaced by a non-word of about its length that keeps the word's inflection (-ing, -ed, -s ...)."""
    out = []
    for w in words:
        if w in FUNCTION_WORDS:
            out.append(w)
            continue
        suffix = next((s for s in _SUFFIXES if w.endswith(s) and len(w) > len(s) + 2), "")
        stem = w[: len(w) - len(suffix)]
        out.append(make_nonword(rng, vocabulary, _syllables(stem)) + suffix)
    return out


def word_list(words: list[str], rng: np.random.Generator) -> list[str]:
    """The words of a sentence in a random order (a permutation that moves the words when it can)."""
    rng = _check_rng(rng)
    for _ in range(100):
        out = [words[i] for i in rng.permutation(len(words))]
        if out != list(words):
            return out
    return out


def nonword_list(words: list[str], rng: np.random.Generator, vocabulary=frozenset()) -> list[str]:
    """As many pronounceable non-words as ``words`` has, each about as long as the word it stands for."""
    return [make_nonword(rng, vocabulary, _syllables(w)) for w in words]


def build_conditions(sentences: list[list[str]], rng: np.random.Generator, vocabulary=None) -> dict[str, list[str]]:
    """The matched conditions ``{"S", "W", "J", "N"}``, each a list of strings, item i built from
    ``sentences[i]``. Non-words avoid ``vocabulary`` (default: every word of ``sentences``)."""
    rng = _check_rng(rng)
    if not isinstance(sentences, list) or not sentences:
        raise ValueError(f"sentences: expected a non-empty list of word lists, got {type(sentences).__name__}")
    for i, s in enumerate(sentences):
        if not isinstance(s, list) or not s or not all(isinstance(w, str) and w for w in s):
            raise ValueError(f"sentences[{i}]: expected a non-empty list of non-empty str words, got {s!r}")
    vocab = frozenset(w for s in sentences for w in s) if vocabulary is None else frozenset(vocabulary)
    out = {c: [] for c in CONDITIONS}
    for s in sentences:
        out["S"].append(" ".join(s))
        out["W"].append(" ".join(word_list(s, rng)))
        out["J"].append(" ".join(jabberwocky(s, rng, vocab)))
        out["N"].append(" ".join(nonword_list(s, rng, vocab)))
    return out


def split_sentences(sentences: list, n_first: int, rng: np.random.Generator) -> tuple[list, list]:
    """A seeded random split of ``sentences`` into ``n_first`` items and the rest (disjoint):
    the localizer's stimuli and the held-out ones."""
    rng = _check_rng(rng)
    n_first = checks.positive_int(n_first, "n_first")
    if n_first >= len(sentences):
        raise ValueError(f"n_first: expected fewer than the {len(sentences)} sentences (some must be held out), got {n_first}")
    order = rng.permutation(len(sentences))
    return [sentences[i] for i in order[:n_first]], [sentences[i] for i in order[n_first:]]
