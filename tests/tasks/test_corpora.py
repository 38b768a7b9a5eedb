import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ref.tasks.corpora as corpora
from ref.tasks import (
    DIGITS_CLASS_COUNTS,
    code_corpus_files,
    data_files,
    lm_batches,
    load_code_corpus,
    load_digits,
    load_text_corpus,
    train_val_split,
)

DATA = Path(corpora.__file__).parent / "data"
NOT_DATA = {"SOURCES.md", "MANIFEST.json", ".gitattributes"}


def _sources_table():
    """{file: (bytes, sha256)} from the table in SOURCES.md."""
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|", (DATA / "SOURCES.md").read_text(), re.M)
    return {name: (int(size), sha) for name, size, sha in rows}


def test_every_data_file_matches_manifest_and_sources():
    manifest = data_files()
    table = _sources_table()
    shipped = {p.name for p in DATA.iterdir() if p.is_file()} - NOT_DATA
    assert shipped == set(manifest) == set(table)
    for name in shipped:
        data = (DATA / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert (len(data), digest) == (manifest[name]["bytes"], manifest[name]["sha256"]), name
        assert table[name] == (len(data), digest), name
        assert manifest[name]["license"] and manifest[name]["origin"]


def test_data_stays_small():
    total = sum((DATA / name).stat().st_size for name in data_files())
    assert total < 1_000_000


def test_a_damaged_file_is_detected(tmp_path, monkeypatch):
    for p in DATA.iterdir():
        shutil.copy(p, tmp_path / p.name)
    damaged = bytearray((tmp_path / corpora.TEXT_FILE).read_bytes())
    damaged[100] ^= 1
    (tmp_path / corpora.TEXT_FILE).write_bytes(bytes(damaged))
    monkeypatch.setattr(corpora, "_data_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="tinyshakespeare_coriolanus.txt: expected 154469 bytes with sha256 275be51a"):
        load_text_corpus()
    load_code_corpus()  # the others are intact


def test_text_corpus():
    text = load_text_corpus()
    assert isinstance(text, str) and len(text) == 154_469 and text.isascii()
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n")
    assert text.endswith("Which to this hour bewail the injury,\nYet he shall have a noble memory. Assist.\n")
    assert len(set(text)) == 61
    assert text.count("CORIOLANUS:\n") > 50 and "GLOUCESTER" not in text


def test_code_corpus():
    code = load_code_corpus()
    assert 150_000 <= len(code.encode()) <= 300_000
    files = code_corpus_files()
    assert list(files) == [
        "textwrap.py", "heapq.py", "bisect.py", "fractions.py", "statistics.py", "colorsys.py",
        "graphlib.py", "shlex.py", "queue.py", "string.py", "dataclasses.py",
    ]  # fmt: skip
    rebuilt = "".join(f"# ===== Lib/{name} (CPython 3.11.7) =====\n{src}\n" for name, src in files.items())
    assert rebuilt == code
    for name, src in files.items():
        compile(src, name, "exec")  # every part is valid Python
        assert src.endswith("\n") and "# ===== Lib/" not in src


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7), reason="the corpus is CPython 3.11.7's source")
def test_code_corpus_is_the_unmodified_stdlib_source():
    import importlib

    for name, src in code_corpus_files().items():
        module = importlib.import_module(name[:-3])
        assert Path(module.__file__).read_text(encoding="utf-8") == src, name


def test_load_digits():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    assert tuple(np.bincount(y, minlength=10)) == DIGITS_CLASS_COUNTS
    # the first image is a 0 (first line of sklearn's digits.csv)
    np.testing.assert_array_equal(X[0, :16], [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0])
    assert y[0] == 0 and y[1] == 1
    X2, _ = load_digits()
    X2[0, 0] = 99  # every call returns fresh arrays
    assert load_digits()[0][0, 0] == 0


def _sorted_rows(X, y):
    table = np.column_stack([X, y])
    return table[np.lexsort(table.T[::-1])]


def test_load_digits_split():
    X, y = load_digits()
    Xtr, ytr, Xte, yte = load_digits(test_fraction=0.25, rng=0)
    # stratified: each class gives round(n_c / 4) images to the test set (450 in all)
    per_class = [round(n * 0.25) for n in DIGITS_CLASS_COUNTS]
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), per_class)
    assert Xtr.shape == (1347, 64) and Xte.shape == (450, 64) and ytr.shape == (1347,) and yte.shape == (450,)
    # a partition of the data set (the same rows, each once)
    np.testing.assert_array_equal(
        _sorted_rows(np.concatenate([Xtr, Xte]), np.concatenate([ytr, yte])), _sorted_rows(X, y)
    )
    # the same seed gives the same split, a Generator works too, another seed differs
    again = load_digits(test_fraction=0.25, rng=np.random.default_rng(0))
    for a, b in zip((Xtr, ytr, Xte, yte), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(load_digits(test_fraction=0.25, rng=1)[3], yte)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_fraction": 0.0, "rng": 0}, r"test_fraction: expected a number in \(0, 1\), got 0.0"),
        ({"test_fraction": 1, "rng": 0}, r"test_fraction: expected a number in \(0, 1\), got 1"),
        ({"test_fraction": True, "rng": 0}, "test_fraction: expected a number"),
        ({"test_fraction": 0.2}, "rng: expected a numpy.random.Generator or an int seed, got NoneType"),
    ],
)
def test_load_digits_bad_split(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


def test_package_does_not_need_scikit_learn():
    code = "import sys; import ref.tasks as t; t.load_digits(); assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_val_split():
    tokens = np.arange(1000)
    train, val = train_val_split(tokens, val_fraction=0.1)
    np.testing.assert_array_equal(train, np.arange(900))
    np.testing.assert_array_equal(val, np.arange(900, 1000))
    train[0] = -5  # copies, not views
    assert tokens[0] == 0


@pytest.mark.parametrize(
    "tokens, frac, match",
    [
        (np.arange(10), 0.0, r"val_fraction: expected a number in \(0, 1\), got 0.0"),
        (np.arange(10), 1.0, r"val_fraction: expected a number in \(0, 1\)"),
        (np.arange(10), True, "val_fraction: expected a number"),
        (np.arange(10.0), 0.1, "tokens: expected a 1-D integer array of token ids"),
        (np.zeros((2, 5), int), 0.1, r"tokens: expected a 1-D integer array .* shape \(2, 5\)"),
        (np.arange(3), 0.1, "tokens: expected enough tokens for a non-empty train and validation part"),
    ],
)
def test_train_val_split_bad_input(tokens, frac, match):
    with pytest.raises(ValueError, match=match):
        train_val_split(tokens, frac)


def test_lm_batches_are_next_token_windows(rng):
    N, B, T = 50, 7, 9
    tokens = np.arange(100, 100 + N)
    batches = list(lm_batches(tokens, B, T, rng, num_batches=200))
    assert len(batches) == 200
    starts = []
    for x, y in batches:
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int64
        np.testing.assert_array_equal(y, x + 1)  # targets are the next tokens
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(T))  # contiguous windows
        starts.extend(x[:, 0] - 100)
    starts = np.array(starts)
    assert starts.min() == 0 and starts.max() == N - T - 1  # every valid window can occur


def test_lm_batches_deterministic_and_endless():
    tokens = np.arange(500)
    a = lm_batches(tokens, 4, 16, np.random.default_rng(3))
    b = lm_batches(tokens, 4, 16, np.random.default_rng(3))
    for _ in range(100):
        xa, ya = next(a)
        xb, yb = next(b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.arange(10), 2, 10), r"tokens: expected at least seq_len \+ 1 = 11 tokens, got 10"),
        ((np.arange(10), 0, 3), "batch_size: expected an integer >= 1, got 0"),
        ((np.arange(10), 2, 0), "seq_len: expected an integer >= 1, got 0"),
        ((np.arange(10.0), 2, 3), "tokens: expected a 1-D integer array"),
    ],
)
def test_lm_batches_checks_arguments_eagerly(rng, args, match):
    with pytest.raises(ValueError, match=match):
        lm_batches(*args, rng)  # raises at the call, before any next()


def test_lm_batches_needs_a_generator():
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator, got int"):
        lm_batches(np.arange(10), 2, 3, 0)
    with pytest.raises(ValueError, match="num_batches: expected an integer >= 1, got 0"):
        lm_batches(np.arange(10), 2, 3, np.random.default_rng(0), num_batches=0)
