"""Worked example: a GLA with an off-by-one in its decay, caught by ``python -m ref golden check``.

The bug is the classic one of a hand-written scan: step t decays the state with the gate of the
step before,

    right:  S_t = diag(exp(gk_t))     S_{t-1} + k_t^T v_t
    wrong:  S_t = diag(exp(gk_{t-1})) S_{t-1} + k_t^T v_t      (no decay at t = 0)

Everything else (layout, scale, the backward pass of the function it computes) is right, so it
runs, its shapes are right and its outputs look plausible. The golden check says where it fails:
every case where a decay meets a state (an initial state, or T > 1), in the tensors that depend on
the decay (o, ht, dq, dgk, dinitial_state), while dk and dv of a one-step case still pass.

Run it from the repository root (ref/golden/WORKED_EXAMPLE.md shows and reads its output):

    python -m ref.golden.wrong_decay_example [--out DIR]

or the same with the command line:

    python -m ref golden export gla --out /tmp/golden
    python -m ref golden check /tmp/golden/gla --impl ref.golden.wrong_decay_example:gla_wrong_decay
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from ref import golden
from ref.golden import bundle, check
from ref.mixers.gla import gla_recurrent, gla_recurrent_backward


def gla_wrong_decay(op, arrays):
    """GLA in FLA's conventions with the decay shifted by one step; (op, arrays) -> results."""
    if op != "gla":
        raise ValueError(f"op: this example implements gla only, got {op!r}")
    a = {name: x.astype(np.float64) for name, x in arrays.items() if x.ndim}  # computed in float64
    q, k, v, gk = a["q"], a["k"], a["v"], a["gk"]  # q, k, gk (B, T, H, K); v (B, T, H, V)
    h0 = a.get("initial_state")  # (B, H, K, V) or None
    scale = arrays["scale"].item() if "scale" in arrays else None
    # the bug: step t uses gk[t - 1] (and no decay at t = 0)
    zero = np.zeros_like(gk[:, :1])  # (B, 1, H, K)
    shifted = np.concatenate([zero, gk[:, :-1]], axis=1)  # (B, T, H, K)
    o, ht, cache = gla_recurrent(q, k, v, shifted, scale=scale, initial_state=h0)
    results = {"o": o}
    if arrays["output_final_state"].item():
        results["ht"] = ht
    dq, dk, dv, dshifted, dh0 = gla_recurrent_backward(a["do"], a.get("dht"), cache)
    # the gradient of the function it computes: shifted[:, t] = gk[:, t - 1], so dgk[:, t] = dshifted[:, t + 1]
    dgk = np.concatenate([dshifted[:, 1:], zero], axis=1)  # (B, T, H, K)
    results.update(dq=dq, dk=dk, dv=dv, dgk=dgk)
    if h0 is not None:
        results["dinitial_state"] = dh0
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="where to export the gla bundle (default: a temporary folder)")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="golden_")
    path = bundle.export("gla", out)
    print(f"exported {path}\n")

    print("--- the implementation with the off-by-one decay")
    wrong = check.check_bundle(path, impl=gla_wrong_decay)
    print(check.format_report(wrong))

    print("\n--- the reference itself (ref.golden:run), for comparison")
    right = check.check_bundle(path, impl=golden.run)
    print(check.format_report(right, verbose=False))
    # the example works when the check catches the bug and passes the reference
    return 0 if not wrong[0].ok and right[0].ok else 1


if __name__ == "__main__":
    sys.exit(main())
