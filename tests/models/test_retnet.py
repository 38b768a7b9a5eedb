"""RetNet's multi-scale retention layer and block: finite differences on every parameter, every
form, the paper's normalised parallel form, and the decode against the chunked forward."""

import math

import numpy as np
import pytest

from ref.models.retnet import (
    init_retention_layer,
    init_retnet_block,
    retention_layer,
    retention_layer_backward,
    retention_layer_step,
    retnet_block,
    retnet_block_backward,
    retnet_block_step,
    retnet_gammas,
)
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.gla  # retention is the fixed-decay member of the GLA family


def paper_parallel_retention(p, x):
    """The paper's parallel form with all its normalisations (section 2.2), none of ref.nn /
    ref.mixers: D_nm = gamma^(n-m) / sqrt(sum_i gamma^(n-i)), R = (Q K^T / sqrt(K)) ⊙ D,
    R_nm / max(|sum_m R_nm|, 1), then per-head GroupNorm, the swish gate and W_o."""
    B, T, _ = x.shape
    _, H, K = p["W_q"].shape
    V = p["W_v"].shape[2]
    q = np.einsum("btd,dhk->bhtk", x, p["W_q"])
    k = np.einsum("btd,dhk->bhtk", x, p["W_k"])
    v = np.einsum("btd,dhv->bhtv", x, p["W_v"])
    gammas = 1 - 2.0 ** (-5 - np.arange(H))
    n, m = np.arange(T)[:, None], np.arange(T)[None, :]
    Dm = np.where(n >= m, gammas[:, None, None] ** np.maximum(n - m, 0), 0.0)  # (H, T, T)
    Dm = Dm / np.sqrt(Dm.sum(-1, keepdims=True))
    R = (q @ np.swapaxes(k, -1, -2)) / math.sqrt(K) * Dm  # (B, H, T, T)
    R = R / np.maximum(np.abs(R.sum(-1, keepdims=True)), 1)
    o = np.moveaxis(R @ v, 1, 2)  # (B, T, H, V)
    mu, var = o.mean(-1, keepdims=True), o.var(-1, keepdims=True)
    y = ((o - mu) / np.sqrt(var + 1e-6)).reshape(B, T, H * V) * p["norm_weight"]
    g = x @ p["W_g"]
    return (g / (1 + np.exp(-g)) * y) @ p["W_o"]


def test_decays_are_one_minus_two_to_minus_five_minus_h():
    assert np.array_equal(retnet_gammas(4), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256])


@pytest.mark.parametrize("rotary", [False, True])
def test_layer_gradcheck_every_parameter(rng, rotary):
    params = randomize(init_retention_layer(rng, 4, num_heads=2), rng)  # K = 2, V = 4 per head
    x = rng.standard_normal((2, 5, 4))
    gradcheck_tree(
        retention_layer, retention_layer_backward, params, {"x": x}, rng=rng, name="msr", chunk_size=2, rotary=rotary
    )


def test_block_gradcheck_every_parameter(rng):
    params = randomize(init_retnet_block(rng, 4, num_heads=2, mlp_hidden=5), rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_tree(
        retnet_block, retnet_block_backward, params, {"x": x}, rng=rng, name="retnet", chunk_size=3, rotary=True
    )


def test_layer_equals_the_papers_normalised_parallel_form(rng):
    """The paper's extra normalisations scale whole (position, head) rows, which GroupNorm undoes:
    equal up to GroupNorm's eps."""
    params = randomize(init_retention_layer(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((2, 9, 8))
    y, _ = retention_layer(params, x, mode="parallel")
    assert_within("y", y, paper_parallel_retention(params, x), 1e-4 * np.abs(y).max())


@pytest.mark.parametrize("rotary", [False, True])
def test_every_form_gives_the_same_block(rng, rotary):
    params = randomize(init_retnet_block(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((2, 9, 8))
    dy = rng.standard_normal(x.shape)
    y_ref, c_ref = retnet_block(params, x, mode="recurrent", rotary=rotary)
    dx_ref, g_ref = retnet_block_backward(params, c_ref, dy)
    for mode, chunk_size in (("parallel", 64), ("chunked", 1), ("chunked", 4), ("chunked", 64)):
        y, c = retnet_block(params, x, mode=mode, chunk_size=chunk_size, rotary=rotary)
        dx, g = retnet_block_backward(params, c, dy)
        assert_within(f"{mode}/{chunk_size}: y", y, y_ref, 1e-12)
        assert_within(f"{mode}/{chunk_size}: dx", dx, dx_ref, 1e-11)
        for key in g["mixer"]:
            assert_within(f"{mode}/{chunk_size}: d{key}", g["mixer"][key], g_ref["mixer"][key], 1e-10)


@pytest.mark.parametrize("rotary", [False, True])
def test_decode_step_by_step_equals_the_chunked_forward(rng, rotary):
    params = randomize(init_retnet_block(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((2, 10, 8))
    y, _ = retnet_block(params, x, chunk_size=4, rotary=rotary)
    state = None
    for t in range(x.shape[1]):
        y_t, state = retnet_block_step(params, x[:, t], state, rotary=rotary)
        assert_within(f"step {t}", y_t, y[:, t], 1e-12)
    assert state["S"].shape == (2, 2, 4, 8) and state["t"] == 10  # (B, H, K, V), tokens seen
    y_layer, _ = retention_layer(params["mixer"], x, rotary=rotary)
    state = None
    for t in range(x.shape[1]):
        y_t, state = retention_layer_step(params["mixer"], x[:, t], state, rotary=rotary)
        assert_within(f"layer step {t}", y_t, y_layer[:, t], 1e-12)


def test_rotation_is_off_by_default_and_changes_the_layer(rng):
    params = randomize(init_retention_layer(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((1, 6, 8))
    plain, _ = retention_layer(params, x)
    assert np.array_equal(plain, retention_layer(params, x, rotary=False)[0])
    rotated, _ = retention_layer(params, x, rotary=True)
    assert_within("first token (position 0: no rotation)", rotated[:, 0], plain[:, 0], 1e-12)
    assert np.abs(rotated[:, 1:] - plain[:, 1:]).max() > 1e-3


def test_init_follows_the_paper(rng):
    D, H = 16, 4
    p = init_retention_layer(rng, D, H)
    assert p["W_q"].shape == p["W_k"].shape == (D, H, D // H)  # keys D wide
    assert p["W_v"].shape == (D, H, 2 * D // H) and p["W_g"].shape == (D, 2 * D)  # values 2D wide
    assert p["W_o"].shape == (2 * D, D) and np.all(p["norm_weight"] == 1)
    bound = 2**-2.5 * math.sqrt(6 / (D + D))
    assert 0.9 * bound < np.abs(p["W_q"]).max() <= bound
    block = init_retnet_block(rng, D, H)
    assert block["mlp"]["W_1"].shape == (D, 2 * D) and not block["norm1"]["bias"].any()


def test_bad_inputs_name_the_argument(rng):
    p = init_retention_layer(rng, 6, 2)  # K = 3 per head: odd
    x = rng.standard_normal((1, 4, 6))
    with pytest.raises(ValueError, match="rotary: needs an even per-head key dim K"):
        retention_layer(p, x, rotary=True)
    with pytest.raises(ValueError, match="rotary: expected True or False"):
        retention_layer(p, x, rotary=1)
    with pytest.raises(ValueError, match="params: expected a parameter 'W_g'"):
        retention_layer({k: v for k, v in p.items() if k != "W_g"}, x)
    with pytest.raises(ValueError, match="state: expected None or a dict"):
        retention_layer_step(p, x[:, 0], np.zeros((1, 2, 3, 6)))
    with pytest.raises(ValueError, match=r"state\['t'\]: expected the number of tokens seen"):
        retention_layer_step(p, x[:, 0], {"S": None, "t": -1})
    with pytest.raises(ValueError, match="initial_state: expected shape"):
        retention_layer_step(p, x[:, 0], {"S": np.zeros((1, 2, 3, 5)), "t": 0})
    with pytest.raises(ValueError, match="mode: expected one of"):
        retnet_block(init_retnet_block(rng, 6, 2), x, mode="fused_chunk")
    with pytest.raises(ValueError, match="H: expected an integer >= 1"):
        retnet_gammas(0)
