"""Golden op ``selective_scan``: Mamba's S6 (ref.mixers.selective_scan).

Mirrors mamba_ssm's ``selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
delta_softplus=False, return_last_state=False)``: channel-first (B, D, L), B and C fixed (D, N),
variable (B, N, L) or grouped (B, G, N, L); the order is bias, then softplus (linear above 20), then
the scan; ``last_state`` (B, D, N) only when ``return_last_state``. Real A only. ``initial_state``
(B, D, N) is an extension (mamba_ssm has none); leave it out to match the reference exactly.
"""

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
    )
)
