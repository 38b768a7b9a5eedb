"""HMT: the Hierarchical Memory Transformer (He, Cao, Qin, Prakriya, Sun and Cong, arXiv 2405.06067),
a wrapper that gives a decoder-only transformer (the "backbone model", BBM: ``ref.models.transformer``)
segment-level recurrence with memory embeddings, a cache of past memories and a recall attention.

The input (B, T) is cut into segments H_0, H_1, ... of L tokens (the last one may be shorter), and
each segment n is processed in turn (B batch, D model width, K recall width, N cache size, k sensory
tokens, j prefix length, X_n = E[H_n] the segment's token embeddings (B, L, D)):

    representation extraction:  S_n = BBM([T || X_n[0:j] || T])[last position]              (1)
    memory search (recall):     Q_n = S_n W_q,  K_n = M_n W_k,                               (2)
                                P_n = softmax(Q_n K_n^T / sqrt(K)) M_n                       (3)
    segment pass:               h_n = BBM([P_n || X_{n-1}[L-k:L] || X_n || P_n])             (4)
                                logits of H_n = head(h_n at the positions of X_n)
    memory writing:             m_n = h_n[last position],  M_{n+1} = the last N of M_n, m_n  (5)

T is a learnable prompt embedding, W_q (D, K) and W_k (D, K) the recall projections, M_n (B, m, D)
the cache of the m = min(n, N) most recent memory embeddings m_{n-m} .. m_{n-1}. The memory hierarchy
of the paper: the k "sensory" embeddings of the previous segment (level 0), the memory embedding
P_n passed into the segment (level 1, short-term), the cache of the last N memories that recall
searches (level 2, long-term). The first segment has an empty cache: it reads a learned initial
memory embedding ``memory`` instead of (2)-(3), as RMT does. BBM(.) here is the backbone without its
head: its embeddings-in, hidden-out path (the blocks and the final norm, :func:`backbone_hidden`),
so h_n and S_n are final-norm outputs. (In the official code these are ``hidden_states[-1]`` of a
Hugging Face model, which is also taken after the final norm.)

Two baselines share the parameters and the code path (``memory=``):

- ``"rmt"``: the memory token is carried from segment to segment, P_n = m_{n-1}, with no cache and
  no recall (the Recurrent Memory Transformer's read/write tokens, one memory token). It is HMT
  with N = 1: the softmax over a single memory is exactly 1, so (3) returns m_{n-1}.
- ``"none"``: no memory embeddings: each segment is the plain backbone on [X_{n-1}[L-k:L] || X_n]
  (with k = 0: the backbone on the segment alone, :func:`~ref.models.transformer.transformer_lm_forward`).

Training is backpropagation through time over all segments: the memories carry gradients back to
the segments that wrote them, both through the recurrence (P_n) and through the cache (keys and
values of (3)). ``bptt_segments=k2`` truncates it as RMT's ``k2``: only the memories written by the
last k2 segments carry gradients back; the earlier ones are treated as constants (detached).

Facts read in the official code (OswaldHe/HMT-pytorch, ``modeling_rmt/language_modeling.py`` and
``long_mem_cross_attn.py``):

- the extraction pass puts the prompt on both sides of the first L/2 tokens, [T || H_n[0:L/2] || T],
  and S_n is the hidden state at the last position (the trailing T): the same read/write layout as
  the segment pass, which writes a memory at its last position; ``prefix_len`` defaults to L // 2;
- recall: queries and keys are bias-free linear maps (``wq``, ``wk``) of width ``hidden_dim``,
  scores scaled by 1/sqrt(hidden_dim), the values are the cached memories themselves (no W_v);
- the cache keeps the last ``ltm_context`` (N) memories; the sensory memory is the last
  ``num_prepend`` tokens of the previous segment, embedded again (the same rows of E as X_{n-1});
- RMT's ``k2`` truncation in ``manage_gradients`` rebinds a local name to the detached memory, which
  leaves the gradient untouched, so the official runs backpropagate through every segment; we offer
  the truncation the code intends, as an option.

Parameters: the backbone's (``init_transformer_lm``: embed, blocks, norm, [head], [pos_embed]) and::

    prompt (D,)     T of (1)                      memory (D,)     the initial memory embedding
    W_q (D, K)      the recall query map (2)      W_k (D, K)      the recall key map (2)

Init: prompt and memory normal with the standard deviation of the token embedding (as the official
code scales its memory tokens), W_q and W_k normal(1/sqrt(D)) (the scale of torch's ``nn.Linear``).
With a GPT-2 backbone, every pass, (1) and (4), starts at position 0 of the learned positions.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ref import checks
from ref.models.gla import check_dtype, check_rng, normal
from ref.models.transformer import ARCHS, init_transformer_lm, transformer_blocks, transformer_blocks_backward
from ref.nn import (
    _validate,
    cross_entropy,
    cross_entropy_backward,
    embedding,
    embedding_backward,
    linear,
    linear_backward,
    softmax,
    softmax_backward,
)
from ref.train import tree_map, tree_zeros_like

__all__ = [
    "MEMORY_KINDS",
    "init_hmt",
    "backbone_hidden",
    "backbone_hidden_backward",
    "memory_recall",
    "memory_recall_backward",
    "update_cache",
    "hmt_forward",
    "hmt_backward",
    "hmt_loss_and_grads",
]

MEMORY_KINDS = ("hmt", "rmt", "none")
HMT_KEYS = ("prompt", "memory", "W_q", "W_k")


# ------------------------------------------------------------------------------------------------
# parameters


def init_hmt(
    rng: np.random.Generator,
    vocab_size: int,
    D: int,
    n_layers: int,
    arch: str = "llama",
    *,
    num_heads: int = 4,
    recall_dim: int | None = None,
    mlp_hidden: int | None = None,
    max_len: int | None = None,
    tied: bool | None = None,
    dtype=np.float64,
) -> dict:
    """A backbone ``init_transformer_lm(rng, vocab_size, D, n_layers, arch, ...)`` plus HMT's
    prompt T, initial memory embedding and recall maps W_q, W_k of width ``recall_dim`` (default D)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    params = init_transformer_lm(
        rng, vocab_size, D, n_layers, arch, num_heads=num_heads, mlp_hidden=mlp_hidden, max_len=max_len,
        tied=tied, dtype=dtype,
    )
    D = params["embed"].shape[1]
    K = D if recall_dim is None else checks.positive_int(recall_dim, "recall_dim")
    emb_std = float(params["embed"].std())
    params["prompt"] = normal(rng, (D,), emb_std, dtype)
    params["memory"] = normal(rng, (D,), emb_std, dtype)
    params["W_q"] = normal(rng, (D, K), 1.0 / math.sqrt(D), dtype)
    params["W_k"] = normal(rng, (D, K), 1.0 / math.sqrt(D), dtype)
    return params


def _check_params(params) -> tuple[int, np.dtype]:
    """(D, dtype) after checking the keys and the shapes HMT itself reads (the blocks check theirs)."""
    required = {"embed", "blocks", "norm", *HMT_KEYS}
    if not isinstance(params, dict) or not required <= set(params) <= required | {"head", "pos_embed"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"params: expected the backbone's {{'embed', 'blocks', 'norm'[, 'head'][, 'pos_embed']}} and "
            f"{{'prompt', 'memory', 'W_q', 'W_k'}} (init_hmt), got {got}"
        )
    E = checks.float_array(params["embed"], "params/embed", ndim=2, dims="(vocab, D)")
    vocab, D = E.shape
    dtype = E.dtype
    if not isinstance(params["blocks"], list) or not params["blocks"]:
        raise ValueError(f"params/blocks: expected a non-empty list of blocks, got {params['blocks']!r:.60}")
    for i, entry in enumerate(params["blocks"]):
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ARCHS:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"params/blocks/{i}: expected {{'gpt2' or 'llama': block params}}, got {got}")
    norm = params["norm"]
    if not isinstance(norm, dict) or set(norm) not in ({"weight"}, {"weight", "bias"}):
        got = sorted(norm) if isinstance(norm, dict) else type(norm).__name__
        raise ValueError(f"params/norm: expected {{'weight'}} (RMSNorm) or {{'weight', 'bias'}} (LayerNorm), got {got}")
    for key in ("prompt", "memory"):
        _validate.param(params[key], f"params/{key}", dtype, (D,), "(D,)", "D from params/embed")
    W_q = checks.float_array(params["W_q"], "params/W_q", ndim=2, dims="(D, K)")
    _validate.param(W_q, "params/W_q", dtype, (D, W_q.shape[1]), "(D, K)", "D from params/embed")
    _validate.param(params["W_k"], "params/W_k", dtype, W_q.shape, "(D, K)", "the shape of params/W_q")
    if "head" in params:
        _validate.param(params["head"], "params/head", dtype, (D, vocab), "(D, vocab)", "params/embed")
    return D, dtype


# ------------------------------------------------------------------------------------------------
# the backbone on embeddings: the blocks and the final norm, no token embedding and no head


def backbone_hidden(params: dict, x: np.ndarray):
    """BBM(x): the backbone's blocks and final norm on embeddings x (B, T, D), positions 0 .. T-1
    (the learned positions are added when the backbone has them). Returns ``(h (B, T, D), cache)``."""
    T = x.shape[1]
    c_pos = None
    if "pos_embed" in params:
        P = checks.float_array(params["pos_embed"], "params/pos_embed", ndim=2, dims="(max_len, D)")
        if T > P.shape[0]:
            raise ValueError(f"x: expected at most max_len = {P.shape[0]} positions (params/pos_embed), got T = {T}")
        x = x + P[:T]  # (B, T, D)
        c_pos = (T, P.shape)
    h, _, c_blocks = transformer_blocks(params, x)  # causal, as the backbone LM
    return h, (c_blocks, c_pos)


def backbone_hidden_backward(params: dict, cache, dh: np.ndarray):
    """Returns ``(dx, grads)``, grads a dict with the backbone's ``blocks``, ``norm`` and, when it
    has them, ``pos_embed``."""
    c_blocks, c_pos = cache
    dx, g = transformer_blocks_backward(params, c_blocks, dh)
    if c_pos is not None:
        T, shape = c_pos
        g["pos_embed"] = np.zeros(shape, dx.dtype)
        g["pos_embed"][:T] = dx.sum(axis=0)  # the positions are shared by the batch
    return dx, g


# ------------------------------------------------------------------------------------------------
# memory recall (2)-(3) and the cache (5)


def memory_recall(s: np.ndarray, M: np.ndarray, W_q: np.ndarray, W_k: np.ndarray):
    """(2)-(3): P = softmax((s W_q)(M W_k)^T / sqrt(K)) M for one query per sequence.
    s (B, D), M (B, m, D) the cached memories, W_q and W_k (D, K). Returns ``(P (B, D), weights
    (B, m), cache)``: the recalled embedding and the attention weights over the cache."""
    W_q = checks.float_array(W_q, "W_q", ndim=2, dims="(D, K)")
    D, K = W_q.shape
    dtype = W_q.dtype
    _validate.param(W_k, "W_k", dtype, (D, K), "(D, K)", "the shape of W_q")
    s = checks.float_array(s, "s", ndim=2, dims="(B, D)")
    checks.same_dtype(s, "s", dtype, "the dtype of W_q")
    if s.shape[1] != D:
        raise ValueError(f"s: expected shape (B, D) with D = {D} (the rows of W_q), got {s.shape}")
    M = checks.float_array(M, "M", ndim=3, dims="(B, m, D)")
    checks.same_dtype(M, "M", dtype, "the dtype of W_q")
    if M.shape[0] != s.shape[0] or M.shape[2] != D or M.shape[1] < 1:
        raise ValueError(f"M: expected shape (B, m, D) = ({s.shape[0]}, m >= 1, {D}) from s, got {M.shape}")
    scale = 1.0 / math.sqrt(K)
    # (2) Q_n = S_n W_q, K_n = M_n W_k
    q = s @ W_q  # (B, K)
    k = M @ W_k  # (B, m, K)
    # (3) weights = softmax(Q_n K_n^T / sqrt(K)) over the m cached memories
    scores = np.einsum("bk,bmk->bm", q, k) * scale  # (B, m)
    a, c_soft = softmax(scores, axis=-1)
    # (3) P_n = weights M_n: the values are the memories themselves
    P = np.einsum("bm,bmd->bd", a, M)  # (B, D)
    return P, a, (s, M, W_q, W_k, q, k, a, c_soft, scale)


def memory_recall_backward(dP: np.ndarray, cache):
    """Returns ``(ds, dM, dW_q, dW_k)``."""
    s, M, W_q, W_k, q, k, a, c_soft, scale = cache
    dP = _validate.cotangent(dP, "dP", s.shape, s.dtype, "(B, D)")
    da = np.einsum("bd,bmd->bm", dP, M)  # (B, m)
    dM = a[:, :, None] * dP[:, None, :]  # (B, m, D): the value path
    (dscores,) = softmax_backward(da, c_soft)  # (B, m)
    dq = np.einsum("bm,bmk->bk", dscores, k) * scale  # (B, K)
    dk = dscores[:, :, None] * q[:, None, :] * scale  # (B, m, K)
    dW_q = s.T @ dq  # (D, K)
    dW_k = np.einsum("bmd,bmk->dk", M, dk)  # (D, K)
    dM = dM + dk @ W_k.T  # (B, m, D): plus the key path
    return dq @ W_q.T, dM, dW_q, dW_k


def update_cache(cache_ids: list, new_id, N: int) -> list:
    """(5): the cache after writing ``new_id``: the last N entries of ``cache_ids + [new_id]``
    (first in, first out). Returns a new list; ``cache_ids`` is left as it was."""
    N = checks.positive_int(N, "N")
    return (list(cache_ids) + [new_id])[-N:]


# ------------------------------------------------------------------------------------------------
# the segment recurrence (1)-(5)


def _check_options(memory, segment_len, cache_size, sensory_len, prefix_len, bptt_segments):
    checks.one_of(memory, "memory", MEMORY_KINDS)
    L = checks.positive_int(segment_len, "segment_len")
    N = None if cache_size is None else checks.positive_int(cache_size, "cache_size")
    if isinstance(sensory_len, bool) or not isinstance(sensory_len, numbers.Integral) or not 0 <= sensory_len <= L:
        raise ValueError(f"sensory_len: expected an integer in [0, segment_len = {L}], got {sensory_len!r}")
    j = max(1, L // 2) if prefix_len is None else prefix_len
    if isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 1 <= j <= L:
        raise ValueError(f"prefix_len: expected an integer in [1, segment_len = {L}] or None (L // 2), got {j!r}")
    if bptt_segments is not None and (
        isinstance(bptt_segments, bool) or not isinstance(bptt_segments, numbers.Integral) or bptt_segments < 0
    ):
        raise ValueError(f"bptt_segments: expected None (full BPTT) or an integer >= 0, got {bptt_segments!r}")
    return memory, L, N, int(sensory_len), int(j), bptt_segments


def _check_tokens(tokens, vocab: int, name: str = "tokens") -> np.ndarray:
    tokens = _validate.int_array(tokens, name)
    if tokens.ndim != 2:
        raise ValueError(f"{name}: expected 2 axes (B, T), got shape {tokens.shape}")
    checks.nonempty_time(tokens.shape[1], name)
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise ValueError(
            f"{name}: expected ids in [0, vocab_size = {vocab}), got values in [{tokens.min()}, {tokens.max()}]"
        )
    return tokens


def hmt_forward(
    params: dict,
    tokens: np.ndarray,
    *,
    segment_len: int,
    memory: str = "hmt",
    cache_size: int | None = None,
    sensory_len: int = 0,
    prefix_len: int | None = None,
    bptt_segments: int | None = None,
):
    """Logits (B, T, vocab) for token ids (B, T), segment by segment (1)-(5).

    - ``segment_len``: L; the last segment holds the T mod L remaining tokens when L does not divide T.
    - ``memory``: ``"hmt"`` (recall over the cache), ``"rmt"`` (carry m_{n-1}), ``"none"`` (no memory).
    - ``cache_size``: N, the memories recall searches (None: every past segment's).
    - ``sensory_len``: k, embeddings of the previous segment's last tokens put in front (0 <= k <= L).
    - ``prefix_len``: j, tokens of the segment the extraction pass (1) reads (default L // 2).
    - ``bptt_segments``: see the module docstring (None: full BPTT); used by :func:`hmt_backward`.

    Returns ``(logits, cache)``; ``cache["memories"]`` holds m_0, m_1, ... (B, D) each,
    ``cache["segments"][n]`` the segment's ``bounds``, what it ``read`` ("init", "prev", "recall" or
    None), and for recall ``cache_ids`` (the segments whose memories were in the cache) and
    ``weights`` (B, m), the recall attention.
    """
    D, dtype = _check_params(params)
    memory, L, N, k, j, bptt = _check_options(memory, segment_len, cache_size, sensory_len, prefix_len, bptt_segments)
    tokens = _check_tokens(tokens, params["embed"].shape[0])
    B, T = tokens.shape
    X, c_emb = embedding(tokens, params["embed"])  # (B, T, D) the token embeddings
    bounds = [(a, min(a + L, T)) for a in range(0, T, L)]
    memories: list[np.ndarray] = []  # m_n (B, D)
    cache_ids: list[int] = []  # which memories the cache M holds (segment numbers)
    body = np.empty((B, T, D), dtype)  # h_n at the positions of the segments' tokens
    segments = []
    for n, (a, b) in enumerate(bounds):
        seg = {"bounds": (a, b), "read": None}
        # the memory embedding P_n the segment reads
        if memory == "none":
            P = None
        elif n == 0:
            P = np.broadcast_to(params["memory"], (B, D))  # the learned initial memory
            seg["read"] = "init"
        elif memory == "rmt":
            P = memories[n - 1]  # RMT: the last memory, carried
            seg["read"] = "prev"
        else:
            jn = min(j, b - a)
            T_emb = np.broadcast_to(params["prompt"], (B, 1, D))
            # (1) S_n = BBM([T || X_n[0:j] || T]) at the last position
            h_ext, c_ext = backbone_hidden(params, np.concatenate([T_emb, X[:, a : a + jn], T_emb], axis=1))
            M = np.stack([memories[i] for i in cache_ids], axis=1)  # (B, m, D) the cache M_n
            # (2)-(3) recall
            P, weights, c_rec = memory_recall(h_ext[:, -1], M, params["W_q"], params["W_k"])
            seg.update(read="recall", cache_ids=list(cache_ids), weights=weights, j=jn, ext=c_ext, rec=c_rec)
        # (4) the segment pass on [P_n || X_{n-1}[L-k:L] || X_n || P_n]
        kn = min(k, a)  # the first segment has nothing before it
        parts = ([P[:, None]] if P is not None else []) + [X[:, a - kn : a], X[:, a:b]]
        if P is not None:
            parts.append(P[:, None])
        h, c_main = backbone_hidden(params, np.concatenate(parts, axis=1))  # (B, 1 + k + L + 1, D)
        off = (1 if P is not None else 0) + kn  # where X_n starts in the pass
        body[:, a:b] = h[:, off : off + b - a]
        seg.update(k=kn, off=off, main=c_main)
        if P is not None:
            # (5) write m_n (the hidden state at the trailing memory position) into the cache
            memories.append(h[:, -1])
            cache_ids = update_cache(cache_ids, n, N if N is not None else len(bounds))
        segments.append(seg)
    W_head = params["head"] if "head" in params else params["embed"].T  # (D, vocab)
    logits, c_head = linear(body, W_head)  # (B, T, vocab)
    cache = {
        "memory": memory, "bptt": bptt, "shape": (B, T, D), "dtype": dtype, "logits_shape": logits.shape,
        "emb": c_emb, "head": c_head, "segments": segments, "memories": memories,
    }
    return logits, cache


def _add(acc: dict, g: dict) -> None:
    """acc[key] += g[key] for the keys of g (trees shaped like the params' entries)."""
    for key, val in g.items():
        acc[key] = tree_map(np.add, acc[key], val)


def hmt_backward(params: dict, cache, dlogits: np.ndarray) -> dict:
    """Backpropagation through time over every segment (truncated by ``bptt_segments``): the
    gradients of every parameter, shaped like ``params``."""
    B, T, D = cache["shape"]
    dtype = cache["dtype"]
    dlogits = _validate.cotangent(dlogits, "dlogits", cache["logits_shape"], dtype, "(B, T, vocab)")
    grads = tree_zeros_like(params)
    dbody, dW_head, _ = linear_backward(dlogits, cache["head"])  # (B, T, D)
    if "head" in params:
        grads["head"] = dW_head
    else:
        grads["embed"] = grads["embed"] + dW_head.T  # tied: the embedding is also the head
    segments, memories = cache["segments"], cache["memories"]
    S = len(segments)
    bptt = cache["bptt"]
    first_kept = 0 if bptt is None else S - bptt  # memories written before this segment are detached
    dmem = [np.zeros((B, D), dtype) for _ in memories]  # dL/dm_n from the later segments
    dX = np.zeros((B, T, D), dtype)  # dL/dX (the token embeddings)
    for n in range(S - 1, -1, -1):
        seg = segments[n]
        a, b = seg["bounds"]
        kn, off = seg["k"], seg["off"]
        has_mem = seg["read"] is not None
        # (4) the segment pass: the logits' share, plus dL/dm_n at the trailing memory position
        dh = np.zeros((B, off + (b - a) + (1 if has_mem else 0), D), dtype)
        dh[:, off : off + b - a] = dbody[:, a:b]
        if has_mem and n >= first_kept:
            dh[:, -1] += dmem[n]
        dZ, g = backbone_hidden_backward(params, seg["main"], dh)
        _add(grads, g)
        dX[:, a - kn : a] += dZ[:, off - kn : off]
        dX[:, a:b] += dZ[:, off : off + b - a]
        if not has_mem:
            continue
        dP = dZ[:, 0] + dZ[:, -1]  # P_n enters the pass twice (B, D)
        if seg["read"] == "init":
            grads["memory"] = grads["memory"] + dP.sum(axis=0)
        elif seg["read"] == "prev":
            if n - 1 >= first_kept:
                dmem[n - 1] += dP
        else:
            # (2)-(3) recall
            ds, dM, dW_q, dW_k = memory_recall_backward(dP, seg["rec"])
            grads["W_q"] = grads["W_q"] + dW_q
            grads["W_k"] = grads["W_k"] + dW_k
            for slot, i in enumerate(seg["cache_ids"]):
                if i >= first_kept:
                    dmem[i] += dM[:, slot]
            # (1) the extraction pass: ds reaches its last position
            jn = seg["j"]
            dh_ext = np.zeros((B, jn + 2, D), dtype)
            dh_ext[:, -1] = ds
            dE, g = backbone_hidden_backward(params, seg["ext"], dh_ext)
            _add(grads, g)
            grads["prompt"] = grads["prompt"] + dE[:, 0].sum(axis=0) + dE[:, -1].sum(axis=0)
            dX[:, a : a + jn] += dE[:, 1 : 1 + jn]
    _, dE_tokens = embedding_backward(dX, cache["emb"])
    grads["embed"] = grads["embed"] + dE_tokens
    return grads


def hmt_loss_and_grads(params: dict, batch, rng: np.random.Generator | None = None, **options):
    """``(loss, grads)`` of the mean next-token cross-entropy over the masked positions, with the
    signature ``ref.train.train`` calls (bind the options with ``functools.partial``). ``batch``: a
    pair ``(inputs, targets)`` or an object with ``inputs``, ``targets`` and optionally ``loss_mask``
    (a ``ref.tasks.Batch``); ``rng`` is unused."""
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        inputs, targets, loss_mask = batch.inputs, batch.targets, getattr(batch, "loss_mask", None)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        (inputs, targets), loss_mask = batch, None
    else:
        raise ValueError(f"batch: expected (inputs, targets) or a ref.tasks.Batch, got {type(batch).__name__}")
    targets = _validate.int_array(targets, "targets")
    checks.same_shape(targets, "targets", np.shape(inputs), "(B, T)", "the shape of inputs")
    if loss_mask is not None:
        if not isinstance(loss_mask, np.ndarray) or loss_mask.dtype != np.bool_:
            raise ValueError(f"loss_mask: expected a bool array (B, T), got {type(loss_mask).__name__}")
        checks.same_shape(loss_mask, "loss_mask", targets.shape, "(B, T)", "the shape of inputs")
        targets = np.where(loss_mask, targets, -100)  # -100: cross_entropy's ignore_index
    logits, cache = hmt_forward(params, inputs, **options)
    loss, c_loss = cross_entropy(logits, targets, ignore_index=-100)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), hmt_backward(params, cache, dlogits)
