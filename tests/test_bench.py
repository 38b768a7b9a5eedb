"""Benchmarks are not tests; this only checks that they run (smoke mode) and write their tables."""

import json

import pytest

from ref.bench import BENCHMARKS, NAMED_ONLY


def test_scan_benchmark_smoke(tmp_path):
    result = BENCHMARKS["scan"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_scan.json").read_text())
    assert saved["rows"] and saved["machine"]["copy_GBps"] > 0
    assert set(saved["rows"][0]["speedup"]) == {
        "numpy loop", "numpy parallel scan", "numpy chunked (C=64)", "numba recurrent", "numba chunked (C=64)"
    }
    table = (tmp_path / "bench_scan.md").read_text()
    assert "| B*D | T | dtype |" in table and result["smoke"] is True


def test_linear_attention_benchmark_smoke(tmp_path):
    result = BENCHMARKS["linear-attention"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_linear_attention.json").read_text())
    assert saved["rows"] and saved["machine"]["copy_GBps"] > 0 and result["smoke"] is True
    assert set(saved["rows"][0]["seconds"]) == {
        "numpy recurrent", "numpy parallel", "numpy chunked", "numba recurrent", "numba chunked"
    }
    assert set(saved["slopes"]["float32"]) == set(saved["rows"][0]["seconds"])
    table = (tmp_path / "bench_linear_attention.md").read_text()
    assert "| T | dtype |" in table and "numba chunked vs numpy chunked" in table
    assert (tmp_path / "bench_linear_attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ssm_benchmark_smoke(tmp_path):
    result = BENCHMARKS["ssm"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_ssm.json").read_text())
    assert result["smoke"] is True and [r["op"] for r in saved["rows"]] == ["selective scan", "SSD chunked"]
    for row in saved["rows"]:
        assert set(row["seconds"]) == {"numpy", "numba"} and set(row["speedup"]) == {
            "forward", "backward", "forward+backward"
        }
    assert "load_average" in saved["machine"]
    table = (tmp_path / "bench_ssm.md").read_text()
    assert "| op | size | dtype | pass | NumPy | numba | speed-up | target |" in table


def test_attention_benchmark_smoke(tmp_path):
    result = BENCHMARKS["attention"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_attention.json").read_text())
    assert result["smoke"] is True and [r["T"] for r in saved["rows"]] == [64, 128]
    for row in saved["rows"]:
        assert {"numpy", "numba"} <= set(row["seconds"]) and set(row["peak_bytes"]) == {"numpy", "numba"}
        assert row["peak_bytes"]["numpy"]["forward+backward"] > row["peak_bytes"]["numba"]["forward+backward"] > 0
    assert {"memory linear in T", "faster than numpy at every T"} <= set(saved["targets"])
    table = (tmp_path / "bench_attention.md").read_text()
    assert "| T | pass | NumPy | numba | torch SDPA |" in table


def test_bench_without_a_name_runs_every_benchmark(tmp_path, monkeypatch):
    """``python -m ref bench --smoke`` runs each registered benchmark once, in order."""
    from ref import bench
    from ref.cli import main

    ran = []
    fake = {name: (lambda out, smoke, name=name: ran.append((name, out, smoke))) for name in BENCHMARKS}
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    assert main(["bench", "--smoke", "--out", str(tmp_path)]) == 0
    assert ran == [(name, tmp_path, True) for name in BENCHMARKS]


def test_scaling_benchmark_smoke(tmp_path):
    result = BENCHMARKS["scaling"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_scaling.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    ops = {r["op"] for r in saved["rows"]}
    assert len(ops) == 3 and all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in saved["rows"])
    assert set(saved["slopes"]) == ops
    table = (tmp_path / "bench_scaling.md").read_text()
    assert "| op | T | time | peak memory |" in table and "Fitted slopes" in table
    assert (tmp_path / "bench_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_slope_is_the_power_law_exponent():
    from ref.bench.scaling import fitted_slope

    assert abs(fitted_slope([(T, 3e-6 * T**2) for T in (256, 1024, 4096)]) - 2.0) < 1e-12
    assert fitted_slope([(256, 1.0)]) is None


def test_rnn_benchmark_smoke(tmp_path):
    result = BENCHMARKS["rnn"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_rnn.json").read_text())
    assert result["smoke"] is True and [r["dtype"] for r in saved["lstm"]] == ["float32"]
    for row in saved["lstm"]:
        assert set(row["seconds"]) == {"numpy", "numba"} and set(row["speedup"]) == {
            "forward", "backward", "forward+backward"
        }
    assert set(saved["qlstm"]["seconds"]) == {
        "recurrent numpy", "recurrent numba", "block_parallel numpy", "block_parallel numba"
    }
    assert saved["qlstm"]["baseline"] == "recurrent numpy" and "load_average" in saved["machine"]
    table = (tmp_path / "bench_rnn.md").read_text()
    assert "| size | dtype | pass | NumPy | numba | speed-up |" in table
    assert "| form, backend | forward | backward | forward+backward |" in table


def test_train_benchmark_smoke(tmp_path):
    result = BENCHMARKS["train"](tmp_path, smoke=True)
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert result["smoke"] is True and [r["model"] for r in saved["rows"]] == ["GPT", "Mamba", "GLA", "LSTM"]
    for row in saved["rows"]:
        assert {"numpy", "numba"} <= set(row["tokens_per_s"]) and min(row["tokens_per_s"].values()) > 0
        assert len(set(row["parameters"].values())) == 1  # torch's model, when importable, has NumPy's size
    assert "load_average" in saved["machine"]
    table = (tmp_path / "bench_train.md").read_text()
    assert "| model | parameters | NumPy | numba | torch eager | numba / NumPy | numba / torch |" in table



def test_bench_command_sets_the_openblas_thread_timeout_before_numpy_loads(tmp_path):
    """``python -m ref bench`` sets OPENBLAS_THREAD_TIMEOUT (to the value ref.bench.machine
    documents) before NumPy is imported, and bench train keeps freed memory; both are recorded."""
    import os
    import subprocess
    import sys

    from ref.bench.machine import OPENBLAS_THREAD_TIMEOUT

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run(
        [sys.executable, "-m", "ref", "bench", "train", "--smoke", "--out", str(tmp_path)], env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert saved["machine"]["openblas_thread_timeout"] == OPENBLAS_THREAD_TIMEOUT
    assert saved["keep_freed_memory"] is (sys.platform == "linux")
    assert f"OPENBLAS_THREAD_TIMEOUT={OPENBLAS_THREAD_TIMEOUT}" in (tmp_path / "bench_train.md").read_text()


def test_ptx_benchmark_smoke(tmp_path):
    """Static resources of the scan's CUDA kernels (needs the cuda extra, no GPU)."""
    pytest.importorskip("numba_cuda")
    result = NAMED_ONLY["ptx"](tmp_path, smoke=True)
    kernels = {(r["kernel"], r["dtype"]) for r in result["kernels"]}
    assert ("_forward_thread_kernel", "float32") in kernels and ("_grads_kernel", "float64") in kernels
    assert all(r["registers"] and r["registers"] <= 255 for r in result["kernels"])
    assert "| scan_cuda | _forward_thread_kernel |" in (tmp_path / "bench_ptx.md").read_text()
