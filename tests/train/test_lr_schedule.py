import math

import pytest

from ref.train import lr_at

# base 3, floor 1, 4 warmup steps, 12 in all: the decay runs over steps 4..12, its middle is step 8
KW = dict(base_lr=3.0, warmup_steps=4, total_steps=12, min_lr=1.0)


def test_exact_values_at_the_landmarks():
    assert lr_at(0, **KW) == 0.0  # warmup starts from zero
    assert lr_at(1, **KW) == 0.75  # 3 * 1/4
    assert lr_at(2, **KW) == 1.5
    assert lr_at(4, **KW) == 3.0  # end of warmup: exactly base_lr
    assert lr_at(8, **KW) == 2.0  # middle of the decay: (base + min) / 2
    assert lr_at(12, **KW) == 1.0  # end: exactly min_lr
    assert lr_at(13, **KW) == 1.0 and lr_at(10**6, **KW) == 1.0  # beyond the end: stays at min_lr


def test_cosine_shape_between_landmarks():
    # a quarter of the way through the decay: 1 + 2 (1 + cos(pi/4)) / 2
    assert lr_at(6, **KW) == pytest.approx(1 + (1 + math.cos(math.pi / 4)), rel=1e-15)
    lrs = [lr_at(s, **KW) for s in range(4, 13)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing
    # symmetric about the middle: lr(8 - k) - 2 = 2 - lr(8 + k)
    for k in range(1, 5):
        assert lr_at(8 - k, **KW) - 2.0 == pytest.approx(2.0 - lr_at(8 + k, **KW), abs=1e-15)


def test_no_warmup_and_all_warmup():
    assert lr_at(0, 0.5, 0, 10) == 0.5  # no warmup: starts at base_lr
    assert lr_at(5, 0.5, 0, 10) == 0.25  # default floor 0
    assert lr_at(9, 0.5, 10, 10) == 0.45  # warmup == total: linear to the end ...
    assert lr_at(10, 0.5, 10, 10) == 0.0  # ... then min_lr
    assert lr_at(3, 0.5, 0, 10, min_lr=0.5) == 0.5  # min_lr = base_lr: constant


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 1.0, 11, 10), "warmup_steps: expected at most total_steps = 10, got 11"),
        ((-1, 1.0, 0, 10), "step: expected an integer >= 0, got -1"),
        ((1.5, 1.0, 0, 10), "step: expected an integer >= 0, got 1.5"),
        ((0, -1.0, 0, 10), "base_lr: expected a finite number >= 0, got -1.0"),
        ((0, float("inf"), 0, 10), "base_lr: expected a finite number >= 0, got inf"),
        ((0, 1.0, -1, 10), "warmup_steps: expected an integer >= 0, got -1"),
        ((0, 1.0, 0, 0), "total_steps: expected an integer >= 1, got 0"),
        ((0, 1.0, 0, -5), "total_steps: expected an integer >= 0, got -5"),
        ((0, 1.0, 0, 10, -0.1), "min_lr: expected a finite number >= 0, got -0.1"),
        ((0, 1.0, 0, 10, 2.0), "min_lr: expected at most base_lr = 1.0, got 2.0"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        lr_at(*args)
