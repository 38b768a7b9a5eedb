"""S4 and S4D: structured state space models, as convolutions and as recurrences.

Papers: "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré; arXiv
2111.00396) and "On the Parameterization and Initialization of Diagonal State Space Models" (Gu,
Gupta, Goel, Ré; arXiv 2206.11893). Read in this order:

* ``hippo``: HiPPO-LegS, and why it is normal plus low rank, hence diagonal plus low rank.
* ``discretize``: continuous (A, B) -> discrete (Ā, B̄), bilinear and zero-order hold.
* ``ssm``: any discrete SSM as a recurrence, its kernel K_l = C Ā^l B̄ by powers, and the same
  kernel from its generating function at the roots of unity (the step S4 builds on).
* ``conv``: y = K * u + D u by FFT (zero-padded to 2L) and its backward (correlations).
* ``s4d``: the diagonal SSM: kernel by a Vandermonde product, convolutional and recurrent forms.
* ``s4``: the DPLR SSM: kernel by Cauchy sums + Woodbury, the recurrence by Woodbury's
  discretisation; every parameter's gradient.
* ``init``: S4D-Lin/Inv/Real/LegS and S4's HiPPO initialisation.

Layout: channel-first as state-spaces/s4 (``transposed=True``): u, y (B, H, L); one SSM per
channel h; complex parameters as real pairs (``X_re``, ``X_im``) of shape (H, N/2), one mode of
each conjugate pair (``_inputs`` states the gradient convention for complex numbers).

Both mixers offer the two forms of the paper with one signature each,
``<mixer>_convolutional`` and ``<mixer>_recurrent``, each with its ``_backward``; ``FORMS`` maps
mixer -> form -> (forward, backward). The tests prove the forms equal, forward and backward.
"""

from ref.mixers.s4.conv import causal_conv, causal_conv_backward
from ref.mixers.s4.discretize import discretize_dense, discretize_diag, discretize_diag_backward
from ref.mixers.s4.hippo import hippo_legs, hippo_legs_dplr, hippo_legs_nplr
from ref.mixers.s4.init import S4D_INITS, s4_init, s4d_init
from ref.mixers.s4.s4 import (
    s4_convolutional,
    s4_convolutional_backward,
    s4_discrete,
    s4_kernel,
    s4_kernel_backward,
    s4_recurrent,
    s4_recurrent_backward,
)
from ref.mixers.s4.s4d import (
    s4d_convolutional,
    s4d_convolutional_backward,
    s4d_discrete,
    s4d_kernel,
    s4d_kernel_backward,
    s4d_recurrent,
    s4d_recurrent_backward,
)
from ref.mixers.s4.ssm import ssm_kernel_generating, ssm_kernel_powers, ssm_recurrence

FORMS = {
    "s4d": {
        "convolutional": (s4d_convolutional, s4d_convolutional_backward),
        "recurrent": (s4d_recurrent, s4d_recurrent_backward),
    },
    "s4": {
        "convolutional": (s4_convolutional, s4_convolutional_backward),
        "recurrent": (s4_recurrent, s4_recurrent_backward),
    },
}

__all__ = [
    "FORMS",
    "S4D_INITS",
    "causal_conv",
    "causal_conv_backward",
    "discretize_dense",
    "discretize_diag",
    "discretize_diag_backward",
    "hippo_legs",
    "hippo_legs_dplr",
    "hippo_legs_nplr",
    "s4_convolutional",
    "s4_convolutional_backward",
    "s4_discrete",
    "s4_init",
    "s4_kernel",
    "s4_kernel_backward",
    "s4_recurrent",
    "s4_recurrent_backward",
    "s4d_convolutional",
    "s4d_convolutional_backward",
    "s4d_discrete",
    "s4d_init",
    "s4d_kernel",
    "s4d_kernel_backward",
    "s4d_recurrent",
    "s4d_recurrent_backward",
    "ssm_kernel_generating",
    "ssm_kernel_powers",
    "ssm_recurrence",
]
