"""Safe file I/O: `.npz` written atomically, read without pickle.

Nothing is written half: ``save_npz`` writes to a temporary file in the destination folder,
flushes it to disk and renames it over the destination (``os.replace`` is atomic on POSIX and
Windows), so a crash leaves either the old file or the new one, never a truncated mix.
``load_npz`` reads every array eagerly with ``allow_pickle=False`` and turns the many ways a
damaged file can fail (bad zip, truncated member, object arrays) into one ``ValueError`` that
names the file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["save_npz", "load_npz", "write_text", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_npz(path, arrays: Mapping[str, np.ndarray], compressed: bool = True) -> Path:
    """Write ``arrays`` to ``path`` (.npz) atomically. Object arrays are refused."""
    path = Path(path)
    clean = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == object:
            raise ValueError(f"{k}: expected a numeric or string array (no pickled objects), got dtype object")
        clean[k] = v
    saver = np.savez_compressed if compressed else np.savez
    _atomic_write(path, lambda f: saver(f, **clean))
    return path


def load_npz(path, what: str = "file") -> dict[str, np.ndarray]:
    """Read every array of an .npz into memory with ``allow_pickle=False``.

    Raises ValueError (naming ``what`` and the path) for a missing, corrupt or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: expected an existing .npz file, got {str(path)!r} (not found)")
    try:
        # open the file here so that it is closed even when np.load fails half-way
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array
                raise ValueError(f"expected an .npz archive of named arrays, got a single {type(data).__name__}")
            with data:
                return {k: data[k] for k in data.files}
    # a damaged zip fails in many ways: bad headers, truncated members, corrupt deflate streams
    # (zlib.error), garbled compression fields (NotImplementedError)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error, NotImplementedError) as e:
        raise ValueError(f"{what}: {str(path)!r} is not a readable .npz (corrupt or truncated): {e}") from None


def write_text(path, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))
    return Path(path)


def write_json(path, obj) -> Path:
    """Write JSON atomically, pretty-printed, keys sorted, ending in a newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
