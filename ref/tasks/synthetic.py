"""Synthetic sequence tasks that probe memory: copying, selective copying, multi-query associative
recall, induction heads.

Every task is a frozen dataclass of its configuration (checked when it is built: a bad value raises
ValueError naming the argument) with ``vocab_size``, ``seq_len`` and ``sample(rng, batch_size)``,
which returns a :class:`Batch`:

    inputs     (B, T) int64   token ids in [0, vocab_size)
    targets    (B, T) int64   the answer at each position; 0 where loss_mask is False
    loss_mask  (B, T) bool    where the loss (and accuracy) is taken

Convention, the same for every task: a causal model reads ``inputs[:, :t + 1]`` and must output
``targets[:, t]`` wherever ``loss_mask[:, t]``. The targets are *not* fed back as inputs (no teacher
forcing), so a model has to hold the answer in its state. Randomness comes only from the
``np.random.Generator`` passed to ``sample``: the same seed gives identical batches.

``get_task("mqar", num_pairs=16)`` builds a task by name; ``TASKS`` maps every name to its class.
A new task subclasses :class:`SyntheticTask` as a frozen dataclass, implements ``_sample`` and is
added with ``@register_task``.

Continuous-valued tasks (regression, not in ``TASKS``) return a :class:`SignalBatch` of float
signals (B, T, 1) instead: ``delayed_copy`` (:class:`DelayedCopy`), output the white-noise input of
``lag`` steps ago, y_t = u_{t - lag}.

Layouts (B = batch, T = seq_len):

- ``copying`` (S4 repository's ``torch_copying_data``, after Arjovsky et al. 2016): M data tokens,
  L blanks, M markers; the markers' arrival is the delimiter, and at the j-th marker the model
  must output the j-th data token::

      inputs   d1 d2 d3  0  0  0  0  0  m  m  m       (M = 3, L = 5; 0 = blank, m = vocab_size - 1)
      targets   .  .  .  .  .  .  .  .  d1 d2 d3      (. = masked out)

- ``selective_copying`` (Mamba, Gu & Dao 2023, section 3.1): the same, but the M data tokens sit at
  random positions among the first L + M, in order; the model must skip the blanks ("noise")::

      inputs    0 d1  0  0 d2 d3  0  0  m  m  m
      targets   .  .  .  .  .  .  .  .  d1 d2 d3

- ``mqar``, multi-query associative recall (Zoology, Arora et al. 2023; also used by GLA): N
  key-value pairs, then filler with Q of the keys asked again; at each query the model must output
  the value that followed that key. Keys come from ids [1, key_vocab_size], values from
  [key_vocab_size + 1, vocab_size - 1]; keys are distinct within a sample, and so are values.
  Queries sit at even offsets of the query region, placed as in Zoology (power-law gaps, most of
  them near the start)::

      inputs   k1 v1 k2 v2 k3 v3 | k2  f k3  f  f  f k1  f  f  f      (N = Q = 3, f = filler)
      targets   .  .  .  .  .  . | v2  . v3  .  .  . v1  .  .  .

- ``induction_heads`` (Mamba, Gu & Dao 2023, section 4.1.2; the task of H3's synthetics, Fu et al.
  2023): T - 1 random tokens with the special token s planted once among them, then s again at the
  end; there the model must output the token that followed s the first time ("Harry Potter ...
  Harry -> Potter"). Only that last position is scored::

      inputs    5  2  s  7  1  4  6  3  2  s       (7 followed s: the answer)
      targets   .  .  .  .  .  .  .  .  .  7
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ref import checks

__all__ = [
    "Batch",
    "SyntheticTask",
    "Copying",
    "SelectiveCopying",
    "MQAR",
    "InductionHeads",
    "SignalBatch",
    "DelayedCopy",
    "TASKS",
    "register_task",
    "get_task",
]


@dataclass(frozen=True)
class Batch:
    """One batch of a synthetic task (see the module docstring for the convention)."""

    inputs: np.ndarray  # (B, T) int64
    targets: np.ndarray  # (B, T) int64
    loss_mask: np.ndarray  # (B, T) bool

    def __post_init__(self):
        if self.inputs.ndim != 2:
            raise ValueError(f"inputs: expected 2 axes (B, T), got shape {self.inputs.shape}")
        checks.same_shape(self.targets, "targets", self.inputs.shape, "(B, T)", "the shape of inputs")
        checks.same_shape(self.loss_mask, "loss_mask", self.inputs.shape, "(B, T)", "the shape of inputs")
        if self.loss_mask.dtype != np.bool_:
            raise ValueError(f"loss_mask: expected dtype bool, got {self.loss_mask.dtype}")

    def accuracy(self, predictions) -> float:
        """Fraction of the masked positions where ``predictions`` (B, T), e.g. ``logits.argmax(-1)``, is right."""
        pred = np.asarray(predictions)
        checks.same_shape(pred, "predictions", self.inputs.shape, "(B, T)", "the shape of the batch")
        return float((pred == self.targets)[self.loss_mask].mean())


def _int_at_least(value, name: str, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}{why}, got {value!r}")
    return int(value)


class SyntheticTask(abc.ABC):
    """Base of every task. Subclasses are frozen dataclasses with ``vocab_size`` and ``seq_len``."""

    name: ClassVar[str]

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Draw ``batch_size`` independent samples: a :class:`Batch` of (B, T) arrays."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(batch_size, "batch_size")
        return self._sample(rng, B)

    @abc.abstractmethod
    def _sample(self, rng: np.random.Generator, B: int) -> Batch: ...


TASKS: dict[str, type[SyntheticTask]] = {}


def register_task(cls: type[SyntheticTask]) -> type[SyntheticTask]:
    """Class decorator: make ``cls`` available as ``get_task(cls.name, ...)``."""
    if cls.name in TASKS:
        raise ValueError(f"name: task {cls.name!r} is already registered (by {TASKS[cls.name].__name__})")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, **config) -> SyntheticTask:
    """Build the task registered as ``name`` with the given configuration (unknown keys are an error)."""
    checks.one_of(name, "name", tuple(TASKS))
    cls = TASKS[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in config:
        if key not in allowed:
            raise ValueError(f"{key}: not a parameter of task {name!r}; expected one of {', '.join(allowed)}")
    return cls(**config)


@register_task
@dataclass(frozen=True)
class Copying(SyntheticTask):
    """Copy M data tokens after L blanks, at M marker tokens. T = L + 2M.

    Token ids: 0 = blank, 1 .. vocab_size - 2 = data, vocab_size - 1 = marker.
    """

    name: ClassVar[str] = "copying"
    selective: ClassVar[bool] = False

    num_tokens: int = 8  # M, tokens to memorise
    num_blanks: int = 16  # L, blanks between the data and the markers
    vocab_size: int = 10  # A

    def __post_init__(self):
        _int_at_least(self.num_tokens, "num_tokens", 1)
        _int_at_least(self.num_blanks, "num_blanks", 0)
        _int_at_least(self.vocab_size, "vocab_size", 3, " (blank 0, at least one data token, marker vocab_size - 1)")

    @property
    def seq_len(self) -> int:
        return self.num_blanks + 2 * self.num_tokens

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def marker_id(self) -> int:
        return self.vocab_size - 1

    def _sample(self, rng, B):
        M, L, A = self.num_tokens, self.num_blanks, self.vocab_size
        data = rng.integers(1, A - 1, size=(B, M))  # (B, M) in [1, A - 2]
        if self.selective:
            # M distinct positions among the first L + M, in increasing order (the data keep their order)
            pos = np.sort(np.argsort(rng.random((B, L + M)), axis=1)[:, :M], axis=1)  # (B, M)
        else:
            pos = np.broadcast_to(np.arange(M), (B, M))  # (B, M): the data come first
        inputs = np.zeros((B, L + 2 * M), dtype=np.int64)  # (B, T)
        np.put_along_axis(inputs, pos, data, axis=1)
        inputs[:, L + M :] = self.marker_id
        targets = np.zeros_like(inputs)
        targets[:, L + M :] = data
        loss_mask = np.zeros(inputs.shape, dtype=bool)
        loss_mask[:, L + M :] = True
        return Batch(inputs, targets, loss_mask)


@register_task
@dataclass(frozen=True)
class SelectiveCopying(Copying):
    """Mamba's selective copying: the M data tokens are scattered among the first L + M positions.

    Defaults: the tiny version of Mamba's Table 1 (T = 256, 8 tokens to copy, vocab 16).
    """

    name: ClassVar[str] = "selective_copying"
    selective: ClassVar[bool] = True

    num_tokens: int = 8
    num_blanks: int = 240
    vocab_size: int = 16


@register_task
@dataclass(frozen=True)
class MQAR(SyntheticTask):
    """Multi-query associative recall (Zoology's ``multiquery_ar``), see the module docstring.

    Layout of one sample (length T = seq_len): positions 0 .. 2N - 1 hold k1 v1 ... kN vN; the
    query region 2N .. T - 1 has S = (T - 2N) // 2 query slots at its even offsets, Q of which hold a
    key (each of Q distinct pairs asked once, in random order). Slot i (1-based) is drawn with weight
    i ** (power_a - 1), without replacement (``power_a=None``: uniformly). Every other position is
    filler: a uniform token from [0, vocab_size) if ``random_filler`` (Zoology's default), else 0.
    """

    name: ClassVar[str] = "mqar"

    vocab_size: int = 64  # V
    seq_len: int = 128  # T
    num_pairs: int = 8  # N
    num_queries: int | None = None  # Q; None -> N (every key asked once)
    key_vocab_size: int | None = None  # keys are 1 .. key_vocab_size; None -> vocab_size // 2 - 1
    power_a: float | None = 0.01  # None -> query slots uniformly at random
    random_filler: bool = True

    def __post_init__(self):
        V = _int_at_least(self.vocab_size, "vocab_size", 3, " (filler 0, at least one key and one value)")
        T = _int_at_least(self.seq_len, "seq_len", 1)
        N = _int_at_least(self.num_pairs, "num_pairs", 1)
        if self.num_queries is None:
            object.__setattr__(self, "num_queries", N)
        Q = self.num_queries
        if isinstance(Q, bool) or not isinstance(Q, numbers.Integral) or not 1 <= Q <= N:
            raise ValueError(f"num_queries: expected an integer in [1, num_pairs = {N}], got {Q!r}")
        if self.key_vocab_size is None:
            object.__setattr__(self, "key_vocab_size", V // 2 - 1)
        K = self.key_vocab_size
        if isinstance(K, bool) or not isinstance(K, numbers.Integral) or not 1 <= K <= V - 2:
            raise ValueError(f"key_vocab_size: expected an integer in [1, vocab_size - 2 = {V - 2}], got {K!r}")
        if N > K:
            raise ValueError(
                f"num_pairs: expected at most key_vocab_size = {K} pairs (keys are distinct within a "
                f"sample; vocab_size = {V}), got {N}"
            )
        if N > V - 1 - K:
            raise ValueError(
                f"num_pairs: expected at most {V - 1 - K} pairs (the value ids {K + 1} .. {V - 1}; values "
                f"are distinct within a sample; vocab_size = {V}), got {N}"
            )
        if T < 2 * N + 2 * Q:
            raise ValueError(
                f"seq_len: expected at least 2 * num_pairs + 2 * num_queries = {2 * N + 2 * Q} "
                f"(the pairs, then a query slot of 2 positions per query), got {T}"
            )
        a = self.power_a
        if a is not None and (isinstance(a, bool) or not isinstance(a, numbers.Real) or not a > 0):
            raise ValueError(f"power_a: expected a positive number or None, got {a!r}")
        if not isinstance(self.random_filler, bool):
            raise ValueError(f"random_filler: expected a bool, got {self.random_filler!r}")

    @property
    def key_range(self) -> tuple[int, int]:
        """Key ids, half-open: [1, key_vocab_size + 1)."""
        return 1, self.key_vocab_size + 1

    @property
    def value_range(self) -> tuple[int, int]:
        """Value ids, half-open: [key_vocab_size + 1, vocab_size)."""
        return self.key_vocab_size + 1, self.vocab_size

    @property
    def num_slots(self) -> int:
        """S: query slots in the query region."""
        return (self.seq_len - 2 * self.num_pairs) // 2

    def _sample(self, rng, B):
        V, T, N, Q = self.vocab_size, self.seq_len, self.num_pairs, self.num_queries
        (k_lo, k_hi), (v_lo, v_hi) = self.key_range, self.value_range
        # N distinct keys and N distinct values per sample: the first N of a random permutation
        keys = k_lo + np.argsort(rng.random((B, k_hi - k_lo)), axis=1)[:, :N]  # (B, N)
        values = v_lo + np.argsort(rng.random((B, v_hi - v_lo)), axis=1)[:, :N]  # (B, N)
        # which pairs are asked: Q distinct of the N, in random order
        asked = np.argsort(rng.random((B, N)), axis=1)[:, :Q]  # (B, Q)
        # where: Q distinct slots of S, drawn without replacement with weights w_i = i^(a - 1), by the
        # Gumbel-top-k trick (the Q largest of log w_i + Gumbel noise are such a sample)
        S = self.num_slots
        scores = rng.gumbel(size=(B, S))  # (B, S)
        if self.power_a is not None:
            scores = scores + (self.power_a - 1.0) * np.log(np.arange(1, S + 1))
        slots = np.argsort(-scores, axis=1)[:, :Q]  # (B, Q)
        qpos = 2 * N + 2 * slots  # (B, Q) positions of the queries

        if self.random_filler:
            inputs = rng.integers(0, V, size=(B, T))  # (B, T)
        else:
            inputs = np.zeros((B, T), dtype=np.int64)
        inputs[:, 0 : 2 * N : 2] = keys
        inputs[:, 1 : 2 * N : 2] = values
        np.put_along_axis(inputs, qpos, np.take_along_axis(keys, asked, axis=1), axis=1)
        targets = np.zeros((B, T), dtype=np.int64)
        np.put_along_axis(targets, qpos, np.take_along_axis(values, asked, axis=1), axis=1)
        loss_mask = np.zeros((B, T), dtype=bool)
        np.put_along_axis(loss_mask, qpos, True, axis=1)
        return Batch(inputs.astype(np.int64, copy=False), targets, loss_mask)


@register_task
@dataclass(frozen=True)
class InductionHeads(SyntheticTask):
    """Induction heads (Mamba's section 4.1.2), see the module docstring. T = seq_len.

    Token ids: 0 .. vocab_size - 2 ordinary, s = vocab_size - 1 the special (trigger) token.
    Positions 0 .. T - 2 hold uniform ordinary tokens, except one position p, uniform in
    [0, T - 3], which holds s; position T - 1 holds s again, and its target is inputs[p + 1] (an
    ordinary token: s occurs nowhere else). Chance accuracy is 1 / (vocab_size - 1).

    As H3's synthetics (HazyResearch/safari ``generate_induction_head``, one trigger, one token to
    copy), which reserve a second special token (a no-op) that this task never uses: here every
    non-special id is an ordinary token. Defaults: Mamba's setting (vocab 16, training length 256).
    Sampling the same task at other ``seq_len`` gives the paper's test of length generalisation.
    """

    name: ClassVar[str] = "induction_heads"

    vocab_size: int = 16  # V: V - 1 ordinary tokens and the special token
    seq_len: int = 256  # T

    def __post_init__(self):
        _int_at_least(self.vocab_size, "vocab_size", 3, " (at least two ordinary tokens and the special one)")
        _int_at_least(self.seq_len, "seq_len", 3, " (the special token, the token after it, the special token again)")

    @property
    def special_id(self) -> int:
        return self.vocab_size - 1

    def _sample(self, rng, B):
        V, T = self.vocab_size, self.seq_len
        inputs = rng.integers(0, V - 1, size=(B, T))  # (B, T) ordinary tokens in [0, V - 2]
        pos = rng.integers(0, T - 2, size=B)  # (B,) the first s, at p in [0, T - 3]
        rows = np.arange(B)
        inputs[rows, pos] = self.special_id
        inputs[:, T - 1] = self.special_id
        targets = np.zeros((B, T), dtype=np.int64)
        targets[:, T - 1] = inputs[rows, pos + 1]  # the token that followed s
        loss_mask = np.zeros((B, T), dtype=bool)
        loss_mask[:, T - 1] = True
        return Batch(inputs.astype(np.int64, copy=False), targets, loss_mask)


# --- continuous-valued tasks (regression) --------------------------------------------------------
#
# The tasks above are token tasks (classification, registered in TASKS). A state space model reads
# a real-valued signal just as well, and HiPPO's theory is about signals: the tasks below give
# float inputs and targets of shape (B, T, 1) in a SignalBatch, with the same causal convention
# (a model reads inputs[:, :t + 1] and must output targets[:, t] wherever loss_mask[:, t]). They
# are not in TASKS (whose tasks have a vocabulary); build them directly, e.g. DelayedCopy(lag=128).


@dataclass(frozen=True)
class SignalBatch:
    """One batch of a continuous-valued task.

    inputs     (B, T, 1) float64   the input signal
    targets    (B, T, 1) float64   the output wanted at each step; 0 where loss_mask is False
    loss_mask  (B, T) bool         where the loss is taken
    """

    inputs: np.ndarray  # (B, T, 1) float64
    targets: np.ndarray  # (B, T, 1) float64
    loss_mask: np.ndarray  # (B, T) bool

    def __post_init__(self):
        if self.inputs.ndim != 3 or self.inputs.shape[2] != 1:
            raise ValueError(f"inputs: expected shape (B, T, 1), got {self.inputs.shape}")
        checks.same_shape(self.targets, "targets", self.inputs.shape, "(B, T, 1)", "the shape of inputs")
        checks.same_shape(self.loss_mask, "loss_mask", self.inputs.shape[:2], "(B, T)", "the first two axes of inputs")
        if self.loss_mask.dtype != np.bool_:
            raise ValueError(f"loss_mask: expected dtype bool, got {self.loss_mask.dtype}")

    def mse(self, predictions) -> float:
        """Mean squared error of ``predictions`` (B, T, 1) over the masked positions."""
        pred = np.asarray(predictions)
        checks.same_shape(pred, "predictions", self.inputs.shape, "(B, T, 1)", "the shape of the batch")
        return float(((pred - self.targets)[self.loss_mask] ** 2).mean())


@dataclass(frozen=True)
class DelayedCopy(SyntheticTask):
    """Continuous delayed copy: the input is white noise u_t ~ N(0, 1), i.i.d.; at every t >= lag
    the model must output the input of ``lag`` steps ago, y_t = u_{t - lag}::

        inputs    u0  u1  u2 ... u127 u128 u129 ... u255      (T = 256, lag = 128)
        targets    .   .   . ...    .   u0   u1 ... u127      (. = masked out, 0)

    A long-range memory probe that no shortcut solves: white noise is unpredictable, so the
    model must carry the last ``lag`` inputs in its state. A linear time-invariant model
    y = K * u solves it exactly with the kernel K = δ_lag (a unit impulse at lag), and for any
    kernel the expected squared error at step t is sum_{l<=t} (K_l - δ_{l,lag})^2: predicting 0
    scores 1 (the variance of the target), the exact delay 0.

    Not in ``TASKS`` (a regression task, see the section comment); defaults: T = 256, lag = 128.
    """

    name: ClassVar[str] = "delayed_copy"

    seq_len: int = 256  # T
    lag: int = 128

    def __post_init__(self):
        T = _int_at_least(self.seq_len, "seq_len", 2)
        _int_at_least(self.lag, "lag", 1)
        if self.lag >= T:
            raise ValueError(f"lag: expected an integer in [1, seq_len - 1 = {T - 1}] (some targets to predict), "
                             f"got {self.lag!r}")

    def _sample(self, rng, B):
        T, lag = self.seq_len, self.lag
        inputs = rng.standard_normal((B, T, 1))  # (B, T, 1) white noise
        targets = np.zeros_like(inputs)
        targets[:, lag:] = inputs[:, : T - lag]  # y_t = u_{t - lag}
        loss_mask = np.zeros((B, T), dtype=bool)
        loss_mask[:, lag:] = True
        return SignalBatch(inputs, targets, loss_mask)
