"""The multi-scan decay baseline of LightNet: scan orders, the mixer against an explicit loop over
scans, finite differences on the mixer, the layer, the block and the classifier, receptive fields
and the symmetries of the scan sets."""

import numpy as np
import pytest

from ref.mixers.gla import gla_recurrent
from ref.models.gla import gla_layer, init_gla_layer
from ref.models.lightnet import image_tokens
from ref.models.multiscan import (
    MIXER_FORMS,
    SCANS,
    init_multiscan_block,
    init_multiscan_classifier,
    init_multiscan_layer,
    multiscan_backward,
    multiscan_block,
    multiscan_block_backward,
    multiscan_forward,
    multiscan_gla,
    multiscan_gla_backward,
    multiscan_layer,
    multiscan_layer_backward,
    multiscan_loss_and_grads,
    scan_permutation,
    scans_for,
)
from ref.nn import gradcheck
from ref.tasks import load_digits
from ref.train import adam_init, adam_step
from tests.compare import assert_within
from tests.models.model_cases import GATE_STEPS, gradcheck_tree, randomize

pytestmark = pytest.mark.lightnet


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


def mixer_inputs(rng, B=2, grid=(2, 3), H=2, K=3, V=2):
    T = int(np.prod(grid))
    return {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "gk": log_sigmoid(rng.standard_normal((B, T, H, K))),
    }


# ------------------------------------------------------------------------------------------------
# scan orders


def test_scan_orders_on_a_small_grid():
    # tokens of the 2 x 3 grid, row-major:  0 1 2 / 3 4 5
    np.testing.assert_array_equal(scan_permutation((2, 3), "row"), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(scan_permutation((2, 3), "row_reverse"), [5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(scan_permutation((2, 3), "col"), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(scan_permutation((2, 3), "col_reverse"), [5, 2, 4, 1, 3, 0])
    np.testing.assert_array_equal(scan_permutation((5,), "col"), scan_permutation((5,), "row"))
    for grid in ((3, 4), (2, 3, 2)):
        for scan in SCANS:
            perm = scan_permutation(grid, scan)
            np.testing.assert_array_equal(np.sort(perm), np.arange(int(np.prod(grid))))
    assert scans_for(1) == ("row",) and scans_for(2) == ("row", "row_reverse") and scans_for(4) == SCANS


# ------------------------------------------------------------------------------------------------
# the mixer


def explicit_multiscan(q, k, v, gk, grid, scans, combine):
    """(2) one scan at a time, with explicit loops for the permutation and its inverse."""
    B, T, H, _ = q.shape
    o = np.zeros(v.shape)
    for scan in scans:
        perm = scan_permutation(grid, scan)
        o_s, _, _ = gla_recurrent(q[:, perm], k[:, perm], v[:, perm], None if gk is None else gk[:, perm])
        for i in range(T):
            o[:, perm[i]] += o_s[:, i]  # step i of the scan visited token perm[i]
    return o / len(scans) if combine == "mean" else o


@pytest.mark.parametrize("form", MIXER_FORMS)
@pytest.mark.parametrize("scans", [("row",), ("col",), ("row", "row_reverse"), SCANS, ("col_reverse", "row")])
def test_mixer_is_one_scan_at_a_time(form, scans, rng):
    grid = (3, 4)
    x = mixer_inputs(rng, grid=grid)
    for combine in ("mean", "sum"):
        o, _ = multiscan_gla(**x, grid=grid, scans=scans, combine=combine, form=form, chunk_size=5)
        want = explicit_multiscan(*x.values(), grid, scans, combine)
        assert_within("o", o, want, 1e-12)


def test_mixer_with_inputs_per_scan(rng):
    """q, k, gk (and v) with one entry per scan: scan s reads its own, as (2) with q_s, k_s, gk_s."""
    grid, scans = (2, 3), ("row", "col", "row_reverse")
    x = mixer_inputs(rng, grid=grid)
    per = {name: rng.standard_normal((3,) + a.shape) for name, a in x.items() if name != "v"}
    per["gk"] = log_sigmoid(per["gk"])
    o, cache = multiscan_gla(per["q"], per["k"], x["v"], per["gk"], grid=grid, scans=scans, form="recurrent")
    want = sum(
        explicit_multiscan(per["q"][s], per["k"][s], x["v"], per["gk"][s], grid, (scan,), "sum")
        for s, scan in enumerate(scans)
    ) / 3
    assert_within("o", o, want, 1e-12)
    grads = multiscan_gla_backward(rng.standard_normal(o.shape), cache)
    assert [g.shape for g in grads] == [per["q"].shape, per["k"].shape, x["v"].shape, per["gk"].shape]


def test_mixer_without_gates(rng):
    x = mixer_inputs(rng, grid=(2, 3))
    x["gk"] = None
    o, cache = multiscan_gla(**x, grid=(2, 3), scans=SCANS, form="chunked", chunk_size=4)
    assert_within("o", o, explicit_multiscan(*x.values(), (2, 3), SCANS, "mean"), 1e-12)
    dq, dk, dv, dgk = multiscan_gla_backward(rng.standard_normal(o.shape), cache)
    assert dgk is None and dq.shape == x["q"].shape


def test_one_row_scan_is_plain_gla(rng):
    x = mixer_inputs(rng, grid=(3, 3))
    o, _ = multiscan_gla(**x, grid=(3, 3), scans=("row",), form="recurrent")
    want, _, _ = gla_recurrent(x["q"], x["k"], x["v"], x["gk"])
    assert_within("o", o, want, 1e-13)


@pytest.mark.parametrize("form", MIXER_FORMS)
@pytest.mark.parametrize("scans", [("row",), ("row", "row_reverse"), SCANS])
def test_mixer_finite_differences(form, scans, rng):
    grid = (2, 3)
    inputs = mixer_inputs(rng, grid=grid)

    def fwd(q, k, v, gk):
        return multiscan_gla(q, k, v, gk, grid=grid, scans=scans, combine="sum", form=form, chunk_size=4)

    def bwd(do, cache):
        return dict(zip(("q", "k", "v", "gk"), multiscan_gla_backward(do, cache)))

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"multiscan_gla[{form}, {len(scans)} scans]")


def test_mixer_per_scan_finite_differences(rng):
    grid, scans = (3, 2), SCANS
    x = mixer_inputs(rng, grid=grid)
    inputs = {
        "q": rng.standard_normal((4,) + x["q"].shape),
        "k": rng.standard_normal((4,) + x["k"].shape),
        "v": x["v"],
        "gk": log_sigmoid(rng.standard_normal((4,) + x["gk"].shape)),
    }

    def fwd(q, k, v, gk):
        return multiscan_gla(q, k, v, gk, grid=grid, scans=scans, form="chunked", chunk_size=4)

    def bwd(do, cache):
        return dict(zip(("q", "k", "v", "gk"), multiscan_gla_backward(do, cache)))

    gradcheck(fwd, bwd, inputs, rng=rng, name="multiscan_gla[per scan]")


def influence(scans, grid, t, rng):
    """|d o_t / d v_s| per token s (summed over heads and value dims): which tokens token t reads."""
    x = mixer_inputs(rng, B=1, grid=grid)
    x["q"], x["k"] = np.abs(x["q"]) + 0.1, np.abs(x["k"]) + 0.1  # positive scores: no accidental zero
    o, cache = multiscan_gla(**x, grid=grid, scans=scans, form="recurrent")
    do = np.zeros(o.shape)
    do[:, t] = 1.0
    _, _, dv, _ = multiscan_gla_backward(do, cache)
    return np.abs(dv[0]).sum(axis=(1, 2))  # (T,)


def test_receptive_fields(rng):
    """One scan sees the tokens before t in its order; the forward and backward row scans together
    see every token; so do the four scans."""
    grid, t = (3, 4), 6  # token 6 = row 1, column 2
    seen = influence(("row",), grid, t, rng) > 0
    np.testing.assert_array_equal(seen, np.arange(12) <= t)
    col_rank = np.argsort(scan_permutation(grid, "col"))  # the step at which "col" visits each token
    seen = influence(("col",), grid, t, rng) > 0
    np.testing.assert_array_equal(seen, col_rank <= col_rank[t])
    for scans in (("row", "row_reverse"), SCANS):
        assert (influence(scans, grid, t, rng) > 0).all()


def test_mixer_bad_input(rng):
    x = mixer_inputs(rng, grid=(2, 3))
    with pytest.raises(ValueError, match=r"grid: expected axis lengths whose product is the number of tokens T = 6"):
        multiscan_gla(**x, grid=(2, 2))
    with pytest.raises(ValueError, match="scans: expected one of 'row', 'row_reverse', 'col', 'col_reverse'"):
        multiscan_gla(**x, grid=(2, 3), scans=("row", "diagonal"))
    with pytest.raises(ValueError, match="scans: expected a non-empty tuple"):
        multiscan_gla(**x, grid=(2, 3), scans="row")
    with pytest.raises(ValueError, match="scans: expected distinct scan orders"):
        multiscan_gla(**x, grid=(2, 3), scans=("row", "row"))
    with pytest.raises(ValueError, match="combine: expected one of 'mean', 'sum'"):
        multiscan_gla(**x, grid=(2, 3), combine="max")
    with pytest.raises(ValueError, match="form: expected one of 'recurrent', 'parallel', 'chunked'"):
        multiscan_gla(**x, grid=(2, 3), form="global")
    with pytest.raises(ValueError, match=r"k: expected shape \(B, T, H, K\) = \(2, 6, 2, 3\) \(from q\)"):
        multiscan_gla(x["q"], x["k"][:, :5], x["v"], x["gk"], grid=(2, 3))
    with pytest.raises(ValueError, match=r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(2, 6, 2\) \(from q\)"):
        multiscan_gla(x["q"], x["k"], x["v"][:, :, :1], x["gk"], grid=(2, 3))
    with pytest.raises(ValueError, match=r"q: expected one entry per scan, \(S, ...\) with S = 4"):
        multiscan_gla(np.stack([x["q"]] * 3), x["k"], x["v"], x["gk"], grid=(2, 3))
    o, cache = multiscan_gla(**x, grid=(2, 3))
    with pytest.raises(ValueError, match=r"do: expected shape \(B, T, H, V\) = \(2, 6, 2, 2\)"):
        multiscan_gla_backward(np.zeros((2, 6, 2, 3)), cache)
    with pytest.raises(ValueError, match="num_scans: expected 1, 2 or 4, got 3"):
        scans_for(3)


# ------------------------------------------------------------------------------------------------
# the layer, the block, the classifier


@pytest.mark.parametrize("form", MIXER_FORMS)
@pytest.mark.parametrize("num_scans", [None, 4])
def test_layer_finite_differences(form, num_scans, rng):
    params = randomize(init_multiscan_layer(rng, 8, num_heads=2, gate_rank=3, num_scans=num_scans), rng)
    x = rng.standard_normal((2, 6, 8))
    gradcheck_tree(
        multiscan_layer, multiscan_layer_backward, params, {"x": x}, rng=rng,
        name=f"multiscan_layer[{form}, {num_scans}]", steps=GATE_STEPS, grid=(2, 3), scans=SCANS, form=form,
        chunk_size=4,
    )


@pytest.mark.parametrize("options", [{"decay_gate": False}, {"output_gate": False}])
def test_layer_variants_finite_differences(options, rng):
    params = randomize(init_multiscan_layer(rng, 8, num_heads=2, gate_rank=2, num_scans=2, **options), rng)
    x = rng.standard_normal((1, 6, 8))
    gradcheck_tree(
        multiscan_layer, multiscan_layer_backward, params, {"x": x}, rng=rng, name=f"multiscan_layer{options}",
        steps=GATE_STEPS, grid=(3, 2), scans=("row", "col_reverse"), combine="sum", form="recurrent",
    )


def test_layer_parameters(rng):
    shared = init_multiscan_layer(rng, 8, num_heads=2)
    assert set(shared) == set(init_gla_layer(rng, 8, num_heads=2))
    per_scan = init_multiscan_layer(rng, 8, num_heads=2, num_scans=4)
    assert len(per_scan["scans"]) == 4
    assert all(set(p) == {"W_q", "W_k", "W_a1", "W_a2", "b_a"} for p in per_scan["scans"])
    assert not np.allclose(per_scan["scans"][0]["W_q"], per_scan["scans"][1]["W_q"])  # drawn afresh per scan
    assert "W_q" not in per_scan and {"W_v", "W_r", "b_r", "norm_weight", "W_o"} <= set(per_scan)


def test_one_row_scan_layer_is_the_gla_layer(rng):
    params = randomize(init_gla_layer(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((2, 6, 8))
    want, _ = gla_layer(params, x, mode="chunked", chunk_size=4)
    y, _ = multiscan_layer(params, x, grid=(2, 3), scans=("row",), form="chunked", chunk_size=4)
    assert_within("y", y, want, 1e-12)
    one = {key: value for key, value in params.items() if key not in ("W_q", "W_k", "W_a1", "W_a2", "b_a")}
    one["scans"] = [{key: params[key] for key in ("W_q", "W_k", "W_a1", "W_a2", "b_a")}]
    y, _ = multiscan_layer(one, x, grid=(2, 3), scans=("row",), form="recurrent")
    assert_within("y (one scan's own parameters)", y, want, 1e-12)


def test_block_finite_differences(rng):
    params = randomize(init_multiscan_block(rng, 8, num_heads=2, gate_rank=3, num_scans=2), rng)
    x = rng.standard_normal((2, 6, 8))
    gradcheck_tree(
        multiscan_block, multiscan_block_backward, params, {"x": x}, rng=rng, name="multiscan_block",
        steps=GATE_STEPS, grid=(3, 2), scans=("row", "row_reverse"), form="recurrent",
    )


@pytest.mark.parametrize("use_tpe, num_layers, scans", [(False, 2, ("row", "col")), (True, 1, SCANS)])
def test_classifier_finite_differences(use_tpe, num_layers, scans, rng):
    grid = (2, 3)
    params = init_multiscan_classifier(
        rng, in_features=3, dim=8, num_classes=4, grid=grid, num_layers=num_layers, num_heads=2, gate_rank=2,
        mlp_hidden=3,
        num_scans=len(scans), use_tpe=use_tpe,
    )
    params = randomize(params, rng)
    x = rng.standard_normal((2, 6, 3))
    gradcheck_tree(
        multiscan_forward, multiscan_backward, params, {"x": x}, rng=rng, name="multiscan_classifier",
        returns_dx=False, steps=GATE_STEPS, grid=grid, scans=scans, form="chunked", chunk_size=4,
    )


def classifier_logits(params, images, num_scans):
    tokens, grid = image_tokens(np.ascontiguousarray(images))
    logits, _ = multiscan_forward(params, tokens, grid=grid, scans=scans_for(num_scans), form="recurrent")
    return logits


def test_shared_scans_are_blind_to_symmetries(rng):
    """With parameters shared by the scans, the four scans map onto themselves under a transpose of
    a square grid (row <-> col) and a 180-degree rotation (each scan <-> its reverse): the 4-scan
    classifier cannot tell an image from its transpose or its rotation (a "6" from a "9"). The two
    row scans are blind to the rotation only. Parameters per scan break both symmetries."""
    side = 3
    images = rng.standard_normal((2, side, side, 2))
    transposed, rotated = images.transpose(0, 2, 1, 3), images[:, ::-1, ::-1]
    kw = {"in_features": 2, "dim": 8, "num_classes": 3, "grid": (side, side), "num_layers": 1}
    shared = randomize(init_multiscan_classifier(rng, **kw), rng)
    original = {n: classifier_logits(shared, images, n) for n in (1, 2, 4)}
    assert_within("4 shared scans, transposed", classifier_logits(shared, transposed, 4), original[4], 1e-12)
    assert_within("4 shared scans, rotated", classifier_logits(shared, rotated, 4), original[4], 1e-12)
    assert_within("2 shared scans, rotated", classifier_logits(shared, rotated, 2), original[2], 1e-12)
    assert np.abs(classifier_logits(shared, transposed, 2) - original[2]).max() > 1e-6
    assert np.abs(classifier_logits(shared, rotated, 1) - original[1]).max() > 1e-6
    own = randomize(init_multiscan_classifier(rng, num_scans=4, **kw), rng)
    for variant in (transposed, rotated):
        assert np.abs(classifier_logits(own, variant, 4) - classifier_logits(own, images, 4)).max() > 1e-6


def test_learns_the_digits(rng):
    X_train, y_train, X_test, y_test = load_digits(test_fraction=0.2, rng=0)
    tokens, grid = image_tokens(X_train.reshape(-1, 8, 8) / 16, patch=2)  # 4 x 4 tokens of 2 x 2 pixels
    tokens_test, _ = image_tokens(X_test.reshape(-1, 8, 8) / 16, patch=2)
    params = init_multiscan_classifier(rng, in_features=4, dim=16, num_classes=10, grid=grid, num_layers=1, num_scans=2)
    state = adam_init(params)
    options = {"grid": grid, "scans": scans_for(2), "form": "recurrent"}
    for _ in range(120):
        batch = rng.integers(0, len(y_train), 64)
        _, grads, _ = multiscan_loss_and_grads(params, tokens[batch], y_train[batch], **options)
        params, state = adam_step(params, grads, state, lr=1e-2)
    logits, _ = multiscan_forward(params, tokens_test, **options)
    assert (logits.argmax(-1) == y_test).mean() > 0.7


def test_classifier_bad_input(rng):
    params = init_multiscan_classifier(rng, in_features=3, dim=8, num_classes=2, grid=(2, 3), num_layers=1, num_scans=2)
    x = rng.standard_normal((2, 6, 3))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, F\) with F = 3"):
        multiscan_forward(params, rng.standard_normal((2, 6, 4)), grid=(2, 3), scans=scans_for(2))
    with pytest.raises(ValueError, match="x: expected dtype float64"):
        multiscan_forward(params, x.astype(np.float32), grid=(2, 3), scans=scans_for(2))
    with pytest.raises(ValueError, match="grid: expected axis lengths whose product"):
        multiscan_forward(params, x, grid=(3, 3), scans=scans_for(2))
    with pytest.raises(ValueError, match=r"scans: expected 2 scan orders \(the layer has parameters for 2\)"):
        multiscan_forward(params, x, grid=(2, 3), scans=SCANS)
    with pytest.raises(ValueError, match="params: expected a classifier"):
        multiscan_forward({"embed": params["embed"]}, x, grid=(2, 3))
    block = params["blocks"][0]
    h = rng.standard_normal((1, 6, 8))
    with pytest.raises(ValueError, match="params: expected a block"):
        multiscan_block({"attn": block["attn"]}, h, grid=(2, 3))
    layer = block["attn"]
    with pytest.raises(ValueError, match=r"params/W_o: expected shape \(H\*V, D\)"):
        multiscan_layer({**layer, "W_o": np.zeros((8, 7))}, h, grid=(2, 3), scans=scans_for(2))
    bad = {**layer, "scans": [layer["scans"][0], {**layer["scans"][1], "W_k": np.zeros((8, 2, 3))}]}
    with pytest.raises(ValueError, match=r"params/scans/1/W_k: expected shape \(D, H, K\) = \(8, 2, 2\)"):
        multiscan_layer(bad, h, grid=(2, 3), scans=scans_for(2))
    with pytest.raises(ValueError, match="grid: expected a non-empty tuple"):
        init_multiscan_classifier(rng, in_features=3, dim=8, num_classes=2, grid=6)
