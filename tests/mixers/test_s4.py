"""S4 and S4D: HiPPO and its NPLR/DPLR forms, discretisation, kernels by every route, the
convolutional and recurrent forms equal forward and backward, every backward by finite differences."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.s4 import (
    FORMS,
    S4D_INITS,
    causal_conv,
    causal_conv_backward,
    discretize_dense,
    discretize_diag,
    hippo_legs,
    hippo_legs_dplr,
    hippo_legs_nplr,
    s4_discrete,
    s4_init,
    s4_kernel,
    s4_kernel_backward,
    s4d_discrete,
    s4d_init,
    s4d_kernel,
    s4d_kernel_backward,
    ssm_kernel_generating,
    ssm_kernel_powers,
    ssm_recurrence,
)
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.s4

S4D_ARGS = ("log_dt", "A_re", "A_im", "C_re", "C_im", "D", "B_re", "B_im")
S4_ARGS = ("log_dt", "Lambda_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im", "Ct_re", "Ct_im", "D")


def close(name, got, want, rtol=1e-10):
    """|got - want| <= rtol * max|want| (and a floor for an all-zero want); complex as (re, im) pairs."""
    if want is None:
        assert got is None, name
        return
    if np.iscomplexobj(got) or np.iscomplexobj(want):
        got, want = (np.stack([np.real(x), np.imag(x)]) for x in (got, want))
    assert_within(name, got, want, rtol * max(float(np.abs(want).max(initial=0.0)), 1e-3))


def full(re, im):
    """One stored mode per conjugate pair -> all N modes."""
    z = re + 1j * im
    return np.concatenate([z, z.conj()], axis=-1)


def s4d_params(rng, H=2, N2=3, *, with_B=True, with_D=True, dtype=np.float64):
    p = dict(log_dt=np.log(rng.uniform(0.05, 0.5, H)), A_re=-rng.uniform(0.1, 1.5, (H, N2)),
             A_im=rng.uniform(-4, 4, (H, N2)), C_re=rng.standard_normal((H, N2)), C_im=rng.standard_normal((H, N2)),
             D=rng.standard_normal(H) if with_D else None,
             B_re=rng.standard_normal((H, N2)) if with_B else None,
             B_im=rng.standard_normal((H, N2)) if with_B else None)
    return {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}


def s4_params(rng, H=2, N2=2, *, hippo=False, with_D=True):
    """A random DPLR SSM, or HiPPO-LegS (Λ, P, B) with a random C̃."""
    p = dict(log_dt=np.log(rng.uniform(0.05, 0.5, H)), Lambda_re=-rng.uniform(0.2, 1.0, (H, N2)),
             Lambda_im=rng.uniform(0, 3, (H, N2)), P_re=rng.standard_normal((H, N2)), P_im=rng.standard_normal((H, N2)),
             B_re=rng.standard_normal((H, N2)), B_im=rng.standard_normal((H, N2)),
             Ct_re=rng.standard_normal((H, N2)), Ct_im=rng.standard_normal((H, N2)),
             D=rng.standard_normal(H) if with_D else None)
    if hippo:
        q = s4_init(H, 2 * N2, rng)
        p.update({k: q[k] for k in ("Lambda_re", "Lambda_im", "P_re", "P_im", "B_re", "B_im")})
    return p


# --- HiPPO-LegS and its NPLR / DPLR forms -------------------------------------------------------


def test_hippo_legs_matches_its_definition():
    N = 6
    A, B = hippo_legs(N)
    for n in range(N):
        assert B[n] == np.sqrt(2 * n + 1)
        for k in range(N):
            want = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k] == pytest.approx(want, rel=1e-15, abs=0), (n, k)


@pytest.mark.parametrize("N", [1, 4, 7, 32])
def test_nplr_reconstructs_A_and_its_normal_part_is_minus_half_plus_skew(N):
    A, B = hippo_legs(N)
    S, P, B2 = hippo_legs_nplr(N)
    np.testing.assert_array_equal(B2, B)
    np.testing.assert_allclose(P, np.sqrt(np.arange(N) + 0.5), rtol=1e-15)
    np.testing.assert_allclose(S - np.outer(P, P), A, rtol=1e-14, atol=1e-13 * N)  # A = S - P P^T
    np.testing.assert_allclose(S + S.T, -np.eye(N), atol=1e-13 * N)  # S = -I/2 + skew
    np.testing.assert_allclose(S @ S.T, S.T @ S, atol=1e-12 * N**2)  # normal


@pytest.mark.parametrize("N", [2, 8, 64])
def test_dplr_reconstructs_A_from_one_mode_per_conjugate_pair(N):
    A, B = hippo_legs(N)
    S, P, _ = hippo_legs_nplr(N)
    Lam, Pt, Bt, V = hippo_legs_dplr(N)
    assert Lam.shape == Pt.shape == Bt.shape == (N // 2,) and V.shape == (N, N // 2)
    np.testing.assert_allclose(Lam.real, -0.5, rtol=1e-14)
    assert np.all(Lam.imag > 0) and np.all(np.diff(Lam.imag) > 0)
    tol = 1e-14 * N**2
    np.testing.assert_allclose(V.conj().T @ V, np.eye(N // 2), atol=tol)  # orthonormal columns
    np.testing.assert_allclose(V.T @ V, 0, atol=tol)  # V is orthogonal to conj(V): [V, conj V] is unitary
    half = (V * Lam) @ V.conj().T  # V diag(Λ) V^*
    np.testing.assert_allclose(2 * half.real, S, atol=tol)  # S = 2 Re(V Λ V^*)
    np.testing.assert_allclose(2 * half.real - np.outer(P, P), A, atol=tol)  # A = 2 Re(V Λ V^*) - P P^T
    np.testing.assert_allclose(Pt, V.conj().T @ P, rtol=1e-14)
    np.testing.assert_allclose(Bt, V.conj().T @ B, rtol=1e-14)
    # in the full eigenbasis A is diagonal plus low rank: V_f^* A V_f = diag(Λ_f) - P̃_f P̃_f^*
    Vf, Lf, Pf = np.concatenate([V, V.conj()], 1), np.concatenate([Lam, Lam.conj()]), np.concatenate([Pt, Pt.conj()])
    np.testing.assert_allclose(Vf.conj().T @ A @ Vf, np.diag(Lf) - np.outer(Pf, Pf.conj()), atol=tol)


# --- discretisation -----------------------------------------------------------------------------


def test_dense_discretisations_by_their_definitions(rng):
    N, dt = 4, 0.3
    A, B = hippo_legs(N)
    I = np.eye(N)
    Ab, Bb = discretize_dense(A, B, dt, "bilinear")
    inv = np.linalg.inv(I - dt / 2 * A)
    np.testing.assert_allclose(Ab, inv @ (I + dt / 2 * A), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(Bb, inv @ (dt * B), rtol=1e-13)
    # ZOH, independently: exp([[A, B], [0, 0]] dt) = [[Ā, B̄], [0, 1]] (Van Loan)
    M = np.zeros((N + 1, N + 1))
    M[:N, :N], M[:N, N] = A, B
    E = scipy.linalg.expm(M * dt)
    Ab, Bb = discretize_dense(A, B, dt, "zoh")
    np.testing.assert_allclose(Ab, E[:N, :N], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Bb, E[:N, N], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_diagonal_discretisation_is_the_dense_one_on_a_diagonal(rng, method):
    a = -rng.uniform(0.1, 2, 5) + 1j * rng.uniform(-5, 5, 5)
    B = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    Ab, Bb = discretize_diag(a, B, 0.2, method)
    Ad, Bd = discretize_dense(np.diag(a), B, 0.2, method)
    np.testing.assert_allclose(np.diag(Ab), Ad, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Bb, Bd, rtol=1e-13)


def test_bilinear_agrees_with_zoh_to_third_order(rng):
    a = -rng.uniform(0.1, 2, 4) + 1j * rng.uniform(-5, 5, 4)
    errs = [np.abs(discretize_diag(a, 1.0, dt, "bilinear")[0] - discretize_diag(a, 1.0, dt, "zoh")[0]).max()
            for dt in (1e-2, 5e-3)]
    assert 7.5 < errs[0] / errs[1] < 8.5  # O(dt^3): halving dt divides the error by 8


def test_discretize_dense_bad_input():
    with pytest.raises(ValueError, match=r"A: expected a square matrix \(N, N\), got shape \(2, 3\)"):
        discretize_dense(np.zeros((2, 3)), np.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"B: expected shape \(N,\) = \(2,\)"):
        discretize_dense(np.eye(2), np.zeros(3), 0.1)
    with pytest.raises(ValueError, match="dt: expected a finite step > 0, got 0.0"):
        discretize_dense(np.eye(2), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="method: expected one of 'zoh', 'bilinear', got 'euler'"):
        discretize_dense(np.eye(2), np.zeros(2), 0.1, "euler")


# --- the general SSM: recurrence, kernel by powers and by the generating function ------------------


@pytest.mark.parametrize("L", [1, 7, 16])
def test_generating_function_gives_the_kernel_of_powers(rng, L):
    A = rng.standard_normal((4, 4)) - 3 * np.eye(4)  # some stable A
    Ab, Bb = discretize_dense(A, rng.standard_normal(4), 0.2)
    C = rng.standard_normal(4)
    K = ssm_kernel_powers(Ab, Bb, C, L)
    Kg = ssm_kernel_generating(Ab, Bb, C, L)
    np.testing.assert_allclose(Kg.real, K, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(Kg.imag, 0, atol=1e-13)


def test_dense_hippo_recurrence_equals_its_causal_convolution(rng):
    N, L = 8, 40
    A, B = hippo_legs(N)
    Ab, Bb = discretize_dense(A, B, 1.0 / L)
    C = rng.standard_normal(N)
    u = rng.standard_normal(L)
    y_rec = ssm_recurrence(Ab, Bb, C, u)
    y_conv, _ = causal_conv(u[None, None], ssm_kernel_powers(Ab, Bb, C, L)[None])
    np.testing.assert_allclose(y_conv[0, 0], y_rec, rtol=1e-11, atol=1e-12)


# --- the causal FFT convolution -----------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 2, 13])
def test_causal_conv_is_the_direct_sum(rng, L):
    u, K, D = rng.standard_normal((2, 3, L)), rng.standard_normal((3, L)), rng.standard_normal(3)
    y, _ = causal_conv(u, K, D)
    want = np.zeros_like(u)
    for t in range(L):
        for s in range(t + 1):
            want[:, :, t] += K[:, t - s] * u[:, :, s]
    want += D[:, None] * u
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("with_D", [True, False])
def test_causal_conv_gradcheck(rng, with_D):
    inputs = dict(u=rng.standard_normal((2, 2, 7)), K=rng.standard_normal((2, 7)),
                  D=rng.standard_normal(2) if with_D else None)
    gradcheck(causal_conv, causal_conv_backward, inputs, rng=rng, name="causal_conv")


# --- S4D ----------------------------------------------------------------------------------------


def s4d_naive_kernel(p, L, method):
    """K by powers of the full (all N modes) diagonal SSM, discretised mode by mode: independent of
    the Vandermonde product, the 2 Re and the stored half."""
    K = np.empty((p["log_dt"].shape[0], L))
    for h in range(K.shape[0]):
        a = full(p["A_re"][h], p["A_im"][h])
        B = np.ones_like(a) if p.get("B_re") is None else full(p["B_re"][h], p["B_im"][h])
        Ab, Bb = discretize_dense(np.diag(a), B, np.exp(p["log_dt"][h]), method)
        Kh = ssm_kernel_powers(Ab, Bb, full(p["C_re"][h], p["C_im"][h]), L)
        np.testing.assert_allclose(Kh.imag, 0, atol=1e-12)
        K[h] = Kh.real
    return K


def kernel_args(p):
    return [p[k] for k in ("log_dt", "A_re", "A_im", "C_re", "C_im", "B_re", "B_im")]


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("with_B", [True, False])
@pytest.mark.parametrize("L", [1, 16, 33])
def test_s4d_kernel_equals_powers_of_the_full_ssm(rng, method, with_B, L):
    p = s4d_params(rng, with_B=with_B)
    K, _ = s4d_kernel(*kernel_args(p), L=L, discretization=method)
    close("K", K, s4d_naive_kernel(p, L, method), 1e-11)


@pytest.mark.parametrize("init", S4D_INITS)
def test_s4d_inits(rng, init):
    H, N = 3, 8
    p = s4d_init(H, N, rng, init=init)
    assert set(p) == set(S4D_ARGS) and p["A_re"].shape == (H, N // 2) and p["D"].shape == (H,)
    assert np.all(np.log(1e-3) <= p["log_dt"]) and np.all(p["log_dt"] <= np.log(1e-1))
    n = np.arange(N // 2)
    want = {"lin": -0.5 + 1j * np.pi * n, "inv": -0.5 + 1j * N / np.pi * (N / (2 * n + 1) - 1),
            "real": -(n + 1.0) + 0j, "legs": hippo_legs_dplr(N)[0]}[init]
    np.testing.assert_allclose(p["A_re"] + 1j * p["A_im"], np.broadcast_to(want, (H, N // 2)), rtol=1e-15)
    K, _ = s4d_kernel(*kernel_args(p), L=20)
    close("K", K, s4d_naive_kernel(p, 20, "zoh"), 1e-11)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_legs_is_the_dense_normal_part_of_hippo(rng, method):
    """The diagonal SSM (Λ, V^*B, C V) with one mode per pair is the dense SSM (S, B, C), S = A + P P^T."""
    N, L, dt = 8, 30, 0.05
    S, _, B = hippo_legs_nplr(N)
    Lam, _, Bt, V = hippo_legs_dplr(N)
    C = rng.standard_normal(N)
    Ab, Bb = discretize_dense(S, B, dt, method)
    want = ssm_kernel_powers(Ab, Bb, C, L)
    Cv = C @ V  # (N/2,)
    K, _ = s4d_kernel(np.log([dt]), Lam.real[None], Lam.imag[None], Cv.real[None], Cv.imag[None],
                      Bt.real[None], Bt.imag[None], L=L, discretization=method)
    close("K", K[0], want, 1e-11)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("with_B", [True, False])
def test_s4d_kernel_gradcheck(rng, method, with_B):
    p = s4d_params(rng, with_B=with_B)
    inputs = {k: p[k] for k in ("log_dt", "A_re", "A_im", "C_re", "C_im", "B_re", "B_im")}
    gradcheck(lambda log_dt, A_re, A_im, C_re, C_im, B_re, B_im: s4d_kernel(
        log_dt, A_re, A_im, C_re, C_im, B_re, B_im, L=9, discretization=method),
        s4d_kernel_backward, inputs, rng=rng, name="s4d_kernel")


def run_form(mixer, form, u, p, dy, **options):
    forward, backward = FORMS[mixer][form]
    names = S4D_ARGS if mixer == "s4d" else S4_ARGS
    y, cache = forward(u, *[p[k] for k in names], **options)
    grads = backward(dy, cache)
    order = ("u", "log_dt", "A_re", "A_im", "C_re", "C_im", "D", "B_re", "B_im") if mixer == "s4d" else (
        "u", *S4_ARGS)
    return dict(y=y, **{"d" + k: g for k, g in zip(order, grads)})


@st.composite
def s4d_cases(draw):
    return dict(Bn=draw(st.integers(1, 2)), H=draw(st.integers(1, 3)), N2=draw(st.integers(1, 4)),
                L=draw(st.one_of(st.just(1), st.integers(1, 40))), method=draw(st.sampled_from(["zoh", "bilinear"])),
                with_B=draw(st.booleans()), with_D=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)))


@given(s4d_cases())
def test_s4d_convolutional_and_recurrent_forms_agree(case):
    rng = np.random.default_rng(case["seed"])
    p = s4d_params(rng, case["H"], case["N2"], with_B=case["with_B"], with_D=case["with_D"])
    u = rng.standard_normal((case["Bn"], case["H"], case["L"]))
    dy = rng.standard_normal(u.shape)
    conv = run_form("s4d", "convolutional", u, p, dy, discretization=case["method"])
    rec = run_form("s4d", "recurrent", u, p, dy, discretization=case["method"])
    assert set(conv) == set(rec)
    for name in conv:
        close(name, conv[name], rec[name], 1e-10)


@pytest.mark.parametrize("form", ["convolutional", "recurrent"])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_forms_gradcheck(rng, form, method):
    p = s4d_params(rng, H=2, N2=2)
    forward, backward = FORMS["s4d"][form]
    inputs = dict(u=rng.standard_normal((2, 2, 6)), **p)
    gradcheck(lambda u, log_dt, A_re, A_im, C_re, C_im, D, B_re, B_im: forward(
        u, log_dt, A_re, A_im, C_re, C_im, D, B_re, B_im, discretization=method),
        backward, inputs, rng=rng, name=f"s4d_{form}")


def test_s4d_discrete_runs_the_recurrence_one_step_at_a_time(rng):
    p = s4d_params(rng, H=2, N2=3)
    u = rng.standard_normal((1, 2, 10))
    Abar, Bbar, C = s4d_discrete(*kernel_args(p))
    x = np.zeros((2, 3), complex)
    y = np.empty((2, 10))
    for k in range(10):
        x = Abar * x + Bbar * u[0, :, k, None]
        y[:, k] = 2 * (C * x).sum(-1).real + p["D"] * u[0, :, k]
    close("y", y, FORMS["s4d"]["convolutional"][0](u, *[p[k] for k in S4D_ARGS])[0][0], 1e-12)


def test_s4d_float32_stays_float32(rng):
    p = s4d_params(rng, dtype=np.float32)
    u = rng.standard_normal((2, 2, 12)).astype(np.float32)
    dy = rng.standard_normal(u.shape).astype(np.float32)
    conv = run_form("s4d", "convolutional", u, p, dy)
    rec = run_form("s4d", "recurrent", u, p, dy)
    for name in conv:
        assert conv[name].dtype == np.float32, name
        close(name, conv[name], rec[name], 1e-4)


# --- S4 (DPLR) ----------------------------------------------------------------------------------


def s4_args(p):
    return [p[k] for k in S4_ARGS[:-1]]


@pytest.mark.parametrize("hippo", [False, True])
@pytest.mark.parametrize("L", [1, 2, 15, 16])
def test_s4_kernel_by_cauchy_and_woodbury_equals_powers(rng, hippo, L):
    p = s4_params(rng, N2=3, hippo=hippo)
    K, _ = s4_kernel(*s4_args(p), L=L)
    Abar, Bbar, Cbar = s4_discrete(*s4_args(p), L=L)
    for h in range(K.shape[0]):
        want = ssm_kernel_powers(Abar[h], Bbar[h], Cbar[h], L)
        np.testing.assert_allclose(want.imag, 0, atol=1e-12)
        close(f"K[{h}]", K[h], want.real, 1e-10)


def test_s4_discrete_is_the_bilinear_rule_on_the_dense_dplr_matrix(rng):
    p = s4_params(rng, H=1, N2=3)
    lam, P, B = (full(p[k + "_re"][0], p[k + "_im"][0]) for k in ("Lambda", "P", "B"))
    dt = float(np.exp(p["log_dt"][0]))
    Ab, Bb = discretize_dense(np.diag(lam) - np.outer(P, P.conj()), B, dt, "bilinear")
    Abar, Bbar, Cbar = s4_discrete(*s4_args(p), L=12)
    close("Abar", Abar[0], Ab, 1e-12)
    close("Bbar", Bbar[0], Bb, 1e-12)
    Ct = full(p["Ct_re"][0], p["Ct_im"][0])
    close("Cbar", Cbar[0] @ (np.eye(6) - np.linalg.matrix_power(Ab, 12)), Ct, 1e-11)  # C̃ = C̄ (I - Ā^L)


def test_s4_with_hippo_is_the_dense_hippo_ssm(rng):
    """The DPLR kernel in HiPPO's eigenbasis equals the dense HiPPO-LegS SSM with C̃ = 2 Re(C̃_half V^*)."""
    N, L = 8, 24
    p = s4_params(rng, H=1, N2=N // 2, hippo=True)
    K, _ = s4_kernel(*s4_args(p), L=L)
    A, B = hippo_legs(N)
    V = hippo_legs_dplr(N)[3]
    Ab, Bb = discretize_dense(A, B, float(np.exp(p["log_dt"][0])), "bilinear")
    Ct = 2 * ((p["Ct_re"][0] + 1j * p["Ct_im"][0]) @ V.conj().T).real  # (N,) real, in the original basis
    Cbar = np.linalg.solve((np.eye(N) - np.linalg.matrix_power(Ab, L)).T, Ct)  # C̄ = C̃ (I - Ā^L)^{-1}
    close("K", K[0], ssm_kernel_powers(Ab, Bb, Cbar, L), 1e-10)


def test_s4_kernel_gradcheck(rng):
    p = s4_params(rng, N2=2)
    inputs = {k: p[k] for k in S4_ARGS[:-1]}
    gradcheck(lambda log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im: s4_kernel(
        log_dt, Lambda_re, Lambda_im, P_re, P_im, B_re, B_im, Ct_re, Ct_im, L=10),
        s4_kernel_backward, inputs, rng=rng, name="s4_kernel")


@pytest.mark.parametrize("hippo", [False, True])
@pytest.mark.parametrize("L", [1, 6, 13])
def test_s4_convolutional_and_recurrent_forms_agree(rng, hippo, L):
    p = s4_params(rng, N2=3, hippo=hippo, with_D=L != 6)
    u = rng.standard_normal((2, 2, L))
    dy = rng.standard_normal(u.shape)
    conv = run_form("s4", "convolutional", u, p, dy)
    rec = run_form("s4", "recurrent", u, p, dy)
    assert set(conv) == set(rec)
    for name in conv:
        close(name, conv[name], rec[name], 1e-9)


@pytest.mark.parametrize("form", ["convolutional", "recurrent"])
def test_s4_forms_gradcheck(rng, form):
    p = s4_params(rng, N2=2)
    forward, backward = FORMS["s4"][form]
    gradcheck(forward, backward, dict(u=rng.standard_normal((1, 2, 5)), **p), rng=rng, name=f"s4_{form}")


def test_s4_init_is_hippo(rng):
    p = s4_init(2, 8, rng)
    Lam, P, B, _ = hippo_legs_dplr(8)
    for name, want in (("Lambda", Lam), ("P", P), ("B", B)):
        np.testing.assert_array_equal(p[name + "_re"] + 1j * p[name + "_im"], np.broadcast_to(want, (2, 4)))
    assert set(p) == set(S4_ARGS)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(A_re=np.array([[-1.0, 0.0, -1.0]] * 2)),
         r"A_re: expected negative real parts \(A_re < 0, a stable, decaying mode\), got 0.0 at index \(0, 1\)"),
        (dict(A_im=np.zeros((2, 4))), r"A_im: expected shape \(H, N/2\) = \(2, 3\)"),
        (dict(C_re=np.zeros((3, 3))), r"C_re: expected shape \(H, N/2\) = \(2, 3\)"),
        (dict(B_im=None), r"B_im: expected an array \(the imaginary part of B; give both parts or neither\)"),
        (dict(D=np.zeros(3)), r"D: expected shape \(H,\) = \(2,\)"),
        (dict(log_dt=np.zeros((2, 1))), r"log_dt: expected 1 axes \(H,\)"),
        (dict(C_im=np.zeros((2, 3), np.float32)), "C_im: expected dtype float64 .the dtype of log_dt., got float32"),
        (dict(A_im=np.full((2, 3), np.nan)), "A_im: expected finite values"),
        (dict(u=np.zeros((1, 3, 5))), r"u: expected shape \(B, H, L\) with H = 2 \(from log_dt\), got \(1, 3, 5\)"),
        (dict(u=np.zeros((1, 2, 0))), "u: expected a time axis of length >= 1"),
        (dict(discretization="euler"), "discretization: expected one of 'zoh', 'bilinear', got 'euler'"),
    ],
)
def test_s4d_bad_input(rng, change, match):
    args = dict(u=np.zeros((1, 2, 5)), **s4d_params(rng), discretization="zoh")
    args.update(change)
    for form in ("convolutional", "recurrent"):
        with pytest.raises(ValueError, match=match):
            FORMS["s4d"][form][0](args["u"], *[args[k] for k in S4D_ARGS], discretization=args["discretization"])


def test_s4d_kernel_and_cotangent_bad_input(rng):
    p = s4d_params(rng)
    with pytest.raises(ValueError, match="L: expected an integer >= 1, got 0"):
        s4d_kernel(*kernel_args(p), L=0)
    _, cache = s4d_kernel(*kernel_args(p), L=5)
    with pytest.raises(ValueError, match=r"dK: expected shape \(H, L\) = \(2, 5\)"):
        s4d_kernel_backward(np.zeros((2, 4)), cache)
    y, cache = FORMS["s4d"]["recurrent"][0](np.zeros((1, 2, 5)), *[p[k] for k in S4D_ARGS])
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, H, L\) = \(1, 2, 5\)"):
        FORMS["s4d"]["recurrent"][1](np.zeros((1, 2, 4)), cache)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(Lambda_re=np.array([[-0.5, 0.1]] * 2)),
         r"Lambda_re: expected negative real parts \(Lambda_re < 0, .*\), got 0.1 at index \(0, 1\)"),
        (dict(Ct_re=np.zeros((2, 3))), r"Ct_re: expected shape \(H, N/2\) = \(2, 2\)"),
        (dict(P_im=np.zeros((2, 3))), r"P_im: expected shape \(H, N/2\) = \(2, 2\)"),
        (dict(B_re=None), r"B_re: expected an array \(the real part of B; give both parts\)"),
    ],
)
def test_s4_bad_input(rng, change, match):
    args = dict(u=np.zeros((1, 2, 5)), **s4_params(rng))
    args.update(change)
    for form in ("convolutional", "recurrent"):
        with pytest.raises(ValueError, match=match):
            FORMS["s4"][form][0](args["u"], *[args[k] for k in S4_ARGS])


def test_hippo_and_init_bad_input(rng):
    with pytest.raises(ValueError, match="N: expected an even state size"):
        hippo_legs_dplr(7)
    with pytest.raises(ValueError, match="N: expected an integer >= 1, got 0"):
        hippo_legs(0)
    with pytest.raises(ValueError, match="init: expected one of 'lin', 'inv', 'real', 'legs', got 'hippo'"):
        s4d_init(2, 8, rng, init="hippo")
    with pytest.raises(ValueError, match="N: expected an even state size"):
        s4_init(2, 5, rng)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator, got int"):
        s4d_init(2, 8, 0)
