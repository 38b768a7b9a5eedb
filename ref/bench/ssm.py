"""``python -m ref bench ssm``: the state space model kernels against their NumPy references.

In one run:

* **selective scan** (Mamba's S6, mamba_ssm's ``selective_scan_fn`` as the Mamba block calls it:
  variable B and C, D, z, delta_bias, softplus) at B = 2, D = 256, N = 16, L = 4096, float32 and
  float64: ``selective_scan_recurrent`` with ``backend="numpy"`` (the loop, the definition) and
  ``backend="numba"`` (``numba_kernels.selective_scan_cpu``), the forward, the backward (from the
  forward's cache) and forward + backward, each timed;
* **SSD** (Mamba-2's chunked algorithm) at a comparable size, b = 2, l = 4096, h = 4 heads of
  p = 64 (h p = 256 channels), n = 16, block_len = 64, float32: ``ssd_chunked`` with
  ``backend="numpy"`` and ``"numba"`` (``numba_kernels.ssd_cpu``), forward and backward timed,
  forward + backward their sum (the NumPy forward alone takes tens of seconds).

Median wall times with the implementations interleaved (``time_interleaved``: a shared machine's
drift hits all of them alike), the speed-ups of numba over NumPy, the machine and its load average
(``os.getloadavg``) before and after. Compilation is excluded (each kernel runs once first).

Target: numba >= 10x NumPy for the selective scan (forward, backward and both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ref.bench.machine import describe, load_average, time_interleaved
from ref.io import write_json, write_text
from ref.mixers.selective_scan import selective_scan_recurrent, selective_scan_recurrent_backward
from ref.mixers.ssd import ssd_chunked, ssd_chunked_backward

TARGET = 10.0  # minimum speed-up of numba over NumPy for the selective scan
BACKENDS = ("numpy", "numba")
PASSES = ("forward", "backward", "forward+backward")


def selective_scan_inputs(B, D, N, L, dtype, rng):
    """Mamba's selective scan inputs: A = -(1..N) (S4D-real), delta before its softplus, variable B, C."""
    f = lambda x: np.asarray(x, dtype)  # noqa: E731
    u = f(rng.standard_normal((B, D, L)))
    delta = f(rng.standard_normal((B, D, L)) - 4.0)  # softplus(delta + bias): dt around 0.02 - 0.1
    A = f(-np.tile(np.arange(1, N + 1), (D, 1)))
    Bm, Cm = f(rng.standard_normal((B, N, L))), f(rng.standard_normal((B, N, L)))
    Dv, z = f(rng.standard_normal(D)), f(rng.standard_normal((B, D, L)))
    bias = f(rng.uniform(0.0, 2.0, D))
    dout = f(rng.standard_normal((B, D, L)))
    return (u, delta, A, Bm, Cm, Dv, z, bias, True), dout


def ssd_inputs(b, l, h, p, n, dtype, rng):
    """SSD's inputs as ssd_minimal's test draws them: A = -exp(rand) dt with dt = softplus(randn - 4)."""
    f = lambda x: np.asarray(x, dtype)  # noqa: E731
    X = f(rng.standard_normal((b, l, h, p)))
    dt = np.log1p(np.exp(rng.standard_normal((b, l, h)) - 4))
    A = f(-np.exp(rng.uniform(size=(b, l, h))) * dt)
    Bm, Cm = f(rng.standard_normal((b, l, h, n))), f(rng.standard_normal((b, l, h, n)))
    dY = f(rng.standard_normal((b, l, h, p)))
    return (X, A, Bm, Cm), dY


def _selective_scan_fns(args, dout):
    fns = {}
    for backend in BACKENDS:
        def fwd(backend=backend):
            return selective_scan_recurrent(*args, backend=backend)

        _, _, cache = fwd()  # compiles the kernels; the backward's timing starts from this cache

        def bwd(cache=cache):
            return selective_scan_recurrent_backward(dout, None, cache)

        def both(fwd=fwd):
            return selective_scan_recurrent_backward(dout, None, fwd()[2])

        bwd()
        fns.update({(backend, "forward"): fwd, (backend, "backward"): bwd, (backend, "forward+backward"): both})
    return fns


def _ssd_fns(args, dY, block_len):
    fns = {}
    for backend in BACKENDS:
        def fwd(backend=backend):
            return ssd_chunked(*args, block_len=block_len, backend=backend)

        _, _, cache = fwd()  # compiles the kernels; the backward's timing starts from this cache

        def bwd(cache=cache):
            return ssd_chunked_backward(dY, None, cache)

        bwd()
        fns.update({(backend, "forward"): fwd, (backend, "backward"): bwd})
    return fns


def _row(op, size, dtype, times, derived_both=False):
    if derived_both:
        for backend in BACKENDS:
            times[(backend, "forward+backward")] = times[(backend, "forward")] + times[(backend, "backward")]
    seconds = {backend: {ps: times[(backend, ps)] for ps in PASSES} for backend in BACKENDS}
    speedup = {ps: seconds["numpy"][ps] / seconds["numba"][ps] for ps in PASSES}
    return dict(op=op, size=size, dtype=np.dtype(dtype).name, seconds=seconds, speedup=speedup,
                forward_plus_backward="sum of the two" if derived_both else "measured")


def run(out_dir: Path, smoke: bool = False) -> dict:
    rng = np.random.default_rng(0)
    ss_size = dict(B=1, D=8, N=4, L=128) if smoke else dict(B=2, D=256, N=16, L=4096)
    ssd_size = dict(b=1, l=128, h=2, p=8, n=4) if smoke else dict(b=2, l=4096, h=4, p=64, n=16)
    block_len = 16 if smoke else 64
    ss_dtypes = [np.float32] if smoke else [np.float32, np.float64]
    repeats = 1 if smoke else 3
    load_before = load_average()
    rows = []
    for dtype in ss_dtypes:
        args, dout = selective_scan_inputs(*ss_size.values(), dtype, rng)
        times = time_interleaved(_selective_scan_fns(args, dout), repeats, warmup=0)
        rows.append(_row("selective scan", ss_size, dtype, times))
        print(f"[bench ssm] selective scan {np.dtype(dtype).name}: " + ", ".join(
            f"{ps} {rows[-1]['speedup'][ps]:.1f}x" for ps in PASSES), flush=True)
    args, dY = ssd_inputs(*ssd_size.values(), np.float32, rng)
    times = time_interleaved(_ssd_fns(args, dY, block_len), 1 if smoke else 2, warmup=0)
    rows.append(_row("SSD chunked", dict(ssd_size, block_len=block_len), np.float32, times, derived_both=True))
    print("[bench ssm] SSD chunked float32: " + ", ".join(f"{ps} {rows[-1]['speedup'][ps]:.1f}x" for ps in PASSES),
          flush=True)
    machine = describe()
    machine["load_average"] = dict(before=load_before, after=load_average())
    result = dict(benchmark="ssm", smoke=smoke, machine=machine, target=TARGET, repeats=repeats, rows=rows)
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_ssm.json", result)
    write_text(out_dir / "bench_ssm.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    m = result["machine"]
    load = m["load_average"]
    lines = [
        "# Benchmark: state space models, NumPy against the numba CPU kernels",
        "",
        f"Generated by `python -m ref bench ssm{' --smoke' if result['smoke'] else ''}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']} "
        f"({m['threading_layer']}); Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}. "
        f"Load average (1, 5, 15 min) before: {load['before']}, after: {load['after']}.",
        "",
        "Median wall time of each, the implementations interleaved; speed-up = NumPy / numba. "
        "Selective scan: `selective_scan_recurrent(backend=...)` with variable B and C, D, z, delta_bias "
        "and softplus. SSD: `ssd_chunked(backend=...)`; its forward+backward is the sum of the two.",
        "",
        "| op | size | dtype | pass | NumPy | numba | speed-up | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        size = ", ".join(f"{k}={v}" for k, v in r["size"].items())
        for ps in PASSES:
            got = r["speedup"][ps]
            target = "—"
            if r["op"] == "selective scan" and not result["smoke"]:
                target = f">= {result['target']:g}x: {'met' if got >= result['target'] else '**missed**'}"
            lines.append(
                f"| {r['op']} | {size} | {r['dtype']} | {ps} | {r['seconds']['numpy'][ps] * 1e3:.1f} ms | "
                f"{r['seconds']['numba'][ps] * 1e3:.1f} ms | {got:.1f}x | {target} |"
            )
    lines.append("")
    return "\n".join(lines)
