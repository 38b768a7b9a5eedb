"""Linear attention, unnormalised and normalised: every form, forward and backward, against each other,
finite differences, and FLA's normalisation written out.

Unnormalised: GLA without a gate; ``gla_cases.bounds`` with gk = None is its error bound.

Normalised, o = n / d with n = scale q S (values v) and d = scale q . z + 1e-10 (values 1), both
unnormalised attentions: ``bounds`` gives, per form, e_n = tol_n / 2 and e_d = tol_d / 2 (the
bounds are for the difference of two forms, twice the error of one). Then for one form

    |o' - o| <= e_o = (1 + u) (e_n + |o| e_d) / (d - e_d) + u |o|         (the quotient, rounded)

and the backward, dn = do / d and dd = -(do . o) / d fed to the two unnormalised backward passes,
errs by the rounding of those passes (``bounds`` with cotangents |dn|, |dd|) plus the errors of its
cotangents carried through them. Those passes are linear in the cotangent, so a cotangent error
e_c carries to at most the same pass run on |q|, |k|, |v|, |h0| with cotangent e_c (``carried``):

    e_dn = |do| e_d / (d (d - e_d)) + u |dn|
    e_dd = (sum_v |do| e_o + |dd| e_d) / (d - e_d) + (V + 1) u sum_v |do o| / d

and dq, dk add the two passes' gradients (one more rounding). Every bound below is twice the
one-form error. The tests use positive features q, k = elu(x) + 1 and z0 >= 0, so that d > 0 and
e_d << d (all of d's terms are positive); for unconstrained q, k the normaliser can vanish.
"""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.gla import gla_recurrent, gla_recurrent_backward
from ref.mixers.linear_attention import (
    EPS,
    FORMS,
    NORMALIZED_FORMS,
    linear_attention_chunked,
    linear_attention_recurrent,
    normalized_linear_attention_chunked,
    normalized_linear_attention_parallel,
    normalized_linear_attention_recurrent,
)
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, gla_cases

pytestmark = pytest.mark.gla

NAMES = ("o", "ht", "dq", "dk", "dv", "dh0")
NORMALIZED_NAMES = ("o", "S", "z", "dq", "dk", "dv", "dS0", "dz0")


def elu1(x):
    """elu(x) + 1 > 0: the feature map of Katharopoulos et al."""
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


def make_arrays(case, positive=False):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, dt = case["B"], case["T"], case["H"], case["K"], case["V"], case["dtype"]
    features = elu1 if positive else (lambda x: x)
    q = features(rng.standard_normal((B, T, H, K))).astype(dt)
    k = features(rng.standard_normal((B, T, H, K))).astype(dt)
    v = rng.standard_normal((B, T, H, V)).astype(dt)
    h0 = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_h0"] else None
    z0 = (elu1(rng.standard_normal((B, H, K))) * rng.uniform(0, 3)).astype(dt) if case["with_h0"] else None
    do = rng.standard_normal((B, T, H, V)).astype(dt)
    dht = rng.standard_normal((B, H, K, V)).astype(dt) if case["with_dht"] else None
    dzt = rng.standard_normal((B, H, K)).astype(dt) if case["with_dht"] else None
    return q, k, v, h0, z0, do, dht, dzt


# ---------------------------------------------------------------- unnormalised


def run(form, q, k, v, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    o, ht, cache = forward(q, k, v, scale=scale, initial_state=h0, **extra)
    return dict(zip(NAMES, (o, ht, *backward(do, dht, cache))))


@given(gla_cases())
def test_every_form_agrees_float64(case):
    q, k, v, h0, _, do, dht, _ = make_arrays(case)
    want = run("recurrent", q, k, v, h0, do, dht, case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, None, h0, do, dht, case["scale"], np.float64)
    for form in ("parallel", "chunked"):
        got = run(form, q, k, v, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)))
def test_float32_against_float64(case):
    q, k, v, h0, _, do, dht, _ = make_arrays(case)
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    want = run("recurrent", *map(up, (q, k, v, h0, do, dht)), case["scale"], case["chunk_size"])
    tol = bounds(q, k, v, None, h0, do, dht, case["scale"], np.float32)
    for form in FORMS:
        got = run(form, q, k, v, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", list(FORMS))
def test_finite_differences(form, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "initial_state": rng.standard_normal((B, H, K, V)),
    }
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, initial_state):
        return forward(q, k, v, scale=0.7, initial_state=initial_state, **extra)

    gradcheck(fwd, backward, inputs, rng=rng, name=f"linear_attention_{form}")


def test_the_state_only_accumulates(rng):
    """S_T = S_{-1} + sum_t k_t^T v_t, and o_t = scale q_t S_t, written out."""
    q, k, v, h0 = (rng.standard_normal(s) for s in ((1, 6, 2, 3), (1, 6, 2, 3), (1, 6, 2, 4), (1, 2, 3, 4)))
    o, ht, _ = linear_attention_chunked(q, k, v, scale=0.5, initial_state=h0, chunk_size=4)
    S = h0 + np.cumsum(np.einsum("bthk,bthv->bthkv", k, v), axis=1)  # (B, T, H, K, V)
    np.testing.assert_allclose(o, 0.5 * np.einsum("bthk,bthkv->bthv", q, S), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ht, S[:, -1], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- normalised


def run_normalized(form, q, k, v, h0, z0, do, dht, dzt, scale, chunk_size):
    forward, backward = NORMALIZED_FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    state = None if h0 is None else (h0, z0)
    o, (S, z), cache = forward(q, k, v, scale=scale, initial_state=state, **extra)
    dq, dk, dv, dstate = backward(do, None if dht is None else (dht, dzt), cache)
    dS0, dz0 = (None, None) if dstate is None else dstate
    return dict(zip(NORMALIZED_NAMES, (o, S, z, dq, dk, dv, dS0, dz0)))


def carried(q, k, v, h0, cot_o, cot_ht, scale):
    """A cotangent error carried through the linear backward pass: the pass on absolute values."""
    a = lambda x: None if x is None else np.abs(x).astype(np.float64)  # noqa: E731
    _, _, cache = gla_recurrent(a(q), a(k), a(v), None, scale=abs(scale), initial_state=a(h0))
    dq, dk, dv, _, dh0 = gla_recurrent_backward(cot_o, cot_ht, cache)
    return dict(dq=dq, dk=dk, dv=dv, dh0=dh0)


def normalized_bounds(q, k, v, h0, z0, do, dht, dzt, scale, dtype):
    """Twice the one-form error of every output and gradient (module docstring)."""
    u = np.finfo(dtype).eps / 2
    up = lambda x: None if x is None else x.astype(np.float64)  # noqa: E731
    q, k, v, h0, z0, do, dht, dzt = map(up, (q, k, v, h0, z0, do, dht, dzt))
    s = q.shape[3] ** -0.5 if scale is None else scale
    ones = np.ones(v.shape[:3] + (1,))
    z_in = None if z0 is None else z0[..., None]
    want = run_normalized("recurrent", q, k, v, h0, z0, do, dht, dzt, s, 1)
    o = want["o"]
    qz, _, _ = gla_recurrent(q, k, ones, None, scale=s, initial_state=z_in)
    d = qz[..., 0] + EPS  # (B, T, H)
    dn = do / d[..., None]
    dd = -(do * o).sum(axis=-1) / d
    dzt_in = None if dzt is None else dzt[..., None]
    tol_n = bounds(q, k, v, None, h0, dn, dht, s, dtype)
    tol_d = bounds(q, k, ones, None, z_in, dd[..., None], dzt_in, s, dtype)
    e_d = tol_d["o"][..., 0] / 2 + u * d  # (B, T, H), with the rounding of + EPS
    assert np.all(e_d < d / 2), "the normaliser is not well away from zero"
    e_o = (1 + u) * (tol_n["o"] / 2 + np.abs(o) * e_d[..., None]) / (d - e_d)[..., None] + u * np.abs(o)
    e_dn = np.abs(do) * (e_d / (d * (d - e_d)))[..., None] + u * np.abs(dn)
    e_dd = ((np.abs(do) * e_o).sum(-1) + np.abs(dd) * e_d) / (d - e_d)
    e_dd += (do.shape[3] + 1) * u * np.abs(do * o).sum(-1) / d
    car_n = carried(q, k, v, h0, e_dn, None, s)
    car_d = carried(q, k, ones, z_in, e_dd[..., None], None, s)
    tol = dict(o=2 * e_o, S=tol_n["ht"], z=tol_d["ht"][..., 0])
    for name in ("dq", "dk"):
        one = tol_n[name] / 2 + tol_d[name] / 2 + car_n[name] + car_d[name]
        tol[name] = 2 * (one + u * (np.abs(want[name]) + one))  # the sum of the two passes, rounded
    tol["dv"] = 2 * (tol_n["dv"] / 2 + car_n["dv"])
    tol["dS0"] = None if h0 is None else 2 * (tol_n["dh0"] / 2 + car_n["dh0"])
    tol["dz0"] = None if h0 is None else 2 * (tol_d["dh0"][..., 0] / 2 + car_d["dh0"][..., 0])
    return tol, want


@given(gla_cases())
def test_normalized_forms_agree_float64(case):
    q, k, v, h0, z0, do, dht, dzt = make_arrays(case, positive=True)
    tol, want = normalized_bounds(q, k, v, h0, z0, do, dht, dzt, case["scale"], np.float64)
    for form in ("parallel", "chunked"):
        got = run_normalized(form, q, k, v, h0, z0, do, dht, dzt, case["scale"], case["chunk_size"])
        for name in NORMALIZED_NAMES:
            assert_within(f"normalized {form}: {name}", got[name], want[name], tol[name])


@given(gla_cases(dtypes=(np.float32,)))
def test_normalized_float32_against_float64(case):
    q, k, v, h0, z0, do, dht, dzt = make_arrays(case, positive=True)
    tol, want = normalized_bounds(q, k, v, h0, z0, do, dht, dzt, case["scale"], np.float32)
    for form in NORMALIZED_FORMS:
        got = run_normalized(form, q, k, v, h0, z0, do, dht, dzt, case["scale"], case["chunk_size"])
        for name in NORMALIZED_NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"normalized {form}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", list(NORMALIZED_FORMS))
def test_normalized_finite_differences(form, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": elu1(rng.standard_normal((B, T, H, K))),
        "k": elu1(rng.standard_normal((B, T, H, K))),
        "v": rng.standard_normal((B, T, H, V)),
        "S0": rng.standard_normal((B, H, K, V)),
        "z0": elu1(rng.standard_normal((B, H, K))),
    }
    forward, backward = NORMALIZED_FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, k, v, S0, z0):  # the state pairs spelled out, one array per output and input
        o, (S, z), cache = forward(q, k, v, scale=0.7, initial_state=(S0, z0), **extra)
        return o, S, z, cache

    def bwd(do, dS, dz, cache):
        dq, dk, dv, (dS0, dz0) = backward(do, (dS, dz), cache)
        return dq, dk, dv, dS0, dz0

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"normalized_linear_attention_{form}")


@pytest.mark.parametrize("with_state", [False, True])
def test_normalized_is_flas_normalize(with_state, rng):
    """FLA: o = o_unnormalised / ((q * scale * (z0 + cumsum_t k)).sum(-1) + 1e-10), state (S_T, z0 + sum_t k)."""
    B, T, H, K, V = 2, 7, 2, 3, 4
    q, k = elu1(rng.standard_normal((B, T, H, K))), elu1(rng.standard_normal((B, T, H, K)))
    v = rng.standard_normal((B, T, H, V))
    S0, z0 = rng.standard_normal((B, H, K, V)), elu1(rng.standard_normal((B, H, K)))
    state = (S0, z0) if with_state else None
    o, (S, z), _ = normalized_linear_attention_chunked(q, k, v, initial_state=state, chunk_size=3)
    o_un, ht, _ = linear_attention_recurrent(q, k, v, initial_state=S0 if with_state else None)
    z_all = np.cumsum(k, axis=1) + (z0[:, None] if with_state else 0)  # (B, T, H, K)
    want = o_un / ((q * K**-0.5 * z_all).sum(-1, keepdims=True) + 1e-10)
    np.testing.assert_allclose(o, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S, ht, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z, z_all[:, -1], rtol=1e-12, atol=1e-12)


def test_normalized_output_is_a_weighted_average_of_values(rng):
    """With positive features, o_t is a convex combination of v_0 .. v_t (up to the 1e-10)."""
    q, k = elu1(rng.standard_normal((1, 8, 1, 3))), elu1(rng.standard_normal((1, 8, 1, 3)))
    v = np.broadcast_to(rng.standard_normal((1, 1, 1, 2)), (1, 8, 1, 2)).copy()  # one value repeated
    o, _, _ = normalized_linear_attention_parallel(q, k, v)
    np.testing.assert_allclose(o, v, rtol=1e-9)


def _normalized_bad(**overrides):
    shape = (1, 4, 2, 3)
    args = dict(q=np.ones(shape), k=np.ones(shape), v=np.zeros((1, 4, 2, 5)), initial_state=None)
    args.update(overrides)
    return args


S0_OK, Z0_OK = np.zeros((1, 2, 3, 5)), np.zeros((1, 2, 3))


@pytest.mark.parametrize(
    "args, match",
    [
        (
            _normalized_bad(initial_state=S0_OK),
            r"initial_state: expected a pair \(S \(B, H, K, V\), z \(B, H, K\)\), got ndarray",
        ),
        (_normalized_bad(initial_state=(S0_OK,)), r"initial_state: expected a pair"),
        (_normalized_bad(initial_state=(S0_OK, None)), r"initial_state\[1\]: expected a numpy array"),
        (
            _normalized_bad(initial_state=(np.zeros((1, 2, 5, 3)), Z0_OK)),
            r"initial_state\[0\]: expected shape \(B, H, K, V\) = \(1, 2, 3, 5\)",
        ),
        (
            _normalized_bad(initial_state=(S0_OK, np.zeros((1, 2, 5)))),
            r"initial_state\[1\]: expected shape \(B, H, K\) = \(1, 2, 3\)",
        ),
        (
            _normalized_bad(initial_state=(S0_OK, Z0_OK.astype(np.float32))),
            r"initial_state\[1\]: expected dtype float64 \(the dtype of q\), got float32",
        ),
        (_normalized_bad(v=np.zeros((1, 3, 2, 5))), r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(1, 4, 2\)"),
        (_normalized_bad(k=np.zeros((1, 4, 2, 2))), r"k: expected shape \(B, T, H, K\) = \(1, 4, 2, 3\)"),
    ],
)
@pytest.mark.parametrize("form", list(NORMALIZED_FORMS))
def test_normalized_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        NORMALIZED_FORMS[form][0](args["q"], args["k"], args["v"], initial_state=args["initial_state"])


@pytest.mark.parametrize("form", list(FORMS))
def test_bad_input(form):
    x = np.zeros((1, 4, 2, 3))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(B, H, K, V\) = \(1, 2, 3, 3\)"):
        FORMS[form][0](x, x, x, initial_state=np.zeros((1, 2, 3)).reshape(1, 2, 3, 1))


def test_bad_options_and_cotangents():
    x = np.ones((1, 4, 1, 2))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        linear_attention_chunked(x, x, x, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        normalized_linear_attention_chunked(x, x, x, chunk_size=0)
    with pytest.raises(ValueError, match="backend: expected one of 'numpy', 'numba', 'cuda', 'auto', got 'gpu'"):
        normalized_linear_attention_recurrent(x, x, x, backend="gpu")
    _, _, cache = normalized_linear_attention_recurrent(x, x, x)
    backward = NORMALIZED_FORMS["recurrent"][1]
    with pytest.raises(ValueError, match=r"do: expected shape \(B, T, H, V\) = \(1, 4, 1, 2\)"):
        backward(np.zeros((1, 4, 1, 3)), None, cache)
    with pytest.raises(ValueError, match=r"dht\[1\]: expected shape \(B, H, K\) = \(1, 1, 2\)"):
        backward(x, (None, np.zeros((1, 1, 3))), cache)
    with pytest.raises(ValueError, match="cache: expected the cache of normalized_linear_attention_chunked"):
        NORMALIZED_FORMS["chunked"][1](x, None, cache)
