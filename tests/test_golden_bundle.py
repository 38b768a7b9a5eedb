"""Golden bundles (``python -m ref golden export`` / ``check``): every op exported and checked
against itself, a damaged bundle refused with a clear message, the tolerances telling a correct
float32 implementation from an off-by-one one, the CLI, and the worked example."""

import json
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest

import ref
from ref import golden
from ref.catalog import ROOT
from ref.cli import main
from ref.golden import bundle, check
from ref.golden.tolerance import DTYPES, tolerance
from ref.io import load_npz, save_npz
from ref.mixers.gla import gla_chunked, gla_chunked_backward


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every op's bundle, float64, seed 0: exported once for the module (each test copies what it damages)."""
    out = tmp_path_factory.mktemp("golden")
    bundle.export_all(out)
    return out


def _copy(exported, tmp_path, op="linear_scan"):
    return shutil.copytree(exported / op, tmp_path / op)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ref", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# --- export, then check against our own ops -------------------------------------------------


def test_every_op_exports_and_checks_against_itself(exported):
    results = check.check_bundle(exported, impl=golden.run)
    assert sorted(r.op for r in results) == sorted(golden.OPS)
    for r in results:
        assert r.ok, check.format_report([r], verbose=False)
        for c in r.cases:
            assert c.tensors and all(t.ok and (t.zero_reference or t.rel_rms == 0.0) for t in c.tensors), c.name


@pytest.mark.parametrize("op", sorted(golden.OPS))
def test_manifest_records_the_contract_and_the_cases_cover_the_edges(exported, op):
    manifest = bundle.load_manifest(exported / op)
    spec = golden.get(op)
    assert manifest["op"] == op and manifest["reference"] == spec.reference and spec.reference
    assert manifest["layout"] == spec.layout and manifest["conventions"] == list(spec.conventions)
    assert manifest["ref_version"] == ref.__version__ and manifest["seed"] == 0 and manifest["dtype"] == "float64"
    lengths = set()
    for entry in manifest["cases"]:
        arrays = load_npz(exported / op / entry["file"])
        roles = {m["role"] for m in entry["arrays"].values()}
        assert {"input", "cotangent", "output", "gradient"} <= roles, entry["name"]
        for name, meta in entry["arrays"].items():
            assert meta["sha256"] == bundle.sha256(arrays[name])
            if meta["role"] in ("output", "gradient"):
                assert meta["dtype"] == "float64"
        first = "d" + spec.outputs[0].name  # the cotangent of the main output has the time axis
        time_axis = {"selective_scan": -1, "s4d_kernel": -1}.get(op, 1)
        lengths.add(arrays[first].shape[time_axis])
        assert set(entry["tolerances"]) == set(DTYPES)
    assert {1, 63, 500} <= lengths


def test_cases_cover_initial_states_final_state_cotangents_and_decays(exported):
    for op in ("gla", "simple_gla", "linear_scan", "ssd", "selective_scan"):
        cases = bundle.load_manifest(exported / op)["cases"]
        with_h0 = [any(n.startswith("initial_state") for n in c["arrays"]) for c in cases]
        with_final = [any(n in ("dht", "dfinal_state", "dlast_state") for n in c["arrays"]) for c in cases]
        assert any(with_h0) and not all(with_h0), op
        assert any(with_final) and not all(with_final), op
        names = " ".join(c["name"] for c in cases) + " ".join(c["description"] for c in cases)
        assert "strong" in names and "weak" in names, op


def test_same_seed_same_bundle_and_reexport_replaces_atomically(exported, tmp_path):
    again = bundle.export("ssd", tmp_path)
    assert bundle.load_manifest(again) == bundle.load_manifest(exported / "ssd")
    other = bundle.export("ssd", tmp_path / "other", seed=1)
    assert bundle.load_manifest(other)["cases"][0]["arrays"]["X"]["sha256"] != (
        bundle.load_manifest(again)["cases"][0]["arrays"]["X"]["sha256"])
    (again / "stale.npz").write_bytes(b"old")
    bundle.export("ssd", tmp_path)  # over an existing bundle
    assert not (again / "stale.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "ssd"]  # no temporary folders left


def test_a_failing_export_leaves_the_old_bundle(exported, tmp_path, monkeypatch):
    path = bundle.export("linear_scan", tmp_path)
    before = bundle.load_manifest(path)
    op = golden.get("linear_scan")

    def broken(rng):
        raise RuntimeError("cases failed half-way")

    monkeypatch.setitem(golden.OPS, "linear_scan", type(op)(**{**op.__dict__, "cases": broken}))
    with pytest.raises(RuntimeError, match="half-way"):
        bundle.export("linear_scan", tmp_path)
    assert bundle.load_manifest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["linear_scan"]


@pytest.mark.parametrize("dtype, stored", [("float32", np.float32), ("float16", np.float16), ("bfloat16", np.float32)])
def test_export_dtype_rounds_inputs_and_keeps_float64_goldens(tmp_path, dtype, stored):
    path = bundle.export("gla", tmp_path, dtype=dtype)
    manifest = bundle.load_manifest(path)
    assert manifest["dtype"] == dtype
    entry = manifest["cases"][0]
    arrays = bundle.load_case(path, entry)
    assert arrays["q"].dtype == stored and arrays["do"].dtype == stored and arrays["o"].dtype == np.float64
    if dtype == "bfloat16":  # bfloat16 values: the low 16 bits of the float32 are zero
        assert not np.any(arrays["q"].view(np.uint32) & 0xFFFF)
    assert check.check_bundle(path, impl=golden.run)[0].ok  # the goldens are of the rounded inputs


def test_round_bfloat16_to_nearest_even():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7 + 2**-9, -3.0e38, 1e-40], np.float32)
    got = bundle.round_bfloat16(x)
    assert got[0] == 1.0 and got[1] == 1.0  # a tie goes to the even neighbour
    assert got[2] == 1 + 2**-6  # tie between 1 + 2^-7 and 1 + 2^-6: the even one
    assert got[3] == 1 + 2**-7
    assert np.all(got.view(np.uint32) & 0xFFFF == 0)
    assert abs(got[4] / x[4] - 1) <= 2**-8


# --- a damaged bundle fails with a clear message --------------------------------------------


def _rewrite_case(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    case = path / manifest["cases"][0]["file"]
    arrays = load_npz(case)
    change(arrays)
    save_npz(case, arrays)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("b"), r"case T1 .*: missing array 'b' \(input, float64 \(2, 1, 5\)\) that the manifest lists"),
        (lambda a: a.update(b=a["b"].astype(np.float32)),
         r"case T1 .*: array 'b': expected dtype float64 \(the manifest\), got float32"),
        (lambda a: a["b"].__setitem__((0, 0, 0), a["b"][0, 0, 0] + 1e-12), r"case T1 .*: array 'b': sha256 mismatch"),
        (lambda a: a.update(b=a["b"][:, :, :4]), r"array 'b': expected shape \(2, 1, 5\) \(the manifest\), got"),
        (lambda a: a.update(extra=np.zeros(3)), r"array 'extra' is not in the manifest"),
    ],
    ids=["missing", "dtype", "tampered", "shape", "extra"],
)
def test_damaged_case_files_are_refused(exported, tmp_path, change, match):
    path = _copy(exported, tmp_path)
    _rewrite_case(path, change)
    with pytest.raises(ValueError, match=match):
        check.check_bundle(path, impl=golden.run)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("ref_version", "9.9.9", r"unknown ref_version '9.9.9': written by a newer ref than this one \(0\.1\.0\)"),
        ("ref_version", "latest", r"unknown ref_version 'latest' \(expected a version such as '0\.1\.0'\)"),
        ("bundle_format", 2, r"unknown bundle_format 2; this ref 0\.1\.0 reads format 1"),
        ("op", "mamba3", r"unknown op 'mamba3'; this ref knows attention, gla"),
        ("dtype", "float8", r"unknown dtype 'float8'"),
    ],
)
def test_a_bad_manifest_is_refused(exported, tmp_path, key, value, match):
    path = _copy(exported, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=match):
        check.check_bundle(path, impl=golden.run)


def test_not_a_bundle(tmp_path):
    with pytest.raises(ValueError, match="bundle: expected a folder written by 'golden export'"):
        check.check_bundle(tmp_path / "none", impl=golden.run)
    with pytest.raises(ValueError, match="or its sub-folders to hold a manifest.json, found none"):
        check.check_bundle(tmp_path, impl=golden.run)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a readable manifest"):
        check.check_bundle(tmp_path, impl=golden.run)


# --- what check reports about an implementation ---------------------------------------------


def test_outputs_written_by_another_program(exported, tmp_path):
    """--outputs: OUTDIR/<op>/<case>.npz as a program in any language would write them."""
    for op in ("linear_scan", "ssd"):
        for entry in bundle.load_manifest(exported / op)["cases"]:
            given, _ = bundle.split_case(entry, bundle.load_case(exported / op, entry))
            save_npz(tmp_path / "out" / op / entry["file"], golden.run(op, given))
    shutil.copytree(exported / "linear_scan", tmp_path / "bundles" / "linear_scan")
    shutil.copytree(exported / "ssd", tmp_path / "bundles" / "ssd")
    assert all(r.ok for r in check.check_bundle(tmp_path / "bundles", outputs=tmp_path / "out"))
    single = check.check_bundle(tmp_path / "bundles" / "ssd", outputs=tmp_path / "out" / "ssd")
    assert single[0].ok

    case = tmp_path / "out" / "ssd" / "L63_weak.npz"
    arrays = load_npz(case)
    arrays["dB"] = arrays["dB"] * (1 + 1e-6)  # a small error: far above float64's tolerance
    del arrays["final_state"]
    save_npz(case, arrays)
    (tmp_path / "out" / "ssd" / "L1.npz").unlink()
    (r,) = check.check_bundle(tmp_path / "bundles" / "ssd", outputs=tmp_path / "out" / "ssd")
    by_name = {c.name: c for c in r.cases}
    assert "case L1 output: expected an existing .npz file" in by_name["L1"].error
    bad = {t.name: t for t in by_name["L63_weak"].tensors if not t.ok}
    assert set(bad) == {"final_state", "dB"}
    assert bad["final_state"].problem == "missing from the implementation's results"
    assert bad["dB"].rel_rms == pytest.approx(1e-6, rel=1e-3)
    report = check.format_report([r], verbose=False)
    assert "FAIL dB" in report and "FAILED: 3 of 5 cases pass" in report
    assert "failing: ssd/L1: (error); ssd/L63_weak: final_state, dB" in report
    # float32 tolerances are looser: the 1e-6 error of dB passes there (the other problems do not)
    (r32,) = check.check_bundle(tmp_path / "bundles" / "ssd", outputs=tmp_path / "out" / "ssd", dtype="float32")
    assert {t.name for c in r32.cases for t in c.tensors if not t.ok} == {"final_state"}


def test_compare_shape_dtype_nonfinite_and_zero_reference():
    want = np.arange(6.0).reshape(2, 3)
    assert check.compare("o", "output", want.reshape(3, 2), want, 1e-6).problem == "expected shape (2, 3), got (3, 2)"
    text = check.compare("o", "output", np.full((2, 3), "a"), want, 1e-6)
    assert text.problem == "expected a floating array, got dtype <U1"
    nan = want.copy()
    nan[1, 2] = np.nan
    assert check.compare("o", "output", nan, want, 1e-6).problem == "1 non-finite values, first at (1, 2)"
    r = check.compare("o", "output", want + np.array([0, 0, 0, 0, 3e-3, 0]).reshape(2, 3), want, 1e-6)
    assert not r.ok and r.where == (1, 1) and r.max_abs == pytest.approx(3e-3)
    zero = np.zeros(4)
    assert check.compare("dq", "gradient", zero + 1e-20, zero, 1e-16).ok
    assert not check.compare("dq", "gradient", zero + 1e-3, zero, 1e-16).ok


def _gla_float32(op, arrays):
    """A correct GLA computed in float32 by another algorithm (the chunked form, chunks of 16)."""
    f = {k: v for k, v in arrays.items() if v.ndim}
    scale = arrays["scale"].item() if "scale" in arrays else None
    o, ht, cache = gla_chunked(f["q"], f["k"], f["v"], f["gk"], scale=scale, initial_state=f.get("initial_state"),
                               chunk_size=16)
    assert o.dtype == np.float32
    dq, dk, dv, dgk, dh0 = gla_chunked_backward(f["do"], f.get("dht"), cache)
    out = dict(o=o, dq=dq, dk=dk, dv=dv, dgk=dgk)
    if arrays["output_final_state"].item():
        out["ht"] = ht
    if dh0 is not None:
        out["dinitial_state"] = dh0
    return out


def test_tolerances_pass_a_correct_float32_implementation_and_fail_an_off_by_one(tmp_path):
    from ref.golden.wrong_decay_example import gla_wrong_decay

    path = bundle.export("gla", tmp_path, dtype="float32")
    (right,) = check.check_bundle(path, impl=_gla_float32)
    assert right.ok, check.format_report([right], verbose=False)
    worst = max(t.rel_rms / t.tol for c in right.cases for t in c.tensors if not t.zero_reference)
    assert worst < 0.5  # float32 rounding stays well inside the float32 bound
    path16 = bundle.export("gla", tmp_path / "f16", dtype="float16")

    def float16_outputs(op, arrays):  # float32 arithmetic on float16 data, results stored in float16
        results = _gla_float32(op, {n: x.astype(np.float32) if x.ndim else x for n, x in arrays.items()})
        return {n: x.astype(np.float16) for n, x in results.items()}

    (right16,) = check.check_bundle(path16, impl=float16_outputs)
    assert right16.ok
    assert max(t.rel_rms / t.tol for c in right16.cases for t in c.tensors if not t.zero_reference) < 0.1
    for dtype in DTYPES:  # the bug is outside even the bfloat16 bound in every case
        (wrong,) = check.check_bundle(path, impl=gla_wrong_decay, dtype=dtype)
        for c in wrong.cases:
            assert not c.error and {"o", "dgk"} <= {t.name for t in c.tensors if not t.ok}, (dtype, c.name)


def test_tolerance_grows_with_length_exponent_and_coarser_dtypes():
    assert tolerance("float64", 500, 0) < tolerance("float32", 1, 0) < tolerance("float16", 1, 0) < tolerance(
        "bfloat16", 1, 0)
    assert tolerance("float32", 500, 0) > tolerance("float32", 1, 0)
    assert tolerance("float32", 1, 100) > tolerance("float32", 1, 0)
    assert tolerance("float32", 400, 0) == pytest.approx(4 * (2**-24 + 2**-53) * 20)
    with pytest.raises(ValueError, match="dtype: expected one of float64, float32, float16, bfloat16, got 'int8'"):
        tolerance("int8", 1, 0)


def test_an_implementation_that_raises_is_reported_per_case(exported):
    def impl(op, arrays):
        if arrays["a"].shape[1] == 1:
            raise RuntimeError("my kernel needs T > 1")
        return golden.run(op, arrays)

    (r,) = check.check_bundle(exported / "linear_scan", impl=impl)
    assert [c.name for c in r.cases if not c.ok] == ["T1"]
    assert r.cases[0].error == "RuntimeError: my kernel needs T > 1"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("ref.golden.run", "--impl: expected module:function"),
        ("no_such_module:f", "--impl: cannot import module 'no_such_module'"),
        ("ref.golden:nope", "--impl: module 'ref.golden' has no function 'nope'"),
        ("ref.golden:get", r"--impl: ref.golden:get must take two arguments \(op, arrays\)"),
    ],
)
def test_load_impl_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        check.load_impl(spec)


# --- command line, worked example, docs, version --------------------------------------------


def test_cli_export_and_check(tmp_path, capsys):
    proc = _cli("golden", "export", "gla", "--out", str(tmp_path), "--dtype", "float32")
    assert proc.returncode == 0 and f"wrote {tmp_path / 'gla'} (5 cases, float32)" in proc.stdout, proc.stderr
    proc = _cli("golden", "check", str(tmp_path), "--impl", "ref.golden:run")
    assert proc.returncode == 0 and "PASSED: 5 of 5 cases pass" in proc.stdout, proc.stderr
    assert "tolerances for float32" in proc.stdout
    # the rest in-process (ref.cli.main), to save interpreter starts
    rc = main(["golden", "check", str(tmp_path / "gla"), "--impl", "ref.golden.wrong_decay_example:gla_wrong_decay",
               "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED: 0 of 5 cases pass" in out
    assert "FAIL o " in out and "ok   dk" not in out  # --quiet: failing tensors only
    for args, message in [
        (("golden", "export", "nope", "--out", str(tmp_path)), "op: expected one of"),
        (("golden", "export", "gla", "--out", str(tmp_path), "--dtype", "int8"), "invalid choice: 'int8'"),
        (("golden", "check", str(tmp_path)), "one of the arguments --impl --outputs is required"),
        (("golden", "check", str(tmp_path), "--impl", "x:y", "--outputs", "o"), "not allowed with argument"),
        (("golden", "check", str(tmp_path / "none"), "--impl", "ref.golden:run"), "bundle: expected a folder"),
        (("golden", "check", str(tmp_path), "--impl", "ref.golden"), "--impl: expected module:function"),
    ]:
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        assert rc == 2 and message in capsys.readouterr().err, args


def test_cli_check_refuses_a_tampered_bundle_with_exit_code_2(exported, tmp_path):
    path = _copy(exported, tmp_path)
    _rewrite_case(path, lambda a: a["a"].__setitem__((0, 0, 0), 0.5))
    proc = _cli("golden", "check", str(path), "--impl", "ref.golden:run")
    assert proc.returncode == 2 and "array 'a': sha256 mismatch (the file was changed after export" in proc.stderr


def test_worked_example_catches_the_off_by_one(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ref.golden.wrong_decay_example", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    t1 = out[out.index("FAIL case T1"): out.index("case T63_weak_h0")]
    for name in ("o", "ht", "dq", "dgk", "dinitial_state"):
        assert f"FAIL {name} " in t1, name
    for name in ("dk", "dv"):  # a one-step case: the keys and values do not meet a decay
        assert f"ok   {name} " in t1, name
    assert "FAILED: 0 of 5 cases pass" in out and "PASSED: 5 of 5 cases pass" in out
    doc = (ROOT / "ref" / "golden" / "WORKED_EXAMPLE.md").read_text()
    assert "ref/golden/wrong_decay_example.py" in doc
    for line in t1.strip().splitlines()[1:]:  # the page shows the T1 block as the script prints it
        assert line.split(" at ")[0] in doc, line


def test_conventions_page_covers_every_op():
    page = (ROOT / "ref" / "golden" / "CONVENTIONS.md").read_text()
    for op in golden.OPS.values():
        assert f"`{op.name}`" in page and f"`{op.reference.split()[0]}`" in page, op.name
    for dtype in DTYPES:
        assert dtype in page


def test_version_is_the_one_pyproject_declares():
    """The manifest records ``ref.__version__``: pyproject must take the version from there."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ref.__version__"}
