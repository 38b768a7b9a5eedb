"""Golden op ``s4d_kernel``: the S4D convolution kernel (zero-order hold), ref.mixers.s4.

Mirrors ``S4DKernel.forward(L)`` of state-spaces/s4 ``models/s4/s4d.py`` @2ed46fc (the minimal S4D,
B = 1, one mode of each conjugate pair):

    dt = exp(log_dt)                                      (H,)
    A  = A_re + i A_im,   C = C_re + i C_im                (H, N/2)
    K_l = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n · exp(dt A_n l),   l = 0 .. L-1      -> K (H, L)

Differences in how the inputs are given, not in what is computed: A is passed as its real and
imaginary parts (the reference stores ``log_A_real`` with A_re = -exp(log_A_real): chain
dlog_A_real = dA_re * A_re), and C as C_re, C_im (the reference's ``view_as_real`` C is
(H, N/2, 2) = stack(C_re, C_im, -1)). A_re must be negative.
"""

import numpy as np

from ref.golden.cases import Case, option
from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.s4.s4d import s4d_kernel, s4d_kernel_backward

_GRADS = ("dlog_dt", "dA_re", "dA_im", "dC_re", "dC_im")


def _forward(inputs, options):
    K, cache = s4d_kernel(inputs["log_dt"], inputs["A_re"], inputs["A_im"], inputs["C_re"], inputs["C_im"],
                          L=options["L"], discretization="zoh")

    def backward(cot):
        return dict(zip(_GRADS, s4d_kernel_backward(cot["dK"], cache)[:5]))

    return {"K": K}, backward


def cases(rng):
    """L = 1, 63, 500; H and N/2 not powers of two; strong decay (large dt, |A_re| up to 2) and weak
    decay (dt near 1e-3, S4D-Lin's A_re = -1/2); S4D-Lin imaginary parts pi n."""
    plan = [  # name, H, N/2, L, decay
        ("L1", 3, 5, 1, "mid"),
        ("L63_weak", 3, 5, 63, "weak"),
        ("L63_strong", 5, 3, 63, "strong"),
        ("L500_weak", 3, 6, 500, "weak"),
        ("L500_strong", 2, 5, 500, "strong"),
    ]
    # log_dt ~ U[lo, hi] (S4D's init: U[log 1e-3, log 1e-1]); A_re = -U[a, b]
    ranges = {"weak": ((np.log(1e-3), np.log(3e-3)), (0.5, 0.5)), "mid": ((np.log(1e-3), np.log(1e-1)), (0.2, 2.0)),
              "strong": ((np.log(3e-2), np.log(1e-1)), (0.5, 2.0))}
    out = []
    for name, H, N2, L, decay in plan:
        log_dt_range, A_range = ranges[decay]
        arrays = {"log_dt": rng.uniform(*log_dt_range, H), "A_re": -rng.uniform(*A_range, (H, N2)),
                  "A_im": np.pi * np.arange(N2) + rng.uniform(-0.5, 0.5, (H, N2)),
                  "C_re": rng.standard_normal((H, N2)), "C_im": rng.standard_normal((H, N2))}
        arrays["L"] = option(L)
        arrays["dK"] = rng.standard_normal((H, L))
        dtA = np.exp(arrays["log_dt"])[:, None] * np.hypot(arrays["A_re"], arrays["A_im"])  # (H, N/2)
        dt_lo, dt_hi = np.exp(log_dt_range)
        description = f"H={H} N/2={N2} L={L}; {decay} decay: dt in [{dt_lo:.0e}, {dt_hi:.0e}], A_re ~ -U{A_range}"
        # exp(dt A l) for l < L: exponents (real decay and imaginary phase) up to L |dt A|
        out.append(Case(name, description, arrays, length=L + N2, exponent=float(L * dtA.max())))
    return out


register(
    GoldenOp(
        name="s4d_kernel",
        mirrors="S4DKernel.forward, models/s4/s4d.py, state-spaces/s4 @2ed46fc",
        layout="channel-first: log_dt (H,); A_re, A_im, C_re, C_im (H, N/2), one mode per conjugate pair; "
        "K (H, L)",
        inputs=(
            Tensor("log_dt", "(H,)", "log step sizes, dt = exp(log_dt)"),
            Tensor("A_re", "(H, N/2)", "real parts of the diagonal A, < 0 (= -exp(log_A_real))"),
            Tensor("A_im", "(H, N/2)", "imaginary parts of A"),
            Tensor("C_re", "(H, N/2)", "real parts of C"),
            Tensor("C_im", "(H, N/2)", "imaginary parts of C"),
        ),
        outputs=(Tensor("K", "(H, L)", "the convolution kernel"),),
        options=(Option("L", int, 64, "kernel length, >= 1"),),
        forward=_forward,
        notes="K_l = 2 Re sum_n C_n (exp(dt A_n) - 1)/A_n exp(dt A_n l), dt = exp(log_dt); B = 1; zero-order hold.",
        reference="S4DKernel.forward",
        state_layout="(H, N/2) complex modes, one of each conjugate pair (hence 2 Re)",
        conventions=(
            "A is given as A_re, A_im; S4DKernel stores log_A_real with A_re = -exp(log_A_real): "
            "dlog_A_real = dA_re * A_re",
            "C is given as C_re, C_im; S4DKernel's view_as_real C is (H, N/2, 2) = stack(C_re, C_im, -1)",
            "dt = exp(log_dt): the step is given by its log, as in S4DKernel",
            "zero-order hold, (exp(dt A) - 1) / A, not bilinear; B = 1 is folded into C",
            "only N/2 modes are stored: the kernel is 2 Re of their sum (a full-N implementation sums all N and "
            "takes the real part)",
        ),
        cases=cases,
    )
)
