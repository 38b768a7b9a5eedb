"""Softmax attention: the parallel form against a naive loop, both forms against finite differences,
the recurrent (KV-cache decode) form against the parallel form, the masks' corner cases, bad input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.attention import (
    DECODABLE,
    FORMS,
    KVCache,
    attention_decode_step,
    attention_parallel,
    attention_parallel_backward,
    attention_recurrent,
    attention_recurrent_backward,
)
from ref.nn import gradcheck

pytestmark = pytest.mark.attention

# (mask, options) for every kind; per-batch prefix lengths need B = 2
MASKS = [
    ("causal", {}),
    ("bidirectional", {}),
    ("sliding_window", {"window": 2}),
    ("chunked", {"chunk_size": 2}),
    ("prefix_lm", {"prefix_len": 3}),
    ("prefix_lm", {"prefix_len": np.array([1, 4])}),
]
HEADS = [(2, 2), (4, 2), (3, 1)]  # (HQ, H): MHA, GQA, MQA


def _ids(cases):
    return [m + "".join(f"-{np.asarray(x).tolist()}" for x in o.values()) for m, o in cases]


def make(rng, B=2, T=4, S=6, HQ=4, H=2, K=3, V=2):
    q = rng.standard_normal((B, T, HQ, K))
    k = rng.standard_normal((B, S, H, K))
    v = rng.standard_normal((B, S, H, V))
    return q, k, v


def bool_mask(rng, shape):
    """A random boolean mask with row 1 fully masked (for every batch element and head)."""
    m = rng.random(shape) < 0.6
    m[..., 1, :] = False
    return m


# ----------------------------------------------------------------------------------------------
# an independent implementation: row by row, Python floats, the rules written out again


def _rule(kind, p, s, b, opts):
    if kind == "bidirectional":
        return True
    if kind == "causal":
        return s <= p
    if kind == "sliding_window":
        return p - opts["window"] < s <= p
    if kind == "chunked":
        c = opts["chunk_size"]
        return s <= p and s // c == p // c
    P = opts["prefix_len"]
    P = int(P[b]) if isinstance(P, np.ndarray) else P
    return s <= p or s < P


def naive_attention(q, k, v, mask, scale=None, **opts):
    """o and lse by an explicit softmax per (batch, query head, query): o = 0, lse = -inf if none allowed."""
    B, T, HQ, K = q.shape
    S, H, V = k.shape[1], k.shape[2], v.shape[3]
    G = HQ // H
    scale = K**-0.5 if scale is None else scale
    if isinstance(mask, np.ndarray):
        full = {2: mask[None, None], 3: mask[:, None], 4: mask}[mask.ndim]
        full = np.broadcast_to(full, (B, HQ, T, S))
    o = np.zeros((B, T, HQ, V))
    lse = np.full((B, T, HQ), -np.inf)
    for b in range(B):
        for hq in range(HQ):
            h = hq // G  # the key/value head this query head reads
            for t in range(T):
                p = t + S - T  # the last query sits at the last key
                keys = [
                    s
                    for s in range(S)
                    if (full[b, hq, t, s] if isinstance(mask, np.ndarray) else _rule(mask, p, s, b, opts))
                ]
                if not keys:
                    continue
                scores = {s: scale * math.fsum(q[b, t, hq, i] * k[b, s, h, i] for i in range(K)) for s in keys}
                top = max(scores.values())
                w = {s: math.exp(x - top) for s, x in scores.items()}
                z = math.fsum(w.values())
                for j in range(V):
                    o[b, t, hq, j] = math.fsum(w[s] * v[b, s, h, j] for s in keys) / z
                lse[b, t, hq] = top + math.log(z)
    return o, lse


@pytest.mark.parametrize("mask, opts", MASKS, ids=_ids(MASKS))
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("T, S", [(4, 4), (4, 6), (1, 6)])
def test_forward_equals_a_naive_loop(mask, opts, heads, T, S, rng):
    q, k, v = make(rng, T=T, S=S, HQ=heads[0], H=heads[1])
    want_o, want_lse = naive_attention(q, k, v, mask, scale=0.8, **opts)
    forms = ["parallel", "recurrent"] if mask in DECODABLE else ["parallel"]
    for form in forms:
        o, cache = FORMS[form][0](q, k, v, mask=mask, scale=0.8, **opts)
        np.testing.assert_allclose(o, want_o, rtol=1e-12, atol=1e-14, err_msg=f"{form}: o")
        np.testing.assert_allclose(cache.lse, want_lse, rtol=1e-12, atol=1e-14, err_msg=f"{form}: lse")


@pytest.mark.parametrize("shape", ["(T, S)", "(B, T, S)", "(B, HQ, T, S)"])
def test_boolean_masks_equal_a_naive_loop(shape, rng):
    B, T, S, HQ = 2, 4, 5, 4
    q, k, v = make(rng, B=B, T=T, S=S, HQ=HQ, H=2)
    m = bool_mask(rng, {"(T, S)": (T, S), "(B, T, S)": (B, T, S), "(B, HQ, T, S)": (B, HQ, T, S)}[shape])
    o, cache = attention_parallel(q, k, v, mask=m)
    want_o, want_lse = naive_attention(q, k, v, m)
    np.testing.assert_allclose(o, want_o, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cache.lse, want_lse, rtol=1e-12, atol=1e-14)


def test_a_boolean_mask_equal_to_a_kind_gives_the_same_results(rng):
    q, k, v = make(rng, T=4, S=6)
    do = rng.standard_normal((2, 4, 4, 2))
    causal = np.arange(6)[None, :] <= np.arange(2, 6)[:, None]  # query t at position t + 2
    o1, c1 = attention_parallel(q, k, v, mask="causal")
    o2, c2 = attention_parallel(q, k, v, mask=causal)
    np.testing.assert_array_equal(o1, o2)
    for g1, g2 in zip(attention_parallel_backward(do, c1), attention_parallel_backward(do, c2)):
        np.testing.assert_array_equal(g1, g2)


# ----------------------------------------------------------------------------------------------
# finite differences: every backward, every mask, MHA / GQA / MQA, T != S


def _check(form, q, k, v, rng, **kwargs):
    forward, backward = FORMS[form]

    def fwd(q, k, v):
        return forward(q, k, v, scale=0.7, **kwargs)

    gradcheck(fwd, backward, {"q": q, "k": k, "v": v}, rng=rng, name=f"attention_{form}")


# bidirectional attention has no recurrent form (test_recurrent_refuses_masks_that_look_ahead)
FORM_MASKS = [(f, m, o) for f in FORMS for m, o in MASKS if f == "parallel" or m in DECODABLE]


@pytest.mark.parametrize("form, mask, opts", FORM_MASKS, ids=[f"{f}-{i}" for f, *c in FORM_MASKS for i in _ids([c])])
@pytest.mark.parametrize("heads", HEADS)
def test_finite_differences(form, mask, opts, heads, rng):
    q, k, v = make(rng, T=4, S=6, HQ=heads[0], H=heads[1])
    _check(form, q, k, v, rng, mask=mask, **opts)


@pytest.mark.parametrize("shape", [(4, 6), (2, 4, 6), (2, 4, 4, 6)])
def test_finite_differences_boolean_mask_with_a_fully_masked_row(shape, rng):
    q, k, v = make(rng, T=4, S=6, HQ=4, H=2)
    _check("parallel", q, k, v, rng, mask=bool_mask(rng, shape))


def test_finite_differences_equal_lengths(rng):
    q, k, v = make(rng, T=5, S=5, HQ=2, H=1)
    for form in FORMS:
        _check(form, q, k, v, rng, mask="causal")


# ----------------------------------------------------------------------------------------------
# fully masked rows: output 0, zero gradients, never NaN


def test_a_fully_masked_row_gives_zero_output_and_no_gradient(rng):
    q, k, v = make(rng, T=4, S=6, HQ=4, H=2)
    m = bool_mask(rng, (2, 4, 4, 6))  # row t = 1 is empty everywhere
    do = rng.standard_normal((2, 4, 4, 2))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        o, cache = attention_parallel(q, k, v, mask=m)
        dq, dk, dv = attention_parallel_backward(do, cache)
    assert np.all(o[:, 1] == 0) and np.all(cache.lse[:, 1] == -np.inf)
    assert np.all(dq[:, 1] == 0)
    for x in (o, dq, dk, dv):
        assert np.all(np.isfinite(x))
    # the empty row sends nothing to k and v: its cotangent can be anything
    do2 = do.copy()
    do2[:, 1] = 1e6
    _, dk2, dv2 = attention_parallel_backward(do2, cache)
    np.testing.assert_array_equal(dk, dk2)
    np.testing.assert_array_equal(dv, dv2)


def test_a_mask_with_no_allowed_entry_at_all(rng):
    q, k, v = make(rng, T=3, S=3)
    o, cache = attention_parallel(q, k, v, mask=np.zeros((3, 3), bool))
    grads = attention_parallel_backward(rng.standard_normal(o.shape), cache)
    assert not o.any() and not any(g.any() for g in grads)


def test_a_zero_prefix_is_causal_and_a_full_prefix_is_bidirectional(rng):
    q, k, v = make(rng, T=5, S=5)
    np.testing.assert_array_equal(
        attention_parallel(q, k, v, mask="prefix_lm", prefix_len=0)[0], attention_parallel(q, k, v)[0]
    )
    np.testing.assert_array_equal(
        attention_parallel(q, k, v, mask="prefix_lm", prefix_len=5)[0],
        attention_parallel(q, k, v, mask="bidirectional")[0],
    )
    # a window or a chunk as long as the sequence changes nothing
    for kw in ({"mask": "sliding_window", "window": 5}, {"mask": "chunked", "chunk_size": 5}):
        np.testing.assert_array_equal(attention_parallel(q, k, v, **kw)[0], attention_parallel(q, k, v)[0])


def test_softmax_is_stable_for_huge_scores(rng):
    q, k, v = make(rng, T=4, S=6)
    do = rng.standard_normal((2, 4, 4, 2))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, no 0/0, no log 0
        for form in FORMS:
            o, cache = FORMS[form][0](q * 1e3, k * 1e3, v, mask="sliding_window", window=3)
            grads = FORMS[form][1](do, cache)
            assert all(np.all(np.isfinite(x)) for x in (o, cache.lse, *grads))
    # the scores differ by far more than exp can span: the output is the value of the top key
    want, _ = naive_attention(q * 1e3, k * 1e3, v, "sliding_window", window=3)
    np.testing.assert_allclose(o, want, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32_and_agrees_with_float64(rng):
    q, k, v = make(rng, T=4, S=6)
    do = rng.standard_normal((2, 4, 4, 2))
    for form in FORMS:
        f, b = FORMS[form]
        o64, c64 = f(q, k, v, mask="chunked", chunk_size=3)
        o32, c32 = f(*(x.astype(np.float32) for x in (q, k, v)), mask="chunked", chunk_size=3)
        g64, g32 = b(do, c64), b(do.astype(np.float32), c32)
        for name, x32, x64 in zip(("o", "lse", "dq", "dk", "dv"), (o32, c32.lse, *g32), (o64, c64.lse, *g64)):
            assert x32.dtype == np.float32, f"{form}: {name} is {x32.dtype}"
            np.testing.assert_allclose(x32, x64, rtol=1e-4, atol=1e-5, err_msg=f"{form}: {name}")


# ----------------------------------------------------------------------------------------------
# the recurrent form (T decode steps) computes what the parallel form computes


@st.composite
def decode_cases(draw):
    T = draw(st.integers(1, 7))
    S = T + draw(st.sampled_from([0, 0, 1, 4]))  # S > T: a context is cached before the first query
    B = draw(st.integers(1, 2))
    mask = draw(st.sampled_from(DECODABLE))
    opts = {}
    if mask == "sliding_window":
        opts["window"] = draw(st.integers(1, S + 1))
    elif mask == "chunked":
        opts["chunk_size"] = draw(st.integers(1, S + 1))
    elif mask == "prefix_lm":
        per_batch = draw(st.booleans())
        lengths = [draw(st.integers(0, S)) for _ in range(B)]
        opts["prefix_len"] = np.array(lengths) if per_batch else lengths[0]
    return dict(
        B=B,
        T=T,
        S=S,
        H=draw(st.integers(1, 2)),
        G=draw(st.sampled_from([1, 2, 3])),
        K=draw(st.integers(1, 4)),
        V=draw(st.integers(1, 4)),
        mask=mask,
        opts=opts,
        scale=draw(st.sampled_from([None, 0.3, 2.0])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, S, H, K, V = (case[n] for n in "BTSHKV")
    q, k, v = make(rng, B=B, T=T, S=S, HQ=H * case["G"], H=H, K=K, V=V)
    return q, k, v, rng.standard_normal((B, T, H * case["G"], V))


def _close(name, got, want):
    np.testing.assert_allclose(
        got, want, rtol=1e-11, atol=1e-12 * (1 + np.abs(want[np.isfinite(want)]).max()), err_msg=name
    )


@given(decode_cases())
def test_recurrent_equals_parallel(case):
    q, k, v, do = _arrays(case)
    kwargs = dict(mask=case["mask"], scale=case["scale"], **case["opts"])
    o_p, c_p = attention_parallel(q, k, v, **kwargs)
    o_r, c_r = attention_recurrent(q, k, v, **kwargs)
    _close("o", o_r, o_p)
    _close("lse", c_r.lse, c_p.lse)
    for name, g_r, g_p in zip(
        ("dq", "dk", "dv"), attention_recurrent_backward(do, c_r), attention_parallel_backward(do, c_p)
    ):
        _close(name, g_r, g_p)


@given(decode_cases())
def test_decode_steps_equal_the_full_forward(case):
    """The public API: prefill what must be (context, prefix), then one attention_decode_step per token."""
    q, k, v, _ = _arrays(case)
    B, T, S, H, K, V = (case[n] for n in "BTSHKV")
    kwargs = dict(mask=case["mask"], scale=case["scale"], **case["opts"])
    o_full, _ = attention_parallel(q, k, v, **kwargs)
    prefix = case["opts"].get("prefix_len", 0)
    first = max(S - T, int(np.max(prefix)) - 1, 0)  # the first position that can be decoded
    kv = KVCache.empty(B, S, H, K, V)
    kv.append(k[:, :first], v[:, :first])
    for p in range(first, S):
        o_t, kv = attention_decode_step(q[:, p - (S - T)], k[:, p], v[:, p], kv, position=p, **kwargs)
        _close(f"o at position {p}", o_t, o_full[:, p - (S - T)])
    assert kv.length == S


def test_decode_by_hand_with_a_window():
    """Window w = 2: each step sees itself and the previous token, with a cache of S_max = 3."""
    q = np.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1)
    k = np.array([0.0, 1.0, -1.0]).reshape(1, 3, 1, 1)
    v = np.array([10.0, 20.0, 30.0]).reshape(1, 3, 1, 1)
    kv = KVCache.empty(1, 3, 1, 1, 1)
    outs = []
    for p in range(3):
        o_t, kv = attention_decode_step(
            q[:, p], k[:, p], v[:, p], kv, position=p, mask="sliding_window", window=2, scale=1.0
        )
        outs.append(float(o_t[0, 0, 0]))
    w1 = np.exp([2.0 * 0.0, 2.0 * 1.0])  # step 1: keys 0, 1 with q = 2
    w2 = np.exp([0.5 * 1.0, 0.5 * -1.0])  # step 2: keys 1, 2 with q = 0.5
    np.testing.assert_allclose(outs, [10.0, w1 @ [10, 20] / w1.sum(), w2 @ [20, 30] / w2.sum()], rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# bad input


def _bad(**overrides):
    args = dict(q=np.zeros((2, 4, 4, 3)), k=np.zeros((2, 6, 2, 3)), v=np.zeros((2, 6, 2, 5)), mask="causal")
    args.update(overrides)
    return args


BAD = [
    (
        _bad(k=np.zeros((2, 6, 3, 3)), v=np.zeros((2, 6, 3, 5))),
        r"k: expected a number of heads H that divides HQ = 4 .*got H = 3",
    ),
    (
        _bad(k=np.zeros((2, 6, 2, 2))),
        r"k: expected shape \(B, S, H, K\) with B = 2 and K = 3 \(from q\), got \(2, 6, 2, 2\)",
    ),
    (_bad(v=np.zeros((2, 5, 2, 5))), r"v: expected shape \(B, S, H, V\) with \(B, S, H\) = \(2, 6, 2\) \(from k\)"),
    (_bad(q=np.zeros((2, 0, 4, 3))), "q: expected a time axis of length >= 1, got length 0"),
    (_bad(k=np.zeros((2, 0, 2, 3)), v=np.zeros((2, 0, 2, 5)), mask="bidirectional"), "k: expected a time axis"),
    (_bad(q=np.zeros((2, 4, 4))), r"q: expected 4 axes \(B, T, HQ, K\), got shape \(2, 4, 4\)"),
    (_bad(k=np.zeros((2, 6, 2, 3), np.float32)), r"k: expected dtype float64 \(the dtype of q\), got float32"),
    (_bad(q=np.full((2, 4, 4, 3), np.nan)), "q: expected finite values"),
    (_bad(mask="casual"), "mask: expected one of 'causal', 'bidirectional', .* or a boolean array, got 'casual'"),
    (_bad(mask="sliding_window"), "window: expected an integer >= 1, got None"),
    (_bad(mask="sliding_window", window=0), "window: expected an integer >= 1, got 0"),
    (_bad(mask="chunked", chunk_size=0), "chunk_size: expected an integer >= 1, got 0"),
    (_bad(mask="chunked", chunk_size=2.0), "chunk_size: expected an integer >= 1, got 2.0"),
    (
        _bad(mask="prefix_lm", prefix_len=7),
        r"prefix_len: expected 0 <= prefix_len <= S = 6 \(the number of keys\), got 7",
    ),
    (_bad(mask="prefix_lm", prefix_len=np.array([2, -1])), "prefix_len: expected 0 <= prefix_len <= S = 6 .*got -1"),
    (_bad(mask="prefix_lm", prefix_len=np.array([2, 3, 4])), r"prefix_len: .*shape \(B,\) = \(2,\), got shape \(3,\)"),
    (_bad(mask="prefix_lm", prefix_len=np.array([2.0, 3.0])), "prefix_len: .*got dtype float64"),
    (_bad(mask="prefix_lm"), "prefix_len: mask='prefix_lm' needs an integer or an integer array"),
    (_bad(window=3), "window: only used with mask='sliding_window', got window=3 with mask='causal'"),
    (_bad(mask="chunked", chunk_size=2, prefix_len=1), "prefix_len: only used with mask='prefix_lm'"),
    (_bad(q=np.zeros((2, 7, 4, 3))), r"k: mask='causal' aligns the last query with the last key.*S = 6 keys for T = 7"),
    (_bad(scale=float("inf")), "scale: expected a finite number or None"),
]


BAD_MASK_ARRAYS = [
    (_bad(mask=np.ones((4, 4), bool)), r"mask: expected a boolean array of shape \(T, S\) = \(4, 6\), .*got \(4, 4\)"),
    (_bad(mask=np.ones((2, 2, 4, 6), bool)), r"or \(B, HQ, T, S\) = \(2, 4, 4, 6\), got \(2, 2, 4, 6\)"),
    (_bad(mask=np.ones((1, 4, 6), bool)), r"\(B, T, S\) = \(2, 4, 6\).*got \(1, 4, 6\)"),
    (_bad(mask=np.ones((4, 6), np.int64)), r"mask: expected a boolean array \(True = may attend\), got dtype int64"),
    (_bad(mask=np.ones((4, 6), bool), window=2), "window: only used with a mask kind"),
]


@pytest.mark.parametrize("args, match", BAD)
@pytest.mark.parametrize("form", ["parallel", "recurrent"])
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](**args)


@pytest.mark.parametrize("args, match", BAD_MASK_ARRAYS)
def test_bad_mask_arrays(args, match):  # the recurrent form refuses every mask array (below)
    with pytest.raises(ValueError, match=match):
        attention_parallel(**args)


def test_more_keys_than_queries_is_fine_and_fewer_only_bidirectionally(rng):
    q, k, v = make(rng, T=6, S=4)
    o, _ = attention_parallel(q, k, v, mask="bidirectional")  # an encoder-decoder cross attention
    assert o.shape == (2, 6, 4, 2)
    with pytest.raises(ValueError, match="mask='chunked' aligns the last query with the last key"):
        attention_parallel(q, k, v, mask="chunked", chunk_size=2)


@pytest.mark.parametrize("mask", ["bidirectional", np.ones((4, 6), bool)])
def test_recurrent_refuses_masks_that_look_ahead(mask, rng):
    q, k, v = make(rng, T=4, S=6)
    with pytest.raises(ValueError, match="mask: decoding .* one of 'causal', 'sliding_window', 'chunked', 'prefix_lm'"):
        attention_recurrent(q, k, v, mask=mask)
    kv = KVCache.empty(2, 6, 2, 3, 2)
    with pytest.raises(ValueError, match="mask: decoding"):
        attention_decode_step(q[:, 0], k[:, 0], v[:, 0], kv, position=0, mask=mask)


def test_bad_cotangent(rng):
    q, k, v = make(rng)
    for form in FORMS:
        _, cache = FORMS[form][0](q, k, v)
        with pytest.raises(ValueError, match=r"do: expected shape \(B, T, HQ, V\) = \(2, 4, 4, 2\) \(the shape of o\)"):
            FORMS[form][1](np.zeros((2, 4, 2, 2)), cache)


def test_kv_cache_refuses_to_grow_beyond_its_size_and_stays_unchanged(rng):
    kv = KVCache.empty(1, 2, 1, 3, 2)
    q, k, v = make(rng, B=1, T=3, S=3, HQ=2, H=1)
    for p in range(2):
        attention_decode_step(q[:, p], k[:, p], v[:, p], kv, position=p)
    before = kv.k.copy()
    with pytest.raises(
        ValueError, match=r"kv_cache: cannot append 1 token\(s\) to a cache holding 2 of at most S_max = 2"
    ):
        attention_decode_step(q[:, 2], k[:, 2], v[:, 2], kv, position=2)
    assert kv.length == 2 and np.array_equal(kv.k, before)


def test_decode_step_bad_input_leaves_the_cache_unchanged(rng):
    q, k, v = make(rng, B=2, T=4, S=4, HQ=4, H=2)
    kv = KVCache.empty(2, 4, 2, 3, 2)
    attention_decode_step(q[:, 0], k[:, 0], v[:, 0], kv, position=0)
    cases = [
        (dict(position=0), r"position: expected the next free slot of the cache, kv_cache.length = 1, got 0"),
        (dict(position=1, mask="prefix_lm", prefix_len=3), "position: 1 lies inside the prefix"),
        (
            dict(position=1, q_t=q[:, 1, :3]),
            r"q_t: .*HQ that is a multiple of H = 2 \(the heads of kv_cache\), got HQ = 3",
        ),
        (dict(position=1, k_t=k[:, 1, :, :2]), r"k_t: expected shape \(B, H, K\) = \(2, 2, 3\) \(from kv_cache\)"),
        (dict(position=1, v_t=v[:, 1].astype(np.float32)), r"v_t: expected dtype float64 \(the dtype of kv_cache\)"),
        (dict(position=1, mask="sliding_window", window=-1), "window: expected an integer >= 1, got -1"),
    ]
    for overrides, match in cases:
        args = dict(q_t=q[:, 1], k_t=k[:, 1], v_t=v[:, 1], kv_cache=kv, position=1)
        args.update(overrides)
        with pytest.raises(ValueError, match=match):
            attention_decode_step(**args)
        assert kv.length == 1
    with pytest.raises(ValueError, match="kv_cache: expected a KVCache, got dict"):
        attention_decode_step(q[:, 1], k[:, 1], v[:, 1], {}, position=1)


def test_kv_cache_checks_its_arrays():
    with pytest.raises(
        ValueError, match=r"kv_cache.v: expected shape \(B, S_max, H, V\) with \(B, S_max, H\) = \(1, 4, 2\)"
    ):
        KVCache(k=np.zeros((1, 4, 2, 3)), v=np.zeros((1, 5, 2, 3)))
    with pytest.raises(ValueError, match=r"kv_cache.length: expected an integer in \[0, S_max = 4\], got 5"):
        KVCache(k=np.zeros((1, 4, 2, 3)), v=np.zeros((1, 4, 2, 3)), length=5)
    with pytest.raises(ValueError, match="max_len: expected an integer >= 1, got 0"):
        KVCache.empty(1, 0, 1, 1, 1)
