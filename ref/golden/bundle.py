"""Golden bundles: an op's cases written to disk with a manifest, and read back verified.

A bundle is one folder per op::

    DIR/gla/manifest.json          op, reference, layouts, conventions, versions, seed, dtype, cases
    DIR/gla/T1.npz                 one case: inputs, options, cotangents, outputs, gradients
    DIR/gla/T63_weak_h0.npz
    ...

Every case file holds, side by side and under the reference's argument names, the op's inputs,
its options (0-d arrays), the cotangents ``d<output>``, the outputs and the gradients ``d<input>``;
the manifest says which array plays which role, and records each array's dtype, shape and
sha256 (of its bytes in C order, little-endian).

``--dtype`` rounds the inputs and cotangents to that dtype (bfloat16 values are stored as float32,
since .npz has no bfloat16); the outputs and gradients are always float64, computed from the
rounded values, so a kernel fed the stored inputs is compared with the exact answer to *its*
problem. A bundle is written into a temporary folder and renamed into place: a reader sees the
old bundle or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

import ref
from ref.golden.registry import OPS, get, run
from ref.golden.tolerance import DTYPES, tolerance
from ref.io import load_npz, save_npz, write_json

BUNDLE_FORMAT = 1  # the manifest layout this package writes and reads
ROLES = ("input", "option", "cotangent", "output", "gradient")
DEFAULT_SEED = 0


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.1.0' -> (0, 1, 0); ValueError for anything that is not dot-separated numbers."""
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(f"version: expected dot-separated numbers such as '0.1.0', got {version!r}")
    return tuple(int(p) for p in version.split("."))


def sha256(x: np.ndarray) -> str:
    """sha256 of an array's bytes: C order, little-endian."""
    x = np.ascontiguousarray(x)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    return hashlib.sha256(x.tobytes()).hexdigest()


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even), returned as float32 holding those values."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    # add half an ulp of bfloat16 (0x7FFF) plus the lowest kept bit (ties to even), then cut 16 bits
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """The stored form of a floating array in ``dtype`` (bfloat16: float32 holding bfloat16 values)."""
    if dtype == "bfloat16":
        return round_bfloat16(x)
    return np.asarray(x).astype(dtype)


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def build_case(op_name: str, case, dtype: str) -> tuple[dict, dict]:
    """(arrays, manifest entry) of one case: inputs and cotangents rounded to ``dtype``, outputs and
    gradients computed in float64 from the rounded values."""
    op = get(op_name)
    option_names = {o.name for o in op.options}
    input_names = {t.name for t in op.inputs}
    given = {}
    roles = {}
    for name, x in case.arrays.items():
        if name in option_names:
            given[name], roles[name] = np.asarray(x), "option"
        else:
            given[name] = to_dtype(x, dtype)
            roles[name] = "input" if name in input_names else "cotangent"
    expected = run(op_name, given)
    for name in expected:
        roles[name] = "gradient" if name.startswith("d") and name[1:] in input_names else "output"
    arrays = {**given, **expected}
    entry = {
        "name": case.name,
        "file": f"{case.name}.npz",
        "description": case.description,
        "length": case.length,
        "exponent": case.exponent,
        "tolerances": {d: tolerance(d, case.length, case.exponent) for d in DTYPES},  # for reading; check recomputes
        "options": {n: given[n].item() for n in given if roles[n] == "option"},
        "arrays": {
            n: {"role": roles[n], "dtype": str(a.dtype), "shape": list(a.shape), "sha256": sha256(a)}
            for n, a in arrays.items()
        },
    }
    return arrays, entry


def manifest_header(op_name: str, dtype: str, seed: int) -> dict:
    op = get(op_name)
    return {
        "bundle_format": BUNDLE_FORMAT,
        "ref_version": ref.__version__,
        "numpy_version": np.__version__,
        "op": op.name,
        "reference": op.reference,
        "mirrors": op.mirrors,
        "layout": op.layout,
        "state_layout": op.state_layout,
        "conventions": list(op.conventions),
        "equations": op.notes,
        "dtype": dtype,
        "storage_dtype": "float32" if dtype == "bfloat16" else dtype,
        "seed": seed,
        "inputs": {t.name: t.shape for t in op.inputs},
        "outputs": {t.name: t.shape for t in op.outputs},
        "options": {o.name: o.default for o in op.options},
        "docs": "ref/golden/CONVENTIONS.md",
    }


def export(op_name: str, out_dir, *, dtype: str = "float64", seed: int = DEFAULT_SEED) -> Path:
    """Write the bundle of op ``op_name`` to ``out_dir/<op>/`` (replacing it); return that folder."""
    op = get(op_name)
    _check_dtype(dtype)
    if op.cases is None:
        raise ValueError(f"op: {op.name} declares no golden cases")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / op.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{op.name}.", suffix=".tmp", dir=out_dir))
    try:
        manifest = manifest_header(op.name, dtype, seed)
        manifest["cases"] = []
        for case in op.cases(np.random.default_rng(seed)):
            arrays, entry = build_case(op.name, case, dtype)
            save_npz(tmp / entry["file"], arrays)
            manifest["cases"].append(entry)
        write_json(tmp / "manifest.json", manifest)  # last: a folder with a manifest is complete
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if final.exists():  # rename() cannot replace a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{op.name}.", suffix=".old", dir=out_dir))
            os.replace(final, old / op.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_all(out_dir, *, dtype: str = "float64", seed: int = DEFAULT_SEED) -> list[Path]:
    """Write the bundle of every registered op under ``out_dir``."""
    return [export(name, out_dir, dtype=dtype, seed=seed) for name in OPS]


# ---------------------------------------------------------------------------------------------
# reading a bundle back


def find_bundles(path) -> list[Path]:
    """``path`` itself if it holds a manifest.json, else its sub-folders that do (``export all``)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"bundle: expected a folder written by 'golden export', got {str(path)!r} (not a folder)")
    if (path / "manifest.json").is_file():
        return [path]
    found = sorted(p.parent for p in path.glob("*/manifest.json"))
    if not found:
        raise ValueError(f"bundle: expected {str(path)!r} or its sub-folders to hold a manifest.json, found none")
    return found


def load_manifest(bundle) -> dict:
    """Read and validate a bundle's manifest.json: its format, the package version, the op, the
    dtype and the case entries. ValueError with the reason otherwise."""
    path = Path(bundle) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"bundle: {str(path)!r} is not a readable manifest: {e}") from None
    where = f"bundle {str(bundle)!r}"
    fmt = manifest.get("bundle_format")
    if fmt != BUNDLE_FORMAT:
        raise ValueError(
            f"{where}: unknown bundle_format {fmt!r}; this ref {ref.__version__} reads format {BUNDLE_FORMAT}"
        )
    written_by = manifest.get("ref_version")
    try:
        newer = version_tuple(written_by) > version_tuple(ref.__version__)
    except ValueError:
        raise ValueError(f"{where}: unknown ref_version {written_by!r} (expected a version such as "
                         f"{ref.__version__!r})") from None
    if newer:
        raise ValueError(f"{where}: unknown ref_version {written_by!r}: written by a newer ref than this one "
                         f"({ref.__version__}); upgrade ref to check it")
    if manifest.get("op") not in OPS:
        raise ValueError(f"{where}: unknown op {manifest.get('op')!r}; this ref knows {', '.join(sorted(OPS))}")
    if manifest.get("dtype") not in DTYPES:
        raise ValueError(f"{where}: unknown dtype {manifest.get('dtype')!r}; expected one of {', '.join(DTYPES)}")
    cases = manifest.get("cases")
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{where}: the manifest lists no cases")
    for c in cases:
        if not isinstance(c, dict) or not {"name", "file", "arrays", "length", "exponent"} <= set(c):
            raise ValueError(f"{where}: a case entry lacks name, file, arrays, length or exponent: {c!r:.200}")
        if Path(c["file"]).name != c["file"]:
            raise ValueError(f"{where}: case file {c['file']!r} must be a plain file name inside the bundle")
        for name, meta in c["arrays"].items():
            if meta.get("role") not in ROLES:
                raise ValueError(f"{where}: case {c['name']}: array {name!r} has unknown role {meta.get('role')!r}")
    return manifest


def load_case(bundle, entry: dict) -> dict[str, np.ndarray]:
    """The arrays of one case, each checked against the manifest: present, nothing extra, and the
    dtype, shape and sha256 recorded there."""
    path = Path(bundle) / entry["file"]
    arrays = load_npz(path, what=f"case {entry['name']}")
    where = f"case {entry['name']} ({path})"
    listed = entry["arrays"]
    missing = sorted(set(listed) - set(arrays))
    if missing:
        meta = listed[missing[0]]
        raise ValueError(f"{where}: missing array {missing[0]!r} ({meta['role']}, {meta['dtype']} "
                         f"{tuple(meta['shape'])}) that the manifest lists")
    extra = sorted(set(arrays) - set(listed))
    if extra:
        raise ValueError(f"{where}: array {extra[0]!r} is not in the manifest")
    for name, meta in listed.items():
        x = arrays[name]
        if str(x.dtype) != meta["dtype"]:
            raise ValueError(f"{where}: array {name!r}: expected dtype {meta['dtype']} (the manifest), got {x.dtype}")
        if list(x.shape) != list(meta["shape"]):
            raise ValueError(f"{where}: array {name!r}: expected shape {tuple(meta['shape'])} (the manifest), "
                             f"got {x.shape}")
        if sha256(x) != meta["sha256"]:
            raise ValueError(f"{where}: array {name!r}: sha256 mismatch (the file was changed after export: "
                             f"manifest {meta['sha256'][:12]}..., file {sha256(x)[:12]}...)")
    return arrays


def split_case(entry: dict, arrays: dict) -> tuple[dict, dict]:
    """(what an implementation is given: inputs, options, cotangents; what it must return: outputs, gradients)."""
    given = {n: arrays[n] for n, m in entry["arrays"].items() if m["role"] in ("input", "option", "cotangent")}
    expected = {n: arrays[n] for n, m in entry["arrays"].items() if m["role"] in ("output", "gradient")}
    return given, expected


def report_order(op_name: str, names) -> list[str]:
    """``names`` in the op's order: outputs as declared, then gradients as the inputs are declared."""
    op = get(op_name)
    order = [t.name for t in op.outputs] + ["d" + t.name for t in op.inputs]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
