"""Transformers with softmax attention: the GPT-2 and Llama blocks, decoder-only language models that
generate through a KV cache, and a small bidirectional encoder (Vaswani et al., 2017; Radford et al.,
2019; Touvron et al., 2023; Devlin et al., 2019 for the encoder's pooled output).

The attention layer (B batch, T time, D model width, HQ query heads, H key/value heads, K key and
V value dims per head):

    q_t = x_t W_q + b_q,   k_t = x_t W_k + b_k,   v_t = x_t W_v + b_v                          (1)
    q_t, k_t <- RoPE(q_t, t), RoPE(k_t, t)                  (Llama only; ref.nn.rope)         (2)
    o_t = sum_{s: M_ts} softmax_s(q_t . k_s / sqrt(K)) v_s  (ref.mixers.attention)            (3)
    y_t = concat_heads(o_t) W_o + b_o                                                         (4)

GPT-2 has the biases and no rotation; Llama rotates q and k and has no biases. (The key bias b_k
gets a zero gradient: it adds q_t . b_k to every score of row t, which the softmax ignores. GPT-2
has it all the same, as part of its fused q/k/v bias, so it is kept.) With H < HQ the
layer is grouped-query attention (GQA; MQA for H = 1): query head h reads key/value head h // (HQ/H).
M is the causal mask in a decoder, all-True in the encoder (times a padding mask if one is given).

The blocks (pre-norm residual blocks):

    GPT-2:  h = x + Attn(LN(x)),       y = h + MLP(LN(h)),   MLP(z) = gelu_tanh(z W_fc + b_fc) W_proj + b_proj   (5)
    Llama:  h = x + Attn(RMSNorm(x)),  y = h + SwiGLU(RMSNorm(h)),
            SwiGLU(z) = (silu(z W_gate) * (z W_up)) W_down  (ref.models.gla.swiglu)                            (6)

The language model, over either block (the block kind is the key of each ``blocks`` entry):

    h = E[tokens] (+ P[positions], GPT-2's learned positions)                                 (7)
    h = block_L(... block_1(h))
    logits = Norm(h) W_head,   W_head = E^T when tied (GPT-2)   Norm: LN (GPT-2), RMSNorm (Llama)  (8)

Generation (:func:`generate`): a *prefill* runs the prompt through every block at once, filling one
:class:`~ref.mixers.attention.KVCache` per block with the prompt's keys and values; then each new
token is one *decode step*: its q, k, v are computed, (k, v) appended to the cache and q attends over
it (``attention_decode_step``), so a step costs O(length) instead of re-running the whole sequence.
The next token is the argmax of the last logits (``temperature=0``, greedy) or a draw from
softmax(logits / temperature), optionally restricted to the ``top_k`` largest logits, with an
explicit ``np.random.Generator``.

The encoder: the same stack with the bidirectional mask, no head; its output is every token's
final hidden state (B, T, D) or the [CLS]-style pooled vector tanh(h_0 W_pool + b_pool) (B, D)
of the first token, as BERT's pooler.

Conventions (as ``ref.models.gla``): layers and blocks ``forward(params, x, **options) -> (y,
cache)``, ``backward(params, cache, dy) -> (dx, grads)``; ``*_step(params, x_t, state) -> (y_t,
state)`` decodes one token, ``state`` None at the start or the layer's ``KVCache``; whole models
return ``grads`` only. The block functions match ``ref.models.lm.BlockSpec``, so ``"llama"`` and
``"gpt2"`` can be registered in the scaffold with ``register_block``.

The decode state is a ``KVCache``, which is **updated in place** (a static cache, as inference
engines keep): a step appends to the cache it is given and returns it (or, when it was full, a copy
with twice the slots). Copy a state (``copy.deepcopy``) before stepping to branch from it.

Parameters of the attention layer (sizes are read from the shapes)::

    W_q (D, HQ, K)   W_k (D, H, K)   W_v (D, H, V)   W_o (HQ*V, D)
    b_q (HQ, K)      b_k (H, K)      b_v (H, V)      b_o (D,)          GPT-2 only (all or none)

A block: ``{"norm1": {"weight"[, "bias"]}, "attn": <layer>, "norm2": {...}, "mlp": {...}}`` with
``mlp`` = ``{W_fc (D, F), b_fc (F,), W_proj (F, D), b_proj (D,)}`` (GPT-2, F = 4D) or
``{W_gate (D, F), W_up (D, F), W_down (F, D)}`` (Llama, F = int(8D/3)). A model::

    embed (vocab, D)           the token embedding E
    pos_embed (max_len, D)     GPT-2 only: the learned positions P
    blocks [{kind: block}]     kind "gpt2" or "llama"
    norm {weight[, bias]}      LayerNorm when it has a bias (GPT-2), else RMSNorm (Llama)
    head (D, vocab)            absent when tied to the embedding
    pool {W (D, D), b (D,)}    the encoder only

Sources and choices (facts checked in the code, see each constant):
- GPT-2 (openai/gpt-2 ``src/model.py``; karpathy/nanoGPT ``model.py``): pre-LN blocks, LayerNorm
  eps 1e-5, q/k/v/output projections and the MLP with biases, MLP width 4D, tanh-approximated GELU,
  scores scaled by 1/sqrt(K), a final LayerNorm, logits = h E^T (the head is the token embedding).
  Init: weights normal(0.02), biases 0, LN scale 1 and shift 0; the projections that end a residual
  branch (attention W_o and MLP W_proj) normal(0.02 / sqrt(2 N)) for N blocks (nanoGPT, after the
  GPT-2 paper); token embedding normal(0.02), position embedding normal(0.01) (openai's ``wpe``;
  nanoGPT uses 0.02). OpenAI fuses W_q, W_k, W_v into one ``c_attn``: the same map, split here.
- Llama (Hugging Face ``modeling_llama.py``, meta-llama/llama ``model.py``): RMSNorm (eps 1e-6),
  RoPE on q and k with theta 10000 in the rotate-half pairing (Hugging Face; Meta's code pairs
  adjacent dims: the same rotation up to a permutation, see ``ref.nn.rope``), GQA with
  ``num_kv_heads`` dividing ``num_heads``, no biases, SwiGLU MLP, final RMSNorm, untied head; init
  normal(0.02) (``initializer_range``), norm scales 1. Meta rounds the SwiGLU width int(8D/3) up to a
  multiple of 256, an efficiency detail left out at these sizes.
- Encoder: BERT's pooler (tanh of a dense layer on the first token); BERT itself is post-LN, this
  encoder reuses the pre-LN blocks above with the bidirectional mask.
- ``mode``: "parallel" (default) or "recurrent" picks the attention form (``ref.mixers.attention``;
  the same function). "chunked" is accepted and runs the parallel form, and ``chunk_size`` is
  accepted and unused, so that a hybrid stack in ``ref.models.lm`` can pass the options of its
  linear-attention blocks to every block; softmax attention has no chunked form here.
- The scaffold (``ref.models.lm``) has no positions of its own: there the ``"llama"`` block carries
  its positions (RoPE) and the ``"gpt2"`` block has none (a NoPE block: the causal mask alone lets it
  infer order). The GPT-2 model with learned positions is :func:`init_transformer_lm` (arch "gpt2").
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ref import checks
from ref.mixers.attention import KVCache, attention_decode_step
from ref.mixers.attention import FORMS as ATTENTION_FORMS
from ref.models.gla import (
    check_cotangent,
    check_dtype,
    check_input,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    init_swiglu,
    normal,
    split_heads,
    swiglu,
    swiglu_backward,
)
from ref.nn import (
    _validate,
    cross_entropy,
    cross_entropy_backward,
    embedding,
    embedding_backward,
    gelu,
    gelu_backward,
    host_backend,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    tanh,
    tanh_backward,
)
from ref.nn.rope import rope, rope_backward

__all__ = [
    "ARCHS",
    "KV_CAPACITY",
    "init_attention_layer",
    "attention_layer",
    "attention_layer_backward",
    "attention_layer_step",
    "init_gpt2_mlp",
    "gpt2_mlp",
    "gpt2_mlp_backward",
    "init_gpt2_block",
    "gpt2_block",
    "gpt2_block_backward",
    "gpt2_block_step",
    "init_llama_block",
    "llama_block",
    "llama_block_backward",
    "llama_block_step",
    "transformer_blocks",
    "transformer_blocks_backward",
    "prefix_lm_mask",
    "init_transformer_lm",
    "transformer_lm_forward",
    "transformer_lm_backward",
    "transformer_lm_loss_and_grads",
    "init_kv_caches",
    "transformer_lm_prefill",
    "transformer_lm_decode",
    "sample_token",
    "generate",
    "init_encoder",
    "encoder_forward",
    "encoder_backward",
]

ARCHS = ("gpt2", "llama")
INIT_STD = 0.02  # weights and token embedding (GPT-2 and Llama's initializer_range)
GPT2_POS_STD = 0.01  # GPT-2's position embedding (openai/gpt-2: wpe stddev 0.01)
GPT2_NORM_EPS = 1e-5  # GPT-2's LayerNorms (openai/gpt-2: norm(..., epsilon=1e-5))
GPT2_MLP_RATIO = 4  # GPT-2's MLP width 4D
GPT2_MAX_LEN = 1024  # GPT-2's context, n_ctx (the rows of pos_embed)
LLAMA_NORM_EPS = 1e-6  # Llama's RMSNorms (Hugging Face LlamaRMSNorm / rms_norm_eps)
ROPE_BASE = 10000.0  # Llama's rope_theta
KV_CAPACITY = 16  # slots of a KV cache a step allocates on its own (it doubles when full)
MODES = ("parallel", "recurrent", "chunked")  # "chunked" runs the parallel form (module docstring)
MASKS = ("causal", "bidirectional")


# ------------------------------------------------------------------------------------------------
# the attention layer (1)-(4)


def init_attention_layer(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    bias: bool = False,
    std: float = INIT_STD,
    out_std: float | None = None,
    dtype=np.float64,
) -> dict:
    """Parameters of an attention layer with ``num_heads`` query heads and ``num_kv_heads`` key/value
    heads (default: as many, multi-head attention), each ``head_dim`` wide (default D / num_heads).
    Weights normal(``std``), W_o normal(``out_std``, default ``std``); biases (``bias=True``) zero."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    HQ = checks.positive_int(num_heads, "num_heads")
    H = HQ if num_kv_heads is None else checks.positive_int(num_kv_heads, "num_kv_heads")
    if HQ % H:
        raise ValueError(f"num_kv_heads: expected a divisor of num_heads = {HQ} (GQA groups), got {H}")
    K = split_heads(D, HQ, "D", "model width") if head_dim is None else checks.positive_int(head_dim, "head_dim")
    if not isinstance(bias, bool):
        raise ValueError(f"bias: expected True or False, got {bias!r}")
    std = _validate.positive(std, "std")
    out_std = std if out_std is None else _validate.positive(out_std, "out_std")
    p = {
        "W_q": normal(rng, (D, HQ, K), std, dtype),
        "W_k": normal(rng, (D, H, K), std, dtype),
        "W_v": normal(rng, (D, H, K), std, dtype),
        "W_o": normal(rng, (HQ * K, D), out_std, dtype),
    }
    if bias:
        p.update(
            {
                "b_q": np.zeros((HQ, K), dtype),
                "b_k": np.zeros((H, K), dtype),
                "b_v": np.zeros((H, K), dtype),
                "b_o": np.zeros(D, dtype),
            }
        )
    return p


def _attention_spec(params, where: str):
    """(D, HQ, H, K, V, dtype) after checking every parameter's shape (biases: all or none)."""
    if not isinstance(params, dict):
        raise ValueError(f"{where}: expected a dict of parameters, got {type(params).__name__}")
    for key in ("W_q", "W_k", "W_v"):
        if key not in params:
            raise ValueError(f"{where}: expected a parameter {key!r}, got keys {sorted(params)}")
    D, HQ, K = checks.float_array(params["W_q"], f"{where}/W_q", ndim=3, dims="(D, HQ, K)").shape
    H = checks.float_array(params["W_k"], f"{where}/W_k", ndim=3, dims="(D, H, K)").shape[1]
    V = checks.float_array(params["W_v"], f"{where}/W_v", ndim=3, dims="(D, H, V)").shape[2]
    spec = {
        "W_q": ((D, HQ, K), "(D, HQ, K)"),
        "W_k": ((D, H, K), "(D, H, K)"),
        "W_v": ((D, H, V), "(D, H, V)"),
        "W_o": ((HQ * V, D), "(HQ*V, D)"),
    }
    if "b_q" in params:
        spec.update(
            {"b_q": ((HQ, K), "(HQ, K)"), "b_k": ((H, K), "(H, K)"), "b_v": ((H, V), "(H, V)"), "b_o": ((D,), "(D,)")}
        )
    dtype = params["W_q"].dtype
    check_params(params, where, spec, dtype)
    if HQ % H:
        raise ValueError(
            f"{where}/W_k: expected a number of key/value heads H dividing the HQ = {HQ} query heads of W_q, got {H}"
        )
    return D, HQ, H, K, V, dtype


def _check_rotary(rotary, K: int) -> bool:
    if not isinstance(rotary, bool):
        raise ValueError(f"rotary: expected True or False, got {rotary!r}")
    if rotary and K % 2:
        raise ValueError(f"rotary: RoPE needs an even head dim K (pairs of dims rotate), got K = {K}")
    return rotary


def prefix_lm_mask(prefix_len, B: int, T: int) -> np.ndarray:
    """The prefix-LM mask (B, T, T), True = query t may read key s: the first ``prefix_len[b]``
    tokens of row b see each other both ways, every later token sees the prefix and its own past,

        allowed[b, t, s] = (s <= t) or (s < prefix_len[b]).

    ``prefix_len``: an int or an int array (B,), each in 0..T; 0 gives the causal mask, T the
    bidirectional one."""
    P = np.asarray(prefix_len)
    if P.dtype.kind not in "iu" or P.ndim > 1:
        raise ValueError(f"prefix_len: expected an int or an int array (B,), got {prefix_len!r}")
    P = np.broadcast_to(P, (B,)) if P.ndim == 0 else P
    checks.same_shape(P, "prefix_len", (B,), "(B,)", "the batch of tokens")
    if np.any(P < 0) or np.any(P > T):
        raise ValueError(f"prefix_len: expected 0 <= prefix_len <= T = {T}, got {P.tolist()}")
    s = np.arange(T)
    return np.tri(T, dtype=bool)[None] | (s[None, None, :] < P[:, None, None])  # (B, T, T)


def _attention_mask(mask, padding_mask, B: int, T: int):
    """The mixer's mask: the kind itself, a boolean array (B, T, T) (such as :func:`prefix_lm_mask`),
    and with a padding mask (B, T) the boolean array (B, T, T) of both."""
    if isinstance(mask, np.ndarray):
        if mask.dtype != np.bool_:
            raise ValueError(f"mask: expected 'causal', 'bidirectional' or a bool array (B, T, T), got dtype {mask.dtype}")
        checks.same_shape(mask, "mask", (B, T, T), "(B, T, T)", "from x")
    else:
        checks.one_of(mask, "mask", MASKS)
    if padding_mask is None:
        return mask
    if not isinstance(padding_mask, np.ndarray) or padding_mask.dtype != np.bool_:
        got = getattr(padding_mask, "dtype", type(padding_mask).__name__)
        raise ValueError(f"padding_mask: expected a bool array (B, T), True = a real token, got {got}")
    checks.same_shape(padding_mask, "padding_mask", (B, T), "(B, T)", "from x")
    allowed = np.broadcast_to(padding_mask[:, None, :], (B, T, T))  # query t may read real keys s
    if isinstance(mask, np.ndarray):
        allowed = allowed & mask  # ... that the mask allows
    elif mask == "causal":
        allowed = allowed & np.tri(T, dtype=bool)  # ... and only s <= t
    return np.ascontiguousarray(allowed)  # (B, T, T)


def _with_room(kv: KVCache, n: int) -> KVCache:
    """``kv`` itself when n more tokens fit, else a copy with at least twice the slots (amortised
    O(1) copying per token)."""
    if kv.length + n <= kv.max_len:
        return kv
    B, S_max, H, K = kv.k.shape
    grown = KVCache.empty(B, max(2 * S_max, kv.length + n), H, K, kv.v.shape[3], kv.k.dtype)
    return grown.append(kv.keys, kv.values)


def _check_kv(state, name: str, B: int, H: int, K: int, V: int, dtype) -> KVCache:
    """None (a new, empty cache of KV_CAPACITY slots) or a KVCache for (B, H, K, V)."""
    if state is None:
        return KVCache.empty(B, KV_CAPACITY, H, K, V, dtype)
    if not isinstance(state, KVCache):
        raise ValueError(f"{name}: expected None or a KVCache (from a previous step), got {type(state).__name__}")
    B_, _, H_, K_ = state.k.shape
    if (B_, H_, K_, state.v.shape[3]) != (B, H, K, V) or state.k.dtype != dtype:
        raise ValueError(
            f"{name}: expected a KVCache for (B, H, K, V) = {(B, H, K, V)} of dtype {np.dtype(dtype)} (from x and "
            f"the parameters), got k {state.k.shape}, v {state.v.shape} of dtype {state.k.dtype}"
        )
    return state


def _attention_layer(params, x, *, rotary, mask, padding_mask, mode, kv, backend="numpy"):
    """(1)-(4) on x (B, T, D). With ``kv`` (a KVCache) the T tokens follow the cached ones: their
    keys and values are appended and the queries read the whole cache. Returns (y, kv, cache)."""
    D, HQ, _, K, _, dtype = _attention_spec(params, "params")
    x = check_input(x, D, dtype)
    rotary = _check_rotary(rotary, K)
    checks.one_of(mode, "mode", MODES)
    B, T, _ = x.shape
    c = {"x_shape": x.shape, "dtype": dtype, "rotary": rotary, "mode": "parallel" if mode == "chunked" else mode}

    # (1) q (B, T, HQ, K), k (B, T, H, K), v (B, T, H, V)
    q, c["q"] = head_linear(x, params["W_q"], params.get("b_q"))
    k, c["k"] = head_linear(x, params["W_k"], params.get("b_k"))
    v, c["v"] = head_linear(x, params["W_v"], params.get("b_v"))
    t0 = 0 if kv is None else kv.length  # the position of the first token
    if rotary:
        # (2) rotate q_t and k_t by their position t
        positions = t0 + np.arange(T)  # (T,)
        q, c["rope_q"] = rope(q, positions=positions, base=ROPE_BASE)
        k, c["rope_k"] = rope(k, positions=positions, base=ROPE_BASE)
    if kv is not None:
        kv = _with_room(kv, T).append(k, v)
        k, v = kv.keys, kv.values  # (B, t0 + T, H, K), (B, t0 + T, H, V)
    # (3) softmax attention (the causal mask aligns the last query with the last key)
    M = _attention_mask(mask, padding_mask, B, T)
    o, c["attn"] = ATTENTION_FORMS[c["mode"]][0](q, k, v, mask=M, backend=backend)  # (B, T, HQ, V)
    # (4) y = concat_heads(o) W_o + b_o
    y, c["out"] = linear(o.reshape(B, T, -1), params["W_o"], params.get("b_o"))  # (B, T, D)
    return y, kv, c


def attention_layer(
    params: dict, x: np.ndarray, *, rotary=False, mask="causal", padding_mask=None, mode="parallel", backend="numpy"
):
    """The attention layer (1)-(4) on x (B, T, D). ``rotary``: RoPE on q and k (Llama). ``mask``:
    "causal" or "bidirectional"; ``padding_mask`` (B, T) bool, True = a real token, hides the other
    keys. ``mode``: "parallel" or "recurrent" (the same function). ``backend`` runs (3)
    (``ref.mixers.attention``: "numba" or "cuda", the tiled kernels); the rest is NumPy.
    Returns ``(y, cache)``."""
    y, _, cache = _attention_layer(
        params, x, rotary=rotary, mask=mask, padding_mask=padding_mask, mode=mode, kv=None, backend=backend
    )
    return y, cache


def attention_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``; grads shaped like ``params``."""
    c = cache
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    B, T, _ = dy.shape
    HQ = params["W_q"].shape[1]
    g = {}
    # (4)
    do, g["W_o"], g["b_o"] = linear_backward(dy, c["out"])  # (B, T, HQ*V)
    # (3) dk, dv summed over the query heads of each group
    dq, dk, dv = ATTENTION_FORMS[c["mode"]][1](do.reshape(B, T, HQ, -1), c["attn"])
    if c["rotary"]:
        # (2) the inverse rotation
        (dq,) = rope_backward(dq, c["rope_q"])
        (dk,) = rope_backward(dk, c["rope_k"])
    # (1) x feeds all three projections: their gradients add
    dx = np.zeros(c["x_shape"], c["dtype"])
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        dx_p, g["W_" + name], g["b_" + name] = head_linear_backward(d, c[name])
        dx += dx_p
    return dx, {key: g[key] for key in params}


def attention_layer_step(params: dict, x_t: np.ndarray, state: KVCache | None = None, *, rotary=False):
    """Decode one token: x_t (B, D) at position ``state.length`` (0 for ``state=None``) -> ``(y_t,
    state)``. The token's (k, v) go into the cache and q attends over it (``attention_decode_step``);
    the cache is updated in place, or replaced by a larger copy when full."""
    D, HQ, H, K, V, dtype = _attention_spec(params, "params")
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    if x_t.shape[1] != D:
        raise ValueError(f"x_t: expected shape (B, D) with D = {D} (the rows of W_q), got {x_t.shape}")
    checks.same_dtype(x_t, "x_t", dtype, "the dtype of the parameters")
    rotary = _check_rotary(rotary, K)
    B = x_t.shape[0]
    kv = _with_room(_check_kv(state, "state", B, H, K, V, dtype), 1)
    p = kv.length  # the new token's position
    # (1) q_t (B, HQ, K), k_t (B, H, K), v_t (B, H, V)
    q, _ = head_linear(x_t, params["W_q"], params.get("b_q"))
    k, _ = head_linear(x_t, params["W_k"], params.get("b_k"))
    v, _ = head_linear(x_t, params["W_v"], params.get("b_v"))
    if rotary:
        # (2) rope wants (B, T, H, K): a time axis of one token at position p
        q = rope(q[:, None], positions=np.array([p]), base=ROPE_BASE)[0][:, 0]
        k = rope(k[:, None], positions=np.array([p]), base=ROPE_BASE)[0][:, 0]
    # (3) append (k_t, v_t) to the cache, attend from q_t over it
    o, kv = attention_decode_step(q, k, v, kv, position=p)  # (B, HQ, V)
    # (4)
    y, _ = linear(o.reshape(B, HQ * V), params["W_o"], params.get("b_o"))  # (B, D)
    return y, kv


# ------------------------------------------------------------------------------------------------
# the GPT-2 block (5)


def init_gpt2_mlp(rng, D: int, hidden: int | None = None, *, out_std: float = INIT_STD, dtype=np.float64) -> dict:
    """The MLP of (5): width 4D by default; W_fc normal(0.02), W_proj normal(``out_std``), zero biases."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    F = GPT2_MLP_RATIO * D if hidden is None else checks.positive_int(hidden, "mlp_hidden")
    return {
        "W_fc": normal(rng, (D, F), INIT_STD, dtype),
        "b_fc": np.zeros(F, dtype),
        "W_proj": normal(rng, (F, D), out_std, dtype),
        "b_proj": np.zeros(D, dtype),
    }


def gpt2_mlp(params: dict, x: np.ndarray, *, backend: str = "numpy"):
    """gelu_tanh(x W_fc + b_fc) W_proj + b_proj on x (..., D); ``backend`` runs the GELU
    ("numba": fused). Returns ``(y, cache)``."""
    a, c_fc = linear(x, params["W_fc"], params["b_fc"])  # (..., F)
    s, c_act = gelu(a, approximate="tanh", backend=host_backend(backend))
    y, c_proj = linear(s, params["W_proj"], params["b_proj"])  # (..., D)
    return y, (c_fc, c_act, c_proj)


def gpt2_mlp_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_fc, c_act, c_proj = cache
    ds, dW_proj, db_proj = linear_backward(dy, c_proj)
    (da,) = gelu_backward(ds, c_act)
    dx, dW_fc, db_fc = linear_backward(da, c_fc)
    return dx, {"W_fc": dW_fc, "b_fc": db_fc, "W_proj": dW_proj, "b_proj": db_proj}


def init_gpt2_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    mlp_hidden: int | None = None,
    num_layers: int = 1,
    dtype=np.float64,
) -> dict:
    """Parameters of the GPT-2 block (5). ``num_layers`` is the N of the residual scaling: W_o and
    W_proj are drawn with std 0.02 / sqrt(2 N) (pass the depth of the stack)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    N = checks.positive_int(num_layers, "num_layers")
    out_std = INIT_STD / math.sqrt(2 * N)
    return {
        "norm1": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "attn": init_attention_layer(rng, D, num_heads, bias=True, out_std=out_std, dtype=dtype),
        "norm2": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mlp": init_gpt2_mlp(rng, D, mlp_hidden, out_std=out_std, dtype=dtype),
    }


def _check_block(params, x, norm_keys: set, name: str = "x", where: str = "params") -> np.ndarray:
    """The block's four parts, and x (B, T, D) against its attention layer."""
    if not isinstance(params, dict) or set(params) != {"norm1", "attn", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a block {{'norm1', 'attn', 'norm2', 'mlp'}}, got {got}")
    for norm in ("norm1", "norm2"):
        if not isinstance(params[norm], dict) or set(params[norm]) != norm_keys:
            got = sorted(params[norm]) if isinstance(params[norm], dict) else type(params[norm]).__name__
            raise ValueError(f"{where}/{norm}: expected {sorted(norm_keys)}, got {got}")
    D, *_, dtype = _attention_spec(params["attn"], f"{where}/attn")
    return check_input(x, D, dtype, name)


def _gpt2_block(params, x, *, mask="causal", padding_mask=None, mode="parallel", kv=None, backend="numpy"):
    x = _check_block(params, x, {"weight", "bias"})
    n1, c_n1 = layer_norm(x, params["norm1"]["weight"], params["norm1"]["bias"], eps=GPT2_NORM_EPS)
    # (5) h = x + Attn(LN(x))
    a, kv, c_attn = _attention_layer(
        params["attn"], n1, rotary=False, mask=mask, padding_mask=padding_mask, mode=mode, kv=kv, backend=backend
    )
    h = x + a
    # (5) y = h + MLP(LN(h))
    n2, c_n2 = layer_norm(h, params["norm2"]["weight"], params["norm2"]["bias"], eps=GPT2_NORM_EPS)
    m, c_mlp = gpt2_mlp(params["mlp"], n2, backend=backend)
    return h + m, kv, (c_n1, c_attn, c_n2, c_mlp)


def gpt2_block(
    params: dict, x: np.ndarray, *, mask="causal", padding_mask=None, mode="parallel", chunk_size=None, backend="numpy"
):
    """The GPT-2 block (5) on x (B, T, D); options as :func:`attention_layer` (``chunk_size``
    unused, see the module docstring). Returns ``(y, cache)``."""
    y, _, cache = _gpt2_block(params, x, mask=mask, padding_mask=padding_mask, mode=mode, backend=backend)
    return y, cache


def gpt2_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_attn, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_attn["x_shape"], c_attn["dtype"])
    # y = h + m: dh = dy + the path through the MLP
    dn2, g_mlp = gpt2_mlp_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2, db2 = layer_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    # h = x + a: dx = dh + the path through attention
    dn1, g_attn = attention_layer_backward(params["attn"], c_attn, dh)
    dx_attn, dw1, db1 = layer_norm_backward(dn1, c_n1)
    grads = {
        "norm1": {"weight": dw1, "bias": db1},
        "attn": g_attn,
        "norm2": {"weight": dw2, "bias": db2},
        "mlp": g_mlp,
    }
    return dh + dx_attn, grads


def gpt2_block_step(params: dict, x_t: np.ndarray, state: KVCache | None = None):
    """Decode one token through the block: x_t (B, D), state None or the layer's KVCache ->
    ``(y_t, state)`` (see :func:`attention_layer_step`)."""
    _check_block(params, _as_sequence(x_t), {"weight", "bias"}, "x_t")
    n1, _ = layer_norm(x_t, params["norm1"]["weight"], params["norm1"]["bias"], eps=GPT2_NORM_EPS)
    a, state = attention_layer_step(params["attn"], n1, state, rotary=False)
    h = x_t + a
    n2, _ = layer_norm(h, params["norm2"]["weight"], params["norm2"]["bias"], eps=GPT2_NORM_EPS)
    m, _ = gpt2_mlp(params["mlp"], n2)
    return h + m, state


def _as_sequence(x_t) -> np.ndarray:
    """x_t (B, D) as (B, 1, D), for the checks shared with the forward."""
    return checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")[:, None, :]


# ------------------------------------------------------------------------------------------------
# the Llama block (6)


def init_llama_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    mlp_hidden: int | None = None,
    dtype=np.float64,
) -> dict:
    """Parameters of the Llama block (6): GQA with ``num_kv_heads`` key/value heads (a divisor of
    ``num_heads``; default num_heads), ``head_dim`` (default D / num_heads, even for RoPE), SwiGLU of
    width ``mlp_hidden`` (default int(8D/3)); all weights normal(0.02), no biases."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    attn = init_attention_layer(rng, D, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype)
    K = attn["W_q"].shape[2]
    if K % 2:
        name = "head_dim" if head_dim is not None else "num_heads"
        raise ValueError(f"{name}: RoPE needs an even head dim, got head_dim = {K} (D = {D}, num_heads = {num_heads})")
    return {
        "norm1": {"weight": np.ones(D, dtype)},
        "attn": attn,
        "norm2": {"weight": np.ones(D, dtype)},
        "mlp": init_swiglu(rng, D, mlp_hidden, dtype=dtype),
    }


def _llama_block(params, x, *, mask="causal", padding_mask=None, mode="parallel", kv=None, backend="numpy"):
    x = _check_block(params, x, {"weight"})
    # (6) h = x + Attn(RMSNorm(x)), with RoPE
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=LLAMA_NORM_EPS, backend=host_backend(backend))
    a, kv, c_attn = _attention_layer(
        params["attn"], n1, rotary=True, mask=mask, padding_mask=padding_mask, mode=mode, kv=kv, backend=backend
    )
    h = x + a
    # (6) y = h + SwiGLU(RMSNorm(h))
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=LLAMA_NORM_EPS, backend=host_backend(backend))
    m, c_mlp = swiglu(params["mlp"], n2, backend=backend)
    return h + m, kv, (c_n1, c_attn, c_n2, c_mlp)


def llama_block(
    params: dict, x: np.ndarray, *, mask="causal", padding_mask=None, mode="parallel", chunk_size=None, backend="numpy"
):
    """The Llama block (6) on x (B, T, D); options as :func:`attention_layer` (``chunk_size``
    unused, see the module docstring). Returns ``(y, cache)``."""
    y, _, cache = _llama_block(params, x, mask=mask, padding_mask=padding_mask, mode=mode, backend=backend)
    return y, cache


def llama_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_attn, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_attn["x_shape"], c_attn["dtype"])
    dn2, g_mlp = swiglu_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2 = rms_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    dn1, g_attn = attention_layer_backward(params["attn"], c_attn, dh)
    dx_attn, dw1 = rms_norm_backward(dn1, c_n1)
    grads = {"norm1": {"weight": dw1}, "attn": g_attn, "norm2": {"weight": dw2}, "mlp": g_mlp}
    return dh + dx_attn, grads


def llama_block_step(params: dict, x_t: np.ndarray, state: KVCache | None = None):
    """Decode one token through the block: x_t (B, D) at position ``state.length``, state None or
    the layer's KVCache -> ``(y_t, state)``."""
    _check_block(params, _as_sequence(x_t), {"weight"}, "x_t")
    n1, _ = rms_norm(x_t, params["norm1"]["weight"], eps=LLAMA_NORM_EPS)
    a, state = attention_layer_step(params["attn"], n1, state, rotary=True)
    h = x_t + a
    n2, _ = rms_norm(h, params["norm2"]["weight"], eps=LLAMA_NORM_EPS)
    m, _ = swiglu(params["mlp"], n2)
    return h + m, state


# (init, forward with an optional KV cache, backward, step) of each block kind
_BLOCKS = {
    "gpt2": (init_gpt2_block, _gpt2_block, gpt2_block_backward, gpt2_block_step),
    "llama": (init_llama_block, _llama_block, llama_block_backward, llama_block_step),
}


# ------------------------------------------------------------------------------------------------
# the stack shared by the language model and the encoder: (7), the blocks, the final norm of (8)


def _init_stack(rng, vocab_size, D, n_layers, arch, num_heads, num_kv_heads, head_dim, mlp_hidden, max_len, dtype):
    rng, dtype = check_rng(rng), check_dtype(dtype)
    Vocab = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    L = checks.positive_int(n_layers, "n_layers")
    checks.one_of(arch, "arch", ARCHS)
    params = {"embed": normal(rng, (Vocab, D), INIT_STD, dtype)}
    if arch == "gpt2":
        for name, value in (("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if value is not None:
                raise ValueError(f"{name}: only for arch='llama' (GPT-2 is multi-head with head_dim D / num_heads)")
        max_len = GPT2_MAX_LEN if max_len is None else checks.positive_int(max_len, "max_len")
        params["pos_embed"] = normal(rng, (max_len, D), GPT2_POS_STD, dtype)
        params["blocks"] = [
            {"gpt2": init_gpt2_block(rng, D, num_heads, mlp_hidden=mlp_hidden, num_layers=L, dtype=dtype)}
            for _ in range(L)
        ]
        params["norm"] = {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)}
    else:
        if max_len is not None:
            raise ValueError("max_len: only for arch='gpt2' (learned positions); RoPE has no length limit")
        params["blocks"] = [
            {
                "llama": init_llama_block(
                    rng, D, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, mlp_hidden=mlp_hidden, dtype=dtype
                )
            }
            for _ in range(L)
        ]
        params["norm"] = {"weight": np.ones(D, dtype)}
    return params


def _check_model(params, optional: set) -> None:
    required = {"embed", "blocks", "norm"}
    if not isinstance(params, dict) or not required <= set(params) <= required | optional:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        want = ", ".join(map(repr, sorted(required))) + "".join(f"[, {k!r}]" for k in sorted(optional))
        raise ValueError(f"params: expected a model {{{want}}}, got {got}")
    if not isinstance(params["blocks"], list) or not params["blocks"]:
        raise ValueError(f"params/blocks: expected a non-empty list of blocks, got {params['blocks']!r:.60}")
    norm = params["norm"]
    if not isinstance(norm, dict) or set(norm) not in ({"weight"}, {"weight", "bias"}):
        got = sorted(norm) if isinstance(norm, dict) else type(norm).__name__
        raise ValueError(f"params/norm: expected {{'weight'}} (RMSNorm) or {{'weight', 'bias'}} (LayerNorm), got {got}")


def _block_kind(entry, i: int) -> str:
    if not isinstance(entry, dict) or len(entry) != 1:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"params/blocks/{i}: expected a one-key dict {{kind: block params}}, got {got}")
    (kind,) = entry
    if kind not in _BLOCKS:
        raise ValueError(f"params/blocks/{i}: expected a block kind in {ARCHS}, got {kind!r}")
    return kind


def _check_tokens(tokens, params, name: str = "tokens") -> np.ndarray:
    """Token ids (B, T), T >= 1, each in [0, vocab_size) (the rows of params/embed)."""
    tokens = _validate.int_array(tokens, name)
    if tokens.ndim != 2:
        raise ValueError(f"{name}: expected 2 axes (B, T), got shape {tokens.shape}")
    checks.nonempty_time(tokens.shape[1], name)
    vocab = checks.float_array(params["embed"], "params/embed", ndim=2, dims="(vocab, D)").shape[0]
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise ValueError(
            f"{name}: expected ids in [0, vocab_size = {vocab}), got values in [{tokens.min()}, {tokens.max()}]"
        )
    return tokens


def _embed(params, tokens, t0: int, name: str = "tokens"):
    """(7): h = E[tokens] + P[t0 .. t0+T-1] (P only when the model has learned positions)."""
    T = tokens.shape[1]
    h, c_embed = embedding(tokens, params["embed"])  # (B, T, D)
    c_pos = None
    if "pos_embed" in params:
        P = checks.float_array(params["pos_embed"], "params/pos_embed", ndim=2, dims="(max_len, D)")
        if t0 + T > P.shape[0]:
            raise ValueError(
                f"{name}: positions {t0} .. {t0 + T - 1} exceed the {P.shape[0]} learned positions "
                f"(params/pos_embed has max_len = {P.shape[0]} rows)"
            )
        checks.same_shape(P, "params/pos_embed", (P.shape[0], h.shape[2]), "(max_len, D)", "D from params/embed")
        pe, c_pos = embedding(t0 + np.arange(T)[None], P)  # (1, T, D)
        h = h + pe
    return h, (c_embed, c_pos)


def _embed_backward(dh, cache):
    c_embed, c_pos = cache
    _, dE = embedding_backward(dh, c_embed)
    dP = None if c_pos is None else embedding_backward(dh.sum(axis=0, keepdims=True), c_pos)[1]  # (1, T, D)
    return dE, dP


def _final_norm(params, h):
    """The final norm of (8): LayerNorm when params/norm has a bias (GPT-2), else RMSNorm (Llama)."""
    norm = params["norm"]
    if "bias" in norm:
        n, c = layer_norm(h, norm["weight"], norm["bias"], eps=GPT2_NORM_EPS)
    else:
        n, c = rms_norm(h, norm["weight"], eps=LLAMA_NORM_EPS)
    return n, ("bias" in norm, c)


def _final_norm_backward(dn, cache):
    has_bias, c = cache
    if has_bias:
        dh, dw, db = layer_norm_backward(dn, c)
        return dh, {"weight": dw, "bias": db}
    dh, dw = rms_norm_backward(dn, c)
    return dh, {"weight": dw}


def transformer_blocks(params: dict, h: np.ndarray, *, mask="causal", padding_mask=None, mode="parallel", caches=None):
    """The blocks and the final norm on embeddings h (B, T, D): the model between (7) and the head
    (8), for wrappers that build their own input embeddings (HMT's memory tokens, for one). With
    ``caches`` (one KVCache per block) the T positions follow the cached ones. Returns
    ``(n (B, T, D), caches, cache)``."""
    kinds = [_block_kind(entry, i) for i, entry in enumerate(params["blocks"])]
    c_blocks = []
    for i, kind in enumerate(kinds):
        kv = None if caches is None else caches[i]
        h, kv, c = _BLOCKS[kind][1](
            params["blocks"][i][kind], h, mask=mask, padding_mask=padding_mask, mode=mode, kv=kv
        )
        if caches is not None:
            caches[i] = kv
        c_blocks.append(c)
    n, c_norm = _final_norm(params, h)
    return n, caches, (kinds, c_blocks, c_norm)


def transformer_blocks_backward(params: dict, cache, dn: np.ndarray):
    """Returns ``(dh, grads)``: the gradient of the embeddings h and a dict of the ``blocks`` and
    ``norm`` gradients."""
    kinds, c_blocks, c_norm = cache
    g = {}
    dh, g["norm"] = _final_norm_backward(dn, c_norm)
    g["blocks"] = [None] * len(kinds)
    for i in range(len(kinds) - 1, -1, -1):
        dh, grads = _BLOCKS[kinds[i]][2](params["blocks"][i][kinds[i]], c_blocks[i], dh)
        g["blocks"][i] = {kinds[i]: grads}
    return dh, g


def _stack(params, tokens, *, mask, padding_mask=None, mode="parallel", caches=None):
    """(7), the blocks, the final norm. With ``caches`` (one KVCache per block) the tokens follow
    the cached ones. Returns (n (B, T, D), caches, cache)."""
    for i, entry in enumerate(params["blocks"]):
        _block_kind(entry, i)  # a wrong block kind is named before the embedding is computed
    t0 = 0 if caches is None else caches[0].length
    h, c_emb = _embed(params, tokens, t0)
    n, caches, c_blocks = transformer_blocks(params, h, mask=mask, padding_mask=padding_mask, mode=mode, caches=caches)
    return n, caches, (c_emb, c_blocks)


def _stack_backward(params, cache, dn) -> dict:
    """Gradients of embed, pos_embed, blocks, norm (the embedding's share only: a tied head adds)."""
    c_emb, c_blocks = cache
    dh, g = transformer_blocks_backward(params, c_blocks, dn)
    g["embed"], dP = _embed_backward(dh, c_emb)
    if dP is not None:
        g["pos_embed"] = dP
    return g


# ------------------------------------------------------------------------------------------------
# the decoder-only language model (7)-(8)


def init_transformer_lm(
    rng: np.random.Generator,
    vocab_size: int,
    D: int,
    n_layers: int,
    arch: str = "llama",
    *,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    mlp_hidden: int | None = None,
    max_len: int | None = None,
    tied: bool | None = None,
    dtype=np.float64,
) -> dict:
    """A decoder-only language model of ``n_layers`` blocks of kind ``arch``:

    - ``"gpt2"``: learned positions (``max_len`` rows, default 1024), GPT-2 blocks, final LayerNorm,
      head tied to the embedding by default; GPT-2 init (module docstring).
    - ``"llama"``: RoPE inside the blocks (no ``max_len``), GQA (``num_kv_heads``), final RMSNorm,
      untied head by default; normal(0.02) init.
    """
    params = _init_stack(
        rng, vocab_size, D, n_layers, arch, num_heads, num_kv_heads, head_dim, mlp_hidden, max_len, dtype
    )
    tied = arch == "gpt2" if tied is None else tied
    if not isinstance(tied, bool):
        raise ValueError(f"tied: expected True, False or None (the architecture's default), got {tied!r}")
    if not tied:
        params["head"] = normal(rng, params["embed"].shape[::-1], INIT_STD, params["embed"].dtype)  # (D, vocab)
    return params


def _head(params, n):
    """(8): logits = n W_head with W_head = E^T when tied."""
    W = params["head"] if "head" in params else params["embed"].T  # (D, vocab)
    return linear(n, W)


def _lm_mask(prefix_len, tokens):
    """"causal", or with ``prefix_len`` the prefix-LM mask (B, T, T)."""
    return "causal" if prefix_len is None else prefix_lm_mask(prefix_len, *tokens.shape)


def transformer_lm_forward(params: dict, tokens: np.ndarray, *, mode: str = "parallel", prefix_len=None):
    """Logits (B, T, vocab) for token ids (B, T); ``mode`` "parallel" | "recurrent" (the attention
    form); ``prefix_len`` (an int or (B,)): a prefix LM, the first ``prefix_len`` tokens attend both
    ways (:func:`prefix_lm_mask`); None: causal. Returns ``(logits, cache)``."""
    _check_model(params, {"pos_embed", "head"})
    tokens = _check_tokens(tokens, params)
    n, _, c_stack = _stack(params, tokens, mask=_lm_mask(prefix_len, tokens), mode=mode)
    logits, c_head = _head(params, n)  # (B, T, vocab)
    return logits, (c_stack, c_head, logits.shape, logits.dtype)


def transformer_lm_backward(params: dict, cache, dlogits: np.ndarray) -> dict:
    """Gradients of every parameter, shaped like ``params``."""
    c_stack, c_head, shape, dtype = cache
    dlogits = _validate.cotangent(dlogits, "dlogits", shape, dtype, "(B, T, vocab)")
    dn, dW_head, _ = linear_backward(dlogits, c_head)  # dW_head (D, vocab)
    g = _stack_backward(params, c_stack, dn)
    if "head" in params:
        g["head"] = dW_head
    else:
        g["embed"] = g["embed"] + dW_head.T  # the tied embedding is used twice: its gradients add
    return {key: g[key] for key in params}


def transformer_lm_loss_and_grads(params: dict, batch, rng: np.random.Generator | None = None, *, mode="parallel"):
    """``(loss, grads)`` of the mean next-token cross-entropy, with the signature ``ref.train.train``
    calls. ``batch``: a pair ``(inputs, targets)`` of ids (B, T), or an object with ``inputs``,
    ``targets`` and optionally ``loss_mask`` (B, T) bool (a ``ref.tasks.Batch``) and ``prefix_len``
    (a prefix LM, :func:`prefix_lm_mask`); ``rng`` is unused (no dropout)."""
    prefix_len = None
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        inputs, targets, loss_mask = batch.inputs, batch.targets, getattr(batch, "loss_mask", None)
        prefix_len = getattr(batch, "prefix_len", None)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        (inputs, targets), loss_mask = batch, None
    else:
        raise ValueError(f"batch: expected (inputs, targets) or a ref.tasks.Batch, got {type(batch).__name__}")
    _check_model(params, {"pos_embed", "head"})
    inputs = _check_tokens(inputs, params, "inputs")
    targets = _validate.int_array(targets, "targets")
    checks.same_shape(targets, "targets", inputs.shape, "(B, T)", "the shape of inputs")
    if loss_mask is not None:
        if not isinstance(loss_mask, np.ndarray) or loss_mask.dtype != np.bool_:
            raise ValueError(f"loss_mask: expected a bool array (B, T), got {type(loss_mask).__name__}")
        checks.same_shape(loss_mask, "loss_mask", inputs.shape, "(B, T)", "the shape of inputs")
        targets = np.where(loss_mask, targets, -100)  # -100: cross_entropy's ignore_index
    logits, c_model = transformer_lm_forward(params, inputs, mode=mode, prefix_len=prefix_len)
    loss, c_loss = cross_entropy(logits, targets, ignore_index=-100)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), transformer_lm_backward(params, c_model, dlogits)


# ------------------------------------------------------------------------------------------------
# KV-cache inference and generation


def init_kv_caches(params: dict, batch: int, max_len: int) -> list:
    """One empty KVCache per block, for ``batch`` sequences of up to ``max_len`` tokens (a cache
    that fills up is replaced by a larger copy, so ``max_len`` is a hint, not a limit)."""
    _check_model(params, {"pos_embed", "head"})
    B = checks.positive_int(batch, "batch")
    S = checks.positive_int(max_len, "max_len")
    caches = []
    for i, entry in enumerate(params["blocks"]):
        kind = _block_kind(entry, i)
        _, _, H, K, V, dtype = _attention_spec(entry[kind].get("attn"), f"params/blocks/{i}/{kind}/attn")
        caches.append(KVCache.empty(B, S, H, K, V, dtype))
    return caches


def _check_caches(caches, params, B: int) -> list:
    """A list of one KVCache per block, all holding the same number of tokens (a copy of the list)."""
    L = len(params["blocks"])
    if not isinstance(caches, list) or len(caches) != L or not all(isinstance(c, KVCache) for c in caches):
        raise ValueError(
            f"caches: expected a list of {L} KVCaches (init_kv_caches or a previous call), got {caches!r:.80}"
        )
    lengths = {c.length for c in caches}
    if len(lengths) != 1 or any(c.k.shape[0] != B for c in caches):
        raise ValueError(
            f"caches: expected caches of batch B = {B} (from tokens) holding the same number of tokens, got batches "
            f"{[c.k.shape[0] for c in caches]} and lengths {[c.length for c in caches]}"
        )
    return list(caches)


def transformer_lm_prefill(params: dict, tokens: np.ndarray, caches: list | None = None, *, prefix_len=None):
    """Run tokens (B, T) through the model at once, after the tokens already in ``caches`` (None:
    new caches), appending their keys and values. Returns ``(logits (B, T, vocab), caches)``.
    ``prefix_len``: a prefix LM's prefix, all in these tokens (new caches only); the tokens decoded
    after it attend causally, as in training."""
    _check_model(params, {"pos_embed", "head"})
    tokens = _check_tokens(tokens, params)
    B, T = tokens.shape
    if prefix_len is not None and caches is not None:
        raise ValueError("prefix_len: a prefix must be prefilled into new caches (caches=None), got caches")
    caches = init_kv_caches(params, B, max(T, KV_CAPACITY)) if caches is None else _check_caches(caches, params, B)
    n, caches, _ = _stack(params, tokens, mask=_lm_mask(prefix_len, tokens), caches=caches)
    logits, _ = _head(params, n)
    return logits, caches


def transformer_lm_decode(params: dict, tokens: np.ndarray, caches: list | None = None):
    """Feed tokens (B, T) one at a time through every block's ``step`` (the KV-cache decode),
    after the tokens already in ``caches`` (None: none). Returns ``(logits (B, T, vocab), caches)``;
    equals :func:`transformer_lm_forward` on the whole sequence."""
    _check_model(params, {"pos_embed", "head"})
    tokens = _check_tokens(tokens, params)
    B, T = tokens.shape
    kinds = [_block_kind(entry, i) for i, entry in enumerate(params["blocks"])]
    caches = [None] * len(kinds) if caches is None else _check_caches(caches, params, B)
    t0 = 0 if caches[0] is None else caches[0].length
    out = []
    for t in range(T):
        h, _ = _embed(params, tokens[:, t : t + 1], t0 + t)  # (B, 1, D)
        h = h[:, 0]  # (B, D)
        for i, kind in enumerate(kinds):
            h, caches[i] = _BLOCKS[kind][3](params["blocks"][i][kind], h, caches[i])
        n, _ = _final_norm(params, h)
        logits_t, _ = _head(params, n)  # (B, vocab)
        out.append(logits_t)
    return np.stack(out, axis=1), caches


def _check_temperature(temperature) -> float:
    t = _validate.real(temperature, "temperature")
    if t < 0:
        raise ValueError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature!r}")
    return t


def _check_top_k(top_k, vocab: int):
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= vocab:
        raise ValueError(f"top_k: expected None or an integer in [1, vocab_size = {vocab}], got {top_k!r}")
    return int(top_k)


def _check_sampling_rng(rng, temperature: float):
    if temperature > 0 and not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: sampling (temperature > 0) needs a numpy.random.Generator (np.random.default_rng(seed)); "
            f"pass temperature=0 for greedy decoding; got {type(rng).__name__}"
        )
    return rng


def sample_token(logits: np.ndarray, *, temperature: float = 1.0, top_k: int | None = None, rng=None) -> np.ndarray:
    """The next token of each sequence from its logits (B, vocab): the argmax for ``temperature=0``
    (greedy, the first one on ties), else a draw from softmax(logits / temperature) over the
    ``top_k`` largest logits (all when None; ties with the k-th are kept), using ``rng``. Returns
    int64 (B,)."""
    logits = checks.float_array(logits, "logits", ndim=2, dims="(B, vocab)")
    checks.finite(logits, "logits")
    temperature = _check_temperature(temperature)
    top_k = _check_top_k(top_k, logits.shape[1])
    rng = _check_sampling_rng(rng, temperature)
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / temperature  # (B, vocab)
    if top_k is not None:
        kth = np.sort(z, axis=-1)[:, -top_k, None]  # the k-th largest logit: (B, 1)
        z = np.where(z < kth, -np.inf, z)  # drop the others
    p = np.exp(z - z.max(axis=-1, keepdims=True))  # unnormalised softmax: (B, vocab)
    cdf = np.cumsum(p, axis=-1)  # (B, vocab)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]  # uniform in [0, total): (B, 1)
    # the first token whose cumulative mass exceeds u (never one of zero probability)
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[1] - 1).astype(np.int64)


def generate(
    params: dict,
    prompt_tokens: np.ndarray,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Continue each prompt (B, T0) by ``max_new_tokens`` tokens: prefill the prompt into one KV
    cache per block, then one decode step per new token (module docstring). ``temperature=0`` is
    greedy decoding (deterministic, no ``rng``); otherwise sampling, as :func:`sample_token`, with
    ``rng`` (the same seed gives the same tokens). Returns the prompt and the new tokens, int64
    (B, T0 + max_new_tokens)."""
    _check_model(params, {"pos_embed", "head"})
    prompt = _check_tokens(prompt_tokens, params, "prompt_tokens")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
    n_new = int(max_new_tokens)
    temperature = _check_temperature(temperature)
    top_k = _check_top_k(top_k, params["embed"].shape[0])
    rng = _check_sampling_rng(rng, temperature)
    B, T0 = prompt.shape
    if "pos_embed" in params and T0 + n_new - 1 > params["pos_embed"].shape[0]:
        raise ValueError(
            f"max_new_tokens: the prompt ({T0} tokens) and {n_new} new tokens need {T0 + n_new - 1} positions, "
            f"more than the {params['pos_embed'].shape[0]} learned ones (params/pos_embed)"
        )
    out = np.empty((B, T0 + n_new), np.int64)
    out[:, :T0] = prompt
    if n_new == 0:
        return out
    caches = init_kv_caches(params, B, T0 + n_new)  # room for every token fed
    logits, caches = transformer_lm_prefill(params, prompt, caches)  # (B, T0, vocab)
    next_logits = logits[:, -1]  # (B, vocab)
    for i in range(n_new):
        token = sample_token(next_logits, temperature=temperature, top_k=top_k, rng=rng)  # (B,)
        out[:, T0 + i] = token
        if i + 1 < n_new:  # the last token is returned, not fed
            logits, caches = transformer_lm_decode(params, token[:, None], caches)  # (B, 1, vocab)
            next_logits = logits[:, 0]
    return out


# ------------------------------------------------------------------------------------------------
# the bidirectional encoder


def init_encoder(
    rng: np.random.Generator,
    vocab_size: int,
    D: int,
    n_layers: int,
    arch: str = "gpt2",
    *,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    mlp_hidden: int | None = None,
    max_len: int | None = None,
    dtype=np.float64,
) -> dict:
    """A bidirectional encoder: the stack of :func:`init_transformer_lm` (``arch`` "gpt2": learned
    positions, LayerNorm; "llama": RoPE, RMSNorm) without a head, plus the pooler
    ``pool = {W (D, D) normal(0.02), b (D,) zeros}``. ``max_len`` defaults to 1024 for "gpt2"."""
    params = _init_stack(
        rng, vocab_size, D, n_layers, arch, num_heads, num_kv_heads, head_dim, mlp_hidden, max_len, dtype
    )
    D, dtype = params["embed"].shape[1], params["embed"].dtype
    params["pool"] = {"W": normal(rng, (D, D), INIT_STD, dtype), "b": np.zeros(D, dtype)}
    return params


def encoder_forward(params: dict, tokens: np.ndarray, *, padding_mask=None, output: str = "tokens"):
    """Encode tokens (B, T) with every token attending to every (real) token. ``padding_mask`` (B, T)
    bool, True = a real token: the others are hidden as keys. ``output``: "tokens", the final hidden
    states (B, T, D), or "pooled", tanh(h_0 W_pool + b_pool) (B, D) of the first ([CLS]) token.
    Returns ``(y, cache)``."""
    _check_model(params, {"pos_embed", "pool"})
    if "pool" not in params:
        raise ValueError(f"params: expected an encoder with a 'pool' entry (init_encoder), got {sorted(params)}")
    tokens = _check_tokens(tokens, params)
    checks.one_of(output, "output", ("tokens", "pooled"))
    n, _, c_stack = _stack(params, tokens, mask="bidirectional", padding_mask=padding_mask)  # (B, T, D)
    if output == "tokens":
        return n, (c_stack, None, n.shape, n.dtype)
    a, c_pool = linear(n[:, 0], params["pool"]["W"], params["pool"]["b"])  # the first token: (B, D)
    y, c_tanh = tanh(a)
    return y, (c_stack, (c_pool, c_tanh, n.shape), y.shape, y.dtype)


def encoder_backward(params: dict, cache, dy: np.ndarray) -> dict:
    """Gradients of every parameter, shaped like ``params`` (the pooler's are zero for
    ``output="tokens"``)."""
    c_stack, c_out, shape, dtype = cache
    dy = _validate.cotangent(dy, "dy", shape, dtype, "(B, T, D) or (B, D), the shape of the output")
    pool = params["pool"]
    if c_out is None:
        dn = dy
        g_pool = {"W": np.zeros_like(pool["W"]), "b": np.zeros_like(pool["b"])}
    else:
        c_pool, c_tanh, n_shape = c_out
        (da,) = tanh_backward(dy, c_tanh)
        dn0, dW, db = linear_backward(da, c_pool)  # (B, D)
        dn = np.zeros(n_shape, dtype)
        dn[:, 0] = dn0  # only the first token feeds the pooler
        g_pool = {"W": dW, "b": db}
    g = _stack_backward(params, c_stack, dn)
    g["pool"] = g_pool
    return {key: g[key] for key in params}
