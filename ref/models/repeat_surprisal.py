"""Surprisal and *repeat surprisal*, the retrieval measure of Armeni, Honey and Linzen,
*Characterizing Verbatim Short-Term Memory in Neural Language Models* (arXiv 2210.13569, section 2).

The surprisal of token x_t under a language model is its negative log-probability given the
tokens before it, read off the logits the model produced one position earlier::

    s_t = -log p(x_t | x_<t) = -log softmax(z_{t-1})[x_t]                                      (1)

(in nats here; the paper uses bits, and the ratio below does not depend on the base). A trial of
the paradigm presents list1, intervening text, then list2; with s̄(L) the mean surprisal over the
nouns of list L, the trial's **repeat surprisal** is the second list's mean surprisal as a
percentage of the first's::

    repeat surprisal = 100 · s̄(list2) / s̄(list1)                                               (2)

100 % means the model predicts the second list no better than the first (nothing retrieved);
near 0 % means it predicts the second list almost perfectly (verbatim retrieval). The paper
reports the median of (2) over trials with its confidence interval, per condition, list length
and intervening-text length.

The measure needs only logits, so any model fits: :func:`paradigm_repeat_surprisal` takes a
function ``tokens (B, T) -> logits (B, T, vocab)``. Two reference "models" bound what a trained
one can do, and are what the tests check (2) on:

- :func:`uniform_logits`: no memory and no knowledge, every token equally likely: repeat surprisal
  exactly 100 in every condition;
- :func:`induction_logits`: the induction rule, a perfect verbatim copier: predict the token that
  followed the previous occurrence of the current token. It drives the repeated list to ~0 %,
  but on a permuted list it predicts the old successor, which is now wrong.

The language models trained in ``lessons/27_verbatim_stm.py`` are ``ref.models.transformer`` and
``ref.models.lstm_lm``; :func:`lm_logits_fn` wraps either in the function the measure takes.
Nothing here is trained, so there is no backward pass.
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks

__all__ = [
    "token_surprisal",
    "repeat_surprisal",
    "paradigm_repeat_surprisal",
    "uniform_logits",
    "induction_logits",
    "lm_logits_fn",
]


def _check_tokens(tokens, name: str = "tokens", vocab: int | None = None) -> np.ndarray:
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        got = f"{tokens.dtype} array of shape {tokens.shape}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ValueError(f"{name}: expected an integer array (B, T), got {got}")
    if tokens.shape[1] < 2:
        raise ValueError(f"{name}: expected T >= 2 (surprisal needs a preceding position), got T = {tokens.shape[1]}")
    if tokens.min() < 0 or (vocab is not None and tokens.max() >= vocab):
        raise ValueError(f"{name}: expected ids in [0, {vocab}), got values in [{tokens.min()}, {tokens.max()}]")
    return tokens


def token_surprisal(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Equation (1): ``s[b, t] = -log softmax(logits[b, t - 1])[tokens[b, t]]`` (nats), shape
    (B, T), for ``logits`` (B, T, vocab) computed by a causal model on ``tokens`` (B, T).
    ``s[:, 0]`` is NaN: nothing predicts the first token."""
    logits = checks.float_array(logits, "logits", 3, "(B, T, vocab)")
    checks.finite(logits, "logits")
    tokens = _check_tokens(tokens, vocab=logits.shape[2])
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens: expected shape {logits.shape[:2]} (B, T) of the logits, got {tokens.shape}")
    z = logits[:, :-1]  # (B, T - 1, vocab): z_{t-1} predicts x_t
    m = z.max(axis=-1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]  # (B, T - 1): log sum exp
    chosen = np.take_along_axis(z, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, T - 1)
    s = np.full(tokens.shape, np.nan, dtype=logits.dtype)
    s[:, 1:] = log_norm - chosen  # (1)
    return s


def _check_positions(pos, name: str, T: int) -> np.ndarray:
    pos = np.asarray(pos)
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"{name}: expected a non-empty 1-D integer array of positions, got {pos!r}")
    if pos.min() < 1 or pos.max() >= T:
        raise ValueError(f"{name}: expected positions in [1, {T}) (position 0 has no surprisal), got {pos.min()}..{pos.max()}")
    return pos


def repeat_surprisal(surprisal: np.ndarray, list1, list2) -> np.ndarray:
    """Equation (2) for every row of ``surprisal`` (B, T) (from :func:`token_surprisal`):
    ``100 * mean(s[:, list2]) / mean(s[:, list1])``, shape (B,). ``list1``, ``list2``: the
    positions of the two lists' tokens."""
    s = checks.float_array(surprisal, "surprisal", 2, "(B, T)")
    l1 = _check_positions(list1, "list1", s.shape[1])
    l2 = _check_positions(list2, "list2", s.shape[1])
    first, second = s[:, l1].mean(axis=1), s[:, l2].mean(axis=1)  # (B,), (B,)
    if not np.all(np.isfinite(first) & np.isfinite(second)) or np.any(first <= 0):
        raise ValueError("surprisal: expected finite values at the list positions and a positive mean on list1")
    return 100.0 * second / first  # (2)


def paradigm_repeat_surprisal(logits_fn, paradigm, *, batch: int = 64) -> dict:
    """Repeat surprisal (2) of every trial of a ``ref.tasks.verbatim_lists.Paradigm``, per
    condition: ``{condition: (n_trials,)}``. ``logits_fn(tokens (B, T)) -> logits (B, T, vocab)``;
    trials run ``batch`` at a time."""
    if not callable(logits_fn):
        raise ValueError(f"logits_fn: expected a callable tokens (B, T) -> logits (B, T, vocab), got {logits_fn!r}")
    batch = checks.positive_int(batch, "batch")
    out = {}
    for condition, tokens in paradigm.tokens.items():
        tokens = _check_tokens(tokens, f"paradigm.tokens[{condition!r}]")
        values = []
        for i in range(0, tokens.shape[0], batch):
            chunk = tokens[i : i + batch]
            values.append(repeat_surprisal(token_surprisal(logits_fn(chunk), chunk), paradigm.list1, paradigm.list2))
        out[condition] = np.concatenate(values)
    return out


# ------------------------------------------------------------------------------------------------
# reference models


def _check_vocab(vocab_size) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 2:
        raise ValueError(f"vocab_size: expected an integer >= 2, got {vocab_size!r}")
    return int(vocab_size)


def uniform_logits(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """A model with no memory: the same (zero) logits everywhere, (B, T, vocab)."""
    vocab_size = _check_vocab(vocab_size)
    tokens = _check_tokens(tokens, vocab=vocab_size)
    return np.zeros((*tokens.shape, vocab_size))


def induction_logits(tokens: np.ndarray, vocab_size: int, *, strength: float = 20.0) -> np.ndarray:
    """The induction rule as logits (B, T, vocab): at position t, if x_t occurred before (latest at
    j < t), add ``strength`` to the logit of x_{j+1}, the token that followed it; otherwise uniform.
    With a large strength this copies any earlier stretch verbatim."""
    vocab_size = _check_vocab(vocab_size)
    tokens = _check_tokens(tokens, vocab=vocab_size)
    strength = checks.positive_float(strength, "strength")
    B, T = tokens.shape
    logits = np.zeros((B, T, vocab_size))
    for b in range(B):
        last_seen = {}  # token -> latest position
        for t in range(T):
            x = int(tokens[b, t])
            j = last_seen.get(x)
            if j is not None:  # j + 1 <= t: the successor of the previous occurrence is known
                logits[b, t, tokens[b, j + 1]] += strength
            last_seen[x] = t
    return logits


def lm_logits_fn(kind: str, params: dict, *, backend: str = "numba"):
    """``tokens -> logits`` for a trained ``"transformer"`` (``ref.models.transformer``) or
    ``"lstm"`` (``ref.models.lstm_lm``, its recurrence on ``backend``) language model."""
    checks.one_of(kind, "kind", ("transformer", "lstm"))
    if kind == "transformer":
        from ref.models.transformer import transformer_lm_forward

        return lambda tokens: transformer_lm_forward(params, tokens)[0]
    from ref.models.lstm_lm import lstm_lm_forward

    return lambda tokens: lstm_lm_forward(params, tokens, backend=backend)[0]
