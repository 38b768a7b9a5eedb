"""TCNCA: a temporal convolution network with chunked attention (Terzic, Hersche, Karunaratne,
Benini, Sebastian and Rahimi, arXiv 2312.05605): MEGA's block with its EMA replaced by a dilated TCN.

MEGA (Ma et al., 2022) mixes time twice: a damped EMA, whose output drives the shared query/key and
the gates, and single-head softmax attention restricted to non-overlapping chunks of c tokens.
TCNCA keeps the chunked attention and swaps the EMA (an O(L log L) FFT convolution) for a stack
of causal *dilated depthwise* convolutions, O(L).

Dilated causal depthwise convolution, kernel K, dilation d (channels-last, x (B, T, D), weight
(D, K), tap K-1 multiplying the current input, as ``ref.nn.causal_conv1d``)::

    y[b, t, ch] = bias[ch] + sum_{j=0}^{K-1} weight[ch, j] * x[b, t - (K-1-j) d, ch]      (1)

(x before time 0 is zero). The TCN is L_tcn such layers with dilations d_l = f^l, l = 0 .. L_tcn-1,
composed without non-linearities between them, so the stack is one linear, causal, depthwise
filter whose receptive field is

    R = 1 + (K - 1) (f^L_tcn - 1) / (f - 1)        (R = 1 + (K - 1) L_tcn when f = 1)        (2)

and which equals a single explicit-kernel causal convolution of width R (:func:`tcn_kernel`):
zero-stuff each layer's taps d apart, then convolve the per-channel kernels. y_t depends on
x_{t-R+1} .. x_t and on nothing earlier.

Chunked attention with chunk size c: query t attends to the keys s <= t of its own chunk,
s // c == t // c. :func:`chunked_attention` computes it chunk by chunk (the chunks folded into
the batch axis, causal attention inside each): O(T c) work and memory instead of O(T^2). It is the
same function as full attention under the block-diagonal causal mask ``mask="chunked"`` of
``ref.mixers.attention`` (tested).

The simplified TCNCA block here (pre-norm, residual; single head as MEGA; our simplification:
MEGA's interpolation phi h + (1 - phi) x becomes the residual x + phi h, and there is no
feed-forward sublayer)::

    n   = RMSNorm(x)                                       (B, T, D)
    x'  = SiLU(TCN(n))                                     the EMA of MEGA, replaced   (B, T, D)
    z   = SiLU(x' W_z)                                     shared query/key base        (B, T, Z)
    q   = z * gamma_q + beta_q,   k = z * gamma_k + beta_k                               (3)
    v   = SiLU(n W_v)                                                                  (B, T, E)
    o   = ChunkedAttention_c(q, k, v)                      scale Z^-1/2                 (4)
    r   = SiLU(x' W_r)                                     reset gate                   (B, T, E)
    h   = SiLU(x' W_h + (r * o) U_h + b_h)                                             (B, T, D)
    phi = sigmoid(x' W_phi + b_phi)                        update gate                  (B, T, D)
    y   = x + phi * h                                                                   (5)

The TCN output reaches the output two ways: through q, k (which token of the chunk to read) and
directly through the gates and W_h. With ``tcn_layers=1`` the "TCN" is one local K-tap
convolution (R = K): chunked attention with only a local convolution to order the tokens.

Parameters (init :func:`init_tcnca_block`)::

    norm: {weight (D,)}
    tcn:  {weight (L_tcn, D, K)}       taps; the current tap starts at 1, the others small
    qk:   {W_z (D, Z), gamma (2, Z), beta (2, Z)}
    v:    {W (D, E)}
    gate: {W_r (D, E), W_h (D, D), U_h (E, D), b_h (D,), W_phi (D, D), b_phi (D,)}

Forward options: ``chunk_size`` (c; None = full causal attention, the reference), ``dilation_base``
(f, default 2), ``backend`` for the attention (``"numpy"`` or ``"numba"``, the flash kernel).
Registered in the LM scaffold of ``ref.models.lm`` as block ``"tcnca"`` when this module is imported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.models.gla import check_dtype, check_rng, normal
from ref.models.lm import register_block
from ref.nn import (
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
)

__all__ = [
    "receptive_field",
    "dilated_causal_conv1d",
    "dilated_causal_conv1d_backward",
    "explicit_kernel",
    "tcn",
    "tcn_backward",
    "tcn_kernel",
    "chunked_attention",
    "chunked_attention_backward",
    "init_tcnca_block",
    "tcnca_block",
    "tcnca_block_backward",
]

NORM_EPS = 1e-6
INIT_STD = 0.02


def _dilation(value, name: str = "dilation") -> int:
    return checks.positive_int(value, name)


def receptive_field(kernel_size: int, num_layers: int, dilation_base: int = 2) -> int:
    """(2): R = 1 + (K - 1) (f^L - 1) / (f - 1), or 1 + (K - 1) L when f = 1."""
    K = checks.positive_int(kernel_size, "kernel_size")
    L = checks.positive_int(num_layers, "num_layers")
    f = checks.positive_int(dilation_base, "dilation_base")
    return 1 + (K - 1) * (L if f == 1 else (f**L - 1) // (f - 1))


# ------------------------------------------------------------------------------------------------
# (1) one dilated causal depthwise convolution


def dilated_causal_conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, dilation: int = 1):
    """(1): x (B, T, D), weight (D, K), bias (D,) or None. Returns ``(y, cache)``, y (B, T, D)."""
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    B, T, D = x.shape
    checks.nonempty_time(T, "x")
    weight = checks.float_array(weight, "weight", ndim=2, dims="(D, K)")
    if weight.shape[0] != D or weight.shape[1] < 1:
        raise ValueError(f"weight: expected shape (D, K) with D = {D} (the last axis of x), got {weight.shape}")
    checks.same_dtype(weight, "weight", x.dtype, "the dtype of x")
    if bias is not None:
        bias = checks.float_array(bias, "bias", ndim=1, dims="(D,)")
        checks.same_shape(bias, "bias", (D,), "(D,)", "the last axis of x")
        checks.same_dtype(bias, "bias", x.dtype, "the dtype of x")
    d = _dilation(dilation)
    K = weight.shape[1]
    P = (K - 1) * d  # zeros before time 0
    xpad = np.concatenate([np.zeros((B, P, D), x.dtype), x], axis=1)  # (B, P + T, D)
    y = np.zeros_like(x) if bias is None else np.broadcast_to(bias, x.shape).copy()  # (B, T, D)
    for j in range(K):
        # tap j reads x[t - (K-1-j) d] = xpad[t + j d]
        y += weight[:, j] * xpad[:, j * d : j * d + T]
    return y, (xpad, weight, d, bias is not None)


def dilated_causal_conv1d_backward(dy: np.ndarray, cache):
    """Returns ``(dx, dweight, dbias)`` (dbias None without a bias)."""
    xpad, weight, d, has_bias = cache
    B, PT, D = xpad.shape
    K = weight.shape[1]
    T = PT - (K - 1) * d
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, T, D)")
    checks.same_shape(dy, "dy", (B, T, D), "(B, T, D)", "the output of the forward")
    dxpad = np.zeros_like(xpad)
    dweight = np.empty_like(weight)
    for j in range(K):
        dxpad[:, j * d : j * d + T] += weight[:, j] * dy
        dweight[:, j] = (dy * xpad[:, j * d : j * d + T]).sum(axis=(0, 1))
    dx = dxpad[:, (K - 1) * d :]  # (B, T, D)
    return dx, dweight, (dy.sum(axis=(0, 1)) if has_bias else None)


def explicit_kernel(weight: np.ndarray, dilation: int) -> np.ndarray:
    """The taps of (1) placed d apart: a (D, (K-1) d + 1) kernel for ``ref.nn.causal_conv1d``."""
    weight = checks.float_array(weight, "weight", ndim=2, dims="(D, K)")
    d = _dilation(dilation)
    D, K = weight.shape
    out = np.zeros((D, (K - 1) * d + 1), weight.dtype)
    out[:, ::d] = weight
    return out


# ------------------------------------------------------------------------------------------------
# the TCN: L_tcn dilated layers, dilations f^l


def _check_tcn_weight(weight) -> np.ndarray:
    return checks.float_array(weight, "weight", ndim=3, dims="(L_tcn, D, K)")


def tcn(x: np.ndarray, weight: np.ndarray, *, dilation_base: int = 2):
    """The stack: h_0 = x, h_{l+1} = DilatedConv(h_l; weight[l], dilation f^l). weight (L_tcn, D, K).
    Returns ``(y, cache)``."""
    weight = _check_tcn_weight(weight)
    f = checks.positive_int(dilation_base, "dilation_base")
    h, caches = x, []
    for layer in range(weight.shape[0]):
        h, c = dilated_causal_conv1d(h, weight[layer], dilation=f**layer)  # (B, T, D)
        caches.append(c)
    return h, caches


def tcn_backward(dy: np.ndarray, cache):
    """Returns ``(dx, dweight)``, dweight (L_tcn, D, K)."""
    dws = []
    for c in reversed(cache):
        dy, dw, _ = dilated_causal_conv1d_backward(dy, c)
        dws.append(dw)
    return dy, np.stack(dws[::-1])


def tcn_kernel(weight: np.ndarray, dilation_base: int = 2) -> np.ndarray:
    """The whole stack as one explicit causal kernel (D, R), R by (2), in the tap convention of
    ``ref.nn.causal_conv1d`` (last tap = current input): ``causal_conv1d(x, tcn_kernel(w))`` equals
    ``tcn(x, w)``. Composition of filters = convolution of their impulse responses."""
    weight = _check_tcn_weight(weight)
    f = checks.positive_int(dilation_base, "dilation_base")
    D = weight.shape[1]
    response = np.ones((D, 1), weight.dtype)  # impulse response by lag: response[:, m] = weight of x_{t-m}
    for layer in range(weight.shape[0]):
        lagged = explicit_kernel(weight[layer], f**layer)[:, ::-1]  # by lag
        response = np.stack([np.convolve(response[ch], lagged[ch]) for ch in range(D)])
    return np.ascontiguousarray(response[:, ::-1])  # (D, R), back to tap order


# ------------------------------------------------------------------------------------------------
# (4) chunked attention, O(T c)


class _ChunkCache(NamedTuple):
    att: object
    B: int
    T: int
    n: int
    c: int


def _fold(x, c):
    """(B, T, H, X) -> (B * n, c, H, X), zero-padded at the end to n = ceil(T / c) chunks."""
    B, T = x.shape[:2]
    n = -(-T // c)
    pad = n * c - T
    if pad:
        x = np.concatenate([x, np.zeros((B, pad) + x.shape[2:], x.dtype)], axis=1)  # (B, n c, H, X)
    return x.reshape((B * n, c) + x.shape[2:]), n


def _unfold(x, B, T, n):
    """(B * n, c, H, X) -> (B, T, H, X)."""
    return x.reshape((B, -1) + x.shape[2:])[:, :T]


def chunked_attention(q, k, v, chunk_size: int, *, scale=None, backend: str = "numpy"):
    """Softmax attention inside non-overlapping chunks of ``chunk_size`` (causal in each chunk).

    q, k (B, T, H, K); v (B, T, H, V) -> o (B, T, H, V), ``(o, cache)``. The chunks are folded into
    the batch axis and each gets causal attention (``ref.mixers.attention.attention_parallel``,
    ``backend`` passed on): padding at the end of the last chunk is never seen by a real query.
    Equals ``attention_parallel(q, k, v, mask="chunked", chunk_size=c)``.
    """
    c = checks.positive_int(chunk_size, "chunk_size")
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    B, T = q.shape[:2]
    qf, n = _fold(q, c)  # (B n, c, H, K)
    kf, _ = _fold(checks.float_array(k, "k", ndim=4, dims="(B, T, H, K)"), c)
    vf, _ = _fold(checks.float_array(v, "v", ndim=4, dims="(B, T, H, V)"), c)
    of, att = attention_parallel(qf, kf, vf, mask="causal", scale=scale, backend=backend)  # (B n, c, H, V)
    return _unfold(of, B, T, n), _ChunkCache(att, B, T, n, c)


def chunked_attention_backward(do, cache: _ChunkCache):
    """Returns ``(dq, dk, dv)``."""
    dof, _ = _fold(do, cache.c)
    dqf, dkf, dvf = attention_parallel_backward(dof, cache.att)
    return tuple(_unfold(g, cache.B, cache.T, cache.n) for g in (dqf, dkf, dvf))


def _attention(q, k, v, chunk_size, backend):
    if chunk_size is None:  # the reference: full causal attention
        return attention_parallel(q, k, v, mask="causal", backend=backend)
    return chunked_attention(q, k, v, chunk_size, backend=backend)


def _attention_backward(do, cache):
    if isinstance(cache, _ChunkCache):
        return chunked_attention_backward(do, cache)
    return attention_parallel_backward(do, cache)


# ------------------------------------------------------------------------------------------------
# the block (3)-(5)


def init_tcnca_block(
    rng: np.random.Generator,
    D: int,
    *,
    qk_dim: int | None = None,
    v_dim: int | None = None,
    tcn_layers: int = 6,
    kernel_size: int = 3,
    tcn_init_std: float = 0.1,
    dtype=np.float64,
) -> dict:
    """Parameters of the block (module docstring). Z = ``qk_dim`` (default D), E = ``v_dim``
    (default D). TCN taps: the current tap 1, the others N(0, tcn_init_std^2), so that the TCN
    starts near the identity and every lag gets a gradient."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    Z = D if qk_dim is None else checks.positive_int(qk_dim, "qk_dim")
    E = D if v_dim is None else checks.positive_int(v_dim, "v_dim")
    L = checks.positive_int(tcn_layers, "tcn_layers")
    K = checks.positive_int(kernel_size, "kernel_size")
    taps = normal(rng, (L, D, K), tcn_init_std, dtype)
    taps[:, :, K - 1] = 1.0
    return {
        "norm": {"weight": np.ones(D, dtype)},
        "tcn": {"weight": taps},
        "qk": {
            "W_z": normal(rng, (D, Z), D**-0.5, dtype),
            "gamma": (1.0 + normal(rng, (2, Z), INIT_STD, dtype)),
            "beta": np.zeros((2, Z), dtype),
        },
        "v": {"W": normal(rng, (D, E), D**-0.5, dtype)},
        "gate": {
            "W_r": normal(rng, (D, E), D**-0.5, dtype),
            "W_h": normal(rng, (D, D), D**-0.5, dtype),
            "U_h": normal(rng, (E, D), E**-0.5, dtype),
            "b_h": np.zeros(D, dtype),
            "W_phi": normal(rng, (D, D), D**-0.5, dtype),
            "b_phi": np.zeros(D, dtype),
        },
    }


class TCNCACache(NamedTuple):
    c_n: tuple
    c_tcn: list
    c_xp: tuple
    xp: np.ndarray
    c_z: tuple
    c_zs: tuple
    zs: np.ndarray
    c_v: tuple
    c_vs: tuple
    c_att: object
    o: np.ndarray
    c_r: tuple
    c_rs: tuple
    rs: np.ndarray
    c_hpre: tuple
    c_hs: tuple
    hs: np.ndarray
    c_phi: tuple
    c_phis: tuple
    phis: np.ndarray
    dilation_base: int


def _check_x(params, x):
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, D)")
    D = params["norm"]["weight"].shape[0]
    if x.shape[2] != D:
        raise ValueError(f"x: expected shape (B, T, D) with D = {D} (params/norm/weight), got {x.shape}")
    checks.nonempty_time(x.shape[1], "x")
    checks.same_dtype(x, "x", params["norm"]["weight"].dtype, "the dtype of the parameters")
    return x


def tcnca_block(params: dict, x: np.ndarray, *, chunk_size: int | None = 16, dilation_base: int = 2,
                backend: str = "numpy"):
    """(3)-(5). x (B, T, D) -> y (B, T, D); returns ``(y, cache)``. ``chunk_size=None``: full causal
    attention (the reference the chunked block is compared with)."""
    x = _check_x(params, x)
    if chunk_size is not None:
        chunk_size = checks.positive_int(chunk_size, "chunk_size")
    pq, pg = params["qk"], params["gate"]
    n, c_n = rms_norm(x, params["norm"]["weight"], eps=NORM_EPS)  # (B, T, D)
    u, c_tcn = tcn(n, params["tcn"]["weight"], dilation_base=dilation_base)  # (1)-(2): (B, T, D)
    xp, c_xp = silu(u)  # x'
    z, c_z = linear(xp, pq["W_z"])  # (B, T, Z)
    zs, c_zs = silu(z)
    q = zs * pq["gamma"][0] + pq["beta"][0]  # (3)
    k = zs * pq["gamma"][1] + pq["beta"][1]
    vv, c_v = linear(n, params["v"]["W"])  # (B, T, E)
    vs, c_vs = silu(vv)
    o, c_att = _attention(q[:, :, None], k[:, :, None], vs[:, :, None], chunk_size, backend)  # (4): (B, T, 1, E)
    o = o[:, :, 0]  # (B, T, E)
    rr, c_r = linear(xp, pg["W_r"])  # (B, T, E)
    rs, c_rs = silu(rr)
    hpre, c_hpre = linear(np.concatenate([xp, rs * o], axis=-1), np.concatenate([pg["W_h"], pg["U_h"]]), pg["b_h"])
    hs, c_hs = silu(hpre)  # (B, T, D)
    ph, c_phi = linear(xp, pg["W_phi"], pg["b_phi"])
    phis, c_phis = sigmoid(ph)
    y = x + phis * hs  # (5)
    cache = TCNCACache(c_n, c_tcn, c_xp, xp, c_z, c_zs, zs, c_v, c_vs, c_att, o, c_r, c_rs, rs, c_hpre, c_hs, hs,
                       c_phi, c_phis, phis, dilation_base)
    return y, cache


def tcnca_block_backward(params: dict, cache: TCNCACache, dy: np.ndarray):
    """Returns ``(dx, grads)``, grads shaped like ``params``."""
    pq, pg = params["qk"], params["gate"]
    D = pg["W_h"].shape[0]
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, T, D)")
    # (5) y = x + phi * h
    dx = dy.copy()
    (dph,) = sigmoid_backward(dy * cache.hs, cache.c_phis)
    dxp, dW_phi, db_phi = linear_backward(dph, cache.c_phi)
    (dhpre,) = silu_backward(dy * cache.phis, cache.c_hs)
    dcat, dWU, db_h = linear_backward(dhpre, cache.c_hpre)
    dxp = dxp + dcat[..., :D]
    dro = dcat[..., D:]  # d(r * o)
    (drr,) = silu_backward(dro * cache.o, cache.c_rs)
    dxp_r, dW_r, _ = linear_backward(drr, cache.c_r)
    dxp = dxp + dxp_r
    do = dro * cache.rs  # (B, T, E)
    # (4)
    dq, dk, dvs = _attention_backward(do[:, :, None], cache.c_att)
    dq, dk, dvs = dq[:, :, 0], dk[:, :, 0], dvs[:, :, 0]
    (dvv,) = silu_backward(dvs, cache.c_vs)
    dn, dW_v, _ = linear_backward(dvv, cache.c_v)
    # (3)
    dgamma = np.stack([(dq * cache.zs).sum(axis=(0, 1)), (dk * cache.zs).sum(axis=(0, 1))])
    dbeta = np.stack([dq.sum(axis=(0, 1)), dk.sum(axis=(0, 1))])
    dzs = dq * pq["gamma"][0] + dk * pq["gamma"][1]
    (dz,) = silu_backward(dzs, cache.c_zs)
    dxp_z, dW_z, _ = linear_backward(dz, cache.c_z)
    dxp = dxp + dxp_z
    (du,) = silu_backward(dxp, cache.c_xp)
    dn_t, dtaps = tcn_backward(du, cache.c_tcn)
    dn = dn + dn_t
    dx_n, dnorm = rms_norm_backward(dn, cache.c_n)
    grads = {
        "norm": {"weight": dnorm},
        "tcn": {"weight": dtaps},
        "qk": {"W_z": dW_z, "gamma": dgamma, "beta": dbeta},
        "v": {"W": dW_v},
        "gate": {"W_r": dW_r, "W_h": dWU[:D], "U_h": dWU[D:], "b_h": db_h, "W_phi": dW_phi, "b_phi": db_phi},
    }
    return dx + dx_n, grads


register_block("tcnca", init_tcnca_block, tcnca_block, tcnca_block_backward, replace=True)
