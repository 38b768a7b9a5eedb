"""Small datasets shipped inside the package (``ref/tasks/data/``): nothing is downloaded at run time.

===========================  ===================================================================
``load_text_corpus()``       English text, str of 154,469 characters (ASCII): Shakespeare's
                             *Coriolanus*, the first play of karpathy/char-rnn's tinyshakespeare
                             ``input.txt`` (speaker lines ``NAME:``, speeches, blank lines between).
``load_code_corpus()``       Python source, str of ~231,500 characters: 11 readable modules of the
                             CPython 3.11.7 standard library, each preceded by one header line
                             ``# ===== Lib/<name>.py (CPython 3.11.7) =====`` and followed by a blank
                             line. ``code_corpus_files()`` splits it back into {name: source}.
``load_digits()``            scikit-learn's 8x8 handwritten digits (UCI test set): X float64
                             (1797, 64) with integer values 0..16 (row-major 8x8 pixels), y int64
                             (1797,) in 0..9; ``test_fraction`` gives a seeded stratified split.
===========================  ===================================================================

Every file is listed with its sha256 in ``data/MANIFEST.json`` (origins and licenses in
``data/SOURCES.md``); the loaders check the hash and raise ValueError on a damaged file.

Language-model batches::

    ids = CharTokenizer.from_corpus(text).encode(text)   # (N,) int64
    train, val = train_val_split(ids, val_fraction=0.1)  # first 90% / last 10%, contiguous
    for x, y in lm_batches(train, batch_size=B, seq_len=T, rng=rng, num_batches=100):
        ...  # x, y: (B, T) int64 windows with y[:, t] = x[:, t + 1] (the next token)
"""

from __future__ import annotations

import gzip
import hashlib
import io as _io
import json
import re
from collections.abc import Iterator
from importlib import resources

import numpy as np

from ref import checks

__all__ = [
    "load_text_corpus",
    "load_code_corpus",
    "code_corpus_files",
    "load_digits",
    "train_val_split",
    "lm_batches",
    "data_files",
    "DIGITS_CLASS_COUNTS",
]

TEXT_FILE = "tinyshakespeare_coriolanus.txt"
CODE_FILE = "cpython311_stdlib.py.txt"
DIGITS_FILE = "digits.csv.gz"

#: images per class 0..9 in scikit-learn's digits (1797 in all)
DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)

_CODE_HEADER = re.compile(r"^# ===== Lib/(?P<name>[\w.]+\.py) \(CPython 3\.11\.7\) =====\n", re.MULTILINE)


def _data_dir():
    return resources.files("ref.tasks") / "data"


def data_files() -> dict[str, dict]:
    """The manifest: {file name: {"bytes", "sha256", "license", "origin"}} for every shipped data file."""
    return json.loads((_data_dir() / "MANIFEST.json").read_text(encoding="utf-8"))["files"]


def _read_checked(name: str) -> bytes:
    """Read a shipped data file and check its size and sha256 against MANIFEST.json."""
    entry = data_files()[name]
    data = (_data_dir() / name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry["bytes"] or digest != entry["sha256"]:
        raise ValueError(
            f"{name}: expected {entry['bytes']} bytes with sha256 {entry['sha256']} (MANIFEST.json), "
            f"got {len(data)} bytes with sha256 {digest}: the shipped data file is damaged"
        )
    return data


def load_text_corpus() -> str:
    """Shakespeare's *Coriolanus* (public domain) as one str of 154,469 ASCII characters."""
    return _read_checked(TEXT_FILE).decode("utf-8")


def load_code_corpus() -> str:
    """Eleven CPython 3.11.7 standard-library modules (PSF-2.0) concatenated, one header line each."""
    return _read_checked(CODE_FILE).decode("utf-8")


def code_corpus_files() -> dict[str, str]:
    """The code corpus split back into {"textwrap.py": source, ...}, in corpus order."""
    text = load_code_corpus()
    heads = list(_CODE_HEADER.finditer(text))
    files = {}
    for h, nxt in zip(heads, heads[1:] + [None]):
        end = nxt.start() if nxt is not None else len(text)
        files[h.group("name")] = text[h.end() : end - 1]  # drop the blank separator line
    return files


def load_digits(test_fraction: float | None = None, rng: np.random.Generator | int | None = None):
    """scikit-learn's 8x8 digits, without scikit-learn.

    Returns ``(X, y)``: X float64 (1797, 64), integer-valued in [0, 16], pixel (r, c) at column
    8r + c; y int64 (1797,) in 0..9 (counts per class: ``DIGITS_CLASS_COUNTS``).

    With ``test_fraction`` in (0, 1), returns ``(X_train, y_train, X_test, y_test)``: a stratified
    split (each class contributes round(n_class * test_fraction) images to the test set), shuffled
    with ``rng`` (a ``np.random.Generator`` or an int seed, required): the same seed gives the same
    split.
    """
    raw = gzip.decompress(_read_checked(DIGITS_FILE)).decode("ascii")
    table = np.loadtxt(_io.StringIO(raw), delimiter=",", dtype=np.int64)  # (1797, 65): pixels, label
    if table.shape != (1797, 65):
        raise ValueError(f"{DIGITS_FILE}: expected a (1797, 65) table, got {table.shape}")
    X = table[:, :64].astype(np.float64)  # (1797, 64)
    y = table[:, 64].copy()  # (1797,)
    if test_fraction is None:
        return X, y
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = _generator(rng, "rng")
    test_idx = []
    for c in range(10):
        members = np.flatnonzero(y == c)  # (n_c,)
        n_test = int(round(len(members) * test_fraction))
        test_idx.append(rng.permutation(members)[:n_test])
    test = rng.permutation(np.concatenate(test_idx))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    return X[train], y[train], X[test], y[test]


def _generator(rng, name: str) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name}: expected a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _token_array(tokens, name: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise ValueError(
            f"{name}: expected a 1-D integer array of token ids (N,), got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr


def train_val_split(tokens, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split a token stream into (train, val): the first ``1 - val_fraction`` and the rest.

    The split is contiguous, not shuffled, so validation text never overlaps training windows.
    Both parts are new arrays (copies), each non-empty.
    """
    arr = _token_array(tokens, "tokens")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    n_val = int(round(len(arr) * val_fraction))
    n_train = len(arr) - n_val
    if n_val < 1 or n_train < 1:
        raise ValueError(
            f"tokens: expected enough tokens for a non-empty train and validation part at "
            f"val_fraction={val_fraction}, got {len(arr)} tokens"
        )
    return arr[:n_train].copy(), arr[n_train:].copy()


def lm_batches(
    tokens, batch_size: int, seq_len: int, rng: np.random.Generator, num_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Random windows for next-token prediction: yields ``(inputs, targets)``, both (B, T) int64.

    Each row starts at an offset drawn uniformly from [0, N - T - 1] (with replacement, as in
    nanoGPT's ``get_batch``): inputs = tokens[s : s + T], targets = tokens[s + 1 : s + T + 1].
    Endless unless ``num_batches`` is given. Arguments are checked when this is called, not at
    the first ``next()``.
    """
    arr = _token_array(tokens, "tokens")
    B = checks.positive_int(batch_size, "batch_size")
    T = checks.positive_int(seq_len, "seq_len")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if num_batches is not None:
        num_batches = checks.positive_int(num_batches, "num_batches")
    if len(arr) < T + 1:
        raise ValueError(f"tokens: expected at least seq_len + 1 = {T + 1} tokens, got {len(arr)}")
    arr = arr.astype(np.int64, copy=False)
    offsets = np.arange(T)  # (T,)

    def generate():
        done = 0
        while num_batches is None or done < num_batches:
            starts = rng.integers(0, len(arr) - T, size=B)  # (B,) in [0, N - T - 1]
            idx = starts[:, None] + offsets  # (B, T)
            yield arr[idx], arr[idx + 1]
            done += 1

    return generate()
