"""Synthetic gradients for a truncated-BPTT controller (ref.models.synthetic_gradients).

* gradcheck of the controller (every parameter, the input and both initial states), of the
  synthetic-gradient module and of its regression loss;
* the two exact limits: a zero boundary cotangent is plain truncated BPTT (the LSTM's own
  ``truncation=k``), the oracle future gradient is full BPTT, to rounding;
* the bootstrapped target (SG3) against central differences of the window's surrogate loss, and
  the module's loss and gradient (SG4) against their closed forms;
* bad inputs.
"""

import numpy as np
import pytest

from ref.mixers.rnn import lstm_backward
from ref.models.synthetic_gradients import (
    controller_backward,
    controller_forward,
    full_bptt_step,
    init_sg_controller,
    oracle_boundary_grads,
    predict,
    sg_regression_loss,
    sg_train_step,
    synthetic_gradient,
    synthetic_gradient_backward,
)
from ref.nn import gradcheck, linear_backward
from ref.tasks import get_task

pytestmark = pytest.mark.fast_slow

V, H = 6, 5


def _params(rng, sg_scale=0.3):
    p = init_sg_controller(rng, V, H)
    p["sg"]["W"] = rng.standard_normal((2 * H, 2 * H)) * sg_scale  # random and non-zero
    p["sg"]["b"] = rng.standard_normal(2 * H) * sg_scale
    return p


def _batch(rng, B=3, blanks=4, tokens=1):
    return get_task("copying", num_tokens=tokens, num_blanks=blanks, vocab_size=V).sample(rng, B)


def _max_diff(a, b):
    return max(float(np.abs(a[m][n] - b[m][n]).max()) for m in ("lstm", "head") for n in a[m])


def test_controller_gradcheck():
    rng = np.random.default_rng(0)
    p = _params(rng)

    def fwd(weight_ih, weight_hh, bias_ih, bias_hh, W, b, x, h, c):
        q = {"lstm": dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh), "head": {"W": W, "b": b}}
        logits, (hT, cT), cache = controller_forward(q, x, (h, c))
        return logits, hT, cT, cache

    def bwd(dlogits, dhT, dcT, cache):
        dx, (dh, dc), g = controller_backward(dlogits, (dhT, dcT), cache)
        return {**g["lstm"], "W": g["head"]["W"], "b": g["head"]["b"], "x": dx, "h": dh, "c": dc}

    inputs = {**p["lstm"], **p["head"], "x": rng.standard_normal((2, 4, V)), "h": rng.standard_normal((2, H)), "c": rng.standard_normal((2, H))}
    gradcheck(fwd, bwd, inputs, rng=rng, name="controller")


def test_synthetic_gradient_gradcheck():
    rng = np.random.default_rng(1)
    p = _params(rng)

    def fwd(W, b, h, c):
        return synthetic_gradient({"W": W, "b": b}, h, c)

    def bwd(dg_h, dg_c, cache):
        dh, dc, d = synthetic_gradient_backward(dg_h, dg_c, cache)
        return {"W": d["W"], "b": d["b"], "h": dh, "c": dc}

    gradcheck(fwd, bwd, {"W": p["sg"]["W"], "b": p["sg"]["b"], "h": rng.standard_normal((3, H)), "c": rng.standard_normal((3, H))}, rng=rng)


def test_sg_regression_loss_gradient():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((2, 3, 4))
    loss, dpred = sg_regression_loss(pred, target)
    assert loss == pytest.approx(0.5 * ((pred - target) ** 2).sum() / 3, rel=1e-14)
    eps, numeric = 1e-6, np.zeros_like(pred)
    for idx in np.ndindex(pred.shape):
        e = np.zeros_like(pred)
        e[idx] = eps
        numeric[idx] = (sg_regression_loss(pred + e, target)[0] - sg_regression_loss(pred - e, target)[0]) / (2 * eps)
    np.testing.assert_allclose(dpred, numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_zero_boundary_is_truncated_bptt(k):
    """boundary='zero' (and 'sg' with a zero module) == the LSTM's truncation=k over the whole sequence."""
    rng = np.random.default_rng(3)
    p, b = _params(rng), _batch(rng)
    _, g, _ = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=k, boundary="zero")
    # reference: one forward over the sequence, the head by hand, the LSTM's truncated backward
    B, T = b.inputs.shape
    logits, _, (lstm_cache, head_cache) = controller_forward(p, np.eye(V)[b.inputs], (np.zeros((B, H)), np.zeros((B, H))))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    dlogits = np.where(b.loss_mask[..., None], probs - np.eye(V)[b.targets], 0) / b.loss_mask.sum()
    dy, dW, db = linear_backward(dlogits, head_cache)
    ref = lstm_backward(dy, None, None, lstm_cache, truncation=k)[3:]
    for name, r in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), ref):
        np.testing.assert_allclose(g["lstm"][name], r, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g["head"]["W"], dW, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g["head"]["b"], db, rtol=1e-12, atol=1e-15)
    # a zero synthetic-gradient module predicts nothing: the same controller update
    p0 = dict(p, sg={"W": np.zeros((2 * H, 2 * H)), "b": np.zeros(2 * H)})
    _, g0, _ = sg_train_step(p0, b.inputs, b.targets, b.loss_mask, truncation=k, boundary="sg")
    assert _max_diff(g0, g) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 5, 100])
def test_oracle_boundary_is_full_bptt(k):
    rng = np.random.default_rng(4)
    p, b = _params(rng), _batch(rng, blanks=5)
    loss_full, g_full = full_bptt_step(p, b.inputs, b.targets, b.loss_mask)
    oracle = oracle_boundary_grads(p, b.inputs, b.targets, b.loss_mask, truncation=k)
    T = b.inputs.shape[1]
    assert len(oracle) == -(-T // k) - 1
    loss, g, _ = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=k, boundary=oracle)
    assert loss == pytest.approx(float(loss_full), rel=1e-13)
    scale = max(float(np.abs(g_full[m][n]).max()) for m in ("lstm", "head") for n in g_full[m])
    assert _max_diff(g, g_full) <= 1e-12 * scale
    if k > 1:  # truncation really cuts something here: the check is not vacuous
        _, g_trunc, _ = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=k, boundary="zero")
        assert k >= T or _max_diff(g_trunc, g_full) > 1e-6 * scale


def test_bootstrapped_target_and_sg_loss_by_hand():
    """(SG3): N d/ds_start of [loss of the window + <g_hat(s_end) / N, s_end>], by central differences;
    (SG4) and its gradient in closed form."""
    rng = np.random.default_rng(5)
    p, b = _params(rng), _batch(rng, blanks=4)  # T = 6
    k = 2
    _, g, info = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=k, boundary="sg")
    B, T = b.inputs.shape
    N = int(b.loss_mask.sum())
    x = np.eye(V)[b.inputs]
    labels = np.where(b.loss_mask, b.targets, -100)
    # the states at the window boundaries, window by window: starts[n] = ends[n - 1]
    state, starts, ends = (np.zeros((B, H)), np.zeros((B, H))), [], []
    for s in range(0, T, k):
        starts.append(state)
        _, state, _ = controller_forward(p, x[:, s : s + k], state)
        ends.append(state)
    assert len(info["predictions"]) == len(info["targets"]) == T // k - 1

    def window_surrogate(n, hc):
        h, c = hc[:, :H], hc[:, H:]
        logits, (he, ce), _ = controller_forward(p, x[:, n * k : (n + 1) * k], (h, c))
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        lab = labels[:, n * k : (n + 1) * k]
        ce_sum = -sum(logp[i, t, lab[i, t]] for i in range(B) for t in range(lab.shape[1]) if lab[i, t] >= 0)
        future = 0.0
        if n < T // k - 1:  # a constant synthetic gradient at the end of every window but the last
            gh, gc, _ = synthetic_gradient(p["sg"], *ends[n])
            future = (gh * he).sum() + (gc * ce).sum()
        return ce_sum + future  # = N * (window's share of L + <g_hat / N, s_end>)

    dW_hand, db_hand, sg_loss_hand = np.zeros_like(p["sg"]["W"]), np.zeros_like(p["sg"]["b"]), 0.0
    eps = 1e-6
    for n in range(1, T // k):
        hc = np.concatenate(starts[n], axis=-1)
        numeric = np.zeros_like(hc)
        for idx in np.ndindex(hc.shape):
            e = np.zeros_like(hc)
            e[idx] = eps
            numeric[idx] = (window_surrogate(n, hc + e) - window_surrogate(n, hc - e)) / (2 * eps)
        np.testing.assert_allclose(info["targets"][n - 1], numeric, rtol=1e-6, atol=1e-8)
        # the prediction that target belongs to: g_hat at the end of window n - 1 = start of window n
        pred = hc @ p["sg"]["W"] + p["sg"]["b"]
        np.testing.assert_allclose(info["predictions"][n - 1], pred, rtol=1e-13, atol=1e-15)
        diff = pred - info["targets"][n - 1]
        sg_loss_hand += 0.5 * (diff**2).sum() / B
        dW_hand += hc.T @ diff / B
        db_hand += diff.sum(0) / B
    assert info["sg_loss"] == pytest.approx(sg_loss_hand, rel=1e-12)
    np.testing.assert_allclose(g["sg"]["W"], dW_hand, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g["sg"]["b"], db_hand, rtol=1e-12, atol=1e-15)
    assert N == B  # one scored position per sequence in this batch


def test_numba_backend_matches_numpy():
    rng = np.random.default_rng(6)
    p, b = _params(rng), _batch(rng)
    l1, g1, i1 = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=2, backend="numpy")
    l2, g2, i2 = sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=2, backend="numba")
    assert l1 == pytest.approx(l2, rel=1e-13)
    assert _max_diff(g1, g2) < 1e-13
    np.testing.assert_allclose(g1["sg"]["W"], g2["sg"]["W"], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_bad_truncation(bad):
    rng = np.random.default_rng(7)
    p, b = _params(rng), _batch(rng)
    with pytest.raises(ValueError, match="truncation: expected an integer >= 1"):
        sg_train_step(p, b.inputs, b.targets, b.loss_mask, truncation=bad)
    with pytest.raises(ValueError, match="truncation: expected an integer >= 1"):
        oracle_boundary_grads(p, b.inputs, b.targets, b.loss_mask, truncation=bad)


def test_bad_inputs():
    rng = np.random.default_rng(8)
    p, b = _params(rng), _batch(rng)  # T = 6
    args = (p, b.inputs, b.targets, b.loss_mask)
    with pytest.raises(ValueError, match="boundary: expected one of 'sg', 'zero'"):
        sg_train_step(*args, truncation=2, boundary="oracle")
    with pytest.raises(ValueError, match="boundary: expected 'sg', 'zero' or a list of 2"):
        sg_train_step(*args, truncation=2, boundary=[])
    with pytest.raises(ValueError, match=r"boundary\[0\]"):
        sg_train_step(*args, truncation=3, boundary=[(np.zeros((3, H + 1)), np.zeros((3, H)))])
    with pytest.raises(ValueError, match=r"tokens: expected ids in \[0, 6\)"):
        sg_train_step(p, b.inputs + V, b.targets, b.loss_mask, truncation=2)
    with pytest.raises(ValueError, match="tokens: expected an integer array"):
        sg_train_step(p, b.inputs.astype(float), b.targets, b.loss_mask, truncation=2)
    with pytest.raises(ValueError, match="loss_mask: expected dtype bool"):
        sg_train_step(p, b.inputs, b.targets, b.loss_mask.astype(int), truncation=2)
    with pytest.raises(ValueError, match="loss_mask: expected at least one scored position"):
        sg_train_step(p, b.inputs, b.targets, np.zeros_like(b.loss_mask), truncation=2)
    with pytest.raises(ValueError, match="targets"):
        sg_train_step(p, b.inputs, b.targets[:, 1:], b.loss_mask, truncation=2)
    with pytest.raises(ValueError, match="params: boundary='sg' needs"):
        sg_train_step({"lstm": p["lstm"], "head": p["head"]}, *args[1:], truncation=2, boundary="sg")
    with pytest.raises(ValueError, match=r"tokens: expected integer ids in \[0, 6\)"):
        predict(p, b.inputs - 1)
    with pytest.raises(ValueError, match="hidden_size: expected an integer >= 1"):
        init_sg_controller(rng, V, 0)
