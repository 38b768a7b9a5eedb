"""Mamba-2 SSD: the recurrent, quadratic and four-step chunked forms, forward and backward."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.ssd import FORMS, segsum, ssd_chunked, ssd_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds as gla_bounds

pytestmark = pytest.mark.mamba

NAMES = ("Y", "final_state", "dX", "dA", "dB", "dC", "dinitial_states")


@st.composite
def ssd_cases(draw):
    l = draw(st.one_of(st.just(1), st.integers(1, 40)))
    return dict(b=draw(st.integers(1, 2)), l=l, h=draw(st.integers(1, 2)), p=draw(st.integers(1, 5)),
                n=draw(st.integers(1, 5)), block_len=draw(st.one_of(st.just(1), st.integers(1, 17), st.just(l))),
                decay=draw(st.sampled_from([0.0, 0.1, 1.0, 10.0])), with_init=draw(st.booleans()),
                with_dfinal=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)))


def make(case):
    rng = np.random.default_rng(case["seed"])
    b, l, h, p, n = (case[k] for k in "blhpn")
    X, B, C = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    # as ssd_minimal's own test: A * dt with dt = softplus(randn - 4) and A = -exp(rand), scaled by `decay`
    dt = np.log1p(np.exp(rng.standard_normal((b, l, h)) - 4))
    A = -case["decay"] * np.exp(rng.uniform(size=(b, l, h))) * dt * 20
    S0 = rng.standard_normal((b, h, p, n)) if case["with_init"] else None
    dY = rng.standard_normal((b, l, h, p))
    dF = rng.standard_normal((b, h, p, n)) if case["with_dfinal"] else None
    return X, A, B, C, S0, dY, dF


def run(form, X, A, B, C, S0, dY, dF, block_len):
    forward, backward = FORMS[form]
    extra = {"block_len": block_len} if form == "chunked" else {}
    Y, F, cache = forward(X, A, B, C, initial_states=S0, **extra)
    return dict(zip(NAMES, (Y, F, *backward(dY, dF, cache))))


def ssd_bounds(X, A, B, C, S0, dY, dF):
    """SSD is GLA with q = C, k = B, v = X, a gate shared over the n key dims, scale 1, the state
    transposed: GLA's derived bounds apply (tests/mixers/gla_cases.py); dA sums n per-key gate
    gradients, so its bound is the sum of theirs with 1.5x for the extra roundings of that sum."""
    T = lambda S: None if S is None else np.swapaxes(S, -1, -2)  # noqa: E731
    gk = np.broadcast_to(A[..., None], C.shape)
    t = gla_bounds(C, B, X, gk, T(S0), dY, T(dF), 1.0, np.float64)
    return dict(Y=t["o"], final_state=T(t["ht"]), dX=t["dv"], dA=1.5 * t["dgk"].sum(-1), dB=t["dk"], dC=t["dq"],
                dinitial_states=T(t["dh0"]))


@given(ssd_cases())
def test_every_form_and_block_len_agree(case):
    X, A, B, C, S0, dY, dF = make(case)
    want = run("recurrent", X, A, B, C, S0, dY, dF, None)
    tol = ssd_bounds(X, A, B, C, S0, dY, dF)
    for form in ("quadratic", "chunked"):
        got = run(form, X, A, B, C, S0, dY, dF, case["block_len"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


def test_results_do_not_depend_on_block_len_and_any_length_works():
    case = dict(b=1, l=37, h=2, p=3, n=4, block_len=0, decay=1.0, with_init=True, with_dfinal=True, seed=5)
    X, A, B, C, S0, dY, dF = make(case)
    tol = ssd_bounds(X, A, B, C, S0, dY, dF)
    results = [run("chunked", X, A, B, C, S0, dY, dF, L) for L in (1, 4, 8, 37, 64)]
    for r in results[1:]:
        for name in NAMES:
            assert_within(f"block_len: {name}", r[name], results[0][name], tol[name])


@pytest.mark.parametrize("form", ["recurrent", "quadratic", "chunked"])
def test_finite_differences(form, rng):
    X, A, B, C = (rng.standard_normal(s) for s in ((1, 6, 2, 2), (1, 6, 2), (1, 6, 2, 3), (1, 6, 2, 3)))
    A = -np.abs(A)
    S0 = rng.standard_normal((1, 2, 2, 3))
    forward, backward = FORMS[form]
    extra = {"block_len": 4} if form == "chunked" else {}
    gradcheck(lambda X, A, B, C, initial_states: forward(X, A, B, C, initial_states=initial_states, **extra),
              backward, {"X": X, "A": A, "B": B, "C": C, "initial_states": S0}, rng=rng, name=f"ssd_{form}")


def test_segsum():
    x = np.array([1.0, -2.0, 0.5, 3.0])
    want = np.full((4, 4), -np.inf)
    for i in range(4):
        for j in range(i + 1):
            want[i, j] = x[j + 1 : i + 1].sum()
    np.testing.assert_array_equal(segsum(x), want)


def test_recurrence_by_hand():
    """H_t = exp(A_t) H_{t-1} + X_t^T B_t, Y_t = H_t C_t with scalar loops."""
    rng = np.random.default_rng(3)
    X, B, C = rng.standard_normal((1, 5, 1, 2)), rng.standard_normal((1, 5, 1, 3)), rng.standard_normal((1, 5, 1, 3))
    A = -rng.uniform(size=(1, 5, 1))
    H = np.zeros((2, 3))
    Y = np.zeros((5, 2))
    for t in range(5):
        H = np.exp(A[0, t, 0]) * H + np.outer(X[0, t, 0], B[0, t, 0])
        Y[t] = H @ C[0, t, 0]
    Yr, F, _ = ssd_recurrent(X, A, B, C)
    np.testing.assert_allclose(Yr[0, :, 0], Y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(F[0, 0], H, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(A=np.full((1, 4, 2), 0.1)), r"A: expected discretised log-decays <= 0 .*got 0.1 at index \(0, 0, 0\)"),
        (dict(B=np.zeros((1, 4, 3, 2))), r"B: expected shape \(b, l, h, n\) with \(b, l, h\) = \(1, 4, 2\)"),
        (dict(C=np.zeros((1, 4, 2, 3))), r"C: expected shape \(b, l, h, n\) = \(1, 4, 2, 2\)"),
        (dict(initial_states=np.zeros((1, 2, 2, 3))), r"initial_states: expected shape \(b, h, p, n\) = \(1, 2, 3, 2\)"),
        (dict(initial_states=np.zeros((1, 1, 2, 3, 2))), r"initial_states: expected 4 axes"),
    ],
)
def test_bad_input(change, match):
    args = dict(X=np.zeros((1, 4, 2, 3)), A=np.zeros((1, 4, 2)), B=np.zeros((1, 4, 2, 2)), C=np.zeros((1, 4, 2, 2)),
                initial_states=None)
    args.update(change)
    for form in FORMS:
        with pytest.raises(ValueError, match=match):
            FORMS[form][0](args["X"], args["A"], args["B"], args["C"], initial_states=args["initial_states"])
    with pytest.raises(ValueError, match="block_len: expected an integer >= 1"):
        ssd_chunked(np.zeros((1, 4, 2, 3)), np.zeros((1, 4, 2)), np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 2)),
                    block_len=0)
