"""``python -m ref bench linear-attention``: GLA's three forms, NumPy and numba, forward + backward.

In one run, for B = 1, H = 4, K = V = 64, chunk 64 and gates logsigmoid(N(0, 1)) / 16 (GLA's
gate normaliser of 16): the median time of one forward and backward pass (``do`` random,
no initial state, no final-state gradient) of

    numpy recurrent   gla_recurrent(backend="numpy")    O(T K V), a Python loop over T
    numpy parallel    gla_parallel                      O(T^2 K): masked attention, T x T matrices
    numpy chunked     gla_chunked(backend="numpy")      O(T C K + T K V), a loop over T / C chunks
    numba recurrent   gla_recurrent(backend="numba")    numba_kernels.gla_cpu
    numba chunked     gla_chunked(backend="numba")      numba_kernels.gla_cpu

at T in {512, 1024, 2048, 4096, 32768} (float32) and {512, 4096, 32768} (float64). The parallel
form runs only where its estimated peak memory, ``PARALLEL_BYTES_PER_ENTRY`` bytes per entry of a
(B, H, T, T) matrix (measured), stays under ``PARALLEL_MEMORY_LIMIT``; runs slower than
``SLOW_CALL_S`` are timed once. The figure (log-log) shows the time against T with the slope
fitted to each implementation: about 1 for the linear forms, 2 for the parallel one.

Target: numba chunked >= 5x the NumPy chunked form at T = 4096 (forward + backward).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ref.bench.machine import copy_bandwidth, describe, time_interleaved
from ref.io import write_json, write_text
from ref.mixers.gla import FORMS

TARGET_T, TARGET_SPEEDUP = 4096, 5.0  # numba chunked over numpy chunked, forward + backward
PARALLEL_MEMORY_LIMIT = 3e9  # bytes: the parallel form runs only below this estimated peak
PARALLEL_BYTES_PER_ENTRY = 9  # peak bytes per (itemsize x entry of a (B, H, T, T) matrix), measured
SLOW_CALL_S = 20.0  # a call estimated slower than this is timed once, without warm-up
CHUNK = 64

# name: (form, backend); the parallel form has no numba kernel
IMPLEMENTATIONS = {
    "numpy recurrent": ("recurrent", "numpy"),
    "numpy parallel": ("parallel", None),
    "numpy chunked": ("chunked", "numpy"),
    "numba recurrent": ("recurrent", "numba"),
    "numba chunked": ("chunked", "numba"),
}


def _log_sigmoid(x):
    return -np.logaddexp(0, -x)


def make_inputs(rng, B, T, H, K, V, dtype):
    q, k = (rng.standard_normal((B, T, H, K)).astype(dtype) for _ in range(2))
    v = rng.standard_normal((B, T, H, V)).astype(dtype)
    gk = (_log_sigmoid(rng.standard_normal((B, T, H, K))) / 16).astype(dtype)
    do = rng.standard_normal((B, T, H, V)).astype(dtype)
    return q, k, v, gk, do


def forward_backward(name, q, k, v, gk, do, chunk_size):
    """A function running one forward and backward pass of implementation ``name``."""
    form, backend = IMPLEMENTATIONS[name]
    forward, backward = FORMS[form]
    kwargs = {} if backend is None else {"backend": backend}
    if form == "chunked":
        kwargs["chunk_size"] = chunk_size

    def run():
        _, _, cache = forward(q, k, v, gk, **kwargs)
        backward(do, None, cache)

    return run


def parallel_bytes(B, H, T, itemsize):
    """Estimated peak memory of the parallel form's forward + backward."""
    return PARALLEL_BYTES_PER_ENTRY * B * H * T * T * itemsize


def run(out_dir: Path, smoke: bool = False) -> dict:
    if smoke:
        B, H, K, V, chunk = 1, 2, 8, 8, 16
        grid = {np.float32: (32, 64)}
        repeats = 1
    else:
        B, H, K, V, chunk = 1, 4, 64, 64, CHUNK
        grid = {np.float32: (512, 1024, 2048, 4096, 32768), np.float64: (512, 4096, 32768)}
        repeats = 3
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for dtype, Ts in grid.items():
        per_call = {}  # seconds of the last measured call, to extrapolate the parallel form
        for T in Ts:
            q, k, v, gk, do = make_inputs(rng, B, T, H, K, V, dtype)
            names = list(IMPLEMENTATIONS)
            skipped = {}
            need = parallel_bytes(B, H, T, np.dtype(dtype).itemsize)
            if need > PARALLEL_MEMORY_LIMIT:
                names.remove("numpy parallel")
                skipped["numpy parallel"] = f"needs ~{need / 1e9:.0f} GB"
            # O(T^2): estimate from the last T measured; a slow form is timed once, without warm-up
            slow = []
            if "numpy parallel" in per_call and "numpy parallel" in names:
                T_prev, s_prev = per_call["numpy parallel"]
                if s_prev * (T / T_prev) ** 2 > SLOW_CALL_S:
                    slow = ["numpy parallel"]
            fns = {n: forward_backward(n, q, k, v, gk, do, chunk) for n in names}
            seconds = time_interleaved({n: f for n, f in fns.items() if n not in slow}, repeats)
            if slow:
                seconds.update(time_interleaved({n: fns[n] for n in slow}, repeats=1, warmup=0))
            for n, s in seconds.items():
                per_call[n] = (T, s)
            rows.append(
                dict(
                    T=T,
                    dtype=np.dtype(dtype).name,
                    seconds={n: seconds[n] for n in IMPLEMENTATIONS if n in seconds},
                    runs={n: 1 if n in slow else repeats for n in seconds},
                    skipped=skipped,
                    chunked_speedup=seconds["numpy chunked"] / seconds["numba chunked"],
                )
            )
            print(
                f"[bench linear-attention] T={T:6d} {np.dtype(dtype).name}: "
                + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in rows[-1]["seconds"].items()),
                flush=True,
            )
    machine = describe()
    machine["copy_GBps"] = copy_bandwidth(n_bytes=(16 if smoke else 256) * 2**20) / 1e9
    machine["load_average_before"] = load_before
    machine["load_average_after"] = os.getloadavg()
    result = dict(
        benchmark="linear-attention",
        smoke=smoke,
        shape=dict(B=B, H=H, K=K, V=V, chunk_size=chunk),
        gates="logsigmoid(N(0, 1)) / 16",
        machine=machine,
        target=dict(T=TARGET_T, speedup=TARGET_SPEEDUP),
        parallel_memory_limit_bytes=PARALLEL_MEMORY_LIMIT,
        wall_seconds=time.perf_counter() - started,
        rows=rows,
        slopes={dt: fitted_slopes(rows, dt) for dt in sorted({r["dtype"] for r in rows})},
    )
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_linear_attention.json", result)
    write_text(out_dir / "bench_linear_attention.md", markdown(result))
    save_figure(result, out_dir / "bench_linear_attention.png")
    return result


def fitted_slopes(rows, dtype):
    """The least-squares slope of log(time) against log(T) per implementation (>= 2 points)."""
    slopes = {}
    for name in IMPLEMENTATIONS:
        pts = [(r["T"], r["seconds"][name]) for r in rows if r["dtype"] == dtype and name in r["seconds"]]
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            slopes[name] = float(np.polyfit(x, y, 1)[0])
    return slopes


def markdown(result: dict) -> str:
    m, s = result["machine"], result["shape"]
    names = list(IMPLEMENTATIONS)
    target = result["target"]
    lines = [
        "# Benchmark: gated linear attention, forward + backward",
        "",
        f"Generated by `python -m ref bench linear-attention{' --smoke' if result['smoke'] else ''}` "
        f"in {result['wall_seconds']:.0f} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']} "
        f"({m['threading_layer']}); Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}. "
        f"Copy bandwidth (read + write): {m['copy_GBps']:.1f} GB/s. Load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_before'])} before, "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_after'])} after.",
        "",
        f"B = {s['B']}, H = {s['H']}, K = V = {s['K']}, chunk {s['chunk_size']}, gates {result['gates']}. "
        "Median of the runs in milliseconds (repeats interleaved across implementations).",
        "",
        "| T | dtype | " + " | ".join(names) + " | numba chunked vs numpy chunked | target |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    notes = []
    for r in result["rows"]:
        cells = []
        for n in names:
            if n in r["seconds"]:
                once = " (1 run)" if r["runs"][n] == 1 and max(r["runs"].values()) > 1 else ""
                cells.append(f"{r['seconds'][n] * 1e3:.1f}{once}")
            else:
                cells.append("not run¹")
                notes.append(f"T = {r['T']} {r['dtype']}: {n} {r['skipped'][n]}")
        verdict = "—"
        if r["T"] == target["T"]:
            met = r["chunked_speedup"] >= target["speedup"]
            verdict = f">= {target['speedup']:g}x: {'met' if met else '**missed**'}"
        cells.append(f"{r['chunked_speedup']:.1f}x")
        lines.append(f"| {r['T']} | {r['dtype']} | " + " | ".join(cells) + f" | {verdict} |")
    lines += [
        "",
        "¹ The parallel form is O(T²) in time and memory: it runs only where its estimated peak "
        f"({PARALLEL_BYTES_PER_ENTRY} bytes per itemsize per entry of a (B, H, T, T) matrix) stays under "
        f"{result['parallel_memory_limit_bytes'] / 1e9:.0f} GB. Not run: {'; '.join(notes) if notes else 'none'}.",
        "",
        "Fitted slopes of log(time) against log(T) (1: linear in T, 2: quadratic):",
        "",
    ]
    for dtype, slopes in result["slopes"].items():
        lines.append(f"* {dtype}: " + ", ".join(f"{n} {v:.2f}" for n, v in slopes.items()))
    lines.append("")
    return "\n".join(lines)


def save_figure(result: dict, path: Path) -> Path:
    """Log-log time against T per implementation (the first dtype), fitted slopes in the legend."""
    from matplotlib.figure import Figure

    dtype = result["rows"][0]["dtype"]
    rows = [r for r in result["rows"] if r["dtype"] == dtype]
    slopes = result["slopes"][dtype]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    styles = {"numpy": "--", "numba": "-"}
    for name in IMPLEMENTATIONS:
        pts = [(r["T"], r["seconds"][name]) for r in rows if name in r["seconds"]]
        if not pts:
            continue
        label = name + (f" (slope {slopes[name]:.2f})" if name in slopes else "")
        ax.loglog(*zip(*pts), styles[name.split()[0]], marker="o", label=label)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("forward + backward time (s)")
    s = result["shape"]
    ax.set_title(f"GLA, B={s['B']} H={s['H']} K=V={s['K']} chunk {s['chunk_size']}, {dtype}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path
