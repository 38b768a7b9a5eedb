"""``python -m ref bench train``: one full training step of a small language model, in tokens per second.

One step = forward, backward and an AdamW update (lr 1e-3, weight decay 0.01, PyTorch's
defaults otherwise) of a 2-layer model, width D = 128, vocabulary 256, on a batch of B = 8
random sequences of T = 512 tokens (next-token cross-entropy), float32, for four models:

    GPT     ref.models.lm, block "gpt2" (LayerNorm, 4-head causal attention with biases, GELU MLP 4D;
            no positional embedding: the scaffold's "gpt2" block has none)
    Mamba   ref.models.lm, block "mamba" (RMSNorm, the Mamba layer: E = 2D, N = 16, conv width 4)
    GLA     ref.models.lm, block "gla" (RMSNorm, 4-head GLA, RMSNorm, SwiGLU 8D/3)
    LSTM    ref.models.lstm_lm (embedding, 2 stacked LSTM layers of D units, linear head)

(the first three: embedding -> 2 blocks -> RMSNorm -> untied head), each with

    numpy   backend="numpy": the readable reference (GLA and Mamba in their chunked forms)
    numba   backend="numba": the jitted kernels of ``numba_kernels`` for the sequence mixer (the
            tiled attention, GLA's chunked kernel, Mamba's fused selective scan, which is the
            recurrent form, the LSTM recurrence); projections, norms and MLPs stay NumPy
    torch   the same architecture written in PyTorch eager on the CPU with autograd and
            ``torch.optim.AdamW``, when torch is importable (optional): attention through
            ``F.scaled_dot_product_attention``; Mamba's scan as mamba_ssm's reference
            (``selective_scan_ref``: a Python loop over the steps, over ``unbind`` slices, whose
            backward is one stack, where indexing's writes a full-size gradient per step); GLA
            chunked in plain torch
            (within a chunk q e^b (k e^-b)^T masked, across chunks a loop carrying the state);
            ``nn.LSTM``. torch runs with as many threads as numba; OpenMP threads wait passively
            (``OMP_WAIT_POLICY=PASSIVE`` unless set).

Process settings, the same for every implementation (all run in one process): OpenMP threads wait
passively; NumPy's idle OpenBLAS threads spin 2^16 cycles, not 2^28, before they sleep
(``OPENBLAS_THREAD_TIMEOUT``, set by ``python -m ref bench``), so they do not take the cores from
the numba kernel after a matrix product; freed arrays stay in the process
(``ref.bench.machine.keep_freed_memory``) instead of being faulted in again every step. On the
2-core reference machine the two together took the numba GPT step from 0.31-0.37 s to
0.29-0.32 s and the GLA step from 0.26-0.44 s to 0.21-0.25 s (medians of two runs each). Outside
the bench set ``OPENBLAS_THREAD_TIMEOUT=16`` in the environment and call ``keep_freed_memory()``
for the same.

Tokens per second = B T / the median wall time of a step (the implementations interleaved with a
pause before each call, ``ref.bench.attention.time_paused``; compilation excluded: one warm-up
step each). The parameter count of each implementation is recorded (torch's must equal NumPy's) and
so is the loss of the first step (about ln 256 = 5.5 for all: the same task).

Targets: numba at least ``TORCH_FACTOR`` (0.7) x torch's tokens per second for every model, and
ahead of torch (> 1x) for Mamba and GLA, where a fused scan should beat eager kernels.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from ref.bench.attention import time_paused
from ref.bench.machine import describe, keep_freed_memory, load_average, target_lines
from ref.io import write_json, write_text
from ref.models.lm import init_lm, lm_loss_and_grads
from ref.models.lstm_lm import init_lstm_lm, lstm_lm_loss_and_grads
from ref.train import tree_flatten
from ref.train.optim import adamw_init, adamw_step

MODELS = ("GPT", "Mamba", "GLA", "LSTM")
BLOCKS = {"GPT": "gpt2", "Mamba": "mamba", "GLA": "gla"}
IMPLEMENTATIONS = ("numpy", "numba", "torch")
SIZE = dict(B=8, T=512, D=128, n_layers=2, vocab=256)
SMOKE_SIZE = dict(B=2, T=32, D=16, n_layers=2, vocab=32)
CHUNK = 64  # GLA's and Mamba's chunk (the blocks' default); 16 in smoke mode
LR, WEIGHT_DECAY = 1e-3, 0.01
TORCH_FACTOR = 0.7  # numba's tokens per second at least this fraction of torch's
AHEAD = ("Mamba", "GLA")  # numba ahead of torch: a fused scan against eager kernels


def _torch():
    """torch, or None when it is not importable (it is optional)."""
    try:
        import torch
    except Exception:
        return None
    return torch


def block_options(model: str, backend: str, chunk: int) -> dict:
    """The forward options of each model's blocks on ``backend``. Mamba's numba kernel is its
    recurrent form (a fused scan, parallel over the channels; the selective scan has no numba
    chunked form); the NumPy reference runs its fastest form, the chunked one."""
    if model == "LSTM":
        return {"backend": backend}
    options = {"chunk_size": chunk} if model in ("Mamba", "GLA") else {}
    if backend == "numba":
        options["backend"] = "numba"
        if model == "Mamba":
            options = {"mode": "recurrent", "backend": "numba"}
    return options


def init_model(model: str, size: dict, rng) -> dict:
    """float32 parameters of ``model`` at ``size``."""
    V, D, L = size["vocab"], size["D"], size["n_layers"]
    if model == "LSTM":
        return init_lstm_lm(rng, V, D, L, dtype=np.float32)
    return init_lm(rng, V, D, L, BLOCKS[model], dtype=np.float32)


def _reference_step(model: str, params: dict, batch, options: dict):
    """One training step of the NumPy model, the parameters and AdamW state carried between calls.
    Returns ``step() -> loss``."""
    loss_and_grads = lstm_lm_loss_and_grads if model == "LSTM" else lm_loss_and_grads
    carried = {"params": params, "opt": adamw_init(params)}

    def step():
        loss, grads = loss_and_grads(carried["params"], batch, **options)
        carried["params"], carried["opt"] = adamw_step(
            carried["params"], grads, carried["opt"], lr=LR, weight_decay=WEIGHT_DECAY
        )
        return loss

    return step


def count_parameters(params) -> int:
    return int(sum(a.size for a in tree_flatten(params).values()))


# ------------------------------------------------------------------------------------------------
# the torch models (built only when torch is importable)


def torch_model(torch, model: str, size: dict, chunk: int):
    """The same architecture as ``init_model(model, size)`` in torch eager (float32)."""
    nn, F = torch.nn, torch.nn.functional
    V, D, L = size["vocab"], size["D"], size["n_layers"]

    class GPT2Block(nn.Module):
        def __init__(self, heads=4):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
            self.fc, self.proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x):
            B, T, _ = x.shape
            n = self.norm1(x)
            q, k, v = (f(n).view(B, T, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, K)
            h = x + self.o(a.transpose(1, 2).reshape(B, T, D))
            return h + self.proj(F.gelu(self.fc(self.norm2(h)), approximate="tanh"))

    class MambaBlock(nn.Module):
        def __init__(self, expand=2, N=16, width=4):
            super().__init__()
            E, R = expand * D, math.ceil(D / 16)
            self.E, self.R, self.N = E, R, N
            self.norm = nn.RMSNorm(D, eps=1e-5)
            self.in_proj = nn.Linear(D, 2 * E, bias=False)
            self.conv = nn.Conv1d(E, E, width, groups=E, padding=width - 1)
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E)
            self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
            self.D = nn.Parameter(torch.ones(E))
            self.out_proj = nn.Linear(E, D, bias=False)

        def forward(self, x):
            T = x.shape[1]
            xz = self.in_proj(self.norm(x))
            x_in, z = xz.chunk(2, dim=-1)  # (B, T, E)
            u = F.silu(self.conv(x_in.transpose(1, 2))[..., :T])  # (B, E, T)
            dt, Bm, Cm = self.x_proj(u.transpose(1, 2)).split([self.R, self.N, self.N], dim=-1)
            delta = F.softplus(self.dt_proj(dt)).transpose(1, 2)  # (B, E, T)
            A = -torch.exp(self.A_log)  # (E, N)
            # mamba_ssm's selective_scan_ref: the recurrence as a Python loop over the steps
            dA = torch.exp(torch.einsum("bet,en->betn", delta, A))
            dBu = torch.einsum("bet,btn,bet->betn", delta, Bm, u)
            # (unbind, not dA[:, :, t]: the backward of an index writes a full-size zero gradient per step)
            h = x.new_zeros(x.shape[0], self.E, self.N)
            ys = []
            for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), Cm.unbind(1)):
                h = dA_t * h + dBu_t
                ys.append(torch.einsum("ben,bn->be", h, C_t))
            y = (torch.stack(ys, dim=2) + u * self.D[:, None]) * F.silu(z.transpose(1, 2))
            return x + self.out_proj(y.transpose(1, 2))

    def gla_chunked(q, k, v, gk):
        """o_t = K^-1/2 q_t S_t, S_t = diag(exp gk_t) S_(t-1) + k_t^T v_t; (B, H, T, .) inputs."""
        B, H, T, K = q.shape
        n = T // chunk
        q, k, v, gk = (a.reshape(B, H, n, chunk, a.shape[-1]) for a in (q, k, v, gk))
        b = gk.cumsum(-2)  # decay from the chunk's start, (B, H, n, C, K)
        qe, ke = q * K**-0.5 * b.exp(), k * (-b).exp()
        mask = torch.ones(chunk, chunk, dtype=torch.bool).tril()
        o = (qe @ ke.transpose(-1, -2)).masked_fill(~mask, 0) @ v  # within chunks
        b_end = b[..., -1:, :]  # (B, H, n, 1, K)
        kd = k * (b_end - b).exp()  # decayed to the chunk's end
        S = q.new_zeros(B, H, K, v.shape[-1])
        across = []
        for qe_i, decay_i, kd_i, v_i in zip(qe.unbind(2), b_end.exp().unbind(2), kd.unbind(2), v.unbind(2)):
            across.append(qe_i @ S)
            S = S * decay_i.transpose(-1, -2) + kd_i.transpose(-1, -2) @ v_i
        return (o + torch.stack(across, dim=2)).reshape(B, H, T, -1)

    class GLABlock(nn.Module):
        def __init__(self, heads=4, rank=16):
            super().__init__()
            self.H = heads
            self.norm1, self.norm2 = nn.RMSNorm(D, eps=1e-6), nn.RMSNorm(D, eps=1e-6)
            self.q, self.k = nn.Linear(D, D // 2, bias=False), nn.Linear(D, D // 2, bias=False)
            self.v = nn.Linear(D, D, bias=False)
            self.a1, self.a2 = nn.Linear(D, rank, bias=False), nn.Linear(rank, D // 2)
            self.r = nn.Linear(D, D)
            self.norm_weight = nn.Parameter(torch.ones(D))
            self.o = nn.Linear(D, D, bias=False)
            hidden = int(8 * D / 3)
            self.gate, self.up = nn.Linear(D, hidden, bias=False), nn.Linear(D, hidden, bias=False)
            self.down = nn.Linear(hidden, D, bias=False)

        def forward(self, x):
            B, T, _ = x.shape
            n = self.norm1(x)
            heads = lambda a: a.view(B, T, self.H, -1).transpose(1, 2)  # noqa: E731
            gk = F.logsigmoid(self.a2(self.a1(n))) / 16
            o = gla_chunked(heads(self.q(n)), heads(self.k(n)), heads(self.v(n)), heads(gk))  # (B, H, T, V)
            o = F.layer_norm(o, o.shape[-1:], eps=1e-5).transpose(1, 2).reshape(B, T, D) * self.norm_weight
            h = x + self.o(o * F.silu(self.r(n)))
            m = self.norm2(h)
            return h + self.down(F.silu(self.gate(m)) * self.up(m))

    class LM(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.blocks = nn.ModuleList(block() for _ in range(L))
            self.norm = nn.RMSNorm(D, eps=1e-6)
            self.head = nn.Linear(D, V, bias=False)

        def forward(self, tokens):
            h = self.embed(tokens)
            for block in self.blocks:
                h = block(h)
            return self.head(self.norm(h))

    class LSTMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.lstm = nn.LSTM(D, D, num_layers=L, batch_first=True)
            self.head = nn.Linear(D, V)

        def forward(self, tokens):
            return self.head(self.lstm(self.embed(tokens))[0])

    if model == "LSTM":
        return LSTMLM()
    return LM({"GPT": GPT2Block, "Mamba": MambaBlock, "GLA": GLABlock}[model])


def _torch_step(torch, module, inputs, targets):
    x, y = torch.from_numpy(inputs), torch.from_numpy(targets)
    opt = torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = module(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    return step


# ------------------------------------------------------------------------------------------------


def run(out_dir: Path, smoke: bool = False) -> dict:
    # see ref.bench.attention: OpenMP threads busy-waiting after a parallel region steal the cores
    # from the next call; read when each OpenMP runtime starts, so set before torch and numba's
    # first parallel call (a value the user set is kept)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # freed activations stay in the process for the next step (see ref.bench.machine), for every
    # implementation alike
    kept = keep_freed_memory()
    import numba

    torch = _torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
        torch.manual_seed(0)
    size = SMOKE_SIZE if smoke else SIZE
    chunk = 16 if smoke else CHUNK
    repeats = 1 if smoke else 5  # a shared 2-core machine: medians of 5
    rng = np.random.default_rng(0)
    data = rng.integers(0, size["vocab"], (size["B"], size["T"] + 1))
    inputs, targets = data[:, :-1], data[:, 1:]  # next-token prediction
    tokens = size["B"] * size["T"]
    load_before = load_average()

    fns, first_loss, n_params, options = {}, {}, {}, {}
    for model in MODELS:
        params = init_model(model, size, rng)
        n_params[model] = {"numpy": count_parameters(params)}
        for backend in ("numpy", "numba"):
            options[(model, backend)] = block_options(model, backend, chunk)
            fn = _reference_step(model, params, (inputs, targets), options[(model, backend)])
            first_loss[(model, backend)] = fn()  # warm-up; compiles the numba kernels
            fns[(model, backend)] = fn
        if torch is not None:
            module = torch_model(torch, model, size, chunk)
            n_params[model]["torch"] = int(sum(p.numel() for p in module.parameters()))
            fn = _torch_step(torch, module, inputs, targets)
            first_loss[(model, "torch")] = fn()
            fns[(model, "torch")] = fn
    times = time_paused(fns, repeats, warmup=0)

    names = [i for i in IMPLEMENTATIONS if i != "torch" or torch is not None]
    rows = []
    for model in MODELS:
        seconds = {name: times[(model, name)] for name in names}
        row = dict(
            model=model, parameters=n_params[model], seconds=seconds,
            tokens_per_s={name: tokens / s for name, s in seconds.items()},
            first_loss={name: first_loss[(model, name)] for name in names},
            options={b: options[(model, b)] for b in ("numpy", "numba")},
            numba_over_numpy=seconds["numpy"] / seconds["numba"],
        )  # fmt: skip
        if torch is not None:
            row["numba_over_torch"] = seconds["torch"] / seconds["numba"]  # a ratio of tokens per second
        rows.append(row)
        print(f"[bench train] {model}: " + ", ".join(
            f"{name} {row['tokens_per_s'][name]:,.0f} tok/s" for name in names), flush=True)  # fmt: skip
    machine = describe()
    machine["load_average"] = dict(before=load_before, after=load_average())
    machine["torch"] = torch.__version__ if torch is not None else None
    result = dict(
        benchmark="train", smoke=smoke, machine=machine, size=size, chunk=chunk, dtype="float32",
        optimizer=dict(name="AdamW", lr=LR, weight_decay=WEIGHT_DECAY), repeats=repeats, rows=rows,
        targets=targets_met(rows) if torch is not None else {}, omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
        keep_freed_memory=kept,
    )  # fmt: skip
    out_dir = Path(out_dir)
    write_json(out_dir / "bench_train.json", result)
    write_text(out_dir / "bench_train.md", markdown(result))
    return result


def targets_met(rows) -> dict:
    """Per model, numba's tokens per second over torch's against its limit."""
    out = {}
    for r in rows:
        limit = 1.0 if r["model"] in AHEAD else TORCH_FACTOR
        ratio = r["numba_over_torch"]
        what = "ahead of torch" if r["model"] in AHEAD else f"at least {TORCH_FACTOR}x torch"
        met = ratio > limit if r["model"] in AHEAD else ratio >= limit
        out[f"{r['model']}: numba {what}"] = dict(value=ratio, limit=limit, met=met)
    return out


def markdown(result: dict) -> str:
    m, size = result["machine"], result["size"]
    load = m["load_average"]
    with_torch = m["torch"] is not None
    lines = [
        "# Benchmark: one training step (forward, backward, AdamW), NumPy, numba and torch eager",
        "",
        f"Generated by `python -m ref bench train{' --smoke' if result['smoke'] else ''}`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, numba threads {m['numba_threads']} "
        f"({m['threading_layer']}), OPENBLAS_NUM_THREADS {m.get('blas_threads', 'unset')}; Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}, torch {m['torch'] or 'not installed'}. Load average (1, 5, 15 min) before: {load['before']}, "
        f"after: {load['after']}. OMP_WAIT_POLICY={result['omp_wait_policy']}, "
        f"OPENBLAS_THREAD_TIMEOUT={m.get('openblas_thread_timeout', 'unset')}, freed memory kept in the process "
        f"(glibc mmap/trim thresholds raised): {'yes' if result.get('keep_freed_memory') else 'no'}.",
        "",
        f"{size['n_layers']} layers, D = {size['D']}, vocabulary {size['vocab']}, B = {size['B']}, "
        f"T = {size['T']}, {result['dtype']}, AdamW (lr {result['optimizer']['lr']:g}, weight decay "
        f"{result['optimizer']['weight_decay']:g}); chunks of {result['chunk']} for GLA and NumPy's Mamba. "
        f"Tokens per second = B T / the median step time of {result['repeats']} steps, the implementations "
        "interleaved with a pause before each call; compilation excluded.",
        "",
        "| model | parameters | NumPy | numba | torch eager | numba / NumPy | numba / torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        tps = r["tokens_per_s"]
        torch_t = f"{tps['torch']:,.0f} tok/s" if "torch" in tps else "—"
        vs_torch = f"{r['numba_over_torch']:.2f}x" if "numba_over_torch" in r else "—"
        lines.append(
            f"| {r['model']} | {r['parameters']['numpy']:,} | {tps['numpy']:,.0f} tok/s | {tps['numba']:,.0f} tok/s | "
            f"{torch_t} | {r['numba_over_numpy']:.2f}x | {vs_torch} |"
        )
    lines += ["", "Targets (numba's tokens per second over torch's):", ""]
    lines += target_lines(result["targets"], result["smoke"], unit="x")
    if not with_torch:
        lines.append("- not measured (torch is not importable)")
    lines.append("")
    return "\n".join(lines)
