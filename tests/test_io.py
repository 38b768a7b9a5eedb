import numpy as np
import pytest

from ref.io import load_npz, save_npz, write_json


def test_round_trip_exact(tmp_path, rng):
    arrays = {"x": rng.standard_normal((3, 4)), "n": np.arange(5), "s": np.array("text")}
    path = save_npz(tmp_path / "a.npz", arrays)
    back = load_npz(path)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="x: expected a numeric or string array"):
        save_npz(tmp_path / "a.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "a.npz").exists()


def test_damaged_files_give_clear_errors(tmp_path, rng):
    path = save_npz(tmp_path / "a.npz", {"x": rng.standard_normal(1000)})
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"checkpoint: .*trunc.npz' is not a readable .npz"):
        load_npz(tmp_path / "trunc.npz", what="checkpoint")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="is not a readable .npz"):
        load_npz(tmp_path / "garbage.npz")
    with pytest.raises(ValueError, match="expected an existing .npz file"):
        load_npz(tmp_path / "missing.npz")


def test_a_failed_write_leaves_the_old_file(tmp_path, rng, monkeypatch):
    path = save_npz(tmp_path / "a.npz", {"x": np.ones(3)})

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        save_npz(path, {"x": np.zeros(3)})
    np.testing.assert_array_equal(load_npz(path)["x"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"], "the temporary file was left behind"


def test_write_json_handles_numpy(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": np.float64(1.5), "b": np.arange(3)})
    assert path.read_text() == '{\n  "a": 1.5,\n  "b": [\n    0,\n    1,\n    2\n  ]\n}\n'


def test_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save_npz(tmp_path / "a.npz", {"x": np.ones(2)})
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_finite_check():
    from ref import checks

    big = np.full(10, 1e300)  # finite, however large
    assert checks.finite(big, "x") is big
    for bad, where in ((np.array([1.0, np.inf, -np.inf]), "(1,)"), (np.array([[0.0, 0.0], [np.nan, 1.0]]), "(1, 0)")):
        with pytest.raises(ValueError, match=rf"x: expected finite values, got \d+ non-finite \(first at index \({where[1:-1]}\)"):
            checks.finite(bad, "x")
    assert checks.finite(np.zeros((0, 3), np.float32), "x").shape == (0, 3)


def test_a_bare_npy_file_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(3))
    with pytest.raises(ValueError, match="expected an .npz archive of named arrays, got a single ndarray"):
        load_npz(tmp_path / "x.npy")
