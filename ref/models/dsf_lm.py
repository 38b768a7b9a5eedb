"""The attention blocks of the DSF paper's recall experiment (Sieber et al., arXiv 2405.15731, Sec. 4).

The paper compares, on MQAR, three attention mixers that differ only in how a query reads the
past; in the Dynamical Systems Framework (``ref.mixers.dsf``) they differ in the state size and
in the normaliser:

    softmax attention     o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(n)) v_s                  (S)
                          (no finite state: the KV cache, N grows with T)
    linear attention      o_t = sum_{s<=t} (phi(q_t) . phi(k_s)) v_s / sum_{s<=t} phi(q_t) . phi(k_s)  (L)
                          phi = elu + 1 (Katharopoulos et al.; the paper's eq. for linear attention)
                          a state of N = n V per head: n, the key width, is the "state expansion"
    normalised attention  o_t = sum_{s<=t} (q_t . k_s) v_s / exp(w_h . x_t + b_h)               (A)
                          no feature map; the normaliser is a learned function of the current input,
                          one per head (the paper's normalised attention, eq. (21) of v3; the
                          dsf-mqar code's ``MHNA``: "exp beat softplus and sigmoid")

with, per head h, q_t = x_t W_q[:, h] + b_q[h], k_t = x_t W_k[:, h] + b_k[h] (n wide),
v_t = x_t W_v[:, h] (V = D / H wide). (A) is linear attention with Λ_t = I whose output matrix
C_t = q_t^T ⊗ I_V / exp(w . x_t) carries the normaliser; (L) divides by a normaliser that depends
on the whole prefix (``ref.mixers.dsf.normalized_linear_attention_system`` puts it into Λ_t).

(S) is ``ref.mixers.attention.attention_parallel``. (L) and (A) run in their parallel form, as the
causally masked score matrix A_ts = q_t . k_s (``masked_scores``) times V: at the lesson's sizes
(T = 64, n <= 32) this is several times faster than ``ref.mixers.linear_attention``'s parallel
form, whose gate bookkeeping dominates when there is no gate. ``tests/models/test_dsf_lm.py``
checks both against ``ref.mixers.linear_attention``, forward and backward, and the trained (L)
against its DSF system.

**The block** (pre-norm, as every block of ``ref.models.lm``), with an optional short causal
depthwise convolution before the mixer (``ref.nn.causal_conv1d``, width W, no bias):

    z = ShortConv(RMSNorm(x))                  (omitted when conv_size is None)
    h = x + Mixer(z) W_o                       W_o (H V, D)
    y = h + SwiGLU(RMSNorm(h))                 (omitted when mlp=False)

The convolution is our addition, not the paper's: the paper's attention blocks carry learned
absolute position embeddings (Zoology's ``TokenEmbeddings``), which this scaffold has not; at
laptop scale a mixer without a way to see the previous token cannot bind a key to the value that
follows it (lesson 03, section 7). With the convolution each token sees the W - 1 before it, the
same for all three mixers.

Registered with ``ref.models.lm`` as ``"dsf_softmax"``, ``"dsf_linear"`` and ``"dsf_normalized"``:

    init_lm(rng, vocab, D, 1, block="dsf_linear", num_heads=1, key_dim=8, conv_size=4)

Parameters of one block: ``norm1 {weight}``, ``conv {weight (D, W)}`` (with conv_size),
``attn {W_q (D, H, n), b_q (H, n), W_k, b_k, W_v (D, H, V), W_o (H V, D)}`` plus
``W_n (D, H), b_n (H,)`` for the normalised mixer, ``norm2 {weight}`` and ``mlp`` (with mlp=True).
Initialisation as the paper's code (Zoology): every weight normal(0.02), biases zero, the
output projection normal(0.02 / sqrt(2 n_layers)) (here n_layers = 1 per block: 0.02 / sqrt(2)).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.mixers.linear_attention import EPS
from ref.models.gla import (
    BLOCK_NORM_EPS,
    INIT_STD,
    check_dtype,
    check_rng,
    head_linear,
    head_linear_backward,
    init_swiglu,
    normal,
    split_heads,
    swiglu,
    swiglu_backward,
)
from ref.models.lm import register_block
from ref.nn import causal_conv1d, causal_conv1d_backward, linear, linear_backward, rms_norm, rms_norm_backward

__all__ = [
    "MIXERS",
    "elu1",
    "elu1_backward",
    "masked_scores",
    "masked_scores_backward",
    "init_dsf_attention_block",
    "dsf_attention_mixer",
    "dsf_attention_mixer_backward",
    "dsf_attention_block",
    "dsf_attention_block_backward",
]

MIXERS = ("softmax", "linear", "normalized")


# ---------------------------------------------------------------- the feature map of (L)


def elu1(x: np.ndarray):
    """phi(x) = elu(x) + 1 = x + 1 (x > 0), exp(x) (x <= 0): positive, so (L)'s normaliser is > 0.
    Returns ``(y, cache)``."""
    e = np.exp(np.minimum(x, 0.0))
    return np.where(x > 0, x + 1.0, e), (x > 0, e)


def elu1_backward(dy: np.ndarray, cache):
    """phi'(x) = 1 (x > 0), exp(x) (x <= 0). Returns ``(dx,)``."""
    pos, e = cache
    return (dy * np.where(pos, 1.0, e),)


# ---------------------------------------------------------------- (L) and (A) as masked attention


def masked_scores(q, k):
    """A[b, h, t, s] = q_t . k_s for s <= t, 0 above the diagonal: the attention matrix of linear
    attention (``ref.mixers.linear_attention``'s parallel form, the gate-free case without its
    decay bookkeeping, which costs more than the whole block at these sizes). q, k (B, T, H, n) ->
    A (B, H, T, T). Returns ``(A, cache)``."""
    T = q.shape[1]
    mask = np.tril(np.ones((T, T), dtype=bool))
    A = np.where(mask, np.swapaxes(q, 1, 2) @ np.moveaxis(k, 1, 3), 0.0).astype(q.dtype)  # (B, H, T, T)
    return A, (q, k, mask)


def masked_scores_backward(dA, cache):
    """Returns ``(dq, dk)`` (B, T, H, n)."""
    q, k, mask = cache
    dA = np.where(mask, dA, 0.0).astype(q.dtype)  # (B, H, T, T)
    dq = dA @ np.swapaxes(k, 1, 2)  # (B, H, T, n)
    dk = np.swapaxes(dA, -1, -2) @ np.swapaxes(q, 1, 2)  # (B, H, T, n)
    return np.swapaxes(dq, 1, 2), np.swapaxes(dk, 1, 2)


def _heads_first(x):  # (B, T, H, X) -> (B, H, T, X)
    return np.swapaxes(x, 1, 2)


# ---------------------------------------------------------------- init


def init_dsf_attention_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 1,
    *,
    mixer: str = "linear",
    key_dim: int | None = None,
    conv_size: int | None = 4,
    mlp: bool = True,
    mlp_hidden: int | None = None,
    dtype=np.float64,
) -> dict:
    """Parameters of one block (module docstring). ``key_dim`` n per head (default D / num_heads):
    the state expansion of (L) and (A); ``conv_size`` None for no convolution."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    checks.one_of(mixer, "mixer", MIXERS)
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    V = split_heads(D, H, "D", "the value width")
    n = V if key_dim is None else checks.positive_int(key_dim, "key_dim")
    if not isinstance(mlp, bool):
        raise ValueError(f"mlp: expected True or False, got {mlp!r}")
    attn = {
        "W_q": normal(rng, (D, H, n), INIT_STD, dtype),
        "b_q": np.zeros((H, n), dtype),
        "W_k": normal(rng, (D, H, n), INIT_STD, dtype),
        "b_k": np.zeros((H, n), dtype),
        "W_v": normal(rng, (D, H, V), INIT_STD, dtype),
        "W_o": normal(rng, (H * V, D), INIT_STD / math.sqrt(2.0), dtype),
    }
    if mixer == "normalized":
        attn["W_n"] = normal(rng, (D, H), INIT_STD, dtype)
        attn["b_n"] = np.zeros(H, dtype)
    params = {"norm1": {"weight": np.ones(D, dtype)}}
    if conv_size is not None:
        W = checks.positive_int(conv_size, "conv_size")
        params["conv"] = {"weight": rng.uniform(-(W**-0.5), W**-0.5, (D, W)).astype(dtype)}  # PyTorch's Conv1d init
    params["attn"] = attn
    if mlp:
        params["norm2"] = {"weight": np.ones(D, dtype)}
        params["mlp"] = init_swiglu(rng, D, mlp_hidden, dtype=dtype)
    return params


# ---------------------------------------------------------------- the mixer: projections, (S) / (L) / (A), output


class MixerCache(NamedTuple):
    mixer: str
    c_q: tuple
    c_k: tuple
    c_v: tuple
    c_phi_q: tuple | None
    c_phi_k: tuple | None
    c_core: object
    c_n: tuple | None
    inv_eta: np.ndarray | None  # (B, T, H): exp(-(w . x_t + b)) of (A)
    o: np.ndarray  # (B, T, H, V): the mixer's output before W_o
    c_out: tuple


def dsf_attention_mixer(attn: dict, z: np.ndarray, mixer: str):
    """One of (S), (L), (A) on z (B, T, D), with its projections. Returns ``(y (B, T, D), cache)``."""
    checks.one_of(mixer, "mixer", MIXERS)
    if (mixer == "normalized") != ("W_n" in attn):
        raise ValueError(f"attn: expected W_n and b_n exactly for the normalised mixer, got mixer {mixer!r} "
                         f"with keys {sorted(attn)}")
    z = checks.float_array(z, "z", ndim=3, dims="(B, T, D)")
    Bn, T, D = z.shape
    q, c_q = head_linear(z, attn["W_q"], attn["b_q"])  # (B, T, H, n)
    k, c_k = head_linear(z, attn["W_k"], attn["b_k"])  # (B, T, H, n)
    v, c_v = head_linear(z, attn["W_v"])  # (B, T, H, V)
    c_phi_q = c_phi_k = c_n = inv_eta = None
    if mixer == "softmax":
        o, c_core = attention_parallel(q, k, v)  # (S), scale n^-0.5: (B, T, H, V)
    elif mixer == "linear":
        fq, c_phi_q = elu1(q)
        fk, c_phi_k = elu1(k)
        A, c_A = masked_scores(fq, fk)  # phi(q_t) . phi(k_s), s <= t: (B, H, T, T)
        d = A.sum(axis=-1, keepdims=True) + EPS  # (L)'s normaliser, as ref.mixers.linear_attention
        P = A / d  # (B, H, T, T)
        o = _heads_first(P @ _heads_first(v))  # (L): (B, T, H, V)
        c_core = (c_A, P, d, v)
    else:
        A, c_A = masked_scores(q, k)  # q_t . k_s, s <= t: (B, H, T, T)
        s, c_n = linear(z, attn["W_n"], attn["b_n"])  # (A): w_h . x_t + b_h, (B, T, H)
        inv_eta = np.exp(-s)
        a = _heads_first(A @ _heads_first(v))  # sum_s (q_t . k_s) v_s: (B, T, H, V)
        o = a * inv_eta[..., None]  # (A)
        c_core = (c_A, A, v)
    H, V = o.shape[2:]
    y, c_out = linear(o.reshape(Bn, T, H * V), attn["W_o"])  # (B, T, D)
    return y, MixerCache(mixer, c_q, c_k, c_v, c_phi_q, c_phi_k, c_core, c_n, inv_eta, o, c_out)


def dsf_attention_mixer_backward(attn: dict, cache: MixerCache, dy: np.ndarray):
    """Returns ``(dz, grads)`` with grads shaped like ``attn``."""
    o = cache.o
    Bn, T, H, V = o.shape
    do_flat, dW_o, _ = linear_backward(dy, cache.c_out)
    do = do_flat.reshape(Bn, T, H, V)
    g = {"W_o": dW_o}
    if cache.mixer == "softmax":
        dq, dk, dv = attention_parallel_backward(do, cache.c_core)
    elif cache.mixer == "linear":
        c_A, P, d, v = cache.c_core
        doh = _heads_first(do)  # (B, H, T, V)
        dv = _heads_first(np.swapaxes(P, -1, -2) @ doh)  # o = P v
        dP = doh @ np.swapaxes(_heads_first(v), -1, -2)  # (B, H, T, T)
        dA = (dP - (dP * P).sum(axis=-1, keepdims=True)) / d  # P = A / (sum_s A + EPS)
        dfq, dfk = masked_scores_backward(dA, c_A)
        (dq,) = elu1_backward(dfq, cache.c_phi_q)
        (dk,) = elu1_backward(dfk, cache.c_phi_k)
    else:
        # o = a exp(-s): da = do exp(-s), ds = -sum_v do o
        da = do * cache.inv_eta[..., None]
        ds = -(do * o).sum(axis=-1)  # (B, T, H)
        c_A, A, v = cache.c_core
        dah = _heads_first(da)  # (B, H, T, V)
        dv = _heads_first(np.swapaxes(A, -1, -2) @ dah)
        dq, dk = masked_scores_backward(dah @ np.swapaxes(_heads_first(v), -1, -2), c_A)
        dz_n, g["W_n"], g["b_n"] = linear_backward(ds, cache.c_n)
    dz_q, g["W_q"], g["b_q"] = head_linear_backward(dq, cache.c_q)
    dz_k, g["W_k"], g["b_k"] = head_linear_backward(dk, cache.c_k)
    dz_v, g["W_v"], _ = head_linear_backward(dv, cache.c_v)
    dz = dz_q + dz_k + dz_v
    if cache.mixer == "normalized":
        dz = dz + dz_n
    return dz, {key: g[key] for key in attn}


# ---------------------------------------------------------------- the block


class BlockCache(NamedTuple):
    c_n1: tuple
    c_conv: tuple | None
    c_mix: MixerCache
    c_n2: tuple | None
    c_mlp: tuple | None


def _check_block(params):
    keys = {"norm1", "attn"}
    optional = {"conv", "norm2", "mlp"}
    if not isinstance(params, dict) or not keys <= set(params) <= keys | optional or (
        ("norm2" in params) != ("mlp" in params)
    ):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a DSF attention block {{'norm1', ['conv',] 'attn', ['norm2', 'mlp']}}, got {got}")


def dsf_attention_block(params: dict, x: np.ndarray, *, mixer: str = "linear", **unused_options):
    """The block on x (B, T, D) with the given mixer. Returns ``(y, cache)``. Options meant for
    other blocks (``mode``, ``chunk_size``) are ignored: the mixers run in their parallel form."""
    _check_block(params)
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=BLOCK_NORM_EPS)
    z, c_conv = n1, None
    if "conv" in params:
        z, _, c_conv = causal_conv1d(n1, params["conv"]["weight"])  # the short convolution: (B, T, D)
    a, c_mix = dsf_attention_mixer(params["attn"], z, mixer)
    h = x + a
    if "mlp" not in params:
        return h, BlockCache(c_n1, c_conv, c_mix, None, None)
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=BLOCK_NORM_EPS)
    m, c_mlp = swiglu(params["mlp"], n2)
    return h + m, BlockCache(c_n1, c_conv, c_mix, c_n2, c_mlp)


def dsf_attention_block_backward(params: dict, cache: BlockCache, dy: np.ndarray):
    """Returns ``(dx, grads)`` with grads shaped like ``params``."""
    grads = {}
    dh = dy
    if cache.c_mlp is not None:
        dn2, grads["mlp"] = swiglu_backward(params["mlp"], cache.c_mlp, dy)
        dh2, dw2 = rms_norm_backward(dn2, cache.c_n2)
        grads["norm2"] = {"weight": dw2}
        dh = dy + dh2
    dz, grads["attn"] = dsf_attention_mixer_backward(params["attn"], cache.c_mix, dh)
    dn1 = dz
    if cache.c_conv is not None:
        dn1, dconv, _, _ = causal_conv1d_backward(dz, None, cache.c_conv)
        grads["conv"] = {"weight": dconv}
    dx1, dw1 = rms_norm_backward(dn1, cache.c_n1)
    grads["norm1"] = {"weight": dw1}
    return dh + dx1, {key: grads[key] for key in params}


for _mixer in MIXERS:
    register_block(
        f"dsf_{_mixer}",
        partial(init_dsf_attention_block, mixer=_mixer),
        partial(dsf_attention_block, mixer=_mixer),
        dsf_attention_block_backward,
        replace=True,
    )
