"""Linear attention (Katharopoulos et al., 2020), unnormalised and normalised.

Unnormalised: GLA (``ref.mixers.gla``) without gates, a state that only accumulates:

    S_t = S_{t-1} + k_t^T v_t,      o_t = scale * q_t S_t                              (1)

Normalised (flash-linear-attention's ``normalize=True``): the output is divided by the same
attention applied to a value of 1, so it becomes a weighted average of the values:

    z_t = z_{t-1} + k_t                                                                (2)
    o_t = (scale * q_t S_t) / (scale * q_t . z_t + 1e-10)                               (3)

The state is the pair (S, z), S (B, H, K, V) and z (B, H, K); 1e-10 is FLA's constant. The
denominator scale * q_t . z_t is itself unnormalised linear attention, with v = 1 (a value dim
of one) and initial state z_{-1}, so each normalised form is two unnormalised ones of the same
form and a division. Its backward composes their backward passes with the quotient rule: with
n_t the numerator and d_t the denominator of (3),

    dn_t = do_t / d_t,      dd_t = -(do_t . n_t) / d_t^2 = -(do_t . o_t) / d_t          (4)

then dq, dk collect the gradients of both attentions, dv that of the numerator alone.

**The normaliser can vanish.** For unconstrained q and k, q_t . z_t has either sign and
passes near zero, where (3) blows up (1e-10 only avoids 0/0). Linear attention is meant for
positive features: q = phi(x W_q), k = phi(x W_k) with phi(x) = elu(x) + 1 > 0 (Katharopoulos
et al.; FLA's layers use such feature maps), which makes every q_t . z_t > 0. The tests use
elu + 1 features for the normalised variant for this reason.

Layout as FLA: q, k (B, T, H, K); v, o (B, T, H, V); scale defaults to K^-0.5. Every form
returns ``o, ht, cache``; the unnormalised backward passes return ``dq, dk, dv,
dinitial_state``, the normalised ones the same with pairs (dS, dz) for the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ref import checks
from ref.mixers.gla import (
    gla_chunked,
    gla_chunked_backward,
    gla_parallel,
    gla_parallel_backward,
    gla_recurrent,
    gla_recurrent_backward,
)
from ref.mixers.gla._inputs import GLACache

__all__ = [
    "EPS",
    "FORMS",
    "NORMALIZED_FORMS",
    "linear_attention_recurrent",
    "linear_attention_recurrent_backward",
    "linear_attention_parallel",
    "linear_attention_parallel_backward",
    "linear_attention_chunked",
    "linear_attention_chunked_backward",
    "normalized_linear_attention_recurrent",
    "normalized_linear_attention_recurrent_backward",
    "normalized_linear_attention_parallel",
    "normalized_linear_attention_parallel_backward",
    "normalized_linear_attention_chunked",
    "normalized_linear_attention_chunked_backward",
]

EPS = 1e-10  # added to the denominator of (3), as FLA does


# ---------------------------------------------------------------- unnormalised: GLA without gates


def _without_gate_gradient(grads):
    dq, dk, dv, _, dh0 = grads  # the gate gradient is None: no gate was given
    return dq, dk, dv, dh0


def linear_attention_recurrent(q, k, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """(1) by a loop over time.

    q, k (B, T, H, K); v (B, T, H, V); scale (default K^-0.5); initial_state (B, H, K, V) or
    None. Returns ``o`` (B, T, H, V), the final state ``ht`` (B, H, K, V) and the cache (GLA's).
    """
    return gla_recurrent(q, k, v, None, scale=scale, initial_state=initial_state, backend=backend)


def linear_attention_recurrent_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(gla_recurrent_backward(do, dht, cache))


def linear_attention_parallel(q, k, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """(1) as causally masked attention without softmax; arguments as ``linear_attention_recurrent``."""
    return gla_parallel(q, k, v, None, scale=scale, initial_state=initial_state, backend=backend)


def linear_attention_parallel_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(gla_parallel_backward(do, dht, cache))


def linear_attention_chunked(q, k, v, *, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"):
    """(1) by chunks; arguments as ``linear_attention_recurrent``."""
    return gla_chunked(q, k, v, None, scale=scale, initial_state=initial_state, chunk_size=chunk_size, backend=backend)


def linear_attention_chunked_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``."""
    return _without_gate_gradient(gla_chunked_backward(do, dht, cache))


FORMS = {
    "recurrent": (linear_attention_recurrent, linear_attention_recurrent_backward),
    "parallel": (linear_attention_parallel, linear_attention_parallel_backward),
    "chunked": (linear_attention_chunked, linear_attention_chunked_backward),
}


# ---------------------------------------------------------------- normalised: two of them and a quotient


@dataclass(frozen=True)
class NormalizedCache:
    """The caches of the numerator and denominator attentions, the output and the denominator."""

    numerator: GLACache  # of (1): q, k, v, S_{-1}
    denominator: GLACache  # of (2)-(3)'s denominator: q, k, v = 1, z_{-1}
    o: np.ndarray  # (B, T, H, V)
    d: np.ndarray  # (B, T, H): scale * q_t . z_t + EPS
    form: str  # which form made it, so that the right backward is used


def _state_pair(pair, name, B, H, K, V, dtype, allow_none=False):
    """Validate a state pair (S (B, H, K, V), z (B, H, K)); return it as a tuple, or None.

    ``allow_none``: members may be None (zero), as for cotangents.
    """
    if pair is None:
        return None
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}: expected a pair (S (B, H, K, V), z (B, H, K)), got {type(pair).__name__}")
    out = []
    for i, (x, dims, shape) in enumerate(zip(pair, ("(B, H, K, V)", "(B, H, K)"), ((B, H, K, V), (B, H, K)))):
        if x is None and allow_none:
            out.append(None)
            continue
        x = checks.float_array(x, f"{name}[{i}]", ndim=len(shape), dims=dims)
        checks.same_shape(x, f"{name}[{i}]", shape, dims, "from q and v")
        checks.same_dtype(x, f"{name}[{i}]", dtype, "the dtype of q")
        checks.finite(x, f"{name}[{i}]")
        out.append(x)
    return tuple(out)


def _normalized_forward(form, q, k, v, scale, initial_state, backend, **extra):
    """(1)-(3) with the unnormalised ``form`` twice: numerator with v, denominator with v = 1."""
    forward = FORMS[form][0]
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    v = checks.float_array(v, "v", ndim=4, dims="(B, T, H, V)")
    B, T, H, K = q.shape
    V = v.shape[3]
    pair = _state_pair(initial_state, "initial_state", B, H, K, V, q.dtype)
    S0, z0 = (None, None) if pair is None else pair
    n, ST, num_cache = forward(q, k, v, scale=scale, initial_state=S0, backend=backend, **extra)  # (1): (B, T, H, V)
    ones = np.ones((B, T, H, 1), q.dtype)  # v = 1: (B, T, H, 1)
    z_in = None if z0 is None else z0[..., None]  # (B, H, K, 1)
    qz, zT, den_cache = forward(q, k, ones, scale=scale, initial_state=z_in, backend=backend, **extra)  # (2)
    d = qz[..., 0] + EPS  # (3): (B, T, H)
    o = n / d[..., None]  # (3): (B, T, H, V)
    cache = NormalizedCache(numerator=num_cache, denominator=den_cache, o=o, d=d, form=form)
    return o, (ST, zT[..., 0]), cache


def _normalized_backward(form, do, dht, cache: NormalizedCache):
    """(4), then the two unnormalised backward passes of ``form``, summed."""
    if cache.form != form:
        raise ValueError(
            f"cache: expected the cache of normalized_linear_attention_{form}, got that of the {cache.form} form"
        )
    backward = FORMS[form][1]
    B, T, H, V = cache.o.shape
    K = cache.numerator.q.shape[3]
    dtype = cache.o.dtype
    do = checks.float_array(do, "do", ndim=4, dims="(B, T, H, V)")
    checks.same_shape(do, "do", (B, T, H, V), "(B, T, H, V)", "the shape of o")
    checks.same_dtype(do, "do", dtype, "the dtype of o")
    dST, dzT = (None, None) if dht is None else _state_pair(dht, "dht", B, H, K, V, dtype, allow_none=True)

    dn = do / cache.d[..., None]  # (4): (B, T, H, V)
    dd = -(do * cache.o).sum(axis=-1) / cache.d  # (4): (B, T, H)
    dq, dk, dv, dS0 = backward(dn, dST, cache.numerator)
    dz_in = None if dzT is None else dzT[..., None]  # (B, H, K, 1)
    dq_d, dk_d, _, dz0 = backward(dd[..., None], dz_in, cache.denominator)  # the gradient of v = 1 is not needed
    dh0 = None if dS0 is None else (dS0, dz0[..., 0])
    return dq + dq_d, dk + dk_d, dv, dh0


def normalized_linear_attention_recurrent(q, k, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """(1)-(3) by loops over time; q and k should be positive features (see the module docstring).

    q, k (B, T, H, K); v (B, T, H, V); scale (default K^-0.5); initial_state a pair
    (S (B, H, K, V), z (B, H, K)) or None. Returns ``o`` (B, T, H, V), the final state pair
    ``(S_T, z_T)`` and the cache.
    """
    return _normalized_forward("recurrent", q, k, v, scale, initial_state, backend)


def normalized_linear_attention_recurrent_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``: dht and dinitial_state are pairs (dS, dz);
    either member of dht may be None (zero); dinitial_state is None without an initial state."""
    return _normalized_backward("recurrent", do, dht, cache)


def normalized_linear_attention_parallel(q, k, v, *, scale=None, initial_state=None, backend: str = "numpy"):
    """(1)-(3) as masked attention; arguments as ``normalized_linear_attention_recurrent``."""
    return _normalized_forward("parallel", q, k, v, scale, initial_state, backend)


def normalized_linear_attention_parallel_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``, as ``normalized_linear_attention_recurrent_backward``."""
    return _normalized_backward("parallel", do, dht, cache)


def normalized_linear_attention_chunked(
    q, k, v, *, scale=None, initial_state=None, chunk_size: int = 64, backend: str = "numpy"
):
    """(1)-(3) by chunks; arguments as ``normalized_linear_attention_recurrent``."""
    return _normalized_forward("chunked", q, k, v, scale, initial_state, backend, chunk_size=chunk_size)


def normalized_linear_attention_chunked_backward(do, dht, cache):
    """Gradients ``(dq, dk, dv, dinitial_state)``, as ``normalized_linear_attention_recurrent_backward``."""
    return _normalized_backward("chunked", do, dht, cache)


NORMALIZED_FORMS: dict[str, tuple[Callable, Callable]] = {
    "recurrent": (normalized_linear_attention_recurrent, normalized_linear_attention_recurrent_backward),
    "parallel": (normalized_linear_attention_parallel, normalized_linear_attention_parallel_backward),
    "chunked": (normalized_linear_attention_chunked, normalized_linear_attention_chunked_backward),
}
