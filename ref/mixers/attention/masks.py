"""Attention masks: which keys each query may attend to (True = may attend).

Positions. The keys sit at positions s = 0, ..., S-1 and the queries are the *last* T positions:
query t sits at position

    p = t + (S - T).

With S = T that is p = t. With S > T (decoding: the cache already holds S - T earlier tokens) the
last query is aligned with the last key, as flash-attn does since v2.1 ("bottom-right"). FLA's
``naive_parallel_attn`` instead puts query t at position t ("top-left") unless given
``query_indices``; the two agree when S = T, the only case the golden op accepts.

The kinds of mask, for a query at position p and a key at position s:

    causal          s <= p                               every earlier token and itself
    bidirectional   every s                              an encoder (BERT)
    sliding_window  p - w < s <= p                       the last w tokens, itself included
    chunked         s <= p  and  s // c == p // c        causal inside chunks of c positions (TCNCA)
    prefix_lm       s <= p  or   s < P                   the first P positions see each other
                                                         (bidirectionally); causal after them

or any boolean array of shape (T, S), (B, T, S) or (B, HQ, T, S). The prefix length P may differ
per batch element (an integer array of shape (B,)); chunks start at key position 0.

Decoding. A mask can be computed token by token with a KV cache when no query sees a key that
comes after it: then the keys of query p are all in the cache once token p has been appended.
That holds for causal, sliding_window and chunked, and for prefix_lm after the prefix (inside the
prefix the queries see later prefix keys, so the prefix enters the cache in one piece, a
"prefill"). Bidirectional attention and arbitrary boolean masks cannot be decoded.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ref import checks

KINDS = ("causal", "bidirectional", "sliding_window", "chunked", "prefix_lm")
DECODABLE = ("causal", "sliding_window", "chunked", "prefix_lm")
# which option each kind takes (the others must be left at None)
_OPTION_OF = {"sliding_window": "window", "chunked": "chunk_size", "prefix_lm": "prefix_len"}


@dataclass(frozen=True)
class MaskSpec:
    """A validated mask: a kind and its option, or a user's boolean array ("array")."""

    kind: str
    window: int | None = None
    chunk_size: int | None = None
    prefix_len: np.ndarray | None = None  # (B,) integers in [0, S]
    array: np.ndarray | None = None  # (B|1, HQ|1, T, S) bool, for kind "array"


def make_mask(mask, *, window, prefix_len, chunk_size, B, HQ, T, S, decoding=False) -> MaskSpec:
    """Validate ``mask`` (a kind name or a boolean array) and its option; return a MaskSpec.

    ``decoding=True`` (the recurrent form and the decode step) refuses the masks that cannot be
    decoded token by token. Every error names the argument, what was expected and what was given.
    """
    if isinstance(mask, np.ndarray):
        for value, name in ((window, "window"), (prefix_len, "prefix_len"), (chunk_size, "chunk_size")):
            if value is not None:
                raise ValueError(f"{name}: only used with a mask kind, got {name}={value!r} with a boolean mask array")
        if decoding:
            raise ValueError(
                "mask: decoding (the recurrent form) needs a mask under which no query sees a later key, "
                f"one of {', '.join(map(repr, DECODABLE))}; got a boolean array, which may look ahead"
            )
        return MaskSpec(kind="array", array=_mask_array(mask, B, HQ, T, S))
    if not isinstance(mask, str) or mask not in KINDS:
        raise ValueError(f"mask: expected one of {', '.join(map(repr, KINDS))} or a boolean array, got {mask!r}")
    if decoding and mask not in DECODABLE:
        raise ValueError(
            "mask: decoding (the recurrent form) needs a mask under which no query sees a later key, "
            f"one of {', '.join(map(repr, DECODABLE))}; got {mask!r}"
        )
    given = {"window": window, "chunk_size": chunk_size, "prefix_len": prefix_len}
    for name, value in given.items():
        if value is not None and _OPTION_OF.get(mask) != name:
            raise ValueError(f"{name}: only used with mask={_kind_of(name)!r}, got {name}={value!r} with mask={mask!r}")
    if mask != "bidirectional" and S < T:
        raise ValueError(
            f"k: mask={mask!r} aligns the last query with the last key, so it needs at least as many keys as "
            f"queries; got S = {S} keys for T = {T} queries"
        )
    if mask == "sliding_window":
        return MaskSpec(kind=mask, window=checks.positive_int(window, "window"))
    if mask == "chunked":
        return MaskSpec(kind=mask, chunk_size=checks.positive_int(chunk_size, "chunk_size"))
    if mask == "prefix_lm":
        return MaskSpec(kind=mask, prefix_len=_prefix_len(prefix_len, B, S))
    return MaskSpec(kind=mask)


def _kind_of(option: str) -> str:
    return next(kind for kind, name in _OPTION_OF.items() if name == option)


def _prefix_len(value, B: int, S: int) -> np.ndarray:
    """An integer, or an integer array (B,), each in [0, S]; returned as an int64 array (B,)."""
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"prefix_len: expected an integer or an integer array (B,), got dtype {value.dtype}")
        if value.shape != (B,):
            raise ValueError(
                f"prefix_len: expected an integer or an array of shape (B,) = ({B},), got shape {value.shape}"
            )
        P = value.astype(np.int64)
    elif isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        P = np.full(B, int(value), np.int64)
    else:
        raise ValueError(f"prefix_len: mask='prefix_lm' needs an integer or an integer array (B,), got {value!r}")
    if P.min() < 0 or P.max() > S:
        bad = int(P[np.argmax((P < 0) | (P > S))])
        raise ValueError(f"prefix_len: expected 0 <= prefix_len <= S = {S} (the number of keys), got {bad}")
    return P


def _mask_array(mask: np.ndarray, B: int, HQ: int, T: int, S: int) -> np.ndarray:
    """A boolean (T, S), (B, T, S) or (B, HQ, T, S) array, returned as (B|1, HQ|1, T, S)."""
    if mask.dtype != np.bool_:
        raise ValueError(f"mask: expected a boolean array (True = may attend), got dtype {mask.dtype}")
    shapes = {2: (T, S), 3: (B, T, S), 4: (B, HQ, T, S)}
    if shapes.get(mask.ndim) != mask.shape:
        raise ValueError(
            f"mask: expected a boolean array of shape (T, S) = {(T, S)}, (B, T, S) = {(B, T, S)} "
            f"or (B, HQ, T, S) = {(B, HQ, T, S)}, got {mask.shape}"
        )
    if mask.ndim == 2:
        return mask[None, None]  # (1, 1, T, S)
    if mask.ndim == 3:
        return mask[:, None]  # (B, 1, T, S)
    return mask


def allowed(spec: MaskSpec, q_pos: np.ndarray, k_pos: np.ndarray) -> np.ndarray:
    """True where the query at position ``q_pos[i]`` may attend to the key at ``k_pos[j]``.

    Returns (B|1, 1, len(q_pos), len(k_pos)): the batch axis only for a per-batch prefix length.
    Not for kind "array", whose entries are not a rule of positions (use ``dense``).
    """
    p = np.asarray(q_pos)[:, None]  # (T, 1)
    s = np.asarray(k_pos)[None, :]  # (1, S)
    causal = s <= p  # (T, S)
    if spec.kind == "bidirectional":
        ok = np.ones_like(causal)
    elif spec.kind == "causal":
        ok = causal
    elif spec.kind == "sliding_window":
        ok = causal & (s > p - spec.window)
    elif spec.kind == "chunked":
        ok = causal & (s // spec.chunk_size == p // spec.chunk_size)
    elif spec.kind == "prefix_lm":
        prefix = s[None, None] < spec.prefix_len[:, None, None, None]  # (B, 1, 1, S)
        return causal[None, None] | prefix  # (B, 1, T, S)
    else:
        raise ValueError(f"mask: kind {spec.kind!r} is not a rule of positions")
    return ok[None, None]  # (1, 1, T, S)


def dense(spec: MaskSpec, T: int, S: int) -> np.ndarray:
    """The whole mask for T queries over S keys: (B|1, HQ|1, T, S) bool."""
    if spec.kind == "array":
        return spec.array
    return allowed(spec, np.arange(S - T, S), np.arange(S))


def prefill_length(spec: MaskSpec, T: int, S: int) -> int:
    """How many keys the cache holds before the first decode step of the recurrent form.

    The S - T keys before the first query (the context), and with a prefix-LM mask at least the
    whole prefix: its queries also see later prefix keys, so it cannot be decoded token by token.
    """
    n0 = S - T
    if spec.kind == "prefix_lm":
        n0 = max(n0, int(spec.prefix_len.max()))
    return n0
