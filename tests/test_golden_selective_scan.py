"""Golden op selective_scan: names, options, conditional last_state, gradients of every input."""

import numpy as np
import pytest

from ref import golden
from ref.mixers.selective_scan import selective_scan_chunked, selective_scan_chunked_backward
from tests.mixers.ss_cases import selective_scan_by_definition

pytestmark = pytest.mark.mamba


def _inputs(rng, mode="variable", full=True):
    Bn, Dn, L, N = 2, 4, 63, 3
    shape = {"fixed": (Dn, N), "variable": (Bn, N, L), "grouped": (Bn, 2, N, L)}[mode]
    arrays = dict(u=rng.standard_normal((Bn, Dn, L)), delta=0.5 * rng.uniform(size=(Bn, Dn, L)),
                  A=-0.5 - 0.5 * rng.uniform(size=(Dn, N)), B=rng.standard_normal(shape), C=rng.standard_normal(shape))
    if full:
        arrays.update(D=rng.standard_normal(Dn), z=rng.standard_normal((Bn, Dn, L)),
                      delta_bias=0.5 * rng.uniform(size=Dn))
    return arrays


@pytest.mark.parametrize("mode", ["fixed", "variable", "grouped"])
def test_outputs_match_the_definition_and_gradients_an_independent_form(rng, mode):
    arrays = _inputs(rng, mode)
    arrays.update(delta_softplus=np.array(True), return_last_state=np.array(True))
    arrays["dout"] = rng.standard_normal(arrays["u"].shape)
    arrays["dlast_state"] = rng.standard_normal((2, 4, 3))
    out = golden.run("selective_scan", arrays)
    assert set(out) == {"out", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"}
    args = {k: arrays[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")}
    want_out, want_last = selective_scan_by_definition(**args, delta_softplus=True)
    np.testing.assert_allclose(out["out"], want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["last_state"], want_last, rtol=1e-12, atol=1e-12)
    _, _, cache = selective_scan_chunked(*args.values(), True, return_last_state=True, chunk_size=8)
    grads = selective_scan_chunked_backward(arrays["dout"], arrays["dlast_state"], cache)
    for name, g in zip(("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"), grads):
        np.testing.assert_allclose(out[name], g, rtol=1e-10, atol=1e-11, err_msg=name)


def test_defaults_minimal_inputs_and_float32(rng):
    arrays = {k: v.astype(np.float32) for k, v in _inputs(rng, "fixed", full=False).items()}
    out = golden.run("selective_scan", arrays)
    assert set(out) == {"out"} and out["out"].dtype == np.float64


def test_bad_input(rng):
    arrays = _inputs(rng)
    with pytest.raises(ValueError, match="dlast_state: a cotangent of 'last_state'"):
        golden.run("selective_scan", dict(arrays, dlast_state=np.zeros((2, 4, 3))))
    with pytest.raises(ValueError, match=r"inputs: missing required array 'A' \(D, N\)"):
        golden.run("selective_scan", {k: v for k, v in arrays.items() if k != "A"})
    with pytest.raises(ValueError, match="inputs: unknown array 'dt'"):
        golden.run("selective_scan", dict(arrays, dt=arrays["delta"]))
    with pytest.raises(ValueError, match="A: expected negative real values"):
        golden.run("selective_scan", dict(arrays, A=-arrays["A"]))
