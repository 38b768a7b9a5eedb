"""Changing a language model's hidden state, not its weights, by gradient descent at inference time.

Two papers, one primitive: the gradient of a loss on the tokens just observed with respect to the
recurrent state the model carries. The model is the LSTM language model of ``ref.models.lstm_lm``
(embedding, L LSTM layers, linear head; ``init_lstm_lm``), run one token at a time. Its state is one
array ``S`` (B, L, 2, H): ``S[:, l, 0]`` is h and ``S[:, l, 1]`` is c of layer l. Step t reads
token x_t from the state S_t entering it:

    (h_{t+1}, S_{t+1}) = LSTM(E[x_t], S_t)    (every layer, ``ref.mixers.rnn.lstm_step``)      (1)
    z_t = h^L_{t+1} W + b,   p_t = softmax(z_t)    predicts x_{t+1}                              (2)

Backward of one step (:func:`lm_step_backward`), from dz_t and the gradient dS_{t+1} arriving from
later steps: dh^L = dz_t W^T, then ``lstm_step_backward`` layer by layer, top to bottom, gives dS_t.
The parameters are frozen throughout, so only the state gradients are kept.

Error signals on the prediction p_t of token x_{t+1} (:func:`error_signal`), and their gradients:

    surprisal  E = -log p_t[x_{t+1}],              dE/dz = p_t - onehot(x_{t+1})                  (3)
    entropy    E = -sum_k p_k log p_k,             dE/dz_k = -p_k (log p_k + E)                   (4)

**Recoding** (Ulmer 2021, arXiv 2101.00674): after token x_{t+1} is observed, the state entering
step t takes one gradient step on E_t, and the model recomputes the step from the recoded state:

    S_t <- S_t - alpha dE_t/dS_t,   then (1) again: S_{t+1} from the recoded S_t                (5)

(The thesis differentiates the error with respect to the h and c of the current step; we recode
the state *entering* the step, so that both h and c get a gradient through the LSTM cell and the
recoded state stays a state the cell could have produced. With one step per token the two differ
only by which side of the cell the update lands on.)

**Hidden-state optimisation** (HSO; Yoshida & Gimpel, EMNLP 2021, chapter of Yoshida's thesis
arXiv 2408.16241): the model keeps a cache of its last ``window`` hidden states and, after each
observed token, takes one Adam step on those states to lower the loss of the tokens in the window,
then predicts the next token from the updated cache. Each cached state has its own Adam moments,
which travel with it while it stays in the cache. For a recurrent network the cached states are
the states S_i entering the last ``window`` steps, written S_i = base_i + delta_i, where base_i is
what the cell computed from S_{i-1} and delta_i the offset HSO has learned:

    L_t = sum_{i = t-window+1}^{t} -log p_i[x_{i+1}]       (the window's tokens, observed)        (6)
    g_i = dL_t / d delta_i = dL_t / dS_i                   (backprop through the window)         (7)
    m_i <- b1 m_i + (1-b1) g_i,  v_i <- b2 v_i + (1-b2) g_i^2,  n_i <- n_i + 1                   (8)
    delta_i <- delta_i - lr (m_i / (1-b1^n_i)) / (sqrt(v_i / (1-b2^n_i)) + eps)                  (9)

then the window is recomputed forward with the new offsets to give S_{t+1}. A state leaving the
window keeps its offset, frozen. ``window = 1`` with SGD instead of Adam is recoding (5).

Evaluation protocol of both (:func:`recoding_nll`, :func:`hso_nll`): token x_{t+1} is scored with
the prediction p_t made *before* any update that used x_{t+1}; the update only affects the
predictions of later tokens. (Scoring the re-decoded p_t after a surprisal step would let the
model peek at the token it is scored on.)

Also here, for the second part of lesson 31, exhaustive and beam search over a toy sequence model
given as a next-token function, with an optional log-probability bonus log P(ok | prefix):
:func:`beam_search` with ``condition`` is *conditional beam search*, which maximises
log p(y) + log P(y is not degenerate) instead of log p(y).
"""

from __future__ import annotations

import itertools
import numbers
from typing import Callable, NamedTuple

import numpy as np

from ref.mixers.rnn import lstm_step, lstm_step_backward

__all__ = [
    "SIGNALS",
    "n_layers",
    "zero_state",
    "lm_step",
    "lm_step_backward",
    "error_signal",
    "state_gradient",
    "recode",
    "frozen_nll",
    "recoding_nll",
    "window_loss_and_grads",
    "hso_nll",
    "exhaustive_mode",
    "beam_search",
]

SIGNALS = ("surprisal", "entropy")
_GATE_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def n_layers(params) -> int:
    """The number of LSTM layers of an ``init_lstm_lm`` tree; ValueError for anything else."""
    ok = isinstance(params, dict) and set(params) == {"embed", "lstm", "head"} and isinstance(params["lstm"], dict)
    L = len(params["lstm"]) // 4 if ok else 0
    if not ok or L == 0 or set(params["lstm"]) != {f"{w}_l{l}" for l in range(L) for w in _GATE_NAMES}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected an LSTM language model from ref.models.lstm_lm.init_lstm_lm, got {got}")
    return L


def _layer(params, layer):
    return {w: params["lstm"][f"{w}_l{layer}"] for w in _GATE_NAMES}


def zero_state(params, batch_size: int) -> np.ndarray:
    """The initial state S_0 = 0, (B, L, 2, H)."""
    L = n_layers(params)
    H = params["lstm"]["weight_hh_l0"].shape[1]
    return np.zeros((batch_size, L, 2, H), dtype=params["embed"].dtype)


def _check_state(state, params, B):
    L = n_layers(params)
    H = params["lstm"]["weight_hh_l0"].shape[1]
    state = np.asarray(state)
    if state.shape != (B, L, 2, H) or state.dtype != params["embed"].dtype:
        raise ValueError(
            f"state: expected (B, L, 2, H) = {(B, L, 2, H)} of dtype {params['embed'].dtype}, "
            f"got {state.shape} of dtype {state.dtype}"
        )
    return state


def _check_token_ids(tokens, name, V, ndim):
    tokens = np.asarray(tokens)
    if tokens.ndim != ndim or not np.issubdtype(tokens.dtype, np.integer):
        dims = "(B,)" if ndim == 1 else "(B, T)"
        raise ValueError(f"{name}: expected integer token ids {dims}, got {tokens.dtype} of shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
        raise ValueError(f"{name}: expected ids in [0, {V}), got values in [{tokens.min()}, {tokens.max()}]")
    return tokens


class StepCache(NamedTuple):
    """What :func:`lm_step_backward` needs: the LSTM step caches, bottom layer first."""

    layers: list


def lm_step(params, tokens, state):
    """One step of the model, (1)-(2): ``tokens`` (B,) ids x_t, ``state`` S_t (B, L, 2, H).
    Returns ``(logits z_t (B, V), S_{t+1} (B, L, 2, H), cache)``."""
    L = n_layers(params)
    tokens = _check_token_ids(tokens, "tokens", params["embed"].shape[0], 1)
    state = _check_state(state, params, tokens.shape[0])
    x = params["embed"][tokens]  # (B, D)
    new_state = np.empty_like(state)
    caches = []
    for layer in range(L):
        # (1) layer l reads the output of layer l-1 and its own (h, c)
        x, (h, c), cache = lstm_step(x, (state[:, layer, 0], state[:, layer, 1]), _layer(params, layer))  # (B, H)
        new_state[:, layer, 0], new_state[:, layer, 1] = h, c
        caches.append(cache)
    logits = x @ params["head"]["W"] + params["head"]["b"]  # (2) (B, V)
    return logits, new_state, StepCache(caches)


def lm_step_backward(params, cache: StepCache, dlogits, dstate_next=None):
    """The gradient dS_t (B, L, 2, H) of a loss with gradient ``dlogits`` (B, V) on z_t and
    ``dstate_next`` (B, L, 2, H) on S_{t+1} (None: zero). Parameters are frozen: no dparams."""
    L = n_layers(params)
    dx = dlogits @ params["head"]["W"].T  # (2) dh^L (B, H)
    dstate = np.empty((dx.shape[0], L, 2, dx.shape[1]), dtype=dx.dtype)
    for layer in range(L - 1, -1, -1):
        d_next = None if dstate_next is None else (dstate_next[:, layer, 0], dstate_next[:, layer, 1])
        dx, (dh, dc), _ = lstm_step_backward(dx, d_next, cache.layers[layer])  # (1) backward
        dstate[:, layer, 0], dstate[:, layer, 1] = dh, dc
    return dstate


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def error_signal(logits, targets, signal: str):
    """E (B,) and dE/dlogits (B, V) for ``signal`` "surprisal" (3) (needs ``targets`` (B,)) or
    "entropy" (4) (``targets`` unused)."""
    if signal not in SIGNALS:
        raise ValueError(f"signal: expected one of {SIGNALS}, got {signal!r}")
    logp = _log_softmax(logits)  # (B, V)
    p = np.exp(logp)
    if signal == "surprisal":
        targets = _check_token_ids(targets, "targets", logits.shape[1], 1)
        rows = np.arange(logits.shape[0])
        E = -logp[rows, targets]  # (3)
        dz = p.copy()
        dz[rows, targets] -= 1.0
        return E, dz
    plogp = np.where(p > 0, p * logp, 0.0)
    E = -plogp.sum(-1)  # (4)
    dz = -(plogp + p * E[:, None])
    return E, dz


def state_gradient(params, tokens, targets, state, signal: str = "surprisal"):
    """E_t (B,) and dE_t/dS_t (B, L, 2, H) for the step reading ``tokens`` from ``state``."""
    logits, _, cache = lm_step(params, tokens, state)
    E, dz = error_signal(logits, targets, signal)
    return E, lm_step_backward(params, cache, dz)


def _check_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def recode(params, tokens, targets, state, alpha: float, signal: str = "surprisal"):
    """Recoding (5): the state entering the step after one gradient step of size ``alpha`` on
    the error signal. Returns ``(recoded state, E_t before the step)``."""
    alpha = _check_rate(alpha, "alpha")
    E, g = state_gradient(params, tokens, targets, state, signal)
    return state - alpha * g, E


def _check_sequence(params, tokens):
    n_layers(params)
    tokens = _check_token_ids(tokens, "tokens", params["embed"].shape[0], 2)
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 time steps (one to read, one to score), got shape {tokens.shape}")
    return tokens


def frozen_nll(params, tokens):
    """-log p_t[x_{t+1}] (B, T-1) of the unchanged model, one step at a time."""
    tokens = _check_sequence(params, tokens)
    B, T = tokens.shape
    S = zero_state(params, B)
    nll = np.empty((B, T - 1))
    for t in range(T - 1):
        logits, S, _ = lm_step(params, tokens[:, t], S)
        nll[:, t] = -_log_softmax(logits)[np.arange(B), tokens[:, t + 1]]
    return nll


def recoding_nll(params, tokens, alpha: float, signal: str = "surprisal"):
    """The loss (B, T-1) of the model with recoding (5) at every step, scored before each update."""
    tokens = _check_sequence(params, tokens)
    alpha = _check_rate(alpha, "alpha")
    if signal not in SIGNALS:
        raise ValueError(f"signal: expected one of {SIGNALS}, got {signal!r}")
    B, T = tokens.shape
    S = zero_state(params, B)
    nll = np.empty((B, T - 1))
    for t in range(T - 1):
        logits, _, cache = lm_step(params, tokens[:, t], S)
        nll[:, t] = -_log_softmax(logits)[np.arange(B), tokens[:, t + 1]]  # scored before x_{t+1} is used
        E, dz = error_signal(logits, tokens[:, t + 1], signal)  # x_{t+1} is now observed
        S = S - alpha * lm_step_backward(params, cache, dz)  # (5)
        _, S, _ = lm_step(params, tokens[:, t], S)  # continue from the recoded state
    return nll


def window_loss_and_grads(params, tokens, targets, base, deltas):
    """The window's loss (6) and its gradient (7) with respect to every cached state.

    ``tokens`` (B, W) the tokens read by the W cached steps, ``targets`` (B, W) the tokens they
    predict, ``base`` (B, L, 2, H) the base of the oldest cached state, ``deltas`` (W, B, L, 2, H)
    the offsets of the W cached states. Returns ``(losses (B, W), grads (W, B, L, 2, H), S_end)``:
    the surprisal of each target (L is their sum over the window), dL/dS_i for each cached state,
    and the state after the window (the base of the next one)."""
    logits, caches, S_end = _window_forward(params, tokens, base, deltas)
    W = tokens.shape[1]
    losses = np.empty(tokens.shape)
    grads = np.empty_like(deltas)
    dS_next = None
    for j in range(W - 1, -1, -1):  # (7) backprop through the window, newest step first
        E, dz = error_signal(logits[j], targets[:, j], "surprisal")
        losses[:, j] = E  # (6): L = sum_j losses[:, j]
        dS_next = lm_step_backward(params, caches[j], dz, dS_next)
        grads[j] = dS_next  # dL/dS_i = dL/d delta_i
    return losses, grads, S_end


def _window_forward(params, tokens, base, deltas):
    """(1)-(2) over the cached steps: S_i = base_i + delta_i, base_{i+1} from the step."""
    S = base
    logits, caches = [], []
    for j in range(tokens.shape[1]):
        z, S, c = lm_step(params, tokens[:, j], S + deltas[j])
        logits.append(z)
        caches.append(c)
    return logits, caches, S


def hso_nll(params, tokens, lr: float, *, window: int = 4, betas=(0.9, 0.999), eps: float = 1e-8):
    """The loss (B, T-1) of the model with hidden-state optimisation (6)-(9): one Adam step per
    observed token on the offsets of the last ``window`` cached states, each with its own moments;
    x_{t+1} is scored before the step that uses it."""
    tokens = _check_sequence(params, tokens)
    lr = _check_rate(lr, "lr")
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window: expected an integer >= 1, got {window!r}")
    b1, b2 = betas
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps: expected a number > 0, got {eps!r}")
    B, T = tokens.shape
    base = zero_state(params, B)  # base of the oldest cached state: what came before it is frozen
    first = 0  # position of the oldest cached state; the cache holds positions first .. t
    deltas = np.zeros((1,) + base.shape)  # (W, B, L, 2, H) offsets, and their Adam moments (8)
    m, v = np.zeros_like(deltas), np.zeros_like(deltas)
    n = np.zeros(1, dtype=np.int64)  # Adam step count of each cached state
    nll = np.empty((B, T - 1))
    for t in range(T - 1):
        read, predict = tokens[:, first : t + 1], tokens[:, first + 1 : t + 2]  # (B, W)
        losses, g, _ = window_loss_and_grads(params, read, predict, base, deltas)  # (6)-(7)
        nll[:, t] = losses[:, -1]  # x_{t+1} scored by the states as they were before it was seen
        n += 1  # (8)-(9), each cached state with its own moments and step count
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c1 = (1 - b1 ** n)[:, None, None, None, None]
        c2 = (1 - b2 ** n)[:, None, None, None, None]
        deltas = deltas - lr * (m / c1) / (np.sqrt(v / c2) + eps)
        # the state for x_{t+1} joins the cache with a zero offset and fresh moments
        zero = np.zeros((1,) + base.shape)
        deltas, m, v = (np.concatenate([a, zero]) for a in (deltas, m, v))
        n = np.append(n, 0)
        if t + 2 - first > window:  # the oldest state leaves the cache, its offset frozen in
            _, base, _ = lm_step(params, tokens[:, first], base + deltas[0])
            first += 1
            deltas, m, v, n = deltas[1:], m[1:], v[1:], n[1:]
    return nll


def _check_search(vocab_size, length):
    for value, name in ((vocab_size, "vocab_size"), (length, "length")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def exhaustive_mode(next_logprobs: Callable, vocab_size: int, length: int, condition: Callable | None = None):
    """The most probable sequence of ``length`` tokens by enumerating all V^length of them.
    ``next_logprobs(prefixes (N, t) int) -> (N, V)`` log-probabilities of the next token;
    ``condition(sequences (N, length)) -> (N,)`` = log P(ok | y): then the mode of p(y | ok).
    Returns ``(sequence (length,), log p(y))``."""
    _check_search(vocab_size, length)
    seqs = np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int64)  # (V^T, T)
    logp = np.zeros(len(seqs))
    for t in range(length):
        logp += next_logprobs(seqs[:, :t])[np.arange(len(seqs)), seqs[:, t]]
    score = logp if condition is None else logp + condition(seqs)
    best = int(np.argmax(score))
    return seqs[best], float(logp[best])


def beam_search(next_logprobs: Callable, vocab_size: int, length: int, beam_size: int, condition: Callable | None = None):
    """Beam search for ``length`` tokens. Without ``condition`` the score of a prefix y_{<=t} is
    log p(y_{<=t}); with ``condition(prefixes (N, t)) -> (N,)`` = log P(ok | prefix) the score is
    log p(y_{<=t}) + log P(ok | y_{<=t}) (conditional beam search), which at full length is
    log p(y, ok) = log p(y | ok) + const. Returns ``(best sequence (length,), its log p(y))``."""
    _check_search(vocab_size, length)
    if isinstance(beam_size, bool) or not isinstance(beam_size, numbers.Integral) or beam_size < 1:
        raise ValueError(f"beam_size: expected an integer >= 1, got {beam_size!r}")
    beams = np.zeros((1, 0), dtype=np.int64)
    logp = np.zeros(1)
    for t in range(length):
        cand_logp = (logp[:, None] + next_logprobs(beams)).reshape(-1)  # (N V,)
        cand = np.concatenate([np.repeat(beams, vocab_size, axis=0), np.tile(np.arange(vocab_size), len(beams))[:, None]], axis=1)
        score = cand_logp if condition is None else cand_logp + condition(cand)
        keep = np.argsort(-score, kind="stable")[:beam_size]
        beams, logp = cand[keep], cand_logp[keep]
        final = score[keep]
    best = int(np.argmax(final))
    return beams[best], float(logp[best])
