"""Checkpoints: parameters, optimizer state, step and metadata in one ``.npz``.

Layout of the file (format version 1). Every entry is a plain array; nothing is pickled::

    __format_version__    0-d int64, = 1
    __step__              0-d int64, the training step the checkpoint was taken at
    __meta__              0-d unicode: JSON of the caller's metadata (a dict)
    __structure__         0-d unicode: JSON {"params": ..., "opt_state": ...} from tree_structure,
                          recording which nodes are dicts and which are lists ("opt_state"
                          is absent when no optimizer state was saved)
    params/<path>         one array per parameter, e.g. params/blocks/0/W
    opt_state/<path>      one array per leaf of the optimizer state, e.g. opt_state/exp_avg/blocks/0/W

Writing goes through :func:`ref.io.save_npz` (temporary file, fsync, rename), so a crash while
writing leaves the previous checkpoint as it was. Reading goes through :func:`ref.io.load_npz`
(``allow_pickle=False``) and is all or nothing: every array is read, the version, the keys and
(if a template is given) every path, shape and dtype are checked, and only then are the trees
built. Any problem -- a corrupt or truncated file, a missing or unexpected key, an unknown or
newer format, a template mismatch -- is one ValueError that names the file and says what is wrong.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ref import io
from ref.train.tree import tree_diff, tree_flatten, tree_structure, tree_unflatten

__all__ = ["FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT_VERSION = 1

_VERSION, _STEP, _META, _STRUCTURE = "__format_version__", "__step__", "__meta__", "__structure__"
_RESERVED = (_VERSION, _STEP, _META, _STRUCTURE)
_TREES = ("params", "opt_state")


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns. ``opt_state`` is None when none was saved."""

    params: object
    opt_state: object
    step: int
    meta: dict


def _to_json(obj, name: str) -> str:
    try:
        return json.dumps(obj, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}: expected JSON-serialisable data (dicts, lists, str, int, finite float), {e}"
        ) from None


def save_checkpoint(path, params, opt_state=None, step: int = 0, meta: dict | None = None) -> Path:
    """Write ``params`` (and ``opt_state``, ``step``, ``meta``) to ``path`` atomically.

    ``params`` and ``opt_state`` are trees of numpy arrays (numeric or string, any dtype, kept
    exactly); ``meta`` is a JSON-serialisable dict (e.g. the config, or ``rng.bit_generator.state``).
    Returns the path.
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise ValueError(f"meta: expected a dict (JSON object), got {type(meta).__name__}")

    arrays = {
        _VERSION: np.asarray(FORMAT_VERSION, dtype=np.int64),
        _STEP: np.asarray(int(step), dtype=np.int64),
        _META: np.asarray(_to_json(meta, "meta")),
    }
    if params is None:
        raise ValueError("params: expected a tree of arrays, got None")
    structures = {}  # "opt_state" is absent when there is no optimizer state
    for name, tree in (("params", params), ("opt_state", opt_state)):
        if tree is None:
            continue
        structures[name] = tree_structure(tree)
        for p, leaf in tree_flatten(tree).items():
            if not isinstance(leaf, np.ndarray):
                where = f"{name}/{p}" if p else name
                raise ValueError(f"{where}: expected a numpy array, got {type(leaf).__name__}")
            arrays[f"{name}/{p}" if p else name] = leaf
    arrays[_STRUCTURE] = np.asarray(_to_json(structures, "structure"))
    return io.save_npz(path, arrays)


def _expected_keys(structures: dict, prefix: str) -> list[str]:
    if prefix not in structures:
        return []
    # tree_flatten on the structure walks it like a tree whose leaves are None
    return [f"{prefix}/{p}" if p else prefix for p in tree_flatten(structures[prefix])]


def _read(path) -> dict[str, np.ndarray]:
    """Every array of the file, or a ValueError naming the file (ref.io turns every kind of
    zip damage into one)."""
    return io.load_npz(path, what="checkpoint")


def _json_entry(data, key, path):
    a = data[key]
    if a.shape != () or a.dtype.kind != "U":
        raise ValueError(f"checkpoint: {str(path)!r}: {key} must be a 0-d unicode array, got {a.dtype} {a.shape}")
    try:
        return json.loads(str(a))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint: {str(path)!r}: {key} is not valid JSON ({e})") from None


def _int_entry(data, key, path) -> int:
    a = data[key]
    if a.shape != () or a.dtype.kind not in "iu":
        raise ValueError(f"checkpoint: {str(path)!r}: {key} must be a 0-d integer array, got {a.dtype} {a.shape}")
    return int(a)


def _valid_structure(s) -> bool:
    if s is None:
        return True
    if isinstance(s, dict):
        return all(isinstance(k, str) and k and "/" not in k and _valid_structure(v) for k, v in s.items())
    if isinstance(s, list):
        return all(_valid_structure(v) for v in s)
    return False


def load_checkpoint(path, like=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; returns a :class:`Checkpoint`.

    With ``like`` (a params tree used as a template, e.g. a freshly initialised model) every path,
    shape and dtype of the stored params must match; the ValueError lists all differences.
    """
    data = _read(path)  # 1. read everything (allow_pickle=False)
    where = f"checkpoint: {str(path)!r}"

    # 2. the format version comes first: a newer file may have any layout
    if _VERSION not in data:
        raise ValueError(f"{where}: not a checkpoint of this library (no {_VERSION} entry)")
    version = _int_entry(data, _VERSION, path)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: format version {version} is newer than this code reads ({FORMAT_VERSION}); upgrade ref"
        )
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: unknown format version {version} (this code reads {FORMAT_VERSION})")

    # 3. the reserved entries
    missing = [k for k in _RESERVED if k not in data]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    step = _int_entry(data, _STEP, path)
    if step < 0:
        raise ValueError(f"{where}: {_STEP} must be >= 0, got {step}")
    meta = _json_entry(data, _META, path)
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: {_META} must be a JSON object, got {type(meta).__name__}")
    structures = _json_entry(data, _STRUCTURE, path)
    if (
        not isinstance(structures, dict)
        or "params" not in structures
        or not set(structures) <= set(_TREES)
        or not all(_valid_structure(s) for s in structures.values())
    ):
        raise ValueError(f"{where}: {_STRUCTURE} is not a valid description of the params and opt_state trees")

    # 4. the arrays: exactly the keys the structures announce
    expected = {t: _expected_keys(structures, t) for t in _TREES}
    announced = set(expected["params"]) | set(expected["opt_state"])
    missing = [k for t in _TREES for k in expected[t] if k not in data]
    unexpected = sorted(set(data) - announced - set(_RESERVED))
    if missing or unexpected:
        parts = ([f"missing key(s) {missing}"] if missing else []) + (
            [f"unexpected key(s) {unexpected}"] if unexpected else []
        )
        raise ValueError(f"{where}: " + "; ".join(parts))

    # 5. build the trees (from arrays already in memory), then compare with the template
    trees = {}
    for t in _TREES:
        if t not in structures:
            trees[t] = None
        else:
            flat = {k[len(t) + 1 :] if k != t else "": data[k] for k in expected[t]}
            trees[t] = tree_unflatten(flat, structures[t])
    if like is not None:
        diffs = tree_diff(trees["params"], like)
        if diffs:
            listing = "\n  ".join(diffs)
            raise ValueError(
                f"{where}: params do not match the template (like); {len(diffs)} difference(s):\n  {listing}"
            )
    return Checkpoint(trees["params"], trees["opt_state"], step, meta)
