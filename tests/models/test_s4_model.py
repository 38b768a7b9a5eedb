"""The deep S4 / S4D model (ref.models.s4): finite differences on every parameter of both kinds and
both forms, the convolutional form against the recurrent one, an independent loop over the
model's equations, the initialisations (HiPPO vs random), and bad input."""

import numpy as np
import pytest
from scipy.special import erf

from ref.mixers.s4 import hippo_legs_dplr, s4d_recurrent
from ref.models.s4 import (
    INITS,
    KINDS,
    MODES,
    NORM_EPS,
    init_s4_model,
    init_s4_ssm,
    s4_model,
    s4_model_backward,
    s4_ssm_kernel,
    ssm_kind,
)
from ref.nn import mse, mse_backward
from ref.tasks.synthetic import DelayedCopy
from ref.train import get_optimizer, train
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.s4


def small_model(rng, kind, init="legs", n_layers=2, d_input=2, d_output=3):
    """H = 3 channels, state N = 4 (2 stored modes), every leaf redrawn at random (log_dt, log_A_real
    included: Δ ~ 1 and |Re λ| ~ 1, so that every gradient is far above the differences' noise)."""
    params = randomize(init_s4_model(rng, d_input, 3, 4, d_output, n_layers, kind=kind, init=init), rng)
    return params


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_every_parameter(rng, kind, mode):
    params = small_model(rng, kind)
    x = rng.standard_normal((2, 7, 2))
    gradcheck_tree(s4_model, s4_model_backward, params, {"x": x}, rng=rng, name=f"s4_model {kind} {mode}", mode=mode)


@pytest.mark.parametrize("init", ["legs", "random"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_at_the_initialisations(rng, kind, init):
    """At the initialisations themselves (small Δ, HiPPO's or the random spectrum): log_dt at
    -1 (Δ = 0.37) so that the SSM's gradients stay well above the finite differences' noise."""
    params = init_s4_model(rng, 1, 4, 6, 1, 1, kind=kind, init=init)
    params["blocks"][0]["ssm"]["log_dt"][:] = np.linspace(-1.5, -0.5, 4)
    x = rng.standard_normal((2, 9, 1))
    gradcheck_tree(s4_model, s4_model_backward, params, {"x": x}, rng=rng, name=f"{kind} {init}")


@pytest.mark.parametrize("kind", KINDS)
def test_convolutional_equals_recurrent(rng, kind):
    params = small_model(rng, kind, n_layers=3)
    x = rng.standard_normal((3, 13, 2))
    y_conv, c_conv = s4_model(params, x)
    y_rec, c_rec = s4_model(params, x, mode="recurrent")
    assert_within("forward", y_rec, y_conv, 1e-11 * np.abs(y_conv).max())
    dy = rng.standard_normal(y_conv.shape)
    dx_conv, g_conv = s4_model_backward(params, c_conv, dy)
    dx_rec, g_rec = s4_model_backward(params, c_rec, dy)
    assert_within("dx", dx_rec, dx_conv, 1e-10 * np.abs(dx_conv).max())
    for name, g in g_conv["blocks"][1]["ssm"].items():
        assert_within(name, g_rec["blocks"][1]["ssm"][name], g, 1e-9 * np.abs(g).max())


def naive_s4d_model(params, x):
    """The model (1)-(5) for S4D written out with plain NumPy and ``s4d_recurrent`` only: the
    LayerNorm, GELU (erf form) and the linear maps by hand, Λ = -exp(log_A_real) + i A_imag."""
    h = x @ params["encoder"]["W"] + params["encoder"]["b"]
    for blk in params["blocks"]:
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        z = (h - mu) / np.sqrt(var + NORM_EPS) * blk["norm_weight"] + blk["norm_bias"]
        s = blk["ssm"]
        y, _ = s4d_recurrent(z.transpose(0, 2, 1), s["log_dt"], -np.exp(s["log_A_real"]), s["A_imag"], s["C_re"],
                             s["C_im"], s["D"], s["B_re"], s["B_im"])
        y = y.transpose(0, 2, 1)
        a = y * 0.5 * (1 + erf(y / np.sqrt(2)))
        h = h + a @ blk["W"] + blk["b"]
    return h @ params["decoder"]["W"] + params["decoder"]["b"]


def test_model_equals_its_equations(rng):
    params = small_model(rng, "s4d")
    x = rng.standard_normal((2, 10, 2))
    assert_within("model", s4_model(params, x)[0], naive_s4d_model(params, x), 1e-12)


def test_backward_is_pure_and_float32_runs(rng):
    params = small_model(rng, "s4")
    x = rng.standard_normal((2, 6, 2))
    y, cache = s4_model(params, x)
    dy = rng.standard_normal(y.shape)
    dx1, g1 = s4_model_backward(params, cache, dy)
    dx2, g2 = s4_model_backward(params, cache, dy)
    assert np.array_equal(dx1, dx2) and np.array_equal(g1["blocks"][0]["ssm"]["P_re"], g2["blocks"][0]["ssm"]["P_re"])
    p32 = init_s4_model(rng, 2, 3, 4, 3, 2, kind="s4", dtype=np.float32)
    y32, c32 = s4_model(p32, x.astype(np.float32))
    dx32, g32 = s4_model_backward(p32, c32, dy.astype(np.float32))
    assert y32.dtype == dx32.dtype == g32["blocks"][1]["ssm"]["log_A_real"].dtype == np.float32


# ------------------------------------------------------------------------------------------------
# initialisation


def test_legs_init_is_hippo_and_random_is_state_spaces_rand(rng):
    H, N = 3, 8
    Lambda, P, B, _ = hippo_legs_dplr(N)
    s4 = init_s4_ssm(np.random.default_rng(0), H, N, kind="s4", init="legs")
    assert_within("Re Lambda", -np.exp(s4["log_A_real"]), np.broadcast_to(Lambda.real, (H, N // 2)), 1e-14)
    assert_within("Im Lambda", s4["A_imag"], np.broadcast_to(Lambda.imag, (H, N // 2)), 1e-14)
    for name, want in (("P", P), ("B", B)):
        assert_within(f"{name}_re", s4[f"{name}_re"], np.broadcast_to(want.real, (H, N // 2)), 1e-14)
        assert_within(f"{name}_im", s4[f"{name}_im"], np.broadcast_to(want.imag, (H, N // 2)), 1e-14)
    rand = init_s4_ssm(np.random.default_rng(0), H, N, kind="s4", init="random")
    np.testing.assert_allclose(-np.exp(rand["log_A_real"]), -0.5)  # real part -1/2
    assert np.all(rand["A_imag"] > 0)  # exp(N(0, 1))
    np.testing.assert_array_equal(rand["B_re"], 1)
    np.testing.assert_array_equal(rand["B_im"], 0)
    # one seed, one draw of everything else: the inits differ only in A, B, P
    for name in ("log_dt", "C_re", "C_im", "D"):
        np.testing.assert_array_equal(rand[name], s4[name])
    s4d = init_s4_ssm(np.random.default_rng(0), H, N, kind="s4d", init="random")
    assert ssm_kind(s4d) == "s4d" and ssm_kind(s4) == "s4"
    np.testing.assert_array_equal(s4d["A_imag"], rand["A_imag"])
    dt = np.exp(init_s4_ssm(rng, 500, 4, kind="s4d", init="lin")["log_dt"])
    assert 1e-3 <= dt.min() and dt.max() <= 1e-1 and np.median(dt) < 2e-2  # log-uniform in [1e-3, 1e-1]


def test_model_shapes_and_inits(rng):
    for kind in KINDS:
        for init in INITS[kind]:
            p = init_s4_model(rng, 2, 5, 6, 3, 2, kind=kind, init=init)
            assert p["encoder"]["W"].shape == (2, 5) and p["decoder"]["W"].shape == (5, 3)
            assert len(p["blocks"]) == 2 and p["blocks"][0]["W"].shape == (5, 5)
            assert p["blocks"][1]["ssm"]["C_re"].shape == (5, 3) and np.all(np.exp(p["blocks"][0]["ssm"]["log_dt"]) <= 0.1)
            assert s4_ssm_kernel(p["blocks"][0]["ssm"], 16).shape == (5, 16)


def test_hippo_learns_a_short_delay_faster_than_random(rng):
    """A small version of lesson 08's experiment (T = 32, lag 12, 200 Adam steps), to catch a
    regression in the model: HiPPO's S4 gets well below the variance of the target (1), and the
    random DPLR init of the same model stays far above it."""
    task = DelayedCopy(seq_len=32, lag=12)
    final = {}
    for init in ("legs", "random"):
        params = init_s4_model(np.random.default_rng(0), 1, 8, 16, 1, 1, kind="s4", init=init, dt_min=0.01,
                               dt_max=0.5)

        def loss_and_grads(p, batch, _rng):
            y, cache = s4_model(p, batch.inputs)
            loss, lc = mse(y[:, task.lag :], batch.targets[:, task.lag :])
            dy = np.zeros_like(y)
            dy[:, task.lag :] = mse_backward(1.0, lc)[0]
            return float(loss), s4_model_backward(p, cache, dy)[1]

        out = train(params, loss_and_grads, lambda r, s: task.sample(r, 16), steps=200, rng=np.random.default_rng(1),
                    optimizer=get_optimizer("adam"), lr=1e-2, progress=False)
        final[init] = float(out.history["loss"][-10:].mean())
    assert final["legs"] < 0.3 and final["random"] > 2 * final["legs"], final


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_input(rng):
    params = init_s4_model(rng, 2, 3, 4, 1, 1)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, L, d_in\) with d_in = 2"):
        s4_model(params, np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match="x: expected dtype float64"):
        s4_model(params, np.zeros((1, 5, 2), np.float32))
    with pytest.raises(ValueError, match="mode: expected one of"):
        s4_model(params, np.zeros((1, 5, 2)), mode="parallel")
    with pytest.raises(ValueError, match="params: expected a dict with 'encoder', 'blocks' and 'decoder'"):
        s4_model({"blocks": []}, np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="init: expected one of 'legs', 'random', got 'lin'"):
        init_s4_model(rng, 2, 3, 4, 1, 1, kind="s4", init="lin")
    with pytest.raises(ValueError, match="kind: expected one of"):
        init_s4_model(rng, 2, 3, 4, 1, 1, kind="s5")
    with pytest.raises(ValueError, match="N: expected an even state size"):
        init_s4_model(rng, 2, 3, 5, 1, 1)
    y, cache = s4_model(params, np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, L, d_out\) = \(1, 5, 1\)"):
        s4_model_backward(params, cache, np.zeros((1, 4, 1)))
