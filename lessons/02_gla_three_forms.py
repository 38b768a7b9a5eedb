# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # One mixer, three forms: gated linear attention
#
# **The question.** Gated linear attention (GLA; Yang, Wang, Shen, Panda and Kim, *Gated Linear
# Attention Transformers with Hardware-Efficient Training*, arXiv 2312.06635) is an RNN at
# inference time and a transformer-like parallel model at training time. How can one function be
# both, and which form should you compute when?
#
# We derive three forms of the same function from its recurrence, prove them equal forward and
# backward, and measure what each costs:
#
# * **recurrent**: one state update per token, O(T) sequential steps, constant memory;
# * **parallel**: masked attention with decays, O(T²) work and memory, no sequential steps;
# * **chunked**: attention inside chunks, the recurrence across chunks: O(T) work with matrix
#   products inside chunks, the form GLA trains with.
#
# Layout as in flash-linear-attention: q, k, gk (B, T, H, K); v, o (B, T, H, V); the state S is a
# (K, V) matrix per batch and head. Code: `ref/mixers/gla/` (one file per form).

# %%
import matplotlib.pyplot as plt
import numpy as np

from ref.bench.machine import time_interleaved
from ref.lessons import lesson_context
from ref.mixers.gla import FORMS, gla_chunked, gla_parallel, gla_recurrent
from ref.nn import gradcheck

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


# %% [markdown]
# ## 1. From attention to a recurrence
#
# Causal softmax attention computes o_t = Σ_{s≤t} softmax_s(q_t·k_s) v_s: every output looks at
# every past token, so generating token t costs O(t). Drop the softmax and the sum factorises:
#
# $$o_t = \sum_{s \le t} (q_t k_s^\top) v_s = q_t \underbrace{\sum_{s\le t} k_s^\top v_s}_{S_t}, \qquad S_t = S_{t-1} + k_t^\top v_t.$$
#
# That is *linear attention*: a fixed-size state S (K × V) summarises the past. Its weakness is
# that it never forgets. GLA adds a data-dependent forget gate α_t ∈ (0, 1]^K, one per key
# dimension, applied to the rows of the state (GLA paper, Sec. 4.1):
#
# $$S_t = \mathrm{diag}(\alpha_t)\, S_{t-1} + k_t^\top v_t, \qquad o_t = \text{scale}\cdot q_t S_t. \tag{1}$$
#
# We store gates in natural log, gk = log α ≤ 0, as flash-linear-attention does; in the GLA
# layer gk = logsigmoid(x W_1 W_2 + b) / 16. Here is (1) written with scalar loops, the
# definition the forms are checked against:

# %%
def gla_by_definition(q, k, v, gk, scale):
    """Equation (1), one scalar at a time, for a single batch and head: q, k, gk (T, K), v (T, V)."""
    T, K = q.shape
    V = v.shape[1]
    S = np.zeros((K, V))
    o = np.zeros((T, V))
    for t in range(T):
        for i in range(K):
            for j in range(V):
                S[i, j] = np.exp(gk[t, i]) * S[i, j] + k[t, i] * v[t, j]
        for j in range(V):
            o[t, j] = scale * sum(q[t, i] * S[i, j] for i in range(K))
    return o


B, T, H, K, V = 1, 40, 2, 5, 3  # K and V deliberately not powers of two
q = rng.standard_normal((B, T, H, K))
k = rng.standard_normal((B, T, H, K))
v = rng.standard_normal((B, T, H, V))
gk = log_sigmoid(rng.standard_normal((B, T, H, K)))
o_rec, ht, cache_rec = gla_recurrent(q, k, v, gk)
o_def = gla_by_definition(q[0, :, 1], k[0, :, 1], v[0, :, 1], gk[0, :, 1], K**-0.5)
print("recurrent form == definition (head 1):", np.allclose(o_rec[0, :, 1], o_def, rtol=1e-13, atol=1e-13))

# %% [markdown]
# ## 2. The parallel form
#
# Unroll (1). With the cumulative gates G_t = gk_0 + ... + gk_t (per key dimension), the
# contribution of token s to the state at time t has been decayed by exp(G_t − G_s):
#
# $$S_t = \sum_{s\le t} \mathrm{diag}\big(e^{G_t - G_s}\big)\, k_s^\top v_s \quad\Longrightarrow\quad o_t = \sum_{s \le t} A_{ts} v_s,\qquad A_{ts} = \text{scale}\sum_{i} q_{t,i}\, k_{s,i}\, e^{G_{t,i} - G_{s,i}}. \tag{2}$$
#
# This is attention with a (T × T) score matrix A, a decay per key dimension, and no softmax. It
# is tempting to factor e^{G_t − G_s} = e^{G_t} e^{−G_s} and write A = (Q ⊙ e^G)(K ⊙ e^{−G})ᵀ, two
# matrix products. But G decreases without bound, so e^{−G} overflows:

# %%
G = np.cumsum(log_sigmoid(rng.standard_normal(2000)) / 0.1)  # strong gates, 2000 steps
with np.errstate(over="ignore"):
    print(f"G at the end: {G[-1]:.0f};  exp(-G) = {np.exp(-G[-1])}")

# %% [markdown]
# So `gla_parallel` forms every exponent as the difference G_t − G_s with s ≤ t (≤ 0, and −∞ above
# the diagonal before exponentiating): nothing overflows, at the price of O(T² K) work. Same
# function, computed all at once:

# %%
o_par, ht_par, cache_par = gla_parallel(q, k, v, gk)
print("parallel == recurrent: max |diff| =", np.abs(o_par - o_rec).max(), " final states:", np.abs(ht_par - ht).max())

# %% [markdown]
# ## 3. The chunked form, derived
#
# Split time into chunks of C steps. For a token i inside a chunk that starts at position r, split
# the sum (2) into the tokens before the chunk and those inside it. With the gates accumulated
# from the chunk's start, b_i = gk_r + ... + gk_i, and S the state entering the chunk:
#
# $$o_i = \underbrace{\text{scale}\,(q_i \odot e^{b_i})\, S}_{\text{inter-chunk}} + \underbrace{\sum_{r \le j \le i} A^{c}_{ij} v_j}_{\text{intra-chunk}}, \qquad A^c_{ij} = \text{scale}\sum_k q_{i,k} k_{j,k} e^{b_{i,k} - b_{j,k}} \tag{3}$$
#
# and the state leaving the chunk is
#
# $$S' = \mathrm{diag}(e^{b_{\text{last}}})\, S + \sum_j (k_j \odot e^{b_{\text{last}} - b_j})^\top v_j. \tag{4}$$
#
# Inside a chunk everything is matrix products (what a GPU's tensor cores want); only (4) runs
# sequentially, once per chunk. Every exponent is ≤ 0 and the sums b restart at each chunk, so the
# form stays stable at any length. Checking several chunk sizes, T = 40 a multiple of none of them:

# %%
for C in (1, 3, 7, 16, 64):
    o_c, ht_c, _ = gla_chunked(q, k, v, gk, chunk_size=C)
    print(f"chunk size {C:2d}: max |o - o_recurrent| = {np.abs(o_c - o_rec).max():.1e}, final state {np.abs(ht_c - ht).max():.1e}")

# %% [markdown]
# ## 4. The backward pass, and a shortcut for the gates
#
# Each form has a hand-written backward. Differentiating (1) by hand gives a reverse-time
# recurrence for dS_t = ∂L/∂S_t (see `ref/mixers/gla/recurrent.py`), from which dq, dk, dv follow.
# For the gates there is a shortcut. In (2) the gates only appear as e^{G_t − G_s} between a query
# at t and a key at s: +G_t with the query, −G_s with the key. So the derivative with respect to
# G_t collects every term where t is the query position, minus every term where t is the key
# position — which is exactly what q_t ⊙ dq_t and k_t ⊙ dk_t measure:
#
# $$\frac{\partial L}{\partial G_t} = q_t \odot dq_t - k_t \odot dk_t, \qquad dgk_t = \sum_{t' \ge t} \frac{\partial L}{\partial G_{t'}} \tag{5}$$
#
# (plus a term for the final state). The recurrent and chunked forms use (5); the parallel form
# writes ∂L/∂G out term by term, which makes it an independent check of (5). All three against
# float64 finite differences:

# %%
small = {
    "q": q[:, :6],
    "k": k[:, :6],
    "v": v[:, :6],
    "gk": gk[:, :6],
    "initial_state": rng.standard_normal((B, H, K, V)),
}
for form, (forward, backward) in FORMS.items():
    extra = {"chunk_size": 4} if form == "chunked" else {}

    def fwd(q, k, v, gk, initial_state, forward=forward, extra=extra):
        return forward(q, k, v, gk, initial_state=initial_state, **extra)

    report = gradcheck(fwd, backward, small, rng=rng, name=f"gla_{form}")
    print(f"{form:9s}: worst relative error over q, k, v, gk, h0 = {max(t.rel_err for t in report.tensors):.1e}")

# %% [markdown]
# ## 5. Experiment: what each form costs
#
# Forward plus backward, B = 1, H = 2, K = V = 16, float64, the three NumPy forms against T. The
# parallel form is run only while its T × T score matrix stays small.

# %%
Ts = [64, 256, 1024] if ctx.quick else [64, 256, 1024, 4096, 16384]
T_parallel_max = 1024 if ctx.quick else 4096
repeats = 3 if ctx.quick else 5
timings = {"recurrent": [], "parallel": [], "chunked (C = 64)": []}


def fwd_bwd(form, chunk=64):
    forward, backward = FORMS[form]
    extra = {"chunk_size": chunk} if form == "chunked" else {}

    def run(q, k, v, gk, do):
        o, ht, cache = forward(q, k, v, gk, **extra)
        return backward(do, None, cache)

    return run


for T_ in Ts:
    args = [rng.standard_normal((1, T_, 2, 16)) for _ in range(3)]
    gk_ = log_sigmoid(rng.standard_normal((1, T_, 2, 16))) / 16  # GLA's tau = 16
    do_ = rng.standard_normal((1, T_, 2, 16))
    fns = {
        "recurrent": lambda: fwd_bwd("recurrent")(*args, gk_, do_),
        "chunked (C = 64)": lambda: fwd_bwd("chunked")(*args, gk_, do_),
    }
    if T_ <= T_parallel_max:
        fns["parallel"] = lambda: fwd_bwd("parallel")(*args, gk_, do_)
    medians = time_interleaved(fns, repeats)
    for name in timings:
        timings[name].append(medians.get(name, np.nan))
    print(f"T = {T_:6d}: " + ", ".join(f"{n} {t * 1e3:.1f} ms" for n, t in medians.items()))


def slope(Ts, ts):
    """Fitted exponent p of time ~ T^p over the largest three sizes measured."""
    pts = [(np.log(a), np.log(b)) for a, b in zip(Ts, ts) if np.isfinite(b)][-3:]
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


slopes = {name: slope(Ts, ts) for name, ts in timings.items()}

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (name, ts), marker in zip(timings.items(), "osd"):
    ax.loglog(Ts, np.array(ts) * 1e3, marker=marker, label=f"{name}: slope {slopes[name]:.2f}")
ax.set_xlabel("sequence length T")
ax.set_ylabel("forward + backward (ms), median")
ax.set_title("GLA, NumPy forms (B = 1, H = 2, K = V = 16, float64)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
ctx.save_figure(fig)
print("fitted slopes:", {k: round(v, 2) for k, v in slopes.items()})

# %% [markdown]
# The fitted slopes (printed on the figure, numbers in `02_gla_three_forms.json`) tell the story
# of the paper's complexity argument: the parallel form grows like T² (its slope near 2), the
# chunked and recurrent forms like T.
#
# Which linear form is faster in NumPy is a closer call than the slopes suggest. The recurrent
# loop pays Python's overhead at every step but computes only K exponentials per token; the
# chunked form pays the overhead once per chunk but, to stay stable, exponentiates a decay for
# every pair of positions inside a chunk and every key dimension: C·K exponentials per token.
# On a GPU those pairwise terms are cheap matrix-unit work and the chunked form wins by a wide
# margin (the point of the paper's "hardware-efficient training"); on a CPU the compiled kernels
# of `numba_kernels/gla_cpu.py` are the fast path.

# %%
agree = max(np.abs(o_par - o_rec).max(), np.abs(gla_chunked(q, k, v, gk, chunk_size=7)[0] - o_rec).max())
quadratic = slopes["parallel"] > 1.5
linear = slopes["chunked (C = 64)"] < 1.3
ctx.save_result(
    title="One mixer, three forms: gated linear attention",
    paper="gla",
    claim=(
        "GLA's recurrent, parallel and chunkwise forms compute the same function; the parallel form costs "
        "O(T^2), the chunkwise form O(T) with matrix products inside chunks (GLA paper, Sec. 3-4)."
    ),
    measured=(
        f"max |difference| between forms {agree:.1e} (float64); fitted time exponents (forward + backward, "
        f"NumPy): parallel {slopes['parallel']:.2f}, chunked {slopes['chunked (C = 64)']:.2f}, "
        f"recurrent {slopes['recurrent']:.2f}; at T = {Ts[-1]} the chunked form takes "
        f"{timings['chunked (C = 64)'][-1] / timings['recurrent'][-1]:.2f}x the recurrent form's time in NumPy."
    ),
    reproduced="yes" if agree < 1e-12 and quadratic and linear else "partly",
    numbers={"T": Ts, "seconds": timings, "slopes": slopes, "max_abs_difference": float(agree)},
)

# %% [markdown]
# ## Summary
#
# * GLA is linear attention with a forget gate per key dimension: a recurrence (1) with a (K × V)
#   state. Unrolling it gives attention with decays (2); splitting the unrolled sum at chunk
#   boundaries gives the chunked form (3)-(4).
# * Stability comes from forming decay *differences* (every exponent ≤ 0), never e^{−G}.
# * The gate gradient needs no states: dgk is a reverse cumulative sum of q ⊙ dq − k ⊙ dk (5).
#
# ## Exercises
#
# 1. Simple GLA (Mamba-2, RetNet) uses one gate per head instead of one per key dimension. Show
#    that the parallel form then becomes (Q Kᵀ ⊙ D) V with a single decay matrix D_ts = e^{G_t − G_s},
#    and check it against `gla_parallel` with the gate broadcast over K.
# 2. With gates of 0 (no decay), what does GLA compute? Check that `gla_chunked` with `gk=None`
#    equals plain causal linear attention (Q Kᵀ ⊙ M) V.
# 3. Count the work of the chunked form for T = 4096, K = V = 64 as a function of C (intra-chunk
#    scores T·C·K, intra-chunk outputs T·C·V, state updates (T/C)·K·V·C): where is it smallest?
#
# ## Solutions

# %%
# 1. A scalar gate per head, broadcast over the key dims, and the decay-matrix form
g = log_sigmoid(rng.standard_normal((B, T, H)))  # (B, T, H)
Gs = np.cumsum(g, axis=1)  # (B, T, H)
causal = np.tril(np.ones((T, T), bool))[None, :, :, None]  # (1, T, T, 1)
D = np.exp(np.where(causal, Gs[:, :, None, :] - Gs[:, None, :, :], -np.inf))  # (B, T, T, H)
scores = np.einsum("bthk,bshk->bths", q, k) * K**-0.5 * np.moveaxis(D, 3, 2)  # (B, T, H, S)
o_decay = np.einsum("bths,bshv->bthv", scores, v)
o_gla = gla_parallel(q, k, v, np.broadcast_to(g[..., None], q.shape))[0]
print("exercise 1:", np.allclose(o_decay, o_gla, rtol=1e-12, atol=1e-12))

# %%
# 2. No gates: causal linear attention
M = np.tril(np.ones((T, T)))
o_lin = np.einsum("bths,bshv->bthv", np.einsum("bthk,bshk->bths", q, k) * K**-0.5 * M[:, None, :], v)
print("exercise 2:", np.allclose(gla_chunked(q, k, v, None, chunk_size=8)[0], o_lin, rtol=1e-12, atol=1e-12))

# %%
# 3. Work of the chunked form: T*C*(K + V) inside chunks plus T*K*V for the state updates
work = {C: 4096 * C * (64 + 64) + 4096 * 64 * 64 for C in (16, 32, 64, 128, 256)}
print("exercise 3:", {C: f"{w / 1e6:.0f} M" for C, w in work.items()},
      "-> smaller C always does less work; C is set by the hardware (matrix units want C >= 16-64)")
