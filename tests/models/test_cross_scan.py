"""The 2-D selective scan (SS2D, ref.models.cross_scan): CrossScan and CrossMerge as adjoints, the
layer against an explicit loop over the scans, its forms against each other, finite differences
on every backward, causality of one scan, and the errors."""

import numpy as np
import pytest

from ref.mixers.selective_scan import selective_scan_recurrent
from ref.models.cross_scan import (
    MIXER_FORMS,
    SCANS,
    cross_merge,
    cross_merge_backward,
    cross_scan,
    cross_scan_backward,
    init_ss2d_block,
    init_ss2d_classifier,
    init_ss2d_layer,
    scans_for,
    ss2d_backward,
    ss2d_block,
    ss2d_block_backward,
    ss2d_forward,
    ss2d_layer,
    ss2d_layer_backward,
    ss2d_loss_and_grads,
)
from ref.models.multiscan import scan_permutation
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.mamba

GRID = (2, 3)
# the gradients of the step size and of A pass through softplus and the decay exp(delta A) and come out
# 1e-4 of the largest; at gradcheck's default step (1e-6) the rounding noise of the differences
# (1e-9) is 1e-5 of them. A step of 1e-5 cuts that tenfold; a wrong gradient is off by O(1).
STEPS = {"dt_proj": 1e-5, "dt_bias": 1e-5, "A_log": 1e-5}


def small_layer(rng, num_scans=4, D=4):
    return randomize(init_ss2d_layer(rng, D, num_scans=num_scans, N=3, expand=2, dt_rank=2), rng)


# ------------------------------------------------------------------------------------------------
# CrossScan and CrossMerge


def test_cross_scan_orders_and_adjoint(rng):
    x = np.arange(6, dtype=np.float64).reshape(1, 6, 1)  # token ids of the 2 x 3 grid
    xs, _ = cross_scan(x, grid=GRID, scans=SCANS)
    # row, row_reverse, col, col_reverse
    want = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 3, 1, 4, 2, 5], [5, 2, 4, 1, 3, 0]]
    np.testing.assert_array_equal(xs[0, :, :, 0], want)
    # <CrossScan(x), ys> = <x, CrossMerge(ys)>: CrossMerge is the transpose of CrossScan
    x = rng.standard_normal((2, 6, 3))
    ys = rng.standard_normal((2, 4, 6, 3))
    lhs = np.sum(cross_scan(x, grid=GRID, scans=SCANS)[0] * ys)
    rhs = np.sum(x * cross_merge(ys, grid=GRID, scans=SCANS)[0])
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))
    # merging an un-mixed cross-scan counts every token once per scan
    assert_within("merge(scan(x))", cross_merge(cross_scan(x, grid=GRID)[0], grid=GRID)[0], 4 * x, 1e-14)


def test_cross_scan_and_merge_gradcheck(rng):
    x = rng.standard_normal((2, 6, 3))
    ys = rng.standard_normal((2, 3, 6, 3))
    scans = ("row", "col", "col_reverse")
    gradcheck(lambda x: cross_scan(x, grid=GRID, scans=scans), cross_scan_backward, {"x": x}, rng=rng,
              name="cross_scan")
    gradcheck(lambda ys: cross_merge(ys, grid=GRID, scans=scans), cross_merge_backward, {"ys": ys}, rng=rng,
              name="cross_merge")


# ------------------------------------------------------------------------------------------------
# the layer


def explicit_ss2d(params, x, grid, scans):
    """(3)-(8) with one selective scan per order, in its order, and an explicit un-permutation."""
    silu = lambda a: a / (1 + np.exp(-a))  # noqa: E731
    E = params["in_proj"].shape[1] // 2
    xz = x @ params["in_proj"]
    u, z = silu(xz[..., :E]), xz[..., E:]
    y = np.zeros(u.shape)
    for scan, p in zip(scans, params["scans"]):
        perm = scan_permutation(grid, scan)
        u_s = u[:, perm]  # (B, T, E) in the order of the scan
        N = p["A_log"].shape[1]
        R = p["x_proj"].shape[1] - 2 * N
        xbc = u_s @ p["x_proj"]
        delta = xbc[..., :R] @ p["dt_proj"]
        y_s, _, _ = selective_scan_recurrent(
            u_s.transpose(0, 2, 1), delta.transpose(0, 2, 1), -np.exp(p["A_log"]),
            xbc[..., R : R + N].transpose(0, 2, 1), xbc[..., R + N :].transpose(0, 2, 1),
            p["D"], None, p["dt_bias"], True,
        )
        for i, token in enumerate(perm):
            y[:, token] += y_s[:, :, i]  # step i of the scan is token perm[i]
    mu = y.mean(-1, keepdims=True)
    yn = (y - mu) / np.sqrt(y.var(-1, keepdims=True) + 1e-5) * params["out_norm"]["weight"] + params["out_norm"]["bias"]
    return (yn * silu(z)) @ params["out_proj"]


@pytest.mark.parametrize("scans", [("row",), ("row", "row_reverse"), SCANS, ("col_reverse", "row")])
def test_layer_is_one_scan_at_a_time(scans, rng):
    params = small_layer(rng, num_scans=len(scans))
    x = rng.standard_normal((2, 6, 4))
    want = explicit_ss2d(params, x, GRID, scans)
    for mode in MIXER_FORMS:
        y, _ = ss2d_layer(params, x, grid=GRID, scans=scans, mode=mode, chunk_size=4)
        assert_within(f"y ({mode})", y, want, 1e-12)


@pytest.mark.parametrize("mode", MIXER_FORMS)
def test_layer_gradcheck(mode, rng):
    params = small_layer(rng)
    x = rng.standard_normal((2, 6, 4))
    gradcheck_tree(ss2d_layer, ss2d_layer_backward, params, {"x": x}, rng=rng, name="ss2d_layer", steps=STEPS,
                   grid=GRID, scans=SCANS, mode=mode, chunk_size=4)


def test_block_and_classifier_gradcheck(rng):
    block = randomize(init_ss2d_block(rng, 4, num_scans=2, N=3, dt_rank=2), rng)
    x = rng.standard_normal((2, 6, 4))
    gradcheck_tree(ss2d_block, ss2d_block_backward, block, {"x": x}, rng=rng, name="ss2d_block", steps=STEPS, grid=GRID,
                   scans=("row", "col"))
    # the classifier: one block (the block is checked above at the full tolerance), every parameter
    clf = randomize(init_ss2d_classifier(rng, in_features=3, dim=4, num_classes=3, num_layers=1, num_scans=4, N=3,
                                         dt_rank=2), rng)
    feats = rng.standard_normal((2, 6, 3))
    gradcheck_tree(ss2d_forward, ss2d_backward, clf, {"x": feats}, rng=rng, name="ss2d_classifier", returns_dx=False,
                   steps={**STEPS, "x_proj": 1e-5}, grid=GRID, scans=SCANS)
    loss, grads, logits = ss2d_loss_and_grads(clf, feats, np.array([0, 2]), grid=GRID, scans=SCANS)
    assert np.isfinite(loss) and logits.shape == (2, 3) and grads["head"]["W"].shape == (4, 3)


def test_one_scan_is_causal_and_two_are_not(rng):
    """With one "row" scan, token t reads tokens 0..t only; "row" + "row_reverse" reads them all."""
    x = rng.standard_normal((1, 6, 4))
    x2 = x.copy()
    x2[:, 4] += 1.0  # change token 4
    for n, changed in ((1, [4, 5]), (2, [0, 1, 2, 3, 4, 5])):
        params = small_layer(np.random.default_rng(1), num_scans=n)
        y = ss2d_layer(params, x, grid=GRID, scans=scans_for(n))[0]
        y2 = ss2d_layer(params, x2, grid=GRID, scans=scans_for(n))[0]
        moved = np.flatnonzero(np.abs(y2 - y).max(axis=(0, 2)) > 1e-12)
        np.testing.assert_array_equal(moved, changed)


def test_errors(rng):
    params = small_layer(rng, num_scans=2)
    x = rng.standard_normal((1, 6, 4))
    with pytest.raises(ValueError, match="scans"):
        ss2d_layer(params, x, grid=GRID, scans=SCANS)  # 4 orders, parameters for 2
    with pytest.raises(ValueError, match="grid"):
        ss2d_layer(params, x, grid=(2, 2), scans=("row", "col"))
    with pytest.raises(ValueError, match="mode"):
        ss2d_layer(params, x, grid=GRID, scans=("row", "col"), mode="fast")
    with pytest.raises(ValueError, match="x"):
        ss2d_layer(params, x[..., :3], grid=GRID, scans=("row", "col"))
    with pytest.raises(ValueError, match="scans"):
        cross_scan(x, grid=GRID, scans=("row", "row"))
