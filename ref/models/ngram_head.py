"""The n-gram head: attention with a hard, content-defined mask (Akyürek et al., arXiv 2401.12973).

The paper finds that transformers solve in-context language learning with "n-gram heads",
higher-order induction heads: position i attends to the positions s that *follow* an earlier
occurrence of the n-1 tokens ending at i, and copies the token found there. Hard-wired (no
parameters in the attention itself), the head is

    M_is = 1  iff  max(1, n-1) ≤ s ≤ i  and  x_{s-n+1..s-1} = x_{i-n+2..i}          (1)  the mask
    A_is = M_is / Σ_s' M_is'          (0 for a row without a match)                    (2)  uniform attention
    o_i  = Σ_s A_is e(x_s)            e = one-hot: o_i (vocab,)                        (3)  value = the token at s

Softmax attention with equal scores (q = k = 0) under the boolean mask M is exactly (2)-(3):
``ref.mixers.attention.attention_parallel(0, 0, onehot, mask=M)`` gives the same numbers (and
returns 0 on a fully masked row, as here).

**It is the in-context n-gram estimator.** Row i of (M @ onehot) counts, for each v, the s with a
matching window and x_s = v: that is c_i(v), eq. (4) of ``ref.tasks.regbench``. So
o_i = c_i / Σ_v c_i(v): the head's output *is* the normalised count estimator (before any
back-off). We compute o the way attention kernels do, normalising after the value sum,
o_i = (M @ onehot)_i / Σ_s M_is, so the equality holds to the last bit, not just to rounding.

**In a model** (``init_ngram_lm``): fixed heads of orders n ∈ ``orders`` feed the logits of a
language model from ``ref.models.lm`` through learned maps W_n (vocab, vocab),

    logits = LM(x) + Σ_n o^{(n)} W_n.                                                  (4)

A simplification of the paper's n-gram layers (there the head's output is mixed into the
hidden state inside the network); here the heads sit beside the network, so a recurrent LM gets
exact in-context n-gram statistics it cannot store in its fixed-size state. W_n starts at zero:
the model starts as the plain LM. Backward of (4): dW_n = Σ_{b,t} o^{(n)T} dlogits, and dlogits
flows unchanged into the LM (the heads have no parameters and their input is token ids).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.models.lm import init_lm, lm_backward, lm_forward
from ref.nn import cross_entropy, cross_entropy_backward

__all__ = [
    "ngram_mask",
    "ngram_head",
    "ngram_features",
    "ngram_logits",
    "ngram_logits_backward",
    "init_ngram_lm",
    "ngram_lm_forward",
    "ngram_lm_backward",
    "ngram_lm_loss_and_grads",
]

IGNORE_INDEX = -100


def _order(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: expected an integer >= 1 (the n of the n-gram), got {n!r}")
    return int(n)


def _tokens(tokens, vocab_size=None):
    if not isinstance(tokens, np.ndarray) or not np.issubdtype(tokens.dtype, np.integer) or tokens.ndim != 2:
        got = f"shape {tokens.shape}, dtype {tokens.dtype}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ValueError(f"tokens: expected an integer array (B, T), got {got}")
    checks.nonempty_time(tokens.shape[1], "tokens")
    if vocab_size is not None:
        V = checks.positive_int(vocab_size, "vocab_size")
        if tokens.min() < 0 or tokens.max() >= V:
            raise ValueError(f"tokens: expected ids in [0, {V - 1}] (vocab_size = {V}), got [{tokens.min()}, {tokens.max()}]")
    return tokens


def ngram_mask(tokens, n: int) -> np.ndarray:
    """M of (1), (B, T, T) bool: M[b, i, s] = position i (query) may attend to position s (key)."""
    tokens = _tokens(tokens)
    n = _order(n)
    B, T = tokens.shape
    i = np.arange(T)[:, None]  # (T, 1) query positions
    s = np.arange(T)[None, :]  # (1, T) key positions
    M = np.broadcast_to((s <= i) & (s >= max(1, n - 1)), (B, T, T)).copy()  # (B, T, T)
    pos = np.arange(T)
    for k in range(n - 1):  # compare x_{i-k} with x_{s-1-k}, k = 0 .. n-2
        qk, sk = pos - k, pos - 1 - k  # the compared positions; where one is < 0, M is already False
        x_q = tokens[:, np.clip(qk, 0, None)]  # (B, T)
        x_s = tokens[:, np.clip(sk, 0, None)]  # (B, T)
        M &= (x_q[:, :, None] == x_s[:, None, :]) & (qk >= 0)[:, None] & (sk >= 0)[None, :]
    return M


def ngram_head(tokens, n: int, vocab_size: int):
    """(2)-(3): ``o`` (B, T, vocab_size) float64 and ``matched`` (B, T) bool (row i has a match;
    o_i = 0 where it has none). o_i = c_i / Σ c_i, the normalised in-context n-gram counts."""
    tokens = _tokens(tokens, vocab_size)
    M = ngram_mask(tokens, n).astype(np.float64)  # (B, T, T): exp(score) = 1 on the mask, 0 off it
    onehot = np.eye(vocab_size)[tokens]  # (B, T, V): the value at s is e(x_s)
    z = M.sum(axis=-1, keepdims=True)  # (B, T, 1) the softmax normaliser
    o = (M @ onehot) / np.where(z == 0, 1.0, z)  # (3), normalised after the value sum
    return o, z[..., 0] > 0


def ngram_features(tokens, orders, vocab_size: int) -> np.ndarray:
    """The heads of every order, stacked: (len(orders), B, T, vocab_size)."""
    return np.stack([ngram_head(tokens, n, vocab_size)[0] for n in orders])


def ngram_logits(features, W):
    """(4) without the LM: y = Σ_n features[n] @ W[n]; features (N, B, T, V), W (N, V, V').
    Returns ``(y (B, T, V'), cache)``."""
    features = checks.float_array(features, "features", ndim=4, dims="(N, B, T, V)")
    W = checks.float_array(W, "W", ndim=3, dims="(N, V, V')")
    if W.shape[:2] != (features.shape[0], features.shape[3]):
        raise ValueError(f"W: expected shape (N, V, V') with (N, V) = {(features.shape[0], features.shape[3])} "
                         f"(from features), got {W.shape}")
    checks.same_dtype(W, "W", features.dtype, "the dtype of features")
    y = np.einsum("nbtv,nvw->btw", features, W)  # (B, T, V')
    return y, (features, W)


def ngram_logits_backward(dy, cache):
    """Returns ``(dfeatures, dW)``."""
    features, W = cache
    N, B, T, V = features.shape
    dy = checks.output_cotangent(dy, "dy", (B, T, W.shape[2]), features.dtype, "(B, T, V')")
    dfeatures = np.einsum("btw,nvw->nbtv", dy, W)  # (N, B, T, V)
    dW = np.einsum("nbtv,btw->nvw", features, dy)  # (N, V, V')
    return dfeatures, dW


# ---- a language model with fixed n-gram heads feeding its logits ------------------------------


def init_ngram_lm(rng, vocab_size: int, D: int, n_layers: int, block="gla", *, orders=(2, 3), dtype=np.float64, **lm_kwargs):
    """Parameters of (4): ``{"lm": init_lm(rng, vocab_size, D, n_layers, block, ...), "ngram": {"W":
    zeros (len(orders), V, V)}}``. Pass the same ``orders`` to :func:`ngram_lm_forward` (the tree
    holds only floating arrays, for the optimizers)."""
    orders = tuple(_order(n) for n in orders)
    if not orders or len(set(orders)) != len(orders):
        raise ValueError(f"orders: expected distinct n-gram orders, got {orders!r}")
    lm = init_lm(rng, vocab_size, D, n_layers, block, dtype=dtype, **lm_kwargs)
    return {"lm": lm, "ngram": {"W": np.zeros((len(orders), vocab_size, vocab_size), dtype)}}


def _check_params(params, orders):
    if not isinstance(params, dict) or set(params) != {"lm", "ngram"} or not isinstance(params["ngram"], dict) \
            or set(params["ngram"]) != {"W"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected {{'lm': LM params, 'ngram': {{'W'}}}} (init_ngram_lm), got {got}")
    orders = tuple(_order(n) for n in orders)
    if params["ngram"]["W"].shape[0] != len(orders):
        raise ValueError(f"orders: expected {params['ngram']['W'].shape[0]} orders (the first axis of W), got {orders!r}")
    return orders


def ngram_lm_forward(params, tokens, *, orders=(2, 3), **block_options):
    """(4): ``(logits (B, T, V), cache)``; ``orders`` as given to :func:`init_ngram_lm`."""
    orders = _check_params(params, orders)
    W = params["ngram"]["W"]
    logits_lm, c_lm = lm_forward(params["lm"], tokens, **block_options)  # (B, T, V)
    features = ngram_features(_tokens(tokens, W.shape[1]), orders, W.shape[1]).astype(W.dtype)  # (N, B, T, V)
    logits_ng, c_ng = ngram_logits(features, W)
    return logits_lm + logits_ng, (c_lm, c_ng)


def ngram_lm_backward(params, cache, dlogits):
    """Gradients shaped like ``params``: the LM's from lm_backward, dW from (4)."""
    c_lm, c_ng = cache
    _, dW = ngram_logits_backward(dlogits, c_ng)
    return {"lm": lm_backward(params["lm"], c_lm, dlogits), "ngram": {"W": dW}}


def ngram_lm_loss_and_grads(params, batch, rng=None, *, orders=(2, 3), **block_options):
    """``(loss, grads)`` for ``ref.train.train``: mean next-token cross-entropy over the loss mask."""
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        inputs, targets, mask = batch.inputs, batch.targets, getattr(batch, "loss_mask", None)
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        inputs, targets, mask = (*batch, None)[:3]
    else:
        raise ValueError(f"batch: expected a batch with inputs and targets or a tuple (inputs, targets[, loss_mask]), "
                         f"got {type(batch).__name__}")
    inputs, targets = _tokens(inputs), _tokens(targets)
    checks.same_shape(targets, "targets", inputs.shape, "(B, T)", "the shape of inputs")
    if mask is not None:
        checks.same_shape(mask, "loss_mask", inputs.shape, "(B, T)", "the shape of inputs")
        targets = np.where(mask, targets, IGNORE_INDEX)  # (B, T)
    logits, cache = ngram_lm_forward(params, inputs, orders=orders, **block_options)
    loss, c_loss = cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), ngram_lm_backward(params, cache, dlogits)
