"""Moving-dot videos: a tiny activity-recognition task whose label no single frame can reveal.

A bright ``dot`` x ``dot`` square moves on a ``size`` x ``size`` torus (it leaves on one side and
comes back on the other), one pixel per frame, in one of four directions; the direction is the
video's class:

    0 right (+1 column),  1 left (-1 column),  2 down (+1 row),  3 up (-1 row)

Every pixel gets independent Gaussian noise of standard deviation ``noise``. The starting position
is uniform on the torus, so the position in any one frame is uniform too, whatever the class: one
frame carries *no* information about the label (the best single-frame classifier is at chance,
25 %), and a model must compare frames to see the motion. It is the lesson-29 stand-in for UCF101
in the LRCN paper (Donahue et al., arXiv 1411.4389), whose claim is that an LSTM over per-frame
CNN features beats averaging per-frame predictions.

Layout: frames (B, T, 1, H, W) float64 (channels before the image axes, as ``ref.nn.conv2d``),
labels (B,) int64 in [0, 4). Deterministic given the generator: ``MovingDotVideos().sample(rng,
B)`` draws the labels, then the starting positions, then the noise.

Not registered in ``ref.tasks.TASKS`` (a video task, not a token task); build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = ["MovingDotVideos", "DIRECTIONS", "N_CLASSES"]

# (row step, column step) of each class: right, left, down, up
DIRECTIONS = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]], dtype=np.int64)
N_CLASSES = len(DIRECTIONS)


@dataclass(frozen=True)
class MovingDotVideos:
    """``seq_len`` frames of ``size`` x ``size`` pixels; a ``dot`` x ``dot`` square moving one pixel
    per frame in one of four directions (the label), on a torus, plus Gaussian ``noise``."""

    seq_len: int = 8  # T
    size: int = 12  # H = W
    dot: int = 2
    noise: float = 0.15

    def __post_init__(self):
        for name, low in (("seq_len", 1), ("size", 2), ("dot", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if self.dot >= self.size:
            raise ValueError(f"dot: expected a dot smaller than the frame (< size = {self.size}), got {self.dot}")
        noise = self.noise
        is_number = isinstance(noise, (int, float, np.floating)) and not isinstance(noise, bool)
        if not is_number or not noise >= 0 or not np.isfinite(noise):
            raise ValueError(f"noise: expected a finite float >= 0, got {noise!r}")

    def positions(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        """Top-left corners (B, T, 2) (row, column) of the dots moving in the directions ``labels``."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels < 0).any() or (labels >= N_CLASSES).any():
            raise ValueError(f"labels: expected a 1-D integer array in [0, {N_CLASSES}), got {labels!r}")
        start = rng.integers(0, self.size, size=(len(labels), 2))  # (B, 2), uniform on the torus
        t = np.arange(self.seq_len)[None, :, None]  # (1, T, 1)
        return (start[:, None, :] + t * DIRECTIONS[labels][:, None, :]) % self.size  # (B, T, 2)

    def render(self, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Frames (B, T, 1, H, W): ones on the dots (wrapping around the torus), plus noise."""
        n, s = self.size, self.dot
        rows = (np.arange(n)[None, None, :] - positions[:, :, 0:1]) % n < s  # (B, T, H): row inside the dot
        cols = (np.arange(n)[None, None, :] - positions[:, :, 1:2]) % n < s  # (B, T, W)
        frames = (rows[:, :, :, None] & cols[:, :, None, :]).astype(np.float64)  # (B, T, H, W)
        frames += self.noise * rng.standard_normal(frames.shape)
        return frames[:, :, None]  # (B, T, 1, H, W)

    def sample(self, rng: np.random.Generator, B: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frames, labels)``: frames (B, T, 1, H, W) float64, labels (B,) int64 (the direction)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(B, "B")
        labels = rng.integers(0, N_CLASSES, size=B)  # (B,)
        return self.render(self.positions(rng, labels), rng), labels
