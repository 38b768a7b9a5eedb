"""An LSTM language model: embedding, stacked LSTM layers, a linear head, with hand-written backward.

    h^0 = Embedding(tokens)                                     (B, T, D)                  (1)
    h^l, _, _ = lstm(h^(l-1))        l = 1 .. L, zero initial states   (B, T, H)            (2)
    logits = h^L W_head + b_head                                (B, T, vocab)              (3)

(2) is ``ref.mixers.rnn.lstm`` (``torch.nn.LSTM`` conventions, gate rows i, f, g, o): layer 1
reads D inputs, the others H. Its ``backend`` runs the recurrence: ``"numpy"`` loops the step (the
definition), ``"numba"`` runs ``numba_kernels.lstm_cpu`` (the input projection of all steps as
one matrix product, the recurrence jitted and parallel over the batch). The backward is full
backprop through time through ``lstm_backward``, on the forward's backend. The head is the same
NumPy code on every backend; the embedding's backward (a scatter-add) runs jitted for "numba".

This is ``torch.nn.Embedding(vocab, D)``, ``torch.nn.LSTM(D, H, num_layers=L, batch_first=True)``
and ``torch.nn.Linear(H, vocab)``, with PyTorch's default initialisation so that a model here and
one built from those modules start from the same distribution: the embedding normal(0, 1), every
LSTM weight and bias uniform(-1/sqrt(H), 1/sqrt(H)), the head uniform(-1/sqrt(H), 1/sqrt(H)).

Parameters (the LSTM's in PyTorch's names)::

    embed (vocab, D)
    lstm  {weight_ih_l0 (4H, D), weight_hh_l0 (4H, H), bias_ih_l0 (4H,), bias_hh_l0 (4H,),
           weight_ih_l1 (4H, H), ...}
    head  {W (H, vocab), b (vocab,)}

Training: :func:`lstm_lm_loss_and_grads` has the signature ``ref.train.train`` calls, ``(params,
batch, rng) -> (loss, grads)``, the mean next-token cross-entropy (as ``ref.models.lm``)::

    params = init_lstm_lm(rng, vocab_size=256, D=128, n_layers=2)
    loss, grads = lstm_lm_loss_and_grads(params, (inputs, targets), backend="numba")
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ref import checks
from ref.mixers.rnn import lstm, lstm_backward
from ref.models.gla import check_dtype, check_rng
from ref.models.lm import IGNORE_INDEX, _check_tokens, _unpack_batch
from ref.nn import (
    cross_entropy,
    cross_entropy_backward,
    embedding,
    embedding_backward,
    host_backend,
    linear,
    linear_backward,
)

__all__ = ["init_lstm_lm", "lstm_lm_forward", "lstm_lm_backward", "lstm_lm_loss", "lstm_lm_loss_and_grads"]

GATES = 4  # i, f, g, o


def init_lstm_lm(
    rng: np.random.Generator, vocab_size: int, D: int, n_layers: int, *, hidden: int | None = None, dtype=np.float64
) -> dict:
    """Parameters of the model: embedding width ``D``, ``n_layers`` LSTM layers of ``hidden``
    units (default D), PyTorch's default initialisation (module docstring)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    V = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    L = checks.positive_int(n_layers, "n_layers")
    H = D if hidden is None else checks.positive_int(hidden, "hidden")
    k = 1.0 / np.sqrt(H)
    uniform = lambda *shape: rng.uniform(-k, k, shape).astype(dtype)  # noqa: E731
    layers = {}
    for layer in range(L):
        I = D if layer == 0 else H
        layers[f"weight_ih_l{layer}"] = uniform(GATES * H, I)
        layers[f"weight_hh_l{layer}"] = uniform(GATES * H, H)
        layers[f"bias_ih_l{layer}"] = uniform(GATES * H)
        layers[f"bias_hh_l{layer}"] = uniform(GATES * H)
    return {
        "embed": rng.standard_normal((V, D)).astype(dtype),
        "lstm": layers,
        "head": {"W": uniform(H, V), "b": uniform(V)},
    }


def _num_layers(params) -> int:
    """The number of LSTM layers, from the parameter names; ValueError for a malformed tree."""
    if not isinstance(params, dict) or set(params) != {"embed", "lstm", "head"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected an LSTM language model {{'embed', 'head', 'lstm'}} (init_lstm_lm), got {got}")
    names = params["lstm"]
    L = len(names) // GATES if isinstance(names, dict) else 0
    expected = {f"{w}_l{layer}" for layer in range(L) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if L == 0 or set(names) != expected:
        got = sorted(names) if isinstance(names, dict) else type(names).__name__
        raise ValueError(
            f"params/lstm: expected weight_ih_l<i>, weight_hh_l<i>, bias_ih_l<i>, bias_hh_l<i> for each layer, got {got}"
        )
    if not isinstance(params["head"], dict) or set(params["head"]) != {"W", "b"}:
        got = sorted(params["head"]) if isinstance(params["head"], dict) else type(params["head"]).__name__
        raise ValueError(f"params/head: expected {{'W', 'b'}}, got {got}")
    return L


def _layer(params, layer: int) -> dict:
    """The keyword arguments of ``lstm`` for one layer."""
    p = params["lstm"]
    return {w: p[f"{w}_l{layer}"] for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


class LSTMLMCache(NamedTuple):
    """What :func:`lstm_lm_forward` keeps for :func:`lstm_lm_backward`: one cache per op, the
    LSTM layers' in order (``layers[l].x`` is the input of layer l)."""

    embed: tuple
    layers: list
    head: tuple


def lstm_lm_forward(params: dict, tokens: np.ndarray, *, backend: str = "numpy"):
    """Logits (B, T, vocab) for token ids (B, T); ``backend`` runs the LSTM layers ("numpy",
    "numba" or "auto"). Returns ``(logits, cache)``."""
    L = _num_layers(params)
    tokens = _check_tokens(tokens)
    # (1) h = Embedding(tokens)
    h, c_embed = embedding(tokens, params["embed"], backend=host_backend(backend))  # (B, T, D)
    c_layers = []
    for layer in range(L):
        # (2) h^l = LSTM_l(h^(l-1)), zero initial states; the final states are not used
        h, _, _, c = lstm(h, None, None, **_layer(params, layer), backend=backend)  # (B, T, H)
        c_layers.append(c)
    # (3) logits = h W_head + b_head
    logits, c_head = linear(h, params["head"]["W"], params["head"]["b"])  # (B, T, vocab)
    return logits, LSTMLMCache(c_embed, c_layers, c_head)


def lstm_lm_backward(params: dict, cache: LSTMLMCache, dlogits: np.ndarray) -> dict:
    """Gradients of every parameter, a tree shaped like ``params`` (the token ids get none)."""
    L = _num_layers(params)
    if not isinstance(cache, LSTMLMCache) or len(cache.layers) != L:
        raise ValueError(f"cache: expected the LSTMLMCache of lstm_lm_forward for {L} layers, got {type(cache).__name__}")
    # (3)
    dh, dW, db = linear_backward(dlogits, cache.head)  # dh (B, T, H)
    g_lstm = {}
    for layer in range(L - 1, -1, -1):
        # (2) backprop through time; the initial states are zeros (no gradient), the final ones unused
        dh, _, _, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(dh, None, None, cache.layers[layer])
        g_lstm.update({f"weight_ih_l{layer}": dw_ih, f"weight_hh_l{layer}": dw_hh,
                       f"bias_ih_l{layer}": db_ih, f"bias_hh_l{layer}": db_hh})  # fmt: skip
    # (1)
    _, dembed = embedding_backward(dh, cache.embed)
    return {"embed": dembed, "lstm": {name: g_lstm[name] for name in params["lstm"]}, "head": {"W": dW, "b": db}}


def lstm_lm_loss(params: dict, batch, *, backend: str = "numpy"):
    """Mean next-token cross-entropy over the positions of ``batch.loss_mask`` (a
    ``ref.tasks.Batch``) or over every position (an ``(inputs, targets)`` pair). Returns
    ``(loss, cache)``."""
    inputs, targets = _unpack_batch(batch)
    logits, c_model = lstm_lm_forward(params, inputs, backend=backend)
    loss, c_loss = cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    return loss, (c_model, c_loss)


def lstm_lm_loss_and_grads(params: dict, batch, rng: np.random.Generator | None = None, *, backend: str = "numpy"):
    """``(loss, grads)`` for ``ref.train.train``; ``rng`` is unused (the model has no dropout)."""
    loss, (c_model, c_loss) = lstm_lm_loss(params, batch, backend=backend)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), lstm_lm_backward(params, c_model, dlogits)
