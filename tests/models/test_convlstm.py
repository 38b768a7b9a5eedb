"""ConvLSTM (ref.models.convlstm), the ConvS5 paper's baseline: finite differences on every
parameter of the layer and the model (backpropagation through time by hand), the cell against
an independent per-pixel loop, frame-by-frame decoding against the forward, bad input."""

import numpy as np
import pytest

from ref.models.convlstm import (
    FORGET_BIAS,
    convlstm_layer,
    convlstm_layer_backward,
    convlstm_model,
    convlstm_model_backward,
    convlstm_model_step,
    init_convlstm_model,
)
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.convs5


def test_gradcheck_layer(rng):
    cell = randomize(init_convlstm_model(rng, 1, 2, 2, 1)["layers"][0], rng)  # W (8, 4, 3, 3)
    u = rng.standard_normal((2, 4, 4, 3, 2))  # (B, T, H, W, X)
    gradcheck_tree(lambda p, u: convlstm_layer(p, u), lambda p, c, dy: convlstm_layer_backward(p, c, dy), cell,
                   {"u": u}, rng=rng, name="convlstm_layer")


def test_gradcheck_model_two_layers(rng):
    params = randomize(init_convlstm_model(rng, 2, 2, 2, 2, k=3, k_enc=1, k_dec=1), rng)
    x = rng.standard_normal((2, 3, 3, 4, 2))
    gradcheck_tree(convlstm_model, convlstm_model_backward, params, {"x": x}, rng=rng, name="convlstm_model")


def naive_layer(W, b, u):
    """(1)-(4) of the module docstring pixel by pixel, the convolution as explicit sums."""
    Bn, T, H, Wd, X = u.shape
    Q = W.shape[0] // 4
    k = W.shape[2]
    r = k // 2
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((Bn, H + 2 * r, Wd + 2 * r, Q))  # zero-padded hidden state
    c = np.zeros((Bn, H, Wd, Q))
    out = np.zeros((Bn, T, H, Wd, Q))
    for t in range(T):
        xp = np.pad(u[:, t], ((0, 0), (r, r), (r, r), (0, 0)))
        inp = np.concatenate([xp, h], axis=3)  # (B, H + 2r, W + 2r, X + Q)
        h_new = np.zeros_like(h)
        for i in range(H):
            for j in range(Wd):
                z = b + np.einsum("ocuv,nuvc->no", W, inp[:, i : i + k, j : j + k])  # (B, 4Q)
                ig, fg, og, g = sig(z[:, :Q]), sig(z[:, Q : 2 * Q]), sig(z[:, 2 * Q : 3 * Q]), np.tanh(z[:, 3 * Q :])
                c[:, i, j] = fg * c[:, i, j] + ig * g
                h_new[:, i + r, j + r] = og * np.tanh(c[:, i, j])
        h = h_new
        out[:, t] = h[:, r : r + H, r : r + Wd]
    return out


def test_layer_matches_a_pixel_loop(rng):
    cell = randomize(init_convlstm_model(rng, 1, 2, 3, 1)["layers"][0], rng)
    u = rng.standard_normal((2, 4, 5, 3, 2))
    h, _ = convlstm_layer(cell, u)
    np.testing.assert_allclose(h, naive_layer(cell["W"], cell["b"], u), rtol=1e-12, atol=1e-13)


def test_step_by_step_decoding_equals_the_forward(rng):
    params = randomize(init_convlstm_model(rng, 1, 3, 2, 2), rng)
    x = rng.standard_normal((2, 5, 4, 4, 1))
    z, _ = convlstm_model(params, x)
    states = None
    for t in range(x.shape[1]):
        z_t, states = convlstm_model_step(params, x[:, t], states)
        np.testing.assert_allclose(z_t, z[:, t], rtol=1e-12, atol=1e-12)


def test_init_and_bad_input(rng):
    params = init_convlstm_model(rng, 1, 4, 3, 2)
    assert params["layers"][0]["W"].shape == (12, 7, 3, 3)
    assert params["layers"][1]["W"].shape == (12, 6, 3, 3)
    np.testing.assert_array_equal(params["layers"][0]["b"][3:6], FORGET_BIAS)
    np.testing.assert_array_equal(params["layers"][0]["b"][:3], 0)
    with pytest.raises(ValueError, match="x: expected shape"):
        convlstm_model(params, np.zeros((1, 3, 4, 4, 2)))
    with pytest.raises(ValueError, match="k: expected an odd"):
        init_convlstm_model(rng, 1, 4, 3, 1, k=2)
