"""Benchmarks (``python -m ref bench NAME``): ratios against a baseline measured in the same run.

Benchmarks are not tests: CI runs them only in ``--smoke`` mode (tiny sizes, to keep them working).
Results are written as JSON and a Markdown table, by default under ``figures/bench/``.
``ptx`` (``ref.bench.ptx``) needs the ``cuda`` extra but no GPU.
``gpu`` (``ref.bench.gpu``) is never part of ``all``: it needs an NVIDIA GPU.
"""

from __future__ import annotations

from ref.bench import attention, gpu, linear_attention, ptx, rnn, scaling, scan, ssm, train

BENCHMARKS = {
    "scan": scan.run,
    "linear-attention": linear_attention.run,
    "ssm": ssm.run,
    "rnn": rnn.run,
    "attention": attention.run,
    "scaling": scaling.run,
    "train": train.run,
    "ptx": ptx.run,
}

# Run only by name, never by "all": they need hardware CI does not have.
GPU_BENCHMARKS = {"gpu": gpu.run}
