"""Golden op ``ssd``: Mamba-2's state space duality in ``ssd_minimal_discrete`` conventions.

Mirrors mamba_ssm's ``ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None)`` with
X (b, l, h, p), A (b, l, h) already discretised (dt * A, <= 0), B, C (b, l, h, n), returning
``Y`` (b, l, h, p) and ``final_state`` (b, h, p, n). Two deliberate differences, both documented
traps of the reference: ``initial_states`` has four axes (b, h, p, n) here, without the
reference's singleton chunk axis, and any length l works (the reference asserts l % block_len == 0).
The result does not depend on ``block_len`` (tested).
"""

import numpy as np

from ref.golden.cases import Case, decay_span, option
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.ssd import ssd_chunked, ssd_chunked_backward


def _softplus(x):
    return np.logaddexp(0, x)


def cases(rng):
    """l = 1, 63, 500 with block_len 16 and 64 (not dividing l); p, n not powers of two; strong and
    weak decays; with and without initial_states and dfinal_state."""
    # A_t = dt_t * A_head: dt = softplus(x + shift) as Mamba-2 (its test uses shift -4), A_head = -exp(U)
    decays = {"weak": (-4.0, (-3.0, -1.0)), "mid": (-1.0, (-1.0, 0.5)), "strong": (1.0, (0.5, 2.0))}
    plan = [  # name, b, l, h, p, n, decay, initial state, cotangent of final_state, block_len
        ("L1", 2, 1, 2, 3, 5, "mid", True, True, 64),
        ("L63_weak", 2, 63, 2, 6, 5, "weak", False, False, 16),
        ("L63_strong_h0", 1, 63, 3, 3, 6, "strong", True, True, 64),
        ("L500_mid_h0", 1, 500, 1, 3, 5, "mid", True, True, 64),
        ("L500_strong", 1, 500, 1, 5, 3, "strong", False, True, 16),
    ]
    out = []
    for name, b, l, h, p, n, decay, with_h0, with_df, block_len in plan:
        shift, log_a = decays[decay]
        dt = _softplus(rng.standard_normal((b, l, h)) + shift)  # (b, l, h)
        A_head = -np.exp(rng.uniform(*log_a, h))  # (h,)
        X = rng.standard_normal((b, l, h, p))
        arrays = {"X": X * dt[..., None], "A": dt * A_head,  # discretised, as ssd_minimal's own test
                  "B": rng.standard_normal((b, l, h, n)), "C": rng.standard_normal((b, l, h, n))}
        if with_h0:
            arrays["initial_states"] = rng.standard_normal((b, h, p, n))  # (b, h, p, n)
        arrays["block_len"] = option(block_len)
        arrays["dY"] = rng.standard_normal((b, l, h, p))
        if with_df:
            arrays["dfinal_state"] = rng.standard_normal((b, h, p, n))
        description = (f"b={b} l={l} h={h} p={p} n={n} block_len={block_len}; {decay} decay; "
                       f"{'initial_states' if with_h0 else 'no initial state'}; "
                       f"cotangents dY{' and dfinal_state' if with_df else ' only'}")
        out.append(Case(name, description, arrays, length=l + p + n, exponent=decay_span(arrays["A"])))
    return out


def _forward(inputs, options):
    Y, final_state, cache = ssd_chunked(
        inputs["X"], inputs["A"], inputs["B"], inputs["C"],
        block_len=options["block_len"], initial_states=inputs.get("initial_states"),
    )

    def backward(cot):
        dX, dA, dB, dC, dS0 = ssd_chunked_backward(cot["dY"], cot["dfinal_state"], cache)
        return {"dX": dX, "dA": dA, "dB": dB, "dC": dC, "dinitial_states": dS0}

    return {"Y": Y, "final_state": final_state}, backward


register(
    GoldenOp(
        name="ssd",
        mirrors="ssd_minimal_discrete, mamba_ssm/modules/ssd_minimal.py, state-spaces/mamba @e9594ce (v2.3.2.post1)",
        layout="time second: X (b, l, h, p); A (b, l, h); B, C (b, l, h, n); states (b, h, p, n)",
        inputs=(
            Tensor("X", "(b, l, h, p)", "inputs (already multiplied by dt in Mamba-2)"),
            Tensor("A", "(b, l, h)", "discretised log-decays dt * A <= 0"),
            Tensor("B", "(b, l, h, n)", "input projections, per head"),
            Tensor("C", "(b, l, h, n)", "output projections, per head"),
            Tensor("initial_states", "(b, h, p, n)", "the state before step 0 (four axes)", optional=True),
        ),
        outputs=(Tensor("Y", "(b, l, h, p)", "outputs"), Tensor("final_state", "(b, h, p, n)", "the last state")),
        options=(Option("block_len", int, 64, "chunk length of the four-step algorithm; the result does not depend on it"),),
        forward=_forward,
        notes="H_t = exp(A_t) H_{t-1} + X_t^T B_t;  Y_t = H_t C_t.",
        reference="ssd_minimal_discrete",
        state_layout="[p, n] = [V, K] per head: (b, h, p, n), the transpose of FLA's default [K, V]",
        conventions=(
            "X and A are already discretised: X = x * dt, A = dt * A_head <= 0 (natural log); the raw-parameter "
            "ssd_chunk_scan_combined_ref takes x, dt, A (h,) and applies dt_bias and softplus itself",
            "initial_states is (b, h, p, n) here; ssd_minimal_discrete wants (b, 1, h, p, n) (a singleton chunk "
            "axis) and mamba_chunk_scan_combined wants (b, h, p, n)",
            "state [p, n] = [V, K] in FLA terms (C <-> q, B <-> k, X <-> v): transpose to compare with FLA's [K, V]",
            "B and C are per head here; with G groups repeat them to h heads (group g serves the contiguous heads "
            "g*h/G .. (g+1)*h/G - 1)",
            "ssd_minimal_discrete asserts l % block_len == 0; this op takes any l, and the result does not depend "
            "on block_len",
        ),
        cases=cases,
    )
)
