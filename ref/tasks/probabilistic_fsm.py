"""A probabilistic finite-state machine that strings together primitive patterns (the PV-RNN lesson).

Ahmadi & Tani (arXiv 1811.01339, Section 3.1) train PV-RNN on sequences produced by a
probabilistic finite-state machine (PFSM): at a *branch point* the machine picks one of two
primitive patterns at random, with fixed probabilities, and at the other states it moves on
deterministically. A model that has learned the data's structure should, when it generates freely,
reproduce both the deterministic parts and the branch probabilities.

Our machine is 1-D and has three primitives of ``period`` steps each (amplitude ``amplitude``)::

    A : + amplitude * sin(pi (k + 1) / (period + 1))     a positive bump   (k = 0 .. period-1)
    B : - amplitude * sin(pi (k + 1) / (period + 1))     a negative bump
    C :   amplitude * sin(2 pi (k + 1) / (period + 1))   a full wave: the deterministic "bridge"

    state BRANCH --p_a--> A --> C --> BRANCH
                 --1-p_a-> B --> C --> BRANCH

so a sequence of ``n_cycles`` cycles has length T = 2 period n_cycles, every cycle starts at a
branch point (steps 0, 2 period, 4 period, ...) and the only randomness is the choice A / B
there (p_a = 0.3 by default, as in the paper's experiment). Optional Gaussian observation noise
``noise``. Every value lies in (-1, 1), the range of PV-RNN's tanh output.

Besides the generator, :meth:`ProbabilisticFSM.classify` reads a generated sequence cycle by
cycle: which branch primitive each branch segment is closest to, how close, and how close the
bridge after it is to C. That is what the lesson needs to read the branch frequencies (and the
well-formedness) off sequences a model generates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = ["ProbabilisticFSM"]


@dataclass(frozen=True)
class ProbabilisticFSM:
    """Sequences of ``n_cycles`` cycles (a branch A / B with probability p_a / 1 - p_a, then C)."""

    n_cycles: int = 4
    period: int = 5
    p_a: float = 0.3
    amplitude: float = 0.8
    noise: float = 0.0

    def __post_init__(self):
        checks.positive_int(self.n_cycles, "n_cycles")
        checks.positive_int(self.period, "period")
        if isinstance(self.p_a, bool) or not isinstance(self.p_a, (int, float)) or not 0 <= self.p_a <= 1:
            raise ValueError(f"p_a: expected a probability in [0, 1], got {self.p_a!r}")
        if isinstance(self.amplitude, bool) or not isinstance(self.amplitude, (int, float)) or not 0 < self.amplitude < 1:
            raise ValueError(f"amplitude: expected a number in (0, 1) (inside tanh's range), got {self.amplitude!r}")
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not self.noise >= 0:
            raise ValueError(f"noise: expected a standard deviation >= 0, got {self.noise!r}")

    @property
    def seq_len(self) -> int:  # T
        return 2 * self.period * self.n_cycles

    def primitives(self) -> dict:
        """The three primitive patterns, each (period,)."""
        phase = np.pi * (np.arange(self.period) + 1) / (self.period + 1)
        bump = self.amplitude * np.sin(phase)
        return {"A": bump, "B": -bump, "C": self.amplitude * np.sin(2 * phase)}

    def sample(self, rng: np.random.Generator, B: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, choices)``: x (B, T, 1) float64, choices (B, n_cycles) bool, True where A was picked."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(B, "B")
        prim = self.primitives()
        choices = rng.random((B, self.n_cycles)) < self.p_a  # (B, n_cycles): the branch decisions
        branch = np.where(choices[..., None], prim["A"], prim["B"])  # (B, n_cycles, period)
        bridge = np.broadcast_to(prim["C"], branch.shape)  # (B, n_cycles, period)
        x = np.concatenate([branch, bridge], axis=2).reshape(B, self.seq_len)  # (B, T)
        if self.noise > 0:
            x = x + self.noise * rng.standard_normal(x.shape)
        return x[..., None], choices

    def classify(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For generated x (B, T, 1), cycle by cycle: ``(is_a, branch_distance, bridge_distance)``,
        each (B, n_cycles) for the cycles that fit in T.

        ``is_a`` says whether the branch segment is closer (root-mean-square) to A than to B;
        ``branch_distance`` is its RMS distance to the closer of the two and ``bridge_distance``
        the RMS distance of the next segment to C, both in units of the amplitude (0 for a perfect
        copy; a segment of zeros, the average of A and B, is at about 0.7 from either).
        """
        x = checks.float_array(x, "x", ndim=3, dims="(B, T, 1)")
        if x.shape[2] != 1 or x.shape[1] < 2 * self.period:
            raise ValueError(f"x: expected shape (B, T, 1) with T >= 2 period = {2 * self.period}, got {x.shape}")
        prim = self.primitives()
        n = x.shape[1] // (2 * self.period)
        cycles = x[:, : 2 * self.period * n, 0].reshape(x.shape[0], n, 2, self.period)  # (B, n, 2, period)
        branch, bridge = cycles[:, :, 0], cycles[:, :, 1]  # (B, n, period)
        d_a = np.sqrt(((branch - prim["A"]) ** 2).mean(-1))  # (B, n)
        d_b = np.sqrt(((branch - prim["B"]) ** 2).mean(-1))
        d_c = np.sqrt(((bridge - prim["C"]) ** 2).mean(-1))
        return d_a < d_b, np.minimum(d_a, d_b) / self.amplitude, d_c / self.amplitude
