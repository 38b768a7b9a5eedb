"""Successor heads (Gould, Ong, Ogden and Conmy, 2023, arXiv 2312.09230): a one-layer attention model
with an MLP0 in front, the effective OV circuit of each head, and the succession score.

A successor head is an attention head that *increments* ordinal tokens: when it attends to
"Monday" it raises the logit of "Tuesday", to "3" that of "4", to "March" that of "April". The paper
reads this off the head's weights alone, without running prompts: the **effective OV circuit** of
head h maps a token t to logits over the vocabulary (Section 2),

    e(t)       = W_E t + MLP0(W_E t)         the residual stream after MLP0 (the "effective embedding")  (1)
    ov_h(t)    = e(t) W_V^h W_O^h W_U        (vocab,) the logits the head writes when it attends to t    (2)

and the **succession score** of h is the fraction of ordinal tokens t (numbers, days, months,
letters; those with a successor) whose largest logit among the tokens of t's own category is
succ(t):

    score(h)   = mean_t [ argmax_{u in cat(t)} ov_h(t)_u == succ(t) ]                                 (3)

A head that copies scores 0 (its top logit is t itself), a random head about 1/|cat(t)|.
(The paper writes the effective embedding as MLP0(W_E t), the output of GPT-2's first MLP, which
dominates its residual stream there; here the head reads the sum (1), so (1) is exactly what its
OV circuit sees. ``effective_embedding(..., include_embedding=False)`` gives the MLP0 part alone.)

The model (B batch, T time, D width, H heads, K head dim, V vocab), small enough to train on a laptop
and shaped so that (1)-(2) are *exact*: positions enter only through RoPE inside attention (no
position embedding in the residual stream) and there are no norms, so the logits are linear in
the head outputs (direct logit attribution is exact):

    x      = W_E[tokens]                                   (B, T, D)                               (4)
    r      = x + MLP0(x),  MLP0(z) = gelu(z W_fc + b_fc) W_proj + b_proj   (GPT-2's MLP)         (5)
    y      = r + Attn(r)   causal softmax attention, H heads, RoPE on q and k, no biases          (6)
    logits = y W_U                                          (B, T, V)                              (7)

The pieces are ``ref.models.transformer``'s GPT-2 MLP and attention layer (imported, with their
backward passes); the backward here chains them. Parameters::

    embed (V, D)    mlp0 {W_fc (D, F), b_fc (F,), W_proj (F, D), b_proj (D,)}
    attn {W_q (D, H, K), W_k (D, H, K), W_v (D, H, K), W_o (H*K, D)}    unembed (D, V)

Head h's output is o^h W_O^h with W_O^h = W_o[h K:(h+1) K] (the rows of W_o that read head h), so
W_OV^h = W_v[:, h] W_O^h (D, D), and zero-ablating a head (``ablate_head``) zeroes those rows.

The paper's "mod-10 features" (Section 3; found with a sparse autoencoder on MLP0's output) encode
a number's last digit. ``mod10_probe_accuracy`` is the cheap linear stand-in: a ridge-regression
probe from the effective embeddings of some numbers to their value mod 10, scored on held-out
numbers (chance 1/10).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.models.gla import check_rng
from ref.models.transformer import (
    attention_layer,
    attention_layer_backward,
    gpt2_mlp,
    gpt2_mlp_backward,
    init_attention_layer,
)
from ref.nn import cross_entropy, cross_entropy_backward, embedding, embedding_backward

__all__ = [
    "init_successor_model",
    "successor_model_forward",
    "successor_model_backward",
    "successor_model_loss_and_grads",
    "ablate_head",
    "effective_embedding",
    "head_ov_matrix",
    "ov_logits",
    "succession_score",
    "mod10_probe_accuracy",
]


def init_successor_model(
    rng: np.random.Generator, vocab_size: int, D: int = 64, num_heads: int = 4, *, mlp_hidden: int | None = None
) -> dict:
    """Parameters of (4)-(7), float64. With no norm in the model the scales are chosen to keep
    activations O(1): embedding N(0, 1), every matrix N(0, 1/fan_in), biases 0. ``mlp_hidden``
    defaults to 4D; the head dim is D / num_heads."""
    rng = check_rng(rng)
    V = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    if D % H:
        raise ValueError(f"num_heads: expected a divisor of D = {D} (the head dim is D / num_heads), got {H}")
    F = 4 * D if mlp_hidden is None else checks.positive_int(mlp_hidden, "mlp_hidden")
    std = 1.0 / np.sqrt(D)
    return {
        "embed": rng.standard_normal((V, D)),
        "mlp0": {
            "W_fc": std * rng.standard_normal((D, F)),
            "b_fc": np.zeros(F),
            "W_proj": rng.standard_normal((F, D)) / np.sqrt(F),
            "b_proj": np.zeros(D),
        },
        "attn": init_attention_layer(rng, D, H, std=std, out_std=std),
        "unembed": std * rng.standard_normal((D, V)),
    }


def _check_params(params) -> tuple[int, int, int, int]:
    """(V, D, H, K) after checking the parameter tree's keys and shapes."""
    if not isinstance(params, dict) or set(params) != {"embed", "mlp0", "attn", "unembed"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with keys ['attn', 'embed', 'mlp0', 'unembed'], got {got}")
    V, D = checks.float_array(params["embed"], "params/embed", ndim=2, dims="(V, D)").shape
    unembed = checks.float_array(params["unembed"], "params/unembed", ndim=2, dims="(D, V)")
    if unembed.shape != (D, V):
        raise ValueError(f"params/unembed: expected shape (D, V) = {(D, V)} (from params/embed), got {unembed.shape}")
    W_q = checks.float_array(params["attn"]["W_q"], "params/attn/W_q", ndim=3, dims="(D, H, K)")
    if W_q.shape[0] != D:
        raise ValueError(f"params/attn/W_q: expected shape (D, H, K) with D = {D} (from params/embed), got {W_q.shape}")
    return V, D, W_q.shape[1], W_q.shape[2]


def _check_tokens(tokens, V: int, name: str = "tokens") -> np.ndarray:
    if not isinstance(tokens, np.ndarray) or not np.issubdtype(tokens.dtype, np.integer) or tokens.ndim != 2:
        is_array = isinstance(tokens, np.ndarray)
        got = f"{tokens.dtype} array of shape {tokens.shape}" if is_array else type(tokens).__name__
        raise ValueError(f"{name}: expected an integer array (B, T) of token ids, got {got}")
    checks.nonempty_time(tokens.shape[1], name)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
        raise ValueError(
            f"{name}: expected ids in [0, {V}) (the rows of params/embed), got min {tokens.min()}, max {tokens.max()}"
        )
    return tokens


def successor_model_forward(params: dict, tokens: np.ndarray):
    """Logits (B, T, V) of (4)-(7) for token ids (B, T). Returns ``(logits, cache)``."""
    V, D, H, K = _check_params(params)
    tokens = _check_tokens(tokens, V)
    x, c_embed = embedding(tokens, params["embed"])  # (4) (B, T, D)
    m, c_mlp = gpt2_mlp(params["mlp0"], x)  # (5)
    r = x + m  # (B, T, D)
    a, c_attn = attention_layer(params["attn"], r, rotary=True, mask="causal")  # (6)
    y = r + a  # (B, T, D)
    logits = y @ params["unembed"]  # (7) (B, T, V)
    return logits, (c_embed, c_mlp, c_attn, y)


def successor_model_backward(params: dict, cache, dlogits: np.ndarray) -> dict:
    """Gradients of every parameter (a tree shaped like ``params``) for an upstream dlogits (B, T, V)."""
    c_embed, c_mlp, c_attn, y = cache
    shape = y.shape[:2] + (params["unembed"].shape[1],)  # (B, T, V)
    dlogits = checks.output_cotangent(dlogits, "dlogits", shape, y.dtype, "(B, T, V)")
    # (7) logits = y W_U
    d_unembed = np.einsum("btd,btv->dv", y, dlogits)  # (D, V)
    dy = dlogits @ params["unembed"].T  # (B, T, D)
    # (6) y = r + Attn(r): r feeds both branches
    dr_attn, g_attn = attention_layer_backward(params["attn"], c_attn, dy)
    dr = dy + dr_attn
    # (5) r = x + MLP0(x)
    dx_mlp, g_mlp = gpt2_mlp_backward(params["mlp0"], c_mlp, dr)
    dx = dr + dx_mlp
    # (4)
    _, d_embed = embedding_backward(dx, c_embed)
    return {"embed": d_embed, "mlp0": g_mlp, "attn": g_attn, "unembed": d_unembed}


def successor_model_loss_and_grads(params: dict, batch, rng=None):
    """Mean next-token cross-entropy over every position of ``batch`` (inputs, targets, ...) and its
    gradients: the signature ``ref.train.train`` calls (``rng`` is unused: nothing is random)."""
    inputs, targets = batch[0], batch[1]
    logits, cache = successor_model_forward(params, inputs)
    loss, c_loss = cross_entropy(logits, targets)
    (dlogits,) = cross_entropy_backward(1.0, c_loss)[:1]
    return float(loss), successor_model_backward(params, cache, dlogits)


def _check_head(params, head) -> int:
    H = _check_params(params)[2]
    if not isinstance(head, numbers.Integral) or isinstance(head, bool) or not 0 <= head < H:
        raise ValueError(f"head: expected an integer in [0, {H}) (the heads of params/attn), got {head!r}")
    return int(head)


def ablate_head(params: dict, head: int) -> dict:
    """A copy of ``params`` with head ``head`` zero-ablated: the rows of W_o that read it set to 0."""
    h = _check_head(params, head)
    K = params["attn"]["W_q"].shape[2]
    W_o = params["attn"]["W_o"].copy()
    W_o[h * K : (h + 1) * K] = 0.0  # W_O^h = 0: the head writes nothing
    return {**params, "attn": {**params["attn"], "W_o": W_o}}


def effective_embedding(params: dict, token_ids, *, include_embedding: bool = True) -> np.ndarray:
    """(1): e(t) = W_E t + MLP0(W_E t) for each id in ``token_ids`` (N,) -> (N, D); with
    ``include_embedding=False`` the MLP0 output alone (the paper's MLP0(W_E t))."""
    V = _check_params(params)[0]
    ids = _check_tokens(np.asarray(token_ids)[None, :] if np.ndim(token_ids) == 1 else token_ids, V, "token_ids")[0]
    if not isinstance(include_embedding, bool):
        raise ValueError(f"include_embedding: expected True or False, got {include_embedding!r}")
    x = params["embed"][ids]  # (N, D)
    m, _ = gpt2_mlp(params["mlp0"], x)  # (N, D)
    return x + m if include_embedding else m


def head_ov_matrix(params: dict, head: int) -> np.ndarray:
    """W_OV^h = W_V^h W_O^h (D, D): what head h adds to the residual stream per unit of attention."""
    h = _check_head(params, head)
    K = params["attn"]["W_q"].shape[2]
    W_V = params["attn"]["W_v"][:, h, :]  # (D, K)
    W_O = params["attn"]["W_o"][h * K : (h + 1) * K]  # (K, D)
    return W_V @ W_O  # (D, D)


def ov_logits(params: dict, head: int, token_ids, *, include_embedding: bool = True) -> np.ndarray:
    """(2): the effective OV circuit of head ``head`` on ``token_ids`` (N,) -> logits (N, V)."""
    e = effective_embedding(params, token_ids, include_embedding=include_embedding)  # (N, D)
    return e @ head_ov_matrix(params, head) @ params["unembed"]  # (N, V)


def succession_score(logits: np.ndarray, categories: dict) -> dict:
    """(3) from OV logits (vocab_size, vocab_size): row t = the logits written when the head attends
    to token t (e.g. ``ov_logits(params, h, np.arange(V))``). ``categories`` maps a name to the ids
    of its tokens in order (succ(ids[i]) = ids[i + 1]; a cyclic category repeats its first id at the
    end). Returns the score per category and ``"all"``, the fraction over every token with a
    successor."""
    logits = checks.float_array(logits, "logits", ndim=2, dims="(vocab_size, vocab_size)")
    if not isinstance(categories, dict) or not categories:
        raise ValueError(f"categories: expected a non-empty dict name -> ids in order, got {categories!r}")
    hits, scores = [], {}
    for name, ids in categories.items():
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) < 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"categories[{name!r}]: expected at least two integer ids in order, got {ids!r}")
        if ids.min() < 0 or ids.max() >= logits.shape[0]:
            raise ValueError(
                f"categories[{name!r}]: expected ids in [0, {logits.shape[0]}) (the rows of logits), got {ids!r}"
            )
        members = np.unique(ids)  # the tokens of the category (a cyclic one lists its first id twice)
        within = logits[np.ix_(ids[:-1], members)]  # (n, |cat|): each token's logits over its category
        top = members[np.argmax(within, axis=1)]  # (n,)
        hit = top == ids[1:]
        scores[name] = float(hit.mean())
        hits.append(hit)
    scores["all"] = float(np.concatenate(hits).mean())
    return scores


def mod10_probe_accuracy(features: np.ndarray, values, train, test, *, ridge: float = 1e-2) -> float:
    """A linear probe for "value mod 10": ridge regression from ``features`` (N, D) (with a bias) to
    one-hot(values mod 10), fit on the rows ``train`` and scored (argmax accuracy) on ``test``."""
    X = checks.float_array(features, "features", ndim=2, dims="(N, D)")
    values = np.asarray(values)
    if values.shape != (X.shape[0],) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"values: expected integers of shape (N,) = ({X.shape[0]},), got {values.dtype} {values.shape}"
        )
    ridge = checks.positive_float(ridge, "ridge")
    train, test = np.asarray(train), np.asarray(test)
    Xb = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)  # (N, D + 1)
    Y = np.eye(10)[values % 10]  # (N, 10)
    A = Xb[train]
    W = np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ Y[train])  # (D + 1, 10)
    return float(np.mean(np.argmax(Xb[test] @ W, axis=1) == values[test] % 10))
