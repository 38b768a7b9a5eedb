"""Checkpoints: bit-exact round trips, and every kind of damaged file made for real."""

import os
import zipfile

import numpy as np
import pytest

import ref.io
from ref.train import (
    FORMAT_VERSION,
    adamw_init,
    adamw_step,
    load_checkpoint,
    save_checkpoint,
    tree_flatten,
    tree_map,
)


def make_params(rng):
    return {
        "embed": rng.standard_normal((6, 3)).astype(np.float32),
        "blocks": [
            {"W": rng.standard_normal((3, 3)), "b": rng.standard_normal(3)},
            {"W": rng.standard_normal((3, 3)), "b": rng.standard_normal(3)},
        ],
        "head": {"W": rng.standard_normal((3, 2)).astype(np.float32)},
    }


def trained_state(rng, params, n=3):
    state = adamw_init(params)
    for _ in range(n):
        grads = tree_map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
        params, state = adamw_step(params, grads, state, lr=0.01)
    return params, state


def assert_bit_identical(a, b):
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert list(fa) == list(fb)
    for path in fa:
        assert fa[path].dtype == fb[path].dtype and fa[path].shape == fb[path].shape, path
        assert fa[path].tobytes() == fb[path].tobytes(), path


@pytest.fixture
def saved(tmp_path, rng):
    params, state = trained_state(rng, make_params(rng))
    path = save_checkpoint(tmp_path / "ck.npz", params, state, step=3, meta={"model": "tiny", "d": 3})
    return path, params, state


def rewrite(path, change):
    """Load the raw arrays of an .npz, let ``change`` edit the dict, write it back (not atomically)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_is_bit_exact(tmp_path, rng, saved):
    path, params, state = saved
    ck = load_checkpoint(path, like=make_params(rng))
    assert_bit_identical(ck.params, params)
    assert_bit_identical(ck.opt_state, state)
    assert ck.opt_state["step"].dtype == np.int64 and int(ck.opt_state["step"]) == 3
    assert ck.step == 3 and ck.meta == {"model": "tiny", "d": 3}
    assert isinstance(ck.params["blocks"], list)
    # the restored state continues the run exactly
    grads = tree_map(lambda p: np.full_like(p, 0.5), params)
    resumed = adamw_step(ck.params, grads, ck.opt_state, lr=0.01)
    assert_bit_identical(list(resumed), list(adamw_step(params, grads, state, lr=0.01)))


def test_round_trip_of_odd_trees_and_meta(tmp_path, rng):
    rng_state = np.random.default_rng(7).bit_generator.state  # 128-bit integers
    meta = {"name": "β-test ✓", "rng_state": rng_state, "sizes": [1, 2.5, None, True]}
    params = {"w": np.arange(6, dtype=np.int32).reshape(2, 3), "empty": [], "nested": {"0": np.full((), 2.0)}}
    save_checkpoint(tmp_path / "odd.npz", params, meta=meta)
    ck = load_checkpoint(tmp_path / "odd.npz")
    assert_bit_identical(ck.params, params)
    assert ck.params["empty"] == [] and isinstance(ck.params["nested"], dict)
    assert ck.opt_state is None and ck.step == 0 and ck.meta == meta
    # a bare array as the whole tree
    save_checkpoint(tmp_path / "bare.npz", np.ones(3, np.float32), opt_state=np.zeros(2))
    ck = load_checkpoint(tmp_path / "bare.npz", like=np.ones(3, np.float32))
    assert_bit_identical(ck.params, np.ones(3, np.float32))
    assert_bit_identical(ck.opt_state, np.zeros(2))


def test_file_layout(saved):
    path, _, _ = saved
    with np.load(path, allow_pickle=False) as data:
        assert data["__format_version__"].dtype == np.int64 and int(data["__format_version__"]) == FORMAT_VERSION == 1
        assert data["__meta__"].shape == () and data["__meta__"].dtype.kind == "U"
        assert "params/blocks/1/W" in data.files and "opt_state/exp_avg/head/W" in data.files


# --- damaged files -----------------------------------------------------------------------------


def test_truncated_file(saved):
    path, _, _ = saved
    raw = path.read_bytes()
    for n in [0, 1, 30, len(raw) // 2, len(raw) - 22, len(raw) - 1, *range(0, len(raw), 37)]:
        path.write_bytes(raw[:n])
        with pytest.raises(ValueError, match=r"checkpoint: '.*ck.npz' is not a readable .npz \(corrupt or truncated\)"):
            load_checkpoint(path)


def test_flipped_bytes_never_give_a_wrong_model(saved):
    """A flipped byte either fails with ValueError or (in fields unused by the reader, such as
    timestamps) changes nothing: never a different model, never another kind of error."""
    path, params, state = saved
    raw = path.read_bytes()
    outcomes = {"error": 0, "same": 0}
    for i in range(0, len(raw), 9):  # every 9th byte: all regions of the file, in about a second
        damaged = bytearray(raw)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            ck = load_checkpoint(path)
        except ValueError as e:
            assert "checkpoint: " in str(e) and "ck.npz" in str(e)
            outcomes["error"] += 1
            continue
        assert_bit_identical(ck.params, params)
        assert_bit_identical(ck.opt_state, state)
        assert ck.step == 3 and ck.meta == {"model": "tiny", "d": 3}
        outcomes["same"] += 1
    assert outcomes["error"] > outcomes["same"] > 0


def test_flipped_byte_inside_an_array(saved):
    path, _, _ = saved
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params/embed.npy")
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0x01  # mid-data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_checkpoint(path)


def test_not_a_zip_and_missing_file(tmp_path):
    (tmp_path / "junk.npz").write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_checkpoint(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=r"checkpoint: expected an existing .npz file, got '.*nope.npz' \(not found\)"):
        load_checkpoint(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "key, match",
    [
        ("params/blocks/0/W", r"missing key\(s\) \['params/blocks/0/W'\]"),
        ("opt_state/exp_avg_sq/embed", r"missing key\(s\) \['opt_state/exp_avg_sq/embed'\]"),
        ("__meta__", r"missing key\(s\) \['__meta__'\]"),
        ("__structure__", r"missing key\(s\) \['__structure__'\]"),
        ("__format_version__", "not a checkpoint of this library \\(no __format_version__ entry\\)"),
    ],
)
def test_missing_key(saved, key, match):
    path, _, _ = saved
    rewrite(path, lambda arrays: arrays.pop(key))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


def test_unexpected_key(saved):
    path, _, _ = saved
    rewrite(path, lambda arrays: arrays.update({"params/stowaway": np.zeros(1)}))
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['params/stowaway'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "version, match",
    [
        (np.int64(2), r"format version 2 is newer than this code reads \(1\); upgrade ref"),
        (np.int64(0), r"unknown format version 0 \(this code reads 1\)"),
        (np.float64(1.0), "__format_version__ must be a 0-d integer array, got float64"),
        (np.array([1]), r"__format_version__ must be a 0-d integer array, got int64 \(1,\)"),
    ],
)
def test_bumped_or_odd_format_version(saved, version, match):
    path, _, _ = saved
    rewrite(path, lambda arrays: arrays.update({"__format_version__": np.asarray(version)}))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


def test_bad_header_entries(saved):
    path, _, _ = saved
    rewrite(path, lambda arrays: arrays.update({"__meta__": np.asarray("{not json")}))
    with pytest.raises(ValueError, match="__meta__ is not valid JSON"):
        load_checkpoint(path)
    rewrite(path, lambda arrays: arrays.update({"__meta__": np.asarray("{}"), "__structure__": np.asarray('{"params": 3}')}))
    with pytest.raises(ValueError, match="__structure__ is not a valid description"):
        load_checkpoint(path)


def test_pickled_object_array_is_refused(saved):
    path, _, _ = saved
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["params/embed"] = np.array([{"evil": "pickle"}], dtype=object)
    np.savez(path, **arrays)  # np.savez pickles object arrays; loading must refuse them
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_checkpoint(path)


def test_template_mismatch_lists_every_difference(saved, rng):
    path, _, _ = saved
    like = make_params(rng)
    like["embed"] = like["embed"].astype(np.float64)  # dtype
    like["blocks"][1]["W"] = np.zeros((3, 4))  # shape
    del like["head"]  # a key the file has and the template lacks
    like["norm"] = np.ones(3)  # a key the template has and the file lacks
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, like=like)
    text = str(err.value)
    assert "params do not match the template (like); 3 difference(s):" in text
    assert "at the root: missing 'norm'; unexpected 'head'" in text
    assert "at 'blocks/1/W': expected shape (3, 4), got (3, 3)" in text
    assert "at 'embed': expected dtype float64, got float32" in text


# --- writing -----------------------------------------------------------------------------------


def test_crash_while_writing_leaves_the_old_checkpoint(saved, monkeypatch, rng):
    path, params, state = saved
    before = path.read_bytes()

    def crashing_writer(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then the process "dies"
        raise RuntimeError("disk full")

    monkeypatch.setattr(ref.io.np, "savez_compressed", crashing_writer)
    new_params = tree_map(lambda p: p + 1, params)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, new_params, state, step=4)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["ck.npz"]  # no temporary file left behind
    assert_bit_identical(load_checkpoint(path).params, params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(meta={"f": np.float64}), "meta: expected JSON-serialisable data"),
        (dict(meta={"x": float("nan")}), "meta: expected JSON-serialisable data"),
        (dict(meta=[1, 2]), "meta: expected a dict"),
        (dict(step=-1), "step: expected an integer >= 0, got -1"),
        (dict(step=1.5), "step: expected an integer >= 0, got 1.5"),
        (dict(params=None), "params: expected a tree of arrays, got None"),
        (dict(params={"w": [1.0, 2.0]}), "params/w/0: expected a numpy array, got float"),
        (dict(opt_state={"step": 3}), "opt_state/step: expected a numpy array, got int"),
        (dict(params={"a/b": np.ones(1)}), "tree: expected dict keys that are non-empty strings without '/'"),
        (dict(params={"w": np.array([object()], dtype=object)}), "params/w: expected a numeric or string array"),
    ],
)
def test_save_refuses_bad_input(tmp_path, kwargs, match):
    args = dict(params={"w": np.ones(2)}) | kwargs
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "x.npz", **args)
    assert not (tmp_path / "x.npz").exists()
