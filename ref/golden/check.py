"""Checking an implementation against golden bundles: per tensor, relative RMS error and max abs error.

Two ways to give the implementation:

* ``impl``: a Python function ``impl(op, arrays) -> results`` (``--impl module:function``). It is
  called once per case with the op name and the case's inputs, options (0-d arrays) and cotangents
  under the reference's names (exactly what ``ref.golden.run`` takes, so ``ref.golden:run`` checks
  this package against itself), and returns the outputs and gradients by name.
* ``outputs``: a folder that a program in any language filled (``--outputs OUTDIR``): for every
  case file ``BUNDLE/<case>.npz`` it wrote ``OUTDIR/<case>.npz`` (for a folder of bundles, with
  the same sub-folders ``OUTDIR/<op>/<case>.npz``) holding the outputs and gradients.

Error measures, per tensor (FLA's ``get_err_ratio``, fla/utils/_testing.py):

    rel_rms = sqrt(mean((got - want)^2)) / sqrt(mean(want^2))
    max_abs = max |got - want|, reported with the index where it occurs

A tensor passes when rel_rms <= tolerance(dtype, case); a reference that is exactly zero passes
when max_abs <= the same number. The tolerance (derived in ref/golden/CONVENTIONS.md) is

    tolerance = 4 * ( (u_acc + u_64) * (sqrt(length) + exponent) + sqrt(8) * u_store )

with u_store the unit roundoff of the dtype the data is stored in, u_acc that of the dtype sums
are carried in (float64 for float64, float32 otherwise) and u_64 that of the golden's own float64;
u_store counts only when it is coarser than u_acc (float16, bfloat16). ``length`` and
``exponent`` come from the case (``ref.golden.tolerance``).
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ref.golden.bundle import find_bundles, load_case, load_manifest, report_order, split_case
from ref.golden.tolerance import DTYPES, tolerance
from ref.io import load_npz

@dataclass
class TensorResult:
    name: str
    role: str  # "output" or "gradient"
    ok: bool
    tol: float
    rel_rms: float = math.nan
    max_abs: float = math.nan
    where: tuple = ()  # index of max_abs
    problem: str = ""  # why it could not be compared (missing, shape, dtype, NaN)
    zero_reference: bool = False  # the golden tensor is exactly zero: max_abs is compared with tol


@dataclass
class CaseResult:
    name: str
    description: str
    tensors: list[TensorResult] = field(default_factory=list)
    error: str = ""  # the implementation raised, or its output file could not be read

    @property
    def ok(self) -> bool:
        return not self.error and all(t.ok for t in self.tensors)


@dataclass
class BundleResult:
    path: Path
    op: str
    reference: str
    dtype: str  # the dtype whose tolerances were used
    manifest: dict
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)


def compare(name: str, role: str, got, want: np.ndarray, tol: float) -> TensorResult:
    """One tensor: shape and dtype first, then finiteness, then rel_rms against ``tol``."""
    if got is None:
        return TensorResult(name, role, False, tol, problem="missing from the implementation's results")
    got = np.asarray(got)
    if not np.issubdtype(got.dtype, np.floating):
        return TensorResult(name, role, False, tol, problem=f"expected a floating array, got dtype {got.dtype}")
    if got.shape != want.shape:
        return TensorResult(name, role, False, tol, problem=f"expected shape {want.shape}, got {got.shape}")
    got = got.astype(np.float64)
    if not np.all(np.isfinite(got)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        return TensorResult(name, role, False, tol, where=where,
                            problem=f"{int((~np.isfinite(got)).sum())} non-finite values, first at {where}")
    err = got - want
    if err.size == 0:
        return TensorResult(name, role, True, tol, 0.0, 0.0)
    where = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(err)), err.shape))
    max_abs = float(np.abs(err)[where])
    ref_rms = float(np.sqrt(np.mean(want**2)))
    if ref_rms == 0.0:  # nothing to be relative to: the error itself must be within the tolerance
        return TensorResult(name, role, max_abs <= tol, tol, math.nan, max_abs, where, zero_reference=True)
    rel_rms = float(np.sqrt(np.mean(err**2))) / ref_rms
    return TensorResult(name, role, rel_rms <= tol, tol, rel_rms, max_abs, where)


def load_impl(spec: str) -> Callable:
    """'package.module:function' -> the function, which must take (op, arrays)."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--impl: expected module:function (e.g. ref.golden:run), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--impl: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"--impl: module {module_name!r} has no function {func_name!r}")
    try:
        inspect.signature(fn).bind("op", {})
    except TypeError:
        raise ValueError(f"--impl: {spec} must take two arguments (op, arrays), "
                         f"its signature is {inspect.signature(fn)}") from None
    return fn


def check_bundle(path, *, impl: Callable | None = None, outputs=None, dtype: str | None = None) -> list[BundleResult]:
    """Check ``impl`` (a function (op, arrays) -> results) or the result files under ``outputs``
    against the bundle at ``path`` (one op's folder, or a folder of them). Every manifest and case
    file is verified first (ValueError naming the file and array); then each case is compared.
    ``dtype`` selects the tolerances; default: the dtype the bundle was exported in."""
    if (impl is None) == (outputs is None):
        raise ValueError("check: expected exactly one of impl (a Python function) and outputs (a folder)")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    root = Path(path)
    bundles = find_bundles(root)
    loaded = []
    for bundle in bundles:  # verify everything before running anything
        manifest = load_manifest(bundle)
        cases = [(entry, load_case(bundle, entry)) for entry in manifest["cases"]]
        loaded.append((bundle, manifest, cases))
    results = []
    for bundle, manifest, cases in loaded:
        use = dtype or manifest["dtype"]
        result = BundleResult(bundle, manifest["op"], manifest.get("reference", ""), use, manifest)
        for entry, arrays in cases:
            given, expected = split_case(entry, arrays)
            case = CaseResult(entry["name"], entry.get("description", ""))
            try:
                if impl is not None:
                    got = impl(manifest["op"], {k: v.copy() for k, v in given.items()})
                    if not isinstance(got, dict):
                        raise TypeError(f"expected a dict of arrays by name, got {type(got).__name__}")
                else:
                    rel = bundle.relative_to(root)
                    got = load_npz(Path(outputs) / rel / entry["file"], what=f"case {entry['name']} output")
            except Exception as e:  # report and go on with the next case
                case.error = f"{type(e).__name__}: {e}"
                result.cases.append(case)
                continue
            tol = tolerance(use, entry["length"], entry["exponent"])
            for name in report_order(manifest["op"], expected):
                case.tensors.append(compare(name, entry["arrays"][name]["role"], got.get(name), expected[name], tol))
            result.cases.append(case)
        results.append(result)
    return results


def _fmt(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) else str(x)


def format_report(results: list[BundleResult], verbose: bool = True) -> str:
    """A readable report: one line per tensor (``verbose``) or per failing tensor, and a summary."""
    lines = []
    failed_tensors = failed_cases = total_cases = 0
    for r in results:
        m = r.manifest
        lines.append(f"== {r.op}: {r.path}  (mirrors {r.reference}; ref {m['ref_version']}, seed {m['seed']}, "
                     f"inputs {m['dtype']}; tolerances for {r.dtype})")
        for c in r.cases:
            total_cases += 1
            failed_cases += not c.ok
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} case {c.name}: {c.description}")
            if c.error:
                lines.append(f"       error: {c.error}")
            for t in c.tensors:
                failed_tensors += not t.ok
                if t.ok and not verbose:
                    continue
                mark = "ok  " if t.ok else "FAIL"
                if t.problem:
                    lines.append(f"       {mark} {t.name:16s} {t.problem}")
                elif t.zero_reference:
                    sign = "<=" if t.ok else "> "
                    lines.append(f"       {mark} {t.name:16s} reference all zero: max_abs {_fmt(t.max_abs)} {sign} "
                                 f"tol {_fmt(t.tol)} at {t.where}")
                else:
                    sign = "<=" if t.ok else "> "
                    lines.append(f"       {mark} {t.name:16s} rel_rms {_fmt(t.rel_rms)} {sign} tol {_fmt(t.tol)}   "
                                 f"max_abs {_fmt(t.max_abs)} at {t.where}")
    ok = failed_cases == 0
    lines.append(f"{'PASSED' if ok else 'FAILED'}: {total_cases - failed_cases} of {total_cases} cases pass"
                 + ("" if ok else f"; {failed_tensors} tensors outside tolerance"))
    if not ok:
        worst = {}
        for r in results:
            for c in r.cases:
                bad = [t.name for t in c.tensors if not t.ok] or ["(error)"]
                if not c.ok:
                    worst[f"{r.op}/{c.name}"] = bad
        lines.append("failing: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in worst.items()))
    return "\n".join(lines)
