"""The numba CPU kernels of the selective scan (``numba_kernels.selective_scan_cpu``) against the
NumPy reference, through ``selective_scan_recurrent(backend="numba")``.

Error bound for a kernel against the reference (``kernel_bounds``). The kernels and the NumPy
forms share no code: the kernel computes its own dt (bias, softplus), decays exp(dt A), inputs
dt u B_t, readout and gate with its own exp and log1p (``vexp``, ``vsoftplus``: within 1 and 2 ulp,
like NumPy's own), in its own order of operations. So on top of the forms' bound
(``tests/mixers/ss_cases.py``: the scan's roundings pushed through the shared maps):

* the decays: each a_t = exp(dt_t A) carries a relative error of at most (2 + 4 |dt_t A|) u
  between the two (each exp within 1 ulp; dt within 2 ulp each side, which the exponent
  multiplies by |dt A|); a product of up to L of them, a relative error of 4 L (1 + l) u with
  l = max |dt A|: the GLA tests' argument for exp of accumulated gates;
* every other value passes through at most n = N + B L + D + 16 roundings in either
  computation (the sums over the N entries, over batch and time for dA, dD, ddelta_bias and
  the fixed dB, dC, over the channels of a group for the variable and grouped dB, dC, and a
  dozen elementwise operations);

and each of these is relative to the sum of the absolute values of the terms, ``magnitudes``:
the same computation run on absolute values (the states and their gradients as scans of |a|,
|b| and |dy C|). Hence, elementwise,

    tol = forms' bound + 2 (n + 4 L (1 + l)) u magnitude,

with u the unit roundoff of the kernel's dtype (float32 kernels are compared with the float64
reference on the same inputs, whose own error is negligible against u_32). A bug (a missing term,
a shifted step, a wrong sign) errs by the size of the magnitude itself.
"""

import re

import numpy as np
import pytest
from hypothesis import given
from numba import njit
from numba.core.registry import CPUDispatcher

import numba_kernels.selective_scan_cpu as ss_cpu
from ref.mixers.selective_scan import FORMS, selective_scan_chunked, selective_scan_recurrent
from ref.mixers.selective_scan._inputs import as_BLDN, check_inputs, discretize, reduce_like
from ref.nn import gradcheck
from tests.compare import assert_within
from tests.mixers.scan_cases import _abs_scan
from tests.mixers.ss_cases import bounds, make_arrays, ss_cases

pytestmark = pytest.mark.mamba

NAMES = ("out", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dh0")
ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")


def up(x):
    return x.astype(np.float64) if isinstance(x, np.ndarray) else x


def magnitudes(args, dout, dlast):
    """Each output and gradient computed on absolute values (float64): the sums of |terms|."""
    a64 = {k: up(v) for k, v in args.items()}
    inp = check_inputs(*(a64[k] for k in ARGS), initial_state=a64["initial_state"])
    delta, a, b = discretize(inp)  # (B, L, D, N)
    Bn, L, Dn, N = a.shape
    flat = lambda x: x.reshape(Bn, L, Dn * N)  # noqa: E731
    Cx = np.abs(np.broadcast_to(as_BLDN(inp.C, inp.C_mode, Dn), a.shape))
    Bx = np.abs(np.broadcast_to(as_BLDN(inp.B, inp.B_mode, Dn), a.shape))
    h0 = None if inp.initial_state is None else np.abs(inp.initial_state)
    habs = _abs_scan(flat(a), flat(b), None if h0 is None else h0.reshape(Bn, Dn * N)).reshape(a.shape)
    hprev = np.concatenate([np.zeros_like(habs[:, :1]) if h0 is None else h0[:, None], habs[:, :-1]], 1)
    dout = np.abs(up(dout))
    ul = np.abs(np.moveaxis(inp.u, 2, 1))  # (B, L, D)
    pre = np.moveaxis((habs * Cx).sum(-1), 1, 2) + (0 if inp.D is None else np.abs(inp.D[:, None] * inp.u))
    gate, dsilu = 1.0, None
    if inp.z is not None:
        s = 1 / (1 + np.exp(-inp.z))
        gate, dsilu = np.abs(inp.z * s), s * (1 + np.abs(inp.z) * (1 - s))
    dy = np.moveaxis(dout * gate, 2, 1)  # (B, L, D)
    dht = None if dlast is None else np.abs(up(dlast)).reshape(Bn, Dn * N)
    gabs = _abs_scan(flat(a), flat(dy[..., None] * Cx), dht, reverse=True).reshape(a.shape)
    da = gabs * hprev
    dl = np.moveaxis(delta, 2, 1)
    ddt = (da * a * np.abs(inp.A)).sum(-1) + (gabs * Bx).sum(-1) * ul
    if inp.delta_softplus:
        p = inp.delta_raw if inp.delta_bias is None else inp.delta_raw + inp.delta_bias[:, None]
        ddt = ddt * np.moveaxis(np.where(p > 20, 1.0, 1 / (1 + np.exp(-p))), 2, 1)
    mag = dict(
        out=pre * gate,
        last_state=habs[:, -1],
        du=np.moveaxis(dy * (0 if inp.D is None else np.abs(inp.D)) + dl * (gabs * Bx).sum(-1), 1, 2),
        ddelta=np.moveaxis(ddt, 1, 2),
        dA=np.einsum("bldn,bld->dn", da * a, dl),
        dB=reduce_like(gabs * (dl * ul)[..., None], inp.B, inp.B_mode),
        dC=reduce_like(dy[..., None] * habs, inp.C, inp.C_mode),
        dD=None if inp.D is None else (np.moveaxis(dy, 1, 2) * np.abs(inp.u)).sum(axis=(0, 2)),
        dz=None if inp.z is None else dout * pre * dsilu,
        ddelta_bias=None if inp.delta_bias is None else ddt.sum(axis=(0, 1)),
        dh0=None if h0 is None else a[:, 0] * gabs[:, 0],
    )
    lmax = float((np.abs(inp.A)[None, None] * dl[..., None]).max())  # the largest |dt A|
    return mag, lmax


def kernel_bounds(args, dout, dlast, dtype):
    """Elementwise tolerances of a kernel in ``dtype`` against the float64 reference (module docstring)."""
    form = bounds({k: up(v) for k, v in args.items()}, up(dout), up(dlast), dtype)
    mag, lmax = magnitudes(args, dout, dlast)
    Bn, Dn, L = args["u"].shape
    N = args["A"].shape[1]
    u = np.finfo(dtype).eps / 2
    k = 2 * ((N + Bn * L + Dn + 16) + 4 * L * (1 + lmax)) * u
    return {name: None if form[name] is None else form[name] + k * mag[name] for name in NAMES}


def run(form, backend, args, dout, dlast, chunk_size=None):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk_size} if form == "chunked" else {}
    out, last, cache = forward(*(args[k] for k in ARGS), initial_state=args["initial_state"], return_last_state=True,
                               backend=backend, **extra)
    return dict(zip(NAMES, (out, last, *backward(dout, dlast, cache))))


def check_against_reference(label, got, args, dout, dlast, dtype):
    want = run("recurrent", "numpy", {k: up(v) for k, v in args.items()}, up(dout), up(dlast))
    tol = kernel_bounds(args, dout, dlast, dtype)
    for name in NAMES:
        if got[name] is not None:
            assert got[name].dtype == dtype, f"{label}: {name} is {got[name].dtype}"
        assert_within(f"{label}: {name}", got[name], want[name], tol[name])


@given(ss_cases(max_L=100))
def test_numba_kernels_agree_with_numpy_float64(case):
    """Every B/C mode and option, L = 1 to 100 (across the backward's checkpoints every 64 steps)."""
    args, dout, dlast = make_arrays(case)
    got = run("recurrent", "numba", args, dout, dlast)
    check_against_reference("recurrent/numba", got, args, dout, dlast, np.float64)


@given(ss_cases(max_L=100, dtypes=(np.float32,)))
def test_numba_kernels_float32_against_float64(case):
    """float32 kernels compute in float32 and stay within the float32 bound of the float64 result."""
    args, dout, dlast = make_arrays(case)
    got = run("recurrent", "numba", args, dout, dlast)
    check_against_reference("recurrent/numba float32", got, args, dout, dlast, np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("modes", [("fixed", "variable"), ("variable", "grouped"), ("grouped", "fixed")])
def test_several_parallel_tasks_and_checkpoints(dtype, modes):
    """B * D = 2 * 6 channels in several blocks (the partial sums of dA, dB, dC, dD, ddelta_bias
    added up over blocks and batch), L = 150 across three checkpoints; then L = 1 with variable
    B and C (summed over the channels of several blocks at one step)."""
    blk, parallel = ss_cpu.plan(2, 6)
    assert parallel and blk < 6, "the case must make several channel blocks"
    for L in (150, 1):
        case = dict(B=2, D=6, L=L, N=5, G=2, B_mode=modes[0], C_mode=modes[1], with_D=True, with_z=True,
                    with_bias=True, softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=0,
                    dtype=dtype, seed=3)
        args, dout, dlast = make_arrays(case)
        got = run("recurrent", "numba", args, dout, dlast)
        check_against_reference(f"L={L}, {modes}", got, args, dout, dlast, dtype)


@pytest.mark.parametrize("modes", [("fixed", "fixed"), ("variable", "grouped"), ("grouped", "variable")])
def test_finite_differences_through_numba(modes, rng):
    case = dict(B=1, D=2, L=5, N=2, G=2, B_mode=modes[0], C_mode=modes[1], with_D=True, with_z=True, with_bias=True,
                softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=2, dtype=np.float64,
                seed=int(rng.integers(1 << 30)))
    args, _, _ = make_arrays(case)
    forward, backward = FORMS["recurrent"]

    def fwd(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return forward(u, delta, A, B, C, D, z, delta_bias, True, initial_state=initial_state, return_last_state=True,
                       backend="numba")

    def bwd(dout, dlast, cache):
        assert cache.backend == "numba"
        du, ddelta, dA, dB, dC, dD, dz, ddb, dh0 = backward(dout, dlast, cache)
        return dict(u=du, delta=ddelta, A=dA, B=dB, C=dC, D=dD, z=dz, delta_bias=ddb, initial_state=dh0)

    inputs = {k: args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")}
    report = gradcheck(fwd, bwd, inputs, rng=rng, name="selective_scan_recurrent[numba]")
    assert len(report.tensors) == 9


def test_the_cache_keeps_no_state_per_step():
    """The backward recomputes the states: the cache holds one state per CHECKPOINT steps."""
    case = dict(B=1, D=3, L=200, N=4, G=1, B_mode="variable", C_mode="fixed", with_D=False, with_z=False,
                with_bias=False, softplus=False, with_h0=False, with_dlast=False, decay="weak", chunk_size=0,
                dtype=np.float64, seed=1)
    args, _, _ = make_arrays(case)
    _, _, cache = selective_scan_recurrent(*(args[k] for k in ARGS), backend="numba")
    assert cache.x is None and cache.a is None
    assert cache.scan.shape == (1, 3, -(-200 // ss_cpu.CHECKPOINT), 4)


FLOAT64_OPS = re.compile(
    r"\b(?:fadd|fsub|fmul|fdiv|fneg)\b[^\n=]*\bdouble\b|call [^\n]*double @(?:llvm\.)?(?:exp|fma|log)"
)


@pytest.mark.slow
def test_float32_kernels_do_no_float64_arithmetic(monkeypatch):
    """The LLVM IR of every function of the module compiled for float32 has no double-precision
    arithmetic (a float64 literal would promote a whole expression). Uncached serial copies of the
    jitted functions are compiled and run through the wrappers (cached code cannot be inspected)."""
    fresh = {}
    for name, fn in list(vars(ss_cpu).items()):
        if isinstance(fn, CPUDispatcher) and fn.targetoptions.get("inline") != "always":
            options = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
            fresh[name] = njit(**options)(fn.py_func)
            monkeypatch.setattr(ss_cpu, name, fresh[name])
    for B, D in ((2, 4), (1, 1)):  # parallel loops, then the serial twins
        case = dict(B=B, D=D, L=70, N=3, G=1, B_mode="variable", C_mode="fixed", with_D=True, with_z=True,
                    with_bias=True, softplus=True, with_h0=True, with_dlast=True, decay="weak", chunk_size=0,
                    dtype=np.float32, seed=0)
        args, dout, dlast = make_arrays(case)
        out, last, saved = ss_cpu.selective_scan_cpu(*(args[k] for k in ARGS), args["initial_state"])
        ss_cpu.selective_scan_cpu_backward(*(args[k] for k in ARGS), args["initial_state"], saved, dout, dlast)
    for name, fn in fresh.items():
        irs = fn.inspect_llvm()
        assert irs, f"{name} was never compiled: the test must run every jitted function"
        for sig, ir in irs.items():
            match = FLOAT64_OPS.search(ir)
            assert match is None, f"{name}{sig}: float64 arithmetic in a float32 kernel: {match.group(0)!r}"


def test_bad_backend():
    u = np.zeros((1, 2, 3))
    A, Bm = -np.ones((2, 2)), np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"backend: selective_scan_chunked supports 'numpy', 'cuda', got 'numba'"):
        selective_scan_chunked(u, u, A, Bm, Bm, backend="numba")
    with pytest.raises(ValueError, match="backend: expected one of"):
        selective_scan_recurrent(u, u, A, Bm, Bm, backend="cpu")
