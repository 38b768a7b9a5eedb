"""Golden op ``ssd``: Mamba-2's state space duality in ``ssd_minimal_discrete`` conventions.

Mirrors mamba_ssm's ``ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None)`` with
X (b, l, h, p), A (b, l, h) already discretised (dt * A, <= 0), B, C (b, l, h, n), returning
``Y`` (b, l, h, p) and ``final_state`` (b, h, p, n). Two deliberate differences, both documented
traps of the reference: ``initial_states`` has four axes (b, h, p, n) here, without the
reference's singleton chunk axis, and any length l works (the reference asserts l % block_len == 0).
The result does not depend on ``block_len`` (tested).
"""

from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.ssd import ssd_chunked, ssd_chunked_backward


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
    )
)
