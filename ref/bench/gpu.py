"""``python -m ref bench gpu``: every CUDA kernel on a real GPU, checked, then timed.

Run it on a machine with an NVIDIA GPU (H100/H200 in mind); it is not part of ``bench all`` and CI
never runs it at full size. ``--smoke`` runs every code path at tiny sizes, which also works under
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): that is how CI keeps this script working.

1. **Checks** on fresh random inputs (the seed is drawn from the OS and recorded), forward and
   backward of every CUDA form, through the public API (``backend="cuda"``, host arrays in/out):

   * the linear scan, recurrent and chunked;
   * GLA, recurrent and chunked, with an initial state and a final-state cotangent;
   * the selective scan, recurrent and chunked, with D, z, a delta bias, softplus and h0;
   * softmax attention with GQA and every mask kind (causal, bidirectional, sliding window,
     chunked, prefix-LM, a boolean array).

   The error is normwise, ``||got - want|| / ||want||`` per output. In float64 the kernel and the
   NumPy reference compute the same sums in different orders, each within ~n u of the exact
   result (u = 1.1e-16, n <= 1e3 terms per sum here), so the bound is ``FLOAT64_BOUND`` = 1e-10,
   three orders above that and eight below any real bug. In float32 the yardstick is the numba CPU
   kernel on the same float32 inputs, whose accuracy CI checks against derived bounds: the GPU's
   error must stay within ``FLOAT32_FACTOR`` = 4 times the CPU kernel's error (orders of summation
   differ, so the two errors differ by small factors, never by orders of magnitude), with a floor
   of 16 u32 where the CPU kernel happens to be exact.

2. **Timings** (float32, arrays resident on the device, kernels launched directly, CUDA events,
   median of ``repeats``), against the issue's targets:

   * the copy ceiling: a 1 GiB device-to-device copy (read + write);
   * the first-order scan at B = 16, T = 4096, D = 4096: its bandwidth (a, b read, h written)
     as a fraction of the copy's; target >= 60 %;
   * the selective scan at B = 8, L = 2048, D = 2048, N = 16 (Mamba's shape): target forward
     <= 2 ms;
   * GLA at B = 8, T = 4096, H = 16, K = V = 64, forward and forward + backward, next to
     flash-linear-attention's ``chunk_gla`` / ``fused_recurrent_gla`` (Triton) when importable;
   * causal attention at B = 8, H = 16, T = 4096, head dim 64, forward and forward + backward,
     against PyTorch SDPA in fp32: target within 3x.

Results: ``bench_gpu.json`` and ``bench_gpu.md`` naming the card.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from ref.backend import cuda_available, cuda_simulated
from ref.bench.machine import describe
from ref.io import write_json, write_text

FLOAT64_BOUND = 1e-10
FLOAT32_FACTOR = 4.0
FLOAT32_FLOOR = 16 * np.finfo(np.float32).eps / 2
TARGETS = {"scan_copy_fraction": 0.60, "selective_scan_forward_ms": 2.0, "attention_vs_sdpa": 3.0}


# --- checks: the public API, backend="cuda" against the NumPy reference ------------------------


def _rel(got, want) -> float:
    """||got - want|| / ||want|| over the finite entries of ``want``; entries equal in both (such as
    the -inf log-sum-exp of a fully masked row) count as exact, and a non-finite ``got`` elsewhere
    as an infinite error."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    same = got == want
    if not np.all(same | np.isfinite(want)) or not np.all(same | np.isfinite(got)):
        return float("inf")
    diff = np.subtract(got, want, out=np.zeros_like(got), where=~same)
    den = float(np.linalg.norm(want[np.isfinite(want)]))
    err = float(np.linalg.norm(diff))
    return err / den if den > 0 else err


def _scan_case(rng, dtype, small):
    from ref.mixers.linear_scan import FORMS

    B, T, D = (1, 9, 3) if small else (2, 1000, 96)
    a = rng.uniform(0.8, 1.0, (B, T, D))
    b, h0 = rng.standard_normal((B, T, D)), rng.standard_normal((B, D))
    dh, dht = rng.standard_normal((B, T, D)), rng.standard_normal((B, D))
    inputs = [x.astype(dtype) for x in (a, b, h0, dh, dht)]

    def make(form, kw):
        def run(backend, a, b, h0, dh, dht):
            fwd, bwd = FORMS[form]
            h, ht, cache = fwd(a, b, h0, backend=backend, **kw)
            return dict(zip(("h", "ht", "da", "db", "dh0"), (h, ht, *bwd(dh, dht, cache))))

        return run

    chunk = {"chunk_size": 4 if small else 64}
    return {"scan recurrent": (make("recurrent", {}), inputs), "scan chunked": (make("chunked", chunk), inputs)}


def _gla_case(rng, dtype, small):
    from ref.mixers.gla import FORMS

    B, T, H, K, V = (1, 7, 2, 3, 4) if small else (1, 200, 2, 64, 64)
    q, k = rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    gk = np.log(rng.uniform(0.9, 1.0, (B, T, H, K)))
    h0, do, dht = rng.standard_normal((B, H, K, V)), rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    inputs = [x.astype(dtype) for x in (q, k, v, gk, h0, do, dht)]

    def make(form, kw):
        def run(backend, q, k, v, gk, h0, do, dht):
            fwd, bwd = FORMS[form]
            o, ht, cache = fwd(q, k, v, gk, initial_state=h0, backend=backend, **kw)
            return dict(zip(("o", "ht", "dq", "dk", "dv", "dgk", "dh0"), (o, ht, *bwd(do, dht, cache))))

        return run

    chunk = {"chunk_size": 3 if small else 64}
    return {"GLA recurrent": (make("recurrent", {}), inputs), "GLA chunked": (make("chunked", chunk), inputs)}


def _selective_scan_case(rng, dtype, small):
    from ref.mixers.selective_scan import FORMS

    B, D, L, N = (1, 2, 7, 3) if small else (2, 64, 300, 16)
    u, z = rng.standard_normal((B, D, L)), rng.standard_normal((B, D, L))
    delta = rng.standard_normal((B, D, L)) * 0.5
    A = -rng.uniform(0.5, 2.0, (D, N))
    Bm, Cm = rng.standard_normal((B, N, L)), rng.standard_normal((B, N, L))
    Dv, bias = rng.standard_normal(D), rng.standard_normal(D) * 0.1
    h0, dout, dlast = rng.standard_normal((B, D, N)), rng.standard_normal((B, D, L)), rng.standard_normal((B, D, N))
    inputs = [x.astype(dtype) for x in (u, delta, A, Bm, Cm, Dv, z, bias, h0, dout, dlast)]
    names = ("out", "last", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dh0")

    def make(form, kw):
        def run(backend, u, delta, A, Bm, Cm, Dv, z, bias, h0, dout, dlast):
            fwd, bwd = FORMS[form]
            out, last, cache = fwd(u, delta, A, Bm, Cm, Dv, z, bias, True, initial_state=h0, return_last_state=True,
                                   backend=backend, **kw)  # fmt: skip
            return dict(zip(names, (out, last, *bwd(dout, dlast, cache))))

        return run

    chunk = {"chunk_size": 3 if small else 64}
    recurrent = make("recurrent", {})
    return {
        "selective scan recurrent": (recurrent, inputs),
        # no numba form of the chunked scan: its float32 yardstick is the numba recurrent kernel
        "selective scan chunked": (make("chunked", chunk), inputs, recurrent),
    }


def _attention_case(rng, dtype, small):
    from ref.mixers.attention import attention_parallel, attention_parallel_backward

    B, T, HQ, H, K = (1, 6, 2, 1, 3) if small else (1, 257, 4, 2, 64)
    q, k, v = rng.standard_normal((B, T, HQ, K)), rng.standard_normal((B, T, H, K)), rng.standard_normal((B, T, H, K))
    do = rng.standard_normal((B, T, HQ, K))
    inputs = [x.astype(dtype) for x in (q, k, v, do)]
    w = 2 if small else 64
    boolean = rng.random((T, T)) < 0.5
    boolean[1] = False  # a fully masked row: defined as a zero output and zero gradients
    masks = {
        "causal": {}, "bidirectional": {}, "sliding_window": {"window": w}, "chunked": {"chunk_size": w},
        "prefix_lm": {"prefix_len": T // 3}, "boolean": None,
    }  # fmt: skip

    def make(kind, kw):
        mask = boolean if kw is None else kind

        def run(backend, q, k, v, do):
            o, cache = attention_parallel(q, k, v, mask=mask, backend=backend, **(kw or {}))
            return dict(zip(("o", "lse", "dq", "dk", "dv"), (o, cache.lse, *attention_parallel_backward(do, cache))))

        return run

    return {f"attention {kind}": (make(kind, kw), inputs) for kind, kw in masks.items()}


CASES = (_scan_case, _gla_case, _selective_scan_case, _attention_case)


def check_all(seed: int, small: bool) -> list[dict]:
    """Every CUDA form against the NumPy reference: float64 (bound), float32 (against numba CPU)."""
    rows = []
    for make in CASES:
        for dtype in (np.float64, np.float32):
            rng = np.random.default_rng(seed)
            for name, (run, inputs, *yardstick) in make(rng, dtype, small).items():
                want = run("numpy", *(x.astype(np.float64) for x in inputs))
                got = run("cuda", *inputs)
                cpu = (yardstick or [run])[0]("numba", *inputs) if dtype == np.float32 else None
                for out, ref_value in want.items():
                    err = _rel(got[out], ref_value)
                    if dtype == np.float64:
                        bound = FLOAT64_BOUND
                    else:
                        bound = max(FLOAT32_FACTOR * _rel(cpu[out], ref_value), FLOAT32_FLOOR)
                    rows.append(dict(op=name, dtype=np.dtype(dtype).name, output=out, error=err, bound=bound,
                                     ok=bool(err <= bound)))  # fmt: skip
            print(f"[bench gpu] checked {make.__name__[1:-5]} {np.dtype(dtype).name}", flush=True)
    return rows


# --- timings: device arrays, kernels launched directly ----------------------------------------


def _time_cuda(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (kernel launches) between CUDA events, after one warm-up call."""
    from numba import cuda

    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)  # milliseconds between the events
    return float(np.median(times))


def _device(rng, shape, low=None, high=None, dtype=np.float32):
    from numba import cuda

    x = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
    return cuda.to_device(x.astype(dtype))


def time_copy(small: bool, repeats: int) -> dict:
    from numba import cuda

    n = (1 << 16) if small else (1 << 30)  # bytes
    src = cuda.to_device(np.ones(n // 4, np.float32))
    dst = cuda.device_array(n // 4, np.float32)
    t = _time_cuda(lambda: dst.copy_to_device(src), repeats)
    return dict(op="device copy", shape=f"{n / 2**30:g} GiB", seconds=t, GBps=2 * n / t / 1e9)


def time_scan(rng, small: bool, repeats: int) -> list[dict]:
    from numba import cuda

    from numba_kernels import scan_cuda

    B, T, D = (1, 64, 32) if small else (16, 4096, 4096)
    a, b = _device(rng, (B, T, D), 0.9, 1.0), _device(rng, (B, T, D))
    h0 = cuda.to_device(np.zeros((B, D), np.float32))
    h, s_final = cuda.device_array((B, T, D), np.float32), cuda.device_array((B, D), np.float32)
    nbytes = 3 * B * T * D * 4
    rows = []
    for form, fn in (
        ("recurrent", lambda: scan_cuda.launch_scan(a, b, h0, h)),
        ("chunked (C = 64)", lambda: scan_cuda.launch_scan_chunked(a, b, h0, h, s_final, 64)),
    ):
        t = _time_cuda(fn, repeats)
        rows.append(dict(op=f"linear scan {form}", shape=f"B={B} T={T} D={D}", pass_="forward", seconds=t,
                         GBps=nbytes / t / 1e9))  # fmt: skip
    return rows


def time_selective_scan(rng, small: bool, repeats: int) -> list[dict]:
    from numba import cuda

    from numba_kernels import selective_scan_cuda as ssc

    B, D, L, N = (1, 4, 32, 4) if small else (8, 2048, 2048, 16)
    u, delta = rng.standard_normal((B, D, L)), rng.standard_normal((B, D, L)) * 0.5
    A = -rng.uniform(0.5, 2.0, (D, N))
    Bm, Cm = rng.standard_normal((B, N, L)), rng.standard_normal((B, N, L))
    f = np.float32
    args, h0_d = ssc._inputs_to_device(*(x.astype(f) for x in (u, delta, A, Bm, Cm)), None, None, None, True, None)
    out = cuda.device_array((B, D, L), f)
    last = cuda.device_array((B, D, N), f)
    xs = cuda.device_array((B, D, -(-L // ssc.segment_steps(N)), N), f)
    chunk = 64
    entering = cuda.device_array((B, D, -(-L // chunk), N), f)
    dout, dlast, g = ssc._gradient_arrays(args, np.ones((B, D, L), f), None)
    grads = [g[k] for k in ssc._GRADS]

    def fwd_rec():
        ssc.launch_forward(*args, h0_d, out, last, xs)

    def fwd_chunk():
        ssc.launch_chunked(*args, h0_d, out, last, entering, chunk)

    def both_rec():
        fwd_rec()
        ssc.launch_backward(*args, h0_d, xs, dout, dlast, *grads)

    def both_chunk():
        fwd_chunk()
        ssc.launch_chunked_backward(*args, entering, dout, dlast, *grads, chunk)

    shape = f"B={B} L={L} D={D} N={N}"
    return [
        dict(op=f"selective scan {form}", shape=shape, pass_=p, seconds=_time_cuda(fn, repeats))
        for form, fns in (("recurrent", (fwd_rec, both_rec)), ("chunked (C = 64)", (fwd_chunk, both_chunk)))
        for p, fn in zip(("forward", "forward+backward"), fns)
    ]


def time_gla(rng, small: bool, repeats: int, torch, fla) -> list[dict]:
    from numba import cuda

    from numba_kernels import gla_cuda

    B, T, H, K = (1, 32, 2, 8) if small else (8, 4096, 16, 64)
    f = np.float32
    q, k, v = (_device(rng, (B, T, H, K)) for _ in range(3))
    gk = cuda.to_device(np.log(rng.uniform(0.9, 1.0, (B, T, H, K))).astype(f))
    h0, dht = (cuda.to_device(np.zeros((B, H, K, K), f)) for _ in range(2))
    do = _device(rng, (B, T, H, K))
    o, ht, dh0 = (cuda.device_array(s, f) for s in ((B, T, H, K), (B, H, K, K), (B, H, K, K)))
    dq, dk, dv, dgk = (cuda.device_array((B, T, H, K), f) for _ in range(4))
    C = 64
    states = cuda.device_array((B, -(-T // C) + 1, H, K, K), f)
    work = gla_cuda.chunked_workspace(B, T, H, K, K, C, f, backward=True)  # allocated once, outside the timings
    scale = K**-0.5

    def fwd_rec():
        gla_cuda.launch_recurrent(q, k, v, gk, scale, h0, o, ht)

    def both_rec():
        fwd_rec()
        gla_cuda.launch_recurrent_backward(q, k, v, gk, scale, h0, ht, do, dht, dq, dk, dv, dgk, dh0)

    def fwd_chunk():
        gla_cuda.launch_chunked(q, k, v, gk, scale, h0, o, states, ht, C, work)

    def both_chunk():
        fwd_chunk()
        gla_cuda.launch_chunked_backward(q, k, v, gk, scale, states, ht, do, dht, dq, dk, dv, dgk, dh0, C, work)

    shape = f"B={B} T={T} H={H} K=V={K}"
    rows = [
        dict(op=f"GLA {form} (numba-cuda)", shape=shape, pass_=p, seconds=_time_cuda(fn, repeats))
        for form, fns in (("recurrent", (fwd_rec, both_rec)), (f"chunked (C = {C})", (fwd_chunk, both_chunk)))
        for p, fn in zip(("forward", "forward+backward"), fns)
    ]
    if torch is not None and fla is not None and not small:
        rows += _time_fla(torch, fla, B, T, H, K, repeats)
    return rows


def _time_torch(torch, fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return float(np.median(times))


def _time_fla(torch, fla, B, T, H, K, repeats) -> list[dict]:
    """flash-linear-attention's Triton GLA kernels, fp32, layout (B, T, H, K)."""
    rows = []
    dev = "cuda"
    q, k, v = (torch.randn(B, T, H, K, device=dev, requires_grad=True) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=dev)).requires_grad_(True)
    do = torch.randn(B, T, H, K, device=dev)
    for name in ("chunk_gla", "fused_recurrent_gla"):
        op = getattr(fla, name)

        def fwd(op=op):
            with torch.no_grad():
                op(q, k, v, g)

        def both(op=op):
            o = op(q, k, v, g)[0]
            o.backward(do)

        for p, fn in (("forward", fwd), ("forward+backward", both)):
            try:
                t = _time_torch(torch, fn, repeats)
            except Exception as e:  # an fla version with another signature: say so, do not guess
                rows.append(dict(op=f"fla {name} (Triton)", shape="", pass_=p, seconds=None, error=repr(e)[:200]))
                continue
            rows.append(dict(op=f"fla {name} (Triton)", shape=f"B={B} T={T} H={H} K=V={K}", pass_=p, seconds=t))
    return rows


def time_attention(rng, small: bool, repeats: int, torch) -> list[dict]:
    from numba import cuda

    from numba_kernels import attention_cuda as ac

    B, T, H, K = (1, 32, 2, 16) if small else (8, 4096, 16, 64)
    f = np.float32
    q, k, v, do = (_device(rng, (B, T, H, K)) for _ in range(4))
    o, lse = cuda.device_array((B, T, H, K), f), cuda.device_array((B, T, H), f)
    dq, dk, dv = (cuda.device_array((B, T, H, K), f) for _ in range(3))
    mask_args = ac._mask_to_device("causal", B, H, T, T, None, None, None)
    scale = K**-0.5

    def fwd():
        ac.launch_forward(q, k, v, scale, mask_args, o, lse)

    def both():
        fwd()
        ac.launch_backward(q, k, v, o, lse, do, scale, mask_args, dq, dk, dv)

    shape = f"B={B} T={T} H={H} D={K} causal"
    rows = [dict(op="attention (numba-cuda flash)", shape=shape, pass_=p, seconds=_time_cuda(fn, repeats))
            for p, fn in (("forward", fwd), ("forward+backward", both))]  # fmt: skip
    if torch is not None and not small:
        F = torch.nn.functional
        tq, tk, tv = (torch.randn(B, H, T, K, device="cuda", requires_grad=True) for _ in range(3))
        tdo = torch.randn(B, H, T, K, device="cuda")

        def t_fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)

        def t_both():
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tdo)

        rows += [dict(op="torch SDPA fp32", shape=shape, pass_=p, seconds=_time_torch(torch, fn, repeats))
                 for p, fn in (("forward", t_fwd), ("forward+backward", t_both))]  # fmt: skip
    return rows


def _optional_gpu_libraries():
    """torch with CUDA and fla's GLA ops, each None when not importable (both optional)."""
    try:
        import torch

        torch = torch if torch.cuda.is_available() else None
    except Exception:
        torch = None
    try:
        from fla.ops import gla as fla
    except Exception:
        fla = None
    return torch, fla


def _card() -> str:
    from numba import cuda

    if cuda_simulated():
        return "numba CUDA simulator (no GPU: timings are meaningless)"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"{name}, compute capability {dev.compute_capability[0]}.{dev.compute_capability[1]}"


def run(out_dir: Path, smoke: bool = False) -> dict:
    if not cuda_available():
        raise ValueError("bench gpu: needs numba-cuda and an NVIDIA GPU (or NUMBA_ENABLE_CUDASIM=1 with --smoke)")
    if cuda_simulated() and not smoke:
        raise ValueError("bench gpu: the CUDA simulator runs only the --smoke sizes")
    out_dir = Path(out_dir)
    seed = int.from_bytes(os.urandom(4), "little")
    repeats = 1 if smoke else 10
    torch, fla = _optional_gpu_libraries()
    machine = describe()
    machine.update(card=_card(), python=platform.python_version(), torch=getattr(torch, "__version__", None),
                   fla=fla is not None)  # fmt: skip
    result = dict(benchmark="gpu", smoke=smoke, seed=seed, machine=machine, targets=TARGETS, checks=[],
                  copy=None, timings=[], verdicts=None)  # fmt: skip
    # each stage is saved as it ends: a run cut short (a lent GPU's time runs out) keeps what it measured
    result["checks"] = check_all(seed, small=smoke)
    _save(out_dir, result)
    rng = np.random.default_rng(seed)
    result["copy"] = time_copy(smoke, repeats)
    for stage in (
        lambda: time_scan(rng, smoke, repeats),
        lambda: time_selective_scan(rng, smoke, repeats),
        lambda: time_attention(rng, smoke, repeats, torch),
        lambda: time_gla(rng, smoke, repeats, torch, fla),
    ):
        result["timings"] += stage()
        _save(out_dir, result)
    if not cuda_simulated():  # the simulator's times mean nothing
        result["verdicts"] = verdicts(result["copy"], result["timings"])
    _save(out_dir, result)
    failed = [c for c in result["checks"] if not c["ok"]]
    print(markdown(result))
    print(f"[bench gpu] {len(result['checks']) - len(failed)}/{len(result['checks'])} checks within bounds; "
          f"results in {out_dir}")  # fmt: skip
    return result


def _save(out_dir: Path, result: dict) -> None:
    write_json(out_dir / "bench_gpu.json", result)
    write_text(out_dir / "bench_gpu.md", markdown(result))


def _seconds(timings, op, p):
    for r in timings:
        if r["op"] == op and r["pass_"] == p and r["seconds"] is not None:
            return r["seconds"]
    return None


def verdicts(copy: dict, timings: list[dict]) -> dict:
    """Each target: the measured value and met / missed (None where a baseline is absent)."""
    out = {}
    scan = max(r["GBps"] for r in timings if r["op"].startswith("linear scan"))
    frac = scan / copy["GBps"]
    out["scan_copy_fraction"] = dict(value=frac, met=bool(frac >= TARGETS["scan_copy_fraction"]))
    ss = min(r["seconds"] for r in timings if r["op"].startswith("selective scan") and r["pass_"] == "forward")
    out["selective_scan_forward_ms"] = dict(value=ss * 1e3, met=bool(ss * 1e3 <= TARGETS["selective_scan_forward_ms"]))
    mine = _seconds(timings, "attention (numba-cuda flash)", "forward+backward")
    sdpa = _seconds(timings, "torch SDPA fp32", "forward+backward")
    ratio = None if sdpa is None else mine / sdpa
    out["attention_vs_sdpa"] = dict(value=ratio, met=None if ratio is None else bool(ratio <= TARGETS["attention_vs_sdpa"]))
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Benchmark: the CUDA kernels on a GPU",
        "",
        f"Generated by `python -m ref bench gpu{' --smoke' if result['smoke'] else ''}` (seed {result['seed']}).",
        "",
        f"Card: {m['card']}. Host: {m['cpu']}; Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, "
        f"torch {m['torch']}, flash-linear-attention {'present' if m['fla'] else 'absent'}.",
        "",
        "## Checks against the NumPy reference (normwise relative error)",
        "",
        f"float64: bound {FLOAT64_BOUND:g}; float32: {FLOAT32_FACTOR:g}x the numba CPU kernel's error on the same "
        "inputs (floor 16 u). Worst output per op and dtype:",
        "",
        "| op | dtype | worst output | error | bound | within |",
        "|---|---|---|---|---|---|",
    ]
    worst = {}
    for c in result["checks"]:
        key = (c["op"], c["dtype"])
        if key not in worst or c["error"] / c["bound"] > worst[key]["error"] / worst[key]["bound"]:
            worst[key] = c
    for (op, dtype), c in worst.items():
        lines.append(f"| {op} | {dtype} | {c['output']} | {c['error']:.2e} | {c['bound']:.2e} | "
                     f"{'yes' if c['ok'] else '**no**'} |")  # fmt: skip
    c = result["copy"]
    if c is None:
        return "\n".join(lines + ["", "Timings not measured (the run stopped after the checks).", ""])
    lines += [
        "",
        "## Timings (float32, device-resident, median of CUDA-event times)",
        "",
        f"Device copy ({c['shape']}): {c['seconds'] * 1e3:.3f} ms, {c['GBps']:.0f} GB/s (read + write).",
        "",
        "| op | shape | pass | time (ms) | GB/s |",
        "|---|---|---|---|---|",
    ]
    for r in result["timings"]:
        t = "failed: " + r.get("error", "") if r["seconds"] is None else f"{r['seconds'] * 1e3:.3f}"
        lines.append(f"| {r['op']} | {r['shape']} | {r['pass_']} | {t} | {r.get('GBps', float('nan')):.0f} |")
    v = result["verdicts"]
    if v is None:
        why = "these times come from the CUDA simulator" if "simulator" in m["card"] else "the run did not finish"
        return "\n".join(lines + ["", f"Targets not judged: {why}.", ""])
    fmt = lambda x, f: "n/a" if x is None else format(x, f)  # noqa: E731
    met = lambda x: "no baseline" if x is None else ("met" if x else "**missed**")  # noqa: E731
    lines += [
        "",
        "## Targets",
        "",
        f"- first-order scan >= {TARGETS['scan_copy_fraction']:.0%} of copy bandwidth: "
        f"{fmt(v['scan_copy_fraction']['value'], '.0%')}: {met(v['scan_copy_fraction']['met'])}",
        f"- selective scan forward <= {TARGETS['selective_scan_forward_ms']:g} ms: "
        f"{fmt(v['selective_scan_forward_ms']['value'], '.2f')} ms: {met(v['selective_scan_forward_ms']['met'])}",
        f"- attention fp32 forward+backward within {TARGETS['attention_vs_sdpa']:g}x of torch SDPA fp32: "
        f"{fmt(v['attention_vs_sdpa']['value'], '.2f')}x: {met(v['attention_vs_sdpa']['met'])}",
        "",
    ]
    return "\n".join(lines)
