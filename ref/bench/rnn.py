"""``python -m ref bench rnn``: the LSTM on NumPy against numba, and the quasi-LSTM's two forms.

In one run:

* **LSTM** (``torch.nn.LSTM`` conventions, one layer, biases, zero initial states) at B = 8,
  T = 512, I = H = 128, float32 and float64: ``lstm(..., backend="numpy")`` (the loop over the
  step, the definition) against ``backend="numba"`` (``numba_kernels.lstm_cpu``: the input
  projection of all steps as one matrix product, the recurrence jitted and parallel over the
  batch); the forward, the backward (full BPTT, from the forward's cache) and forward + backward;
* **quasi-LSTM** (Languini's qLSTM cell, ``ref.mixers.qlstm``) at B = 8, T = 512, D = 512,
  float32: the sequential form ``qlstm_recurrent`` against the block-parallel form
  ``qlstm_block_parallel`` (blocks of 32 steps, Languini's configuration), each with
  ``backend="numpy"`` and ``"numba"`` (the linear-scan kernels run the scan; the gates are NumPy);
  forward, backward and forward + backward.

Median wall times with the implementations interleaved (``time_interleaved``: a shared machine's
drift hits all of them alike), speed-ups against the NumPy baseline of each op, the machine and
its load average before and after. Compilation is excluded (each kernel runs once first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ref.bench.machine import describe, load_average, time_interleaved
from ref.io import write_json, write_text
from ref.mixers.qlstm import FORMS as QLSTM_FORMS
from ref.mixers.rnn import lstm, lstm_backward

BACKENDS = ("numpy", "numba")
PASSES = ("forward", "backward", "forward+backward")
BLOCK_LENGTH = 32  # the quasi-LSTM's blocks, as in Languini's configuration


def lstm_inputs(B, T, I, H, dtype, rng):
    """PyTorch's initialisation U(-1/sqrt(H), 1/sqrt(H)), unit-normal inputs and cotangent."""
    f = lambda x: np.asarray(x, dtype)  # noqa: E731
    k = 1.0 / np.sqrt(H)
    args = dict(
        x=f(rng.standard_normal((B, T, I))), h0=None, c0=None,
        weight_ih=f(rng.uniform(-k, k, (4 * H, I))), weight_hh=f(rng.uniform(-k, k, (4 * H, H))),
        bias_ih=f(rng.uniform(-k, k, 4 * H)), bias_hh=f(rng.uniform(-k, k, 4 * H)),
    )
    return args, f(rng.standard_normal((B, T, H)))


def qlstm_inputs(B, T, D, dtype, rng):
    """The four gate pre-activations fx, ix, zx, ox (B, T, D) and the cotangent of h."""
    f = lambda x: np.asarray(x, dtype)  # noqa: E731
    return [f(rng.standard_normal((B, T, D))) for _ in range(4)], f(rng.standard_normal((B, T, D)))


def _pass_fns(forward, backward):
    """forward, backward (from one cache made here, which also compiles the kernels) and both."""
    cache = forward()[-1]
    backward(cache)
    return {
        "forward": forward,
        "backward": lambda: backward(cache),
        "forward+backward": lambda: backward(forward()[-1]),
    }


def _lstm_fns(args, dy):
    fns = {}
    for backend in BACKENDS:
        passes = _pass_fns(lambda backend=backend: lstm(**args, backend=backend),
                           lambda cache: lstm_backward(dy, None, None, cache))
        fns.update({(backend, ps): fn for ps, fn in passes.items()})
    return fns


def qlstm_variants():
    """(name, form, backend) of the quasi-LSTM timings, the NumPy sequential form first (the baseline)."""
    return [(f"{form} {backend}", form, backend) for form in ("recurrent", "block_parallel") for backend in BACKENDS]


def _qlstm_fns(gates, dh, block_length):
    fns = {}
    for name, form, backend in qlstm_variants():
        forward, backward = QLSTM_FORMS[form]
        options = dict(backend=backend, **({"block_length": block_length} if form == "block_parallel" else {}))
        passes = _pass_fns(lambda forward=forward, options=options: forward(*gates, **options),
                           lambda cache, backward=backward: backward(dh, None, cache))
        fns.update({(name, ps): fn for ps, fn in passes.items()})
    return fns


def run(out_dir: Path, smoke: bool = False) -> dict:
    rng = np.random.default_rng(0)
    lstm_size = dict(B=2, T=16, I=8, H=8) if smoke else dict(B=8, T=512, I=128, H=128)
    qlstm_size = dict(B=1, T=40, D=8) if smoke else dict(B=8, T=512, D=512)
    block_length = 16 if smoke else BLOCK_LENGTH
    dtypes = [np.float32] if smoke else [np.float32, np.float64]
    repeats = 1 if smoke else 5  # a shared 2-core machine: medians of 5
    load_before = load_average()
    lstm_rows = []
    for dtype in dtypes:
        args, dy = lstm_inputs(*lstm_size.values(), dtype, rng)
        times = time_interleaved(_lstm_fns(args, dy), repeats, warmup=0)
        seconds = {backend: {ps: times[(backend, ps)] for ps in PASSES} for backend in BACKENDS}
        speedup = {ps: seconds["numpy"][ps] / seconds["numba"][ps] for ps in PASSES}
        lstm_rows.append(dict(op="LSTM", size=lstm_size, dtype=np.dtype(dtype).name, seconds=seconds, speedup=speedup))
        print(f"[bench rnn] LSTM {np.dtype(dtype).name}: numba over NumPy " + ", ".join(
            f"{ps} {speedup[ps]:.1f}x" for ps in PASSES), flush=True)
    gates, dh = qlstm_inputs(*qlstm_size.values(), np.float32, rng)
    times = time_interleaved(_qlstm_fns(gates, dh, block_length), repeats, warmup=0)
    names = [name for name, _, _ in qlstm_variants()]
    seconds = {name: {ps: times[(name, ps)] for ps in PASSES} for name in names}
    baseline = names[0]
    speedup = {name: {ps: seconds[baseline][ps] / seconds[name][ps] for ps in PASSES} for name in names}
    qlstm_row = dict(op="quasi-LSTM", size=qlstm_size, block_length=block_length, dtype="float32",
                     baseline=baseline, seconds=seconds, speedup=speedup)
    print("[bench rnn] quasi-LSTM float32 forward+backward: " + ", ".join(
        f"{name} {seconds[name]['forward+backward'] * 1e3:.0f} ms" for name in names), flush=True)
    machine = describe()
    machine["load_average"] = dict(before=load_before, after=load_average())
    result = dict(benchmark="rnn", smoke=smoke, machine=machine, repeats=repeats, lstm=lstm_rows, qlstm=qlstm_row)
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_rnn.json", result)
    write_text(out_dir / "bench_rnn.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    m = result["machine"]
    load = m["load_average"]
    q = result["qlstm"]
    lines = [
        "# Benchmark: recurrent networks, the LSTM on NumPy and numba, the quasi-LSTM's two forms",
        "",
        f"Generated by `python -m ref bench rnn{' --smoke' if result['smoke'] else ''}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']} "
        f"({m['threading_layer']}); Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}. "
        f"Load average (1, 5, 15 min) before: {load['before']}, after: {load['after']}.",
        "",
        f"Median wall time of {result['repeats']} runs each, the implementations interleaved; "
        "compilation excluded.",
        "",
        "## LSTM: `lstm(backend=...)`, NumPy against numba",
        "",
        "One layer, biases, zero initial states; the backward is full BPTT from the forward's cache. "
        "Speed-up = NumPy / numba.",
        "",
        "| size | dtype | pass | NumPy | numba | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["lstm"]:
        size = ", ".join(f"{k}={v}" for k, v in r["size"].items())
        for ps in PASSES:
            lines.append(
                f"| {size} | {r['dtype']} | {ps} | {r['seconds']['numpy'][ps] * 1e3:.1f} ms | "
                f"{r['seconds']['numba'][ps] * 1e3:.1f} ms | {r['speedup'][ps]:.1f}x |"
            )
    size = ", ".join(f"{k}={v}" for k, v in q["size"].items())
    lines += [
        "",
        f"## Quasi-LSTM: sequential (`qlstm_recurrent`) against block-parallel (`qlstm_block_parallel`, "
        f"blocks of {q['block_length']})",
        "",
        f"{size}, {q['dtype']}. The numba backend runs the scan c_t = f_t c_(t-1) + u_t on the linear-scan "
        "kernels (the chunked ones for the block-parallel form); the gates and the output stay NumPy. "
        f"Speed-up against `{q['baseline']}`.",
        "",
        "| form, backend | forward | backward | forward+backward | speed-up (forward+backward) |",
        "|---|---|---|---|---|",
    ]
    for name, secs in q["seconds"].items():
        lines.append(
            f"| {name} | " + " | ".join(f"{secs[ps] * 1e3:.1f} ms" for ps in PASSES)
            + f" | {q['speedup'][name]['forward+backward']:.2f}x |"
        )
    lines.append("")
    return "\n".join(lines)
