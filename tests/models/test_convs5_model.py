"""The ConvS5 next-frame model (ref.models.convs5) and its task (ref.tasks.moving_square): finite
differences on every parameter in both forms, the parallel scan against the loop, frame-by-frame
decoding against the whole-sequence forward, the moving square's bounces, the loss's gradient."""

import numpy as np
import pytest

from ref.models.convs5 import (
    MODES,
    convs5_model,
    convs5_model_backward,
    convs5_model_step,
    count_params,
    init_convs5_model,
)
from ref.nn import gradcheck
from ref.tasks.moving_square import MovingSquare, frame_mse, pixel_bce, pixel_bce_backward, position_accuracy
from tests.models.model_cases import gradcheck_tree

pytestmark = pytest.mark.convs5


def small_model(rng, n_layers=2, C=2, D=3, P=2, k_C=3, k_enc=3):
    """S5's initialisation with every leaf made to matter: steps Δ in [0.1, 0.8] and random
    frequencies (the gradients of Λ and log Δ well above the differences' noise), random biases and D."""
    params = init_convs5_model(rng, C, D, P, n_layers, k_C=k_C, k_enc=k_enc)
    for layer in params["layers"]:
        layer["log_step"] = np.log(rng.uniform(0.1, 0.8, P))
        layer["Lambda_im"] = rng.uniform(-3, 3, P)
        layer["log_neg_Lambda_re"] = np.log(rng.uniform(0.2, 1.0, P))
    for conv in ("enc", "dec"):
        params[conv]["b"] = 0.5 * rng.standard_normal(params[conv]["b"].shape)
    return params


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_every_parameter(rng, mode):
    """Two layers with the scan; one small layer with the loop (the next test checks that both forms'
    gradients agree at two layers, so the loop's own check stays small: the suite's time budget)."""
    if mode == "parallel":
        params, x = small_model(rng, D=2), rng.standard_normal((2, 4, 4, 3, 2))  # x (B, T, H, W, C)
    else:
        params, x = small_model(rng, n_layers=1, D=2, k_C=1, k_enc=1), rng.standard_normal((1, 3, 3, 3, 2))
    gradcheck_tree(convs5_model, convs5_model_backward, params, {"x": x}, rng=rng, name=f"convs5_model {mode}",
                   mode=mode)


def test_parallel_equals_recurrent_forward_and_backward(rng):
    params = small_model(rng, n_layers=2, k_C=1)
    x = rng.standard_normal((2, 9, 5, 4, 2))
    dz = rng.standard_normal(x.shape)
    z_par, c_par = convs5_model(params, x, mode="parallel")
    z_rec, c_rec = convs5_model(params, x, mode="recurrent")
    np.testing.assert_allclose(z_par, z_rec, rtol=1e-12, atol=1e-12)
    dx_par, g_par = convs5_model_backward(params, c_par, dz)
    dx_rec, g_rec = convs5_model_backward(params, c_rec, dz)
    np.testing.assert_allclose(dx_par, dx_rec, rtol=1e-11, atol=1e-11)
    for i in range(2):
        for key, g in g_par["layers"][i].items():
            np.testing.assert_allclose(g, g_rec["layers"][i][key], rtol=1e-10, atol=1e-11, err_msg=key)


def test_step_by_step_decoding_equals_the_forward(rng):
    params = small_model(rng)
    x = rng.standard_normal((2, 6, 4, 5, 2))
    z, _ = convs5_model(params, x)
    states = None
    for t in range(x.shape[1]):
        z_t, states = convs5_model_step(params, x[:, t], states)
        np.testing.assert_allclose(z_t, z[:, t], rtol=1e-12, atol=1e-12)
    assert all(s[0].shape == (2, 4, 5, 2) for s in states)  # (B, H, W, P): the state never grows


def test_init_shapes_and_bad_input(rng):
    params = init_convs5_model(rng, 1, 4, 3, 1)
    assert params["layers"][0]["B_re"].shape == (3, 4, 3, 3)
    assert count_params(params) == 4 * 9 + 4 + 3 * 3 + 2 * 3 * 4 * 9 * 2 + 4 + 4 * 9 + 1
    with pytest.raises(ValueError, match="x: expected shape"):
        convs5_model(params, np.zeros((1, 3, 4, 4, 2)))
    with pytest.raises(ValueError, match="mode"):
        convs5_model(params, np.zeros((1, 3, 4, 4, 1)), mode="chunked")
    with pytest.raises(ValueError, match="k_enc"):
        init_convs5_model(rng, 1, 4, 3, 1, k_enc=2)


# ---------------------------------------------------------------- the task


def test_moving_square_bounces_inside_the_frame(rng):
    task = MovingSquare(seq_len=40, size=8, square=2)
    pos = task.positions(rng, 50)  # (B, T, 2)
    assert pos.min() >= 0 and pos.max() <= 6
    steps = np.diff(pos, axis=1)  # every step moves one pixel along each axis
    assert np.all(np.abs(steps) == 1)
    frames = task.sample(np.random.default_rng(3), 50)
    assert frames.shape == (50, 40, 8, 8, 1)
    np.testing.assert_array_equal(frames.sum(axis=(2, 3, 4)), 4)
    np.testing.assert_array_equal(frames, task.sample(np.random.default_rng(3), 50))  # seeded
    # the next position follows from the last two: p_{t+1} = p_t + v_t, reflected at the walls
    v = pos[:, 1:-1] - pos[:, :-2]
    nxt = pos[:, 1:-1] + v
    expected = np.where(nxt < 0, -nxt, np.where(nxt > 6, 12 - nxt, nxt))
    np.testing.assert_array_equal(pos[:, 2:], expected)


def test_moving_square_bad_config():
    with pytest.raises(ValueError, match="square"):
        MovingSquare(size=4, square=3)
    with pytest.raises(ValueError, match="seq_len"):
        MovingSquare(seq_len=1)


def test_pixel_bce_gradient_and_scores(rng):
    z = rng.standard_normal((2, 3, 4, 4, 1)) * 3
    y = (rng.random(z.shape) < 0.3).astype(float)
    gradcheck(lambda logits: pixel_bce(logits, y), pixel_bce_backward, {"logits": z}, name="pixel_bce")
    torch_like = np.mean(np.logaddexp(0, z) - y * z)
    assert abs(float(pixel_bce(z, y)[0]) - torch_like) < 1e-14
    frames = MovingSquare(seq_len=3, size=6).sample(rng, 2)
    perfect = np.where(frames > 0, 20.0, -20.0)
    assert frame_mse(perfect, frames) < 1e-15
    assert position_accuracy(perfect, frames) == 1.0
    assert position_accuracy(-perfect, frames) == 0.0
