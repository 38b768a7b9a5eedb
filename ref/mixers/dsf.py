"""The Dynamical Systems Framework (DSF): attention, SSMs and RNNs as one linear recurrence.

Paper: Sieber, Amo Alonso, Didier, Zeilinger, Orvieto, "Understanding the differences in
Foundation Models: Attention, State Space Models, and Recurrent Neural Networks" (arXiv
2405.15731; code IntelligentControlSystems/dsf-mqar). Sec. 3 writes every mixer as a linear,
structured, time-varying system; Sec. 4 compares the models in that common form.

**The recurrence.** Per system (one per batch element, or per batch element and head):

    h_t = Λ_t h_{t-1} + B_t u_t,        h_{-1} = the initial state (zeros if None)        (1)
    y_t = C_t h_t + D_t u_t                                                                (2)

u_t (d,) the input, h_t (N,) the state, y_t (p,) the output; Λ_t (N, N) is diagonal for every
model here except S4D, whose complex modes become 2 x 2 real blocks. The paper writes N = n d, the
"state expansion" n per input channel. Everything else, gates, normalisers and discretisation
included, only decides how (Λ_t, B_t, C_t, D_t) are computed. The matrices may depend on the
input, at t or anywhere in the past; (1)-(2) stay linear in u for given matrices.

``dsf_recurrent(u, Lambda, B, C, D=None, *, initial_state=None)`` runs (1)-(2) as a loop over time.
Layout: u (Bn, T, d); Lambda (Bn, T, N) diagonal or (Bn, T, N, N) full; B (Bn, T, N, d);
C (Bn, T, p, N); D (Bn, T, p, d) or None; initial_state (Bn, N). A matrix with a time axis of
length 1 is time-invariant: it serves every step (LTI models: S4D, retention's decay), and its
gradient is summed over time. (Bn is the batch size; B is the input matrix, as in the paper.)
It returns ``y`` (Bn, T, p), the final state ``ht`` (Bn, N) and the cache.

**Backward** (``dsf_recurrent_backward(dy, dht, cache)``). With g_t the total cotangent of h_t,
carried backwards in time:

    g_t = C_t^T dy_t + Λ_{t+1}^T g_{t+1},      g_{T-1} also gets dht                      (3)
    dΛ_t = g_t ⊙ h_{t-1}  (diagonal)  or  g_t h_{t-1}^T  (full)                            (4)
    dB_t = g_t u_t^T,   du_t = B_t^T g_t + D_t^T dy_t,   dC_t = dy_t h_t^T,   dD_t = dy_t u_t^T
    dinitial_state = Λ_0^T g_0

``dsf_kernel(Lambda, B, C, D, T=...)`` writes the same map as one matrix, y_t = sum_{s<=t} Φ_ts u_s
with Φ_ts = C_t Λ_t ... Λ_{s+1} B_s (+ D_t for s = t): the "attention matrix" of any DSF.

**The mixers as systems.** Each ``<mixer>_system`` takes the mixer's own inputs (its layout and
conventions) and returns a ``System``: the arrays of (1)-(2) and two maps back to the mixer's
output and state; ``dsf_run(system)`` runs it. The builders only re-express a mixer (they have
no backward of their own): (3)-(4) give the gradients of u and of the state directly, and those of
q, k and the gates by contracting dC, dB and dΛ with the structure below (as the tests do).
Attention-like mixers get one system per (batch, head) with u_t = v_t and the state S (K, V)
flattened to N = K V (index k V + v):

    linear attention     Λ_t = I                     B_t = k_t ⊗ I_V    C_t = scale q_t^T ⊗ I_V
    retention            Λ_t = γ_h I  (time-invariant)        (B_t, C_t as linear attention)
    simple GLA           Λ_t = exp(g_t) I
    GLA                  Λ_t = diag(exp(gk_t)) ⊗ I_V
    LightNet             GLA's with the keys k'_t and gates g_t of its log-cumsum-exp: they depend
                         on the whole prefix of the key logits, not on x_t alone
    normalised linear    two systems, the numerator (linear attention) and the denominator
      attention          (linear attention with v = 1, i.e. d = 1, N = K), and a division outside:
                         o_t = y_num,t / (y_den,t + EPS). The quotient of two outputs is not an
                         output of (1)-(2): a normaliser is not a linear readout. It becomes one
                         by dividing the state instead: h_t = S_t / η_t (η_t = scale q_t . z_t +
                         EPS, η_{-1} = 1) obeys (1) with Λ_t = (η_{t-1} / η_t) I, B_t = (k_t / η_t)
                         ⊗ I_V and C_t = scale q_t^T ⊗ I_V: the normaliser turns into a state
                         transition that depends on the input, as S6's does
                         (``normalized_linear_attention_system``).

The SSMs:

    S6 (selective scan)  one system per batch element, u_t the D channels, N = D N_s (index d N_s + n):
                         Λ_t = diag(exp(Δ_t[d] A[d, n])),  B_t = diag(Δ_t) ⊗ b_t  (B_t[(d, n), e] =
                         [d = e] Δ_t[d] b_t[n]),  C_t = I_D ⊗ c_t^T,  D_t = diag(D)
    SSD (Mamba-2)        one system per (batch, head), u_t = X_t (p), N = p n:
                         Λ_t = exp(A_t) I,  B_t = I_p ⊗ B_t,  C_t = I_p ⊗ C_t^T
    S4D                  one system per (batch, channel), d = p = 1, N the real state size:
                         each complex mode Ā_m = a + i b is the 2 x 2 block [[a, -b], [b, a]] acting
                         on (Re x_m, Im x_m); B = (Re B̄_m, Im B̄_m); C = (2 Re C_m, -2 Im C_m), since
                         y = 2 Re(C x) (the conjugate modes are implicit); all time-invariant.

S6's output gate silu(z) multiplies y afterwards (it is not part of (1)-(2); ``selective_scan_system``
takes no z). The identity exp(-α softplus(f)) = sigmoid(-f)^α makes S6's Λ_t with A = -α the
"reversed sigmoid" forget gate of the paper's qLSTM variant.

**Softmax attention has no finite-state form.** With u = v, softmax attention is the linear map
y_t = sum_{s<=t} P_ts v_s, P_ts = softmax_s(scale q_t . k_s). A system (1)-(2) of state size N
passes everything the inputs u_0..u_{τ-1} contribute to the outputs at t >= τ through h_{τ-1}:
the block Φ[t >= τ, s < τ] of its kernel factors as (a map from R^N) x (a map to R^N), so its
rank is at most N for every cut τ. For softmax attention the block is P[t >= τ, s < τ] ⊗ I_V, and
P's block has full rank for generic queries and keys (exp(q . k) is a strictly positive definite
kernel; its Taylor series has infinitely many terms, the paper's Sec. 4 argument). So
N >= V min(τ, T - τ) for every τ: the state must grow with T. It does, in the KV cache:
``softmax_attention_system`` is the DSF with N = T V (Λ = I, B_t = e_t ⊗ I_V writes v_t into slot t,
C_t = P_t ⊗ I_V reads the slots with this step's softmax weights, computed from every cached key).

**When do linear attention and a selective SSM coincide?** (Sec. 4, the comparison of linear
attention with S6.) Put both in the form above with S6's channel d in the role of the value index
and its state index n in the role of the key index (N = K V = D N_s):

(a) Gated. Every S6 is a GLA with one head per channel: channel d alone is a GLA head with K = N_s
    and V = 1, q_t = c_t, k_t = Δ_t[d] b_t, v_t = u_t[d], gk_t = Δ_t[d] A[d] (``selective_scan_as_gla``
    with heads = D). Sharing one state expansion across V channels, one state entry per (key, value)
    pair (N = K V per head), asks for more: GLA's Λ_t = diag(exp(gk_t)) ⊗ I_V, B_t and C_t do not
    depend on the value index, so Δ_t[d], A[d], b_t[d] and c_t[d] must be the same for the V channels
    of a head (mamba_ssm's grouped B and C, with one Δ_t per group):

        S6 with Δ_t, A, b_t, c_t shared by the V channels of each group  ==  GLA with D / V heads,
        gk_t = Δ_t A, k_t = Δ_t b_t, q_t = c_t, v_t = u_t, scale 1       (``selective_scan_as_gla``)

    Conversely a GLA head is an S6 iff its log-gate is rank one in (time, key): gk_t[k] = Δ_t A[k]
    with Δ_t > 0, A < 0 (``gla_as_selective_scan``; the S6 has b_t = k_t / Δ_t, c_t = scale q_t).
    Simple GLA and retention always are (A = -1, Δ_t = -g_t, for gates g_t < 0); GLA's general gate,
    any function of (t, k), is not: that is the difference between the two kinds of decay. Linear
    attention (Λ = I) is the S6 with A = 0, which S6 (A = -exp(A_log) < 0) only approaches as a limit.

(b) Normalised. In the single-system form above, normalised linear attention has
    Λ_t = (η_{t-1} / η_t) I, B_t = (k_t / η_t) ⊗ I_V, C_t = scale q_t^T ⊗ I_V. An S6 with one shared
    Δ_t and a scalar A per head (Mamba-2's SSD) has Λ_t = exp(Δ_t A) I <= I. They coincide iff

        η_{t-1} / η_t = exp(Δ_t A),  i.e. the normaliser never decreases; then the SSD has
        A_t = log(η_{t-1} / η_t), B_t = k_t / η_t, C_t = scale q_t, X_t = v_t
                                                                (``normalized_attention_as_ssd``)

    and conversely every SSD is linear attention divided by the increasing normaliser
    η_t = exp(-sum_{r<=t} A_r), with keys k_t = η_t B_t and queries C_t (``ssd_as_normalized_attention``).
    FLA's normaliser η_t = scale q_t . z_t moves with the query and may decrease (Λ_t > I); the
    dsf-mqar code's normalised attention divides by η_t = exp(w . x_t), which may too. The SSM
    form is also the numerically sound one: exp(-sum A_r) overflows once the decays add up to
    more than about 709 (float64), Λ_t never does.

qLSTM and RG-LRU (the paper's RNNs) have no mixer in ``ref`` yet, so no system here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ref import checks
from ref.backend import resolve
from ref.mixers.attention._inputs import check_scale
from ref.mixers.gla._inputs import check_inputs as check_gla_inputs
from ref.mixers.lightnet import lightnet_gate
from ref.mixers.linear_attention import EPS
from ref.mixers.retention import default_gamma
from ref.mixers.s4._inputs import check_signal, check_skip
from ref.mixers.s4.s4d import s4d_discrete
from ref.mixers.selective_scan._inputs import as_BLDN, discretize
from ref.mixers.selective_scan._inputs import check_inputs as check_ss_inputs
from ref.mixers.simple_gla import per_key_gate
from ref.mixers.ssd import check_inputs as check_ssd_inputs

__all__ = [
    "DSFCache",
    "System",
    "dsf_recurrent",
    "dsf_recurrent_backward",
    "dsf_kernel",
    "dsf_run",
    "dsf_run_normalized",
    "linear_attention_system",
    "normalized_linear_attention_systems",
    "normalized_linear_attention_system",
    "retention_system",
    "simple_gla_system",
    "gla_system",
    "lightnet_system",
    "selective_scan_system",
    "ssd_system",
    "s4d_system",
    "softmax_attention_system",
    "selective_scan_as_gla",
    "gla_as_selective_scan",
    "normalized_attention_as_ssd",
    "ssd_as_normalized_attention",
]


# ---------------------------------------------------------------- the recurrence (1)-(4)


@dataclass(frozen=True)
class DSFCache:
    """What ``dsf_recurrent_backward`` needs: the inputs and every state."""

    u: np.ndarray  # (Bn, T, d)
    Lambda: np.ndarray  # (Bn, T|1, N) or (Bn, T|1, N, N)
    B: np.ndarray  # (Bn, T|1, N, d)
    C: np.ndarray  # (Bn, T|1, p, N)
    D: np.ndarray | None  # (Bn, T|1, p, d)
    initial_state: np.ndarray | None  # (Bn, N)
    h: np.ndarray  # (Bn, T, N): h_0 .. h_{T-1}


def _check_matrix(X, name, Bn, T, shape, dims, dtype):
    """A per-step matrix (Bn, T or 1, *shape): exact batch and trailing shape, time T or 1."""
    X = checks.float_array(X, name, ndim=2 + len(shape), dims=dims)
    if X.shape[0] != Bn or X.shape[1] not in (1, T) or X.shape[2:] != tuple(shape):
        want = ", ".join(str(n) for n in (Bn, f"{T} or 1", *shape))
        raise ValueError(f"{name}: expected shape {dims} = ({want}) (from u and Lambda), got {X.shape}")
    checks.same_dtype(X, name, dtype, "the dtype of u")
    return checks.finite(X, name)


def _check_system(u, Lambda, B, C, D, initial_state):
    u = checks.float_array(u, "u", ndim=3, dims="(Bn, T, d)")
    Bn, T, d = u.shape
    checks.nonempty_time(T, "u")
    checks.finite(u, "u")
    Lambda = checks.float_array(Lambda, "Lambda")
    if Lambda.ndim not in (3, 4) or (Lambda.ndim == 4 and Lambda.shape[2] != Lambda.shape[3]):
        raise ValueError(
            f"Lambda: expected (Bn, T, N) (diagonal) or (Bn, T, N, N) (full), got shape {Lambda.shape}"
        )
    N = Lambda.shape[2]
    dims = "(Bn, T, N)" if Lambda.ndim == 3 else "(Bn, T, N, N)"
    Lambda = _check_matrix(Lambda, "Lambda", Bn, T, Lambda.shape[2:], dims, u.dtype)
    B = _check_matrix(B, "B", Bn, T, (N, d), "(Bn, T, N, d)", u.dtype)
    C = checks.float_array(C, "C", ndim=4, dims="(Bn, T, p, N)")
    p = C.shape[2]
    C = _check_matrix(C, "C", Bn, T, (p, N), "(Bn, T, p, N)", u.dtype)
    if D is not None:
        D = _check_matrix(D, "D", Bn, T, (p, d), "(Bn, T, p, d)", u.dtype)
    if initial_state is not None:
        initial_state = checks.float_array(initial_state, "initial_state", ndim=2, dims="(Bn, N)")
        checks.same_shape(initial_state, "initial_state", (Bn, N), "(Bn, N)", "from u and Lambda")
        checks.same_dtype(initial_state, "initial_state", u.dtype, "the dtype of u")
        checks.finite(initial_state, "initial_state")
    return u, Lambda, B, C, D, initial_state


def _at(X, t):
    """The matrix of step t; a time-invariant one (time axis of length 1) serves every step."""
    return X[:, t if X.shape[1] > 1 else 0]


def _matvec(M, x):
    """M x for a batch: (Bn, m, n) @ (Bn, n) -> (Bn, m)."""
    return np.matmul(M, x[..., None])[..., 0]


def _outer(a, b):
    """a b^T for a batch: (Bn, m), (Bn, n) -> (Bn, m, n)."""
    return a[..., :, None] * b[..., None, :]


def _transition(Lam, h, transpose=False):
    """Λ h (or Λ^T h): elementwise for a diagonal Λ (Bn, N), a matrix product for a full one."""
    if Lam.ndim == 2:
        return Lam * h
    return _matvec(np.swapaxes(Lam, -1, -2) if transpose else Lam, h)


def dsf_recurrent(u, Lambda, B, C, D=None, *, initial_state=None, backend: str = "numpy"):
    """(1)-(2) by a loop over time. Shapes in the module docstring; returns ``y, ht, cache``."""
    resolve(backend, ("numpy",), "dsf_recurrent")
    u, Lambda, B, C, D, h0 = _check_system(u, Lambda, B, C, D, initial_state)
    Bn, T, _ = u.shape
    N, p = Lambda.shape[2], C.shape[2]
    h = np.empty((Bn, T, N), u.dtype)
    y = np.empty((Bn, T, p), u.dtype)
    state = np.zeros((Bn, N), u.dtype) if h0 is None else h0
    for t in range(T):
        state = _transition(_at(Lambda, t), state) + _matvec(_at(B, t), u[:, t])  # (1)
        h[:, t] = state
        y[:, t] = _matvec(_at(C, t), state)  # (2)
        if D is not None:
            y[:, t] += _matvec(_at(D, t), u[:, t])  # (2)
    cache = DSFCache(u=u, Lambda=Lambda, B=B, C=C, D=D, initial_state=h0, h=h)
    return y, state.copy(), cache


def _add_at(dX, t, value):
    """Accumulate the gradient of step t's matrix (summed over time if it is time-invariant)."""
    dX[:, t if dX.shape[1] > 1 else 0] += value


def dsf_recurrent_backward(dy, dht, cache: DSFCache):
    """Gradients ``(du, dLambda, dB, dC, dD, dinitial_state)`` by (3)-(4), each shaped like its input
    (None for an absent D or initial state). ``dy`` (Bn, T, p); ``dht`` (Bn, N) or None (zero)."""
    u, Lambda, B, C, D, h0, h = cache.u, cache.Lambda, cache.B, cache.C, cache.D, cache.initial_state, cache.h
    Bn, T, _ = u.shape
    N, p = h.shape[2], C.shape[2]
    dy = checks.float_array(dy, "dy", ndim=3, dims="(Bn, T, p)")
    checks.same_shape(dy, "dy", (Bn, T, p), "(Bn, T, p)", "the shape of y")
    checks.same_dtype(dy, "dy", u.dtype, "the dtype of y")
    if dht is not None:
        dht = checks.float_array(dht, "dht", ndim=2, dims="(Bn, N)")
        checks.same_shape(dht, "dht", (Bn, N), "(Bn, N)", "the shape of ht")
        checks.same_dtype(dht, "dht", u.dtype, "the dtype of ht")

    du = np.empty_like(u)
    dLambda, dB, dC = np.zeros_like(Lambda), np.zeros_like(B), np.zeros_like(C)
    dD = None if D is None else np.zeros_like(D)
    g = np.zeros((Bn, N), u.dtype) if dht is None else dht.copy()  # dht enters at t = T-1
    for t in range(T - 1, -1, -1):
        g = g + _matvec(np.swapaxes(_at(C, t), -1, -2), dy[:, t])  # (3): + C_t^T dy_t
        h_prev = h[:, t - 1] if t > 0 else (np.zeros((Bn, N), u.dtype) if h0 is None else h0)
        _add_at(dLambda, t, g * h_prev if Lambda.ndim == 3 else _outer(g, h_prev))  # (4)
        _add_at(dB, t, _outer(g, u[:, t]))  # (4)
        _add_at(dC, t, _outer(dy[:, t], h[:, t]))  # (4)
        du[:, t] = _matvec(np.swapaxes(_at(B, t), -1, -2), g)  # (4): B_t^T g_t
        if D is not None:
            _add_at(dD, t, _outer(dy[:, t], u[:, t]))  # (4)
            du[:, t] += _matvec(np.swapaxes(_at(D, t), -1, -2), dy[:, t])  # (4): + D_t^T dy_t
        g = _transition(_at(Lambda, t), g, transpose=True)  # (3): Λ_t^T g_t, carried to t-1
    return du, dLambda, dB, dC, dD, (None if h0 is None else g)


def dsf_kernel(Lambda, B, C, D=None, *, T: int):
    """The matrix form of (1)-(2) from a zero state: ``Phi`` (Bn, T, p, T, d) with
    y_t = sum_s Phi[:, t, :, s, :] u_s, Phi_ts = C_t Λ_t ... Λ_{s+1} B_s for s < t, C_t B_t + D_t for
    s = t, 0 for s > t. O(T^2 N d) work: an analysis tool (attention matrices, ranks), no backward."""
    T = checks.positive_int(T, "T")
    B = checks.float_array(B, "B", ndim=4, dims="(Bn, T, N, d)")
    Bn, _, N, d = B.shape
    u = np.zeros((Bn, T, d), B.dtype)  # only for the shapes and checks of _check_system
    _, Lambda, B, C, D, _ = _check_system(u, Lambda, B, C, D, None)
    p = C.shape[2]
    Phi = np.zeros((Bn, T, p, T, d), B.dtype)
    for s in range(T):
        M = _at(B, s)  # (Bn, N, d): the state each unit input at s leaves behind
        for t in range(s, T):
            if t > s:
                Lam = _at(Lambda, t)
                M = Lam[..., None] * M if Lam.ndim == 2 else np.matmul(Lam, M)  # Λ_t M
            Phi[:, t, :, s, :] = np.matmul(_at(C, t), M)  # C_t Λ_t ... Λ_{s+1} B_s
        if D is not None:
            Phi[:, s, :, s, :] += _at(D, s)
    return Phi


# ---------------------------------------------------------------- systems built from the mixers


@dataclass(frozen=True)
class System:
    """A mixer written as (1)-(2): the arrays ``dsf_recurrent`` takes, and the maps from its results
    back to the mixer's own layout (``output``: y (Bn, T, p) -> the mixer's output; ``state``:
    h (Bn, N) -> the mixer's state)."""

    u: np.ndarray  # (Bn, T, d)
    Lambda: np.ndarray  # (Bn, T|1, N) diagonal or (Bn, T|1, N, N) full
    B: np.ndarray  # (Bn, T|1, N, d)
    C: np.ndarray  # (Bn, T|1, p, N)
    D: np.ndarray | None  # (Bn, T|1, p, d)
    initial_state: np.ndarray | None  # (Bn, N)
    output: Callable[[np.ndarray], object]
    state: Callable[[np.ndarray], object]


def dsf_run(system: System):
    """Run a built system by ``dsf_recurrent``; return the mixer's output and final state, in its layout."""
    y, ht, _ = dsf_recurrent(system.u, system.Lambda, system.B, system.C, system.D,
                             initial_state=system.initial_state)
    return system.output(y), system.state(ht)


def _heads_to_batch(x):
    """(B, T, H, ...) -> (B H, T, ...): one system per (batch, head)."""
    Bn, T, H = x.shape[:3]
    return np.ascontiguousarray(np.moveaxis(x, 2, 1)).reshape(Bn * H, T, *x.shape[3:])


def _batch_to_heads(y, Bn, H):
    """(B H, T, ...) -> (B, T, H, ...)."""
    return np.ascontiguousarray(np.moveaxis(y.reshape(Bn, H, *y.shape[1:]), 1, 2))


def _key_input_matrix(k, V):
    """B_t = k_t ⊗ I_V: (Bn, T, K) -> (Bn, T, K V, V), B_t[(i, w), v] = k_t[i] [w = v]."""
    Bn, T, K = k.shape
    return np.einsum("btk,wv->btkwv", k, np.eye(V, dtype=k.dtype)).reshape(Bn, T, K * V, V)


def _query_output_matrix(q, V, scale):
    """C_t = scale q_t^T ⊗ I_V: (Bn, T, K) -> (Bn, T, V, K V), C_t[v, (i, w)] = scale q_t[i] [v = w]."""
    Bn, T, K = q.shape
    return scale * np.einsum("btk,vw->btvkw", q, np.eye(V, dtype=q.dtype)).reshape(Bn, T, V, K * V)


def _attention_like(q, k, v, decay, scale, S0):
    """The system of S_t = decay_t ⊙ S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, per (batch, head).

    q, k (B, T, H, K); v (B, T, H, V); decay (B H, T|1, K V) the diagonal of Λ_t; S0 (B, H, K, V) or None.
    """
    Bn, T, H, K = q.shape
    V = v.shape[3]
    return System(
        u=_heads_to_batch(v),  # (B H, T, V)
        Lambda=decay,
        B=_key_input_matrix(_heads_to_batch(k), V),  # (B H, T, K V, V)
        C=_query_output_matrix(_heads_to_batch(q), V, scale),  # (B H, T, V, K V)
        D=None,
        initial_state=None if S0 is None else S0.reshape(Bn * H, K * V),  # S (K, V) -> index k V + v
        output=lambda y: _batch_to_heads(y, Bn, H),  # (B, T, H, V)
        state=lambda h: h.reshape(Bn, H, K, V),
    )


def gla_system(q, k, v, gk=None, *, scale=None, initial_state=None) -> System:
    """GLA (``ref.mixers.gla``) as (1)-(2): Λ_t = diag(exp(gk_t)) ⊗ I_V, B_t = k_t ⊗ I_V,
    C_t = scale q_t^T ⊗ I_V, u_t = v_t; gk None: Λ = I (linear attention). Arguments as ``gla_recurrent``."""
    q, k, v, gk, scale, S0 = check_gla_inputs(q, k, v, gk, scale, initial_state)
    Bn, T, H, K = q.shape
    V = v.shape[3]
    if gk is None:
        decay = np.ones((Bn * H, 1, K * V), q.dtype)  # Λ = I, time-invariant
    else:
        decay = np.repeat(np.exp(_heads_to_batch(gk)), V, axis=-1)  # diag(exp(gk_t)) ⊗ I_V: (B H, T, K V)
    return _attention_like(q, k, v, decay, scale, S0)


def linear_attention_system(q, k, v, *, scale=None, initial_state=None) -> System:
    """Unnormalised linear attention as (1)-(2): Λ_t = I. Arguments as ``linear_attention_recurrent``."""
    return gla_system(q, k, v, None, scale=scale, initial_state=initial_state)


def simple_gla_system(q, k, v, g=None, *, scale=None, initial_state=None) -> System:
    """Simple GLA as (1)-(2): Λ_t = exp(g_t) I, one decay per head and step; g (B, T, H) <= 0."""
    return gla_system(q, k, v, per_key_gate(q, g), scale=scale, initial_state=initial_state)


def retention_system(q, k, v, *, gamma=None, scale=None, initial_state=None) -> System:
    """Retention as (1)-(2): Λ = γ_h I, the same for every step (time-invariant); γ (H,) in (0, 1),
    None for RetNet's 1 - 2^(-5-h). Arguments as ``retention_recurrent``."""
    q, k, v, _, scale, S0 = check_gla_inputs(q, k, v, None, scale, initial_state)
    Bn, T, H, K = q.shape
    V = v.shape[3]
    if gamma is None:
        gamma = default_gamma(H).astype(q.dtype)
    gamma = checks.float_array(gamma, "gamma", ndim=1, dims="(H,)")
    checks.same_shape(gamma, "gamma", (H,), "(H,)", "the number of heads of q")
    checks.finite(gamma, "gamma")
    if np.any((gamma <= 0) | (gamma >= 1)):
        raise ValueError(f"gamma: expected decays in the open interval (0, 1), got {gamma.tolist()}")
    decay = np.broadcast_to(np.tile(gamma.astype(q.dtype), Bn)[:, None, None], (Bn * H, 1, K * V))  # (B H, 1, K V)
    return _attention_like(q, k, v, decay, scale, S0)


def lightnet_system(q, x, v, *, scale=None, initial_state=None) -> System:
    """LightNet as (1)-(2): GLA's system with the keys k'_t and gates g_t of ``lightnet_gate``.

    initial_state (S0 (B, H, K, V), z0 (B, H, K)) or None; the state map returns (S_T, z_T), z_T from
    the gate (the log-mass is carried by the gate's own recurrence, not by (1)).
    """
    S0, z0 = _state_pair(initial_state)
    k, g, zT, _ = lightnet_gate(x, initial_state=z0)  # k' = exp(x - z), g = z_{t-1} - z_t
    system = gla_system(q, k, v, g, scale=scale, initial_state=S0)
    return replace(system, state=lambda h: (system.state(h), zT))


def _state_pair(initial_state):
    """A state pair (S0, z0) or None -> (S0, z0), (None, None) for None."""
    if initial_state is None:
        return None, None
    if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
        raise ValueError(f"initial_state: expected a pair (S0, z0) or None, got {type(initial_state).__name__}")
    if initial_state[0] is None or initial_state[1] is None:
        raise ValueError("initial_state: expected both S0 (B, H, K, V) and z0 (B, H, K), got a None in the pair")
    return initial_state[0], initial_state[1]


def _z_pair(initial_state, q):
    """Validate the normalised state pair (S0 (B, H, K, V), z0 (B, H, K)); S0 is checked by the system
    it enters. Returns (S0, z0) or (None, None)."""
    S0, z0 = _state_pair(initial_state)
    if z0 is None:
        return None, None
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    Bn, _, H, K = q.shape
    z0 = checks.float_array(z0, "initial_state[1]", ndim=3, dims="(B, H, K)")
    checks.same_shape(z0, "initial_state[1]", (Bn, H, K), "(B, H, K)", "from q")
    checks.same_dtype(z0, "initial_state[1]", q.dtype, "the dtype of q")
    return S0, checks.finite(z0, "initial_state[1]")


def normalized_linear_attention_systems(q, k, v, *, scale=None, initial_state=None):
    """Normalised linear attention as two systems: ``(numerator, denominator)``.

    numerator: linear attention on v (state S); denominator: linear attention on v = 1 (state z,
    d = p = 1, N = K). ``dsf_run_normalized`` runs both and divides outside. Arguments as
    ``normalized_linear_attention_recurrent``; initial_state (S0, z0) or None.
    """
    S0, z0 = _z_pair(initial_state, q)
    numerator = linear_attention_system(q, k, v, scale=scale, initial_state=S0)
    ones = np.ones(v.shape[:3] + (1,), v.dtype)  # (B, T, H, 1): the value 1
    denominator = linear_attention_system(q, k, ones, scale=scale,
                                          initial_state=None if z0 is None else z0[..., None])
    return numerator, denominator


def dsf_run_normalized(numerator: System, denominator: System):
    """Run both systems; return ``o`` = numerator / (denominator + EPS) and the state pair (S_T, z_T)."""
    n, S = dsf_run(numerator)
    d, z = dsf_run(denominator)
    return n / (d + EPS), (S, z[..., 0])


def normalized_linear_attention_system(q, k, v, *, scale=None, initial_state=None) -> System:
    """Normalised linear attention as one system, the normaliser inside Λ_t: h_t = S_t / η_t with

        η_t = scale q_t . z_t + EPS,  z_t = z_{-1} + k_0 + ... + k_t,  η_{-1} = 1 (so h_{-1} = S_{-1})
        Λ_t = (η_{t-1} / η_t) I,   B_t = (k_t / η_t) ⊗ I_V,   C_t = scale q_t^T ⊗ I_V

    and y_t = C_t h_t = scale q_t S_t / η_t is the output. η_t must not vanish (positive features
    make it positive). The state map returns (S_T, z_T) = (η_{T-1} h_T, z_T).
    """
    S0, z0 = _z_pair(initial_state, q)
    q, k, v, _, scale, S0 = check_gla_inputs(q, k, v, None, scale, S0)
    Bn, T, H, K = q.shape
    V = v.shape[3]
    z = np.cumsum(k, axis=1) + (0 if z0 is None else z0[:, None])  # (B, T, H, K)
    eta = scale * np.einsum("bthk,bthk->bth", q, z) + EPS  # (B, T, H)
    eta_prev = np.concatenate([np.ones_like(eta[:, :1]), eta[:, :-1]], axis=1)  # η_{t-1}, η_{-1} = 1
    ratio = _heads_to_batch((eta_prev / eta)[..., None])  # (B H, T, 1)
    system = _attention_like(q, k / eta[..., None], v, np.repeat(ratio, K * V, axis=-1), scale, S0)
    eta_last = eta[:, -1].reshape(Bn, H, 1, 1)
    return replace(system, state=lambda h: (h.reshape(Bn, H, K, V) * eta_last, z[:, -1].copy()))


def selective_scan_system(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *,
                          initial_state=None) -> System:
    """Mamba's S6 (``ref.mixers.selective_scan``, without the gate z) as (1)-(2), one system per batch
    element with the D channels as input and N = D N_s states (index d N_s + n):

        Λ_t = diag(exp(Δ_t[d] A[d, n])),  B_t[(d, n), e] = [d = e] Δ_t[d] b_t[d, n],
        C_t[e, (d, n)] = [d = e] c_t[d, n],  D_t = diag(D)

    Arguments as ``selective_scan_recurrent`` (B, C fixed, variable or grouped). The output map gives
    (B, D, L), the state map (B, D, N).
    """
    inp = check_ss_inputs(u, delta, A, B, C, D, None, delta_bias, delta_softplus, initial_state=initial_state)
    delta_eff, a, _ = discretize(inp)  # delta after bias and softplus; a = exp(delta A): (B, L, D, N)
    Bn, L, Dn, N = a.shape
    eye = np.eye(Dn, dtype=a.dtype)
    dl = np.moveaxis(delta_eff, 2, 1)[..., None]  # (B, L, D, 1)
    Bx = np.broadcast_to(as_BLDN(inp.B, inp.B_mode, Dn), a.shape)  # (B, L, D, N)
    Cx = np.broadcast_to(as_BLDN(inp.C, inp.C_mode, Dn), a.shape)  # (B, L, D, N)
    Dmat = None if inp.D is None else np.broadcast_to(np.diag(inp.D)[None, None], (Bn, 1, Dn, Dn))
    return System(
        u=np.ascontiguousarray(np.moveaxis(inp.u, 2, 1)),  # (B, L, D)
        Lambda=a.reshape(Bn, L, Dn * N),
        B=np.einsum("bldn,de->bldne", dl * Bx, eye).reshape(Bn, L, Dn * N, Dn),
        C=np.einsum("bldn,ed->bledn", Cx, eye).reshape(Bn, L, Dn, Dn * N),
        D=Dmat,
        initial_state=None if inp.initial_state is None else inp.initial_state.reshape(Bn, Dn * N),
        output=lambda y: np.ascontiguousarray(np.moveaxis(y, 1, 2)),  # (B, D, L)
        state=lambda h: h.reshape(Bn, Dn, N),
    )


def ssd_system(X, A, B, C, *, initial_states=None) -> System:
    """Mamba-2's SSD (``ref.mixers.ssd``) as (1)-(2), one system per (batch, head), u_t = X_t (p),
    N = p n (index i n + m): Λ_t = exp(A_t) I,  B_t[(i, m), j] = [i = j] B_t[m],
    C_t[j, (i, m)] = [i = j] C_t[m]. Arguments as ``ssd_recurrent``."""
    X, A, B, C, S0 = check_ssd_inputs(X, A, B, C, initial_states)
    b, l, h, p = X.shape
    n = B.shape[3]
    eye = np.eye(p, dtype=X.dtype)
    Bh, Ch = _heads_to_batch(B), _heads_to_batch(C)  # (b h, l, n)
    return System(
        u=_heads_to_batch(X),  # (b h, l, p)
        Lambda=np.repeat(np.exp(_heads_to_batch(A[..., None])), p * n, axis=-1),  # (b h, l, p n)
        B=np.einsum("btm,ij->btimj", Bh, eye).reshape(b * h, l, p * n, p),
        C=np.einsum("btm,ji->btjim", Ch, eye).reshape(b * h, l, p, p * n),
        D=None,
        initial_state=None if S0 is None else S0.reshape(b * h, p * n),
        output=lambda y: _batch_to_heads(y, b, h),  # (b, l, h, p)
        state=lambda hT: hT.reshape(b, h, p, n),
    )


def s4d_system(u, log_dt, A_re, A_im, C_re, C_im, D=None, B_re=None, B_im=None, *,
               discretization: str = "zoh") -> System:
    """S4D (``ref.mixers.s4``) as a real (1)-(2), one system per (batch, channel), time-invariant:
    each stored complex mode Ā_m = a + i b acts on (Re x_m, Im x_m) as the block [[a, -b], [b, a]],
    B = (Re B̄_m, Im B̄_m), C = (2 Re C_m, -2 Im C_m) (y = 2 Re(C x): the conjugate modes are implicit).

    Arguments as ``s4d_recurrent``. The output map gives y (B, H, L); the state map the complex state
    x (B, H, N/2) of the stored modes.
    """
    Abar, Bbar, Cc = s4d_discrete(log_dt, A_re, A_im, C_re, C_im, B_re, B_im, discretization=discretization)
    dtype = log_dt.dtype
    H, M = Abar.shape
    u = check_signal(u, H, dtype)
    D = check_skip(D, H, dtype)
    Bn, _, L = u.shape
    Lam = np.zeros((H, 2 * M, 2 * M), dtype)  # block-diagonal, one 2 x 2 rotation-scaling per mode
    m = np.arange(M)
    Lam[:, 2 * m, 2 * m] = Abar.real
    Lam[:, 2 * m, 2 * m + 1] = -Abar.imag
    Lam[:, 2 * m + 1, 2 * m] = Abar.imag
    Lam[:, 2 * m + 1, 2 * m + 1] = Abar.real
    Bm = np.stack([Bbar.real, Bbar.imag], axis=-1).reshape(H, 2 * M, 1).astype(dtype)  # (H, 2M, 1)
    Cm = np.stack([2 * Cc.real, -2 * Cc.imag], axis=-1).reshape(H, 1, 2 * M).astype(dtype)  # (H, 1, 2M)

    def per_system(X):  # (H, ...) -> (B H, 1, ...): the same matrices for every batch element, every step
        return np.broadcast_to(X[None], (Bn,) + X.shape).reshape(Bn * H, 1, *X.shape[1:])

    return System(
        u=u.reshape(Bn * H, L, 1),
        Lambda=per_system(Lam),
        B=per_system(Bm),
        C=per_system(Cm),
        D=None if D is None else per_system(D.reshape(H, 1, 1)),
        initial_state=None,
        output=lambda y: y.reshape(Bn, H, L),
        state=lambda h: (h[:, 0::2] + 1j * h[:, 1::2]).reshape(Bn, H, M),
    )


def softmax_attention_system(q, k, v, *, scale=None) -> System:
    """Causal softmax attention as (1)-(2) with a state that grows with T: the KV cache's values.

    One system per (batch, head), u_t = v_t, N = T V (slot s holds v_s once written):
    Λ = I, B_t = e_t ⊗ I_V (write v_t into slot t), C_t = P_t ⊗ I_V (read the slots s <= t with this
    step's softmax weights P_ts = softmax_s(scale q_t . k_s), computed from every cached key).
    q, k (B, T, H, K), v (B, T, H, V), the same H (no GQA here). The state map gives the cached
    values (B, H, T, V). See the module docstring for why no fixed N can do this.
    """
    q, k, v = checks.query_key_value(q, k, v)
    Bn, T, H, K = q.shape
    scale = check_scale(scale, K)
    V = v.shape[3]
    qh, kh = _heads_to_batch(q), _heads_to_batch(k)  # (B H, T, K)
    s = scale * np.matmul(qh, np.swapaxes(kh, -1, -2))  # (B H, T, T) scores
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)  # causal: key s <= query t
    P = np.exp(s - s.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)  # (B H, T, T): row t, the softmax over s <= t
    eye = np.eye(V, dtype=q.dtype)
    write = np.einsum("ts,wv->tswv", np.eye(T, dtype=q.dtype), eye).reshape(T, T * V, V)  # B_t = e_t ⊗ I_V
    return System(
        u=_heads_to_batch(v),  # (B H, T, V)
        Lambda=np.ones((Bn * H, 1, T * V), q.dtype),  # Λ = I: nothing is forgotten, nothing decays
        B=np.broadcast_to(write[None], (Bn * H, T, T * V, V)),
        C=np.einsum("bts,vw->btvsw", P, eye).reshape(Bn * H, T, V, T * V),  # C_t = P_t ⊗ I_V
        D=None,
        initial_state=None,
        output=lambda y: _batch_to_heads(y, Bn, H),  # (B, T, H, V)
        state=lambda h: h.reshape(Bn, H, T, V),
    )


# ---------------------------------------------------------------- the coincidences (a) and (b)


def selective_scan_as_gla(u, delta, A, B, C, *, delta_bias=None, delta_softplus=False, initial_state=None,
                          heads: int = 1):
    """(a): an S6 whose Δ_t, A, b_t and c_t are shared by the channels of each head, as GLA.

    The D channels split into ``heads`` groups of V = D / heads (group h: channels h V .. h V + V - 1,
    as mamba_ssm's grouped B and C); within a group Δ_t[d], the row A[d], b_t[d] and c_t[d] must not
    depend on d. With heads = D (V = 1) that holds for every S6. Arguments as
    ``selective_scan_recurrent`` (no D, no z: D u and the gate act outside (1)). Returns the keyword
    arguments of ``gla_recurrent``: q = c_t, k = Δ_t b_t, v = u_t, gk = Δ_t A (q, k, gk
    (B, L, heads, N); v (B, L, heads, V)), scale = 1, and the state (B, D, N) as (B, heads, N, V).
    GLA's o (B, L, heads, V), reshaped to (B, L, D) and transposed, is S6's out (B, D, L). Raises
    ValueError when a condition fails.
    """
    inp = check_ss_inputs(u, delta, A, B, C, None, None, delta_bias, delta_softplus, initial_state=initial_state)
    delta_eff, a, _ = discretize(inp)  # delta_eff (B, D, L) after bias and softplus
    Bn, L, Dn, N = a.shape
    H = checks.positive_int(heads, "heads")
    if Dn % H:
        raise ValueError(f"heads: expected a divisor of the number of channels D = {Dn}, got {H}")
    V = Dn // H

    def per_head(X, name, what):
        """X (B, L, D, ...) -> (B, L, H, ...): the value of each head's first channel, after checking
        that every channel of the head has it (the condition of the coincidence)."""
        Xh = X.reshape(X.shape[:2] + (H, V) + X.shape[3:])
        if not np.all(Xh == Xh[:, :, :, :1]):
            raise ValueError(f"{name}: expected {what} shared by the channels of each head (the condition of the "
                             "coincidence with GLA, whose decay, keys and queries do not depend on the value index)")
        return np.ascontiguousarray(Xh[:, :, :, 0])

    dl = per_head(np.moveaxis(delta_eff, 2, 1), "delta", "one step size per (batch, time), after bias and softplus,")
    Ah = per_head(np.broadcast_to(inp.A[None, None], (1, 1, Dn, N)), "A", "the same row A[d]")[0, 0]  # (H, N)
    bh = per_head(np.broadcast_to(as_BLDN(inp.B, inp.B_mode, Dn), a.shape), "B", "input vectors b_t")  # (B, L, H, N)
    ch = per_head(np.broadcast_to(as_BLDN(inp.C, inp.C_mode, Dn), a.shape), "C", "output vectors c_t")
    if dl.size and dl.min() < 0:
        raise ValueError("delta: expected step sizes >= 0 (a decay exp(delta A) <= 1, as GLA's gate), "
                         f"got {float(dl.min())}")
    S0 = None
    if inp.initial_state is not None:
        S0 = np.ascontiguousarray(np.swapaxes(inp.initial_state.reshape(Bn, H, V, N), -1, -2))  # (B, H, N, V)
    return dict(
        q=ch,  # c_t
        k=dl[..., None] * bh,  # Δ_t b_t: the discretised input vector
        v=np.ascontiguousarray(np.moveaxis(inp.u, 2, 1).reshape(Bn, L, H, V)),  # u_t
        gk=dl[..., None] * Ah,  # log Λ_t = Δ_t A
        scale=1.0,
        initial_state=S0,
    )


def gla_as_selective_scan(q, k, v, delta, A, *, scale=None, initial_state=None):
    """(a), the other way: the GLA whose log-gate is gk_t = Δ_t A, as an S6.

    q, k (B, T, H, K); v (B, T, H, V); delta (B, T, H) > 0; A (H, K) < 0; the GLA gate is
    ``gk = delta[..., None] * A``. Returns the arguments of ``selective_scan_recurrent`` for one S6
    with D = H V channels (head h: channels h V .. h V + V - 1) and N = K states, B and C grouped
    by head (G = H): u = v, delta = Δ_t on every channel of its head, A[h V + v] = A[h],
    B = k_t / Δ_t, C = scale q_t, and the state (B, H, K, V) as (B, H V, K). S6's out (B, H V, T)
    transposed and reshaped to (B, T, H, V) is GLA's o. Simple GLA is A = -1, Δ_t = -g_t.
    """
    q = checks.float_array(q, "q", ndim=4, dims="(B, T, H, K)")
    Bn, T, H, K = q.shape
    delta = checks.float_array(delta, "delta", ndim=3, dims="(B, T, H)")
    checks.same_shape(delta, "delta", (Bn, T, H), "(B, T, H)", "from q")
    checks.same_dtype(delta, "delta", q.dtype, "the dtype of q")
    checks.finite(delta, "delta")
    if delta.size and delta.min() <= 0:
        raise ValueError(f"delta: expected step sizes > 0 (B_t = k_t / delta_t must be finite), "
                         f"got {float(delta.min())}")
    A = checks.float_array(A, "A", ndim=2, dims="(H, K)")
    checks.same_shape(A, "A", (H, K), "(H, K)", "from q")
    checks.same_dtype(A, "A", q.dtype, "the dtype of q")
    checks.finite(A, "A")
    if A.size and A.max() >= 0:
        raise ValueError(f"A: expected negative values (S6's A = -exp(A_log) < 0), got {float(A.max())}")
    gk = delta[..., None] * A  # (B, T, H, K): the gate this GLA has
    q, k, v, _, scale, S0 = check_gla_inputs(q, k, v, gk, scale, initial_state)
    V = v.shape[3]
    return dict(
        u=np.ascontiguousarray(np.moveaxis(v.reshape(Bn, T, H * V), 1, 2)),  # (B, H V, T)
        delta=np.ascontiguousarray(np.repeat(np.moveaxis(delta, 1, 2), V, axis=1)),  # (B, H V, T)
        A=np.repeat(A, V, axis=0),  # (H V, K): channel h V + v has its head's row
        B=np.ascontiguousarray(np.moveaxis(k / delta[..., None], 1, 3)),  # (B, H, K, T) grouped: k_t / Δ_t
        C=np.ascontiguousarray(np.moveaxis(scale * q, 1, 3)),  # (B, H, K, T) grouped: scale q_t
        initial_state=None if S0 is None else np.ascontiguousarray(np.swapaxes(S0, -1, -2)).reshape(Bn, H * V, K),
    )


def normalized_attention_as_ssd(q, k, v, *, scale=None):
    """(b): normalised linear attention (FLA's η_t = scale q_t . z_t + EPS, from a zero state) whose
    normaliser never decreases, as SSD: X = v, A_t = log(η_{t-1} / η_t) (A_0 = 0: it multiplies the
    zero state), B_t = k_t / η_t, C_t = scale q_t. Returns the arguments of ``ssd_recurrent``.

    Raises ValueError where η_t < η_{t-1}: there Λ_t = η_{t-1} / η_t > 1 is no decay, and no SSD or
    S6 of this form (Λ_t = exp(Δ_t A) <= 1) has it.
    """
    q, k, v, _, scale, _ = check_gla_inputs(q, k, v, None, scale, None)
    eta = scale * np.einsum("bthk,bthk->bth", q, np.cumsum(k, axis=1)) + EPS  # (B, T, H)
    ratio = np.ones_like(eta)
    ratio[:, 1:] = eta[:, :-1] / eta[:, 1:]  # Λ_t = η_{t-1} / η_t
    bad = (ratio > 1) | (eta <= 0)
    if np.any(bad):
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"q, k: expected a normaliser eta_t = scale q_t . z_t that never decreases and stays > 0 "
                         f"(else Lambda_t = eta_(t-1) / eta_t is no decay), got Lambda_t = {float(ratio[i])} at "
                         f"(b, t, h) = {i}")
    return dict(X=v, A=np.log(ratio), B=k / eta[..., None], C=scale * q)


def ssd_as_normalized_attention(X, A, B, C, *, initial_states=None):
    """(b), the other way: SSD as linear attention divided by a normaliser that never decreases.

    Returns ``(args, eta)``: the keyword arguments of ``linear_attention_recurrent`` (q = C, k = η B,
    v = X, scale 1, the state (b, h, p, n) as (b, h, n, p)) and η (b, l, h) = exp(-(A_0 + ... + A_t))
    >= 1, so that SSD's Y = o / η[..., None]. η grows like the accumulated decay and overflows
    (float64) once it exceeds e^709; the SSD form never does.
    """
    X, A, B, C, S0 = check_ssd_inputs(X, A, B, C, initial_states)
    eta = np.exp(-np.cumsum(A, axis=1))  # (b, l, h)
    return dict(q=C, k=eta[..., None] * B, v=X, scale=1.0,
                initial_state=None if S0 is None else np.ascontiguousarray(np.swapaxes(S0, -1, -2))), eta
