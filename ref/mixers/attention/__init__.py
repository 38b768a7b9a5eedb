"""Softmax attention (Vaswani et al., 2017) with every mask, GQA/MQA, and KV-cache decoding.

    o_t = sum_{s: M_ts} softmax_s(scale * q_t . k_s) v_s

Layout as flash-linear-attention: q (B, T, HQ, K); k (B, S, H, K); v (B, S, H, V); o (B, T, HQ, V).
H divides HQ: multi-head (H = HQ), grouped-query (GQA) or multi-query (MQA, H = 1) attention;
query head h reads key/value head h // (HQ / H). scale defaults to K^-0.5. The mask M is a kind
("causal", "bidirectional", "sliding_window", "chunked", "prefix_lm") or a boolean array; with
S != T the last query is aligned with the last key (``masks``). A fully masked row gives o = 0
and zero gradients.

* ``attention_parallel``: all rows at once, O(T S) memory (training, prefill); with
  ``backend="numba"`` or ``"cuda"`` the FlashAttention-style tiled kernels of ``numba_kernels``
  (online softmax, O(T) memory, fully masked tiles skipped), the backward on the same backend.
* ``attention_recurrent``: T decode steps over a growing KV cache (inference), for the masks
  under which no query sees a later key.
* ``attention_decode_step`` with ``KVCache``: the public single step of decoding.

Both forms return ``o, cache``; ``*_backward(do, cache)`` returns ``dq, dk, dv`` (dk and dv
summed over the query heads of each group). The cache keeps the log-sum-exp of every row,
``cache.lse`` (B, T, HQ), which FlashAttention-style kernels store for their backward.
"""

from ref.mixers.attention.decode import KVCache, attention_decode_step
from ref.mixers.attention.masks import DECODABLE, KINDS
from ref.mixers.attention.parallel import attention_parallel, attention_parallel_backward
from ref.mixers.attention.recurrent import attention_recurrent, attention_recurrent_backward

FORMS = {
    "recurrent": (attention_recurrent, attention_recurrent_backward),
    "parallel": (attention_parallel, attention_parallel_backward),
}

__all__ = [
    "FORMS",
    "KINDS",
    "DECODABLE",
    "KVCache",
    "attention_decode_step",
    "attention_parallel",
    "attention_parallel_backward",
    "attention_recurrent",
    "attention_recurrent_backward",
]
