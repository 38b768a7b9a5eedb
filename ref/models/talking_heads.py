"""Talking heads: low-rank communication channels between attention heads (Merullo, Eickhoff and
Pavlick, *Talking Heads: Understanding Inter-layer Communication in Transformer Language Models*,
arXiv 2406.09519).

The model is an attention-only transformer (no MLPs, no norms; Elhage et al. 2021's setting, in
which every path through the network is a product of head matrices). Row-vector convention
(x (1, D) times matrices), B batch, T time, D width, H heads, K head dim, V vocabulary:

    x^0_t = E[token_t] + G[segment_t]                                                       (1)
    q = x W_q[:, h],  k = x W_k[:, h],  v = x W_v[:, h]                (D, K) per head     (2)
    o_h = causal_softmax(q k^T / sqrt(K)) v                            (ref.mixers.attention)
    x^{l+1} = x^l + sum_h o_h W_o[h]                                   W_o[h] (K, D)        (3)
    logits = x^L W_U                                                                         (4)

Per head, the two D x D matrices of the "mathematical framework":

    W_OV = W_v[:, h] W_o[h]   (what a head writes, given what it reads; rank <= K)          (5)
    W_QK = W_q[:, h] W_k[:, h]^T   (score_ts = x_t W_QK x_s^T / sqrt(K))                    (6)

The paper splits a sender head's OV matrix by its SVD into rank-1 components,

    W_OV = sum_r sigma_r u_r v_r^T,   u_r the direction read, v_r the direction written,    (7)

and scores each component against a receiver head in a later layer with the composition score of
Elhage et al. (2021),

    CS(A, B) = ||A B||_F / (||A||_F ||B||_F),                                                (8)

taken per component, A = sigma_r u_r v_r^T. In the row convention the three ways a later head can
read the sender's output y = x W_OV are (paper's column convention in brackets):

    query side (Q-composition):  A W_QK           [W_QK^T (sigma u v^T) in the column form]
    key side   (K-composition):  A W_QK^T         (score_ts = x_t W_QK (y_s)^T)
    value side (V-composition):  A W_OV(receiver)

CS is invariant to rescaling either matrix, and for a rank-1 A it reduces to ||v_r^T B||/||B||:
how much of the receiver's read-in space the written direction v_r hits.

Intervention (the paper edits the sender's channel, section 5): each component r of a chosen
head's W_OV is multiplied by a scale alpha_r,

    W_OV' = sum_r alpha_r sigma_r u_r v_r^T = W_OV + sum_r (alpha_r - 1) sigma_r u_r v_r^T   (9)

``attn_only_forward(..., interventions={(layer, head): alphas})`` applies (9) in the forward by
adding the second term's head output, A_h x dW (the same attention pattern A_h as the head). alpha = 1
is the unedited model, alpha = 0 on every component removes the head's output, alpha > 1 amplifies
the channel. The backward is defined for the unedited model only: interventions are for analysis.

Parameters::

    embed (V, D)   segment (S, D)   unembed (D, V)
    layers [{W_q (D, H, K), W_k (D, H, K), W_v (D, H, K), W_o (H, K, D)}]

Forward ``attn_only_forward(params, tokens, segments) -> (logits (B, T, V), cache)``; backward
``attn_only_backward(params, cache, dlogits) -> grads`` shaped like params (DESIGN.md's pairs).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.nn import cross_entropy, cross_entropy_backward

__all__ = [
    "COMPOSITIONS",
    "init_attn_only",
    "attn_only_forward",
    "attn_only_backward",
    "attn_only_loss_and_grads",
    "ov_matrix",
    "qk_matrix",
    "ov_components",
    "composition_score",
    "component_composition_scores",
    "scaled_ov",
]

COMPOSITIONS = ("q", "k", "v")  # which input of the receiver reads the sender's output
INIT_STD = 0.02


def init_attn_only(
    rng: np.random.Generator,
    vocab_size: int,
    *,
    D: int = 32,
    n_layers: int = 2,
    n_heads: int = 2,
    head_dim: int | None = None,
    n_segments: int = 2,
    std: float = INIT_STD,
) -> dict:
    """An attention-only transformer: weights normal(``std``); head_dim defaults to D / n_heads."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    V = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    L = checks.positive_int(n_layers, "n_layers")
    H = checks.positive_int(n_heads, "n_heads")
    S = checks.positive_int(n_segments, "n_segments")
    if head_dim is None:
        if D % H:
            raise ValueError(f"n_heads: expected a divisor of D = {D} when head_dim is not given, got {H}")
        head_dim = D // H
    K = checks.positive_int(head_dim, "head_dim")
    std = checks.positive_float(std, "std")

    def normal(*shape):
        return std * rng.standard_normal(shape)

    return {
        "embed": normal(V, D),
        "segment": normal(S, D),
        "layers": [
            {"W_q": normal(D, H, K), "W_k": normal(D, H, K), "W_v": normal(D, H, K), "W_o": normal(H, K, D)}
            for _ in range(L)
        ],
        "unembed": normal(D, V),
    }


# ------------------------------------------------------------------------------------------------
# validation


def _check_params(params) -> tuple[int, int, int, int, int]:
    """(V, D, L, H, K) from the shapes, or a ValueError naming the bad entry."""
    if not isinstance(params, dict) or not {"embed", "segment", "layers", "unembed"} <= set(params):
        raise ValueError("params: expected a dict with embed, segment, layers and unembed (init_attn_only)")
    E = checks.float_array(params["embed"], "params['embed']", 2, "(V, D)")
    V, D = E.shape
    checks.float_array(params["segment"], "params['segment']", 2, "(S, D)")
    if params["segment"].shape[1] != D:
        raise ValueError(f"params['segment']: expected (S, {D}), got {params['segment'].shape}")
    checks.same_shape(checks.float_array(params["unembed"], "params['unembed']"), "params['unembed']", (D, V), "(D, V)", "embed")
    layers = params["layers"]
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"params['layers']: expected a non-empty list of layers, got {type(layers).__name__}")
    if not isinstance(layers[0], dict) or np.ndim(layers[0].get("W_q")) != 3:
        raise ValueError("params['layers'][0]: expected a dict with W_q of shape (D, H, K)")
    H, K = np.shape(layers[0]["W_q"])[1:]
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ValueError(f"params['layers'][{i}]: expected a dict of W_q, W_k, W_v, W_o")
        for key, shape, dims in (("W_q", (D, H, K), "(D, H, K)"), ("W_k", (D, H, K), "(D, H, K)"),
                                 ("W_v", (D, H, K), "(D, H, K)"), ("W_o", (H, K, D), "(H, K, D)")):
            if key not in layer:
                raise ValueError(f"params['layers'][{i}]: missing {key}")
            w = checks.float_array(layer[key], f"params['layers'][{i}]['{key}']")
            checks.same_shape(w, f"params['layers'][{i}]['{key}']", shape, dims, "the first layer's W_q")
    return V, D, len(layers), int(H), int(K)


def _check_ids(ids, name: str, high: int, shape=None) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: expected (B, T) integer ids, got shape {ids.shape} dtype {ids.dtype}")
    if shape is not None and ids.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the shape of tokens), got {ids.shape}")
    if ids.size == 0 or ids.min() < 0 or ids.max() >= high:
        raise ValueError(f"{name}: expected ids in [0, {high}), got values in [{ids.min() if ids.size else '-'}, {ids.max() if ids.size else '-'}]")
    return ids


def _heads_in(x, W):
    """(2): x (B, T, D) times W (D, H, K), per head: (B, T, H, K)."""
    B, T, D = x.shape
    return (x.reshape(B * T, D) @ W.reshape(D, -1)).reshape(B, T, W.shape[1], W.shape[2])


def _check_head(params, layer, head, name: str) -> tuple[int, int]:
    _, _, L, H, _ = _check_params(params)
    for value, n, bound in ((layer, "layer", L), (head, "head", H)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < bound:
            raise ValueError(f"{name}: expected {n} in [0, {bound}), got {value!r}")
    return int(layer), int(head)


def _check_interventions(interventions, params, K: int) -> dict:
    if interventions is None:
        return {}
    if not isinstance(interventions, dict):
        raise ValueError(f"interventions: expected a dict {{(layer, head): scales (K,)}}, got {type(interventions).__name__}")
    out = {}
    for where, scales in interventions.items():
        if not (isinstance(where, tuple) and len(where) == 2):
            raise ValueError(f"interventions: expected keys (layer, head), got {where!r}")
        layer, head = _check_head(params, *where, name="interventions")
        scales = checks.float_array(np.asarray(scales, dtype=np.float64), f"interventions[{where}]", 1, "(K,)")
        if scales.shape != (K,):
            raise ValueError(f"interventions[{where}]: expected one scale per SVD component, shape ({K},), got {scales.shape}")
        checks.finite(scales, f"interventions[{where}]")
        out[(layer, head)] = scales
    return out


# ------------------------------------------------------------------------------------------------
# the head matrices (5)-(7) and the composition score (8)


def ov_matrix(params, layer: int, head: int) -> np.ndarray:
    """(5): W_OV = W_v[:, h] W_o[h], (D, D); a head writes x W_OV (times its attention pattern)."""
    layer, head = _check_head(params, layer, head, "ov_matrix")
    p = params["layers"][layer]
    return p["W_v"][:, head] @ p["W_o"][head]  # (D, K) @ (K, D)


def qk_matrix(params, layer: int, head: int) -> np.ndarray:
    """(6): W_QK = W_q[:, h] W_k[:, h]^T, (D, D); score_ts = x_t W_QK x_s^T / sqrt(K)."""
    layer, head = _check_head(params, layer, head, "qk_matrix")
    p = params["layers"][layer]
    return p["W_q"][:, head] @ p["W_k"][:, head].T  # (D, K) @ (K, D)


def ov_components(W_ov, rank: int | None = None):
    """(7): the SVD W_OV = sum_r sigma_r u_r v_r^T, largest sigma first, truncated to ``rank``
    components (default: all D). Returns U (D, R) (directions read), sigma (R,), Vt (R, D)
    (directions written); component r is ``sigma[r] * np.outer(U[:, r], Vt[r])``."""
    W_ov = checks.float_array(W_ov, "W_ov", 2, "(D, D)")
    checks.finite(W_ov, "W_ov")
    U, sigma, Vt = np.linalg.svd(W_ov)
    R = len(sigma) if rank is None else checks.positive_int(rank, "rank")
    if R > len(sigma):
        raise ValueError(f"rank: expected at most {len(sigma)} components, got {R}")
    return U[:, :R], sigma[:R], Vt[:R]


def composition_score(A, B, kind: str = "q") -> float:
    """(8) for a sender matrix A (its OV, or one rank-1 component of it) and a receiver matrix B
    (its QK for kind "q"/"k", its OV for "v"): ||A B||, ||A B^T|| or ||A B||, over ||A|| ||B||."""
    kind = checks.one_of(kind, "kind", COMPOSITIONS)
    A = checks.float_array(A, "A", 2, "(D, D)")
    B = checks.float_array(B, "B", 2, "(D, D)")
    if A.shape[1] != B.shape[0] or B.shape[0] != B.shape[1]:
        raise ValueError(f"B: expected a square ({A.shape[1]}, {A.shape[1]}) matrix, got {B.shape}")
    norm = np.linalg.norm(A) * np.linalg.norm(B)
    if norm == 0:
        raise ValueError("A, B: the composition score needs two non-zero matrices")
    product = A @ (B.T if kind == "k" else B)
    return float(np.linalg.norm(product) / norm)


def component_composition_scores(params, sender: tuple, receiver: tuple, kind: str = "q") -> np.ndarray:
    """CS (8) of every rank-1 component (7) of the sender head's OV against the receiver head,
    (K,) in the order of the singular values. ``sender``/``receiver`` are (layer, head), the
    receiver in a later layer."""
    kind = checks.one_of(kind, "kind", COMPOSITIONS)
    ls, hs = _check_head(params, *sender, name="sender")
    lr, hr = _check_head(params, *receiver, name="receiver")
    if lr <= ls:
        raise ValueError(f"receiver: expected a layer after the sender's ({ls}), got layer {lr}")
    K = params["layers"][ls]["W_v"].shape[2]
    U, sigma, Vt = ov_components(ov_matrix(params, ls, hs), rank=K)
    B = ov_matrix(params, lr, hr) if kind == "v" else qk_matrix(params, lr, hr)
    return np.array([composition_score(sigma[r] * np.outer(U[:, r], Vt[r]), B, kind) for r in range(K)])


def scaled_ov(W_ov, scales) -> np.ndarray:
    """(9): W_OV with component r multiplied by scales[r] (one scale per kept component)."""
    scales = checks.float_array(np.asarray(scales, dtype=np.float64), "scales", 1, "(R,)")
    U, sigma, Vt = ov_components(W_ov, rank=len(scales))
    return W_ov + (U * (sigma * (scales - 1.0))) @ Vt  # W_OV + sum_r (alpha_r - 1) sigma_r u_r v_r^T


# ------------------------------------------------------------------------------------------------
# forward and backward (1)-(4), with the intervention (9)


def attn_only_forward(params, tokens, segments, *, interventions: dict | None = None):
    """Logits (B, T, V) of the attention-only transformer, and the cache for the backward.

    ``interventions``: {(layer, head): scales (K,)} rescales the SVD components of those heads'
    OV matrices by (9), in the forward."""
    V, D, L, H, K = _check_params(params)
    tokens = _check_ids(tokens, "tokens", V)
    segments = _check_ids(segments, "segments", params["segment"].shape[0], tokens.shape)
    edits = _check_interventions(interventions, params, K)

    B, T = tokens.shape
    x = params["embed"][tokens] + params["segment"][segments]  # (1): (B, T, D)
    layer_caches = []
    for l, p in enumerate(params["layers"]):
        q = _heads_in(x, p["W_q"])  # (2): (B, T, H, K)
        k = _heads_in(x, p["W_k"])
        v = _heads_in(x, p["W_v"])
        o, attn_cache = attention_parallel(q, k, v, mask="causal")  # (B, T, H, K)
        y = o.reshape(B, T, H * K) @ p["W_o"].reshape(H * K, D)  # (3): (B, T, D), the sum over heads
        for (le, h), scales in edits.items():
            if le == l:
                dW = scaled_ov(ov_matrix(params, l, h), scales) - ov_matrix(params, l, h)  # (9): (D, D)
                extra, _ = attention_parallel(q[:, :, h : h + 1], k[:, :, h : h + 1], (x @ dW)[:, :, None], mask="causal")
                y = y + extra[:, :, 0]  # A_h x dW: (B, T, D)
        layer_caches.append((x, o, attn_cache))
        x = x + y  # (3)
    logits = x @ params["unembed"]  # (4): (B, T, V)
    return logits, (tokens, segments, layer_caches, x, bool(edits))


def attn_only_backward(params, cache, dlogits) -> dict:
    """Gradients of every parameter (a tree shaped like params) from dlogits (B, T, V)."""
    tokens, segments, layer_caches, x_last, edited = cache
    if edited:
        raise ValueError("cache: the backward is defined for the unedited model (interventions=None)")
    dlogits = checks.output_cotangent(dlogits, "dlogits", x_last.shape[:2] + (params["unembed"].shape[1],), x_last.dtype, "(B, T, V)")
    D = x_last.shape[-1]
    grads = {"unembed": x_last.reshape(-1, D).T @ dlogits.reshape(-1, dlogits.shape[-1])}  # (4): (D, V)
    dx = dlogits @ params["unembed"].T  # (B, T, D)
    layer_grads = []
    for p, (x, o, attn_cache) in zip(reversed(params["layers"]), reversed(layer_caches)):
        # (3): x^{l+1} = x + y, so dy = dx and dx passes through the residual unchanged
        H, K = p["W_o"].shape[:2]
        o2 = o.reshape(-1, H * K)  # (B*T, H*K)
        dx2 = dx.reshape(-1, D)  # (B*T, D)
        dW_o = (o2.T @ dx2).reshape(H, K, D)
        do = (dx2 @ p["W_o"].reshape(H * K, D).T).reshape(o.shape)  # (B, T, H, K)
        dq, dk, dv = attention_parallel_backward(do, attn_cache)
        x2 = x.reshape(-1, D)  # (B*T, D)
        g = {"W_o": dW_o}
        for name, d in (("W_q", dq), ("W_k", dk), ("W_v", dv)):
            d2 = d.reshape(-1, H * K)  # (B*T, H*K)
            g[name] = (x2.T @ d2).reshape(D, H, K)  # (2)
            dx = dx + (d2 @ p[name].reshape(D, H * K).T).reshape(dx.shape)
        g = {name: g[name] for name in ("W_q", "W_k", "W_v", "W_o")}
        layer_grads.append(g)
    grads["layers"] = layer_grads[::-1]
    dE = np.zeros_like(params["embed"])
    np.add.at(dE, tokens, dx)  # (1): a token seen twice gets both gradients
    dG = np.zeros_like(params["segment"])
    np.add.at(dG, segments, dx)
    grads["embed"], grads["segment"] = dE, dG
    return {k: grads[k] for k in ("embed", "segment", "layers", "unembed")}


def attn_only_loss_and_grads(params, tokens, segments, targets, loss_mask):
    """Mean cross-entropy over the positions where ``loss_mask`` (B, T) is True, and its grads."""
    logits, cache = attn_only_forward(params, tokens, segments)
    loss_mask = np.asarray(loss_mask)
    if loss_mask.shape != logits.shape[:2] or loss_mask.dtype != np.bool_:
        raise ValueError(f"loss_mask: expected a bool array of shape {logits.shape[:2]}, got {loss_mask.dtype} {loss_mask.shape}")
    masked_targets = np.where(loss_mask, np.asarray(targets), -100)  # -100: cross_entropy's ignore_index
    loss, ce_cache = cross_entropy(logits, masked_targets)
    dlogits, _ = cross_entropy_backward(1.0, ce_cache)
    return float(loss), attn_only_backward(params, cache, dlogits)
