"""Golden vectors: float64 outputs and gradients of registered ops (``python -m ref golden``).

Each op module registers itself on import; add new op modules to the import list below.
"""

from ref.golden import (  # noqa: F401  (importing a module registers its op)
    attention,
    gla,
    gru,
    linear_attn,
    linear_scan,
    lstm,
    retention,
    s4d_kernel,
    selective_scan,
    simple_gla,
    ssd,
)
from ref.golden.registry import OPS, GoldenOp, Option, Tensor, get, register, run

__all__ = ["OPS", "GoldenOp", "Option", "Tensor", "get", "register", "run"]
