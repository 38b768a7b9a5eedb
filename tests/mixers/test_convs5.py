"""ConvS5: the parallel scan against the loop, forward and backward; against S5 on every pixel; S5's
initialisation as the real HiPPO-N system; finite differences for every parameter; bad input.

Error bound. Both forms share the discretisation (the same code, the same Ā and B̄); they differ in
the order of the remaining sums of products: the input convolutions (U k^2 terms), the scan or loop
(a complex multiply-add per step, about 4 roundings), the output convolutions (2 P kc^2 terms). So
each term meets at most n = 4 (T + 1) + U k^2 + 2 P kc^2 + 16 roundings, and each form is within
about n u of the exact value relative to the sum of the terms' magnitudes. Those sums are the same
computation on magnitudes (``majorants``): |B̄| * |U_t|, X_t = |Ā| X_{t-1} + ..., 2 |C| * X_t + |D U_t|,
and backwards g_t = 2 |C|^T * |dy_t| + |Ā| g_{t+1}, and so on. Complex numbers at most double the
rounding per real operation; two forms: tol = 4 n u x magnitudes. The parameters' gradients then go
through the same discretisation backward, a linear map J of (dĀ, dB̄): their difference is at most
|J| applied to the tolerances of dĀ, dB̄, plus a few roundings of J's own (8 u |J| (magnitudes)).
A bug errs by the size of the magnitudes themselves.
"""

import numpy as np
import pytest
import scipy.linalg

from ref.mixers.convs5 import FORMS, convs5_discrete, convs5_init, convs5_parallel, convs5_recurrent
from ref.mixers.s4 import hippo_legs_dplr, hippo_legs_nplr
from ref.nn import conv2d, conv2d_backward, gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.convs5

U64 = np.finfo(np.float64).eps / 2
TINY = np.finfo(np.float64).tiny
GRAD_NAMES = ("du", "dLambda_re", "dLambda_im", "dlog_step", "dB_re", "dB_im", "dC_re", "dC_im", "dD", "dh0")


def make(rng, Bn=2, T=5, H=4, W=3, U=2, P=3, k_B=3, k_C=1, with_D=True, with_h0=True):
    """Inputs: S5's initialisation, with steps large enough to matter and random frequencies."""
    p = convs5_init(U, P, rng, k_B=k_B, k_C=k_C)
    p["log_step"] = np.log(rng.uniform(0.1, 0.8, P))
    p["Lambda_im"] = rng.uniform(-3, 3, P)
    if not with_D:
        p["D"] = None
    u = rng.standard_normal((Bn, T, H, W, U))
    h0 = (rng.standard_normal((Bn, H, W, P)), rng.standard_normal((Bn, H, W, P))) if with_h0 else None
    return u, p, h0


def run(form, u, p, h0, dy, dht):
    forward, backward = FORMS[form]
    y, ht, cache = forward(u, **p, initial_state=h0)
    return dict(y=y, ht=ht, **dict(zip(GRAD_NAMES, backward(dy, dht, cache))))


def frames(x):  # (B, T, H, W, X) -> (B T, X, H, W)
    return np.ascontiguousarray(x.reshape(-1, *x.shape[2:]).transpose(0, 3, 1, 2))


def unframes(x, shape):  # (B T, X, H, W) -> (B, T, H, W, X)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(shape[:4] + (x.shape[1],))


def majorants(u, p, h0, dy, dht):
    """The sums of magnitudes of every term of every output and gradient (see the module docstring)."""
    Abar, Bbar = convs5_discrete(p["Lambda_re"], p["Lambda_im"], p["log_step"], p["B_re"], p["B_im"])
    C = np.abs(p["C_re"] + 1j * p["C_im"])  # (U, P, kc, kc)
    D = np.zeros(u.shape[4]) if p["D"] is None else np.abs(p["D"])
    Bn, T, H, W, U = u.shape
    P = Abar.shape[0]
    a = np.abs(Abar)
    bu, in_cache = conv2d(frames(np.abs(u)), np.abs(Bbar), padding=Bbar.shape[2] // 2)  # |B̄| * |U|
    bu = unframes(bu, u.shape)
    x = np.empty((Bn, T, H, W, P))
    state = np.zeros((Bn, H, W, P)) if h0 is None else np.abs(h0[0] + 1j * h0[1])
    for t in range(T):
        state = a * state + bu[:, t]
        x[:, t] = state
    y, out_cache = conv2d(frames(x), 2 * C, padding=C.shape[2] // 2)
    y = unframes(y, u.shape) + D * np.abs(u)
    dX, dC = conv2d_backward(frames(np.abs(dy)), out_cache)[:2]  # 2 |C|^T * |dy|, sum |dy| x
    dX = unframes(dX, u.shape[:4] + (P,))
    g = np.empty_like(x)
    carry = np.zeros((Bn, H, W, P)) if dht is None else np.abs(dht[0] + 1j * dht[1])
    for t in range(T - 1, -1, -1):
        carry = dX[:, t] + carry
        g[:, t] = carry
        carry = a * carry
    x_prev = np.concatenate([(np.zeros((Bn, 1, H, W, P)) if h0 is None else np.abs(h0[0] + 1j * h0[1])[:, None]),
                             x[:, :-1]], axis=1)
    du, dBbar = conv2d_backward(frames(g), in_cache)[:2]
    return dict(y=y, ht=x[:, -1], du=unframes(du, u.shape) + D * np.abs(dy), dAbar=(x_prev * g).reshape(-1, P).sum(0),
                dBbar=dBbar, dC=2 * dC, dD=(np.abs(dy * u)).sum(axis=(0, 1, 2, 3)), dh0=a * g[:, 0])


def discretization_jacobian_abs(p, dAbar, dBbar):
    """|J| (dĀ, dB̄): magnitudes of dΛ, dlog_step, dB given magnitudes of dĀ (P,) and dB̄ (P, U, k, k)."""
    Lam = p["Lambda_re"] + 1j * p["Lambda_im"]
    step = np.exp(p["log_step"])
    Abar = np.exp(Lam * step)
    F = np.expm1(Lam * step) / Lam
    dF = (np.abs(p["B_re"] + 1j * p["B_im"]) * dBbar).sum(axis=(1, 2, 3))  # |B| |dB̄|
    dF_dLam = np.abs((step * Abar * Lam - np.expm1(Lam * step)) / Lam**2)
    dLam = np.abs(step * Abar) * dAbar + dF_dLam * dF
    dlog_step = step * (np.abs(Lam * Abar) * dAbar + np.abs(Abar) * dF)
    dB = np.abs(F)[:, None, None, None] * dBbar
    return dLam, dlog_step, dB


def bounds(u, p, h0, dy, dht):
    """Tolerances for comparing the two forms (or a form and an independent reference)."""
    P, U, k = p["B_re"].shape[:3]
    kc = p["C_re"].shape[2]
    f = 4 * (4 * (u.shape[1] + 1) + U * k**2 + 2 * P * kc**2 + 16) * U64
    m = majorants(u, p, h0, dy, dht)
    tol = {name: f * m[name] + TINY for name in ("y", "du", "dD", "dAbar", "dBbar", "dC")}
    tol["ht"] = (f * m["ht"] + TINY,) * 2
    tol["dh0"] = None if h0 is None else (f * m["dh0"] + TINY,) * 2
    dLam, dlog_step, dB = (a + 8 * U64 * b for a, b in zip(discretization_jacobian_abs(p, tol["dAbar"], tol["dBbar"]),
                                                            discretization_jacobian_abs(p, m["dAbar"], m["dBbar"])))
    tol.update(dLambda_re=dLam, dLambda_im=dLam, dlog_step=dlog_step, dB_re=dB, dB_im=dB,
               dC_re=tol["dC"], dC_im=tol["dC"], dD=None if p["D"] is None else tol["dD"])
    return tol


def assert_all_within(got, want, tol, names):
    for name in names:
        if isinstance(want[name], tuple):
            for i, (g, w, t) in enumerate(zip(got[name], want[name], tol[name])):
                assert_within(f"{name}[{i}]", g, w, t)
        else:
            assert_within(name, got[name], want[name], tol[name])


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(T=1),
        dict(k_B=1, k_C=1, with_D=False, with_h0=False),
        dict(k_B=5, k_C=3, H=5, W=6, P=2),
        dict(T=9, Bn=1, U=3, P=4, k_B=3, k_C=3, with_h0=False),
    ],
)
@pytest.mark.parametrize("with_dht", [False, True])
def test_parallel_scan_equals_the_loop(config, with_dht, rng):
    u, p, h0 = make(rng, **config)
    Bn, T, H, W, U = u.shape
    P = p["Lambda_re"].shape[0]
    dy = rng.standard_normal(u.shape)
    dht = (rng.standard_normal((Bn, H, W, P)), rng.standard_normal((Bn, H, W, P))) if with_dht else None
    loop = run("recurrent", u, p, h0, dy, dht)
    scan = run("parallel", u, p, h0, dy, dht)
    assert_all_within(scan, loop, bounds(u, p, h0, dy, dht), ("y", "ht", *GRAD_NAMES))


def s5_per_pixel(u, p, h0):
    """S5 by its definition, every pixel on its own: x_t = Ā x_{t-1} + B̄ u_t, y_t = 2 Re(C x_t) + D u_t,
    B̄ (P, U) and C (U, P) the 1 x 1 kernels as matrices, complex arithmetic, a loop over pixels and time."""
    Bn, T, H, W, U = u.shape
    Lam = p["Lambda_re"] + 1j * p["Lambda_im"]
    step = np.exp(p["log_step"])
    Abar = np.exp(Lam * step)
    Bbar = ((Abar - 1) / Lam)[:, None] * (p["B_re"] + 1j * p["B_im"])[:, :, 0, 0]  # (P, U)
    C = (p["C_re"] + 1j * p["C_im"])[:, :, 0, 0]  # (U, P)
    y = np.empty(u.shape)
    ht = np.empty((Bn, H, W, Abar.shape[0]), complex)
    for b in range(Bn):
        for i in range(H):
            for j in range(W):
                x = h0[0][b, i, j] + 1j * h0[1][b, i, j]
                for t in range(T):
                    x = Abar * x + Bbar @ u[b, t, i, j]
                    y[b, t, i, j] = 2 * (C @ x).real + p["D"] * u[b, t, i, j]
                ht[b, i, j] = x
    return y, ht


@pytest.mark.parametrize("form", ["recurrent", "parallel"])
def test_with_1x1_kernels_it_is_s5_on_every_pixel(form, rng):
    u, p, h0 = make(rng, k_B=1, k_C=1)
    y, (ht_re, ht_im), _ = FORMS[form][0](u, **p, initial_state=h0)
    want_y, want_ht = s5_per_pixel(u, p, h0)
    tol = bounds(u, p, h0, np.zeros_like(u), None)
    assert_within("y", y, want_y, tol["y"])
    assert_within("ht (re)", ht_re, want_ht.real, tol["ht"][0])
    assert_within("ht (im)", ht_im, want_ht.imag, tol["ht"][1])


@pytest.mark.parametrize("k_B, k_C", [(3, 1), (5, 3)])
def test_the_receptive_field_does_not_grow_with_time(k_B, k_C, rng):
    """The state kernel is pointwise: an input at one pixel reaches only the pixels within
    k_B // 2 + k_C // 2 of it, at every later step (zeros stay exact zeros)."""
    u, p, _ = make(rng, Bn=1, T=6, H=11, W=11, k_B=k_B, k_C=k_C, with_D=False, with_h0=False)
    u[:] = 0
    u[0, 0, 5, 5] = rng.standard_normal(u.shape[4])
    r = k_B // 2 + k_C // 2
    for form in FORMS:
        y = FORMS[form][0](u, **p)[0]
        inside = np.zeros(y.shape, bool)
        inside[:, :, 5 - r:6 + r, 5 - r:6 + r] = True
        assert np.all(y[~inside] == 0), form
        assert np.all(np.abs(y[0, :, 5 - r:6 + r, 5 - r:6 + r]).max(axis=(1, 2, 3)) > 0), form


@pytest.mark.parametrize("blocks", [1, 2])
def test_s5_init_is_the_real_hippo_n_system(blocks, rng):
    """convs5_init keeps one mode per conjugate pair of HiPPO-LegS's normal part S: with 1 x 1 kernels
    and one step for every mode, ConvS5 is the real SSM x' = S x + B0 u, y = C0 x (block-diagonal S
    for blocks > 1), discretised by ZOH, with B0 = 2 Re(V B) and C0 = 2 Re(C V^*)."""
    U, P, step = 2, 4, 0.3
    p = convs5_init(U, P, rng, k_B=1, k_C=1, blocks=blocks, dt_min=step, dt_max=step)
    p["D"] = None
    Lam, _, _, V = hippo_legs_dplr(2 * P // blocks)
    np.testing.assert_allclose(p["Lambda_re"], -0.5, rtol=1e-14)
    np.testing.assert_allclose(p["Lambda_im"], np.tile(Lam.imag, blocks), rtol=1e-14)
    V = scipy.linalg.block_diag(*([V] * blocks))  # (2P, P)
    B0 = 2 * (V @ (p["B_re"] + 1j * p["B_im"])[:, :, 0, 0]).real  # (2P, U)
    C0 = 2 * ((p["C_re"] + 1j * p["C_im"])[:, :, 0, 0] @ V.conj().T).real  # (U, 2P)
    S = scipy.linalg.block_diag(*([hippo_legs_nplr(2 * P // blocks)[0]] * blocks))  # (2P, 2P)
    Abar = scipy.linalg.expm(step * S)
    Bbar = np.linalg.solve(S, (Abar - np.eye(2 * P)) @ B0)  # ZOH, (2P, U)
    u = rng.standard_normal((1, 6, 2, 2, U))
    x = np.zeros((2, 2, 2 * P))
    want = np.empty(u.shape)
    for t in range(u.shape[1]):
        x = x @ Abar.T + u[0, t] @ Bbar.T
        want[0, t] = x @ C0.T
    y = convs5_recurrent(u, **p)[0]
    # V is orthonormal and S normal, so both sides are backward stable: each within a small multiple of
    # N T u max|y| (observed below 1e-14 max|y|); a wrong conjugate half or factor 2 errs by O(max|y|)
    assert_within("y", y, want, 64 * (2 * P) * u.shape[1] * U64 * np.abs(want).max())
    log_step = convs5_init(U, P, rng)["log_step"]  # the default range [1e-3, 1e-1]
    assert np.all((np.log(1e-3) <= log_step) & (log_step <= np.log(1e-1)))


@pytest.mark.parametrize("form", ["recurrent", "parallel"])
@pytest.mark.parametrize("optional", [False, True])
def test_finite_differences_every_parameter(form, optional, rng):
    u, p, h0 = make(rng, Bn=1, T=3, H=3, W=3, U=2, P=2, k_B=3, k_C=3 if optional else 1, with_D=optional,
                    with_h0=optional)
    forward, backward = FORMS[form]
    inputs = dict(u=u, **p)
    if optional:
        inputs.update(x0_re=h0[0], x0_im=h0[1])

    def fwd(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D, x0_re=None, x0_im=None):
        x0 = None if x0_re is None else (x0_re, x0_im)
        y, (ht_re, ht_im), cache = forward(u, Lambda_re, Lambda_im, log_step, B_re, B_im, C_re, C_im, D,
                                           initial_state=x0)
        return y, ht_re, ht_im, cache

    def bwd(dy, dht_re, dht_im, cache):
        *grads, dh0 = backward(dy, (dht_re, dht_im), cache)
        return (*grads, *((None, None) if dh0 is None else dh0))

    gradcheck(fwd, bwd, inputs, rng=rng, name=f"convs5_{form}")


def test_float32_stays_float32(rng):
    u, p, h0 = make(rng)
    p32 = {k: None if v is None else v.astype(np.float32) for k, v in p.items()}
    for form in FORMS:
        h0_32 = tuple(x.astype(np.float32) for x in h0)
        y, ht, cache = FORMS[form][0](u.astype(np.float32), **p32, initial_state=h0_32)
        grads = FORMS[form][1](y, ht, cache)
        assert y.dtype == ht[0].dtype == np.float32
        assert all(g.dtype == np.float32 for g in grads[:-1] if g is not None) and grads[-1][0].dtype == np.float32


def _args(**overrides):
    rng = np.random.default_rng(0)
    u, p, _ = make(rng, Bn=1, T=2, H=3, W=3, U=2, P=2)
    args = dict(u=u, **p)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(u=np.zeros((1, 2, 3, 3))), r"u: expected 5 axes \(B, T, H, W, U\)"),
        (dict(u=np.zeros((1, 0, 3, 3, 2))), r"u: expected a time axis of length >= 1"),
        (dict(Lambda_re=np.array([-0.5, 0.0])), r"Lambda_re: expected negative real parts .*got 0.0 at index \(1,\)"),
        (dict(Lambda_im=np.zeros(3)), r"Lambda_im: expected shape \(P,\) = \(2,\)"),
        (dict(log_step=np.array([0.0, np.inf])), r"log_step: expected finite values"),
        (dict(B_re=np.zeros((2, 2, 2, 2)), B_im=np.zeros((2, 2, 2, 2))),
         r"B_re: expected shape \(P, U, k, k\) = \(2, 2, k, k\) with k odd"),
        (dict(B_re=np.zeros((2, 3, 3, 3))), r"B_re: expected shape \(P, U, k, k\) = \(2, 2, k, k\)"),
        (dict(B_im=np.zeros((2, 2, 1, 1))), r"B_im: expected shape \(P, U, k, k\) = \(2, 2, 3, 3\)"),
        (dict(C_re=np.zeros((2, 3, 1, 1))), r"C_re: expected shape \(U, P, k, k\) = \(2, 2, k, k\)"),
        (dict(D=np.zeros(3)), r"D: expected shape \(U,\) = \(2,\)"),
        (dict(D=np.zeros(2, np.float32)), r"D: expected dtype float64 \(the dtype of u\), got float32"),
        (dict(initial_state=(np.zeros((1, 3, 3, 2)),)), r"initial_state: expected a pair \(re, im\)"),
        (dict(initial_state=(np.zeros((1, 3, 3, 2)), np.zeros((1, 3, 3, 3)))),
         r"initial_state\[1\]: expected shape \(B, H, W, P\) = \(1, 3, 3, 2\)"),
        (dict(backend="numba"), r"backend: convs5_\w+ supports 'numpy', got 'numba'"),
    ],
)
def test_bad_input(overrides, match):
    for forward in (convs5_recurrent, convs5_parallel):
        with pytest.raises(ValueError, match=match):
            forward(**_args(**overrides))


def test_bad_cotangents_and_init():
    args = _args()
    y, ht, cache = convs5_parallel(**args)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, H, W, U\) = \(1, 2, 3, 3, 2\)"):
        FORMS["parallel"][1](y[:, :1], None, cache)
    with pytest.raises(ValueError, match=r"dht\[0\]: expected shape \(B, H, W, P\) = \(1, 3, 3, 2\)"):
        FORMS["parallel"][1](y, (np.zeros((1, 3, 3, 3)), None), cache)
    with pytest.raises(ValueError, match=r"cache: expected the cache of convs5_recurrent, got that of the parallel"):
        FORMS["recurrent"][1](y, None, cache)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"blocks: expected a divisor of P = 3, got 2"):
        convs5_init(2, 3, rng, blocks=2)
    with pytest.raises(ValueError, match=r"k_B: expected an odd kernel size"):
        convs5_init(2, 2, rng, k_B=2)
