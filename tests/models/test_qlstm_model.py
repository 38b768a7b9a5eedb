"""The Languini quasi-LSTM layer and block: finite differences on every parameter, every form and
backend, an independent loop over Languini's equations, the decode step, the LM scaffold."""

import numpy as np
import pytest

from ref.models.qlstm import (
    init_qlstm_block,
    init_qlstm_layer,
    qlstm_block,
    qlstm_block_backward,
    qlstm_block_step,
    qlstm_layer,
    qlstm_layer_backward,
    qlstm_layer_step,
)
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.rnn

# (options, label): every way of running the cell; forms agree to a few ulps of O(1) values
MODES = [
    ({"mode": "block_parallel", "block_length": 3}, "block_parallel/numpy"),
    ({"mode": "block_parallel", "block_length": 4, "backend": "numba"}, "block_parallel/numba"),
    ({"mode": "recurrent"}, "recurrent/numpy"),
    ({"mode": "recurrent", "backend": "numba"}, "recurrent/numba"),
    ({"mode": "chunked", "chunk_size": 2}, "chunked"),
    ({"mode": "parallel"}, "parallel"),
]


def naive_qlstm_layer(p, x):
    """Languini's MultiHeadQuasiLSTMCell with loops and none of ref.nn / ref.mixers."""
    B, T, _ = x.shape
    _, H, K = p["W_f"].shape
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    pre = {g: np.einsum("btd,dhk->bthk", x, p["W_" + g]) + p["b_" + g] for g in "fizo"}
    h = np.zeros((B, T, H, K))
    for b in range(B):
        for n in range(H):
            for k in range(K):
                c = 0.0
                for t in range(T):
                    f = sig(pre["f"][b, t, n, k] + 1.0)
                    c = f * c + sig(pre["i"][b, t, n, k]) * np.tanh(pre["z"][b, t, n, k])
                    h[b, t, n, k] = sig(pre["o"][b, t, n, k]) * np.tanh(c)
    return h.reshape(B, T, H * K) @ p["W_post"] + p["b_post"]


def test_layer_equals_languini_loop(rng):
    params = randomize(init_qlstm_layer(rng, 6, num_heads=2, head_dim=5), rng)
    x = rng.standard_normal((2, 7, 6))
    want = naive_qlstm_layer(params, x)
    for options, label in MODES:
        y, _ = qlstm_layer(params, x, **options)
        assert_within(label, y, want, 1e-12)


@pytest.mark.parametrize("options, label", MODES[:4])
def test_layer_gradcheck_every_parameter(options, label, rng):
    params = randomize(init_qlstm_layer(rng, 6, num_heads=3), rng)
    x = rng.standard_normal((2, 5, 6))
    gradcheck_tree(qlstm_layer, qlstm_layer_backward, params, {"x": x}, rng=rng, name=label, **options)


def test_block_gradcheck_every_parameter(rng):
    params = randomize(init_qlstm_block(rng, 6, num_heads=2, mlp_hidden=7, num_layers=2), rng)
    x = rng.standard_normal((2, 5, 6))
    gradcheck_tree(qlstm_block, qlstm_block_backward, params, {"x": x}, rng=rng, name="qlstm_block", block_length=2)


def test_every_mode_gives_the_same_block_and_gradients(rng):
    params = randomize(init_qlstm_block(rng, 8, num_heads=2), rng)
    x = rng.standard_normal((2, 11, 8))
    dy = rng.standard_normal((2, 11, 8))
    y0, c0 = qlstm_block(params, x, mode="recurrent")
    dx0, g0 = qlstm_block_backward(params, c0, dy)
    for options, label in MODES:
        y, cache = qlstm_block(params, x, **options)
        dx, grads = qlstm_block_backward(params, cache, dy)
        assert_within(f"{label}: y", y, y0, 1e-12)
        assert_within(f"{label}: dx", dx, dx0, 1e-12)
        for name in g0["qlstm"]:
            assert_within(f"{label}: {name}", grads["qlstm"][name], g0["qlstm"][name], 1e-12)


def test_decode_step_by_step_equals_the_forward(rng):
    params = randomize(init_qlstm_block(rng, 8, num_heads=4), rng)
    x = rng.standard_normal((2, 9, 8))
    y, _ = qlstm_block(params, x, block_length=4)
    state, steps = None, []
    for t in range(x.shape[1]):
        y_t, state = qlstm_block_step(params, x[:, t], state)
        steps.append(y_t)
    assert state.shape == (2, 4, 2)
    assert_within("decode", np.stack(steps, axis=1), y, 1e-12)
    n1 = params["norm1"]
    xn = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * n1["weight"] + n1["bias"]
    y_layer, _ = qlstm_layer(params["qlstm"], xn)
    state = None
    for t in range(x.shape[1]):
        y_t, state = qlstm_layer_step(params["qlstm"], xn[:, t], state)
        assert_within(f"layer step {t}", y_t, y_layer[:, t], 1e-12)


def test_initialisation_follows_languini(rng):
    params = init_qlstm_block(rng, 64, num_heads=4, num_layers=8)
    layer = params["qlstm"]
    assert sorted(layer) == sorted(["W_f", "b_f", "W_i", "b_i", "W_z", "b_z", "W_o", "b_o", "W_post", "b_post"])
    assert layer["W_f"].shape == (64, 4, 16) and layer["W_post"].shape == (64, 64)
    for g in "fizo":
        assert np.all(layer["b_" + g] == 0)
        assert abs(layer["W_" + g].std() - 0.02) < 0.002
    assert abs(params["mlp"]["W_proj"].std() - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert params["mlp"]["W_fc"].shape == (64, 256)
    # a fresh layer remembers: f = sigmoid(0 + 1) where x W_f = 0
    y, cache = qlstm_layer(layer, np.zeros((1, 3, 64)))
    np.testing.assert_allclose(cache["cell"].f, 1 / (1 + np.exp(-1.0)))


def test_lm_scaffold_trains_the_block(rng):
    from ref.models.lm import init_lm, lm_backward, lm_forward

    params = init_lm(rng, vocab_size=11, D=8, n_layers=2, block=["qlstm", "gla"], num_heads=2)
    tokens = rng.integers(0, 11, (2, 6))
    logits, cache = lm_forward(params, tokens, mode="chunked", chunk_size=4)
    grads = lm_backward(params, cache, rng.standard_normal(logits.shape))
    assert set(grads["blocks"][0]["qlstm"]) == set(params["blocks"][0]["qlstm"])
    logits_rec, _ = lm_forward(params, tokens, mode="recurrent")
    assert_within("logits", logits_rec, logits, 1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, x: qlstm_layer(p["qlstm"], x[..., :5]), r"x: expected shape \(B, T, D\) with D = 6"),
        (lambda p, x: qlstm_layer(p["qlstm"], x.astype(np.float32)), r"x: expected dtype float64"),
        (lambda p, x: qlstm_layer(p["qlstm"], x, mode="chunky"), "mode: expected one of 'block_parallel'"),
        (lambda p, x: qlstm_layer(p["qlstm"], x, block_length=0), "block_length: expected an integer >= 1"),
        (lambda p, x: qlstm_layer(p["qlstm"], x, backend="gpu"), "backend: expected one of"),
        (lambda p, x: qlstm_layer({**p["qlstm"], "b_o": np.zeros(3)}, x), r"params/b_o: expected 2 axes \(H, K\)"),
        (lambda p, x: qlstm_layer({k: v for k, v in p["qlstm"].items() if k != "W_post"}, x), "expected a parameter 'W_post'"),
        (lambda p, x: qlstm_block({**p, "norm1": {"weight": np.ones(6)}}, x), r"params/norm1: expected a LayerNorm"),
        (lambda p, x: qlstm_block({"qlstm": p["qlstm"]}, x), r"params: expected a block"),
        (lambda p, x: qlstm_layer_step(p["qlstm"], x[:, 0], np.zeros((2, 2, 2))), r"state: expected shape \(B, H, K\) = \(2, 3, 2\)"),
        (lambda p, x: qlstm_layer_backward(p["qlstm"], qlstm_layer(p["qlstm"], x)[1], x[:, :2]), r"dy: expected shape"),
        (lambda p, x: init_qlstm_layer(np.random.default_rng(0), 6, num_heads=4), "num_heads: expected a divisor"),
    ],
)
def test_bad_input(call, match, rng):
    params = init_qlstm_block(rng, 6, num_heads=3)
    x = rng.standard_normal((2, 4, 6))
    with pytest.raises(ValueError, match=match):
        call(params, x)
