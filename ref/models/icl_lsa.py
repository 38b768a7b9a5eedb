"""Linear self-attention (LSA) as an in-context regression learner, and the weights with which one
LSA layer *is* one step of gradient descent (von Oswald et al., *Transformers learn in-context by
gradient descent*, arXiv 2212.07677, Prop. 1; used by Akyürek et al., arXiv 2211.15661, and
Panwar et al., arXiv 2306.04891, as the reference for what trained in-context learners compute).

Tokens (B batch, T = n + 1 tokens, D = d + 1 token width, H heads). A prompt of n examples
(x_i, y_i) and a query x_q becomes the tokens

    z_i = [x_i; y_i]   (i = 1..n),      z_q = [x_q; 0]   (the last token)                        (1)

One LSA layer (no softmax, no normalisation, no MLP), with a residual; every token attends to
the n context tokens (the query token is not a key or a value):

    q_j = z_j W_q^h,   k_i = z_i W_k^h,   v_i = z_i W_v^h              (W (H, D, D), row vectors)
    z_j <- z_j + sum_h (1/n) sum_{i <= n} (q_j . k_i) v_i                                        (2)

A model stacks L layers (2) and reads the prediction off the query token's last coordinate with
a minus sign (von Oswald et al.'s convention, explained below):

    y_hat = - z_q^(L)[d]                                                                         (3)

**One layer = one GD step.** Take W_q = W_k = [[I_d, 0], [0, 0]] and W_v = [[0, 0], [0, -eta]]
(H = 1). Then q_j . k_i = x_j . x_i and v_i = (0, -eta y_i), so (2) leaves the x-part alone and
maps the y-part to

    y_j <- y_j - (eta / n) sum_i y_i x_i . x_j = y_j - w_1 . x_j,   w_1 = (eta / n) X^T y,        (4)

and w_1 is exactly one step of gradient descent on L(w) = ||X w - y||^2 / (2n) from w_0 = 0.
On the query (y = 0) the y-part becomes -w_1 . x_q, hence the minus in (3); on the context it
becomes the residual y_i - w_1 . x_i, so a second identical layer takes the second GD step from
w_1 (the residuals are the new labels), and L layers compute L steps (:func:`gd_lsa_params`).

Conventions as ``ref.models``: ``lsa_forward(params, Z) -> (Z_out, cache)``,
``lsa_backward(params, cache, dZ_out) -> (dZ, grads)``, parameters a tree
``{"layers": [{"W_q", "W_k", "W_v"}, ...]}``.
"""

from __future__ import annotations

import numpy as np

from ref import checks

__all__ = [
    "init_lsa",
    "gd_lsa_params",
    "lsa_tokens",
    "lsa_layer",
    "lsa_layer_backward",
    "lsa_forward",
    "lsa_backward",
    "lsa_predict",
    "lsa_loss_and_grads",
]

_KEYS = ("W_k", "W_q", "W_v")


def init_lsa(rng: np.random.Generator, d: int, n_layers: int = 1, num_heads: int = 1, std: float = 0.2) -> dict:
    """Random LSA weights: every W ~ N(0, std^2), shape (H, D, D) with D = d + 1."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    D = checks.positive_int(d, "d") + 1
    L = checks.positive_int(n_layers, "n_layers")
    H = checks.positive_int(num_heads, "num_heads")
    return {"layers": [{k: std * rng.standard_normal((H, D, D)) for k in _KEYS} for _ in range(L)]}


def gd_lsa_params(d: int, eta: float, n_layers: int = 1) -> dict:
    """The weights of (4): ``n_layers`` layers, each one GD step of size eta (H = 1)."""
    d = checks.positive_int(d, "d")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not np.isfinite(eta):
        raise ValueError(f"eta: expected a finite number, got {eta!r}")
    P = np.zeros((1, d + 1, d + 1))
    P[0, :d, :d] = np.eye(d)  # W_q = W_k: the x-part only
    W_v = np.zeros((1, d + 1, d + 1))
    W_v[0, d, d] = -eta  # v_i = (0, ..., 0, -eta y_i)
    return {"layers": [{"W_q": P.copy(), "W_k": P.copy(), "W_v": W_v.copy()} for _ in range(checks.positive_int(n_layers, "n_layers"))]}


def lsa_tokens(X: np.ndarray, y: np.ndarray, x_q: np.ndarray) -> np.ndarray:
    """(1): X (B, n, d), y (B, n), x_q (B, d) -> Z (B, n + 1, d + 1), the query last with y = 0."""
    X = checks.float_array(X, "X", 3, "(B, n, d)")
    B, n, d = X.shape
    if n < 1:
        raise ValueError(f"X: expected at least one in-context example (n >= 1), got shape {X.shape}")
    checks.same_shape(checks.float_array(y, "y", 2, "(B, n)"), "y", (B, n), "(B, n)", "from X")
    checks.same_shape(checks.float_array(x_q, "x_q", 2, "(B, d)"), "x_q", (B, d), "(B, d)", "from X")
    Z = np.zeros((B, n + 1, d + 1), dtype=np.result_type(X, y, x_q))
    Z[:, :n, :d] = X
    Z[:, :n, d] = y
    Z[:, n, :d] = x_q
    return Z


def _check_layer(p, where: str):
    if not isinstance(p, dict) or set(p) != set(_KEYS):
        raise ValueError(f"{where}: expected a dict with keys {', '.join(_KEYS)}, got {p if not isinstance(p, dict) else sorted(p)}")
    W = checks.float_array(p["W_q"], f"{where}/W_q", 3, "(H, D, D)")
    if W.shape[1] != W.shape[2]:
        raise ValueError(f"{where}/W_q: expected shape (H, D, D), got {W.shape}")
    for k in ("W_k", "W_v"):
        checks.same_shape(checks.float_array(p[k], f"{where}/{k}", 3, "(H, D, D)"), f"{where}/{k}", W.shape, "(H, D, D)", "from W_q")
    return W.shape


def _check_tokens(Z, D: int, name: str = "Z") -> np.ndarray:
    Z = checks.float_array(Z, name, 3, "(B, T, D)")
    if Z.shape[2] != D:
        raise ValueError(f"{name}: expected token width D = {D} (from the parameters), got shape {Z.shape}")
    if Z.shape[1] < 2:
        raise ValueError(f"{name}: expected T >= 2 tokens (n >= 1 examples and the query), got shape {Z.shape}")
    return Z


def lsa_layer(params: dict, Z: np.ndarray):
    """(2) for one layer: Z (B, T, D) -> (Z + attention, cache); tokens 0..T-2 are the context."""
    H, D, _ = _check_layer(params, "params")
    Z = _check_tokens(Z, D)
    n = Z.shape[1] - 1
    Zc = Z[:, :n]  # (B, n, D) context tokens
    # matmul broadcasting over (B, H) rather than einsum: BLAS, not einsum's generic loops
    Q = Z[:, None] @ params["W_q"]  # (B, H, T, D)
    K = Zc[:, None] @ params["W_k"]  # (B, H, n, D)
    V = Zc[:, None] @ params["W_v"]  # (B, H, n, D)
    S = (Q @ K.swapaxes(-1, -2)) / n  # (B, H, T, n) scores (q_j . k_i) / n
    out = Z + (S @ V).sum(axis=1)  # (B, T, D)
    return out, (Z, Q, K, V, S)


def lsa_layer_backward(params: dict, cache, dout: np.ndarray):
    """Backward of (2): returns (dZ, grads)."""
    Z, Q, K, V, S = cache
    dout = checks.output_cotangent(dout, "dout", Z.shape, Z.dtype, "(B, T, D)")
    n = Z.shape[1] - 1
    Zc = Z[:, :n]
    G = dout[:, None]  # (B, 1, T, D), broadcast over heads
    dS = G @ V.swapaxes(-1, -2)  # (B, H, T, n)
    dV = S.swapaxes(-1, -2) @ G  # (B, H, n, D)
    dQ = (dS @ K) / n  # (B, H, T, D)
    dK = (dS.swapaxes(-1, -2) @ Q) / n  # (B, H, n, D)

    def dW(inp, d_out):  # sum over b, t of inp[b, t]^T d_out[b, h, t]: (H, D, D)
        return np.tensordot(inp, d_out, axes=([0, 1], [0, 2])).transpose(1, 0, 2)

    grads = {"W_q": dW(Z, dQ), "W_k": dW(Zc, dK), "W_v": dW(Zc, dV)}
    dZ = dout + (dQ @ params["W_q"].swapaxes(-1, -2)).sum(axis=1)  # residual + query path
    dZ[:, :n] += (dK @ params["W_k"].swapaxes(-1, -2) + dV @ params["W_v"].swapaxes(-1, -2)).sum(axis=1)
    return dZ, grads


def _check_model(params) -> list:
    if not isinstance(params, dict) or set(params) != {"layers"} or not isinstance(params["layers"], list) or not params["layers"]:
        raise ValueError("params: expected {'layers': [layer, ...]} with at least one layer (init_lsa)")
    shapes = {_check_layer(p, f"params/layers/{i}")[1] for i, p in enumerate(params["layers"])}
    if len(shapes) != 1:
        raise ValueError(f"params: expected every layer to have the same token width D, got {sorted(shapes)}")
    return params["layers"]


def lsa_forward(params: dict, Z: np.ndarray):
    """L layers (2): Z (B, T, D) -> (Z_out (B, T, D), cache)."""
    caches = []
    for p in _check_model(params):
        Z, c = lsa_layer(p, Z)
        caches.append(c)
    return Z, caches


def lsa_backward(params: dict, cache, dZ_out: np.ndarray):
    """Backward of :func:`lsa_forward`: returns (dZ, grads) with grads shaped like params."""
    layers = _check_model(params)
    grads = [None] * len(layers)
    dZ = dZ_out
    for i in reversed(range(len(layers))):
        dZ, grads[i] = lsa_layer_backward(layers[i], cache[i], dZ)
    return dZ, {"layers": grads}


def lsa_predict(params: dict, X: np.ndarray, y: np.ndarray, x_q: np.ndarray) -> np.ndarray:
    """(3): y_hat = -z_q[d] after every layer, (B,)."""
    Z_out, _ = lsa_forward(params, lsa_tokens(X, y, x_q))
    return -Z_out[:, -1, -1]


def lsa_loss_and_grads(params: dict, batch, rng=None):
    """Mean squared error of (3) on a batch ``(X, y, x_q, y_q)`` (or a ``Prompts``): (loss, grads),
    in the form ``ref.train.train`` expects."""
    if hasattr(batch, "x_q"):
        batch = (batch.X, batch.y, batch.x_q, batch.y_q)
    X, y, x_q, y_q = batch
    Z = lsa_tokens(X, y, x_q)
    checks.same_shape(checks.float_array(y_q, "y_q", 1, "(B,)"), "y_q", (Z.shape[0],), "(B,)", "from X")
    Z_out, cache = lsa_forward(params, Z)
    err = -Z_out[:, -1, -1] - y_q  # (B,)
    loss = float(np.mean(err**2))
    dZ_out = np.zeros_like(Z_out)
    dZ_out[:, -1, -1] = -2 * err / err.shape[0]
    _, grads = lsa_backward(params, cache, dZ_out)
    return loss, grads
