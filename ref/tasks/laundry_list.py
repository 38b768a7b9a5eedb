"""The Laundry List task, after Merullo, Eickhoff and Pavlick, *Talking Heads* (arXiv 2406.09519,
section 5): a list of N objects in context, N - 1 of which are mentioned again; the model must name
the one that was not. The paper prompts GPT-2 in English; this is the token-level version for a
small model trained from scratch.

Layout of one sample (T = 2N + 1; letters are object tokens)::

    inputs    C  A  D  SEP  B  D  A  C  ?        (N = 4: "already bought C, A, D; list B, D, A, C;
    targets   .  .  .   .   .  .  .  .  B         what is left?" -> B)
    segments  0  0  0   1   1  1  1  1  1

The mentioned objects come *first* and the list second, so that under a causal mask each list entry
can look back and find out whether it was mentioned (the paper's GPT-2 circuit has three stages,
duplicate detection, inhibition and the mover; a two-layer model has two, see
``lessons/22_talking_heads.py``). The N list objects are distinct, drawn from ``num_objects``
tokens, in random order; the N - 1 mentioned ones are the list minus the answer, shuffled again.
Only the last position (the query token ``?``) is scored.

Token ids: 0 = SEP, 1 = QUERY, 2 .. num_objects + 1 = the objects; ``vocab_size = num_objects + 2``.
``segment_ids(inputs)`` gives 0 before SEP and 1 from SEP on (a segment embedding, as BERT's, tells
the model which part of the prompt a token is in).

A :class:`~ref.tasks.synthetic.Batch` as every synthetic task: ``inputs``, ``targets``, ``loss_mask``
(B, T). The same generator gives the same batch.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ref.tasks.synthetic import Batch, SyntheticTask

__all__ = ["LaundryList", "SEP", "QUERY", "FIRST_OBJECT"]

SEP = 0  # ends the "already mentioned" part
QUERY = 1  # "what is left?": the scored position
FIRST_OBJECT = 2  # objects are FIRST_OBJECT .. FIRST_OBJECT + num_objects - 1


def _int_in(value, name: str, low: int, high: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an integer {bound}{why}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class LaundryList(SyntheticTask):
    """N objects listed, N - 1 of them mentioned before the list: output the one not mentioned."""

    name: ClassVar[str] = "laundry_list"

    num_items: int = 4  # N, the length of the list
    num_objects: int = 24  # how many distinct object tokens exist

    def __post_init__(self):
        _int_in(self.num_objects, "num_objects", 2)
        _int_in(self.num_items, "num_items", 2, self.num_objects, " (the list holds distinct objects)")

    @property
    def vocab_size(self) -> int:
        return self.num_objects + FIRST_OBJECT

    @property
    def seq_len(self) -> int:
        return 2 * self.num_items + 1

    def with_items(self, num_items: int) -> "LaundryList":
        """The same task with a list of ``num_items`` objects."""
        return LaundryList(num_items=num_items, num_objects=self.num_objects)

    @staticmethod
    def segment_ids(inputs) -> np.ndarray:
        """(B, T) int64: 0 before the SEP token, 1 from SEP on."""
        inputs = np.asarray(inputs)
        if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
            raise ValueError(f"inputs: expected (B, T) integer token ids, got shape {inputs.shape} dtype {inputs.dtype}")
        return np.cumsum(inputs == SEP, axis=1).clip(0, 1).astype(np.int64)

    def _sample(self, rng, B):
        N, A = self.num_items, self.num_objects
        # N distinct objects per sample, in random order: the list
        objects = np.argsort(rng.random((B, A)), axis=1)[:, :N] + FIRST_OBJECT  # (B, N)
        answer_slot = rng.integers(0, N, size=B)  # (B,): which list entry is never mentioned
        answer = objects[np.arange(B), answer_slot]  # (B,)
        keep = np.ones((B, N), dtype=bool)
        keep[np.arange(B), answer_slot] = False
        mentioned = objects[keep].reshape(B, N - 1)  # (B, N - 1): the list without the answer
        order = np.argsort(rng.random((B, N - 1)), axis=1)  # mentioned in a fresh random order
        mentioned = np.take_along_axis(mentioned, order, axis=1)

        inputs = np.empty((B, 2 * N + 1), dtype=np.int64)  # (B, T)
        inputs[:, : N - 1] = mentioned
        inputs[:, N - 1] = SEP
        inputs[:, N : 2 * N] = objects
        inputs[:, 2 * N] = QUERY
        targets = np.zeros_like(inputs)
        targets[:, -1] = answer
        loss_mask = np.zeros(inputs.shape, dtype=bool)
        loss_mask[:, -1] = True
        return Batch(inputs, targets, loss_mask)
