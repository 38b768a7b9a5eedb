"""In-context linear regression: random prompts and the reference learners a trained model is
compared with (Akyürek et al., *What learning algorithm is in-context learning? Investigations
with linear models*, arXiv 2211.15661; Panwar, Ahuja and Goyal, *In-Context Learning through the
Bayesian Prism*, arXiv 2306.04891).

A prompt is n labelled examples and a query (B batch, n examples, d input dim)::

    w ~ prior,   x_i, x_q ~ N(0, I_d),   y_i = w . x_i + eps_i,   eps_i ~ N(0, sigma^2)          (1)

The prior is a mixture of zero-mean Gaussians, w ~ sum_k pi_k N(0, Sigma_k) (:class:`Prior`):

* ``dense``: one component, Sigma = tau^2 I (Akyürek et al.'s w ~ N(0, I) with tau = 1);
* ``sparse``: w has s non-zero coordinates on a support drawn uniformly, N(0, tau^2) on it: one
  component per support S, Sigma_S = tau^2 diag(1_S), with equal weights;
* ``mixture``: dense with probability 1 - p_sparse, sparse otherwise (Panwar et al.'s
  dense + sparse regression mixture).

The predictors all map ``(X (B, n, d), y (B, n), x_q (B, d)) -> y_hat (B,)``:

    OLS:    w = argmin ||X w - y||^2, the minimum-norm solution when n < d (lstsq)            (2)
    ridge:  w = (X^T X + lam I)^-1 X^T y                                                      (3)
    GD:     w_0 = 0,  w_{k+1} = w_k + (eta / n) X^T (y - X w_k)                               (4)
            (gradient descent on L(w) = ||X w - y||^2 / (2n), step size eta)
    PME:    E[w | X, y] = sum_k p(k | X, y) Sigma_k X^T (X Sigma_k X^T + sigma^2 I)^-1 y,    (5)
            p(k | X, y) ∝ pi_k N(y; 0, X Sigma_k X^T + sigma^2 I)

For a single Gaussian component Sigma = tau^2 I, (5) is ridge (3) with lam = sigma^2 / tau^2
(push-through identity); for the sparse and mixture priors (5) enumerates every support exactly,
which is cheap for small d (C(4, 1) = 4 supports at d = 4). The posterior mean minimises the
expected squared error over prompts from the prior: it is the Bayes-optimal predictor.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = [
    "Prior",
    "dense_prior",
    "sparse_prior",
    "mixture_prior",
    "Prompts",
    "sample_prompts",
    "ols_predict",
    "ridge_predict",
    "gd_predict",
    "pme_predict",
    "optimal_gd_step",
]


def _positive(value, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Prior:
    """w ~ sum_k weights[k] N(0, diag(variances[k])): ``weights`` (C,), ``variances`` (C, d).
    (Diagonal covariances are all the dense, sparse and mixture priors need.)"""

    weights: np.ndarray
    variances: np.ndarray
    name: str = "prior"

    def __post_init__(self):
        w = checks.float_array(np.asarray(self.weights, dtype=np.float64), "weights", 1, "(C,)")
        v = checks.float_array(np.asarray(self.variances, dtype=np.float64), "variances", 2, "(C, d)")
        if v.shape[0] != w.shape[0] or w.shape[0] == 0:
            raise ValueError(f"variances: expected shape (C, d) with C = {w.shape[0]} (the weights), got {v.shape}")
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0) or np.any(v < 0) or not np.all(np.isfinite(v)):
            raise ValueError("weights, variances: expected weights >= 0 summing to 1 and finite variances >= 0")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "variances", v)

    @property
    def d(self) -> int:
        return self.variances.shape[1]

    def second_moment(self) -> np.ndarray:
        """E[w w^T] = sum_k pi_k Sigma_k, diagonal: (d,)."""
        return self.weights @ self.variances

    def sample(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """B draws of w: (B, d)."""
        k = rng.choice(len(self.weights), size=B, p=self.weights)  # (B,)
        return np.sqrt(self.variances[k]) * rng.standard_normal((B, self.d))


def dense_prior(d: int, tau: float = 1.0) -> Prior:
    """w ~ N(0, tau^2 I_d)."""
    d = checks.positive_int(d, "d")
    tau = _positive(tau, "tau")
    return Prior(np.ones(1), np.full((1, d), tau**2), name="dense")


def _sparse_components(d: int, s: int, tau: float) -> np.ndarray:
    supports = list(itertools.combinations(range(d), s))
    v = np.zeros((len(supports), d))
    for c, S in enumerate(supports):
        v[c, list(S)] = tau**2
    return v


def sparse_prior(d: int, s: int, tau: float = 1.0) -> Prior:
    """s non-zero coordinates, support uniform over the C(d, s) subsets, N(0, tau^2) on it."""
    d = checks.positive_int(d, "d")
    s = checks.positive_int(s, "s")
    if s > d:
        raise ValueError(f"s: expected 1 <= s <= d = {d}, got {s}")
    v = _sparse_components(d, s, _positive(tau, "tau"))
    return Prior(np.full(len(v), 1 / len(v)), v, name=f"{s}-sparse")


def mixture_prior(d: int, s: int, p_sparse: float = 0.5, tau: float = 1.0) -> Prior:
    """Dense N(0, tau^2 I) with probability 1 - p_sparse, else s-sparse (Panwar et al.'s mixture)."""
    if not (isinstance(p_sparse, numbers.Real) and 0 < p_sparse < 1):
        raise ValueError(f"p_sparse: expected a number in (0, 1), got {p_sparse!r}")
    dense, sparse = dense_prior(d, tau), sparse_prior(d, s, tau)
    weights = np.concatenate([[1 - p_sparse], p_sparse * sparse.weights])
    return Prior(weights, np.concatenate([dense.variances, sparse.variances]), name=f"dense + {s}-sparse")


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts (1): X (B, n, d), y (B, n), x_q (B, d), y_q (B,) (with noise), w (B, d)."""

    X: np.ndarray
    y: np.ndarray
    x_q: np.ndarray
    y_q: np.ndarray
    w: np.ndarray

    @property
    def target(self) -> np.ndarray:
        """The noiseless query label w . x_q: (B,)."""
        return np.einsum("bd,bd->b", self.w, self.x_q)


def sample_prompts(rng: np.random.Generator, B: int, n: int, prior: Prior, noise_std: float = 0.0) -> Prompts:
    """B prompts of n examples from (1); n = 0 gives empty contexts."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(prior, Prior):
        raise ValueError(f"prior: expected a Prior (dense_prior, sparse_prior, mixture_prior), got {type(prior).__name__}")
    B = checks.positive_int(B, "B")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    sigma = _positive(noise_std, "noise_std", allow_zero=True)
    d = prior.d
    w = prior.sample(rng, B)  # (B, d)
    X = rng.standard_normal((B, n + 1, d))  # (B, n + 1, d): the n examples, then the query
    y = np.einsum("bnd,bd->bn", X, w) + sigma * rng.standard_normal((B, n + 1))  # (B, n + 1)
    return Prompts(X[:, :n], y[:, :n], X[:, n], y[:, n], w)


def _check_prompt(X, y, x_q):
    X = checks.float_array(X, "X", 3, "(B, n, d)")
    B, n, d = X.shape
    y = checks.same_shape(checks.float_array(y, "y", 2, "(B, n)"), "y", (B, n), "(B, n)", "from X")
    x_q = checks.same_shape(checks.float_array(x_q, "x_q", 2, "(B, d)"), "x_q", (B, d), "(B, d)", "from X")
    for a, name in ((X, "X"), (y, "y"), (x_q, "x_q")):
        checks.finite(a, name)
    return X.astype(np.float64), y.astype(np.float64), x_q.astype(np.float64)


def ols_predict(X: np.ndarray, y: np.ndarray, x_q: np.ndarray) -> np.ndarray:
    """(2): least squares, one ``np.linalg.lstsq`` per prompt (minimum-norm when n < d)."""
    X, y, x_q = _check_prompt(X, y, x_q)
    w = np.zeros(x_q.shape)
    for b in range(X.shape[0]):
        if X.shape[1]:
            w[b] = np.linalg.lstsq(X[b], y[b], rcond=None)[0]
    return np.einsum("bd,bd->b", w, x_q)


def ridge_predict(X: np.ndarray, y: np.ndarray, x_q: np.ndarray, lam: float) -> np.ndarray:
    """(3): w = (X^T X + lam I)^-1 X^T y, lam > 0."""
    X, y, x_q = _check_prompt(X, y, x_q)
    lam = _positive(lam, "lam")
    d = X.shape[2]
    A = np.einsum("bnd,bne->bde", X, X) + lam * np.eye(d)  # (B, d, d)
    w = np.linalg.solve(A, np.einsum("bnd,bn->bd", X, y)[..., None])[..., 0]  # (B, d)
    return np.einsum("bd,bd->b", w, x_q)


def gd_predict(X: np.ndarray, y: np.ndarray, x_q: np.ndarray, eta: float, steps: int = 1) -> np.ndarray:
    """(4): ``steps`` steps of gradient descent on ||X w - y||^2 / (2n) from w_0 = 0."""
    X, y, x_q = _check_prompt(X, y, x_q)
    eta = _positive(eta, "eta", allow_zero=True)
    steps = checks.positive_int(steps, "steps")
    n = X.shape[1]
    w = np.zeros(x_q.shape)  # (B, d)
    if n == 0:
        return np.zeros(X.shape[0])
    for _ in range(steps):
        r = y - np.einsum("bnd,bd->bn", X, w)  # (B, n) residuals
        w = w + eta / n * np.einsum("bnd,bn->bd", X, r)
    return np.einsum("bd,bd->b", w, x_q)


def optimal_gd_step(n: int, d: int, noise_std: float = 0.0, tau: float = 1.0) -> float:
    """The step size that minimises the expected error of ONE GD step (4) for the dense prior:
    with S = X^T X / n, E[S] = I and E[S^2] = (n + d + 1) / n I (Wishart), the expected error
    E||eta X^T y / n - w||^2 is minimised by eta = n / (n + d + 1 + sigma^2 / tau^2)."""
    n = checks.positive_int(n, "n")
    d = checks.positive_int(d, "d")
    return n / (n + d + 1 + _positive(noise_std, "noise_std", allow_zero=True) ** 2 / _positive(tau, "tau") ** 2)


def pme_predict(X: np.ndarray, y: np.ndarray, x_q: np.ndarray, prior: Prior, noise_std: float) -> np.ndarray:
    """(5): the posterior mean of w under a Gaussian-mixture prior, exactly, in the n x n
    ("kernel") form: every component k gives C_k = X Sigma_k X^T + sigma^2 I (B, n, n),
    its evidence log N(y; 0, C_k) and its posterior mean Sigma_k X^T C_k^-1 y."""
    X, y, x_q = _check_prompt(X, y, x_q)
    if not isinstance(prior, Prior):
        raise ValueError(f"prior: expected a Prior, got {type(prior).__name__}")
    if prior.d != X.shape[2]:
        raise ValueError(f"prior: expected dimension d = {X.shape[2]} (from X), got {prior.d}")
    sigma = _positive(noise_std, "noise_std")
    B, n, d = X.shape
    log_ev, means = [], []
    for pi_k, var_k in zip(prior.weights, prior.variances):
        if pi_k == 0:
            continue
        XS = X * var_k  # (B, n, d) = X Sigma_k
        C = np.einsum("bnd,bmd->bnm", XS, X) + sigma**2 * np.eye(n)  # (B, n, n)
        alpha = np.linalg.solve(C, y[..., None])[..., 0]  # (B, n) = C^-1 y
        _, logdet = np.linalg.slogdet(C)
        log_ev.append(np.log(pi_k) - 0.5 * (np.einsum("bn,bn->b", y, alpha) + logdet + n * math.log(2 * math.pi)))
        means.append(np.einsum("bnd,bn->bd", XS, alpha))  # (B, d) = Sigma_k X^T C^-1 y
    log_ev = np.stack(log_ev, axis=1)  # (B, C)
    post = np.exp(log_ev - log_ev.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)  # (B, C) = p(k | X, y)
    w = np.einsum("bc,cbd->bd", post, np.stack(means))  # (B, d)
    return np.einsum("bd,bd->b", w, x_q)
