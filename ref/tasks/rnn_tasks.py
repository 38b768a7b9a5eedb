"""Two synthetic tasks of the RNN review lesson (Lipton, Berkowitz & Elkan, arXiv 1506.00019).

- :class:`AddingProblem` (Hochreiter & Schmidhuber 1997, experiment 4; in the form of Le et al.
  2015 and Arjovsky et al. 2016): a long-range dependency. Each step carries two numbers, a value
  v_t ~ U(0, 1) and a marker m_t in {0, 1}. Exactly two steps are marked, one in the first half
  of the sequence and one in the second; the target, read at the end, is the sum of the two marked
  values::

      values   0.31 0.77 0.05 0.62 | 0.90 0.18 0.44 0.27
      markers     0    1    0    0 |    0    0    1    0        target 0.77 + 0.44 = 1.21

  Guessing the mean, 1, scores a mean squared error of Var(v + v') = 2/12 = 1/6 ≈ 0.167: the
  baseline a model that never found the markers sits at.

- :class:`FutureLabel`: a dependency on the future. Tokens x_t are drawn uniformly from
  {0, ..., K - 1} and fed one-hot; the label of step t is the token ``shift`` steps ahead,
  y_t = x_{t + shift}. A causal model reading x_0..x_t at step t knows nothing of x_{t + shift}
  (chance accuracy 1/K); a bidirectional RNN, whose backward pass has read x_{T-1}..x_t, can solve
  it. The last ``shift`` steps have no label (``IGNORE`` = -100, the cross-entropy's
  ``ignore_index``).

Both are frozen dataclasses of their configuration (a bad value raises ValueError naming it) with
``sample(rng, B)``; randomness comes only from the generator passed in, so the same seed gives the
same batch. Not registered in ``ref.tasks.TASKS`` (float inputs, not token tasks): build them
directly, ``AddingProblem(seq_len=50).sample(rng, 64)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = ["AddingProblem", "FutureLabel", "IGNORE", "MEAN_BASELINE_MSE"]

IGNORE = -100  # the label of a step with nothing to predict (cross_entropy's ignore_index)
MEAN_BASELINE_MSE = 1.0 / 6.0  # Var(v + v') for v, v' ~ U(0, 1): the MSE of always answering 1


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


@dataclass(frozen=True)
class AddingProblem:
    """The adding problem of length ``seq_len`` = T (T >= 2)."""

    seq_len: int = 50  # T

    def __post_init__(self):
        _check_int(self.seq_len, "seq_len", 2)

    def sample(self, rng: np.random.Generator, B: int):
        """Returns ``x`` (B, T, 2) float64 (values, markers), ``y`` (B, 1) float64 (the sum) and
        ``marks`` (B, 2) int64, the two marked positions (first half, second half)."""
        _check_rng(rng)
        B = checks.positive_int(B, "B")
        T = self.seq_len
        half = T // 2
        values = rng.uniform(0.0, 1.0, size=(B, T))  # (B, T)
        first = rng.integers(0, half, size=B)  # (B,) in [0, T/2)
        second = rng.integers(half, T, size=B)  # (B,) in [T/2, T)
        markers = np.zeros((B, T))
        rows = np.arange(B)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=2)  # (B, T, 2)
        y = (values[rows, first] + values[rows, second])[:, None]  # (B, 1)
        return x, y, np.stack([first, second], axis=1)


@dataclass(frozen=True)
class FutureLabel:
    """Label y_t = x_{t + shift} over ``num_tokens`` = K tokens, ``seq_len`` = T steps."""

    seq_len: int = 20  # T
    num_tokens: int = 4  # K
    shift: int = 2

    def __post_init__(self):
        _check_int(self.seq_len, "seq_len", 2)
        _check_int(self.num_tokens, "num_tokens", 2)
        _check_int(self.shift, "shift", 0)
        if self.shift >= self.seq_len:
            raise ValueError(f"shift: expected less than seq_len = {self.seq_len}, got {self.shift}")

    def sample(self, rng: np.random.Generator, B: int):
        """Returns ``x`` (B, T, K) float64 one-hot tokens, ``labels`` (B, T) int64 (``IGNORE`` on the
        last ``shift`` steps) and ``tokens`` (B, T) int64."""
        _check_rng(rng)
        B = checks.positive_int(B, "B")
        T, K, s = self.seq_len, self.num_tokens, self.shift
        tokens = rng.integers(0, K, size=(B, T))  # (B, T)
        x = np.eye(K)[tokens]  # (B, T, K)
        labels = np.full((B, T), IGNORE, dtype=np.int64)
        labels[:, : T - s] = tokens[:, s:]  # y_t = x_{t + shift}
        return x, labels, tokens
