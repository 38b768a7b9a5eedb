"""Golden op s4d_kernel: the kernel against powers of the full diagonal ZOH SSM, the reference's
formula written out, gradients by finite differences, bad input."""

import numpy as np
import pytest

import ref.golden.s4d_kernel  # noqa: F401  (registers the op until ref/golden/__init__.py imports it)
from ref import golden
from ref.mixers.s4 import discretize_diag, ssm_kernel_powers
from ref.nn import gradcheck

pytestmark = pytest.mark.s4

NAMES = ("log_dt", "A_re", "A_im", "C_re", "C_im")


def _arrays(rng, H=3, N2=4):
    # as S4DKernel's initialisation, with A_re and A_im spread out: log_dt ~ U[log 1e-3, log 1e-1]
    return dict(log_dt=rng.uniform(np.log(1e-3), np.log(1e-1), H), A_re=-rng.uniform(0.2, 2.0, (H, N2)),
                A_im=np.pi * np.arange(N2) + rng.uniform(-1, 1, (H, N2)), C_re=rng.standard_normal((H, N2)),
                C_im=rng.standard_normal((H, N2)))


@pytest.mark.parametrize("L", [1, 37, 256])
def test_equals_powers_of_the_full_zoh_ssm(rng, L):
    a = _arrays(rng)
    K = golden.run("s4d_kernel", dict(a, L=np.array(L)))["K"]
    assert K.shape == (3, L) and K.dtype == np.float64
    for h in range(3):
        A = a["A_re"][h] + 1j * a["A_im"][h]
        C = a["C_re"][h] + 1j * a["C_im"][h]
        Af, Cf = np.concatenate([A, A.conj()]), np.concatenate([C, C.conj()])  # all N modes
        Abar, Bbar = discretize_diag(Af, np.ones_like(Af), np.exp(a["log_dt"][h]), "zoh")
        want = ssm_kernel_powers(Abar, Bbar, Cf, L)
        np.testing.assert_allclose(K[h], want.real, rtol=1e-11, atol=1e-12 * np.abs(want).max())


def test_equals_the_reference_formula_written_out(rng):
    """state-spaces/s4 S4DKernel.forward, line by line in NumPy (exp(dtA) - 1, not expm1)."""
    a = _arrays(rng)
    L = 50
    dt = np.exp(a["log_dt"])  # (H)
    C = a["C_re"] + 1j * a["C_im"]  # (H N)
    A = a["A_re"] + 1j * a["A_im"]  # (H N)
    dtA = A * dt[:, None]
    K = dtA[..., None] * np.arange(L)  # (H N L)
    C = C * (np.exp(dtA) - 1.0) / A
    want = 2 * np.einsum("hn,hnl->hl", C, np.exp(K)).real
    got = golden.run("s4d_kernel", dict(a, L=np.array(L)))["K"]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_gradients_by_finite_differences(rng):
    a = _arrays(rng, H=2, N2=3)
    a["log_dt"] = np.log(rng.uniform(0.05, 0.5, 2))  # steps where every gradient is O(1)
    dK = rng.standard_normal((2, 20))
    out = golden.run("s4d_kernel", dict(a, L=np.array(20), dK=dK))
    assert set(out) == {"K", *("d" + k for k in NAMES)}

    def forward(log_dt, A_re, A_im, C_re, C_im):
        return golden.run("s4d_kernel", dict(log_dt=log_dt, A_re=A_re, A_im=A_im, C_re=C_re, C_im=C_im,
                                             L=np.array(20)))["K"], None

    def backward(dK_, _):
        return {k: out["d" + k] for k in NAMES}

    gradcheck(forward, backward, a, cotangents=[dK], name="golden s4d_kernel")


def test_float32_inputs_run_in_float64(rng):
    a = {k: v.astype(np.float32) for k, v in _arrays(rng).items()}
    out = golden.run("s4d_kernel", dict(a, L=np.array(8), dK=np.ones((3, 8), np.float32)))
    assert all(v.dtype == np.float64 for v in out.values())


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(A_re=np.zeros((3, 4))),
         r"A_re: expected negative real parts \(A_re < 0, .*\), got 0.0 at index \(0, 0\)"),
        (dict(A_re=np.full((3, 4), 0.5)), r"A_re: expected negative real parts"),
        (dict(A_im=np.zeros((3, 5))), r"A_im: expected shape \(H, N/2\) = \(3, 4\)"),
        (dict(C_re=np.zeros((2, 4))), r"C_re: expected shape \(H, N/2\) = \(3, 4\)"),
        (dict(log_dt=np.zeros((3, 1))), r"log_dt: expected 1 axes \(H,\)"),
        (dict(L=np.array(0)), "L: expected an integer >= 1, got 0"),
        (dict(L=np.array(2.5)), "L: expected an integer, got 2.5"),
        (dict(dK=np.zeros((3, 7))), r"dK: expected shape \(H, L\) = \(3, 8\)"),
        (dict(B_re=np.zeros((3, 4))), "inputs: unknown array 'B_re' for op s4d_kernel"),
    ],
)
def test_bad_input(rng, change, match):
    arrays = dict(_arrays(rng), L=np.array(8), dK=np.zeros((3, 8)))
    arrays.update(change)
    with pytest.raises(ValueError, match=match):
        golden.run("s4d_kernel", arrays)
