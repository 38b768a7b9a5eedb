"""Moving square: a tiny video-prediction task (a stand-in for Moving-MNIST at laptop scale).

A ``square`` x ``square`` block of ones moves on a ``size`` x ``size`` black image, one pixel per
frame along each axis (velocity (±1, ±1), drawn at random), and bounces off the walls: when a step
would leave the image, that axis's velocity flips and the square is reflected back inside. Position
and velocity are drawn uniformly per sequence, so frame t + 1 is a deterministic function of frames
t - 1 and t (the position and the velocity), but not of frame t alone: a model must remember at
least one past frame. It is the task of the ConvS5 lesson (Smith et al., arXiv 2310.19694, whose
long-horizon experiment uses Moving-MNIST, two digits bouncing on 64 x 64).

Layout: frames (B, T, H, W, 1) float64 in {0, 1}, channels last (as ``ref.mixers.convs5``). The
next-frame task reads ``inputs = frames[:, :-1]`` and predicts ``targets = frames[:, 1:]``.

Besides the generator: the loss the models train with (per-pixel binary cross-entropy on logits,
:func:`pixel_bce` / :func:`pixel_bce_backward`) and the two scores the lesson reports,
:func:`frame_mse` (mean squared error of the predicted probabilities) and :func:`position_accuracy`
(the brightest predicted pixel lies inside the true square).

Not registered in ``ref.tasks.TASKS`` (a video task, not a token task); build it directly:
``MovingSquare(seq_len=32).sample(rng, 16)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = ["MovingSquare", "pixel_bce", "pixel_bce_backward", "frame_mse", "position_accuracy"]


@dataclass(frozen=True)
class MovingSquare:
    """A ``square`` x ``square`` block bouncing on ``size`` x ``size`` frames, ``seq_len`` frames."""

    seq_len: int = 32  # T
    size: int = 16  # H = W
    square: int = 2

    def __post_init__(self):
        for name, low in (("seq_len", 2), ("size", 3), ("square", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if self.square > self.size - 2:
            raise ValueError(f"square: expected at most size - 2 = {self.size - 2} (room to move), got {self.square}")

    def positions(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """The top-left corners (B, T, 2) (row, column) of B bouncing squares."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(B, "B")
        T, top = self.seq_len, self.size - self.square  # the corner stays in [0, top]
        pos = rng.integers(0, top + 1, size=(B, 2))  # (B, 2)
        vel = rng.choice(np.array([-1, 1]), size=(B, 2))  # (B, 2)
        out = np.empty((B, T, 2), np.int64)
        for t in range(T):
            out[:, t] = pos
            nxt = pos + vel
            bounce = (nxt < 0) | (nxt > top)  # the step would leave the image: reflect
            vel = np.where(bounce, -vel, vel)
            pos = np.where(nxt < 0, -nxt, np.where(nxt > top, 2 * top - nxt, nxt))
        return out

    def sample(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """Frames (B, T, H, W, 1) float64: ones on the square, zeros elsewhere."""
        pos = self.positions(rng, B)  # (B, T, 2)
        B, T, s, n = pos.shape[0], self.seq_len, self.square, self.size
        rows = (np.arange(n)[None, None, :] - pos[:, :, 0:1]) % n < s  # (B, T, H): row inside the square
        cols = (np.arange(n)[None, None, :] - pos[:, :, 1:2]) % n < s  # (B, T, W)
        frames = rows[:, :, :, None] & cols[:, :, None, :]  # (B, T, H, W)
        return frames[..., None].astype(np.float64)  # (B, T, H, W, 1)


# ---------------------------------------------------------------- loss and scores


def pixel_bce(logits: np.ndarray, targets: np.ndarray):
    """Mean binary cross-entropy with logits over every pixel:
    l = mean(softplus(z) - y z) (stable: softplus(z) = max(z, 0) + log(1 + e^{-|z|})).
    Returns ``(loss, cache)``, the loss a 0-d array."""
    z = checks.float_array(logits, "logits")
    y = checks.float_array(targets, "targets")
    checks.same_shape(y, "targets", z.shape, "(...)", "the shape of logits")
    softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    loss = np.asarray((softplus - y * z).mean(), dtype=z.dtype)
    return loss, (z, y)


def pixel_bce_backward(dloss, cache):
    """Returns ``(dlogits,)``: dl/dz = (sigmoid(z) - y) / n."""
    z, y = cache
    sig = np.exp(-np.logaddexp(0, -z))  # sigmoid(z), stable
    return (float(dloss) * (sig - y) / z.size,)


def frame_mse(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean squared error of the predicted probabilities sigmoid(logits) against the frames."""
    return float(((np.exp(-np.logaddexp(0, -logits)) - targets) ** 2).mean())


def position_accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of predicted frames (..., H, W, 1) whose brightest pixel lies on the true square."""
    flat_logits = logits.reshape(-1, logits.shape[-3] * logits.shape[-2] * logits.shape[-1])  # (frames, H W)
    flat_targets = targets.reshape(flat_logits.shape)
    best = flat_logits.argmax(axis=1)
    return float(flat_targets[np.arange(len(best)), best].mean())
