"""LightNet's additive recurrence: every form, forward and backward, against each other and finite differences.

Error bound. Every output is a sum of products of q, v, S0, do, dht with positive weights
P_ts = exp(x_s - z_t) <= 1, the log-masses z being log-cumsum-exps of x. Each weight carries a
relative error of at most about (T (|z|max + 1) + |x|max) u: the recurrent and chunked forms
multiply up to T gate factors exp(g), each g = z_{t-1} - z_t rounded at |z|; the parallel form
takes one exp(x_s - z_t) with z_t from one logsumexp. Add n = 2 (T + K + V) + 16 roundings for the
sums and products. The gradient dx goes through the reverse scan (9) of the mixer's docstring,
whose terms are k' dk', the gate gradient dg = revcumsum(q dq - k' dk') and its carry; running
the same computation on absolute values (|q|, |v|, |S0|, |do|, |dht| with the same x) gives, for
each element, the sum of the absolute values of its terms (``magnitudes``). Two forms then agree
within

    tol = 4 (n + T (|z|max + 1) + |x|max) u * magnitude

elementwise; a bug (a missing term, a shifted index, a wrong sign) errs by the magnitude itself.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.gla import gla_recurrent_backward
from ref.mixers.lightnet import (
    FORMS,
    lightnet_chunked,
    lightnet_gate,
    lightnet_gate_backward,
    lightnet_global,
    lightnet_parallel,
    lightnet_parallel_backward,
    lightnet_recurrent,
)
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.lightnet

NAMES = ("o", "S", "z", "dq", "dx", "dv", "dS0", "dz0")
DHT_MODES = ("none", "S", "z", "both")


@st.composite
def lightnet_cases(draw, max_T=40, dtypes=(np.float64,)):
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    return dict(
        B=draw(st.integers(1, 2)),
        T=T,
        H=draw(st.integers(1, 2)),
        K=draw(st.integers(1, 5)),
        V=draw(st.integers(1, 5)),
        chunk_size=draw(st.one_of(st.just(1), st.integers(1, 17), st.just(T), st.just(T + 3))),
        x_scale=draw(st.sampled_from([0.1, 1.0, 5.0])),  # flat to peaked key logits
        scale=draw(st.sampled_from([None, 0.1, 1.0])),
        with_h0=draw(st.booleans()),
        dht=draw(st.sampled_from(DHT_MODES)),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V, dt = case["B"], case["T"], case["H"], case["K"], case["V"], case["dtype"]
    q = rng.standard_normal((B, T, H, K)).astype(dt)
    x = (case["x_scale"] * rng.standard_normal((B, T, H, K))).astype(dt)
    v = rng.standard_normal((B, T, H, V)).astype(dt)
    h0 = None
    if case["with_h0"]:
        S0 = rng.standard_normal((B, H, K, V)).astype(dt)
        h0 = (S0, (case["x_scale"] * rng.standard_normal((B, H, K))).astype(dt))
    do = rng.standard_normal((B, T, H, V)).astype(dt)
    dS = rng.standard_normal((B, H, K, V)).astype(dt) if case["dht"] in ("S", "both") else None
    dz = rng.standard_normal((B, H, K)).astype(dt) if case["dht"] in ("z", "both") else None
    return q, x, v, h0, do, (dS, dz)


def run(form, q, x, v, h0, do, dht, scale, chunk_size):
    forward, backward = FORMS[form]
    kwargs = {"scale": scale, "initial_state": h0}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size
    o, (S, z), cache = forward(q, x, v, **kwargs)
    dq, dx, dv, (dS0, dz0) = backward(do, dht, cache)
    return dict(zip(NAMES, (o, S, z, dq, dx, dv, dS0, dz0)))


def _abs(a):
    return None if a is None else np.abs(a).astype(np.float64)


def magnitudes(q, x, v, h0, do, dht, scale):
    """For each output and gradient, the sum of the absolute values of its terms (module docstring)."""
    x64 = x.astype(np.float64)
    s = abs(q.shape[3] ** -0.5 if scale is None else scale)
    h0abs = None if h0 is None else (_abs(h0[0]), h0[1].astype(np.float64))
    o, (S, z), cache = lightnet_recurrent(_abs(q), x64, _abs(v), scale=s, initial_state=h0abs)
    dS, dz = _abs(dht[0]), _abs(dht[1])
    dq, dk, dv, _, dS0 = gla_recurrent_backward(_abs(do), dS, cache.gla)
    k, g = cache.gate.k, cache.gate.g
    # the gate gradient's terms: revcumsum(|q| dq + k' dk') (+ |dht_S| . S)
    dG = np.flip(np.cumsum(np.flip(np.abs(q) * dq + k * dk, axis=1), axis=1), axis=1)
    if dS is not None:
        dG = dG + (dS * S).sum(-1)[:, None]
    direct = k * dk + dG
    direct[:, :-1] += dG[:, 1:]
    carry = np.zeros(z.shape) if dz is None else dz.copy()
    zbar = np.empty_like(direct)
    for t in range(x.shape[1] - 1, -1, -1):
        carry = direct[:, t] + carry
        zbar[:, t] = carry
        carry = np.exp(g[:, t]) * carry
    dx = k * (dk + zbar)
    dz0 = None if h0 is None else dG[:, 0] + carry
    return dict(o=o, S=S, z=np.abs(z) + 1, dq=dq, dx=dx, dv=dv, dS0=dS0, dz0=dz0)


def global_magnitudes(q, x, v, h0, do, dht, scale):
    """``magnitudes`` for the non-causal forms, where every token reads every position."""
    s = abs(q.shape[3] ** -0.5 if scale is None else scale)
    h0abs = None if h0 is None else (_abs(h0[0]), h0[1].astype(np.float64))
    qa, va, doa = _abs(q), _abs(v), _abs(do)
    o, (S, z), _ = lightnet_global(qa, x.astype(np.float64), va, scale=s, initial_state=h0abs)
    P = np.exp(x.astype(np.float64) - z[:, None])  # (B, T, H, K)
    dS = s * np.einsum("bthk,bthv->bhkv", qa, doa)  # every o_t reads S
    if dht[0] is not None:
        dS = dS + _abs(dht[0])
    dz = np.zeros(z.shape) if dht[1] is None else _abs(dht[1])
    dx = P * (np.einsum("bhkv,bthv->bthk", dS, va) + (dS * S).sum(-1)[:, None] + dz[:, None])
    dS0 = dz0 = None
    if h0 is not None:
        P0 = np.exp(h0[1] - z)
        dS0 = P0[..., None] * dS
        dz0 = P0 * ((dS * h0abs[0]).sum(-1) + (dS * S).sum(-1) + dz)
    return dict(
        o=o,
        S=S,
        z=np.abs(z) + 1,
        dq=s * np.einsum("bthv,bhkv->bthk", doa, S),
        dx=dx,
        dv=np.einsum("bthk,bhkv->bthv", P, dS),
        dS0=dS0,
        dz0=dz0,
    )


def bounds(q, x, v, h0, do, dht, scale, dtype, magnitudes=magnitudes):
    u = np.finfo(dtype).eps / 2
    B, T, H, K = q.shape
    V = v.shape[3]
    _, _, zt, _ = lightnet_gate(x.astype(np.float64), initial_state=None if h0 is None else h0[1].astype(np.float64))
    z_all = np.logaddexp.accumulate(x.astype(np.float64), axis=1)
    z_max = max(float(np.abs(z_all).max()), float(np.abs(zt).max()))
    if h0 is not None:
        z_max = max(z_max, float(np.abs(h0[1]).max()))
    n = 2 * (T + K + V) + 16
    factor = 4 * (n + T * (z_max + 1) + float(np.abs(x).max())) * u
    tiny = np.finfo(dtype).tiny
    terms = magnitudes(q, x, v, h0, do, dht, scale)
    return {name: None if m is None else factor * m + tiny for name, m in terms.items()}


@given(lightnet_cases())
def test_every_form_agrees_float64(case):
    q, x, v, h0, do, dht = make_arrays(case)
    want = run("recurrent", q, x, v, h0, do, dht, case["scale"], case["chunk_size"])
    tol = bounds(q, x, v, h0, do, dht, case["scale"], np.float64)
    for form in ("chunked", "parallel"):
        got = run(form, q, x, v, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(lightnet_cases(max_T=24, dtypes=(np.float32,)))
def test_float32_against_float64(case):
    q, x, v, h0, do, dht = make_arrays(case)
    up = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    h0_64 = None if h0 is None else (up(h0[0]), up(h0[1]))
    dht_64 = (up(dht[0]), up(dht[1]))
    want = run("recurrent", up(q), up(x), up(v), h0_64, up(do), dht_64, case["scale"], case["chunk_size"])
    tol = bounds(q, x, v, h0, do, dht, case["scale"], np.float32)
    for form in FORMS:
        if form == "global":
            continue
        got = run(form, q, x, v, h0, do, dht, case["scale"], case["chunk_size"])
        for name in NAMES:
            if got[name] is not None:
                assert got[name].dtype == np.float32, f"{form}: {name} is {got[name].dtype}"
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@given(lightnet_cases(max_T=24))
def test_global_is_the_parallel_form_with_an_all_ones_mask(case):
    q, x, v, h0, do, dht = make_arrays(case)
    T = q.shape[1]
    o, ht, cache = lightnet_global(q, x, v, scale=case["scale"], initial_state=h0)
    dq, dx, dv, dh0 = FORMS["global"][1](do, dht, cache)
    got = dict(zip(NAMES, (o, *ht, dq, dx, dv, *dh0)))
    o, ht, cache = lightnet_parallel(q, x, v, scale=case["scale"], initial_state=h0, mask=np.ones((T, T), dtype=bool))
    dq, dx, dv, dh0 = lightnet_parallel_backward(do, dht, cache)
    want = dict(zip(NAMES, (o, *ht, dq, dx, dv, *dh0)))
    tol = bounds(q, x, v, h0, do, dht, case["scale"], np.float64, magnitudes=global_magnitudes)
    for name in NAMES:
        assert_within(f"global: {name}", got[name], want[name], tol[name])


def test_global_reads_the_final_state_of_the_scan(rng):
    """o_t = scale q_t S_T for every t: the non-causal form is one scan, then a read."""
    B, T, H, K, V = 2, 9, 2, 3, 4
    q, x = rng.standard_normal((B, T, H, K)), 3 * rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    h0 = (rng.standard_normal((B, H, K, V)), rng.standard_normal((B, H, K)))
    _, (S, z), _ = lightnet_recurrent(q, x, v, initial_state=h0)
    o, (S_g, z_g), _ = lightnet_global(q, x, v, scale=0.5, initial_state=h0)
    np.testing.assert_allclose(S_g, S, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(z_g, z, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(o, 0.5 * np.einsum("bthk,bhkv->bthv", q, S), rtol=1e-13, atol=1e-14)


def test_global_form_is_permutation_equivariant(rng):
    B, T, H, K, V = 1, 12, 2, 3, 2
    q, x, v = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, V))
    perm = rng.permutation(T)
    o, _, _ = lightnet_global(q, x, v)
    o_p, _, _ = lightnet_global(q[:, perm], x[:, perm], v[:, perm])
    np.testing.assert_allclose(o_p, o[:, perm], rtol=1e-12, atol=1e-14)


def test_gate_is_the_cumsum_ratio(rng):
    """k' in (0, 1], g <= 0, exp(g) + k' = 1, and z_T = log(exp(z0) + sum exp(x))."""
    x = 10 * rng.standard_normal((2, 30, 2, 3))
    z0 = rng.standard_normal((2, 2, 3))
    for init in (None, z0):
        k, g, zt, _ = lightnet_gate(x, initial_state=init)
        assert (k > 0).all() and (k <= 1).all() and (g <= 0).all()
        ones = np.exp(g) + k
        ones[:, 0] = 1 if init is None else ones[:, 0]  # without z0 the first gate multiplies nothing
        np.testing.assert_allclose(ones, 1.0, rtol=1e-14)
        mass = np.exp(x).sum(axis=1) + (0 if init is None else np.exp(init))
        np.testing.assert_allclose(zt, np.log(mass), rtol=1e-13)


@pytest.mark.parametrize("with_h0", [False, True])
def test_gate_finite_differences(with_h0, rng):
    inputs = {"x": 2 * rng.standard_normal((1, 6, 2, 3))}
    if with_h0:
        inputs["initial_state"] = rng.standard_normal((1, 2, 3))

    def fwd(x, initial_state=None):
        return lightnet_gate(x, initial_state=initial_state)

    def bwd(dk, dg, dzt, cache):
        dx, dz0 = lightnet_gate_backward(dk, dg, dzt, cache)
        return (dx, dz0) if with_h0 else (dx,)

    gradcheck(fwd, bwd, inputs, rng=rng, name="lightnet_gate")


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("with_h0", [False, True])
def test_finite_differences(form, with_h0, rng):
    B, T, H, K, V = 1, 5, 2, 3, 2
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "x": 2 * rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
    }
    if with_h0:
        inputs["S0"] = rng.standard_normal((B, H, K, V))
        inputs["z0"] = rng.standard_normal((B, H, K))
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(q, x, v, S0=None, z0=None):
        h0 = None if S0 is None else (S0, z0)
        o, (S, z), cache = forward(q, x, v, scale=0.7, initial_state=h0, **extra)
        return o, S, z, cache

    def bwd(do, dS, dz, cache):
        dq, dx, dv, (dS0, dz0) = backward(do, (dS, dz), cache)
        if not with_h0:
            assert dS0 is None and dz0 is None
            return dq, dx, dv
        return dq, dx, dv, dS0, dz0

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"lightnet_{form}")


def test_masked_parallel_form_finite_differences(rng):
    """A mask with an empty row: that row reads only the initial state."""
    B, T, H, K, V = 1, 5, 1, 2, 3
    mask = rng.random((T, T)) < 0.5
    mask[2] = False
    inputs = {
        "q": rng.standard_normal((B, T, H, K)),
        "x": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
        "S0": rng.standard_normal((B, H, K, V)),
        "z0": rng.standard_normal((B, H, K)),
    }

    def fwd(q, x, v, S0, z0):
        o, (S, z), cache = lightnet_parallel(q, x, v, initial_state=(S0, z0), mask=mask)
        return o, S, z, cache

    def bwd(do, dS, dz, cache):
        dq, dx, dv, (dS0, dz0) = lightnet_parallel_backward(do, (dS, dz), cache)
        return dq, dx, dv, dS0, dz0

    gradcheck(fwd, bwd, inputs, rng=rng, name="lightnet_parallel (mask)")


def test_chunked_is_stable_for_long_peaked_sequences():
    """T = 20,000 with key logits of size ~30 (masses up to e^100): finite, and the same final state
    as the global form, computed without any scan."""
    rng = np.random.default_rng(11)
    B, T, H, K, V = 1, 20_000, 1, 3, 2
    q, x = rng.standard_normal((B, T, H, K)), 30 * rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    o, (S, z), _ = lightnet_chunked(q, x, v, chunk_size=64)
    o_g, (S_g, z_g), _ = lightnet_global(q, x, v)
    assert np.isfinite(o).all()
    np.testing.assert_allclose(S, S_g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(z, z_g, rtol=1e-12)
    np.testing.assert_allclose(o[:, -1], o_g[:, -1], rtol=1e-9, atol=1e-12)


def _args(**overrides):
    args = dict(q=np.zeros((1, 4, 2, 3)), x=np.zeros((1, 4, 2, 3)), v=np.zeros((1, 4, 2, 5)), initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_args(x=np.zeros((1, 4, 2, 2))), r"x: expected shape \(B, T, H, K\) = \(1, 4, 2, 3\) \(the shape of q\)"),
        (_args(x=np.full((1, 4, 2, 3), np.inf)), "x: expected finite values"),
        (_args(x=np.zeros((1, 4, 2, 3), np.float32)), r"x: expected dtype float64 \(the dtype of q\)"),
        (_args(v=np.zeros((1, 3, 2, 5))), r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(1, 4, 2\)"),
        (_args(initial_state=np.zeros((1, 2, 3, 5))), r"initial_state: expected a pair \(S, z\) or None"),
        (_args(initial_state=(np.zeros((1, 2, 3, 5)), None)), "initial_state: expected both S0"),
        (
            _args(initial_state=(np.zeros((1, 2, 5, 3)), np.zeros((1, 2, 3)))),
            r"initial_state\[0\]: expected shape \(B, H, K, V\) = \(1, 2, 3, 5\)",
        ),
        (
            _args(initial_state=(np.zeros((1, 2, 3, 5)), np.zeros((1, 2, 4)))),
            r"initial_state\[1\]: expected shape \(B, H, K\) = \(1, 2, 3\)",
        ),
        (
            _args(q=np.zeros((1, 0, 2, 3)), x=np.zeros((1, 0, 2, 3)), v=np.zeros((1, 0, 2, 5))),
            "q: expected a time axis",
        ),
    ],
)
@pytest.mark.parametrize("form", list(FORMS))
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["q"], args["x"], args["v"], initial_state=args["initial_state"])


def test_bad_options():
    q, v = np.zeros((1, 4, 1, 2)), np.zeros((1, 4, 1, 3))
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1, got 0"):
        lightnet_chunked(q, q, v, chunk_size=0)
    with pytest.raises(ValueError, match="scale: expected a finite number or None"):
        lightnet_recurrent(q, q, v, scale=float("nan"))
    with pytest.raises(ValueError, match="backend: lightnet_global supports 'numpy'"):
        lightnet_global(q, q, v, backend="numba")
    with pytest.raises(ValueError, match=r"mask: expected shape \(T, T\) = \(4, 4\)"):
        lightnet_parallel(q, q, v, mask=np.ones((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="mask: expected a boolean numpy array"):
        lightnet_parallel(q, q, v, mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match="mask: row 1 reads no position and there is no initial_state"):
        lightnet_parallel(q, q, v, mask=np.eye(4, dtype=bool) & (np.arange(4) != 1)[:, None])
    for form in FORMS:
        _, _, cache = FORMS[form][0](q, q, v)
        with pytest.raises(ValueError, match=r"dht\[0\]: expected shape \(B, H, K, V\) = \(1, 1, 2, 3\)"):
            FORMS[form][1](None, (np.zeros((1, 1, 3, 3)), None), cache)
        with pytest.raises(ValueError, match=r"dht\[1\]: expected shape \(B, H, K\) = \(1, 1, 2\)"):
            FORMS[form][1](None, (None, np.zeros((1, 1, 3))), cache)
        with pytest.raises(ValueError, match=r"dht: expected a pair \(S, z\) or None"):
            FORMS[form][1](None, np.zeros((1, 1, 2, 3)), cache)
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(B, H, K\) = \(1, 1, 2\)"):
        lightnet_gate(q, initial_state=np.zeros((1, 1, 3)))
