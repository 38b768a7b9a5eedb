"""The Dynamical Systems Framework: the generic recurrence (finite differences, its matrix form), every
mixer's system against the mixer's own implementation, the two coincidences of linear attention and
S6, and why softmax attention needs a state that grows.

Error bounds. GLA, simple GLA, retention, linear attention and LightNet are compared with
``gla_cases.bounds`` (their systems compute GLA's terms, one step at a time as GLA's recurrent form).
For the other systems: every output and state entry of (1)-(2) is a sum of products
C Λ ... Λ B u (and Λ ... Λ h_{-1}); each product meets at most

    n = (T + 1) (N + d + 10)

roundings in either implementation (per step at most N + d + 2 in a full Λ h + B u, the readout
N + d + 1, and a few in building the matrices: exp, products with Δ or the scale, divisions by η).
So each implementation is within n u xabs of the exact value, xabs the same recurrence run on
absolute values (``abs_bounds``), and two within 2 n u xabs. The backward is again such sums
(``dsf_recurrent_backward`` on absolute values and |cotangents|). Where the mixer divides by a
positive normaliser (q, k > 0), its quotient adds the normaliser's relative error: factor 4
instead of 2. A bug errs by the size of xabs itself.
"""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers import dsf
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.mixers.gla import gla_recurrent, gla_recurrent_backward
from ref.mixers.lightnet import lightnet_gate, lightnet_recurrent
from ref.mixers.linear_attention import (
    EPS,
    normalized_linear_attention_recurrent,
    normalized_linear_attention_recurrent_backward,
)
from ref.mixers.retention import retention_recurrent
from ref.mixers.s4 import s4d_discrete, s4d_recurrent, s4d_recurrent_backward
from ref.mixers.selective_scan import selective_scan_recurrent, selective_scan_recurrent_backward
from ref.mixers.simple_gla import simple_gla_recurrent
from ref.mixers.ssd import ssd_recurrent, ssd_recurrent_backward
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds as gla_bounds
from tests.mixers.gla_cases import gla_cases, log_sigmoid
from tests.mixers.gla_cases import make_arrays as gla_arrays

pytestmark = pytest.mark.dsf

U64 = np.finfo(np.float64).eps / 2
TINY = np.finfo(np.float64).tiny


def elu1(x):
    """elu(x) + 1 > 0: positive features, so that normalisers stay positive."""
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


def heads_to_batch(x):
    """(B, T, H, ...) -> (B H, T, ...), the systems' layout."""
    return np.moveaxis(x, 2, 1).reshape(-1, x.shape[1], *x.shape[3:])


def absolute(x):
    return None if x is None else np.abs(x)


def abs_bounds(system, dy=None, dht=None, factor=2.0):
    """Tolerances (DSF layout) for comparing the system's run with another implementation: y, ht and,
    given cotangents, du and dinitial_state, each factor * n * u * (the same sums of absolute values)."""
    Bn, T, d = system.u.shape
    N = system.Lambda.shape[2]
    f = factor * (T + 1) * (N + d + 10) * U64
    yabs, habs, cache = dsf.dsf_recurrent(absolute(system.u), absolute(system.Lambda), absolute(system.B),
                                          absolute(system.C), absolute(system.D),
                                          initial_state=absolute(system.initial_state))
    tol = dict(y=f * yabs + TINY, ht=f * habs + TINY)
    if dy is not None:
        duabs, *_, dh0abs = dsf.dsf_recurrent_backward(np.abs(dy), absolute(dht), cache)
        tol.update(du=f * duabs + TINY, dh0=None if dh0abs is None else f * dh0abs + TINY)
    return tol


def run_with_grads(system, dy, dht):
    """y, ht, du, dinitial_state of the system, in the DSF layout."""
    y, ht, cache = dsf.dsf_recurrent(system.u, system.Lambda, system.B, system.C, system.D,
                                     initial_state=system.initial_state)
    du, *_, dh0 = dsf.dsf_recurrent_backward(dy, dht, cache)
    return dict(y=y, ht=ht, du=du, dh0=dh0)


# ---------------------------------------------------------------- the generic recurrence


def random_system(rng, full, time_invariant, with_D=True, with_h0=True, Bn=2, T=5, d=2, N=3, p=2):
    TL = 1 if time_invariant else T
    return dict(
        u=rng.standard_normal((Bn, T, d)),
        Lambda=rng.uniform(-1, 1, (Bn, TL, N, N) if full else (Bn, TL, N)),
        B=rng.standard_normal((Bn, TL, N, d)),
        C=rng.standard_normal((Bn, T, p, N)),  # one time-varying matrix in every case
        D=rng.standard_normal((Bn, TL, p, d)) if with_D else None,
        initial_state=rng.standard_normal((Bn, N)) if with_h0 else None,
    )


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("time_invariant", [False, True])
@pytest.mark.parametrize("optional", [False, True])
def test_dsf_finite_differences(full, time_invariant, optional, rng):
    inputs = random_system(rng, full, time_invariant, with_D=optional, with_h0=optional)

    def fwd(u, Lambda, B, C, D, initial_state):
        return dsf.dsf_recurrent(u, Lambda, B, C, D, initial_state=initial_state)

    gradcheck(fwd, dsf.dsf_recurrent_backward, inputs, rng=rng, name=f"dsf full={full} lti={time_invariant}")


def test_dsf_by_its_definition(rng):
    """(1)-(2) step by step with explicit matrices: a full Λ, every matrix time-varying."""
    s = random_system(rng, full=True, time_invariant=False)
    y, ht, _ = dsf.dsf_recurrent(**s)
    tol = abs_bounds(dsf.System(**s, output=None, state=None))
    for b in range(2):
        h = s["initial_state"][b]
        for t in range(5):
            h = s["Lambda"][b, t] @ h + s["B"][b, t] @ s["u"][b, t]
            want = s["C"][b, t] @ h + s["D"][b, t] @ s["u"][b, t]
            assert_within(f"y[{b}, {t}]", y[b, t], want, tol["y"][b, t])
        assert_within(f"ht[{b}]", ht[b], h, tol["ht"][b])


def test_a_diagonal_lambda_is_the_full_one_on_its_diagonal(rng):
    s = random_system(rng, full=False, time_invariant=False)
    full = dict(s, Lambda=np.einsum("btn,nm->btnm", s["Lambda"], np.eye(3)))
    y_diag, h_diag, _ = dsf.dsf_recurrent(**s)
    y_full, h_full, _ = dsf.dsf_recurrent(**full)
    tol = abs_bounds(dsf.System(**s, output=None, state=None))
    assert_within("y", y_full, y_diag, tol["y"])
    assert_within("ht", h_full, h_diag, tol["ht"])


@pytest.mark.parametrize("full", [False, True])
def test_the_kernel_is_the_recurrence_as_one_matrix(full, rng):
    s = random_system(rng, full, time_invariant=False, with_h0=False)
    Phi = dsf.dsf_kernel(s["Lambda"], s["B"], s["C"], s["D"], T=5)  # (Bn, T, p, T, d)
    y, _, _ = dsf.dsf_recurrent(**s)
    tol = abs_bounds(dsf.System(**s, output=None, state=None))
    assert_within("Phi u", np.einsum("btpsd,bsd->btp", Phi, s["u"]), y, tol["y"])
    assert np.all(Phi[:, np.triu_indices(5, 1)[0], :, np.triu_indices(5, 1)[1], :] == 0)  # causal


def test_float32_stays_float32(rng):
    s = {k: None if v is None else v.astype(np.float32) for k, v in random_system(rng, True, False).items()}
    y, ht, cache = dsf.dsf_recurrent(**s)
    grads = dsf.dsf_recurrent_backward(y, ht, cache)
    assert y.dtype == ht.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)


# ---------------------------------------------------------------- the attention family (GLA's bounds)

GLA_NAMES = ("o", "ht", "dq", "dk", "dv", "dgk", "dh0")


def gla_family_via_dsf(system, q, gk, scale, do, dht):
    """Run a GLA-family system, and turn its DSF gradients into GLA's by contracting the structure:
    B_t = k_t ⊗ I_V gives dk_t[i] = sum_v dB_t[(i, v), v]; C_t = scale q_t^T ⊗ I_V gives
    dq_t[i] = scale sum_v dC_t[v, (i, v)]; Λ_t = diag(exp(gk_t)) ⊗ I_V gives dgk_t[i] = sum_v
    (Λ_t dΛ_t)[(i, v)]."""
    Bn, T, H, K = q.shape
    V = system.u.shape[2]
    y, ht, cache = dsf.dsf_recurrent(system.u, system.Lambda, system.B, system.C, system.D,
                                     initial_state=system.initial_state)
    dstate = None if dht is None else dht.reshape(Bn * H, K * V)
    du, dLambda, dB, dC, _, dh0 = dsf.dsf_recurrent_backward(heads_to_batch(do), dstate, cache)
    back = lambda x: np.moveaxis(x.reshape(Bn, H, T, -1), 1, 2)  # noqa: E731  (B H, T, X) -> (B, T, H, X)
    dk = np.einsum("btkvv->btk", dB.reshape(Bn * H, T, K, V, V))
    dq = scale * np.einsum("btvkv->btk", dC.reshape(Bn * H, T, V, K, V))
    dgk = None
    if gk is not None:
        dgk = back((system.Lambda * dLambda).reshape(Bn * H, T, K, V).sum(axis=-1))
    return dict(o=system.output(y), ht=system.state(ht), dq=back(dq), dk=back(dk), dv=back(du), dgk=dgk,
                dh0=None if dh0 is None else dh0.reshape(Bn, H, K, V))


@given(gla_cases(max_T=16))
def test_gla_system_is_gla(case):
    q, k, v, gk, h0, do, dht = gla_arrays(case)
    scale = case["scale"]
    o, ht, cache = gla_recurrent(q, k, v, gk, scale=scale, initial_state=h0)
    want = dict(zip(GLA_NAMES, (o, ht, *gla_recurrent_backward(do, dht, cache))))
    s = q.shape[3] ** -0.5 if scale is None else scale
    got = gla_family_via_dsf(dsf.gla_system(q, k, v, gk, scale=scale, initial_state=h0), q, gk, s, do, dht)
    tol = gla_bounds(q, k, v, gk, h0, do, dht, scale, np.float64)
    for name in GLA_NAMES:
        assert_within(name, got[name], want[name], tol[name])


def test_the_gla_family_systems(rng):
    """Linear attention (Λ = I), retention (Λ = γ_h I, one matrix for every step) and simple GLA
    (Λ_t = exp(g_t) I) against their own recurrent forms, outputs and final states."""
    B, T, H, K, V = 2, 9, 3, 3, 2
    q, k = rng.standard_normal((2, B, T, H, K))
    v, S0 = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    g = log_sigmoid(rng.standard_normal((B, T, H)))
    gamma = np.array([0.5, 0.9, 0.99])
    cases = {
        "linear attention": (dsf.linear_attention_system(q, k, v, initial_state=S0),
                             gla_recurrent(q, k, v, None, initial_state=S0), None),
        "retention": (dsf.retention_system(q, k, v, gamma=gamma, initial_state=S0),
                      retention_recurrent(q, k, v, gamma=gamma, initial_state=S0),
                      np.broadcast_to(np.log(gamma)[None, None, :, None], q.shape)),
        "simple GLA": (dsf.simple_gla_system(q, k, v, g, initial_state=S0),
                       simple_gla_recurrent(q, k, v, g, initial_state=S0), np.broadcast_to(g[..., None], q.shape)),
    }
    for name, (system, (o, ht, _), gk) in cases.items():
        tol = gla_bounds(q, k, v, gk, S0, np.ones_like(v), None, None, np.float64)
        got_o, got_ht = dsf.dsf_run(system)
        assert_within(f"{name}: o", got_o, o, tol["o"])
        assert_within(f"{name}: ht", got_ht, ht, tol["ht"])
    assert dsf.retention_system(q, k, v).Lambda.shape[1] == 1  # time-invariant: one Λ for every step


@pytest.mark.parametrize("with_state", [False, True])
def test_lightnet_system_is_lightnet(with_state, rng):
    B, T, H, K, V = 2, 8, 2, 3, 2
    q, x = rng.standard_normal((2, B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    state = (rng.standard_normal((B, H, K, V)), rng.standard_normal((B, H, K))) if with_state else None
    o, (S, z), _ = lightnet_recurrent(q, x, v, initial_state=state)
    got_o, (got_S, got_z) = dsf.dsf_run(dsf.lightnet_system(q, x, v, initial_state=state))
    k, gate, _, _ = lightnet_gate(x, initial_state=None if state is None else state[1])
    tol = gla_bounds(q, k, v, gate, None if state is None else state[0], np.ones_like(v), None, None, np.float64)
    assert_within("o", got_o, o, tol["o"])
    assert_within("S", got_S, S, tol["ht"])
    np.testing.assert_array_equal(got_z, z)  # the gate's own recurrence: the same code, the same numbers


# ---------------------------------------------------------------- normalised linear attention


def normalized_inputs(rng, B=2, T=9, H=2, K=3, V=2):
    q, k = elu1(rng.standard_normal((2, B, T, H, K)))
    v = rng.standard_normal((B, T, H, V))
    return q, k, v, (rng.standard_normal((B, H, K, V)), elu1(rng.standard_normal((B, H, K))))


def test_normalized_linear_attention_as_two_systems(rng):
    q, k, v, state = normalized_inputs(rng)
    o, (S, z), _ = normalized_linear_attention_recurrent(q, k, v, initial_state=state)
    numerator, denominator = dsf.normalized_linear_attention_systems(q, k, v, initial_state=state)
    got_o, (got_S, got_z) = dsf.dsf_run_normalized(numerator, denominator)
    tol_n, tol_d = abs_bounds(numerator, factor=4), abs_bounds(denominator, factor=4)
    d = denominator.output(dsf.dsf_run(denominator)[0].reshape(denominator.u.shape[0], -1, 1))  # (B, T, H, 1)
    # o = n / d: the numerator's error over d, plus |o| times the denominator's relative error
    tol_o = (numerator.output(tol_n["y"]) + np.abs(o) * denominator.output(tol_d["y"])) / d + 4 * U64 * np.abs(o)
    assert_within("o", got_o, o, tol_o)
    assert_within("S", got_S, S, numerator.state(tol_n["ht"]))
    assert_within("z", got_z, z, denominator.state(tol_d["ht"])[..., 0])


def test_normalized_linear_attention_as_one_system(rng):
    """The normaliser inside the transition: Λ_t = η_{t-1} / η_t, and the same output and state."""
    q, k, v, state = normalized_inputs(rng)
    o, (S, z), cache = normalized_linear_attention_recurrent(q, k, v, initial_state=state)
    system = dsf.normalized_linear_attention_system(q, k, v, initial_state=state)
    do = rng.standard_normal(o.shape)
    got = run_with_grads(system, heads_to_batch(do), None)
    tol = abs_bounds(system, heads_to_batch(do), None, factor=4)
    B, T, H, K = q.shape
    V = v.shape[3]
    eta = np.einsum("bthk,bthk->bth", q, np.cumsum(k, axis=1) + state[1][:, None]) * K**-0.5 + EPS
    assert_within("o", system.output(got["y"]), o, system.output(tol["y"]))
    S_got, z_got = system.state(got["ht"])
    assert_within("S", S_got, S, system.state(tol["ht"])[0] + 4 * U64 * np.abs(S))
    np.testing.assert_allclose(z_got, z, rtol=4 * (T + 2) * U64)  # positive sums: relative bound
    np.testing.assert_allclose(heads_to_batch(eta[..., None])[..., 0], 1 / (
        np.cumprod(system.Lambda[..., 0], axis=1)), rtol=4 * (T + K + 4) * U64)  # Λ telescopes: prod = 1 / η_t
    # u = v and the matrices do not depend on v: du is GLA's dv of the quotient's numerator
    dv = normalized_linear_attention_recurrent_backward(do, None, cache)[2]
    assert_within("dv", system.output(got["du"]), dv, system.output(tol["du"]))


# ---------------------------------------------------------------- the SSMs


@pytest.mark.parametrize("modes", [("variable", "variable"), ("fixed", "grouped"), ("grouped", "fixed")])
@pytest.mark.parametrize("options", [False, True])
def test_selective_scan_system_is_s6(modes, options, rng):
    Bn, Dn, L, N, G = 2, 4, 7, 3, 2
    shapes = {"fixed": (Dn, N), "variable": (Bn, N, L), "grouped": (Bn, G, N, L)}
    u = rng.standard_normal((Bn, Dn, L))
    delta = 0.5 * rng.uniform(size=(Bn, Dn, L)) - (0.25 if options else 0)
    A = -(0.1 + rng.uniform(size=(Dn, N)))
    Bm, Cm = rng.standard_normal(shapes[modes[0]]), rng.standard_normal(shapes[modes[1]])
    D = rng.standard_normal(Dn) if options else None
    bias = 0.5 * rng.uniform(size=Dn) if options else None
    h0 = rng.standard_normal((Bn, Dn, N)) if options else None
    dout, dlast = rng.standard_normal((Bn, Dn, L)), rng.standard_normal((Bn, Dn, N))
    out, last, cache = selective_scan_recurrent(u, delta, A, Bm, Cm, D, None, bias, options, initial_state=h0,
                                                return_last_state=True)
    du, *_, dh0 = selective_scan_recurrent_backward(dout, dlast, cache)
    system = dsf.selective_scan_system(u, delta, A, Bm, Cm, D, bias, options, initial_state=h0)
    dy = np.moveaxis(dout, 2, 1)
    got = run_with_grads(system, dy, dlast.reshape(Bn, Dn * N))
    tol = abs_bounds(system, dy, dlast.reshape(Bn, Dn * N))
    assert_within("out", system.output(got["y"]), out, system.output(tol["y"]))
    assert_within("last_state", system.state(got["ht"]), last, system.state(tol["ht"]))
    assert_within("du", system.output(got["du"]), du, system.output(tol["du"]))
    if options:
        assert_within("dinitial_state", system.state(got["dh0"]), dh0, system.state(tol["dh0"]))


def test_ssd_system_is_ssd(rng):
    b, l, h, p, n = 2, 7, 2, 3, 2
    X, B, C = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    A = -rng.uniform(0, 1, (b, l, h))
    S0, dY, dF = rng.standard_normal((b, h, p, n)), rng.standard_normal((b, l, h, p)), rng.standard_normal((b, h, p, n))
    Y, F, cache = ssd_recurrent(X, A, B, C, initial_states=S0)
    dX, *_, dS0 = ssd_recurrent_backward(dY, dF, cache)
    system = dsf.ssd_system(X, A, B, C, initial_states=S0)
    got = run_with_grads(system, heads_to_batch(dY), dF.reshape(b * h, p * n))
    tol = abs_bounds(system, heads_to_batch(dY), dF.reshape(b * h, p * n))
    assert_within("Y", system.output(got["y"]), Y, system.output(tol["y"]))
    assert_within("final_state", system.state(got["ht"]), F, system.state(tol["ht"]))
    assert_within("dX", system.output(got["du"]), dX, system.output(tol["du"]))
    assert_within("dinitial_states", system.state(got["dh0"]), dS0, system.state(tol["dh0"]))


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_s4d_system_is_s4d_with_2x2_real_blocks(discretization, rng):
    Bn, H, M, L = 2, 2, 3, 8
    p = dict(log_dt=np.log(rng.uniform(0.05, 0.5, H)), A_re=-rng.uniform(0.1, 1.5, (H, M)),
             A_im=rng.uniform(-4, 4, (H, M)), C_re=rng.standard_normal((H, M)), C_im=rng.standard_normal((H, M)),
             D=rng.standard_normal(H), B_re=rng.standard_normal((H, M)), B_im=rng.standard_normal((H, M)))
    u, dy = rng.standard_normal((2, Bn, H, L))
    y, cache = s4d_recurrent(u, **p, discretization=discretization)
    du = s4d_recurrent_backward(dy, cache)[0]
    system = dsf.s4d_system(u, **p, discretization=discretization)
    assert system.Lambda.ndim == 4 and system.Lambda.shape[1] == 1  # full (2 x 2 blocks), time-invariant
    got = run_with_grads(system, dy.reshape(Bn * H, L, 1), None)
    tol = abs_bounds(system, dy.reshape(Bn * H, L, 1), None, factor=6)  # complex products: 3 roundings per real one
    assert_within("y", system.output(got["y"]), y, system.output(tol["y"]))
    assert_within("du", system.output(got["du"]), du, system.output(tol["du"]))
    Abar, Bbar, _ = s4d_discrete(p["log_dt"], p["A_re"], p["A_im"], p["C_re"], p["C_im"], p["B_re"], p["B_im"],
                                 discretization=discretization)
    x = np.zeros((Bn, H, M), complex)
    for t in range(L):
        x = Abar * x + Bbar * u[:, :, t, None]
    state = system.state(got["ht"])
    htol = system.state(tol["ht"])
    assert_within("state (re)", state.real, x.real, np.abs(htol))
    assert_within("state (im)", state.imag, x.imag, np.abs(htol))


# ---------------------------------------------------------------- softmax attention: a state that grows


def test_softmax_attention_is_a_dsf_whose_state_is_the_kv_cache(rng):
    B, T, H, K, V = 2, 7, 2, 3, 2
    q, k = rng.standard_normal((2, B, T, H, K))
    v, do = rng.standard_normal((2, B, T, H, V))
    o, cache = attention_parallel(q, k, v)
    dv = attention_parallel_backward(do, cache)[2]
    system = dsf.softmax_attention_system(q, k, v)
    assert system.Lambda.shape[2] == T * V  # N = T V: the state grows with the sequence
    got = run_with_grads(system, heads_to_batch(do), None)
    tol = abs_bounds(system, heads_to_batch(do), None)
    assert_within("o", system.output(got["y"]), o, system.output(tol["y"]))
    assert_within("dv", system.output(got["du"]), dv, system.output(tol["du"]))
    np.testing.assert_array_equal(system.state(got["ht"]), np.moveaxis(v, 1, 2))  # the cached values, exactly


def numerical_rank(M, rtol=1e-8):
    """Singular values above rtol times the largest. Rounding leaves ~T u relative noise (1e-15);
    softmax's smallest singular value here stays above 1e-5 of the largest (over 300 random draws of
    these shapes), so 1e-8 separates the two."""
    s = np.linalg.svd(M, compute_uv=False)
    return int((s > rtol * s[0]).sum()), s


def test_softmax_attention_has_no_finite_state(rng):
    """Across any cut τ the kernel block Φ[t >= τ, s < τ] of a DSF has rank <= N. Linear attention's
    stays at K (its N with V = 1); softmax attention's is full, min(τ, T - τ): it grows with T."""
    B, T, H, K, V = 1, 16, 1, 3, 1
    q, k = rng.standard_normal((2, B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    for name, system in (("softmax", dsf.softmax_attention_system(q, k, v, scale=1.0)),
                         ("linear", dsf.linear_attention_system(q, k, v, scale=1.0))):
        Phi = dsf.dsf_kernel(system.Lambda, system.B, system.C, system.D, T=T)[0, :, 0, :, 0]  # (T, T)
        for tau in (4, 8, 12):
            rank, s = numerical_rank(Phi[tau:, :tau])
            if name == "softmax":
                assert rank == min(tau, T - tau), (tau, s)
            else:
                assert rank == K, (tau, s)


# ---------------------------------------------------------------- the coincidences of linear attention and S6


def test_s6_with_shared_decay_is_gla(rng):
    """(a): Δ_t, A, b_t, c_t shared by the channels of each head (grouped B and C, as mamba_ssm)."""
    Bn, heads, V, N, L = 2, 2, 3, 3, 7
    Dn = heads * V
    u = rng.standard_normal((Bn, Dn, L))
    delta = np.repeat(rng.uniform(0.1, 1, (Bn, heads, L)), V, axis=1)  # one Δ_t per head
    A = np.repeat(-rng.uniform(0.1, 1, (heads, N)), V, axis=0)  # one row of A per head
    Bg, Cg = rng.standard_normal((2, Bn, heads, N, L))
    h0 = rng.standard_normal((Bn, Dn, N))
    out, last, _ = selective_scan_recurrent(u, delta, A, Bg, Cg, initial_state=h0, return_last_state=True)
    args = dsf.selective_scan_as_gla(u, delta, A, Bg, Cg, initial_state=h0, heads=heads)
    o, ht, _ = gla_recurrent(**args)
    tol = gla_bounds(args["q"], args["k"], args["v"], args["gk"], args["initial_state"], np.ones_like(args["v"]),
                     None, 1.0, np.float64)
    to_s6 = lambda x: np.moveaxis(x.reshape(Bn, L, Dn), 1, 2)  # noqa: E731  (B, L, heads, V) -> (B, D, L)
    assert_within("out", to_s6(o), out, to_s6(tol["o"]))
    assert_within("last_state", np.swapaxes(ht, -1, -2).reshape(Bn, Dn, N), last,
                  np.swapaxes(tol["ht"], -1, -2).reshape(Bn, Dn, N))


def test_every_s6_is_gla_with_one_head_per_channel(rng):
    """(a) with V = 1: nothing shared, Δ and A per channel, a fixed B per channel."""
    Bn, Dn, N, L = 2, 3, 4, 6
    u, delta = rng.standard_normal((Bn, Dn, L)), rng.standard_normal((Bn, Dn, L))
    A, Bf, Cv = -rng.uniform(0.1, 2, (Dn, N)), rng.standard_normal((Dn, N)), rng.standard_normal((Bn, N, L))
    bias = rng.uniform(size=Dn)
    out, last, _ = selective_scan_recurrent(u, delta, A, Bf, Cv, None, None, bias, True, return_last_state=True)
    args = dsf.selective_scan_as_gla(u, delta, A, Bf, Cv, delta_bias=bias, delta_softplus=True, heads=Dn)
    o, ht, _ = gla_recurrent(**args)
    tol = gla_bounds(args["q"], args["k"], args["v"], args["gk"], None, np.ones_like(args["v"]), None, 1.0,
                     np.float64)
    assert_within("out", np.moveaxis(o[..., 0], 1, 2), out, np.moveaxis(tol["o"][..., 0], 1, 2))
    assert_within("last_state", ht[..., 0], last, tol["ht"][..., 0])


@pytest.mark.parametrize("simple", [False, True])
def test_gla_with_a_factored_gate_is_s6(simple, rng):
    """(a) the other way: gk_t = Δ_t A; simple GLA is A = -1, Δ_t = -g_t."""
    B, T, H, K, V = 2, 8, 2, 3, 2
    q, k = rng.standard_normal((2, B, T, H, K))
    v, S0 = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    if simple:
        g = log_sigmoid(rng.standard_normal((B, T, H)))
        delta, A = -g, -np.ones((H, K))
        o, ht, _ = simple_gla_recurrent(q, k, v, g, scale=0.7, initial_state=S0)
    else:
        delta, A = rng.uniform(0.1, 1, (B, T, H)), -rng.uniform(0.1, 1, (H, K))
        o, ht, _ = gla_recurrent(q, k, v, delta[..., None] * A, scale=0.7, initial_state=S0)
    args = dsf.gla_as_selective_scan(q, k, v, delta, A, scale=0.7, initial_state=S0)
    out, last, _ = selective_scan_recurrent(args["u"], args["delta"], args["A"], args["B"], args["C"],
                                            initial_state=args["initial_state"], return_last_state=True)
    tol = gla_bounds(q, k, v, delta[..., None] * A, S0, np.ones_like(v), None, 0.7, np.float64)
    # S6 rebuilds Δ_t (k_t / Δ_t) and scale q_t: three roundings more per term, inside the bound's slack
    assert_within("o", np.moveaxis(out, 1, 2).reshape(B, T, H, V), o, tol["o"])
    assert_within("ht", last.reshape(B, H, V, K), np.swapaxes(ht, -1, -2), np.swapaxes(tol["ht"], -1, -2))


def test_normalized_attention_with_a_growing_normaliser_is_ssd(rng):
    """(b): a query constant in time and positive keys make η_t = scale q . z_t grow."""
    B, T, H, K, V = 2, 9, 2, 3, 2
    q = np.repeat(elu1(rng.standard_normal((B, 1, H, K))), T, axis=1)
    k, v = elu1(rng.standard_normal((B, T, H, K))), rng.standard_normal((B, T, H, V))
    o, _, _ = normalized_linear_attention_recurrent(q, k, v)
    args = dsf.normalized_attention_as_ssd(q, k, v)
    assert np.all(args["A"] <= 0)
    Y, _, _ = ssd_recurrent(**args)
    system = dsf.normalized_linear_attention_system(q, k, v)
    tol = system.output(abs_bounds(system, factor=4)["y"])  # exp(log(η_{t-1} / η_t)): two roundings more
    assert_within("o", Y, o, tol)


def test_ssd_is_linear_attention_over_a_growing_normaliser(rng):
    """(b) the other way: η_t = exp(-(A_0 + ... + A_t)), keys η_t B_t; o / η is SSD's Y."""
    b, l, h, p, n = 2, 8, 2, 3, 2
    X, B, C = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    A, S0 = -rng.uniform(0, 1, (b, l, h)), rng.standard_normal((b, h, p, n))
    Y, _, _ = ssd_recurrent(X, A, B, C, initial_states=S0)
    args, eta = dsf.ssd_as_normalized_attention(X, A, B, C, initial_states=S0)
    assert np.all(np.diff(eta, axis=1) >= 0) and np.all(eta >= 1)
    o, _, _ = gla_recurrent(args["q"], args["k"], args["v"], None, scale=1.0, initial_state=args["initial_state"])
    tol = abs_bounds(dsf.ssd_system(X, A, B, C, initial_states=S0), factor=4)
    # the factored form multiplies by η_s and divides by η_t instead of multiplying exp(G_t - G_s): each
    # factor carries |G| l u more (the exponent's rounding), at most 2 l |G|max roundings per term
    G = float(np.abs(np.cumsum(A, axis=1)).max())
    system = dsf.ssd_system(X, A, B, C, initial_states=S0)
    assert_within("Y", o / eta[..., None], Y, system.output(tol["y"]) * (1 + 2 * l * G))


def test_the_conditions_of_the_coincidences_are_checked(rng):
    Bn, Dn, N, L = 1, 2, 2, 4
    u, Bv, Cv = rng.standard_normal((Bn, Dn, L)), rng.standard_normal((Bn, N, L)), rng.standard_normal((Bn, N, L))
    A = -np.ones((Dn, N))
    with pytest.raises(ValueError, match=r"delta: expected one step size per \(batch, time\).*shared by the channels"):
        dsf.selective_scan_as_gla(u, rng.uniform(size=(Bn, Dn, L)), A, Bv, Cv)
    with pytest.raises(ValueError, match=r"A: expected the same row A\[d\] shared by the channels"):
        dsf.selective_scan_as_gla(u, np.ones((Bn, Dn, L)), np.array([[-1.0, -2.0], [-3.0, -4.0]]), Bv, Cv)
    with pytest.raises(ValueError, match=r"B: expected input vectors b_t shared by the channels"):
        dsf.selective_scan_as_gla(u, np.ones((Bn, Dn, L)), A, rng.standard_normal((Dn, N)), Cv)
    with pytest.raises(ValueError, match=r"heads: expected a divisor of the number of channels D = 2, got 3"):
        dsf.selective_scan_as_gla(u, np.ones((Bn, Dn, L)), A, Bv, Cv, heads=3)
    q, k, v = rng.standard_normal((3, 1, 4, 1, 2))
    with pytest.raises(ValueError, match=r"delta: expected step sizes > 0"):
        dsf.gla_as_selective_scan(q, k, v, np.zeros((1, 4, 1)), -np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"A: expected negative values"):
        dsf.gla_as_selective_scan(q, k, v, np.ones((1, 4, 1)), np.zeros((1, 2)))
    # a query that turns away from the keys makes η fall: Λ_t > 1, no SSD
    qd = np.array([1.0, 1.0, 0.1, 0.1])[None, :, None, None] * np.ones((1, 4, 1, 2))
    falls = r"q, k: expected a normaliser eta_t .* never decreases .* at \(b, t, h\) = \(0, 2, 0\)"
    with pytest.raises(ValueError, match=falls):
        dsf.normalized_attention_as_ssd(qd, np.ones((1, 4, 1, 2)), v)


# ---------------------------------------------------------------- bad input


def _system_args(**overrides):
    args = dict(u=np.zeros((2, 4, 3)), Lambda=np.zeros((2, 4, 5)), B=np.zeros((2, 4, 5, 3)), C=np.zeros((2, 4, 1, 5)),
                D=None, initial_state=None)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(u=np.zeros((2, 0, 3))), r"u: expected a time axis of length >= 1"),
        (dict(u=np.zeros((2, 4))), r"u: expected 3 axes \(Bn, T, d\)"),
        (dict(Lambda=np.zeros((2, 4, 5, 4))), r"Lambda: expected \(Bn, T, N\) \(diagonal\) or \(Bn, T, N, N\)"),
        (dict(Lambda=np.zeros((2, 3, 5))), r"Lambda: expected shape \(Bn, T, N\) = \(2, 4 or 1, 5\)"),
        (dict(B=np.zeros((2, 4, 5, 2))), r"B: expected shape \(Bn, T, N, d\) = \(2, 4 or 1, 5, 3\)"),
        (dict(C=np.zeros((2, 4, 1, 4))), r"C: expected shape \(Bn, T, p, N\) = \(2, 4 or 1, 1, 5\)"),
        (dict(D=np.zeros((2, 4, 2, 3))), r"D: expected shape \(Bn, T, p, d\) = \(2, 4 or 1, 1, 3\)"),
        (dict(initial_state=np.zeros((2, 4))), r"initial_state: expected shape \(Bn, N\) = \(2, 5\)"),
        (dict(B=np.zeros((2, 4, 5, 3), np.float32)), r"B: expected dtype float64 \(the dtype of u\), got float32"),
        (dict(C=np.full((2, 4, 1, 5), np.nan)), r"C: expected finite values"),
    ],
)
def test_dsf_bad_input(overrides, match):
    with pytest.raises(ValueError, match=match):
        dsf.dsf_recurrent(**_system_args(**overrides))


def test_dsf_bad_cotangents_and_options():
    y, ht, cache = dsf.dsf_recurrent(**_system_args())
    with pytest.raises(ValueError, match=r"dy: expected shape \(Bn, T, p\) = \(2, 4, 1\)"):
        dsf.dsf_recurrent_backward(np.zeros((2, 4, 2)), None, cache)
    with pytest.raises(ValueError, match=r"dht: expected shape \(Bn, N\) = \(2, 5\)"):
        dsf.dsf_recurrent_backward(y, np.zeros((2, 4)), cache)
    with pytest.raises(ValueError, match=r"backend: dsf_recurrent supports 'numpy', got 'numba'"):
        dsf.dsf_recurrent(**_system_args(), backend="numba")
    with pytest.raises(ValueError, match=r"T: expected an integer >= 1, got 0"):
        dsf.dsf_kernel(np.zeros((1, 1, 2)), np.zeros((1, 1, 2, 1)), np.zeros((1, 1, 1, 2)), T=0)
    q = np.ones((1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"gamma: expected decays in the open interval \(0, 1\)"):
        dsf.retention_system(q, q, q, gamma=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"initial_state: expected a pair \(S0, z0\) or None"):
        dsf.normalized_linear_attention_systems(q, q, q, initial_state=np.ones((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"k: expected shape \(B, T, H, K\) = \(1, 3, 2, 2\) \(the shape of q\)"):
        dsf.softmax_attention_system(q, np.ones((1, 4, 2, 2)), q)
    with pytest.raises(ValueError, match=r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(1, 3, 2\)"):
        dsf.softmax_attention_system(q, q, np.ones((1, 3, 1, 2)))
    with pytest.raises(ValueError, match=r"initial_state: expected both S0 \(B, H, K, V\) and z0"):
        dsf.normalized_linear_attention_system(q, q, q, initial_state=(np.ones((1, 2, 2, 2)), None))
