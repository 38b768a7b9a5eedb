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

from ref.golden.registry import GoldenOp, Option, Tensor, register
from ref.mixers.s4.s4d import s4d_kernel, s4d_kernel_backward

_GRADS = ("dlog_dt", "dA_re", "dA_im", "dC_re", "dC_im")


def _forward(inputs, options):
    K, cache = s4d_kernel(inputs["log_dt"], inputs["A_re"], inputs["A_im"], inputs["C_re"], inputs["C_im"],
                          L=options["L"], discretization="zoh")

    def backward(cot):
        return dict(zip(_GRADS, s4d_kernel_backward(cot["dK"], cache)[:5]))

    return {"K": K}, backward


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
    )
)
