"""Titans' neural long-term memory (Behrouz, Zhong and Mirrokni, 2025, arXiv 2501.00663), two forms.

    G_t = grad_M ||M_a(k_t) - v_t||^2      (the anchor M_a: M_(t-1), or the memory entering the chunk)
    S_t = eta_t S_(t-1) - theta_t G_t      (momentary surprise with momentum)
    M_t = (1 - alpha_t) M_(t-1) + S_t      (forgetting)
    y_t = M_t(q_t)

Layout as flash-linear-attention: q, k (B, T, H, K); v, y (B, T, H, V); gates eta, theta, alpha
(B, T, H) in [0, 1]; the memory a tuple of L weight arrays (B, H, out_l, in_l), K -> ... -> V,
SiLU between layers (L = 1: a linear memory (B, H, V, K)); the surprise has the memory's shapes.

* ``memory``: the MLP memory, its inner loss and gradient, and the backward of that gradient.
* ``titans_sequential``: the token loop; ``chunk_size = 1`` is the fully sequential update, a
  larger one takes each chunk's gradients at the memory entering the chunk.
* ``titans_chunked``: the same chunk-start gradients in one batch per chunk, momentum and
  forgetting as decay matrices (matmuls), the linear memory's read in the attention-like form.

Both return ``y, final_memory, final_surprise, cache``; ``*_backward(dy, dfinal_memory,
dfinal_surprise, cache)`` returns ``dq, dk, dv, deta, dtheta, dalpha, dinitial_memory,
dinitial_surprise``: backprop through the test-time learning, second-order terms included.
"""

from ref.mixers.titans.chunked import titans_chunked, titans_chunked_backward
from ref.mixers.titans.memory import (
    inner_grad,
    inner_grad_backward,
    inner_loss,
    memory_forward,
    memory_forward_backward,
)
from ref.mixers.titans.sequential import titans_sequential, titans_sequential_backward

FORMS = {
    "sequential": (titans_sequential, titans_sequential_backward),
    "chunked": (titans_chunked, titans_chunked_backward),
}

__all__ = [
    "FORMS",
    "inner_grad",
    "inner_grad_backward",
    "inner_loss",
    "memory_forward",
    "memory_forward_backward",
    "titans_chunked",
    "titans_chunked_backward",
    "titans_sequential",
    "titans_sequential_backward",
]
