"""Linear self-attention for in-context regression (lesson 15): finite differences on every
parameter, the LSA layer that is exactly one GD step, and the reference predictors of
ref.tasks.icl_regression (ridge -> OLS, the Gaussian posterior mean = ridge, the mixture PME)."""

import itertools

import numpy as np
import pytest

from ref.models.icl_lsa import (
    gd_lsa_params,
    init_lsa,
    lsa_backward,
    lsa_forward,
    lsa_layer,
    lsa_layer_backward,
    lsa_loss_and_grads,
    lsa_predict,
    lsa_tokens,
)
from ref.tasks.icl_regression import (
    Prior,
    dense_prior,
    gd_predict,
    mixture_prior,
    ols_predict,
    optimal_gd_step,
    pme_predict,
    ridge_predict,
    sample_prompts,
    sparse_prior,
)
from tests.models.model_cases import gradcheck_tree

pytestmark = pytest.mark.attention


@pytest.mark.parametrize("n_layers, num_heads", [(1, 1), (3, 2)])
def test_gradcheck_every_parameter(rng, n_layers, num_heads):
    params = init_lsa(rng, 3, n_layers=n_layers, num_heads=num_heads, std=0.5)
    Z = rng.standard_normal((2, 5, 4))
    gradcheck_tree(lsa_forward, lsa_backward, params, {"Z": Z}, rng=rng, name=f"lsa_L{n_layers}")


def test_layer_gradcheck_and_loss_gradient(rng):
    layer = init_lsa(rng, 2, num_heads=2, std=0.5)["layers"][0]
    gradcheck_tree(lsa_layer, lsa_layer_backward, layer, {"Z": rng.standard_normal((3, 4, 3))}, rng=rng, name="lsa")
    # the training loss: its gradient against central differences on one entry of each layer
    params = init_lsa(rng, 2, n_layers=2, std=0.5)
    P = sample_prompts(rng, 4, 3, dense_prior(2), 0.1)
    loss, grads = lsa_loss_and_grads(params, P)
    for i, k in itertools.product(range(2), ("W_q", "W_k", "W_v")):
        W = params["layers"][i][k]
        old = W[0, 1, 2]
        W[0, 1, 2] = old + 1e-6
        up = lsa_loss_and_grads(params, P)[0]
        W[0, 1, 2] = old - 1e-6
        down = lsa_loss_and_grads(params, P)[0]
        W[0, 1, 2] = old
        assert abs((up - down) / 2e-6 - grads["layers"][i][k][0, 1, 2]) < 1e-7 * max(1, abs(loss))


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3, 9])
def test_constructed_lsa_equals_gradient_descent(rng, n_layers, n):
    """L layers with the von Oswald weights = L GD steps from w_0 = 0, to float64 rounding."""
    d, eta = 4, 0.37
    P = sample_prompts(rng, 16, n, dense_prior(d), 0.5)
    lsa = lsa_predict(gd_lsa_params(d, eta, n_layers), P.X, P.y, P.x_q)
    gd = gd_predict(P.X, P.y, P.x_q, eta, steps=n_layers)
    assert np.abs(lsa - gd).max() <= 1e-14 * max(1.0, np.abs(gd).max())


def test_constructed_lsa_leaves_x_and_turns_labels_into_residuals(rng):
    d, eta = 3, 0.5
    P = sample_prompts(rng, 4, 6, dense_prior(d), 0.0)
    Z = lsa_tokens(P.X, P.y, P.x_q)
    Z_out, _ = lsa_forward(gd_lsa_params(d, eta), Z)
    w1 = eta / 6 * np.einsum("bnd,bn->bd", P.X, P.y)
    assert np.array_equal(Z_out[..., :d], Z[..., :d])
    np.testing.assert_allclose(Z_out[:, :6, d], P.y - np.einsum("bnd,bd->bn", P.X, w1), rtol=0, atol=1e-14)


def test_ridge_tends_to_ols_as_lambda_goes_to_zero(rng):
    P = sample_prompts(rng, 8, 9, dense_prior(4), 0.3)  # n > d: OLS unique
    ols = ols_predict(P.X, P.y, P.x_q)
    errs = [np.abs(ridge_predict(P.X, P.y, P.x_q, lam) - ols).max() for lam in (1e-2, 1e-4, 1e-6)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5
    Pu = sample_prompts(rng, 8, 2, dense_prior(4), 0.3)  # n < d: the minimum-norm solution
    np.testing.assert_allclose(
        ridge_predict(Pu.X, Pu.y, Pu.x_q, 1e-9), ols_predict(Pu.X, Pu.y, Pu.x_q), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("n", [0, 2, 4, 11])
def test_gaussian_posterior_mean_is_ridge_with_lambda_sigma2_over_tau2(rng, n):
    tau, sigma = 1.5, 0.4
    prior = dense_prior(4, tau)
    P = sample_prompts(rng, 10, n, prior, sigma)
    pme = pme_predict(P.X, P.y, P.x_q, prior, sigma)
    if n == 0:
        assert np.array_equal(pme, np.zeros(10))
    else:
        ridge = ridge_predict(P.X, P.y, P.x_q, sigma**2 / tau**2)
        np.testing.assert_allclose(pme, ridge, rtol=1e-11, atol=1e-12)


def test_mixture_pme_by_brute_force_enumeration(rng):
    """The mixture posterior mean against an independent weight-space computation: for every
    component, the Gaussian posterior restricted to its support and Bayes' rule on the evidence."""
    d, s, sigma = 4, 2, 0.3
    prior = mixture_prior(d, s, p_sparse=0.6)
    P = sample_prompts(rng, 5, 3, prior, sigma)
    got = pme_predict(P.X, P.y, P.x_q, prior, sigma)
    for b in range(5):
        X, y = P.X[b], P.y[b]
        logs, means = [], []
        for pi, var in zip(prior.weights, prior.variances):
            S = var > 0
            Xs = X[:, S]
            prec = Xs.T @ Xs / sigma**2 + np.diag(1 / var[S])  # posterior precision on the support
            m = np.zeros(d)
            m[S] = np.linalg.solve(prec, Xs.T @ y / sigma**2)
            C = Xs @ np.diag(var[S]) @ Xs.T + sigma**2 * np.eye(len(y))
            logs.append(np.log(pi) - 0.5 * (y @ np.linalg.solve(C, y) + np.linalg.slogdet(C)[1]))
            means.append(m)
        post = np.exp(np.array(logs) - max(logs))
        post /= post.sum()
        assert abs((post @ np.array(means)) @ P.x_q[b] - got[b]) < 1e-12


def test_sparse_pme_beats_ridge_on_sparse_prompts(rng):
    """The Bayes-optimal predictor is best on its own prior (a sanity check of (5))."""
    prior, sigma = sparse_prior(4, 1), 0.1
    P = sample_prompts(rng, 4000, 3, prior, sigma)
    pme = np.mean((pme_predict(P.X, P.y, P.x_q, prior, sigma) - P.target) ** 2)
    lam = sigma**2 / prior.second_moment()[0]
    ridge = np.mean((ridge_predict(P.X, P.y, P.x_q, lam) - P.target) ** 2)
    assert pme < 0.5 * ridge


def test_priors_and_prompts(rng):
    prior = mixture_prior(4, 1, p_sparse=0.5)
    assert prior.weights.shape == (5,) and np.isclose(prior.weights.sum(), 1)
    np.testing.assert_allclose(prior.second_moment(), np.full(4, 0.5 + 0.5 / 4))
    w = sparse_prior(4, 1).sample(rng, 100)
    assert np.all((w != 0).sum(axis=1) == 1)
    P = sample_prompts(rng, 3, 5, dense_prior(4), 0.0)
    np.testing.assert_allclose(P.y, np.einsum("bnd,bd->bn", P.X, P.w), atol=1e-14)
    assert P.X.shape == (3, 5, 4) and P.y_q.shape == (3,) and np.allclose(P.y_q, P.target)
    assert 0 < optimal_gd_step(4, 4) < 1


def test_same_seed_same_prompts():
    a = sample_prompts(np.random.default_rng(1), 4, 3, mixture_prior(4, 1), 0.2)
    b = sample_prompts(np.random.default_rng(1), 4, 3, mixture_prior(4, 1), 0.2)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("X", "y", "x_q", "y_q", "w"))


def test_bad_input(rng):
    params = init_lsa(rng, 3)
    P = sample_prompts(rng, 2, 4, dense_prior(3), 0.1)
    with pytest.raises(ValueError, match=r"Z: expected token width D = 4"):
        lsa_forward(params, np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"n >= 1"):
        lsa_tokens(np.zeros((2, 0, 3)), np.zeros((2, 0)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"y: expected shape \(B, n\) = \(2, 4\)"):
        lsa_tokens(P.X, P.y[:, :3], P.x_q)
    with pytest.raises(ValueError, match=r"X: expected dtype float32 or float64, got int64"):
        ols_predict(np.zeros((2, 4, 3), dtype=np.int64), P.y, P.x_q)
    with pytest.raises(ValueError, match=r"params/layers/0: expected a dict with keys"):
        lsa_forward({"layers": [{"W_q": params["layers"][0]["W_q"]}]}, lsa_tokens(P.X, P.y, P.x_q))
    with pytest.raises(ValueError, match=r"lam: expected a finite number > 0"):
        ridge_predict(P.X, P.y, P.x_q, 0.0)
    with pytest.raises(ValueError, match=r"noise_std: expected a finite number > 0"):
        pme_predict(P.X, P.y, P.x_q, dense_prior(3), 0.0)
    with pytest.raises(ValueError, match=r"prior: expected dimension d = 3"):
        pme_predict(P.X, P.y, P.x_q, dense_prior(4), 0.1)
    with pytest.raises(ValueError, match=r"s: expected 1 <= s <= d = 3"):
        sparse_prior(3, 4)
    with pytest.raises(ValueError, match=r"weights, variances"):
        Prior(np.array([0.5, 0.6]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x_q: expected finite values"):
        gd_predict(P.X, P.y, np.full((2, 3), np.nan), 0.1)
