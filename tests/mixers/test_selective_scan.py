"""Mamba's selective scan: selective_scan_ref semantics, every form, forward and backward."""

import numpy as np
import pytest
from hypothesis import given

from ref.mixers.selective_scan import FORMS, selective_scan_chunked, selective_scan_recurrent
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.ss_cases import bounds, make_arrays, selective_scan_by_definition, ss_cases

pytestmark = pytest.mark.mamba

NAMES = ("out", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dh0")
ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")


def run(form, args, dout, dlast, chunk_size):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    out, last, cache = forward(*(args[k] for k in ARGS), initial_state=args["initial_state"],
                               return_last_state=True, **extra)
    return dict(zip(NAMES, (out, last, *backward(dout, dlast, cache))))


@pytest.mark.parametrize("B_mode, C_mode", [("fixed", "fixed"), ("variable", "variable"), ("grouped", "grouped"),
                                            ("fixed", "variable"), ("variable", "grouped")])
@pytest.mark.parametrize("options", [{}, {"D": True, "z": True, "bias": True, "softplus": True, "h0": True}])
def test_recurrent_equals_the_definition(B_mode, C_mode, options):
    case = dict(B=2, D=4, L=7, N=3, G=2, B_mode=B_mode, C_mode=C_mode, with_D=options.get("D", False),
                with_z=options.get("z", False), with_bias=options.get("bias", False),
                softplus=options.get("softplus", False), with_h0=options.get("h0", False), with_dlast=False,
                decay="weak", chunk_size=3, dtype=np.float64, seed=11)
    args, _, _ = make_arrays(case)
    out, last, _ = selective_scan_recurrent(*(args[k] for k in ARGS), initial_state=args["initial_state"],
                                            return_last_state=True)
    want_out, want_last = selective_scan_by_definition(**args)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(last, want_last, rtol=1e-12, atol=1e-12)


def test_softplus_is_linear_above_20_and_applied_after_the_bias():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((1, 2, 4))
    delta = np.array([[[19.0, 21.0, -3.0, 0.0], [25.0, 5.0, 1.0, -1.0]]])
    A, B, C = -np.ones((2, 1)) * 0.01, np.ones((2, 1)), np.ones((2, 1))
    bias = np.array([0.5, -6.0])
    out, _, _ = selective_scan_recurrent(u, delta, A, B, C, delta_bias=bias, delta_softplus=True)
    want, _ = selective_scan_by_definition(u, delta, A, B, C, delta_bias=bias, delta_softplus=True)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)


@given(ss_cases())
def test_every_form_agrees(case):
    args, dout, dlast = make_arrays(case)
    want = run("recurrent", args, dout, dlast, case["chunk_size"])
    tol = bounds(args, dout, dlast, np.float64)
    for form in ("parallel", "chunked"):
        got = run(form, args, dout, dlast, case["chunk_size"])
        for name in NAMES:
            assert_within(f"{form}: {name}", got[name], want[name], tol[name])


@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
@pytest.mark.parametrize("modes", [("fixed", "fixed"), ("variable", "grouped"), ("grouped", "variable")])
def test_finite_differences_every_input(form, modes, rng):
    case = dict(B=1, D=2, L=5, N=2, G=2, B_mode=modes[0], C_mode=modes[1], with_D=True, with_z=True,
                with_bias=True, softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=2,
                dtype=np.float64, seed=int(rng.integers(1 << 30)))
    args, _, _ = make_arrays(case)
    forward, backward = FORMS[form]
    extra = {"chunk_size": 2} if form == "chunked" else {}

    def fwd(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return forward(u, delta, A, B, C, D, z, delta_bias, True, initial_state=initial_state,
                       return_last_state=True, **extra)

    def bwd(dout, dlast, cache):
        du, ddelta, dA, dB, dC, dD, dz, ddb, dh0 = backward(dout, dlast, cache)
        return dict(u=du, delta=ddelta, A=dA, B=dB, C=dC, D=dD, z=dz, delta_bias=ddb, initial_state=dh0)

    inputs = {k: args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")}
    report = gradcheck(fwd, bwd, inputs, rng=rng, name=f"selective_scan_{form}")
    assert len(report.tensors) == 9


def test_last_state_only_when_asked_and_its_gradient_needs_it():
    rng = np.random.default_rng(1)
    u, delta = rng.standard_normal((1, 2, 3)), rng.uniform(size=(1, 2, 3))
    A, B, C = -np.ones((2, 2)), rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    out, last, cache = selective_scan_recurrent(u, delta, A, B, C)
    assert last is None
    with pytest.raises(ValueError, match="dlast_state: given, but the forward ran with return_last_state=False"):
        FORMS["recurrent"][1](np.zeros_like(out), np.zeros((1, 2, 2)), cache)


def _bad(**overrides):
    args = dict(u=np.zeros((2, 4, 5)), delta=np.zeros((2, 4, 5)), A=-np.ones((4, 3)), B=np.zeros((4, 3)),
                C=np.zeros((4, 3)))
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "args, match",
    [
        (_bad(A=np.zeros((4, 3))), r"A: expected negative real values .* got 0.0 at index \(0, 0\)"),
        (_bad(A=-np.ones((3, 3))), r"A: expected shape \(D, N\) with D = 4"),
        (_bad(B=np.zeros((2, 3, 3, 5))), r"B: expected shape \(B, G, N, L\) = \(2, G, 3, 5\) with G dividing D = 4"),
        (_bad(C=np.zeros((2, 3, 4))), r"C: expected shape \(B, N, L\) = \(2, 3, 5\)"),
        (_bad(delta=np.zeros((2, 4, 6))), r"delta: expected shape \(B, D, L\) = \(2, 4, 5\)"),
        (_bad(u=np.zeros((2, 4, 0)), delta=np.zeros((2, 4, 0))), "u: expected a time axis"),
        (_bad(B=np.zeros(3)), r"B: expected \(D, N\), \(B, N, L\) or \(B, G, N, L\)"),
        (_bad(delta=np.full((2, 4, 5), np.nan)), "delta: expected finite values"),
    ],
)
@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
def test_bad_input(form, args, match):
    with pytest.raises(ValueError, match=match):
        FORMS[form][0](args["u"], args["delta"], args["A"], args["B"], args["C"])


def test_bad_options():
    a = _bad()
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        selective_scan_chunked(a["u"], a["delta"], a["A"], a["B"], a["C"], chunk_size=0)
    with pytest.raises(ValueError, match=r"D: expected shape \(D,\) = \(4,\)"):
        selective_scan_recurrent(a["u"], a["delta"], a["A"], a["B"], a["C"], np.zeros(3))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(B, D, N\) = \(2, 4, 3\)"):
        selective_scan_recurrent(a["u"], a["delta"], a["A"], a["B"], a["C"], initial_state=np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="delta_softplus: expected True or False"):
        selective_scan_recurrent(a["u"], a["delta"], a["A"], a["B"], a["C"], delta_softplus="yes")
