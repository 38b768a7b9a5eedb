"""Golden ops lstm and gru: a run against the mixers, export + check roundtrips, the tolerances
telling a float32 implementation from PyTorch's-GRU-versus-the-paper's, and bad input."""

import numpy as np
import pytest

from ref import golden
from ref.golden import bundle, check
from ref.golden.tolerance import tolerance
from ref.mixers.rnn import gru, gru_backward, lstm, lstm_backward

pytestmark = pytest.mark.rnn

LSTM_GRADS = ("dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")
GRU_GRADS = ("dx", "dh0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")


def mixers(op, arrays, dtype=np.float64):
    """The ops computed by ref.mixers.rnn in ``dtype``, returned in float64 as ``check`` wants them."""
    a = {k: v.astype(dtype) if v.dtype.kind == "f" and v.ndim else v for k, v in arrays.items()}
    if op == "lstm":
        y, hT, cT, cache = lstm(a["x"], a.get("h0"), a.get("c0"), a["weight_ih"], a["weight_hh"],
                                a.get("bias_ih"), a.get("bias_hh"))
        grads = lstm_backward(a["dy"], a.get("dhT"), a.get("dcT"), cache)
        out = dict(y=y, hT=hT, cT=cT, **dict(zip(LSTM_GRADS, grads)))
    else:
        y, hT, cache = gru(a["x"], a.get("h0"), a["weight_ih"], a["weight_hh"], a.get("bias_ih"), a.get("bias_hh"))
        out = dict(y=y, hT=hT, **dict(zip(GRU_GRADS, gru_backward(a["dy"], a.get("dhT"), cache))))
    return {k: v.astype(np.float64) for k, v in out.items() if v is not None}


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_run_matches_the_mixer(rng, op):
    case = golden.get(op).cases(rng)[0]  # T1: every input and cotangent present
    out = golden.run(op, case.arrays)
    want = mixers(op, case.arrays)
    assert set(out) == set(want)
    for k in want:
        assert np.array_equal(out[k], want[k]), k


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_optional_inputs_and_cotangents(rng, op):
    """No h0, c0, biases: zeros and no gradient for them; no cotangent at all: outputs only."""
    case = golden.get(op).cases(rng)[4]  # T500_nobias
    arrays = {k: v[:, :7] if k in ("x", "dy") else v for k, v in case.arrays.items()}
    out = golden.run(op, arrays)
    assert not {"dh0", "dc0", "dbias_ih", "dbias_hh"} & set(out)
    assert {"dx", "dweight_ih", "dweight_hh"} <= set(out)
    outputs_only = golden.run(op, {k: v for k, v in arrays.items() if not k.startswith("d")})
    assert set(outputs_only) == {t.name for t in golden.get(op).outputs}


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_export_and_check_roundtrip(tmp_path, op):
    path = bundle.export(op, tmp_path)
    manifest = bundle.load_manifest(path)
    assert manifest["reference"] == golden.get(op).reference
    assert [c["name"] for c in manifest["cases"]] == ["T1", "T63_h0", "T63_saturated", "T500_h0", "T500_nobias"]
    results = check.check_bundle(path, impl=golden.run)
    assert results[0].ok, check.format_report(results, verbose=False)
    assert all(t.rel_rms == 0.0 or t.zero_reference for c in results[0].cases for t in c.tensors)
    assert check.check_bundle(path, impl=mixers)[0].ok


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_a_float32_implementation_passes_well_inside_the_tolerance(tmp_path, op):
    """The mixers in float32 on a float32 bundle: within a quarter of the float32 tolerance in every
    case and tensor (the weights are PyTorch's initialisation, so rounding errors do not grow
    through the recurrence)."""
    path = bundle.export(op, tmp_path, dtype="float32")
    (result,) = check.check_bundle(path, impl=lambda name, arrays: mixers(name, arrays, np.float32))
    assert result.ok, check.format_report([result], verbose=False)
    for entry, case in zip(bundle.load_manifest(path)["cases"], result.cases):
        tol = tolerance("float32", entry["length"], entry["exponent"])
        for t in case.tensors:
            assert t.rel_rms < tol / 4, (case.name, t.name, t.rel_rms, tol)


def test_the_papers_gru_fails_every_case(tmp_path):
    """The 2014 GRU (r applied to h before W_hn) is a different function: its y fails every case."""
    path = bundle.export("gru", tmp_path, dtype="float32")

    def paper_gru(name, arrays):
        x, W_ih, W_hh = arrays["x"], arrays["weight_ih"], arrays["weight_hh"]
        H = W_hh.shape[1]
        b_ih = arrays.get("bias_ih", np.zeros(3 * H))
        b_hh = arrays.get("bias_hh", np.zeros(3 * H))
        h = arrays.get("h0", np.zeros((x.shape[0], H)))
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        ys = []
        for t in range(x.shape[1]):
            gi = x[:, t] @ W_ih.T + b_ih
            r = sig(gi[:, :H] + h @ W_hh[:H].T + b_hh[:H])
            z = sig(gi[:, H:2 * H] + h @ W_hh[H:2 * H].T + b_hh[H:2 * H])
            n = np.tanh(gi[:, 2 * H:] + (r * h) @ W_hh[2 * H:].T + b_hh[2 * H:])
            h = (1 - z) * n + z * h
            ys.append(h)
        return {"y": np.stack(ys, axis=1).astype(np.float64), "hT": h.astype(np.float64)}

    (result,) = check.check_bundle(path, impl=paper_gru)
    for case in result.cases:
        y = next(t for t in case.tensors if t.name == "y")
        assert not y.ok and y.rel_rms > 10 * y.tol, (case.name, y.rel_rms, y.tol)


def test_bad_input(rng):
    arrays = golden.get("lstm").cases(rng)[0].arrays
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(4H, H\)"):
        golden.run("lstm", dict(arrays, weight_hh=arrays["weight_hh"][:-1]))
    with pytest.raises(ValueError, match=r"c0: expected shape \(B, H\)"):
        golden.run("lstm", dict(arrays, c0=arrays["c0"][:1]))
    with pytest.raises(ValueError, match=r"dcT: expected shape \(B, H\)"):
        golden.run("lstm", dict(arrays, dcT=arrays["dcT"][:, :1]))
    with pytest.raises(ValueError, match=r"unknown array 'dc0'"):
        golden.run("gru", {k: v for k, v in dict(arrays, dc0=arrays["c0"]).items() if k not in ("c0", "dcT")})
