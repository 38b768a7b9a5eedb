"""The RNN review model (ref.models.rnn_review) and its tasks (ref.tasks.rnn_tasks): finite
differences on every parameter and the input (every cell, one and two directions, both readouts),
truncation, the step-by-step dL/dh_t against an independent computation, the BRNN's symmetry
under time reversal, the tasks' layouts and baselines, bad input."""

import numpy as np
import pytest

from ref.models.rnn_review import (
    hidden_state_gradients,
    init_rnn_model,
    regression_loss_and_grads,
    rnn_model,
    rnn_model_backward,
    tagging_loss_and_grads,
)
from ref.mixers.rnn import stacked_rnn, stacked_rnn_backward
from ref.tasks.rnn_tasks import IGNORE, MEAN_BASELINE_MSE, AddingProblem, FutureLabel
from tests.models.model_cases import gradcheck_tree

pytestmark = pytest.mark.rnn


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional,readout", [(False, "last"), (True, "all"), (True, "last")])
def test_gradcheck_model(rng, mode, bidirectional, readout):
    params = init_rnn_model(rng, mode, 3, 4, 2, bidirectional=bidirectional)
    x = rng.standard_normal((2, 5, 3))
    gradcheck_tree(rnn_model, rnn_model_backward, params, {"x": x}, rng=rng, name=f"rnn_model {mode}",
                   mode=mode, readout=readout)


def test_gradcheck_two_layers(rng):
    params = init_rnn_model(rng, "lstm", 2, 3, 2, bidirectional=True, num_layers=2)
    x = rng.standard_normal((2, 4, 2))
    gradcheck_tree(rnn_model, rnn_model_backward, params, {"x": x}, rng=rng, name="rnn_model 2 layers",
                   mode="lstm", readout="all")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm"])
def test_losses_gradcheck(rng, mode):
    """The two loss functions: their gradients against central differences of their loss."""
    params = init_rnn_model(rng, mode, 2, 3, 1)
    x, y, _ = AddingProblem(6).sample(rng, 3)
    loss, grads = regression_loss_and_grads(params, x, y, mode)
    tag_params = init_rnn_model(rng, mode, 4, 3, 4, bidirectional=True)
    xt, labels, _ = FutureLabel(6, 4, 2).sample(rng, 3)
    tloss, tgrads = tagging_loss_and_grads(tag_params, xt, labels, mode)
    for p, g, f in ((params, grads, lambda p: regression_loss_and_grads(p, x, y, mode)[0]),
                    (tag_params, tgrads, lambda p: tagging_loss_and_grads(p, xt, labels, mode)[0])):
        for group in p:
            for name, w in p[group].items():
                i = np.unravel_index(int(rng.integers(w.size)), w.shape)
                old = w[i]
                w[i] = old + 1e-6
                up = f(p)
                w[i] = old - 1e-6
                down = f(p)
                w[i] = old
                assert abs((up - down) / 2e-6 - g[group][name][i]) < 1e-6, (group, name)
    assert np.isfinite(loss) and np.isfinite(tloss)


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_truncation(rng, mode):
    """truncation >= T is full BPTT; with k < T and the last readout, no gradient reaches the
    inputs before the last segment, and the last segment's input gradients are unchanged."""
    params = init_rnn_model(rng, mode, 2, 3, 1)
    x = rng.standard_normal((2, 7, 2))
    out, cache = rnn_model(params, x, mode)
    dout = rng.standard_normal(out.shape)
    dx, grads = rnn_model_backward(params, cache, dout)
    dx_full, grads_full = rnn_model_backward(params, cache, dout, truncation=7)
    assert np.array_equal(dx, dx_full)
    dx_k, grads_k = rnn_model_backward(params, cache, dout, truncation=3)  # segments [0,3) [3,6) [6,7)
    assert np.all(dx_k[:, :6] == 0) and np.allclose(dx_k[:, 6], dx[:, 6], rtol=1e-14, atol=1e-14)
    assert np.array_equal(grads_k["head"]["W"], grads["head"]["W"])
    assert not np.allclose(grads_k["rnn"]["weight_hh_l0"], grads["rnn"]["weight_hh_l0"])


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("truncation", [None, 3])
def test_hidden_state_gradients(rng, mode, truncation):
    """dL/dh_t (and dL/dc_t) by the step loop equals the gradient of the initial state of the
    suffix x[t+1:] run from the state the prefix reached: an independent computation."""
    params = init_rnn_model(rng, mode, 2, 3, 2)
    B, T = 2, 7
    x = rng.standard_normal((B, T, 2))
    dout = rng.standard_normal((B, 2))
    g, gc = hidden_state_gradients(params, x, dout, mode, truncation=truncation)
    assert (gc is not None) == (mode == "lstm")
    _, state, _ = stacked_rnn(mode, x, params["rnn"])
    assert np.allclose(g[:, -1], dout @ params["head"]["W"].T, rtol=1e-14, atol=1e-14)
    for t in range(T - 1):
        _, state_t, _ = stacked_rnn(mode, x[:, : t + 1], params["rnn"])  # the state after step t
        y, _, cache = stacked_rnn(mode, x[:, t + 1 :], params["rnn"], state0=state_t)
        dy = np.zeros_like(y)
        dy[:, -1] = dout @ params["head"]["W"].T
        _, dstate0, _ = stacked_rnn_backward(dy, None, cache)  # full BPTT through the suffix
        cut = truncation is not None and (T - 1) // truncation * truncation > t  # a cut lies in (t, T-1]
        if cut:
            assert np.all(g[:, t] == 0)
        else:
            assert np.allclose(g[:, t], dstate0[0][0], rtol=1e-12, atol=1e-14)
            if gc is not None:
                assert np.allclose(gc[:, t], dstate0[1][0], rtol=1e-12, atol=1e-14)


def test_vanilla_rnn_gradient_is_the_jacobian_product(rng):
    """For the tanh RNN, dL/dh_t = (prod_{s > t} J_s)^T dL/dh_{T-1} with J_s = diag(1 - h_s^2) W_hh."""
    params = init_rnn_model(rng, "rnn_tanh", 2, 4, 1)
    x = rng.standard_normal((1, 6, 2))
    dout = rng.standard_normal((1, 1))
    g, _ = hidden_state_gradients(params, x, dout, "rnn_tanh")
    y, _, _ = stacked_rnn("rnn_tanh", x, params["rnn"])
    W_hh = params["rnn"]["weight_hh_l0"]
    v = g[0, -1]
    for s in range(5, 0, -1):
        J = (1 - y[0, s] ** 2)[:, None] * W_hh  # (H, H): dh_s/dh_{s-1}
        v = J.T @ v
        assert np.allclose(g[0, s - 1], v, rtol=1e-12, atol=1e-15)


def test_brnn_on_reversed_input_swaps_the_directions(rng):
    """A BRNN run on the reversed sequence with its two directions' weights swapped gives the
    reversed outputs with the two halves of the features swapped."""
    params = init_rnn_model(rng, "lstm", 3, 4, 2, bidirectional=True)
    x = rng.standard_normal((2, 6, 3))
    y, _, _ = stacked_rnn("lstm", x, params["rnn"], bidirectional=True)
    swapped = {}
    for k, v in params["rnn"].items():
        swapped[k[: -len("_reverse")] if k.endswith("_reverse") else k + "_reverse"] = v
    y_rev, _, _ = stacked_rnn("lstm", x[:, ::-1].copy(), swapped, bidirectional=True)
    H = 4
    assert np.allclose(y_rev[:, ::-1, :H], y[:, :, H:], rtol=1e-14, atol=1e-14)
    assert np.allclose(y_rev[:, ::-1, H:], y[:, :, :H], rtol=1e-14, atol=1e-14)


def test_init_is_pytorch_default(rng):
    params = init_rnn_model(rng, "lstm", 2, 16, 3, bidirectional=True)
    assert set(params["rnn"]) == {f"{k}_l0{s}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                  for s in ("", "_reverse")}
    assert params["rnn"]["weight_ih_l0"].shape == (64, 2) and params["head"]["W"].shape == (32, 3)
    assert max(np.abs(v).max() for v in params["rnn"].values()) <= 0.25  # 1/sqrt(16)
    assert np.abs(params["head"]["W"]).max() <= 1 / np.sqrt(32)


# --- the tasks --------------------------------------------------------------------------------


def test_adding_problem_layout(rng):
    x, y, marks = AddingProblem(10).sample(rng, 500)
    assert x.shape == (500, 10, 2) and y.shape == (500, 1) and marks.shape == (500, 2)
    assert np.all(x[:, :, 1].sum(axis=1) == 2)
    assert np.all(marks[:, 0] < 5) and np.all(marks[:, 1] >= 5)
    assert np.allclose(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(axis=1))
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))
    # guessing the mean scores about 1/6
    assert abs(np.mean((y - 1.0) ** 2) - MEAN_BASELINE_MSE) < 0.03
    x2, y2, _ = AddingProblem(10).sample(np.random.default_rng(3), 4)
    x3, y3, _ = AddingProblem(10).sample(np.random.default_rng(3), 4)
    assert np.array_equal(x2, x3) and np.array_equal(y2, y3)


def test_future_label_layout(rng):
    x, labels, tokens = FutureLabel(8, 3, 2).sample(rng, 5)
    assert x.shape == (5, 8, 3) and labels.shape == (5, 8)
    assert np.array_equal(x.argmax(axis=2), tokens) and np.all(x.sum(axis=2) == 1)
    assert np.array_equal(labels[:, :6], tokens[:, 2:]) and np.all(labels[:, 6:] == IGNORE)
    x0, labels0, _ = FutureLabel(8, 3, 0).sample(rng, 5)
    assert np.array_equal(labels0, x0.argmax(axis=2))


def test_bad_input(rng):
    with pytest.raises(ValueError, match="seq_len: expected an integer >= 2"):
        AddingProblem(1)
    with pytest.raises(ValueError, match="shift: expected less than seq_len = 4"):
        FutureLabel(4, 2, 4)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        AddingProblem(4).sample(0, 2)
    with pytest.raises(ValueError, match="mode: expected one of"):
        init_rnn_model(rng, "transformer", 2, 3, 1)
    params = init_rnn_model(rng, "lstm", 2, 3, 1)
    with pytest.raises(ValueError, match="readout: expected one of"):
        rnn_model(params, rng.standard_normal((1, 3, 2)), "lstm", readout="first")
    with pytest.raises(ValueError, match="params: expected a dict with the keys"):
        rnn_model({"rnn": params["rnn"]}, rng.standard_normal((1, 3, 2)), "lstm")
    with pytest.raises(ValueError, match="hidden_state_gradients expects one layer and one direction"):
        hidden_state_gradients(init_rnn_model(rng, "lstm", 2, 3, 1, bidirectional=True),
                               rng.standard_normal((1, 3, 2)), np.ones((1, 1)), "lstm")
    with pytest.raises(ValueError, match=r"dout: expected shape \(B, O\)"):
        hidden_state_gradients(params, rng.standard_normal((1, 3, 2)), np.ones((2, 1)), "lstm")
