"""Titans (Behrouz, Zhong and Mirrokni, 2025, arXiv 2501.00663): the neural memory layer, and the
memory-as-layer (MAL) and memory-as-context (MAC) blocks, as forward/backward pairs.

The neural memory layer on x (B, T, D), H heads, key dim K, value dim V::

    q_t = l2norm(silu(x_t W_Q)),  k_t = l2norm(silu(x_t W_K)),  v_t = silu(x_t W_V)          (11, 15)
    (eta_t, theta_t, alpha_t) = sigmoid(x_t W_g + b_g)             one of each per head
    m = Titans memory(q, k, v, eta, theta, alpha; M_0)              (12-15, ``ref.mixers.titans``)
    y_t = concat_heads(m_t) W_O

M_0, the memory's initial weights (one per head, shared by the batch), is a parameter: the outer
loss trains it (with W_Q .. W_O) through the inner updates, second-order terms included.

MAL (eqs. 29-31, without the persistent tokens): the memory layer, then causal attention, each
with a residual::

    h = x + memory_layer(x),   out = h + attention(h)

MAC (eqs. 21-25), segments x^(s) of ``segment_len`` tokens, the memory state carried across::

    h^(s) = M*_(s-1)(q^(s)) W_O      q^(s) from x^(s); the memory *entering* the segment, no update (21)
    S~    = [p_1 .. p_Np] || h^(s) || x^(s)                        persistent tokens p, a parameter (22)
    y^(s) = Attn(S~) at the positions of x^(s)     the prefix p || h bidirectional, x^(s) causal (23)
    M_s   = M_(s-1) updated with the tokens y^(s)  (k, v, gates from y^(s))                    (24)
    o^(s) = y^(s) * (M*_t(q(y_t)) W_O)_t            read after each token's update           (25)
    out^(s) = x^(s) + o^(s)

``chunk_size`` sets the memory's mini-batch (the chunk whose gradients are taken at its start);
MAC's memory restarts its chunks at each segment. Differences from the paper: no short
convolution on q, k, v; no normalisation layers inside the blocks; MAL has no persistent tokens.

Functions: ``init_memory_layer``, ``memory_layer``, ``memory_layer_backward``; ``init_mal_block``,
``mal_block``, ``mal_block_backward``; ``init_mac_block``, ``mac_block``, ``mac_block_backward``.
Backwards return ``(dx, grads)`` with ``grads`` shaped like ``params``.
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.mixers.titans import FORMS, memory_forward, memory_forward_backward
from ref.models.gla import (
    check_cotangent,
    check_dtype,
    check_input,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    normal,
)
from ref.models.transformer import attention_layer, attention_layer_backward, init_attention_layer
from ref.nn.activations import sigmoid, sigmoid_backward, silu, silu_backward
from ref.nn.linear import linear, linear_backward

L2_EPS = 1e-12  # ||u|| = sqrt(sum u^2 + eps): l2norm stays finite at u = 0


# ------------------------------------------------------------------------------------------------
# the neural memory layer


def init_memory_layer(rng, D, num_heads=2, head_dim=None, value_dim=None, memory_hidden=(), *, dtype=np.float64):
    """Parameters of the memory layer. ``memory_hidden``: the hidden widths of the memory MLP
    (() for a linear memory). Projections normal(D^-1/2); M_0 layers normal(in^-1/2); gates'
    biases such that eta = sigmoid(2), theta = sigmoid(-1), alpha = sigmoid(-3) at x = 0."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    K = max(1, D // H) if head_dim is None else checks.positive_int(head_dim, "head_dim")
    V = K if value_dim is None else checks.positive_int(value_dim, "value_dim")
    dims = (K, *(checks.positive_int(h, "memory_hidden") for h in memory_hidden), V)
    std = D**-0.5
    p = {
        "W_q": normal(rng, (D, H, K), std, dtype),
        "W_k": normal(rng, (D, H, K), std, dtype),
        "W_v": normal(rng, (D, H, V), std, dtype),
        "W_g": normal(rng, (D, H, 3), std, dtype),
        "b_g": np.tile(np.array([2.0, -1.0, -3.0], dtype), (H, 1)),
        "W_o": normal(rng, (H * V, D), (H * V) ** -0.5, dtype),
    }
    for l in range(len(dims) - 1):
        p[f"M0_{l}"] = normal(rng, (H, dims[l + 1], dims[l]), dims[l] ** -0.5, dtype)
    return p


def _memory_spec(params, where):
    """(D, H, K, V, L, dtype) after checking every parameter of the memory layer."""
    if not isinstance(params, dict) or "W_q" not in params or "W_v" not in params or "M0_0" not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a dict with W_q, W_k, W_v, W_g, b_g, W_o and M0_0 .. M0_(L-1), got {got}")
    D, H, K = checks.float_array(params["W_q"], f"{where}/W_q", ndim=3, dims="(D, H, K)").shape
    V = checks.float_array(params["W_v"], f"{where}/W_v", ndim=3, dims="(D, H, V)").shape[2]
    dtype = params["W_q"].dtype
    spec = {
        "W_q": ((D, H, K), "(D, H, K)"),
        "W_k": ((D, H, K), "(D, H, K)"),
        "W_v": ((D, H, V), "(D, H, V)"),
        "W_g": ((D, H, 3), "(D, H, 3)"),
        "b_g": ((H, 3), "(H, 3)"),
        "W_o": ((H * V, D), "(H*V, D)"),
    }
    L, fan_in = 0, K
    while f"M0_{L}" in params:
        name = f"M0_{L}"
        out = checks.float_array(params[name], f"{where}/{name}", ndim=3, dims="(H, out, in)").shape[1]
        spec[name] = ((H, out, fan_in), f"(H, out, in) with in = {fan_in}")
        fan_in, L = out, L + 1
    if fan_in != V:
        raise ValueError(
            f"{where}/M0_{L - 1}: expected the memory's last layer to output V = {V} (from W_v), got {fan_in}"
        )
    check_params(params, where, spec, dtype)
    return D, H, K, V, L, dtype


def _l2norm(u):
    n = np.sqrt(np.sum(u * u, axis=-1, keepdims=True) + L2_EPS)
    return u / n, (u / n, n)


def _l2norm_backward(dy, cache):
    y, n = cache
    return (dy - y * np.sum(y * dy, axis=-1, keepdims=True)) / n  # (I - y y^T) dy / ||u||


def _feature(x, W, normalise):
    """silu(x W), l2-normalised over the head dim if asked: (B, T, H, X)."""
    a, c_lin = head_linear(x, W)
    f, c_act = silu(a)
    if not normalise:
        return f, (c_lin, c_act, None)
    f, c_norm = _l2norm(f)
    return f, (c_lin, c_act, c_norm)


def _feature_backward(df, cache):
    c_lin, c_act, c_norm = cache
    if c_norm is not None:
        df = _l2norm_backward(df, c_norm)
    (da,) = silu_backward(df, c_act)
    dx, dW, _ = head_linear_backward(da, c_lin)
    return dx, dW


def _project(params, x):
    """q, k, v (B, T, H, *) and the gates eta, theta, alpha (B, T, H), with the cache."""
    q, cq = _feature(x, params["W_q"], True)
    k, ck = _feature(x, params["W_k"], True)
    v, cv = _feature(x, params["W_v"], False)
    a, cg = head_linear(x, params["W_g"], params["b_g"])
    g, cs = sigmoid(a)  # (B, T, H, 3)
    return (q, k, v, g[..., 0], g[..., 1], g[..., 2]), (cq, ck, cv, cg, cs)


def _project_backward(dparts, cache):
    """dx and the projections' gradients from dq, dk, dv, deta, dtheta, dalpha."""
    dq, dk, dv, deta, dtheta, dalpha = dparts
    cq, ck, cv, cg, cs = cache
    grads = {}
    dx, grads["W_q"] = _feature_backward(dq, cq)
    dx_k, grads["W_k"] = _feature_backward(dk, ck)
    dx_v, grads["W_v"] = _feature_backward(dv, cv)
    (da,) = sigmoid_backward(np.stack([deta, dtheta, dalpha], axis=-1), cs)
    dx_g, grads["W_g"], grads["b_g"] = head_linear_backward(da, cg)
    return dx + dx_k + dx_v + dx_g, grads


def _initial_memory(params, L, B):
    """M_0 for every sequence: (B, H, out, in) views of the parameters (H, out, in)."""
    return tuple(np.broadcast_to(params[f"M0_{l}"], (B,) + params[f"M0_{l}"].shape) for l in range(L))


def _check_form(form, chunk_size):
    checks.one_of(form, "form", tuple(FORMS))
    return checks.positive_int(chunk_size, "chunk_size")


def _memory_layer(params, x, form, chunk_size, memory, surprise):
    """The layer from a given memory state; returns y, the final (memory, surprise), and the cache."""
    parts, c_proj = _project(params, x)
    m, memory, surprise, c_mix = FORMS[form][0](*parts, memory, surprise, chunk_size=chunk_size)
    B, T, H, V = m.shape
    y, c_out = linear(m.reshape(B, T, H * V), params["W_o"])  # (B, T, D)
    return y, memory, surprise, (form, c_proj, c_mix, c_out, m.shape)


def _memory_layer_backward(cache, dy, dmemory, dsurprise):
    """Returns dx, the projections' and W_o's gradients, and d(initial memory, surprise)."""
    form, c_proj, c_mix, c_out, m_shape = cache
    dm, dW_o, _ = linear_backward(dy, c_out)
    *dparts, dmemory0, dsurprise0 = FORMS[form][1](dm.reshape(m_shape), dmemory, dsurprise, c_mix)
    dx, grads = _project_backward(dparts, c_proj)
    grads["W_o"] = dW_o
    return dx, grads, dmemory0, dsurprise0


def memory_layer(params: dict, x: np.ndarray, *, form: str = "chunked", chunk_size: int = 16):
    """The neural memory layer on x (B, T, D), from M_0 and a zero surprise. ``form``: "chunked"
    or "sequential" (the same function for the same ``chunk_size``). Returns ``(y, cache)``."""
    D, H, K, V, L, dtype = _memory_spec(params, "params")
    x = check_input(x, D, dtype)
    chunk_size = _check_form(form, chunk_size)
    y, _, _, cache = _memory_layer(params, x, form, chunk_size, _initial_memory(params, L, x.shape[0]), None)
    return y, (cache, x.shape, L)


def memory_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``; grads shaped like ``params`` (M_0's summed over the batch)."""
    layer_cache, x_shape, L = cache
    dy = check_cotangent(dy, x_shape, params["W_q"].dtype)
    dx, grads, dM0, _ = _memory_layer_backward(layer_cache, dy, None, None)
    for l in range(L):
        grads[f"M0_{l}"] = dM0[l].sum(axis=0)
    return dx, {key: grads[key] for key in params}


# ------------------------------------------------------------------------------------------------
# memory as a layer (MAL)


def init_mal_block(rng, D, num_heads=2, head_dim=None, memory_hidden=(), *, attention_heads=2, dtype=np.float64):
    """{"memory": the memory layer, "attn": a causal attention layer (``ref.models.transformer``)}."""
    return {
        "memory": init_memory_layer(rng, D, num_heads, head_dim, None, memory_hidden, dtype=dtype),
        "attn": init_attention_layer(rng, D, attention_heads, std=D**-0.5, dtype=dtype),
    }


def _check_block(params, keys):
    if not isinstance(params, dict) or set(params) != set(keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with exactly the keys {sorted(keys)}, got {got}")


def mal_block(params: dict, x: np.ndarray, *, form: str = "chunked", chunk_size: int = 16):
    """h = x + memory_layer(x); out = h + attention(h) (causal). Returns ``(out, cache)``."""
    _check_block(params, ("memory", "attn"))
    m, c_mem = memory_layer(params["memory"], x, form=form, chunk_size=chunk_size)
    h = x + m  # (B, T, D)
    a, c_attn = attention_layer(params["attn"], h, mask="causal")
    return h + a, (c_mem, c_attn)


def mal_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_mem, c_attn = cache
    dy = check_cotangent(dy, c_mem[1], params["memory"]["W_q"].dtype)
    dh_attn, g_attn = attention_layer_backward(params["attn"], c_attn, dy)
    dh = dy + dh_attn
    dx_mem, g_mem = memory_layer_backward(params["memory"], c_mem, dh)
    return dh + dx_mem, {"memory": g_mem, "attn": g_attn}


# ------------------------------------------------------------------------------------------------
# memory as a context (MAC)


def init_mac_block(
    rng, D, num_heads=2, head_dim=None, memory_hidden=(), *, attention_heads=2, num_persistent=2, dtype=np.float64
):
    """{"memory": the memory layer, "attn": W_q, W_k, W_v, W_o of the segment attention,
    "persistent": the Np persistent tokens (Np, D)}."""
    Np = checks.positive_int(num_persistent, "num_persistent")
    return {
        "memory": init_memory_layer(rng, D, num_heads, head_dim, None, memory_hidden, dtype=dtype),
        "attn": init_attention_layer(rng, D, attention_heads, std=D**-0.5, dtype=dtype),
        "persistent": normal(rng, (Np, D), 1.0, check_dtype(dtype)),
    }


def _prefix_attention(params, x, prefix_len):
    """Attention on x (B, T', D): the first ``prefix_len`` positions see each other, the rest are causal."""
    q, cq = head_linear(x, params["W_q"])
    k, ck = head_linear(x, params["W_k"])
    v, cv = head_linear(x, params["W_v"])
    o, c_attn = attention_parallel(q, k, v, mask="prefix_lm", prefix_len=prefix_len)  # (B, T', HQ, V)
    B, T, HQ, V = o.shape
    y, c_out = linear(o.reshape(B, T, HQ * V), params["W_o"])
    return y, (cq, ck, cv, c_attn, c_out, o.shape)


def _prefix_attention_backward(dy, cache):
    cq, ck, cv, c_attn, c_out, o_shape = cache
    g = {}
    do, g["W_o"], _ = linear_backward(dy, c_out)
    dq, dk, dv = attention_parallel_backward(do.reshape(o_shape), c_attn)
    dx = 0.0
    for name, d, c in (("W_q", dq, cq), ("W_k", dk, ck), ("W_v", dv, cv)):
        dx_p, g[name], _ = head_linear_backward(d, c)
        dx = dx + dx_p
    return dx, g


def mac_block(params: dict, x: np.ndarray, *, segment_len: int = 8, form: str = "chunked", chunk_size=None):
    """MAC (21)-(25) on x (B, T, D) in segments of ``segment_len`` (the last may be shorter).
    ``chunk_size`` (default ``segment_len``): the memory's mini-batch inside each segment.
    Returns ``(out, cache)``."""
    _check_block(params, ("memory", "attn", "persistent"))
    mem, attn = params["memory"], params["attn"]
    D, H, K, V, L, dtype = _memory_spec(mem, "params/memory")
    if not isinstance(attn, dict) or "W_q" not in attn or "W_v" not in attn:
        raise ValueError("params/attn: expected a dict with W_q, W_k, W_v (D, H, K) and W_o (H*V, D), no biases")
    _, HA, KA = checks.float_array(attn["W_q"], "params/attn/W_q", ndim=3, dims="(D, H, K)").shape
    VA = checks.float_array(attn["W_v"], "params/attn/W_v", ndim=3, dims="(D, H, V)").shape[2]
    spec = {"W_q": ((D, HA, KA), "(D, H, K)"), "W_k": ((D, HA, KA), "(D, H, K)"), "W_v": ((D, HA, VA), "(D, H, V)"),
            "W_o": ((HA * VA, D), "(H*V, D)")}
    check_params(attn, "params/attn", spec, dtype)
    p = checks.float_array(params["persistent"], "params/persistent", ndim=2, dims="(Np, D)")
    if p.shape[1] != D:
        raise ValueError(f"params/persistent: expected shape (Np, D) with D = {D} (from the memory), got {p.shape}")
    checks.same_dtype(p, "params/persistent", dtype, "the dtype of the parameters")
    x = check_input(x, D, dtype)
    C = checks.positive_int(segment_len, "segment_len")
    chunk_size = _check_form(form, C if chunk_size is None else chunk_size)
    B, T, _ = x.shape
    Np = p.shape[0]
    memory, surprise = _initial_memory(mem, L, B), None
    out = np.empty_like(x)
    segments = []
    for s in range(0, T, C):
        xs = x[:, s : s + C]  # (B, n, D)
        n = xs.shape[1]
        # (21) retrieval with the memory entering the segment: h = M*_(s-1)(q) W_O
        q, c_q = _feature(xs, mem["W_q"], True)  # (B, n, H, K)
        r, c_read = memory_forward(tuple(w[:, None] for w in memory), q)  # (B, n, H, V)
        h, c_h = linear(r.reshape(B, n, H * V), mem["W_o"])  # (B, n, D)
        # (22)-(23) attention over [p || h || x^(s)]; keep the positions of x^(s)
        context = np.concatenate([np.broadcast_to(p, (B, Np, D)), h, xs], axis=1)  # (B, Np + 2n, D)
        a, c_attn = _prefix_attention(attn, context, Np + n)
        y = a[:, Np + n :]  # (B, n, D)
        # (24)-(25) update the memory with y, read it after each token's update, gate y
        z, memory, surprise, c_mem = _memory_layer(mem, y, form, chunk_size, memory, surprise)
        out[:, s : s + n] = xs + y * z
        segments.append((c_q, c_read, c_h, c_attn, c_mem, y, z, n))
    return out, (segments, x.shape, L, Np, H, V, C)


def mac_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: the segments in reverse, the memory's gradient carried back."""
    segments, x_shape, L, Np, H, V, C = cache
    mem = params["memory"]
    dy = check_cotangent(dy, x_shape, mem["W_q"].dtype)
    B = x_shape[0]
    g_mem = {key: np.zeros_like(a) for key, a in mem.items()}
    g_attn = {key: np.zeros_like(a) for key, a in params["attn"].items()}
    dp = np.zeros_like(params["persistent"])
    dx = np.zeros(x_shape, dy.dtype)
    dmemory = tuple(np.zeros((B,) + mem[f"M0_{l}"].shape, dy.dtype) for l in range(L))
    dsurprise = None
    starts = list(range(0, x_shape[1], C))
    for s, (c_q, c_read, c_h, c_attn, c_mem, y, z, n) in zip(reversed(starts), reversed(segments)):
        dout = dy[:, s : s + n]
        dx[:, s : s + n] += dout
        # (25) out = x + y * z
        dy_seg, dz = dout * z, dout * y
        # (24) the memory layer on y, from the state entering the segment
        dy_mem, grads, dmemory, dsurprise = _memory_layer_backward(c_mem, dz, dmemory, dsurprise)
        for key, d in grads.items():
            g_mem[key] += d
        # (23) attention over the context
        da = np.zeros((B, Np + 2 * n, x_shape[2]), dy.dtype)
        da[:, Np + n :] = dy_seg + dy_mem
        dcontext, grads = _prefix_attention_backward(da, c_attn)
        for key, d in grads.items():
            g_attn[key] += d
        # (22) the context's parts
        dp += dcontext[:, :Np].sum(axis=0)
        dh = dcontext[:, Np : Np + n]
        dx[:, s : s + n] += dcontext[:, Np + n :]
        # (21) the retrieval
        dr, dW_o, _ = linear_backward(dh, c_h)
        g_mem["W_o"] += dW_o
        dW_read, dq = memory_forward_backward(dr.reshape(B, n, H, V), c_read)
        dmemory = tuple(a + b.sum(axis=1) for a, b in zip(dmemory, dW_read))
        dx_q, dW_q = _feature_backward(dq, c_q)
        dx[:, s : s + n] += dx_q
        g_mem["W_q"] += dW_q
    for l in range(L):
        g_mem[f"M0_{l}"] += dmemory[l].sum(axis=0)
    return dx, {"memory": g_mem, "attn": g_attn, "persistent": dp}
