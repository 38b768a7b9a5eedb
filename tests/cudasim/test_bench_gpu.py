"""The GPU benchmark script (``python -m ref bench gpu``) at its smoke sizes under numba's CUDA
simulator (run by test_cuda_simulator.py): every check passes and every timing path runs, so the
script works when a GPU is at hand. The simulator's times are meaningless and are not judged."""

import json
import os

import numpy as np
import pytest

from numba_kernels import attention_cuda, selective_scan_cuda
from ref.bench import gpu

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run these tests with NUMBA_ENABLE_CUDASIM=1"

pytestmark = [pytest.mark.bench, pytest.mark.cudasim]


def test_smoke_run_checks_every_kernel_and_writes_its_tables(tmp_path, monkeypatch):
    # the GPU's blocks (128 threads for attention and the selective scan's forward) would cost as
    # many Python threads a block here; tests/cudasim/test_{attention,selective_scan}_cuda.py check them
    monkeypatch.setattr(attention_cuda, "CONFIGS", ((2, 4, 4, 4),))
    monkeypatch.setattr(selective_scan_cuda, "LANES", 4)
    result = gpu.run(tmp_path, smoke=True)
    ops = {c["op"] for c in result["checks"]}
    assert {"scan recurrent", "scan chunked", "GLA recurrent", "GLA chunked", "selective scan recurrent",
            "selective scan chunked"} <= ops  # fmt: skip
    assert {f"attention {m}" for m in ("causal", "bidirectional", "sliding_window", "chunked", "prefix_lm", "boolean")} <= ops
    bad = [c for c in result["checks"] if not c["ok"]]
    assert not bad, bad
    assert {c["dtype"] for c in result["checks"]} == {"float64", "float32"}
    assert result["verdicts"] is None  # simulated: not judged
    assert {r["op"] for r in result["timings"]} >= {"linear scan recurrent", "attention (numba-cuda flash)"}
    saved = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert saved["seed"] == result["seed"]
    assert "Targets not judged" in (tmp_path / "bench_gpu.md").read_text()


def test_relative_error_treats_equal_infinities_as_exact_and_a_stray_one_as_a_failure():
    want = np.array([1.0, -np.inf, 2.0])
    assert gpu._rel(want.copy(), want) == 0.0
    assert gpu._rel(np.array([1.0, 0.0, 2.0]), want) == float("inf")
    assert gpu._rel(np.array([1.0, -np.inf, np.nan]), want) == float("inf")
    assert gpu._rel(np.array([1.0, -np.inf, 2.0 + 1e-3]), want) == pytest.approx(1e-3 / np.sqrt(5))


def test_verdicts_compare_each_target():
    copy = dict(GBps=1000.0)
    timings = [
        dict(op="linear scan recurrent", pass_="forward", seconds=1.0, GBps=700.0),
        dict(op="selective scan recurrent", pass_="forward", seconds=2.5e-3),
        dict(op="selective scan chunked (C = 64)", pass_="forward", seconds=1.5e-3),
        dict(op="attention (numba-cuda flash)", pass_="forward+backward", seconds=0.09),
        dict(op="torch SDPA fp32", pass_="forward+backward", seconds=0.03),
    ]
    v = gpu.verdicts(copy, timings)
    assert v["scan_copy_fraction"] == dict(value=0.7, met=True)
    assert v["selective_scan_forward_ms"]["met"] and v["selective_scan_forward_ms"]["value"] == pytest.approx(1.5)
    assert v["attention_vs_sdpa"]["value"] == pytest.approx(3.0) and v["attention_vs_sdpa"]["met"]
    assert gpu.verdicts(copy, timings[:4])["attention_vs_sdpa"] == dict(value=None, met=None)


def test_the_simulator_runs_only_the_smoke_sizes(tmp_path):
    with pytest.raises(ValueError, match="simulator runs only the --smoke sizes"):
        gpu.run(tmp_path, smoke=False)
