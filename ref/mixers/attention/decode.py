"""Decoding with a KV cache: attention one token at a time, the recurrent form's single step.

A decoder generates token p after tokens 0 .. p-1. Its keys and values never change once
computed, so they are kept in a *KV cache* and each step only appends the new token's k_p, v_p
and attends from q_p over the cache:

    cache <- cache + (k_p, v_p)                                          (1)
    s_s   = scale * q_p . k_s          for the cached s = 0 .. p         (2)
    o_p   = sum_{s: M_ps} softmax_s(s_s) v_s                             (3)

with M_ps the mask's rule (``masks.allowed``). This is the recurrent form of softmax attention:
its "state" is the cache, which grows by one token per step (O(p) work per step, O(S) memory),
where linear attention keeps a fixed (K, V) matrix.

``KVCache`` preallocates (B, S_max, H, K) and (B, S_max, H, V) arrays and fills them in place,
as inference engines do (static caches): a step costs O(1) copying instead of re-allocating the
whole cache. ``attention_decode_step`` therefore *updates the cache it is given* and returns it.
A sliding window only ever reads the last w entries (a ring buffer of w slots would do); this
reference keeps the whole history and lets the mask pick.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ref import checks
from ref.mixers.attention._inputs import check_scale, repeat_kv
from ref.mixers.attention.masks import allowed, make_mask


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far; positions 0 .. length-1 of the arrays are filled.

    k (B, S_max, H, K) and v (B, S_max, H, V) are preallocated; ``append`` writes into them in
    place. Build an empty one with ``KVCache.empty(B, S_max, H, K, V)``.
    """

    k: np.ndarray  # (B, S_max, H, K)
    v: np.ndarray  # (B, S_max, H, V)
    length: int = 0

    def __post_init__(self):
        checks.float_array(self.k, "kv_cache.k", ndim=4, dims="(B, S_max, H, K)")
        checks.float_array(self.v, "kv_cache.v", ndim=4, dims="(B, S_max, H, V)")
        checks.same_dtype(self.v, "kv_cache.v", self.k.dtype, "the dtype of kv_cache.k")
        if self.v.shape[:3] != self.k.shape[:3]:
            raise ValueError(
                f"kv_cache.v: expected shape (B, S_max, H, V) with (B, S_max, H) = {self.k.shape[:3]} "
                f"(from kv_cache.k), got {self.v.shape}"
            )
        length = self.length
        if isinstance(length, bool) or not isinstance(length, numbers.Integral) or not 0 <= length <= self.max_len:
            raise ValueError(f"kv_cache.length: expected an integer in [0, S_max = {self.max_len}], got {length!r}")
        self.length = int(length)

    @classmethod
    def empty(cls, batch: int, max_len: int, heads: int, key_dim: int, value_dim: int, dtype=np.float64) -> KVCache:
        """A cache for up to ``max_len`` tokens, holding none yet."""
        B, S_max = checks.positive_int(batch, "batch"), checks.positive_int(max_len, "max_len")
        H, K, V = (
            checks.positive_int(x, n) for x, n in ((heads, "heads"), (key_dim, "key_dim"), (value_dim, "value_dim"))
        )
        return cls(k=np.zeros((B, S_max, H, K), dtype), v=np.zeros((B, S_max, H, V), dtype), length=0)

    @property
    def max_len(self) -> int:
        return self.k.shape[1]

    @property
    def keys(self) -> np.ndarray:
        """The cached keys, a view (B, length, H, K)."""
        return self.k[:, : self.length]

    @property
    def values(self) -> np.ndarray:
        """The cached values, a view (B, length, H, V)."""
        return self.v[:, : self.length]

    def append(self, k_new: np.ndarray, v_new: np.ndarray) -> KVCache:
        """Write n tokens, k_new (B, n, H, K) and v_new (B, n, H, V), after the cached ones; returns self.

        Growing beyond S_max is a ValueError (the cache is left unchanged).
        """
        B, S_max, H, K = self.k.shape
        k_new = checks.float_array(k_new, "k_new", ndim=4, dims="(B, n, H, K)")
        n = k_new.shape[1]
        checks.same_shape(k_new, "k_new", (B, n, H, K), "(B, n, H, K)", "from kv_cache.k")
        checks.same_dtype(k_new, "k_new", self.k.dtype, "the dtype of kv_cache.k")
        v_new = checks.float_array(v_new, "v_new", ndim=4, dims="(B, n, H, V)")
        checks.same_shape(v_new, "v_new", (B, n, H, self.v.shape[3]), "(B, n, H, V)", "from kv_cache.v and k_new")
        checks.same_dtype(v_new, "v_new", self.k.dtype, "the dtype of kv_cache.k")
        if self.length + n > S_max:
            raise ValueError(
                f"kv_cache: cannot append {n} token(s) to a cache holding {self.length} of at most S_max = {S_max}; "
                "allocate a larger cache (KVCache.empty(..., max_len=...))"
            )
        self.k[:, self.length : self.length + n] = k_new
        self.v[:, self.length : self.length + n] = v_new
        self.length += n
        return self


def attend(q_t, keys, values, M, scale):
    """One query per head against the cached keys: (2)-(3) with the stable softmax.

    q_t (B, HQ, K); keys (B, n, H, K); values (B, n, H, V); M (B|1, 1, n) True = may attend.
    Returns o_t (B, HQ, V) (0 for a fully masked row) and lse_t (B, HQ) (-inf for one).
    """
    G = q_t.shape[1] // keys.shape[2]
    s = scale * np.einsum("bhk,bnhk->bhn", q_t, repeat_kv(keys, G))  # (2): (B, HQ, n)
    m = np.where(M, s, -np.inf).max(axis=-1, keepdims=True)  # row max over the allowed keys
    m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row: any finite m will do
    e = np.exp(np.where(M, s - m, -np.inf))  # (B, HQ, n)
    z = e.sum(axis=-1, keepdims=True)  # the normaliser: (B, HQ, 1)
    empty = z == 0
    z_safe = np.where(empty, 1.0, z)
    o_t = np.einsum("bhn,bnhv->bhv", e, repeat_kv(values, G)) / z_safe  # (3): (B, HQ, V)
    lse_t = np.where(empty, -np.inf, m + np.log(z_safe))[..., 0]  # (B, HQ)
    return o_t, lse_t


def attention_decode_step(
    q_t,
    k_t,
    v_t,
    kv_cache: KVCache,
    *,
    position,
    mask="causal",
    scale=None,
    window=None,
    prefix_len=None,
    chunk_size=None,
):
    """One decoding step: append (k_t, v_t) to ``kv_cache`` in place, attend from q_t over it.

    q_t (B, HQ, K), k_t (B, H, K), v_t (B, H, V): one token (no time axis). ``position`` is the
    new token's position and must equal ``kv_cache.length`` (the tokens before it are cached).
    ``mask`` is one of the decodable kinds, "causal", "sliding_window" (with ``window``),
    "chunked" (with ``chunk_size``) or "prefix_lm" (with ``prefix_len``, and only once the prefix
    is cached: position >= prefix_len - 1); options and scale as in ``attention_parallel``.
    Returns ``o_t`` (B, HQ, V) and the (updated) cache. Nothing is changed when a check fails.
    """
    if not isinstance(kv_cache, KVCache):
        raise ValueError(f"kv_cache: expected a KVCache, got {type(kv_cache).__name__}")
    B, S_max, H, K = kv_cache.k.shape
    V = kv_cache.v.shape[3]
    dtype = kv_cache.k.dtype
    q_t = checks.float_array(q_t, "q_t", ndim=3, dims="(B, HQ, K)")
    HQ = q_t.shape[1]
    if q_t.shape[0] != B or q_t.shape[2] != K:
        raise ValueError(f"q_t: expected shape (B, HQ, K) with B = {B} and K = {K} (from kv_cache), got {q_t.shape}")
    if HQ % H:
        raise ValueError(
            f"q_t: expected a number of query heads HQ that is a multiple of H = {H} (the heads of kv_cache), "
            f"got HQ = {HQ}"
        )
    k_t = checks.float_array(k_t, "k_t", ndim=3, dims="(B, H, K)")
    checks.same_shape(k_t, "k_t", (B, H, K), "(B, H, K)", "from kv_cache")
    v_t = checks.float_array(v_t, "v_t", ndim=3, dims="(B, H, V)")
    checks.same_shape(v_t, "v_t", (B, H, V), "(B, H, V)", "from kv_cache")
    for x, name in ((q_t, "q_t"), (k_t, "k_t"), (v_t, "v_t")):
        checks.same_dtype(x, name, dtype, "the dtype of kv_cache")
        checks.finite(x, name)
    if isinstance(position, bool) or not isinstance(position, numbers.Integral) or position != kv_cache.length:
        raise ValueError(
            f"position: expected the next free slot of the cache, kv_cache.length = {kv_cache.length}, got {position!r}"
        )
    p = int(position)
    spec = make_mask(
        mask, window=window, prefix_len=prefix_len, chunk_size=chunk_size, B=B, HQ=HQ, T=1, S=S_max, decoding=True
    )
    if spec.kind == "prefix_lm" and spec.prefix_len.max() > p + 1:
        raise ValueError(
            f"position: {p} lies inside the prefix (prefix_len = {int(spec.prefix_len.max())}), whose queries also "
            "see later prefix keys; append the whole prefix first (kv_cache.append) and compute its outputs with "
            "attention_parallel"
        )
    scale = check_scale(scale, K)

    kv_cache.append(k_t[:, None], v_t[:, None])  # (1): (B, 1, H, K), (B, 1, H, V)
    M = allowed(spec, np.array([p]), np.arange(p + 1))[:, :, 0]  # the rule for query p: (B|1, 1, p + 1)
    o_t, _ = attend(q_t, kv_cache.keys, kv_cache.values, M, scale)
    return o_t, kv_cache
