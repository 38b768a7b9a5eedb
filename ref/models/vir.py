"""ViR: Vision Retention Networks (Hatamizadeh et al., 2023, arXiv 2310.19731).

A ViT whose self-attention is replaced by retention, so that an image can be read as a causal
sequence of patches, in parallel for training or token by token, in constant memory, at inference:

    tokens = Conv_pxp,stride p(image) + pos_embed    (B, N, D): one token per p x p patch   (1)
    x = [tokens, cls]   (the class token appended LAST, "token_last", without a position)  (2)
    x <- x + ls1 * Retention(LN(x)),   x <- x + ls2 * MLP(LN(x))   per block (pre-LN ViT)   (3)
    logits = LN(x)[:, cls position] W_head + b_head                                          (4)

The retention layer, per head (H heads of K = D / H dims), with qkv and output biases as the
authors' code, and no gate and no GroupNorm ("plain retention"):

    q, k, v = x W_{q,k,v} + b_{q,k,v}                                                       (5)
    S_n = gamma_h S_{n-1} + k_n^T v_n,   o_n = K^-1/2 q_n S_n      (ref.mixers.retention)     (6)
    gamma_h = 1 - exp(linspace(log 1/32, log 1/512, H))_h                                  (7)
    y = o W_o + b_o                                                                          (8)

(6) is the recurrent form of the parallel (K^-1/2 Q K^T ⊙ D) V with D_nm = gamma^(n-m), n >= m;
the chunked form is ViR's chunkwise form (chunks of 16). ``mode`` picks the form: "parallel"
(masked attention with per-key decays, ``ref.mixers.retention``), "decay_matrix" (the T x T
matrix D itself, the authors' parallel formula, the fastest for short sequences), "chunked" or
"recurrent"; all four compute the same function. Why the class token goes last: with a
causal mixer a token sees only the tokens before it, so only a class token read at the END has
seen the whole image; read first, it has seen nothing (``class_token="first"``: the lesson's
"chance accuracy" ablation).

``vir_recurrent`` is the inference path: one token at a time through every block, carrying one
(H, K, K) retention state per block and image, so its memory does not grow with the number of
patches (a KV cache would); it gives the class-token logits of the parallel forward.

The ViT baseline (``vit_*``): the same backbone, the same parameters (``init_vit`` is
``init_vir``), with softmax attention (``ref.mixers.attention``) in place of (6):

    o_n = sum_{m: M_nm} softmax_m(K^-1/2 q_n . k_m) v_m                                      (9)

with the mask M "bidirectional" (every token sees every token: a plain ViT, where the class
token's position makes no difference, since the class token carries no position embedding) or
"causal" (m <= n, as retention: the class token must then go last). A causal ViT can also read an
image token by token (``vit_recurrent``), but its state is a KV cache that holds k and v of every
token seen: 2 x T x H x K numbers per block, against retention's H x K x K.

Sources (the authors' code, the file headed "Code by authors of ViR", class VisionRetention;
NVlabs/ViR itself holds only a README): decay schedule (7) (``DecayMask``); ``qkv`` and
``out_proj`` with biases; q scaled by head_dim^-1/2; pre-LN blocks with LayerNorm eps 1e-6, timm
MLP (fc1, GELU, fc2, ratio 4) and LayerScale initialised to 1e-5; ``global_pool="token_last"``:
the position embedding is added to the patches only (``no_embed_class``), the class token is
concatenated after them and the head reads ``x[:, -1]`` after the final LayerNorm; init: linear
weights normal(0.02) (timm's truncated normal, cut at +-2 = 100 std, i.e. never in practice), zero
biases, ``pos_embed`` normal(0.02), ``cls_token`` normal(1e-6), the patch embedding as PyTorch's
Conv2d default (U(+-1/sqrt(fan_in))). Deviation: the released *parallel* path applies a softmax
after the decay mask, which breaks the equivalence with its own recurrent and chunkwise paths (they
have none); here every form is the same function, without softmax.

Parameters (C channels, p patch size, N patches, L blocks)::

    patch: {W (D, C, p, p), b (D,)}     pos_embed (N, D)     cls_token (D,)
    blocks: L x {norm1: {weight, bias}, mixer: {W_q (D, H, K), b_q (H, K), W_k, b_k,
                 W_v (D, H, V), b_v (H, V), W_o (H*V, D), b_o (D,)}, ls1 (D,),
                 norm2: {weight, bias}, mlp: {W_1, b_1, W_2, b_2}, ls2 (D,)}
    norm: {weight, bias}                head: {W (D, n_classes), b (n_classes,)}

Patch size, channels, width and heads are read from the shapes; images are (B, C, H_img, W_img)
(the bundled 8x8 digits: ``X.reshape(-1, 1, 8, 8)``; 2x2 patches give 16 tokens + the class token).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from ref import checks
from ref.models.gla import (
    check_chunk_size,
    check_cotangent,
    check_dtype,
    check_input,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    head_projections,
    normal,
    split_heads,
)
from ref.mixers.attention import KVCache, attention_decode_step, attention_parallel, attention_parallel_backward
from ref.mixers.simple_gla import simple_gla_decay_matrix, simple_gla_decay_matrix_backward
from ref.models.retnet import gelu_mlp, gelu_mlp_backward, run_retention, run_retention_backward
from ref.nn import (
    conv2d,
    conv2d_backward,
    cross_entropy,
    cross_entropy_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
)

__all__ = [
    "CLASS_TOKEN_POSITIONS",
    "vir_gammas",
    "init_vir",
    "init_vir_retention",
    "vir_retention",
    "vir_retention_backward",
    "init_vir_block",
    "vir_block",
    "vir_block_backward",
    "vir_block_step",
    "vir_forward",
    "vir_backward",
    "vir_recurrent",
    "vir_loss_and_grads",
    "VIR_MODES",
    "ATTENTION_MASKS",
    "init_vit",
    "vit_attention",
    "vit_attention_backward",
    "vit_block",
    "vit_block_backward",
    "vit_block_step",
    "vit_forward",
    "vit_backward",
    "vit_recurrent",
    "vit_loss_and_grads",
]

CLASS_TOKEN_POSITIONS = ("last", "first")
LN_EPS = 1e-6  # every LayerNorm (authors' norm_layer = partial(nn.LayerNorm, eps=1e-6))
LAYER_SCALE_INIT = 1e-5  # LayerScale (authors' init_values)
INIT_STD = 0.02  # linear weights and pos_embed
CLS_INIT_STD = 1e-6  # cls_token
CHUNK_SIZE = 16  # ViR's chunkwise form
VIR_MODES = ("parallel", "decay_matrix", "chunked", "recurrent")  # the forms of retention (6)
ATTENTION_MASKS = ("bidirectional", "causal")  # the ViT baseline's masks (9)


class _Mixer(NamedTuple):
    """What a block's token mixer computes: retention (6) in one of its forms, softmax attention
    (9) with a mask, or one decoding step of causal attention over a KV cache."""

    kind: str  # "retention" | "attention" | "decode"
    mode: str | None = None  # retention: one of VIR_MODES
    chunk_size: int | None = None  # retention, mode "chunked"
    mask: str | None = None  # attention: one of ATTENTION_MASKS


def _retention_mixer(mode: str, chunk_size) -> _Mixer:
    checks.one_of(mode, "mode", VIR_MODES)
    return _Mixer("retention", mode, check_chunk_size(chunk_size) if mode == "chunked" else None)


def _attention_mixer(mask: str) -> _Mixer:
    return _Mixer("attention", mask=checks.one_of(mask, "mask", ATTENTION_MASKS))


def vir_gammas(H: int) -> np.ndarray:
    """(7): gamma_h = 1 - exp(linspace(log(1/32), log(1/512), H)), float64 (H,); from 1 - 1/32
    (a window of about 32 tokens) to 1 - 1/512 (about 512). One head gets 1 - 1/32."""
    H = checks.positive_int(H, "H")
    return 1.0 - np.exp(np.linspace(math.log(1 / 32), math.log(1 / 512), H))


# ------------------------------------------------------------------------------------------------
# the retention layer (5)-(8)


def init_vir_retention(rng, D: int, num_heads: int, *, dtype=np.float64) -> dict:
    """Parameters of ViR's retention: per head K = V = D / H; normal(0.02) weights, zero biases."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    K = split_heads(D, num_heads, "D", "model width")
    H = checks.positive_int(num_heads, "num_heads")
    p = {}
    for name in ("q", "k", "v"):
        p["W_" + name] = normal(rng, (D, H, K), INIT_STD, dtype)
        p["b_" + name] = np.zeros((H, K), dtype)
    p["W_o"] = normal(rng, (D, D), INIT_STD, dtype)
    p["b_o"] = np.zeros(D, dtype)
    return p


def _retention_spec(params, where):
    D, H, K, V, dtype = head_projections(params, where)
    spec = {
        "W_q": ((D, H, K), "(D, H, K)"),
        "b_q": ((H, K), "(H, K)"),
        "W_k": ((D, H, K), "(D, H, K)"),
        "b_k": ((H, K), "(H, K)"),
        "W_v": ((D, H, V), "(D, H, V)"),
        "b_v": ((H, V), "(H, V)"),
        "W_o": ((H * V, D), "(H*V, D)"),
        "b_o": ((D,), "(D,)"),
    }
    check_params(params, where, spec, dtype)
    return D, H, K, V, dtype


def _run_retention(q, k, v, gamma, mode, chunk_size, initial_state):
    """(6) in the chosen form: ``(o, ht, cache)``."""
    if mode != "decay_matrix":
        return run_retention(q, k, v, gamma, mode=mode, chunk_size=chunk_size, initial_state=initial_state)
    # (QK^T / sqrt(K) ⊙ D) V with D_nm = gamma^(n-m) = exp(G_n - G_m), G the cumulative sum of log gamma
    g = np.broadcast_to(np.log(gamma).astype(q.dtype), q.shape[:3])  # (B, T, H)
    o, ht, cache = simple_gla_decay_matrix(q, k, v, g, initial_state=initial_state)
    return o, ht, ("decay_matrix", cache)


def _run_retention_backward(do, cache):
    mode, mixer_cache = cache
    if mode != "decay_matrix":
        return run_retention_backward(do, cache)
    dq, dk, dv, _, _ = simple_gla_decay_matrix_backward(do, None, mixer_cache)  # the decays are fixed
    return dq, dk, dv


def _token_mixer(params, x, mixer: _Mixer, state, where="params"):
    """(5), then (6)-(7) or (9), then (8), on x (B, T, D). ``state``: the retention state entering
    (B, H, K, V) or None; for ``kind="decode"`` the KV cache (updated in place). Returns
    ``(y, state, cache)``."""
    D, H, _, V, dtype = _retention_spec(params, where)
    x = check_input(x, D, dtype)
    B, T, _ = x.shape
    c = {"H": H, "x_shape": x.shape, "dtype": dtype, "kind": mixer.kind}
    # (5) q, k (B, T, H, K), v (B, T, H, V), with biases
    q, c["q"] = head_linear(x, params["W_q"], params["b_q"])
    k, c["k"] = head_linear(x, params["W_k"], params["b_k"])
    v, c["v"] = head_linear(x, params["W_v"], params["b_v"])
    if mixer.kind == "retention":
        # (6), (7) retention with ViR's decays
        o, state, c["mixer"] = _run_retention(q, k, v, vir_gammas(H), mixer.mode, mixer.chunk_size, state)
    elif mixer.kind == "attention":
        # (9) softmax attention, scale K^-1/2, under the mask
        o, c["mixer"] = attention_parallel(q, k, v, mask=mixer.mask)  # (B, T, H, V)
    else:
        # (9) for one new token: append its k, v to the cache, attend over every cached token
        o_t, state = attention_decode_step(q[:, 0], k[:, 0], v[:, 0], state, position=state.length)  # (B, H, V)
        o = o_t[:, None]  # (B, 1, H, V)
    # (8) y = o W_o + b_o
    y, c["out"] = linear(o.reshape(B, T, H * V), params["W_o"], params["b_o"])  # (B, T, D)
    return y, state, c


def _token_mixer_backward(params, cache, dy):
    c, g = cache, {}
    if c["kind"] == "decode":
        raise ValueError("cache: a decoding step (vit_block_step) keeps no cache for backward")
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    do, g["W_o"], g["b_o"] = linear_backward(dy, c["out"])  # (B, T, H*V)
    B, T, _ = do.shape
    do = do.reshape(B, T, c["H"], -1)  # (B, T, H, V)
    if c["kind"] == "retention":
        dq, dk, dv = _run_retention_backward(do, c["mixer"])
    else:
        dq, dk, dv = attention_parallel_backward(do, c["mixer"])
    dx = None
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        dx_p, g["W_" + name], g["b_" + name] = head_linear_backward(d, c[name])
        dx = dx_p if dx is None else dx + dx_p
    return dx, {key: g[key] for key in params}


def vir_retention(params: dict, x: np.ndarray, *, mode: str = "parallel", chunk_size: int = CHUNK_SIZE):
    """ViR's retention (5)-(8) on x (B, T, D). Returns ``(y, cache)``."""
    y, _, cache = _token_mixer(params, x, _retention_mixer(mode, chunk_size), None)
    return y, cache


def vir_retention_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    return _token_mixer_backward(params, cache, dy)


def vit_attention(params: dict, x: np.ndarray, *, mask: str = "bidirectional"):
    """The ViT baseline's softmax attention (5), (9), (8) on x (B, T, D), with the parameters of
    ViR's retention (``init_vir_retention``). Returns ``(y, cache)``.

    The key bias b_k adds q_n . b_k to every score of row n, a constant that the softmax removes:
    its gradient is exactly zero here (retention, which has no softmax, does use it)."""
    y, _, cache = _token_mixer(params, x, _attention_mixer(mask), None)
    return y, cache


def vit_attention_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    return _token_mixer_backward(params, cache, dy)


# ------------------------------------------------------------------------------------------------
# the block (3)

_BLOCK_KEYS = {"norm1", "mixer", "ls1", "norm2", "mlp", "ls2"}


def init_vir_block(
    rng, D: int, num_heads: int, *, mlp_ratio: float = 4.0, layer_scale: float = LAYER_SCALE_INIT, dtype=np.float64
) -> dict:
    """A pre-LN block: LayerNorms (1, 0), retention, LayerScale ``layer_scale``, MLP of width
    ``mlp_ratio * D`` (normal(0.02) weights, zero biases)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, numbers.Real) or not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio: expected a number > 0, got {mlp_ratio!r}")
    F = max(1, int(D * mlp_ratio))
    if isinstance(layer_scale, bool) or not isinstance(layer_scale, numbers.Real) or not math.isfinite(layer_scale):
        raise ValueError(f"layer_scale: expected a finite number, got {layer_scale!r}")
    return {
        "norm1": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mixer": init_vir_retention(rng, D, num_heads, dtype=dtype),
        "ls1": np.full(D, layer_scale, dtype),
        "norm2": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mlp": {
            "W_1": normal(rng, (D, F), INIT_STD, dtype),
            "b_1": np.zeros(F, dtype),
            "W_2": normal(rng, (F, D), INIT_STD, dtype),
            "b_2": np.zeros(D, dtype),
        },
        "ls2": np.full(D, layer_scale, dtype),
    }


def _block(params, x, mixer: _Mixer, state, where="params"):
    if not isinstance(params, dict) or set(params) != _BLOCK_KEYS:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a ViR block {sorted(_BLOCK_KEYS)}, got {got}")
    # (3) h = x + ls1 * Retention(LN(x))
    n1, c_n1 = layer_norm(x, params["norm1"]["weight"], params["norm1"]["bias"], eps=LN_EPS)
    r, state, c_mix = _token_mixer(params["mixer"], n1, mixer, state, f"{where}/mixer")
    h = x + params["ls1"] * r
    # (3) y = h + ls2 * MLP(LN(h))
    n2, c_n2 = layer_norm(h, params["norm2"]["weight"], params["norm2"]["bias"], eps=LN_EPS)
    m, c_mlp = gelu_mlp(params["mlp"], n2)
    y = h + params["ls2"] * m
    return y, state, (c_n1, c_mix, r, c_n2, c_mlp, m)


def vir_block(params: dict, x: np.ndarray, *, mode: str = "parallel", chunk_size: int = CHUNK_SIZE):
    """One ViR block (3) on x (B, T, D). Returns ``(y, cache)``."""
    y, _, cache = _block(params, x, _retention_mixer(mode, chunk_size), None)
    return y, cache


def vir_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_mix, r, c_n2, c_mlp, m = cache
    dy = check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    D = dy.shape[-1]
    # y = h + ls2 * m
    dls2 = (dy * m).reshape(-1, D).sum(axis=0)  # (D,)
    dn2, g_mlp = gelu_mlp_backward(params["mlp"], c_mlp, dy * params["ls2"])
    dh_mlp, dw2, db2 = layer_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    # h = x + ls1 * r
    dls1 = (dh * r).reshape(-1, D).sum(axis=0)  # (D,)
    dn1, g_mix = _token_mixer_backward(params["mixer"], c_mix, dh * params["ls1"])
    dx_mix, dw1, db1 = layer_norm_backward(dn1, c_n1)
    grads = {
        "norm1": {"weight": dw1, "bias": db1},
        "mixer": g_mix,
        "ls1": dls1,
        "norm2": {"weight": dw2, "bias": db2},
        "mlp": g_mlp,
        "ls2": dls2,
    }
    return dh + dx_mix, grads


def vir_block_step(params: dict, x_t: np.ndarray, state: np.ndarray | None = None):
    """One token through a block: x_t (B, D), state (B, H, K, V) or None -> ``(y_t, state)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, ht, _ = _block(params, x_t[:, None, :], _Mixer("retention", "recurrent"), state)
    return y[:, 0], ht


def vit_block(params: dict, x: np.ndarray, *, mask: str = "bidirectional"):
    """One block of the ViT baseline: (3) with attention (9) as the mixer. Returns ``(y, cache)``."""
    y, _, cache = _block(params, x, _attention_mixer(mask), None)
    return y, cache


def vit_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    return vir_block_backward(params, cache, dy)


def vit_block_step(params: dict, x_t: np.ndarray, kv_cache: KVCache):
    """One token through a causal ViT block: x_t (B, D); ``kv_cache`` holds k, v of the tokens
    before it and gains this token's (in place). Returns ``(y_t, kv_cache)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    if not isinstance(kv_cache, KVCache):
        raise ValueError(f"kv_cache: expected a KVCache, got {type(kv_cache).__name__}")
    y, kv_cache, _ = _block(params, x_t[:, None, :], _Mixer("decode"), kv_cache)
    return y[:, 0], kv_cache


# ------------------------------------------------------------------------------------------------
# the model (1)-(4)


def _pair(value, name: str) -> tuple[int, int]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f"{name}: expected an integer or a pair of integers, got {value!r}")
    return checks.positive_int(values[0], name), checks.positive_int(values[1], name)


def init_vir(
    rng: np.random.Generator,
    *,
    image_size=8,
    patch_size: int = 2,
    in_channels: int = 1,
    num_classes: int = 10,
    D: int = 32,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: float = 4.0,
    layer_scale: float = LAYER_SCALE_INIT,
    dtype=np.float64,
) -> dict:
    """A ViR for ``image_size`` (int or (H, W)) images cut into ``patch_size`` squares; defaults fit
    the bundled 8x8 digits (16 patches). Initialisation as the authors' code (module docstring)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    Hi, Wi = _pair(image_size, "image_size")
    p = checks.positive_int(patch_size, "patch_size")
    if Hi % p or Wi % p:
        raise ValueError(f"patch_size: expected a divisor of both image sides {(Hi, Wi)}, got {p}")
    C = checks.positive_int(in_channels, "in_channels")
    n_classes = checks.positive_int(num_classes, "num_classes")
    D = checks.positive_int(D, "D")
    L = checks.positive_int(depth, "depth")
    N = (Hi // p) * (Wi // p)
    a = 1 / math.sqrt(C * p * p)  # PyTorch Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return {
        "patch": {"W": rng.uniform(-a, a, (D, C, p, p)).astype(dtype), "b": rng.uniform(-a, a, D).astype(dtype)},
        "pos_embed": normal(rng, (N, D), INIT_STD, dtype),
        "cls_token": normal(rng, (D,), CLS_INIT_STD, dtype),
        "blocks": [
            init_vir_block(rng, D, num_heads, mlp_ratio=mlp_ratio, layer_scale=layer_scale, dtype=dtype)
            for _ in range(L)
        ],
        "norm": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "head": {"W": normal(rng, (D, n_classes), INIT_STD, dtype), "b": np.zeros(n_classes, dtype)},
    }


def _check_model(params) -> None:
    keys = {"patch", "pos_embed", "cls_token", "blocks", "norm", "head"}
    if not isinstance(params, dict) or set(params) != keys:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a ViR {sorted(keys)}, got {got}")
    if not isinstance(params["blocks"], list) or not params["blocks"]:
        raise ValueError(f"params/blocks: expected a non-empty list of blocks, got {params['blocks']!r:.80}")


def _embed(params, images, class_token):
    """(1)-(2): the token sequence (B, N + 1, D) and what backward needs."""
    _check_model(params)
    checks.one_of(class_token, "class_token", CLASS_TOKEN_POSITIONS)
    W = checks.float_array(params["patch"]["W"], "params/patch/W", ndim=4, dims="(D, C, p, p)")
    D, C, p, _ = W.shape
    images = checks.float_array(images, "images", ndim=4, dims="(B, C, H, W)")
    checks.same_dtype(images, "images", W.dtype, "the dtype of the parameters")
    B, C_img, Hi, Wi = images.shape
    if C_img != C or Hi % p or Wi % p:
        raise ValueError(
            f"images: expected shape (B, C, H, W) with C = {C} and H, W multiples of the patch size {p} "
            f"(from params/patch/W), got {images.shape}"
        )
    N = (Hi // p) * (Wi // p)
    pos = checks.float_array(params["pos_embed"], "params/pos_embed", ndim=2, dims="(N, D)")
    if pos.shape != (N, D):
        raise ValueError(
            f"images: {Hi}x{Wi} images in {p}x{p} patches give N = {N} tokens, but params/pos_embed is "
            f"{pos.shape} (the model was built for another image size)"
        )
    # (1) one token per patch: a p x p convolution with stride p, patches in row-major order
    grid, c_patch = conv2d(images, W, params["patch"]["b"], stride=p)  # (B, D, H/p, W/p)
    tokens = grid.reshape(B, D, N).transpose(0, 2, 1) + pos  # (B, N, D)
    # (2) the class token, last (or first)
    cls = np.broadcast_to(params["cls_token"], (B, 1, D))  # (B, 1, D)
    x = np.concatenate([tokens, cls] if class_token == "last" else [cls, tokens], axis=1)  # (B, N + 1, D)
    return x, (c_patch, grid.shape, class_token)


def _embed_backward(dx, cache, g):
    c_patch, grid_shape, class_token = cache
    # the class token's gradient is its column; the patches' the others
    cls_index = -1 if class_token == "last" else 0
    g["cls_token"] = dx[:, cls_index].sum(axis=0)  # (D,)
    dtokens = dx[:, :-1] if class_token == "last" else dx[:, 1:]  # (B, N, D)
    g["pos_embed"] = dtokens.sum(axis=0)  # (N, D)
    dgrid = np.ascontiguousarray(dtokens.transpose(0, 2, 1)).reshape(grid_shape)  # (B, D, H/p, W/p)
    _, dW, db = conv2d_backward(dgrid, c_patch)
    g["patch"] = {"W": dW, "b": db}


def _forward(params, images, class_token, mixer: _Mixer):
    x, c_embed = _embed(params, images, class_token)
    c_blocks = []
    for i, block in enumerate(params["blocks"]):
        x, _, c = _block(block, x, mixer, None, f"params/blocks/{i}")  # (3)
        c_blocks.append(c)
    # (4) logits from the class token after the final LayerNorm (per position, so only there)
    cls_index = -1 if class_token == "last" else 0
    z, c_norm = layer_norm(x[:, cls_index], params["norm"]["weight"], params["norm"]["bias"], eps=LN_EPS)  # (B, D)
    logits, c_head = linear(z, params["head"]["W"], params["head"]["b"])  # (B, n_classes)
    return logits, (c_embed, c_blocks, c_norm, c_head, x.shape, cls_index)


def vir_forward(
    params: dict,
    images: np.ndarray,
    *,
    class_token: str = "last",
    mode: str = "parallel",
    chunk_size: int = CHUNK_SIZE,
):
    """Class logits (B, n_classes) of images (B, C, H, W). ``mode``: the retention form, one of
    ``VIR_MODES`` (the same function). Returns ``(logits, cache)``."""
    return _forward(params, images, class_token, _retention_mixer(mode, chunk_size))


def vir_backward(params: dict, cache, dlogits: np.ndarray):
    """Gradients of every parameter (a tree shaped like ``params``); the images get none."""
    c_embed, c_blocks, c_norm, c_head, x_shape, cls_index = cache
    dlogits = checks.float_array(dlogits, "dlogits", ndim=2, dims="(B, n_classes)")
    checks.same_shape(dlogits, "dlogits", (x_shape[0], params["head"]["W"].shape[1]), "(B, n_classes)", "the logits")
    g = {}
    dz, dW, db = linear_backward(dlogits, c_head)
    g["head"] = {"W": dW, "b": db}
    dcls, dw, dbn = layer_norm_backward(dz, c_norm)
    g["norm"] = {"weight": dw, "bias": dbn}
    dx = np.zeros(x_shape, dlogits.dtype)  # (B, N + 1, D): only the class token's column reaches the head
    dx[:, cls_index] = dcls
    g["blocks"] = [None] * len(c_blocks)
    for i in range(len(c_blocks) - 1, -1, -1):
        dx, g["blocks"][i] = vir_block_backward(params["blocks"][i], c_blocks[i], dx)
    _embed_backward(dx, c_embed, g)
    return {key: g[key] for key in params}


def vir_recurrent(params: dict, images: np.ndarray, *, class_token: str = "last"):
    """The constant-memory inference path: tokens one by one through every block, one retention
    state (B, H, K, V) carried per block. Returns ``(logits, states)``; the logits equal
    ``vir_forward``'s (every form is the same function), the states are the final ones."""
    x, _ = _embed(params, images, class_token)
    T = x.shape[1]
    cls_index = T - 1 if class_token == "last" else 0
    states = [None] * len(params["blocks"])
    for t in range(cls_index + 1):  # the class token's output needs no token after it
        h = x[:, t]  # (B, D)
        for i, block in enumerate(params["blocks"]):
            h, states[i] = vir_block_step(block, h, states[i])
    z, _ = layer_norm(h, params["norm"]["weight"], params["norm"]["bias"], eps=LN_EPS)
    logits, _ = linear(z, params["head"]["W"], params["head"]["b"])
    return logits, states


def _loss_and_grads(forward, backward, params, batch, **options):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"batch: expected a pair (images, labels), got {type(batch).__name__}")
    images, labels = batch
    logits, cache = forward(params, images, **options)
    loss, c_loss = cross_entropy(logits, labels)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), backward(params, cache, dlogits)


def vir_loss_and_grads(
    params: dict,
    batch,
    rng: np.random.Generator | None = None,
    *,
    class_token: str = "last",
    mode: str = "parallel",
    chunk_size: int = CHUNK_SIZE,
):
    """Mean cross-entropy of a batch ``(images (B, C, H, W), labels (B,) ints)`` and its gradients:
    ``(loss, grads)``, the ``loss_and_grads`` of ``ref.train.train`` (``rng`` is unused: no dropout).
    Bind the options with ``functools.partial`` to train the class-token-first ablation."""
    return _loss_and_grads(
        vir_forward, vir_backward, params, batch, class_token=class_token, mode=mode, chunk_size=chunk_size
    )


# ------------------------------------------------------------------------------------------------
# the ViT baseline: the same backbone with softmax attention (9)


def init_vit(rng: np.random.Generator, **options) -> dict:
    """The ViT baseline's parameters: exactly ``init_vir``'s (same options, same tree, same
    initialisation), since softmax attention has the same projections as ViR's retention."""
    return init_vir(rng, **options)


def vit_forward(params: dict, images: np.ndarray, *, class_token: str = "first", mask: str = "bidirectional"):
    """Class logits (B, n_classes) of images (B, C, H, W) with attention (9) under ``mask``
    ("bidirectional": a plain ViT; "causal"). Returns ``(logits, cache)``."""
    return _forward(params, images, class_token, _attention_mixer(mask))


def vit_backward(params: dict, cache, dlogits: np.ndarray):
    """Gradients of every parameter (a tree shaped like ``params``); the images get none."""
    return vir_backward(params, cache, dlogits)


def vit_recurrent(params: dict, images: np.ndarray, *, class_token: str = "last"):
    """A causal ViT read token by token, as a decoder: each block keeps a KV cache (k and v of
    every token so far) and attends from the new token over it. Returns ``(logits, kv_caches)``;
    the logits equal ``vit_forward(..., mask="causal")``'s; each cache holds the T tokens read
    (the class token's output needs no token after it: with the class token first, T = 1)."""
    x, _ = _embed(params, images, class_token)
    B, T, _ = x.shape
    cls_index = T - 1 if class_token == "last" else 0
    caches = []
    for i, block in enumerate(params["blocks"]):
        _, H, K, V, dtype = _retention_spec(block["mixer"], f"params/blocks/{i}/mixer")
        caches.append(KVCache.empty(B, cls_index + 1, H, K, V, dtype))  # (B, T, H, K), (B, T, H, V)
    for t in range(cls_index + 1):
        h = x[:, t]  # (B, D)
        for i, block in enumerate(params["blocks"]):
            h, caches[i] = vit_block_step(block, h, caches[i])
    z, _ = layer_norm(h, params["norm"]["weight"], params["norm"]["bias"], eps=LN_EPS)
    logits, _ = linear(z, params["head"]["W"], params["head"]["b"])
    return logits, caches


def vit_loss_and_grads(
    params: dict,
    batch,
    rng: np.random.Generator | None = None,
    *,
    class_token: str = "first",
    mask: str = "bidirectional",
):
    """As ``vir_loss_and_grads``, for the ViT baseline (``rng`` unused)."""
    return _loss_and_grads(vit_forward, vit_backward, params, batch, class_token=class_token, mask=mask)
