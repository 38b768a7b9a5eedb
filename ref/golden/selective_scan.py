"""Golden op ``selective_scan``: Mamba's S6 (ref.mixers.selective_scan).

Mirrors mamba_ssm's ``selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
delta_softplus=False, return_last_state=False)``: channel-first (B, D, L), B and C fixed (D, N),
variable (B, N, L) or grouped (B, G, N, L); the order is bias, then softplus (linear above 20), then
the scan; ``last_state`` (B, D, N) only when ``return_last_state``. Real A only. ``initial_state``
(B, D, N) is an extension (mamba_ssm has none); leave it out to match the reference exactly.
"""

import numpy as np

from ref.golden.cases import Case, decay_span, option
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.selective_scan import selective_scan_recurrent, selective_scan_recurrent_backward

_GRADS = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dinitial_state")


def _forward(inputs, options):
    out, last_state, cache = selective_scan_recurrent(
        inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
        inputs.get("D"), inputs.get("z"), inputs.get("delta_bias"), options["delta_softplus"],
        initial_state=inputs.get("initial_state"), return_last_state=options["return_last_state"],
    )

    def backward(cot):
        return dict(zip(_GRADS, selective_scan_recurrent_backward(cot["dout"], cot["dlast_state"], cache)))

    outputs = {"out": out, "last_state": last_state} if options["return_last_state"] else {"out": out}
    return outputs, backward


def _softplus(x):  # as the reference: linear above 20
    return np.where(x <= 20.0, np.logaddexp(0, np.minimum(x, 20.0)), x)


def cases(rng):
    """L = 1, 63, 500; D and N not powers of two; B and C fixed, variable and grouped; strong and
    weak decays; with and without D, z, delta_bias, softplus, last_state and its cotangent, and the
    initial_state extension (the cases without it match selective_scan_ref exactly)."""
    # A (D, N) = -U[lo, hi]; delta = 0.5 * U[0, 1] (+ delta_bias 0.5 * U[0, 1]) as mamba's test
    A_range = {"weak": (0.01, 0.1), "mid": (0.5, 1.0), "strong": (4.0, 16.0)}
    plan = [  # name, B, D, L, N, B/C mode, decay, D z delta_bias softplus, last_state + cotangent, h0
        ("L1", 2, 5, 1, 3, "variable", "mid", True, True, False),
        ("L63_fixed_weak", 2, 6, 63, 5, "fixed", "weak", False, False, False),
        ("L63_grouped_strong_h0", 1, 6, 63, 3, "grouped", "strong", True, True, True),
        ("L500_variable_mid", 1, 3, 500, 5, "variable", "mid", True, True, False),
        ("L500_fixed_strong", 1, 5, 500, 3, "fixed", "strong", False, True, False),
    ]
    out = []
    for name, Bn, Dn, L, N, mode, decay, full, last, with_h0 in plan:
        BC_shape = {"fixed": (Dn, N), "variable": (Bn, N, L), "grouped": (Bn, 2, N, L)}[mode]
        arrays = {
            "u": rng.standard_normal((Bn, Dn, L)),  # (B, D, L)
            "delta": 0.5 * rng.uniform(size=(Bn, Dn, L)),  # (B, D, L)
            "A": -rng.uniform(*A_range[decay], (Dn, N)),  # (D, N)
            "B": rng.standard_normal(BC_shape),
            "C": rng.standard_normal(BC_shape),
        }
        delta = arrays["delta"]
        if full:
            arrays.update(D=rng.standard_normal(Dn), z=rng.standard_normal((Bn, Dn, L)),
                          delta_bias=0.5 * rng.uniform(size=Dn))
            delta = _softplus(delta + arrays["delta_bias"][:, None])
            arrays["delta_softplus"] = option(True)
        if with_h0:
            arrays["initial_state"] = rng.standard_normal((Bn, Dn, N))  # (B, D, N)
        arrays["return_last_state"] = option(last)
        arrays["dout"] = rng.standard_normal((Bn, Dn, L))
        if last:
            arrays["dlast_state"] = rng.standard_normal((Bn, Dn, N))
        description = (
            f"B={Bn} D={Dn} L={L} N={N}; B, C {mode} {BC_shape}; {decay} decay A ~ -U{A_range[decay]}; "
            f"{'D, z, delta_bias, delta_softplus' if full else 'no D, z, delta_bias; no softplus'}; "
            f"{'last_state and dlast_state' if last else 'no last_state'}; "
            f"{'initial_state (an extension: mamba_ssm has none)' if with_h0 else 'no initial state'}"
        )
        deltaA = delta[:, :, :, None] * arrays["A"][None, :, None, :]  # (B, D, L, N)
        out.append(Case(name, description, arrays, length=L + N, exponent=decay_span(deltaA, time_axis=2)))
    return out


register(
    GoldenOp(
        name="selective_scan",
        mirrors="selective_scan_ref, mamba_ssm/ops/selective_scan_interface.py, state-spaces/mamba @e9594ce "
        "(v2.3.2.post1)",
        layout="channel-first: u, delta, z, out (B, D, L); A (D, N); B, C (D, N) | (B, N, L) | (B, G, N, L); "
        "last_state (B, D, N)",
        inputs=(
            Tensor("u", "(B, D, L)", "inputs"),
            Tensor("delta", "(B, D, L)", "step sizes, before delta_bias and softplus"),
            Tensor("A", "(D, N)", "negative real"),
            Tensor("B", "(D, N) | (B, N, L) | (B, G, N, L)", "input matrix: fixed, variable or grouped"),
            Tensor("C", "(D, N) | (B, N, L) | (B, G, N, L)", "output matrix: fixed, variable or grouped"),
            Tensor("D", "(D,)", "skip connection", optional=True),
            Tensor("z", "(B, D, L)", "gate: out * silu(z)", optional=True),
            Tensor("delta_bias", "(D,)", "added to delta before softplus", optional=True),
            Tensor("initial_state", "(B, D, N)", "extension: x_{-1}", optional=True),
        ),
        outputs=(
            Tensor("out", "(B, D, L)", "outputs"),
            Tensor("last_state", "(B, D, N)", "the final state", when="return_last_state"),
        ),
        options=(
            Option("delta_softplus", bool, False, "apply softplus (linear above 20) after delta_bias"),
            Option("return_last_state", bool, False, "output last_state"),
        ),
        forward=_forward,
        notes="x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t;  out_t = (C_t . x_t + D u_t) silu(z_t).",
        reference="selective_scan_ref",
        state_layout="(B, D, N): channel-first, one state of size N per channel",
        conventions=(
            "channel-first (B, D, L): time is the last axis, unlike FLA's (B, T, H, K) and Mamba-2's (b, l, h, p)",
            "A is the continuous parameter (negative real, (D, N)); the decay is exp(delta * A), natural log "
            "delta * A; the B side is Euler (delta B u), not zero-order hold",
            "order: delta + delta_bias, then softplus (linear above 20, as torch and the CUDA kernel), then the scan",
            "grouped B, C (B, G, N, L): group g serves the contiguous channels g*D/G .. (g+1)*D/G - 1",
            "no initial state in mamba_ssm: initial_state is this package's extension; last_state is fp32 "
            "and only returned with return_last_state",
            "real A only: complex A (interleaved real/imaginary B, C, output 2 Re y) is not covered",
        ),
        cases=cases,
    )
)
