"""Benchmarks (``python -m ref bench NAME``): ratios against a baseline measured in the same run.

Benchmarks are not tests: CI runs them only in ``--smoke`` mode (tiny sizes, to keep them working).
Results are written as JSON and a Markdown table, by default under ``figures/bench/``.
``gpu`` (``ref.bench.gpu``) and ``ptx`` are never part of ``all``: the first needs an NVIDIA GPU,
the second the ``cuda`` extra.
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
}

# Run only by name, never by "all": gpu needs an NVIDIA GPU, ptx the ``cuda`` extra (no GPU).
NAMED_ONLY = {"gpu": gpu.run, "ptx": ptx.run}
