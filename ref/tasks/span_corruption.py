"""Span corruption with sentinel tokens and infilling, as CodeGen2 trains and samples a decoder
(Nijkamp, Hayashi, Xiong, Savarese and Zhou, *CodeGen2: Lessons for Training LLMs on Programming and
Natural Languages*, arXiv 2305.02309).

A decoder-only model is trained left to right on two kinds of sequences, mixed about 50/50:

* **causal**: a window of the file as it is, next-token prediction on every token;
* **span corruption**: k disjoint spans of the window are cut out, each replaced in place by a
  sentinel token ``<mask_j>``, and moved to the end after a separator, each between its sentinel
  and an end-of-mask token. For spans s_1 < ... < s_k of x (text between spans a_0 .. a_k)::

      x         = a_0 s_1 a_1 s_2 ... s_k a_k                                                   (1)
      corrupt(x) = a_0 <mask_1> a_1 <mask_2> ... <mask_k> a_k <sep> <mask_1> s_1 <eom> ... <mask_k> s_k <eom>   (2)

  and the model predicts all of (2) left to right, so when it writes s_j it has read the whole
  file around the hole: both its prefix and its suffix.

**Infilling** (CodeGen2's model card): to fill the middle of ``prefix + middle + suffix``, feed::

      prefix <mask_1> suffix <sep> <mask_1>                                                     (3)

and generate until ``<eom>``: the generated tokens are the middle. (The model card also puts an
end-of-text token before ``<sep>``; this vocabulary has none, and (3) is exactly what (2) trains on
for k = 1.)

Vocabulary: data tokens are the ids ``0 .. data_vocab - 1`` (a tokenizer's); the special tokens are
appended after them, so they can never collide with data::

      <sep> = data_vocab,   <eom> = data_vocab + 1,   <mask_j> = data_vocab + 1 + j   (j = 1 .. max_spans)

Functions (B batch, T time, N tokens of one window):

- :class:`SentinelVocab` the special ids; ``vocab_size`` is what the model's embedding needs.
- :func:`sample_spans` k random disjoint spans of a window, uniformly placed (stars and bars).
- :func:`span_corrupt` (2), and :func:`span_uncorrupt` its exact inverse (for checking).
- :func:`mixture_batch` a training batch of (B, T) inputs/targets, each row causal or corrupted;
  with ``prefix_lm=True`` a :class:`PrefixLMBatch` that also carries each row's prefix length.
- :func:`infill_prompt` (3); :func:`infill` greedy infilling through the KV cache, stopping at
  ``<eom>``; :func:`middle_nll` the per-token loss of a known middle under (3) (or, ``format="causal"``,
  given the prefix alone).

**Prefix LM** (CodeGen2's architecture arm). The same data, read by a decoder whose first
``prefix_len[b]`` tokens attend both ways (``ref.models.transformer.prefix_lm_mask``): for a
corrupted row the prefix is the corrupted file up to and including ``<sep>``::

      prefix_len = position of <sep> + 1                                                        (4)

so the body is read as an encoder reads it, and ``<mask_1> s_1 <eom> ...`` stays causal (the model
generates it). The loss then covers only the targets after the prefix: a prefix token sees the next
prefix token, its own target, so a loss there would be copying. A plain (causal) row keeps
``prefix_len = 0``. :func:`infill` and :func:`middle_nll` take ``prefix_lm=True`` to read the prompt
(3) with the same rule: everything up to ``<sep>`` bidirectional.

The span-length and span-count distributions here (uniform, our choice) are not the paper's; the
paper's objective samples its spans over whole files of a large corpus.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.models.transformer import (
    sample_token,
    transformer_lm_decode,
    transformer_lm_forward,
    transformer_lm_prefill,
)
from ref.tasks.synthetic import Batch

__all__ = [
    "SentinelVocab",
    "sample_spans",
    "span_corrupt",
    "span_uncorrupt",
    "corrupted_length",
    "mixture_batch",
    "PrefixLMBatch",
    "infill_prompt",
    "infill",
    "middle_nll",
]

FORMATS = ("infill", "causal")


@dataclass(frozen=True)
class SentinelVocab:
    """The special tokens appended after ``data_vocab`` data ids: ``<sep>``, ``<eom>`` and
    ``<mask_1> .. <mask_{max_spans}>``."""

    data_vocab: int
    max_spans: int = 1

    def __post_init__(self):
        checks.positive_int(self.data_vocab, "data_vocab")
        checks.positive_int(self.max_spans, "max_spans")

    @property
    def sep(self) -> int:
        return self.data_vocab

    @property
    def eom(self) -> int:
        return self.data_vocab + 1

    def mask(self, j: int) -> int:
        """The id of ``<mask_j>``, j = 1 .. max_spans."""
        if isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 1 <= j <= self.max_spans:
            raise ValueError(f"j: expected an integer in [1, max_spans = {self.max_spans}], got {j!r}")
        return self.data_vocab + 1 + int(j)

    @property
    def vocab_size(self) -> int:
        """Data ids plus <sep>, <eom> and the max_spans sentinels: the model's vocabulary size."""
        return self.data_vocab + 2 + self.max_spans

    def name(self, token: int) -> str:
        """A readable name of a special id ("<sep>", "<eom>", "<mask_2>")."""
        if token == self.sep:
            return "<sep>"
        if token == self.eom:
            return "<eom>"
        if self.eom < token < self.vocab_size:
            return f"<mask_{token - self.eom}>"
        raise ValueError(f"token: expected a special id in [{self.sep}, {self.vocab_size}), got {token!r}")


def _check_vocab(vocab) -> SentinelVocab:
    if not isinstance(vocab, SentinelVocab):
        raise ValueError(f"vocab: expected a SentinelVocab, got {type(vocab).__name__}")
    return vocab


def _check_prefix_lm(prefix_lm) -> bool:
    if not isinstance(prefix_lm, bool):
        raise ValueError(f"prefix_lm: expected True or False, got {prefix_lm!r}")
    return prefix_lm


def _data_tokens(tokens, vocab: SentinelVocab, name: str, ndim: int = 1) -> np.ndarray:
    """Integer ids of ``ndim`` axes, every one a data id in [0, data_vocab) (never a special token)."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu" or arr.ndim != ndim:
        dims = "(N,)" if ndim == 1 else "(B, N)"
        raise ValueError(f"{name}: expected an integer array {dims}, got dtype {arr.dtype} shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab.data_vocab):
        raise ValueError(
            f"{name}: expected data ids in [0, data_vocab = {vocab.data_vocab}) (the special tokens come after), "
            f"got values in [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.int64)


def _check_spans(spans, n: int, vocab: SentinelVocab) -> list[tuple[int, int]]:
    """Spans as (start, end) pairs, 0 <= start < end <= n, sorted and disjoint, at most max_spans."""
    try:
        pairs = [(int(s), int(e)) for s, e in spans]
    except (TypeError, ValueError):
        raise ValueError(f"spans: expected a sequence of (start, end) integer pairs, got {spans!r:.80}") from None
    if not 1 <= len(pairs) <= vocab.max_spans:
        raise ValueError(f"spans: expected 1 to max_spans = {vocab.max_spans} spans, got {len(pairs)}")
    prev_end = 0
    for i, (s, e) in enumerate(pairs):
        if not 0 <= s < e <= n:
            raise ValueError(f"spans: expected 0 <= start < end <= N = {n} (non-empty), got span {i} = {(s, e)}")
        if s < prev_end:
            raise ValueError(
                f"spans: expected sorted, disjoint spans, got span {i} = {(s, e)} starting before {prev_end}"
            )
        prev_end = e
    return pairs


def corrupted_length(n: int, n_spans: int) -> int:
    """The length of (2) for a window of n tokens and k spans: n + 3k + 1 (k sentinels in place,
    <sep>, and a sentinel and an <eom> around each moved span)."""
    return n + 3 * n_spans + 1


def sample_spans(rng: np.random.Generator, n: int, n_spans: int, max_span_len: int) -> list[tuple[int, int]]:
    """``n_spans`` disjoint spans of a window of ``n`` tokens, each of a length drawn uniformly in
    [1, max_span_len] (shrunk when the window is short), placed uniformly among the arrangements
    (the n - L free tokens split into k + 1 gaps by stars and bars). Returns sorted (start, end)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    n = checks.positive_int(n, "n")
    k = checks.positive_int(n_spans, "n_spans")
    max_len = checks.positive_int(max_span_len, "max_span_len")
    if k > n:
        raise ValueError(f"n_spans: expected at most n = {n} spans (each holds a token), got {k}")
    lengths = rng.integers(1, max_len + 1, size=k)  # (k,)
    while lengths.sum() > n:  # too long for the window: shorten the longest span
        lengths[np.argmax(lengths)] -= 1
    free = n - int(lengths.sum())
    # stars and bars: k bars among free + k slots; the stars before bar j form gap j
    bars = np.sort(rng.choice(free + k, size=k, replace=False))  # (k,)
    gaps = bars - np.arange(k)  # (k,) free tokens before each span, cumulative
    spans, consumed = [], 0
    for j in range(k):
        start = int(gaps[j]) + consumed
        spans.append((start, start + int(lengths[j])))
        consumed += int(lengths[j])
    return spans


def span_corrupt(tokens, spans, vocab: SentinelVocab) -> np.ndarray:
    """(2): the window ``tokens`` (N,) of data ids with each span replaced by its sentinel, then
    <sep> and, per span, ``<mask_j> span <eom>``. Returns int64 (N + 3k + 1,)."""
    vocab = _check_vocab(vocab)
    x = _data_tokens(tokens, vocab, "tokens")
    pairs = _check_spans(spans, len(x), vocab)
    body, tail, prev = [], [np.array([vocab.sep])], 0
    for j, (s, e) in enumerate(pairs, start=1):
        body += [x[prev:s], np.array([vocab.mask(j)])]  # a_{j-1} <mask_j>
        tail += [np.array([vocab.mask(j)]), x[s:e], np.array([vocab.eom])]  # <mask_j> s_j <eom>
        prev = e
    body.append(x[prev:])  # a_k
    return np.concatenate(body + tail).astype(np.int64)


def span_uncorrupt(corrupted, vocab: SentinelVocab) -> np.ndarray:
    """The exact inverse of :func:`span_corrupt`: (2) back to (1). Raises ValueError on a sequence
    that is not of the form (2) (sentinels out of order, missing <sep> or <eom>, stray ids)."""
    vocab = _check_vocab(vocab)
    seq = np.asarray(corrupted)
    if seq.dtype.kind not in "iu" or seq.ndim != 1:
        raise ValueError(f"corrupted: expected an integer array (M,), got dtype {seq.dtype} shape {seq.shape}")
    if seq.size and (seq.min() < 0 or seq.max() >= vocab.vocab_size):
        raise ValueError(
            f"corrupted: expected ids in [0, vocab_size = {vocab.vocab_size}), got [{seq.min()}, {seq.max()}]"
        )
    seps = np.flatnonzero(seq == vocab.sep)
    if len(seps) != 1:
        raise ValueError(f"corrupted: expected exactly one <sep> (id {vocab.sep}), got {len(seps)}")
    body, tail = seq[: seps[0]], seq[seps[0] + 1 :]
    holes = np.flatnonzero(body >= vocab.sep)  # positions of the sentinels in the body
    k = len(holes)
    if k == 0 or np.any(body[holes] != vocab.eom + 1 + np.arange(k)) or np.any(body == vocab.eom):
        raise ValueError(f"corrupted: expected <mask_1> .. <mask_k> in order before <sep>, got {body[holes].tolist()}")
    # the tail: <mask_j> s_j <eom> for j = 1 .. k, nothing else
    spans, pos = [], 0
    for j in range(1, k + 1):
        if pos >= len(tail) or tail[pos] != vocab.mask(j):
            raise ValueError(f"corrupted: expected <mask_{j}> at position {seps[0] + 1 + pos} after <sep>")
        ends = np.flatnonzero(tail[pos + 1 :] == vocab.eom)
        if len(ends) == 0:
            raise ValueError(f"corrupted: span {j} has no <eom> (id {vocab.eom})")
        span = tail[pos + 1 : pos + 1 + ends[0]]
        if len(span) == 0 or span.max() >= vocab.data_vocab:
            raise ValueError(f"corrupted: span {j} must be a non-empty run of data ids, got {span.tolist()}")
        spans.append(span)
        pos += ends[0] + 2
    if pos != len(tail):
        raise ValueError(f"corrupted: {len(tail) - pos} unexpected ids after the last <eom>")
    pieces, prev = [], 0
    for j, h in enumerate(holes):
        pieces += [body[prev:h], spans[j]]
        prev = h + 1
    pieces.append(body[prev:])
    return np.concatenate(pieces).astype(np.int64)


@dataclass(frozen=True)
class PrefixLMBatch(Batch):
    """A :class:`ref.tasks.Batch` for a prefix LM: ``prefix_len`` (B,) int64, the number of leading
    tokens of each row that attend both ways (``transformer_lm_loss_and_grads`` reads it)."""

    prefix_len: np.ndarray  # (B,) int64

    def __post_init__(self):
        super().__post_init__()
        P = self.prefix_len
        B, T = self.inputs.shape
        if not isinstance(P, np.ndarray) or P.dtype.kind not in "iu" or P.shape != (B,):
            got = f"dtype {P.dtype} shape {P.shape}" if isinstance(P, np.ndarray) else type(P).__name__
            raise ValueError(f"prefix_len: expected an integer array (B,) = ({B},), got {got}")
        if np.any(P < 0) or np.any(P > T):
            raise ValueError(f"prefix_len: expected 0 <= prefix_len <= T = {T}, got {P.tolist()}")


def mixture_batch(
    rng: np.random.Generator,
    tokens,
    batch_size: int,
    seq_len: int,
    vocab: SentinelVocab,
    *,
    span_fraction: float = 0.5,
    max_span_len: int = 8,
    prefix_lm: bool = False,
) -> Batch:
    """A batch of the CodeGen2 mixture: each row is, with probability ``span_fraction``, a span-
    corrupted window (2) with 1 .. max_spans spans (uniform), else a plain causal window. Every row
    is T + 1 tokens before the shift (a corrupted row reads a window of T - 3k data tokens, so that
    (2) has T + 1), and ``inputs = seq[:, :-1]``, ``targets = seq[:, 1:]``. The loss covers every
    target except a body sentinel (where a hole is placed is random, not something to learn).

    ``prefix_lm=True``: the same rows (the same draws from ``rng``) as a :class:`PrefixLMBatch` for a
    prefix LM (4): a corrupted row gets ``prefix_len`` = position of ``<sep>`` + 1 and a loss only
    on the targets after its prefix (``<mask_1> s_1 <eom> ...``); a causal row gets
    ``prefix_len = 0`` and keeps the loss on every target."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    vocab = _check_vocab(vocab)
    arr = _data_tokens(tokens, vocab, "tokens")
    B = checks.positive_int(batch_size, "batch_size")
    T = checks.positive_int(seq_len, "seq_len")
    if isinstance(span_fraction, bool) or not isinstance(span_fraction, numbers.Real) or not 0 <= span_fraction <= 1:
        raise ValueError(f"span_fraction: expected a number in [0, 1], got {span_fraction!r}")
    max_span_len = checks.positive_int(max_span_len, "max_span_len")
    prefix_lm = _check_prefix_lm(prefix_lm)
    if T - 3 * vocab.max_spans < 2:
        raise ValueError(f"seq_len: expected at least 3 * max_spans + 2 = {3 * vocab.max_spans + 2}, got {T}")
    if len(arr) < T + 1:
        raise ValueError(f"tokens: expected at least seq_len + 1 = {T + 1} tokens, got {len(arr)}")
    rows = np.empty((B, T + 1), np.int64)
    loss_mask = np.ones((B, T), bool)
    prefix_len = np.zeros(B, np.int64)  # (B,) 0: a causal row
    for b in range(B):
        if rng.random() < span_fraction:
            k = int(rng.integers(1, vocab.max_spans + 1))
            n = T - 3 * k  # corrupted_length(n, k) = T + 1
            start = int(rng.integers(0, len(arr) - n + 1))
            window = arr[start : start + n]
            rows[b] = span_corrupt(window, sample_spans(rng, n, k, max_span_len), vocab)
            sep_at = int(np.flatnonzero(rows[b] == vocab.sep)[0])
            body_sentinel = rows[b, 1:] > vocab.eom  # targets that are sentinels ...
            body_sentinel[sep_at:] = False  # ... before <sep> only
            loss_mask[b] = ~body_sentinel
            if prefix_lm:  # (4): the body and <sep> attend both ways; the loss after them only
                prefix_len[b] = sep_at + 1
                loss_mask[b] = np.arange(T) >= sep_at  # target t is token t + 1: first <mask_1>
        else:
            start = int(rng.integers(0, len(arr) - T))
            rows[b] = arr[start : start + T + 1]
    if prefix_lm:
        return PrefixLMBatch(rows[:, :-1], rows[:, 1:], loss_mask, prefix_len)
    return Batch(rows[:, :-1], rows[:, 1:], loss_mask)


def _prefix_suffix(prefix, suffix, vocab):
    """Prefixes and suffixes as (B, P) and (B, S) data ids (1-D inputs are one row)."""
    p, s = np.asarray(prefix), np.asarray(suffix)
    if p.ndim != s.ndim or p.ndim not in (1, 2):
        raise ValueError(
            f"prefix, suffix: expected both (P,) and (S,) or both (B, P) and (B, S), got shapes {p.shape} and {s.shape}"
        )
    ndim = p.ndim
    p = _data_tokens(p, vocab, "prefix", ndim)
    s = _data_tokens(s, vocab, "suffix", ndim)
    if ndim == 1:  # one row
        p, s = p[None], s[None]  # (1, P), (1, S)
    if p.shape[0] != s.shape[0]:
        raise ValueError(f"suffix: expected the batch B = {p.shape[0]} of prefix, got {s.shape[0]}")
    return p, s


def infill_prompt(prefix, suffix, vocab: SentinelVocab) -> np.ndarray:
    """(3): ``prefix <mask_1> suffix <sep> <mask_1>``, int64 (P + S + 3,) or (B, P + S + 3,)."""
    vocab = _check_vocab(vocab)
    one = np.asarray(prefix).ndim == 1
    p, s = _prefix_suffix(prefix, suffix, vocab)
    B = p.shape[0]
    m1 = np.full((B, 1), vocab.mask(1))
    out = np.concatenate([p, m1, s, np.full((B, 1), vocab.sep), m1], axis=1)  # (B, P + S + 3)
    return out[0] if one else out


def _check_params_vocab(params, vocab):
    V = np.shape(params.get("embed")) if isinstance(params, dict) else None
    if V is None or len(V) != 2 or V[0] < vocab.vocab_size:
        raise ValueError(
            f"params: expected a transformer LM with a vocabulary of at least vocab.vocab_size = {vocab.vocab_size} "
            f"(params['embed'] rows), got embed shape {V}"
        )


def infill(
    params: dict, prefix, suffix, vocab: SentinelVocab, max_new_tokens: int, *, prefix_lm: bool = False
) -> list[np.ndarray]:
    """Greedy infilling: prefill the prompt (3) into the KV caches, then decode one token at a time
    (``transformer_lm_decode``) until every row has produced ``<eom>`` or ``max_new_tokens``
    tokens. Returns, per row, the tokens before the first ``<eom>`` (all of them when none came:
    check ``len`` against ``max_new_tokens``); these may contain special ids when the model emits
    them, which a caller can treat as a failed infill.

    ``prefix_lm=True``: a model trained as a prefix LM (4) reads ``prefix <mask_1> suffix <sep>``
    both ways (prefilled with ``prefix_len`` = P + S + 2); the final ``<mask_1>`` and every
    generated token attend causally, as in training."""
    vocab = _check_vocab(vocab)
    _check_params_vocab(params, vocab)
    n_new = checks.positive_int(max_new_tokens, "max_new_tokens")
    prefix_lm = _check_prefix_lm(prefix_lm)
    prompt = infill_prompt(prefix, suffix, vocab)
    prompt = prompt.reshape(-1, prompt.shape[-1])  # (B, P + S + 3)
    B = prompt.shape[0]
    through_sep = prompt.shape[1] - 1 if prefix_lm else None  # (4): up to and including <sep>
    logits, caches = transformer_lm_prefill(params, prompt, prefix_len=through_sep)  # (B, T0, vocab)
    next_logits = logits[:, -1]  # (B, vocab)
    out = np.empty((B, n_new), np.int64)
    done = np.zeros(B, bool)
    n = 0
    for i in range(n_new):
        token = sample_token(next_logits, temperature=0)  # (B,) greedy
        out[:, i] = token
        n = i + 1
        done |= token == vocab.eom
        if done.all() or n == n_new:
            break
        logits, caches = transformer_lm_decode(params, token[:, None], caches)  # (B, 1, vocab)
        next_logits = logits[:, 0]
    result = []
    for row in out[:, :n]:
        stop = np.flatnonzero(row == vocab.eom)
        result.append(row[: stop[0]] if len(stop) else row)
    return result


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def middle_nll(
    params: dict,
    prefix,
    middle,
    suffix,
    vocab: SentinelVocab,
    format: str = "infill",
    *,
    include_eom: bool = True,
    prefix_lm: bool = False,
) -> np.ndarray:
    """The mean negative log-likelihood (nats per token) of the known ``middle`` of each row:

    - ``format="infill"``: of ``middle <eom>`` after the prompt (3), which has read the suffix
      (``include_eom=False``: of the middle's tokens only, leaving out the cost of knowing where
      the middle ends);
    - ``format="causal"``: of ``middle`` after the prefix alone (plain left to right: what a
      model without infilling can do; the suffix is not used).

    ``prefix_lm=True``: read as a model trained as a prefix LM (4) reads, the infill prompt up to
    and including ``<sep>`` both ways; a plain left-to-right sequence (``format="causal"``) is read
    causally either way, as the mixture's causal rows were trained (``prefix_len = 0``).

    prefix (B, P) or (P,), middle (B, M) or (M,), suffix like prefix. Returns (B,) float64."""
    vocab = _check_vocab(vocab)
    _check_params_vocab(params, vocab)
    checks.one_of(format, "format", FORMATS)
    prefix_lm = _check_prefix_lm(prefix_lm)
    if not isinstance(include_eom, bool):
        raise ValueError(f"include_eom: expected True or False, got {include_eom!r}")
    p, s = _prefix_suffix(prefix, suffix, vocab)
    m = np.asarray(middle)
    if m.ndim != np.asarray(prefix).ndim:
        raise ValueError(f"middle: expected {np.asarray(prefix).ndim} axes like prefix, got shape {m.shape}")
    m = _data_tokens(m, vocab, "middle", m.ndim)
    m = m[None] if m.ndim == 1 else m  # (B, M)
    if m.shape[0] != p.shape[0] or m.shape[1] == 0:
        raise ValueError(f"middle: expected (B, M) with B = {p.shape[0]} and M >= 1, got {m.shape}")
    B, M = m.shape
    if format == "causal" and p.shape[1] == 0:
        raise ValueError("prefix: format='causal' needs a non-empty prefix (the model reads it before the middle)")
    if format == "infill":
        context = infill_prompt(p, s, vocab)  # (B, P + S + 3)
        target = np.concatenate([m, np.full((B, 1), vocab.eom)], axis=1)  # (B, M + 1)
    else:
        context, target = p, m
    seq = np.concatenate([context, target[:, :-1]], axis=1)  # the model reads all but the last target
    C = context.shape[1]
    through_sep = C - 1 if prefix_lm and format == "infill" else None  # (4): up to and including <sep>
    logits, _ = transformer_lm_forward(params, seq, prefix_len=through_sep)  # (B, C + M', vocab)
    logp = _log_softmax(logits[:, C - 1 :].astype(np.float64))  # (B, len(target), vocab)
    picked = np.take_along_axis(logp, target[:, :, None], axis=2)[..., 0]  # (B, len(target))
    if format == "infill" and not include_eom:
        picked = picked[:, :M]  # the middle's tokens, not the <eom> after them
    return -picked.mean(axis=1)
