"""The numba CPU kernels of softmax attention (``numba_kernels.attention_cpu``) against the NumPy reference.

Through ``attention_parallel(..., backend="numba")`` and its backward, every mask, MHA/GQA/MQA,
T not a multiple of the tile, fully masked rows; the tiles through the kernel functions
themselves. The CUDA kernels run under the simulator in ``tests/cudasim`` with the same cases
and bounds (``attention_cases``, ``make_arrays``, ``bounds`` below).

Error bound. With A = |scale| max_{t,s} |q_t| . |k_s| (the largest score in absolute terms) and
u the unit roundoff of the kernel's dtype, a score carries an absolute error <= (K + 2) u A; the
row max and the log-sum-exp <= (K + 2) u A + (S + 2) u + u |lse|, so every probability
P_ts = exp(s_ts - lse_t) a relative error <= eps_P = (3 (K + 2) A + 2 |lse|max + 2 S + 8) u.
Each output is then a sum of terms P_ts x (products of inputs), and each term errs by at most
(eps_P + (T + S + K + V + 8) u) times its absolute value, so with the sums of absolute terms

    o: P |v|    dv: P^T |do|    dq: |scale| dSabs |k|    dk: |scale| dSabs^T |q|
    with dSabs_ts = P_ts (|do_t| . |v_s| + |do_t| . |o_t|)    (the two parts of dS = P (dP - D))

two implementations agree within tol = 2 eps (sum of absolute terms), eps = eps_P + (T + S + K + V
+ 8) u, and lse within 2 eps_P. A fully masked row has every term 0, so it must be exactly 0. A
bug (a missing key, a shifted tile, a wrong head) errs by the size of the sums themselves.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numba_kernels.attention_cpu as attention_cpu
from ref.mixers.attention import attention_parallel, attention_parallel_backward, attention_recurrent
from ref.mixers.attention._inputs import head_first, repeat_kv, sum_groups, time_first
from ref.mixers.attention.masks import dense, make_mask
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.attention

NAMES = ("o", "lse", "dq", "dk", "dv")
KINDS = ("causal", "bidirectional", "sliding_window", "chunked", "prefix_lm", "array")


@st.composite
def attention_cases(draw, max_T=20, dtypes=(np.float64,), blocks=(1, 2, 3, 4, 5, 64)):
    """Random shapes, a mask of every kind (with its option), a scale and tile sizes."""
    kind = draw(st.sampled_from(KINDS))
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    extra = draw(st.sampled_from([0, 0, 1, 5] + ([-1] if kind in ("bidirectional", "array") else [])))
    S = max(1, T + extra)  # S < T only where the mask allows it
    B = draw(st.integers(1, 2))
    opts = {}
    if kind == "sliding_window":
        opts["window"] = draw(st.integers(1, S + 1))
    elif kind == "chunked":
        opts["chunk_size"] = draw(st.integers(1, S + 1))
    elif kind == "prefix_lm":
        lengths = [draw(st.integers(0, S)) for _ in range(B)]
        opts["prefix_len"] = np.array(lengths) if draw(st.booleans()) else lengths[0]
    return dict(
        kind=kind,
        opts=opts,
        B=B,
        T=T,
        S=S,
        H=draw(st.integers(1, 2)),
        G=draw(st.sampled_from([1, 2, 3])),
        K=draw(st.integers(1, 5)),
        V=draw(st.integers(1, 5)),
        mask_shape=draw(st.sampled_from(["(T, S)", "(B, T, S)", "(B, HQ, T, S)"])),
        scale=draw(st.sampled_from([None, 0.3, 2.0])),
        blocks=(draw(st.sampled_from(blocks)), draw(st.sampled_from(blocks))),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    """q, k, v, do in the case's dtype and the mask keyword arguments (a boolean array for "array":
    random, with query row 0 fully masked)."""
    rng = np.random.default_rng(case["seed"])
    B, T, S, H, K, V, dt = (case[n] for n in ("B", "T", "S", "H", "K", "V", "dtype"))
    HQ = H * case["G"]
    q = rng.standard_normal((B, T, HQ, K)).astype(dt)
    k = rng.standard_normal((B, S, H, K)).astype(dt)
    v = rng.standard_normal((B, S, H, V)).astype(dt)
    do = rng.standard_normal((B, T, HQ, V)).astype(dt)
    if case["kind"] == "array":
        shape = {"(T, S)": (T, S), "(B, T, S)": (B, T, S), "(B, HQ, T, S)": (B, HQ, T, S)}[case["mask_shape"]]
        m = rng.random(shape) < 0.5
        m[..., 0, :] = False
        kwargs = {"mask": m}
    else:
        kwargs = {"mask": case["kind"], **case["opts"]}
    return q, k, v, do, dict(kwargs, scale=case["scale"])


def run(backend, q, k, v, do, kwargs):
    o, cache = attention_parallel(q, k, v, backend=backend, **kwargs)
    return dict(zip(NAMES, (o, cache.lse, *attention_parallel_backward(do, cache))))


def up(x):
    return x.astype(np.float64)


def bounds(q, k, v, do, kwargs, dtype):
    """Elementwise tolerances for (o, lse, dq, dk, dv) of an implementation in ``dtype``, from the
    float64 reference (module docstring)."""
    q, k, v, do = map(up, (q, k, v, do))
    u = np.finfo(dtype).eps / 2
    B, T, HQ, K = q.shape
    _, S, H, V = v.shape
    G = HQ // H
    scale = K**-0.5 if kwargs["scale"] is None else kwargs["scale"]
    o, cache = attention_parallel(q, k, v, **kwargs)
    spec = make_mask(
        kwargs["mask"], window=kwargs.get("window"), prefix_len=kwargs.get("prefix_len"),
        chunk_size=kwargs.get("chunk_size"), B=B, HQ=HQ, T=T, S=S,
    )  # fmt: skip
    M = dense(spec, T, S)  # (B|1, HQ|1, T, S)
    qh, kh = head_first(np.abs(q)), head_first(repeat_kv(np.abs(k), G))  # (B, HQ, T|S, K)
    vh, doh, oh = head_first(repeat_kv(np.abs(v), G)), head_first(np.abs(do)), head_first(np.abs(o))
    sabs = abs(scale) * qh @ np.swapaxes(kh, -1, -2)  # (B, HQ, T, S)
    lse = head_first(cache.lse[..., None])  # (B, HQ, T, 1)
    finite = np.isfinite(lse)
    s = scale * head_first(q) @ np.swapaxes(head_first(repeat_kv(k, G)), -1, -2)
    P = np.exp(np.where(M & finite, s - np.where(finite, lse, 0), -np.inf))  # (B, HQ, T, S), 0 off the mask
    A = sabs.max()
    L = np.abs(lse[finite]).max() if finite.any() else 0.0
    eps_P = (3 * (K + 2) * A + 2 * L + 2 * S + 8) * u
    eps = eps_P + (T + S + K + V + 8) * u
    dSabs = P * (doh @ np.swapaxes(vh, -1, -2) + (doh * oh).sum(-1, keepdims=True))  # (B, HQ, T, S)
    return dict(
        o=2 * eps * time_first(P @ vh),
        lse=2 * eps_P * np.ones_like(cache.lse),
        dq=2 * eps * abs(scale) * time_first(dSabs @ kh),
        dk=2 * eps * abs(scale) * sum_groups(time_first(np.swapaxes(dSabs, -1, -2) @ qh), H),
        dv=2 * eps * sum_groups(time_first(np.swapaxes(P, -1, -2) @ doh), H),
    )


def assert_agree(label, got, want, tol, dtype):
    for name in NAMES:
        assert got[name].dtype == dtype, f"{label}: {name} is {got[name].dtype}"
    empty = np.isneginf(want["lse"])  # fully masked rows: lse = -inf, o = 0 exactly
    assert np.array_equal(np.isneginf(got["lse"]), empty), f"{label}: lse = -inf elsewhere than the empty rows"
    got = dict(got, lse=np.where(empty, 0, got["lse"]))
    want = dict(want, lse=np.where(empty, 0, want["lse"]))
    for name in NAMES:
        assert_within(f"{label}: {name}", got[name], want[name], tol[name])


@given(attention_cases(dtypes=(np.float64, np.float32)))
def test_numba_agrees_with_numpy(case):
    """Forward and backward through ``backend="numba"``, float64 and float32 (against float64)."""
    q, k, v, do, kwargs = make_arrays(case)
    want = run("numpy", *map(up, (q, k, v, do)), kwargs)
    got = run("numba", q, k, v, do, kwargs)
    assert_agree("numba", got, want, bounds(q, k, v, do, kwargs, case["dtype"]), case["dtype"])


def kernel_call(q, k, v, do, kwargs, block_q, block_k):
    """The kernels called directly, with chosen tile sizes."""
    scale = q.shape[3] ** -0.5 if kwargs["scale"] is None else kwargs["scale"]
    mask_args = {name: kwargs.get(name) for name in ("window", "chunk_size", "prefix_len")}
    o, lse = attention_cpu.attention_cpu(q, k, v, scale, kwargs["mask"], **mask_args, block_q=block_q, block_k=block_k)
    grads = attention_cpu.attention_cpu_backward(
        q, k, v, o, lse, do, scale, kwargs["mask"], **mask_args, block_q=block_q, block_k=block_k
    )
    return dict(zip(NAMES, (o, lse, *grads)))


@given(attention_cases(max_T=30, dtypes=(np.float64, np.float32)))
def test_any_tile_size_gives_the_same_result(case):
    """Tiles of 1 to 5 rows or keys (T not a multiple of them, many tiles skipped) and of 64 (one tile)."""
    q, k, v, do, kwargs = make_arrays(case)
    want = run("numpy", *map(up, (q, k, v, do)), kwargs)
    got = kernel_call(q, k, v, do, kwargs, *case["blocks"])
    assert_agree(f"blocks {case['blocks']}", got, want, bounds(q, k, v, do, kwargs, case["dtype"]), case["dtype"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask": "causal"},
        {"mask": "sliding_window", "window": 2},
        {"mask": "prefix_lm", "prefix_len": np.array([1, 4])},
        {"mask": "bidirectional"},
    ],
    ids=["causal", "sliding_window", "prefix_lm", "bidirectional"],
)
def test_numba_finite_differences(kwargs, rng):
    q, k, v = rng.standard_normal((2, 4, 4, 3)), rng.standard_normal((2, 6, 2, 3)), rng.standard_normal((2, 6, 2, 2))

    def fwd(q, k, v):
        return attention_parallel(q, k, v, scale=0.7, backend="numba", **kwargs)

    gradcheck(fwd, attention_parallel_backward, {"q": q, "k": k, "v": v}, rng=rng, name="attention_parallel[numba]")


def test_fully_masked_rows_give_zero_and_no_gradient(rng):
    q, k, v = rng.standard_normal((2, 7, 4, 3)), rng.standard_normal((2, 9, 2, 3)), rng.standard_normal((2, 9, 2, 2))
    m = rng.random((2, 4, 7, 9)) < 0.5
    m[:, :, 1] = False  # row 1 of every batch element and head
    m[1] = False  # every row of batch element 1
    do = rng.standard_normal((2, 7, 4, 2))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        o, cache = attention_parallel(q, k, v, mask=m, backend="numba")
        dq, dk, dv = attention_parallel_backward(do, cache)
    assert np.all(o[:, 1] == 0) and np.all(cache.lse[:, 1] == -np.inf) and np.all(dq[:, 1] == 0)
    assert not o[1].any() and not dq[1].any() and not dk[1].any() and not dv[1].any()
    for x in (o, dq, dk, dv):
        assert np.all(np.isfinite(x))
    do2 = do.copy()
    do2[:, 1] = 1e6  # the empty row's cotangent reaches nothing
    _, dk2, dv2 = attention_parallel_backward(do2, cache)
    np.testing.assert_array_equal(dk, dk2)
    np.testing.assert_array_equal(dv, dv2)


@pytest.mark.parametrize(
    "mask, opts", [("chunked", {"chunk_size": 4}), ("sliding_window", {"window": 3}), ("array", {})]
)
def test_fully_masked_tiles_are_never_read(mask, opts, rng):
    """With tiles of 4, query tile 0 (rows 0-3) sees no key of tiles 2 and 3 (keys 8-15) under these
    masks. NaN there would turn P v and do v^T into NaN (0 * NaN) if the kernels read those tiles."""
    B, T, HQ, K, V = 1, 16, 2, 3, 2
    q, k, v = rng.standard_normal((B, T, HQ, K)), rng.standard_normal((B, T, HQ, K)), rng.standard_normal((B, T, HQ, V))
    do = rng.standard_normal((B, T, HQ, V))
    if mask == "array":
        mask = np.arange(T)[None, :] <= np.arange(T)[:, None]  # causal, as a boolean array
        mask[:4, :] = False
        mask[:4, :2] = True  # rows 0-3 see keys 0 and 1 only; keys 4-7 are seen by rows 4-7
    k_nan, v_nan = k.copy(), v.copy()
    k_nan[:, 8:], v_nan[:, 8:] = np.nan, np.nan
    want = kernel_call(q, k, v, do, {"mask": mask, "scale": None, **opts}, 4, 4)
    got = kernel_call(q, k_nan, v_nan, do, {"mask": mask, "scale": None, **opts}, 4, 4)
    for name in ("o", "lse", "dq"):
        np.testing.assert_array_equal(got[name][:, :4], want[name][:, :4], err_msg=name)


def test_the_backend_is_kept_in_the_cache_and_auto_picks_numba_without_a_gpu(rng):
    q, k, v = rng.standard_normal((1, 3, 2, 2)), rng.standard_normal((1, 3, 2, 2)), rng.standard_normal((1, 3, 2, 2))
    _, cache = attention_parallel(q, k, v, backend="numba")
    assert cache.backend == "numba"
    _, cache = attention_parallel(q, k, v, backend="auto")
    assert cache.backend in ("numba", "cuda")


def test_bad_tile_sizes_and_backends(rng):
    q = rng.standard_normal((1, 3, 2, 2))
    with pytest.raises(ValueError, match="block_q: expected an integer >= 1, got 0"):
        attention_cpu.attention_cpu(q, q, q, 1.0, block_q=0)
    with pytest.raises(ValueError, match="block_k: expected an integer >= 1, got 2.0"):
        attention_cpu.attention_cpu(q, q, q, 1.0, block_k=2.0)
    with pytest.raises(ValueError, match="backend: attention_recurrent supports 'numpy', got 'numba'"):
        attention_recurrent(q, q, q, backend="numba")
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        attention_parallel(q, q, q, backend="gpu")
