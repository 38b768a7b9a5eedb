"""Golden op contract (DESIGN.md): names, options, cotangents, gradients, errors; and the CLI."""

import subprocess
import sys

import numpy as np
import pytest

from ref import golden
from ref.catalog import ROOT
from ref.io import load_npz, save_npz
from ref.mixers.linear_scan import linear_scan_chunked, linear_scan_chunked_backward


def _scan_inputs(rng, with_h0=True, dtype=np.float64):
    B, T, D = 2, 63, 5  # T not a multiple of the usual chunk sizes
    arrays = {"a": rng.uniform(0, 1, (B, T, D)).astype(dtype), "b": rng.standard_normal((B, T, D)).astype(dtype)}
    if with_h0:
        arrays["initial_state"] = rng.standard_normal((B, D)).astype(dtype)
    return arrays


def test_linear_scan_outputs_and_gradients_match_an_independent_form(rng):
    arrays = _scan_inputs(rng)
    arrays["dh"] = rng.standard_normal(arrays["a"].shape)
    arrays["dht"] = rng.standard_normal(arrays["initial_state"].shape)
    out = golden.run("linear_scan", arrays)
    assert set(out) == {"h", "ht", "da", "db", "dinitial_state"}
    h, ht, cache = linear_scan_chunked(arrays["a"], arrays["b"], arrays["initial_state"], chunk_size=8)
    da, db, dh0 = linear_scan_chunked_backward(arrays["dh"], arrays["dht"], cache)
    for name, want in dict(h=h, ht=ht, da=da, db=db, dinitial_state=dh0).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-12, atol=1e-12, err_msg=name)
        assert out[name].dtype == np.float64


def test_no_cotangents_no_gradients_and_float32_inputs_run_in_float64(rng):
    out = golden.run("linear_scan", _scan_inputs(rng, with_h0=False, dtype=np.float32))
    assert set(out) == {"h", "ht"} and out["h"].dtype == np.float64


def test_one_cotangent_is_enough(rng):
    arrays = _scan_inputs(rng, with_h0=False)
    arrays["dht"] = rng.standard_normal((2, 5))
    out = golden.run("linear_scan", arrays)
    assert set(out) == {"h", "ht", "da", "db"}  # no initial_state given, so no dinitial_state
    assert np.all(out["db"][:, :-1] != 0)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("b"), r"inputs: missing required array 'b' \(B, T, D\) for op linear_scan"),
        (lambda a: a.update(initial_states=a["initial_state"]), "inputs: unknown array 'initial_states'"),
        (lambda a: a.update(b=a["b"].astype(np.int64)), r"b: expected a floating array \(B, T, D\), got dtype int64"),
        (lambda a: a.update(dh=np.zeros((2, 63, 5), np.int32)), "dh: expected a floating array"),
        (lambda a: a.update(b=a["b"][:, :10]), r"b: expected shape \(B, T, D\) = \(2, 63, 5\)"),
    ],
)
def test_bad_input_names_the_array(change, match, rng):
    arrays = _scan_inputs(rng)
    change(arrays)
    with pytest.raises(ValueError, match=match):
        golden.run("linear_scan", arrays)


def test_unknown_op():
    with pytest.raises(ValueError, match="op: expected one of .*linear_scan.*, got 'linear_scann'"):
        golden.run("linear_scann", {})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ref", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_golden_run_round_trip(tmp_path, rng):
    arrays = _scan_inputs(rng)
    arrays["dh"] = rng.standard_normal(arrays["a"].shape)
    save_npz(tmp_path / "in.npz", arrays)
    proc = _cli("golden", "run", "linear_scan", "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    out = load_npz(tmp_path / "out.npz")
    want = golden.run("linear_scan", arrays)
    assert set(out) == set(want)
    for k in want:
        np.testing.assert_array_equal(out[k], want[k])


def test_cli_errors_exit_with_code_2(tmp_path, rng):
    save_npz(tmp_path / "in.npz", {"a": np.zeros((1, 2, 3))})
    cases = [
        (("golden", "run", "nope", "--inputs", "x.npz", "--out", "y.npz"), "op: expected one of"),
        (("golden", "run", "linear_scan", "--inputs", str(tmp_path / "in.npz"), "--out", str(tmp_path / "o.npz")),
         "inputs: missing required array 'b'"),
        (("golden", "run", "linear_scan", "--inputs", str(tmp_path / "none.npz"), "--out", "y.npz"),
         "--inputs: expected an existing .npz file"),
        (("golden", "run", "linear_scan", "--out", "y.npz"), "the following arguments are required: --inputs"),
        (("lessons", "run", "no_such_lesson"), "lesson: expected one of"),
        (("bench", "no_such_bench"), "bench: expected all or one of"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "o.npz").exists()


def test_cli_golden_list_and_papers():
    proc = _cli("golden", "list")
    assert proc.returncode == 0 and "linear_scan" in proc.stdout and "dinitial_state" in proc.stdout
    for op in golden.OPS.values():  # every op with the reference it mirrors
        assert f"{op.name}\n  reference: {op.reference}\n" in proc.stdout
    proc = _cli("papers")
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 71  # header + 70 rows
