"""``python -m ref bench scaling``: time and peak memory against T for the three mixer families.

One figure for the question every sequence-model paper of this package argues about: how do
softmax attention and the recurrent mixers scale with the sequence length? Each at its fastest
implementation here, forward + backward, float32, T = 256 ... 65,536:

* **softmax attention**, causal, B = 1, H = 4, K = V = 64: the flash-style numba kernel
  (``attention_parallel(backend="numba")``: tiles, online softmax, no T x T matrix);
* **chunked GLA**, the same shape, chunk 64: ``gla_chunked(backend="numba")``;
* **selective scan** (Mamba's S6, variable B and C), B = 1, D = 256, N = 16:
  ``selective_scan_recurrent(backend="numba")``.

Time: the median of a few runs (one run where a single run takes seconds). Peak memory: the peak
of what ``tracemalloc`` traces during one forward + backward (NumPy's allocations, and the numba
kernels' scratch arrays, which are NumPy arrays). Attention's time grows as T^2 while its memory
grows as T; the recurrent mixers grow as T in both. Where the next attention point would take
longer than ``BUDGET_S`` (estimated from the last one: (T / T_last)^2 times its time) it is not
run, and the table says so. The slopes of log(time) and log(memory) against log(T), fitted over the
points run, are printed on the figure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ref.bench.attention import peak_bytes
from ref.bench.machine import describe, load_average
from ref.io import write_json, write_text
from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.mixers.gla import gla_chunked, gla_chunked_backward
from ref.mixers.selective_scan import selective_scan_recurrent, selective_scan_recurrent_backward

LENGTHS = (256, 1024, 4096, 16384, 65536)
SMOKE_LENGTHS = (64, 128)
# skip a point whose estimated forward + backward time is longer (attention at T = 65,536 takes
# about 2 min on the 2-core reference machine: it runs)
BUDGET_S = 240.0
REPEATS_UNDER_S = 1.0  # points faster than this are repeated (median of 3)
SHAPE = dict(B=1, H=4, K=64, V=64, chunk_size=64, D=256, N=16)
OPS = ("softmax attention (numba flash)", "chunked GLA (numba)", "selective scan (numba)")
DTYPE = np.float32


def _log_sigmoid(x):
    return -np.logaddexp(0, -x)


def make_step(op: str, T: int, rng, shape=SHAPE):
    """A function running one forward + backward of ``op`` at length T on fresh random inputs."""
    f = lambda x: np.asarray(x, DTYPE)  # noqa: E731
    B, H, K, V = shape["B"], shape["H"], shape["K"], shape["V"]
    if op.startswith("softmax"):
        q, k = f(rng.standard_normal((B, T, H, K))), f(rng.standard_normal((B, T, H, K)))
        v, do = f(rng.standard_normal((B, T, H, V))), f(rng.standard_normal((B, T, H, V)))

        def step():
            _, cache = attention_parallel(q, k, v, mask="causal", backend="numba")
            attention_parallel_backward(do, cache)

    elif op.startswith("chunked GLA"):
        q, k = f(rng.standard_normal((B, T, H, K))), f(rng.standard_normal((B, T, H, K)))
        v, do = f(rng.standard_normal((B, T, H, V))), f(rng.standard_normal((B, T, H, V)))
        gk = f(_log_sigmoid(rng.standard_normal((B, T, H, K))) / 16)

        def step():
            _, _, cache = gla_chunked(q, k, v, gk, chunk_size=shape["chunk_size"], backend="numba")
            gla_chunked_backward(do, None, cache)

    else:
        D, N = shape["D"], shape["N"]
        u, dout = f(rng.standard_normal((B, D, T))), f(rng.standard_normal((B, D, T)))
        delta = f(rng.standard_normal((B, D, T)) - 4.0)
        A = f(-np.tile(np.arange(1, N + 1), (D, 1)))
        Bm, Cm = f(rng.standard_normal((B, N, T))), f(rng.standard_normal((B, N, T)))

        def step():
            _, _, cache = selective_scan_recurrent(u, delta, A, Bm, Cm, delta_softplus=True, backend="numba")
            selective_scan_recurrent_backward(dout, None, cache)

    return step


def _time(step) -> float:
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    if first >= REPEATS_UNDER_S:
        return first
    times = [first]
    for _ in range(2):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fitted_slope(points) -> float | None:
    """The least-squares slope of log(y) against log(T) over ``points`` [(T, y), ...]."""
    if len(points) < 2:
        return None
    T, y = np.log(np.array(points, dtype=float)).T
    return float(np.polyfit(T, y, 1)[0])


def run(out_dir: Path, smoke: bool = False) -> dict:
    lengths = SMOKE_LENGTHS if smoke else LENGTHS
    rng = np.random.default_rng(0)
    load_before = load_average()
    for op in OPS:  # compile every kernel before anything is timed
        make_step(op, 16, rng)()
    rows = []
    for op in OPS:
        last = None  # (T, seconds) of the last point run
        for T in lengths:
            # attention's time grows as T^2, the recurrent mixers' as T
            estimate = None if last is None else last[1] * (T / last[0]) ** (2 if op.startswith("softmax") else 1)
            if estimate is not None and estimate > BUDGET_S:
                rows.append(dict(op=op, T=T, seconds=None, peak_bytes=None, estimated_seconds=estimate))
                print(f"[bench scaling] {op}, T = {T}: not run (estimated {estimate:.0f} s > {BUDGET_S:.0f} s)")
                continue
            step = make_step(op, T, rng)
            seconds = _time(step)
            peak = peak_bytes(step)
            last = (T, seconds)
            rows.append(dict(op=op, T=T, seconds=seconds, peak_bytes=peak))
            print(f"[bench scaling] {op}, T = {T}: {seconds * 1e3:.1f} ms, peak {peak / 2**20:.1f} MiB")
    slopes = {
        op: dict(
            time=fitted_slope([(r["T"], r["seconds"]) for r in rows if r["op"] == op and r["seconds"]]),
            memory=fitted_slope([(r["T"], r["peak_bytes"]) for r in rows if r["op"] == op and r["peak_bytes"]]),
        )
        for op in OPS
    }
    machine = describe()
    machine["load_average"] = dict(before=load_before, after=load_average())
    result = dict(benchmark="scaling", smoke=smoke, dtype=np.dtype(DTYPE).name, shape=SHAPE, lengths=list(lengths),
                  budget_s=BUDGET_S, machine=machine, rows=rows, slopes=slopes)
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_scaling.json", result)
    write_text(out_dir / "bench_scaling.md", markdown(result))
    save_figure(result, out_dir / "bench_scaling.png")
    return result


def markdown(result: dict) -> str:
    m, s = result["machine"], result["shape"]
    lines = [
        "# Benchmark: time and peak memory against T",
        "",
        "Generated by `python -m ref bench scaling`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']}; numpy {m['numpy']}, "
        f"numba {m['numba']}. Load average (1, 5, 15 min) before {m['load_average']['before']}, "
        f"after {m['load_average']['after']}.",
        "",
        f"Forward + backward, {result['dtype']}. Attention and GLA: B = {s['B']}, H = {s['H']}, "
        f"K = V = {s['K']} (GLA chunk {s['chunk_size']}); selective scan: B = {s['B']}, D = {s['D']}, "
        f"N = {s['N']}. Peak memory: tracemalloc's peak during one forward + backward.",
        "",
        "| op | T | time | peak memory |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["seconds"] is None:
            lines.append(f"| {r['op']} | {r['T']} | not run (estimated {r['estimated_seconds']:.0f} s > "
                         f"{result['budget_s']:.0f} s) | — |")
        else:
            lines.append(f"| {r['op']} | {r['T']} | {r['seconds'] * 1e3:.1f} ms | {r['peak_bytes'] / 2**20:.1f} MiB |")
    lines += ["", "Fitted slopes of log(time) and log(peak memory) against log(T) (1: linear, 2: quadratic):", ""]
    for op, sl in result["slopes"].items():
        fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"* {op}: time {fmt(sl['time'])}, memory {fmt(sl['memory'])}")
    lines.append("")
    return "\n".join(lines)


def save_figure(result: dict, path: Path) -> Path:
    """Two log-log panels, time and peak memory against T, the fitted slopes in the legends."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, what, scale in ((axes[0], "seconds", "time", 1.0), (axes[1], "peak_bytes", "memory", 2**-20)):
        for op in result["slopes"]:
            pts = [(r["T"], r[key] * scale) for r in result["rows"] if r["op"] == op and r[key] is not None]
            if not pts:
                continue
            slope = result["slopes"][op][what]
            ax.loglog(*zip(*pts), marker="o", label=op + ("" if slope is None else f" (slope {slope:.2f})"))
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("forward + backward time (s)" if what == "time" else "peak memory (MiB)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(f"time, {result['dtype']}")
    axes[1].set_title("peak traced memory")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path
