"""PV-RNN (ref.models.pv_rnn) and its probabilistic finite-state machine (ref.tasks.probabilistic_fsm):
finite differences on every weight and on the adaptive vectors A (one and two levels, a batch
drawing a sequence twice), the loss and its gradient, the KL against a direct computation and a
Monte-Carlo estimate, w = 0 removes the KL gradient, tau = 1 is a plain RNN, generation from the
prior, the task's layout, frequencies and determinism, bad input."""

import numpy as np
import pytest

from ref.models.pv_rnn import (
    gaussian_kl,
    init_pv_rnn,
    pv_rnn_backward,
    pv_rnn_forward,
    pv_rnn_generate,
    pv_rnn_loss_and_grads,
)
from ref.nn import gradcheck
from ref.tasks.probabilistic_fsm import ProbabilisticFSM
from ref.train import tree_flatten, tree_map, tree_unflatten, tree_structure
from tests.models.model_cases import randomize

pytestmark = pytest.mark.pv_rnn


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny(rng, hidden=(4, 3), latent=(2, 1), n_seq=3, T=5, X=2):
    params = randomize(init_pv_rnn(rng, n_seq, T, X, hidden=hidden, latent=latent), rng)
    return params


def _check(fn_of_params, params, rng, name, cotangent_shapes=None):
    """gradcheck over every leaf of params of ``fn_of_params(params) -> (outputs tuple, grads_fn)``."""
    structure = tree_structure(params)
    flat = tree_flatten(params)

    def fwd(**arrays):
        p = tree_unflatten(arrays, structure)
        outputs, backward = fn_of_params(p)
        return (*outputs, backward)

    def bwd(*args):
        *cotangents, backward = args
        return tree_flatten(backward(*cotangents))

    return gradcheck(fwd, bwd, flat, rng=rng, name=name)


@pytest.mark.parametrize("hidden, latent, tau, idx", [
    ((4, 3), (2, 1), (2.0, 3.5), np.array([2, 0, 2])),  # two levels; sequence 2 drawn twice
    ((5,), (3,), (1.5,), None),  # one level, the whole set
])
def test_gradcheck_forward_backward(rng, hidden, latent, tau, idx):
    params = tiny(rng, hidden, latent)
    B = 3 if idx is None else len(idx)
    eps = [rng.standard_normal((B, 5, z)) for z in latent]

    def fn(p):
        x_hat, kl, cache = pv_rnn_forward(p, eps, tau, idx)
        return (x_hat, *kl), lambda dx, *dkl: pv_rnn_backward(p, cache, dx, list(dkl))

    _check(fn, params, rng, "pv_rnn_forward")


def test_gradcheck_loss(rng):
    params = tiny(rng)
    eps = [rng.standard_normal((2, 5, z)) for z in (2, 1)]
    x = rng.uniform(-0.8, 0.8, (2, 5, 2))

    def fn(p):
        loss, grads, _ = pv_rnn_loss_and_grads(p, x, eps, (2.0, 4.0), 0.7, idx=np.array([1, 2]))
        return (np.array(loss),), lambda dy: tree_map(lambda g: g * dy, grads)

    _check(fn, params, rng, "pv_rnn_loss")


def test_loss_is_reconstruction_plus_weighted_kl(rng):
    params = tiny(rng)
    eps = [rng.standard_normal((3, 5, z)) for z in (2, 1)]
    x = rng.uniform(-0.8, 0.8, (3, 5, 2))
    x_hat, kl, _ = pv_rnn_forward(params, eps, (2.0, 4.0))
    loss, _, parts = pv_rnn_loss_and_grads(params, x, eps, (2.0, 4.0), 0.3)
    rec = np.mean((x_hat - x) ** 2)
    kl_mean = (kl[0].sum() + kl[1].sum()) / (3 * 5 * 3)
    assert np.isclose(parts["rec"], rec, rtol=1e-13) and np.isclose(parts["kl"], kl_mean, rtol=1e-13)
    assert np.isclose(loss, rec + 0.3 * kl_mean, rtol=1e-13)


def test_gaussian_kl_closed_form_and_monte_carlo(rng):
    mu_q, mu_p = rng.uniform(-0.9, 0.9, (2, 4))
    ls_q, ls_p = rng.uniform(-0.7, 0.5, (2, 4))
    kl = gaussian_kl(mu_q, ls_q, mu_p, ls_p)
    # the textbook form with variances
    var_q, var_p = np.exp(2 * ls_q), np.exp(2 * ls_p)
    direct = 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)
    np.testing.assert_allclose(kl, direct, rtol=1e-13, atol=1e-15)
    assert np.all(kl >= 0) and np.allclose(gaussian_kl(mu_q, ls_q, mu_q, ls_q), 0, atol=1e-15)
    # E_q[log q(z) - log p(z)] by sampling: n = 100,000 draws, a 5-sigma band
    n = 100_000
    z = mu_q + np.exp(ls_q) * rng.standard_normal((n, 4))
    log_q = -0.5 * ((z - mu_q) / np.exp(ls_q)) ** 2 - ls_q
    log_p = -0.5 * ((z - mu_p) / np.exp(ls_p)) ** 2 - ls_p
    samples = log_q - log_p
    stderr = samples.std(0) / np.sqrt(n)
    assert np.all(np.abs(samples.mean(0) - kl) < 5 * stderr)


def test_zero_meta_prior_removes_the_kl_gradient(rng):
    params = tiny(rng)
    eps = [rng.standard_normal((3, 5, z)) for z in (2, 1)]
    x = rng.uniform(-0.8, 0.8, (3, 5, 2))
    _, grads, _ = pv_rnn_loss_and_grads(params, x, eps, (2.0, 4.0), 0.0)
    x_hat, kl, cache = pv_rnn_forward(params, eps, (2.0, 4.0))
    rec_only = pv_rnn_backward(params, cache, 2 * (x_hat - x) / x.size, [np.zeros_like(k) for k in kl])
    for path, g in tree_flatten(grads).items():
        np.testing.assert_array_equal(g, tree_flatten(rec_only)[path], err_msg=path)
    for lv in grads["levels"]:  # the prior is trained by the KL alone
        assert not lv["W_mu"].any() and not lv["W_sigma"].any()


def test_tau_one_is_a_plain_rnn(rng):
    params = tiny(rng, hidden=(4,), latent=(2,))
    eps = [rng.standard_normal((3, 5, 2))]
    x_hat, _, _ = pv_rnn_forward(params, eps, 1.0)
    lv, A = params["levels"][0], params["A"][0]
    z = np.tanh(A["A_mu"]) + np.exp(A["A_sigma"]) * eps[0]
    d = np.zeros((3, 4))
    for t in range(5):
        d = np.tanh(d @ lv["W_dd"] + z[:, t] @ lv["W_dz"])  # d_t = tanh(W d_{t-1} + W z_t): no leak
        np.testing.assert_allclose(x_hat[:, t], np.tanh(d @ params["out"]["W"] + params["out"]["b"]), rtol=1e-13, atol=1e-15)


def test_prior_generation(rng):
    params = tiny(rng)
    eps = [rng.standard_normal((4, 6, z)) for z in (2, 1)]
    x1, info = pv_rnn_generate(params, (2.0, 4.0), 4, 6, eps=eps)
    x2, _ = pv_rnn_generate(params, (2.0, 4.0), 4, 6, eps=eps)
    np.testing.assert_array_equal(x1, x2)  # same noise, same sequence
    assert x1.shape == (4, 6, 2) and np.all(np.abs(x1) < 1)
    for s in info["sigma_p"]:  # the prior at t = 0 is N(0, I): d_{-1} = 0
        np.testing.assert_array_equal(s[:, 0], 1.0)
    # with the prior's noise switched off, generation equals the posterior pass whose A sets z = mu^p
    zero = [np.zeros_like(e) for e in eps]
    x0, info0 = pv_rnn_generate(params, (2.0, 4.0), 4, 6, eps=zero)
    p = {**params, "A": [{"A_mu": np.arctanh(m), "A_sigma": np.zeros_like(m)} for m in info0["mu_p"]]}
    x_post, kl, _ = pv_rnn_forward(p, zero, (2.0, 4.0))
    np.testing.assert_allclose(x_post, x0, rtol=1e-12, atol=1e-12)


def test_fsm_layout_frequencies_and_determinism():
    task = ProbabilisticFSM(n_cycles=3, period=4, p_a=0.3)
    x, choices = task.sample(np.random.default_rng(5), 4000)
    x2, _ = task.sample(np.random.default_rng(5), 4000)
    np.testing.assert_array_equal(x, x2)
    assert x.shape == (4000, 24, 1) and choices.shape == (4000, 3) and np.all(np.abs(x) < 1)
    assert abs(choices.mean() - 0.3) < 0.015  # 12,000 draws: standard error 0.004
    prim = task.primitives()
    np.testing.assert_array_equal(x[0, 4:8, 0], prim["C"])  # after the branch, the bridge C
    np.testing.assert_array_equal(x[0, 0:4, 0], prim["A"] if choices[0, 0] else prim["B"])
    is_a, d_branch, d_bridge = task.classify(x)
    np.testing.assert_array_equal(is_a, choices)
    assert np.all(d_branch == 0) and np.all(d_bridge == 0)
    _, d_zero, _ = task.classify(np.zeros((1, 28, 1)))  # 28 steps: 3 whole cycles, the rest ignored
    assert d_zero.shape == (1, 3) and np.allclose(d_zero, np.sqrt((prim["A"] ** 2).mean()) / 0.8)


def test_bad_input(rng):
    params = tiny(rng)
    eps = [rng.standard_normal((3, 5, z)) for z in (2, 1)]
    with pytest.raises(ValueError, match="tau: expected 2 time constant"):
        pv_rnn_forward(params, eps, (2.0,))
    with pytest.raises(ValueError, match="tau"):
        pv_rnn_forward(params, eps, (0.5, 2.0))
    with pytest.raises(ValueError, match=r"eps\[1\]: expected shape"):
        pv_rnn_forward(params, [eps[0], eps[0]], (2.0, 2.0))
    with pytest.raises(ValueError, match="idx"):
        pv_rnn_forward(params, eps, (2.0, 2.0), idx=np.array([0, 3, 1]))
    with pytest.raises(ValueError, match="w: expected a finite meta-prior"):
        pv_rnn_loss_and_grads(params, np.zeros((3, 5, 2)), eps, (2.0, 2.0), -1.0)
    with pytest.raises(ValueError, match="x: expected shape"):
        pv_rnn_loss_and_grads(params, np.zeros((3, 5, 1)), eps, (2.0, 2.0), 1.0)
    with pytest.raises(ValueError, match="params"):
        pv_rnn_forward({"levels": params["levels"]}, eps, (2.0, 2.0))
    with pytest.raises(ValueError, match="rng"):
        pv_rnn_generate(params, (2.0, 2.0), 2, 4)
    with pytest.raises(ValueError, match="p_a"):
        ProbabilisticFSM(p_a=1.5)
    with pytest.raises(ValueError, match="amplitude"):
        ProbabilisticFSM(amplitude=1.0)
