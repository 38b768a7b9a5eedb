"""``python -m ref bench attention``: softmax attention, the NumPy reference against the numba kernel.

In one run, for B = 1, H = 4 heads, head dim K = V = 64, a causal mask, float32, at
T in {256, 1024, 4096}:

    numpy        attention_parallel(backend="numpy")   O(T^2) memory: (B, H, T, T) scores
    numba        attention_parallel(backend="numba")   numba_kernels.attention_cpu: tiles, O(T)
    torch SDPA   torch.nn.functional.scaled_dot_product_attention(is_causal=True) on the CPU,
                 with autograd for the backward, when torch is importable (optional)

the median wall time of the forward and of forward + backward (``do`` random; the
implementations interleaved, with a pause before each call, ``time_paused``; compilation
excluded), and the peak memory that one call allocates beyond its inputs, measured with
``tracemalloc`` (NumPy's allocations are traced, and the numba kernel's scratch tiles are NumPy
arrays allocated by its wrapper). torch's allocator is invisible to tracemalloc, so its memory is
not reported. torch runs with as many threads as numba; OpenMP threads wait passively
(``OMP_WAIT_POLICY=PASSIVE`` unless set).

Targets: the numba kernel's peak memory grows linearly in T (from T = 1024 to 4096: a growth
exponent log(peak ratio) / log 4 of at most ``LINEAR_EXPONENT``); its forward + backward is faster
than the NumPy reference at every T and within ``TORCH_FACTOR`` x of torch SDPA on the CPU.
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ref.bench.machine import describe, load_average, target_lines
from ref.io import write_json, write_text
from ref.mixers.attention import attention_parallel, attention_parallel_backward

SIZES = (256, 1024, 4096)
SMOKE_SIZES = (64, 128)
TORCH_FACTOR = 3.0  # numba forward + backward within this factor of torch SDPA
LINEAR_EXPONENT = 1.15  # peak memory ~ T^exponent between the two largest T: 1 is linear, 2 quadratic
PASSES = ("forward", "forward+backward")
PAUSE_S = 0.2  # idle time before each timed call (``time_paused``)


def _torch():
    """torch, or None when it is not importable (it is optional)."""
    try:
        import torch
    except Exception:
        return None
    return torch


def make_inputs(rng, B, T, H, K, V, dtype):
    q, k = (rng.standard_normal((B, T, H, K)).astype(dtype) for _ in range(2))
    v, do = (rng.standard_normal((B, T, H, V)).astype(dtype) for _ in range(2))
    return q, k, v, do


def _reference_fns(backend, q, k, v, do):
    def fwd():
        return attention_parallel(q, k, v, mask="causal", backend=backend)

    def both():
        return attention_parallel_backward(do, fwd()[1])

    return {"forward": fwd, "forward+backward": both}


def _torch_fns(torch, q, k, v, do):
    """SDPA in torch's (B, H, T, K) layout; the backward through autograd."""
    F = torch.nn.functional
    qt, kt, vt, dot = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, 2))) for x in (q, k, v, do))

    def fwd():
        with torch.no_grad():
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

    def both():
        qg, kg, vg = (x.detach().requires_grad_(True) for x in (qt, kt, vt))
        F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).backward(dot)
        return qg.grad, kg.grad, vg.grad

    return {"forward": fwd, "forward+backward": both}


def time_paused(fns: dict, repeats: int, warmup: int) -> dict:
    """Median wall time (s) of each ``fns[name]()``, interleaved as ``machine.time_interleaved``,
    with a pause of ``PAUSE_S`` before every call.

    After a call, OpenBLAS's worker threads (NumPy's matrix products) busy-wait for work for up
    to about 0.1 s, and OpenMP's unless they wait passively; on 2 cores they slow down whichever
    call comes next (a factor of 2 to 10 was seen at T = 256). The pause lets them go to sleep.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def peak_bytes(fn) -> int:
    """The peak of the memory traced by tracemalloc during ``fn()``, beyond what existed before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def run(out_dir: Path, smoke: bool = False) -> dict:
    # OpenMP threads (torch's and numba's) busy-wait for work after each parallel region by
    # default; interleaved with other libraries on a few cores, they steal the cores from the next
    # call (torch SDPA and the numba kernel both ran about 2x slower here). Passive waiting puts
    # them to sleep. Read when each OpenMP runtime starts, so set before torch and numba's first
    # parallel call; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numba

    torch = _torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
    rng = np.random.default_rng(0)
    B, H, K = (1, 2, 16) if smoke else (1, 4, 64)
    sizes = SMOKE_SIZES if smoke else SIZES
    dtype = np.float32
    load_before = load_average()
    rows = []
    for T in sizes:
        q, k, v, do = make_inputs(rng, B, T, H, K, K, dtype)
        fns = {}
        for backend in ("numpy", "numba"):
            for ps, fn in _reference_fns(backend, q, k, v, do).items():
                fns[(backend, ps)] = fn
        if torch is not None:
            for ps, fn in _torch_fns(torch, q, k, v, do).items():
                fns[("torch SDPA", ps)] = fn
        fns[("numba", "forward+backward")]()  # compiles the kernels
        one = time.perf_counter()
        fns[("numpy", "forward+backward")]()
        one = time.perf_counter() - one
        repeats = 1 if smoke else (3 if one > 2 else 5)
        times = time_paused(fns, repeats, warmup=0 if smoke or one > 2 else 1)
        names = sorted({name for name, _ in fns}, key=["numpy", "numba", "torch SDPA"].index)
        seconds = {name: {ps: times[(name, ps)] for ps in PASSES} for name in names}
        memory = {name: {ps: peak_bytes(fns[(name, ps)]) for ps in PASSES} for name in ("numpy", "numba")}
        row = dict(T=T, seconds=seconds, peak_bytes=memory)
        row["numba_speedup_over_numpy"] = {ps: seconds["numpy"][ps] / seconds["numba"][ps] for ps in PASSES}
        if torch is not None:
            row["numba_over_torch"] = {ps: seconds["numba"][ps] / seconds["torch SDPA"][ps] for ps in PASSES}
        rows.append(row)
        print(f"[bench attention] T={T}: " + ", ".join(
            f"{name} {seconds[name]['forward+backward'] * 1e3:.1f} ms" for name in names
        ) + f" (forward+backward); numba peak {memory['numba']['forward+backward'] / 2**20:.1f} MiB, "
            f"numpy peak {memory['numpy']['forward+backward'] / 2**20:.1f} MiB", flush=True)  # fmt: skip
    machine = describe()
    machine["load_average"] = dict(before=load_before, after=load_average())
    machine["torch"] = torch.__version__ if torch is not None else None
    result = dict(
        benchmark="attention", smoke=smoke, machine=machine, size=dict(B=B, H=H, K=K, V=K, mask="causal"),
        dtype=np.dtype(dtype).name, rows=rows, targets=targets(rows, torch is not None),
        omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
    )  # fmt: skip
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_attention.json", result)
    write_text(out_dir / "bench_attention.md", markdown(result))
    return result


def growth_exponent(rows, name: str, ps: str = "forward+backward") -> float:
    """log(peak at the largest T / peak at the one before) / log(T ratio): 1 linear, 2 quadratic."""
    a, b = rows[-2], rows[-1]
    return math.log(b["peak_bytes"][name][ps] / a["peak_bytes"][name][ps]) / math.log(b["T"] / a["T"])


def targets(rows, with_torch: bool) -> dict:
    out = {
        "memory linear in T": dict(
            value=growth_exponent(rows, "numba"), limit=LINEAR_EXPONENT,
            met=growth_exponent(rows, "numba") <= LINEAR_EXPONENT,
        ),
        "faster than numpy at every T": dict(
            value=min(r["numba_speedup_over_numpy"]["forward+backward"] for r in rows), limit=1.0,
            met=all(r["numba_speedup_over_numpy"]["forward+backward"] > 1 for r in rows),
        ),
    }  # fmt: skip
    if with_torch:
        worst = max(r["numba_over_torch"]["forward+backward"] for r in rows)
        out["within 3x of torch SDPA"] = dict(value=worst, limit=TORCH_FACTOR, met=worst <= TORCH_FACTOR)
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    load = m["load_average"]
    size = result["size"]
    lines = [
        "# Benchmark: softmax attention, NumPy reference against the numba kernel (and torch SDPA)",
        "",
        f"Generated by `python -m ref bench attention{' --smoke' if result['smoke'] else ''}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']} "
        f"({m['threading_layer']}); Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
        f"torch {m['torch'] or 'not installed'}. Load average (1, 5, 15 min) before: {load['before']}, "
        f"after: {load['after']}. OMP_WAIT_POLICY={result['omp_wait_policy']}.",
        "",
        f"B = {size['B']}, H = {size['H']}, K = V = {size['K']}, {size['mask']} mask, {result['dtype']}. "
        "Median wall time, the implementations interleaved with a pause before each call; "
        "peak = the most memory one call allocates beyond its inputs (tracemalloc; not available for torch).",
        "",
        "| T | pass | NumPy | numba | torch SDPA | numba vs NumPy | numba / torch | NumPy peak | numba peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for ps in PASSES:
            sec, peak = r["seconds"], r["peak_bytes"]
            torch_t = f"{sec['torch SDPA'][ps] * 1e3:.1f} ms" if "torch SDPA" in sec else "—"
            vs_torch = f"{r['numba_over_torch'][ps]:.2f}x" if "numba_over_torch" in r else "—"
            lines.append(
                f"| {r['T']} | {ps} | {sec['numpy'][ps] * 1e3:.1f} ms | {sec['numba'][ps] * 1e3:.1f} ms | {torch_t} | "
                f"{r['numba_speedup_over_numpy'][ps]:.1f}x faster | {vs_torch} | "
                f"{peak['numpy'][ps] / 2**20:.1f} MiB | {peak['numba'][ps] / 2**20:.2f} MiB |"
            )
    lines += ["", "Targets (forward + backward):", ""]
    lines += target_lines(result["targets"], result["smoke"])
    if "within 3x of torch SDPA" not in result["targets"]:
        lines.append("- within 3x of torch SDPA: not measured (torch is not importable)")
    lines.append("")
    return "\n".join(lines)
