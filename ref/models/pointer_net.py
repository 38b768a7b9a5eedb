"""Pointer Networks (Vinyals, Fortunato & Jaitly, arXiv 1506.03134): an LSTM encoder, an LSTM decoder
and additive attention used as a *pointer* to one of the inputs, with backprop written out by hand.

The problem: the input is a sequence P = (P_1, ..., P_n) of vectors (points, numbers) and the output a
sequence of indices C = (C_1, ..., C_m), each one of 1..n (the sorted order, the convex hull). The
number of output classes is n, which changes from one input to the next, so a softmax over a fixed
vocabulary cannot express it. The paper's answer (Sec. 2.3) is to make the attention scores
themselves the output distribution:

    e_j = encoder state of P_j (j = 1..n),   d_i = decoder state at output step i
    u_j^i = v^T tanh(W1 e_j + W2 d_i)                      j = 0, 1, ..., n              (3)
    p(C_i | C_1, ..., C_{i-1}, P) = softmax_j(u_j^i)                                      (3)

and to feed the chosen input element, P_{C_{i-1}}, to the next decoder step. Slot j = 0 is the end of
the output (the paper's "⇐" symbol): its encoding e_0 is a learned vector ``end``. Pointers are
therefore in {0, 1, ..., n} (1-based like the paper, 0 = END), and a target sequence that ends early
is padded with ``IGNORE = -100`` (no loss, as ``ref.nn.cross_entropy``'s ignore_index).

Shapes (B batch, n inputs, m output steps, I input features, H hidden, A attention size):

    x (B, n, I)   targets (B, m) ints in {0..n} or IGNORE   logits (B, m, n + 1)

Parameters (a nested dict)::

    enc   the encoder: an LSTM {weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,)}
          (``encoder="lstm"``, the paper's), or the order-independent "set" encoder {W (I, H), b (H,)}
          with e_j = tanh(P_j W + b) and the decoder started from h = mean_j e_j, c = 0
    dec   the decoder LSTM {weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,)}
    go    (I,)   the decoder's first input (the paper's "⇒")
    end   (H,)   e_0, the encoding of the END slot
    W1, W2 (H, A), v (A,)   the pointer attention (3)

The baseline the paper compares with (Sec. 2.1, "sequence-to-sequence"): the same encoder and decoder,
the same inputs fed back, but the output is a softmax over a *fixed* vocabulary {END, 1, ..., V}:
``logits = d_i W_out + b_out`` (``out = {W (H, V + 1), b (V + 1,)}`` replaces ``end, W1, W2, v``).
Trained with V = the largest n seen, it has no output unit for an index above V.

Forward with teacher forcing (training) and its backward:

    dec_in_1 = go,   dec_in_i = P_{C_{i-1}} (zeros after END / in padding)
    D = LSTM_dec(dec_in; h0, c0 = the encoder's final state)            (B, m, H)
    K = E W1 (B, n+1, A),  Q = D W2 (B, m, A),  Z = tanh(K[:, None] + Q[:, :, None]),  u = Z v
    backward: dv = sum Z du,  dpre = (du v) (1 - Z^2),  dK = sum_i dpre,  dQ = sum_j dpre,
              dW1 = E^T dK, dE = dK W1^T, dW2 = D^T dQ, dD = dQ W2^T, then the two LSTMs backwards
              (``ref.mixers.rnn.lstm_backward``) and the gather of the fed-back inputs scattered
              back into dx.

Greedy decoding (:func:`pointer_net_decode`) runs the decoder one ``lstm_step`` at a time and feeds
back the argmax; teacher-forced forward on the decoded path gives the same logits.

What is invariant. The pointer stage (3) is permutation-*equivariant*: permuting the encodings e_j
permutes the scores u_j^i. With the "set" encoder the whole model is: permuting the input points
permutes the pointers (and the decoded sequence) accordingly. The LSTM encoder reads the points in
order, so its encodings, and the answer, may change when the input is shuffled (Vinyals et al.
return to this in "Order Matters", arXiv 1511.06391).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.mixers.rnn import lstm, lstm_backward, lstm_step
from ref.nn import linear, linear_backward, tanh, tanh_backward

__all__ = ["IGNORE", "init_pointer_net", "pointer_net", "pointer_net_backward", "pointer_net_decode",
           "pointer_scores", "pointer_scores_backward"]

IGNORE = -100  # padding of a target sequence after END: no loss, zeros fed back
ENCODERS = ("lstm", "set")
FORGET_BIAS = 1.0


def init_pointer_net(rng: np.random.Generator, input_size: int, hidden: int = 32, attention: int = 32, *,
                     encoder: str = "lstm", vocab: int | None = None, dtype=np.float64) -> dict:
    """Parameters: uniform(-1/sqrt(H), 1/sqrt(H)) LSTMs (PyTorch's init) with forget-gate bias 1,
    normal attention weights with std 1/sqrt(fan-in). ``vocab=V``: the fixed-vocabulary baseline
    (outputs END, 1..V) instead of the pointer."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    I, H, A = (checks.positive_int(v, n) for v, n in ((input_size, "input_size"), (hidden, "hidden"),
                                                      (attention, "attention")))
    checks.one_of(encoder, "encoder", ENCODERS)
    s = 1 / np.sqrt(H)

    def lstm_params(n_in):
        p = {"weight_ih": rng.uniform(-s, s, (4 * H, n_in)), "weight_hh": rng.uniform(-s, s, (4 * H, H)),
             "bias_ih": rng.uniform(-s, s, 4 * H), "bias_hh": np.zeros(4 * H)}
        p["bias_hh"][H : 2 * H] = FORGET_BIAS  # gate rows i, f, g, o: the forget gate starts open
        return p

    if encoder == "lstm":
        enc = lstm_params(I)
    else:
        enc = {"W": rng.standard_normal((I, H)), "b": rng.uniform(-1, 1, H)}
    params = {"enc": enc, "dec": lstm_params(I), "go": rng.standard_normal(I)}
    if vocab is None:
        params.update(end=rng.uniform(-s, s, H), W1=rng.standard_normal((H, A)) * s,
                      W2=rng.standard_normal((H, A)) * s, v=rng.standard_normal(A) / np.sqrt(A))
    else:
        V = checks.positive_int(vocab, "vocab")
        params["out"] = {"W": rng.standard_normal((H, V + 1)) * s, "b": np.zeros(V + 1)}
    return _cast(params, np.dtype(dtype))


def _cast(tree, dtype):
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    return tree.astype(dtype)


# --- the pointer (3) ----------------------------------------------------------------------------


def pointer_scores(E, D, W1, W2, v):
    """u_j^i = v^T tanh(W1 e_j + W2 d_i) (3) for every step i and slot j, written as row vectors:
    E (B, J, H) encodings, D (B, m, H) decoder states -> u (B, m, J). Returns ``(u, cache)``."""
    K, cache_k = linear(E, W1)  # (B, J, A)
    Q, cache_q = linear(D, W2)  # (B, m, A)
    Z, cache_z = tanh(K[:, None, :, :] + Q[:, :, None, :])  # (B, m, J, A)
    u = Z @ v  # (B, m, J)
    return u, (cache_k, cache_q, cache_z, Z, v)


def pointer_scores_backward(du, cache):
    """Gradients ``(dE, dD, dW1, dW2, dv)`` of :func:`pointer_scores` from du (B, m, J)."""
    cache_k, cache_q, cache_z, Z, v = cache
    dv = np.einsum("bmja,bmj->a", Z, du)  # (A,)
    (dpre,) = tanh_backward(du[..., None] * v, cache_z)  # (B, m, J, A)
    dE, dW1, _ = linear_backward(dpre.sum(axis=1), cache_k)  # dK (B, J, A) -> (B, J, H)
    dD, dW2, _ = linear_backward(dpre.sum(axis=2), cache_q)  # dQ (B, m, A) -> (B, m, H)
    return dE, dD, dW1, dW2, dv


# --- encoder ------------------------------------------------------------------------------------


def _encode(params, x):
    """Encodings e (B, n, H) and the decoder's initial state (h0, c0)."""
    enc = params["enc"]
    if "weight_ih" in enc:
        e, hT, cT, cache = lstm(x, None, None, enc["weight_ih"], enc["weight_hh"], enc["bias_ih"], enc["bias_hh"])
        return e, hT, cT, ("lstm", cache)
    a, cache_a = linear(x, enc["W"], enc["b"])  # (B, n, H)
    e, cache_e = tanh(a)
    return e, e.mean(axis=1), np.zeros_like(e[:, 0]), ("set", (cache_a, cache_e, x.shape[1]))


def _encode_backward(de, dh0, dc0, cache):
    kind, c = cache
    if kind == "lstm":
        dx, _, _, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(de, dh0, dc0, c)
        return dx, {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db_ih, "bias_hh": db_hh}
    cache_a, cache_e, n = c
    de = de + dh0[:, None, :] / n  # h0 = mean_j e_j (c0 = 0 is a constant)
    (da,) = tanh_backward(de, cache_e)
    dx, dW, db = linear_backward(da, cache_a)
    return dx, {"W": dW, "b": db}


# --- checks -------------------------------------------------------------------------------------


def _check(params, x):
    if not isinstance(params, dict) or not {"enc", "dec", "go"} <= set(params):
        raise ValueError("params: expected a dict from init_pointer_net (keys enc, dec, go, ...)")
    go = params["go"]
    I = go.shape[0]
    x = checks.float_array(x, "x", ndim=3, dims="(B, n, I)")
    if x.shape[2] != I:
        raise ValueError(f"x: expected shape (B, n, I) with I = {I} (the size of params['go']), got {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x: expected at least one example and one input element, got shape {x.shape}")
    checks.same_dtype(x, "x", go.dtype, "the dtype of the parameters")
    checks.finite(x, "x")
    return x


def _n_classes(params, n):
    """Output classes: n + 1 for the pointer (END and the n inputs), V + 1 for the baseline."""
    return n + 1 if "out" not in params else params["out"]["W"].shape[1]


def _check_targets(params, x, targets):
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        got = targets.dtype if isinstance(targets, np.ndarray) else type(targets).__name__
        raise ValueError(f"targets: expected an integer numpy array (B, m), got {got}")
    B, n, _ = x.shape
    if targets.ndim != 2 or targets.shape[0] != B or targets.shape[1] < 1:
        raise ValueError(f"targets: expected shape (B, m) with B = {B} (from x) and m >= 1, got {targets.shape}")
    C = _n_classes(params, n)
    bad = (targets != IGNORE) & ((targets < 0) | (targets >= C))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"targets: expected pointers in [0, {C - 1}] (0 = END) or {IGNORE} (padding), "
                         f"got {targets[where]} at index {where}")
    return targets


# --- the model ----------------------------------------------------------------------------------


def _feed(xp, prev):
    """The decoder inputs P_{prev}: xp (B, n+1, I) with xp[:, 0] = 0; prev (B, k) pointers (IGNORE and
    indices past n, possible for the baseline, feed zeros). Returns (B, k, I) and the gather index."""
    idx = np.where((prev >= 0) & (prev < xp.shape[1]), prev, 0)  # (B, k)
    return np.take_along_axis(xp, idx[..., None], axis=1), idx


def _output(params, E, D):
    if "out" in params:
        logits, cache = linear(D, params["out"]["W"], params["out"]["b"])  # (B, m, V + 1)
        return logits, ("vocab", cache)
    u, cache = pointer_scores(E, D, params["W1"], params["W2"], params["v"])  # (B, m, n + 1)
    return u, ("pointer", cache)


def pointer_net(params: dict, x: np.ndarray, targets: np.ndarray):
    """Teacher-forced forward: logits (B, m, n + 1) of p(C_i | C_<i, P) for every step i, with
    C_<i = ``targets[:, :i]`` fed back. (B, m, V + 1) for the fixed-vocabulary baseline."""
    x = _check(params, x)
    targets = _check_targets(params, x, targets)
    B, n, I = x.shape
    e, h0, c0, enc_cache = _encode(params, x)
    E = np.concatenate([np.broadcast_to(params["end"], (B, 1, e.shape[2])), e], axis=1) if "end" in params else e
    xp = np.concatenate([np.zeros((B, 1, I), x.dtype), x], axis=1)  # (B, n + 1, I): slot 0 = END feeds zeros
    prev, idx = _feed(xp, targets[:, :-1])  # (B, m - 1, I)
    dec_in = np.concatenate([np.broadcast_to(params["go"], (B, 1, I)), prev], axis=1)  # (B, m, I)
    dec = params["dec"]
    D, _, _, dec_cache = lstm(dec_in, h0, c0, dec["weight_ih"], dec["weight_hh"], dec["bias_ih"], dec["bias_hh"])
    logits, out_cache = _output(params, E, D)
    return logits, (enc_cache, dec_cache, out_cache, idx, x.shape)


def pointer_net_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``(dx, grads)``, grads shaped like params."""
    enc_cache, dec_cache, (kind, out_cache), idx, (B, n, I) = cache
    dlogits = checks.float_array(dlogits, "dlogits", ndim=3, dims="(B, m, classes)")
    C = n + 1 if kind == "pointer" else params["out"]["W"].shape[1]
    checks.same_shape(dlogits, "dlogits", (B, idx.shape[1] + 1, C), "(B, m, classes)", "the shape of the logits")
    grads = {}
    if kind == "vocab":
        dD, dW, db = linear_backward(dlogits, out_cache)
        grads["out"] = {"W": dW, "b": db}
        de = np.zeros((B, n, params["dec"]["weight_hh"].shape[1]), dlogits.dtype)
    else:
        dE, dD, grads["W1"], grads["W2"], grads["v"] = pointer_scores_backward(dlogits, out_cache)
        grads["end"] = dE[:, 0].sum(axis=0)
        de = dE[:, 1:]
    ddec_in, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(dD, None, None, dec_cache)
    grads["dec"] = {"weight_ih": dw_ih, "weight_hh": dw_hh, "bias_ih": db_ih, "bias_hh": db_hh}
    grads["go"] = ddec_in[:, 0].sum(axis=0)
    dxp = np.zeros((B, n + 1, I), dlogits.dtype)
    np.add.at(dxp, (np.arange(B)[:, None], idx), ddec_in[:, 1:])  # scatter the gather of the fed-back inputs
    dx, grads["enc"] = _encode_backward(de, dh0, dc0, enc_cache)
    return dx + dxp[:, 1:], grads


def pointer_net_decode(params: dict, x: np.ndarray, max_steps: int | None = None):
    """Greedy decoding: at each step the argmax of p(C_i | C_<i, P), fed back as the next input,
    until every sequence has emitted END (0) or ``max_steps`` (default n + 1) steps have run.
    Returns ``(pointers, logits)``: pointers (B, S) with IGNORE after END, logits (B, S, classes)."""
    x = _check(params, x)
    B, n, I = x.shape
    S = n + 1 if max_steps is None else checks.positive_int(max_steps, "max_steps")
    e, h, c, _ = _encode(params, x)
    E = np.concatenate([np.broadcast_to(params["end"], (B, 1, e.shape[2])), e], axis=1) if "end" in params else e
    xp = np.concatenate([np.zeros((B, 1, I), x.dtype), x], axis=1)  # (B, n + 1, I)
    inp = np.broadcast_to(params["go"], (B, I))
    state, done = (h, c), np.zeros(B, bool)
    pointers, all_logits = [], []
    for _ in range(S):
        d, state, _ = lstm_step(inp, state, params["dec"])  # (B, H)
        logits, _ = _output(params, E, d[:, None])  # (B, 1, classes)
        k = np.where(done, IGNORE, logits[:, 0].argmax(axis=1))  # (B,)
        pointers.append(k)
        all_logits.append(logits[:, 0])
        inp = _feed(xp, k[:, None])[0][:, 0]  # (B, I): P_k, zeros after END
        done = done | (k == 0)
        if done.all():
            break
    return np.stack(pointers, axis=1), np.stack(all_logits, axis=1)
