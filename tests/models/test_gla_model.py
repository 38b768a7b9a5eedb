"""The GLA layer and block: finite differences on every parameter, every mixer form, an independent
loop over the paper's equations, and the token-by-token decode against the chunked forward."""

import math

import numpy as np
import pytest

from ref.models.gla import (
    GATE_RANK,
    MIXER_FORMS,
    TAU,
    gla_block,
    gla_block_backward,
    gla_block_step,
    gla_layer,
    gla_layer_backward,
    gla_layer_step,
    init_gla_block,
    init_gla_layer,
)
from tests.compare import assert_within
from tests.models.model_cases import GATE_STEPS, gradcheck_tree, randomize

pytestmark = pytest.mark.gla


def naive_gla_layer(p, x):
    """The layer straight from the paper's equations, with loops and none of ref.nn / ref.mixers:
    alpha = sigmoid(x W_a1 W_a2 + b_a)^(1/tau), S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,
    o_t = q_t S_t / sqrt(K), y = (LayerNorm_per_head(o) * norm_weight * swish(x W_r + b_r)) W_o."""
    B, T, _ = x.shape
    _, H, K = p["W_q"].shape
    V = p["W_v"].shape[2]
    q = np.einsum("btd,dhk->bthk", x, p["W_q"])
    k = np.einsum("btd,dhk->bthk", x, p["W_k"])
    v = np.einsum("btd,dhv->bthv", x, p["W_v"])
    a = np.einsum("btr,rhk->bthk", x @ p["W_a1"], p["W_a2"]) + p["b_a"]
    alpha = (1 / (1 + np.exp(-a))) ** (1 / 16)
    o = np.zeros((B, T, H, V))
    for b in range(B):
        for h in range(H):
            S = np.zeros((K, V))
            for t in range(T):
                S = alpha[b, t, h][:, None] * S + np.outer(k[b, t, h], v[b, t, h])
                o[b, t, h] = q[b, t, h] @ S / math.sqrt(K)
    mu, var = o.mean(-1, keepdims=True), o.var(-1, keepdims=True)
    n = ((o - mu) / np.sqrt(var + 1e-5)).reshape(B, T, H * V) * p["norm_weight"]
    r = x @ p["W_r"] + p["b_r"]
    return (n * r / (1 + np.exp(-r))) @ p["W_o"]


def test_layer_gradcheck_every_parameter(rng):
    params = randomize(init_gla_layer(rng, 8, num_heads=2, gate_rank=3), rng)
    x = rng.standard_normal((2, 5, 8))
    gradcheck_tree(
        gla_layer, gla_layer_backward, params, {"x": x}, rng=rng, name="gla_layer", steps=GATE_STEPS, chunk_size=2
    )


def test_linear_attention_layer_gradcheck(rng):
    """Without the forget gate and the output gate: plain linear attention + GroupNorm + W_o."""
    params = randomize(init_gla_layer(rng, 6, num_heads=1, decay_gate=False, output_gate=False), rng)
    assert sorted(params) == ["W_k", "W_o", "W_q", "W_v", "norm_weight"]
    x = rng.standard_normal((2, 4, 6))
    gradcheck_tree(gla_layer, gla_layer_backward, params, {"x": x}, rng=rng, name="linear", mode="recurrent")


def test_block_gradcheck_every_parameter(rng):
    params = randomize(init_gla_block(rng, 8, num_heads=2, gate_rank=2, mlp_hidden=5), rng)
    x = rng.standard_normal((1, 5, 8))
    gradcheck_tree(
        gla_block, gla_block_backward, params, {"x": x}, rng=rng, name="gla_block", steps=GATE_STEPS, chunk_size=3
    )


def test_layer_equals_the_paper_equations_loop(rng):
    params = randomize(init_gla_layer(rng, 8, num_heads=2, gate_rank=4), rng)
    x = rng.standard_normal((2, 7, 8))
    y, _ = gla_layer(params, x, chunk_size=3)
    assert_within("y", y, naive_gla_layer(params, x), 1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_every_mixer_form_gives_the_same_layer(rng, chunk_size):
    params = randomize(init_gla_block(rng, 8, num_heads=2, gate_rank=4), rng)
    x = rng.standard_normal((2, 9, 8))
    dy = rng.standard_normal(x.shape)
    y_ref, c_ref = gla_block(params, x, mode="recurrent")
    dx_ref, g_ref = gla_block_backward(params, c_ref, dy)
    for mode in ("parallel", "chunked"):
        y, c = gla_block(params, x, mode=mode, chunk_size=chunk_size)
        dx, g = gla_block_backward(params, c, dy)
        assert_within(f"{mode}: y", y, y_ref, 1e-12)
        assert_within(f"{mode}: dx", dx, dx_ref, 1e-11)
        for key in g["mixer"]:
            assert_within(f"{mode}: d{key}", g["mixer"][key], g_ref["mixer"][key], 1e-10)


def test_decode_step_by_step_equals_the_chunked_forward(rng):
    params = randomize(init_gla_block(rng, 8, num_heads=2, gate_rank=4), rng)
    x = rng.standard_normal((3, 11, 8))
    y, _ = gla_block(params, x, chunk_size=4)
    state, steps = None, []
    for t in range(x.shape[1]):
        y_t, state = gla_block_step(params, x[:, t], state)
        steps.append(y_t)
    assert state.shape == (3, 2, 2, 4)  # (B, H, K, V): constant in T
    assert_within("decode", np.stack(steps, axis=1), y, 1e-12)
    # the layer alone too
    y_layer, _ = gla_layer(params["mixer"], x, chunk_size=5)
    state = None
    for t in range(x.shape[1]):
        y_t, state = gla_layer_step(params["mixer"], x[:, t], state)
        assert_within(f"layer step {t}", y_t, y_layer[:, t], 1e-12)


def test_init_follows_the_paper(rng):
    D, H = 32, 4
    p = init_gla_layer(rng, D, H)
    assert p["W_q"].shape == p["W_k"].shape == (D, H, D // (2 * H))  # keys D/2 wide in all
    assert p["W_v"].shape == (D, H, D // H)  # values D wide
    assert p["W_a1"].shape == (D, GATE_RANK) and p["W_a2"].shape == (GATE_RANK, H, D // (2 * H))
    assert TAU == 16 and not p["b_a"].any() and not p["b_r"].any()
    assert np.all(p["norm_weight"] == 1)
    bound = 2**-2.5 * math.sqrt(6 / (D + D // 2))  # xavier_uniform, gain 2^-2.5
    assert np.abs(p["W_q"]).max() <= bound and np.abs(p["W_q"]).max() > 0.9 * bound
    assert abs(p["W_o"].std() - 0.02) < 0.005
    block = init_gla_block(rng, 12, 2)
    assert block["mlp"]["W_gate"].shape == (12, 32)  # int(8 D / 3)
    assert block["mixer"]["W_q"].dtype == np.float64
    assert init_gla_block(rng, 12, 2, dtype=np.float32)["mlp"]["W_up"].dtype == np.float32


def test_float32_follows_float64(rng):
    p64 = randomize(init_gla_block(rng, 8, num_heads=2, gate_rank=4), rng)
    p32 = {k: ({kk: vv.astype(np.float32) for kk, vv in v.items()}) for k, v in p64.items()}
    x = rng.standard_normal((2, 6, 8))
    y64, _ = gla_block(p64, x)
    y32, c32 = gla_block(p32, x.astype(np.float32))
    assert y32.dtype == np.float32
    assert_within("y", y32, y64, 1e-4)
    dx, grads = gla_block_backward(p32, c32, np.ones_like(y32))
    assert dx.dtype == np.float32 and grads["mixer"]["W_a1"].dtype == np.float32


def test_bad_inputs_name_the_argument(rng):
    p = init_gla_layer(rng, 8, 2, gate_rank=3)
    x = rng.standard_normal((2, 5, 8))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\) with D = 8"):
        gla_layer(p, x[..., :7])
    with pytest.raises(ValueError, match="x: expected dtype float64"):
        gla_layer(p, x.astype(np.float32))
    with pytest.raises(ValueError, match="x: expected 3 axes"):
        gla_layer(p, x[0])
    with pytest.raises(ValueError, match="mode: expected one of"):
        gla_layer(p, x, mode="fused")
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        gla_layer(p, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"params/W_k: expected shape \(D, H, K\)"):
        gla_layer({**p, "W_k": p["W_k"][:, :, :1]}, x)
    half_gate = {k: v for k, v in p.items() if k != "b_a"}
    with pytest.raises(ValueError, match="params: expected a parameter 'b_a'"):
        gla_layer(half_gate, x)
    with pytest.raises(ValueError, match=r"params: unexpected parameters \['b_r'\]"):
        gla_layer({k: v for k, v in p.items() if k != "W_r"}, x)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of the key width"):
        init_gla_layer(rng, 8, 3)
    y, cache = gla_layer(p, x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, D\) = \(2, 5, 8\)"):
        gla_layer_backward(p, cache, y[:, :4])
    with pytest.raises(ValueError, match="x_t: expected 2 axes"):
        gla_block_step(init_gla_block(rng, 8, 2), x)
    with pytest.raises(ValueError, match=r"params: expected a block"):
        gla_block({"mixer": p}, x)
    assert set(MIXER_FORMS) == {"recurrent", "parallel", "chunked"}
