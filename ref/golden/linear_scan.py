"""Golden op ``linear_scan``: h_t = a_t h_{t-1} + b_t (ref.mixers.linear_scan)."""

from ref.golden.registry import GoldenOp, Tensor, register
from ref.mixers.linear_scan import linear_scan_recurrent, linear_scan_recurrent_backward


def _forward(inputs, options):
    h, ht, cache = linear_scan_recurrent(inputs["a"], inputs["b"], inputs.get("initial_state"))

    def backward(cot):
        da, db, dh0 = linear_scan_recurrent_backward(cot["dh"], cot["dht"], cache)
        return {"da": da, "db": db, "dinitial_state": dh0}

    return {"h": h, "ht": ht}, backward


register(
    GoldenOp(
        name="linear_scan",
        mirrors="this package's definition (the first-order scan inside mamba_ssm's selective_scan_ref)",
        layout="time second: a, b, h (B, T, D); states (B, D)",
        inputs=(
            Tensor("a", "(B, T, D)", "decay coefficients"),
            Tensor("b", "(B, T, D)", "inputs"),
            Tensor("initial_state", "(B, D)", "h_{-1}; zeros if absent", optional=True),
        ),
        outputs=(Tensor("h", "(B, T, D)", "all states"), Tensor("ht", "(B, D)", "the final state h_{T-1}")),
        forward=_forward,
        notes="h_t = a_t * h_{t-1} + b_t, elementwise; no scale, no gate.",
    )
)
