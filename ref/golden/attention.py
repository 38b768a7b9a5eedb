"""Golden op ``attention``: softmax attention in the conventions of FLA's ``naive_parallel_attn``.

fla/ops/attn/naive.py: ``naive_parallel_attn(q, k, v, scale=None, window_size=None, causal=True)``
with q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V] (GQA: query head h reads key/value head
h // (HQ / H)), scale K^-0.5 by default; causal = false is bidirectional attention, and
``window_size`` w (causal only) lets query t see keys t - w + 1 .. t. Output o [B, T, HQ, V].
FLA also returns the row max of the scores (``max_logits``); this op returns o only.

Queries and keys must have the same length T: with different lengths FLA aligns query t with key
t (top-left) while ``ref.mixers.attention`` aligns the last query with the last key.
Computed by ``ref.mixers.attention.attention_parallel`` in float64.
"""

import numpy as np

from ref import checks
from ref.golden.cases import Case, option
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.attention import attention_parallel, attention_parallel_backward


def _forward(inputs, options):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    if q.ndim == 4 and k.ndim == 4 and k.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"k: expected shape (B, T, H, K) with (B, T) = {q.shape[:2]} (from q: the op takes equal query and "
            f"key lengths), got {k.shape}"
        )
    window = options["window_size"]
    if window is not None and not options["causal"]:
        raise ValueError(f"window_size: only used with causal = true, got window_size = {window} with causal = false")
    if window is not None:
        window = checks.positive_int(window, "window_size")
        kind = "sliding_window"
    else:
        kind = "causal" if options["causal"] else "bidirectional"
    o, cache = attention_parallel(q, k, v, mask=kind, scale=options["scale"], window=window)

    def backward(cot):  # called only with a cotangent, and ``do`` is the only one
        dq, dk, dv = attention_parallel_backward(cot["do"], cache)
        return {"dq": dq, "dk": dk, "dv": dv}

    return {"o": o}, backward


def cases(rng):
    """T = 1, 63, 500; K, V not powers of two; GQA and not; causal, bidirectional, sliding window;
    default and explicit scale. (No decays and no state: softmax attention has neither.)"""
    plan = [  # name, B, T, HQ, H, K, V, causal, window_size, scale
        ("T1", 2, 1, 4, 2, 5, 6, True, None, None),
        ("T63_gqa", 2, 63, 6, 3, 12, 10, True, None, None),
        ("T63_bidirectional", 1, 63, 3, 3, 6, 5, False, None, 0.1),
        ("T63_window16", 1, 63, 2, 1, 5, 3, True, 16, None),
        ("T500", 1, 500, 2, 1, 3, 5, True, None, 1.0),
    ]
    out = []
    for name, B, T, HQ, H, K, V, causal, window, scale in plan:
        arrays = {"q": rng.standard_normal((B, T, HQ, K)), "k": rng.standard_normal((B, T, H, K)),
                  "v": rng.standard_normal((B, T, H, V))}
        arrays["causal"] = option(causal)
        if window is not None:
            arrays["window_size"] = option(window)
        if scale is not None:
            arrays["scale"] = option(scale)
        arrays["do"] = rng.standard_normal((B, T, HQ, V))
        s = K**-0.5 if scale is None else scale
        k_per_q = np.repeat(arrays["k"], HQ // H, axis=2)  # (B, T, HQ, K)
        scores = s * np.einsum("bthk,bshk->bhts", arrays["q"], k_per_q)  # (B, HQ, T, T)
        mask = ("causal" if causal else "bidirectional") + (f", window {window}" if window else "")
        description = (f"B={B} T={T} HQ={HQ} H={H} K={K} V={V}; {mask}; "
                       f"scale {'default K^-0.5' if scale is None else scale}")
        # softmax takes exp(score - max): exponents up to the spread of the scores
        out.append(Case(name, description, arrays, length=T + K + V, exponent=float(np.ptp(scores))))
    return out


register(
    GoldenOp(
        name="attention",
        mirrors="naive_parallel_attn, fla/ops/attn/naive.py, fla-org/flash-linear-attention @bc3b101 (v0.5.2)",
        layout="FLA time-first: q (B, T, HQ, K); k (B, T, H, K); v (B, T, H, V); o (B, T, HQ, V); H divides HQ",
        inputs=(
            Tensor("q", "(B, T, HQ, K)", "queries"),
            Tensor("k", "(B, T, H, K)", "keys; H divides HQ (query head h reads key head h // (HQ / H))"),
            Tensor("v", "(B, T, H, V)", "values"),
        ),
        outputs=(Tensor("o", "(B, T, HQ, V)", "softmax(scale q k^T + mask) v per query head"),),
        options=(
            Option("scale", float, None, "the softmax scale; K^-0.5 when absent"),
            Option("causal", bool, True, "true: query t sees keys 0 .. t; false: every key (bidirectional)"),
            Option("window_size", int, None, "causal sliding window: query t sees keys t - w + 1 .. t; none if absent"),
        ),
        forward=_forward,
        notes="o_t = sum_s softmax_s(scale q_t . k_s) v_s over the allowed s; dk, dv sum over each group's heads.",
        reference="naive_parallel_attn",
        state_layout="",
        conventions=(
            "GQA: query head h reads key/value head h // (HQ / H) (contiguous groups, as repeat_interleave)",
            "scale: None means K^-0.5; causal=True by default; window_size w lets query t see keys t-w+1 .. t",
            "FLA also returns max_logits (B, T, HQ); this op returns o only",
            "equal query and key lengths only (FLA aligns query t with key t)",
        ),
        cases=cases,
    )
)
