# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # State space duality: one SSM, three algorithms, and what the state size buys
#
# **The paper row.** Huang, Pan, Tang, Ding, Xing, Wang, Wang and Hu, *ML-Mamba: Efficient
# Multi-Modal Large Language Model Utilizing Mamba-2* (arXiv 2407.19832). ML-Mamba is a multimodal
# LLM: "We replace the
# Transformer based backbone with a pre-trained Mamba-2 model and explore methods for integrating
# 2D visual selective scanning mechanisms into multimodal learning. We also try various visual
# encoders and Mamba-2 model variants" (abstract). Its claims are benchmark scores of the whole
# system against TinyLLaVA, MobileVLM v2 and LLaVA.
#
# **What is not reproduced here, and why.** ML-Mamba is four parts (its project page): a
# pre-trained visual encoder, a randomly initialised connector that scans the image features in
# 2-D (the "Mamba-2 Scan Connector"), an MLP projector, and a pre-trained Mamba-2 language model
# (Mamba-2's released models reach 2.7B parameters, trained on 300B tokens of the Pile), trained
# together on image-text data and evaluated on multimodal benchmarks. None of that fits a laptop:
# the weights and datasets would have to be downloaded (this reference downloads nothing at run
# time), the training takes GPUs, and a toy vision-language model trained from scratch would say
# nothing about the paper's numbers. So this lesson does **not** reproduce ML-Mamba's results; it
# teaches the part of ML-Mamba that is a reproducible idea, its backbone, and the gallery's verdict
# for this row is at most "partly": the backbone's claims can hold here, ML-Mamba's own are
# untested.
#
# **The backbone: Mamba-2 and state space duality (SSD).** Dao and Gu, *Transformers are SSMs:
# Generalized Models and Efficient Algorithms Through Structured State Space Duality* (arXiv
# 2405.21060). Its point: a selective SSM whose transition is a scalar times the identity, and
# a masked attention without softmax, are the *same* sequence transformation Y = M X, computed by
# different algorithms. The paper's summary of the dual form (Sec. 2.4):
#
# $$Y = (L \circ Q K^\top) \cdot V, \qquad L_{ij} = \begin{cases} a_i \times \cdots \times a_{j+1} & i \ge j\\ 0 & i < j\end{cases}$$
#
# "where a_i are input-dependent scalars bounded in [0, 1]". With the SSM's C, B, X in the roles of
# Q, K, V, this is the SSM's recurrence unrolled.
#
# **The questions.**
#
# 1. Is it true, to the last bit of float64, that the recurrence, the quadratic (attention) form and
#    the paper's four-step chunked algorithm compute the same function, forward and backward, for
#    every chunk size (1, 8, T and lengths not a multiple of the chunk)?
# 2. Mamba-2's recall experiment (Sec. 9.1, Figure 8): "this task validates the importance of state
#    size: increasing from N = 16 to N = 64 and N = 256 consistently improves performance on MQAR,
#    as the larger state allows more information (key-value pairs) to be memorized". Does a small
#    Mamba-2, trained here, recall more as its state size N grows?
#
# Code: the three forms of SSD in `ref/mixers/ssd.py` (on `ref/mixers/simple_gla.py`), the Mamba-2
# layer and block in `ref/models/mamba2.py`, the language-model scaffold in `ref/models/lm.py`,
# MQAR in `ref/tasks/synthetic.py`. Equation numbers: "paper (n)" are the Mamba-2 paper's; (1)-(10)
# are those of `ref/models/mamba2.py`; steps (3)-(6) of the chunked algorithm those of
# `ref/mixers/ssd.py`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from ref.lessons import lesson_context
from ref.mixers.ssd import FORMS, segsum, ssd_chunked, ssd_quadratic, ssd_recurrent
from ref.models.lm import init_lm, lm_decode, lm_forward, lm_loss_and_grads
from ref.nn import gradcheck
from ref.tasks import get_task
from ref.train import train, tree_flatten

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)
print(f"quick mode: {ctx.quick}; figures go to {ctx.out_dir}")

# %% [markdown]
# ## 1. The recurrence
#
# A selective SSM (paper (2)) maps an input sequence to an output sequence through a state:
# h_t = A_t h_{t-1} + B_t x_t, y_t = C_tᵀ h_t. SSD restricts A_t to a **scalar times the identity**,
# A_t = a_t I with a_t = exp(Δ_t A) ∈ (0, 1], and lets one head carry P channels that share
# a_t, B_t and C_t (Mamba used a diagonal A_t and P = 1). Per head, with the state h a (P × N)
# matrix, N the **state size**:
#
# $$h_t = a_t\, h_{t-1} + x_t B_t^\top, \qquad y_t = h_t\, C_t \qquad x_t, y_t \in \mathbb{R}^P,\ B_t, C_t \in \mathbb{R}^N \tag{ssd.py (1)-(2)}$$
#
# `ref.mixers.ssd` takes the decay in natural log, A_t = log a_t = Δ_t A ≤ 0, in the layout of
# mamba_ssm's `ssd_minimal`: X (b, l, h, p), A (b, l, h), B, C (b, l, h, n). The definition with
# scalar loops, for one head, is what every other form is checked against:

# %%
def ssd_by_definition(X, a, B, C):
    """The recurrence for one sequence and head: X (T, P), decays a (T,) in (0, 1], B, C (T, N)."""
    T, P = X.shape
    N = B.shape[1]
    h = np.zeros((P, N))
    Y = np.zeros((T, P))
    for t in range(T):
        for p in range(P):
            for n in range(N):
                h[p, n] = a[t] * h[p, n] + X[t, p] * B[t, n]
            Y[t, p] = sum(h[p, n] * C[t, n] for n in range(N))
    return Y


def random_ssd(rng, b, T, h, p, n, strength=0.5):
    """Random SSD inputs: X (b, T, h, p), log-decays A = -dt (b, T, h) with dt ~ strength * |N(0, 1)|."""
    X = rng.standard_normal((b, T, h, p))
    A = -strength * np.abs(rng.standard_normal((b, T, h)))
    B = rng.standard_normal((b, T, h, n))
    C = rng.standard_normal((b, T, h, n))
    return X, A, B, C


X, A, B, C = random_ssd(rng, 2, 40, 3, 5, 4)  # 40 steps, 3 heads, P = 5, N = 4
Y_rec, h_rec, _ = ssd_recurrent(X, A, B, C)
Y_def = ssd_by_definition(X[1, :, 2], np.exp(A[1, :, 2]), B[1, :, 2], C[1, :, 2])
print("recurrent form vs the definition (sequence 1, head 2): max |diff| =", np.abs(Y_rec[1, :, 2] - Y_def).max())

# %% [markdown]
# ## 2. The matrix, and the attention-like dual form
#
# Unroll the recurrence from h_{-1} = 0: token s is written into the state as x_s B_sᵀ, decayed by
# a_{s+1} ⋯ a_t until step t, then read by C_t:
#
# $$y_t = \sum_{s \le t} \underbrace{(a_t \cdots a_{s+1})}_{L_{ts}}\, (C_t^\top B_s)\, x_s \quad\Longrightarrow\quad Y = M X,\qquad M = L \circ (C B^\top). \tag{paper (16)}$$
#
# M is a T × T lower-triangular matrix, the same for every channel p of the head: causal
# attention with C as the queries, B as the keys, X as the values, no softmax, and the mask L in
# place of positional embeddings (the paper calls this *structured masked attention*). L is the
# 1-semiseparable matrix of products of decays, L_ts = exp(A_{s+1} + ... + A_t) =
# exp(segsum(A))_ts, zero above the diagonal (segsum gives −∞ there):

# %%
print("segsum([a0, a1, a2, a3]) for A = [-1, -2, -3, -4]:\n", segsum(np.array([-1.0, -2.0, -3.0, -4.0])))

# one head: build M = L ∘ (C Bᵀ) and multiply
Lmat = np.exp(segsum(A[1, :, 2]))  # (T, T)
M = Lmat * (C[1, :, 2] @ B[1, :, 2].T)  # (T, T)
Y_quad, h_quad, _ = ssd_quadratic(X, A, B, C)
print("M X vs the recurrence:", np.abs(M @ X[1, :, 2] - Y_rec[1, :, 2]).max())
print("ssd_quadratic vs ssd_recurrent: outputs", np.abs(Y_quad - Y_rec).max(), " final states", np.abs(h_quad - h_rec).max())

# %% [markdown]
# **Why the recurrence exists at all: M is semiseparable.** Every block of M strictly below the
# diagonal factors through the state: rows t ≥ r, columns s < r give
# M[t, s] = (C_tᵀ a_t ⋯ a_{r}) (a_{r-1} ⋯ a_{s+1} B_s): an outer product through N dimensions, so
# its rank is at most N, however large the block (the paper's Definition 3.1: an N-semiseparable
# matrix). Attention's score matrix has no such bound; that is why attention must keep its whole
# history (a KV cache growing with T) while an SSM keeps an (P × N) state.

# %%
for r in (10, 20, 30):
    block = M[r:, :r]  # rows after r, columns before r
    print(f"block M[{r}:, :{r}] of shape {block.shape}: numerical rank {np.linalg.matrix_rank(block, tol=1e-10)} (N = 4)")

# %% [markdown]
# **A numerical detail.** The paper's Listing 1 computes segsum as a difference of cumulative
# sums, cumsum_t − cumsum_s. With strong decays over long sequences both terms are large and
# nearly equal, and the difference loses its digits (in float32, after a few hundred steps).
# `ref.mixers.ssd.segsum` instead sums the masked terms directly (as the "stable" segsum of
# mamba_ssm's `ssd_minimal.py` does), so no cancellation occurs:

# %%
long_A = -np.abs(rng.standard_normal(2000)).astype(np.float32)  # 2000 steps, decays e^-0.8 on average
exact = segsum(long_A.astype(np.float64))  # float64 reference
cs = np.cumsum(long_A)
naive = (cs[:, None] - cs[None, :]).astype(np.float64)  # the difference of cumulative sums
stable = segsum(long_A).astype(np.float64)
near = np.tril(np.ones((2000, 2000), bool)) & (exact > -20)  # where exp(segsum) is not negligible
print(f"float32, T = 2000, entries with exp(segsum) > 2e-9: max error of segsum, difference of cumsums "
      f"{np.abs(naive[near] - exact[near]).max():.1e}, masked sums {np.abs(stable[near] - exact[near]).max():.1e}")

# %% [markdown]
# ## 3. The four-step chunked algorithm (paper Sec. 6)
#
# Neither form is what you want at scale: the recurrence is T sequential steps of small
# elementwise work, the quadratic form T² work and memory. The SSD algorithm cuts the sequence
# into chunks of Q steps and M into a (T/Q) × (T/Q) grid of Q × Q blocks (the paper's Figure 5).
# Blocks on the diagonal are small instances of the quadratic form; blocks below it are low-rank
# (the rank-N factorisation above) and factor through the state at the chunk boundaries. Four
# steps, with the paper's names and the equations of `ref/mixers/ssd.py` (Acs = cumulative sum of
# A within a chunk):
#
# 1. **intra-chunk outputs** (diagonal blocks): Y_diag = (L_c ∘ C Bᵀ) X inside each chunk — the
#    dual form on Q × Q blocks, "what is the output per chunk supposing that the initial state (to
#    the chunk) is 0"; (3)
# 2. **chunk states** (right factors, "B-block-factors"): S_c = Σ_j exp(Acs_last − Acs_j) x_j B_jᵀ,
#    the state each chunk leaves behind from a zero start; (4)
# 3. **state passing** (center factors, "A-block-factors"): a recurrence over the T/Q chunk
#    boundaries, h_c = exp(sum of chunk c's decays) h_{c−1} + S_c: the only sequential part, Q times
#    shorter than the token recurrence; (5)
# 4. **state → output** (left factors, "C-block-factors"): Y_off = exp(Acs_i) h_{c−1} C_i, each
#    chunk reading the state that enters it. (6)
#
# Y = Y_diag + Y_off. Steps 1, 2 and 4 are batched matrix multiplications over chunks (what tensor
# cores want); with N = P = Q the whole costs O(T N²) FLOPs like the recurrence, as matrix
# products (Theorem 6.1). Q interpolates between the other two forms: Q = 1 makes step 3 the full
# token recurrence, Q = T makes step 1 the full quadratic form. Every chunk size must give the
# same function, forward and backward. T = 40 here, so Q = 8 divides it and Q = 7, 16 do not:

# %%
S0 = rng.standard_normal((2, 3, 5, 4))  # an initial state (b, h, p, n)
dY = rng.standard_normal(Y_rec.shape)
dS = rng.standard_normal(S0.shape)  # a gradient arriving at the final state
fwd_rec, bwd_rec = FORMS["recurrent"]
Y0, S_end0, cache0 = fwd_rec(X, A, B, C, initial_states=S0)
grads0 = bwd_rec(dY, dS, cache0)  # (dX, dA, dB, dC, dS0)
Ts = X.shape[1]
chunk_sizes = [1, 7, 8, 16, Ts]
forward_error, backward_error = [], []
for Q in chunk_sizes:
    Yq, S_endq, cacheq = ssd_chunked(X, A, B, C, block_len=Q, initial_states=S0)
    gradsq = FORMS["chunked"][1](dY, dS, cacheq)
    forward_error.append(max(np.abs(Yq - Y0).max(), np.abs(S_endq - S_end0).max()))
    backward_error.append(max(np.abs(gq - g0).max() / np.abs(g0).max() for gq, g0 in zip(gradsq, grads0)))
    print(f"Q = {Q:2d}: forward max |diff| {forward_error[-1]:.1e}; backward (dX, dA, dB, dC, dS0) max relative "
          f"diff {backward_error[-1]:.1e}")
Yq, _, _ = ssd_quadratic(X, A, B, C, initial_states=S0)
quad_error = np.abs(Yq - Y0).max()

# %% [markdown]
# The backward passes are written by hand, each in its own way (the recurrence in reverse time;
# the quadratic form term by term; the chunked form step 4, 3, 2, 1 in reverse), and the decays'
# gradient by an identity: since A enters only through exp(Acs_t − Acs_s) between a read by C at t
# and a write by B at s, dA_t = Σ_{t' ≥ t} (C · dC − B · dB)_{t'} (plus the final state's term).
# Each form against float64 central differences, at a small size:

# %%
small = {"X": X[:, :6], "A": A[:, :6], "B": B[:, :6], "C": C[:, :6], "initial_states": S0}
gradcheck_error = {}
for form, (forward, backward) in FORMS.items():
    extra = {"block_len": 4} if form == "chunked" else {}

    def fwd(X, A, B, C, initial_states, forward=forward, extra=extra):
        return forward(X, A, B, C, initial_states=initial_states, **extra)

    report = gradcheck(fwd, backward, small, rng=rng, name=f"ssd_{form}")
    gradcheck_error[form] = max(t.rel_err for t in report.tensors)
    print(f"{form:9s}: worst relative error over X, A, B, C, initial state = {gradcheck_error[form]:.1e}")

# %% [markdown]
# ## 4. The Mamba-2 block
#
# SSD is the mixer; the Mamba-2 layer (paper Sec. 7.1, Figure 6; mamba_ssm's `Mamba2`) builds its
# inputs **in parallel** from one projection, as attention builds Q, K, V, where Mamba-1 computed
# B, C, Δ from the SSM's input x:
#
# $$[z,\ xBC,\ \Delta_{raw}] = u W_{in}, \qquad [x, B, C] = \mathrm{silu}(\mathrm{conv1d}(xBC)), \qquad \Delta = \mathrm{softplus}(\Delta_{raw} + b_\Delta) \tag{1-4}$$
#
# $$Y = \mathrm{SSD}(\Delta x,\ \Delta A,\ B,\ C) + D x, \qquad \text{out} = \mathrm{RMSNorm}(Y \odot \mathrm{silu}(z))\, W_{out} \tag{5-9}$$
#
# with A = −exp(A_log) one negative scalar per head, B and C shared by all heads (the
# "multi-input SSM" head pattern, paper (20)), a short causal convolution (width 4) over x, B and
# C, and the extra normalisation after the gate that the paper adds for stability. The block is
# pre-norm and residual, y = u + Mamba2(RMSNorm(u)) (10); a language model stacks blocks between
# an embedding and a head. The layer keeps, per head, the (P × N) state of SSD and the last three
# conv inputs: decoding one token costs the same at step 10 and step 10,000. All forms of SSD give
# the same model, and the token-by-token decode equals the parallel forward:

# %%
lm = init_lm(rng, 16, 16, 2, "mamba2", N=8, headdim=8, n_layer=2)
tokens = rng.integers(0, 16, (2, 24))
logits = {mode: lm_forward(lm, tokens, mode=mode, chunk_size=5)[0] for mode in FORMS}
decoded, states = lm_decode(lm, tokens)
model_error = max(np.abs(lg - logits["recurrent"]).max() for lg in (*logits.values(), decoded))
print("max |logits difference| over the three forms and the decode:", model_error)
print("decode state per layer: conv", states[0].conv.shape, " ssm (B, H, P, N)", states[0].ssm.shape)

# %% [markdown]
# ## 5. Experiment: recall against state size
#
# **The paper's experiment** (Sec. 9.1, Figure 8): multi-query associative recall (MQAR; Arora et
# al., Zoology) in a harder setting than Zoology's (a harder task, longer sequences, smaller
# models): sequence lengths 256, 512 and 1024, model widths 32 to 256; Mamba-2 with N = 16, 64
# and 256 against Mamba-1 (N = 16), attention and Based. The figure's caption: "Associative recall tasks are challenging for SSMs, which must memorize all
# relevant information into their recurrent state. The SSD layer combined with improved
# architecture allows for much larger state sizes in Mamba-2, which performs significantly better
# than Mamba-1 and even vanilla attention."
#
# **Ours.** MQAR from `ref.tasks.get_task("mqar")`: 8 key-value pairs, then the 8 keys again in
# random order, T = 32, vocabulary 32 (15 key ids, 16 value ids, filler 0: `random_filler=False`,
# as in lesson 06); the model must output each key's value (chance 1/16). One Mamba-2 block
# (width 32, expand 2, heads of P = 16 channels: 4 heads, convolution width 4) between an
# embedding and a head, so the SSD state is the only place where a pair can be kept across the
# sequence. We sweep the state size N and change nothing else. Per layer the state holds
# E · N = 64 N numbers; N also adds 2N columns to the input projection and 2N conv channels (the
# model grows from 8.9k parameters at N = 1 to 11.1k at N = 32, while its state grows 32-fold;
# printed below).
#
# Why so small? The lead's notes asked for T = 128 with 16 pairs. In development runs on this
# shared 2-core machine, models at that size stayed at the chance loss (ln 32) for their first 300
# steps at learning rates 3e-3 and 1e-2; one block with N = 32 did learn it (99.9% after 1,000
# steps at lr 1e-2), but took 18 minutes, so a sweep over N and seeds at that size would take
# hours. At T = 32 with 8 pairs a model trains in 600 steps: about 15 s of CPU time (the committed
# run, 12 models, used 3.5 CPU-minutes, 13.6 minutes of wall time on the shared machine). What the state must
# do is the same: tell apart the 8 stored keys (out of 15 possible ones) in N dimensions.
#
# Same seeds, data, optimiser (AdamW, lr 1e-2, linear warmup over 10% of the steps, cosine decay),
# steps and batch size (32) for every N. We train with the recurrent form of SSD, the fastest of
# the three in NumPy at T = 32; section 3 showed that the choice changes nothing else.
#
# Before training anything, what does N allow? A state of size N reads a key by a dot product:
# the read of key q returns Σ_i (c_q · b_i) x_i over the stored pairs, the wanted value plus the
# others weighted by how much their keys overlap with q. Fifteen key vectors fit without overlap
# only if N ≥ 15; below that, the Welch bound says that some pair of unit keys overlaps by at
# least √((15 − N) / (14 N)): 1 at N = 1, 0.68 at N = 2, 0.44 at N = 4, 0.25 at N = 8, 0.13 at
# N = 12. A trained model must learn keys that are as far apart as N allows, and whether the
# leftover interference is small enough for the read-out decides the recall.

# %%
Ns = [2, 16] if ctx.quick else [1, 2, 4, 8, 16, 32]
KEY_IDS = 15  # the key ids of the task below


def welch_bound(N, K=KEY_IDS):
    """The smallest possible largest |overlap| among K unit vectors in R^N (0 once N >= K)."""
    return float(np.sqrt((K - N) / (N * (K - 1)))) if N < K else 0.0


print("smallest possible worst-case key overlap by N:", {N: round(welch_bound(N), 2) for N in Ns})
n_params = {  # the model of the experiment below, by N
    N: sum(v.size for v in tree_flatten(init_lm(np.random.default_rng(0), 32, 32, 1, "mamba2", N=N, headdim=16)).values())
    for N in Ns
}
print("parameters by N:", n_params)

# %%
task = get_task("mqar", vocab_size=32, seq_len=32, num_pairs=8, random_filler=False)
D_MODEL, HEADDIM, BATCH, LR = 32, 16, 32, 1e-2
steps = 30 if ctx.quick else 600
seeds = (0,) if ctx.quick else (0, 1)
test = task.sample(np.random.default_rng(1234), 64 if ctx.quick else 512)
chance = 1 / (task.vocab_size - 1 - task.key_vocab_size)


def train_recall(N, seed):
    """Train one Mamba-2 block of state size N on MQAR; returns (test accuracy, loss history, params)."""
    rng_ = np.random.default_rng(seed)
    params = init_lm(rng_, task.vocab_size, D_MODEL, 1, "mamba2", N=N, headdim=HEADDIM)

    def loss_and_grads(p, batch, r):
        return lm_loss_and_grads(p, batch, r, mode="recurrent")

    out = train(
        params, loss_and_grads, lambda r, s: task.sample(r, BATCH), steps=steps, rng=rng_, lr=LR,
        warmup_steps=max(1, steps // 10), progress=False,
    )
    logits, _ = lm_forward(out.params, test.inputs, mode="recurrent")
    return test.accuracy(logits.argmax(-1)), out.history["loss"], out.params


start = time.perf_counter()
accuracy = {N: [] for N in Ns}
losses = {N: [] for N in Ns}
trained = {}  # (N, seed) -> parameters, for exercise 4
for N in Ns:
    for seed in seeds:
        acc, loss, trained[N, seed] = train_recall(N, seed)
        accuracy[N].append(acc)
        losses[N].append(loss)
    print(f"N = {N:2d} (state {64 * N:5d} numbers per layer): test accuracy {np.mean(accuracy[N]):.3f} "
          f"{np.round(accuracy[N], 3)}, final loss {np.mean([l[-20:].mean() for l in losses[N]]):.3f}")
train_seconds = time.perf_counter() - start
mean_acc = {N: float(np.mean(a)) for N, a in accuracy.items()}
print(f"trained {len(Ns) * len(seeds)} models in {train_seconds:.0f} s")

# %%
fig, axes = plt.subplots(2, 2, figsize=(12.5, 9.5))
ax = axes[0, 0]
Q_show = 8
im = ax.imshow(np.log10(np.abs(M) + 1e-12), cmap="viridis", vmin=-6, vmax=1)
for k in range(Q_show, M.shape[0], Q_show):
    ax.axhline(k - 0.5, color="w", lw=0.8)
    ax.axvline(k - 0.5, color="w", lw=0.8)
ax.set_title(f"(a) M = L ∘ CBᵀ for one head (T = {M.shape[0]}, N = 4), chunks of Q = {Q_show}:\n"
             "diagonal blocks = step 1; blocks below have rank ≤ N (steps 2-4)", fontsize=9)
ax.set_xlabel("input position s")
ax.set_ylabel("output position t")
fig.colorbar(im, ax=ax, label="log10 |M_ts| (0 above the diagonal)")

ax = axes[0, 1]
xpos = np.arange(len(chunk_sizes))
ax.bar(xpos - 0.2, forward_error, 0.4, label="forward: max |Y, final state − recurrent|")
ax.bar(xpos + 0.2, backward_error, 0.4, label="backward: max relative |grad − recurrent's|")
ax.axhline(np.finfo(np.float64).eps, color="k", ls=":", lw=1, label="float64 machine epsilon")
ax.set_yscale("log")
ax.set_ylim(1e-17, 1e-12)
ax.set_xticks(xpos, [f"Q = {Q}" + (" (= T)" if Q == Ts else "") for Q in chunk_sizes])
ax.set_title(f"(b) the four-step chunked form vs the recurrence, T = {Ts}\n"
             f"(quadratic form: {quad_error:.0e}; Mamba-2 LM, 3 forms + decode: {model_error:.0e})", fontsize=9)
ax.legend(fontsize=8, loc="upper left")
ax.grid(alpha=0.3, axis="y")

ax = axes[1, 0]
ax.plot(Ns, [mean_acc[N] for N in Ns], "o-", color="C0", label=f"trained Mamba-2, mean of {len(seeds)} seed(s)")
for N in Ns:
    ax.scatter([N] * len(seeds), accuracy[N], color="C0", alpha=0.35, s=16)
ax.axhline(chance, color="gray", ls=":", lw=1, label=f"chance (1/{round(1 / chance)})")
ax.set_xscale("log", base=2)
ax.set_xticks(Ns, [str(N) for N in Ns])
ax.set_ylim(0, 1.03)
ax.set_xlabel("state size N (per head: P × N = 16 N numbers)")
ax.set_ylabel("MQAR test accuracy")
ax.set_title(f"(c) recall against state size: 8 pairs, T = 32, one block, {steps} steps", fontsize=9)
ax.grid(alpha=0.3)
twin = ax.twinx()
twin.plot(Ns, [welch_bound(N) for N in Ns], "s--", color="C1", alpha=0.8)
twin.set_ylim(0, 1.03)
twin.set_ylabel(f"Welch bound: least worst-case overlap of {KEY_IDS} unit keys in R^N", color="C1", fontsize=8)
ax.plot([], [], "s--", color="C1", label="Welch bound (right axis)")
ax.legend(fontsize=8, loc="center right")

ax = axes[1, 1]
window = max(1, steps // 30)
for i, N in enumerate(Ns):
    curve = np.mean(losses[N], axis=0)
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(len(smooth)) + window - 1, smooth, color=plt.cm.viridis(i / max(1, len(Ns) - 1)), label=f"N = {N}")
ax.axhline(np.log(1 / chance), color="gray", ls=":", lw=1, label="ln 16 (uniform over the values)")
ax.set_xlabel("training step")
ax.set_ylabel("training loss (cross-entropy at the queries)")
ax.set_title("(d) training curves", fontsize=9)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
ctx.save_figure(fig)

# %% [markdown]
# ## 6. Reading the result
#
# The cell below prints the comparison from this run's numbers; the text after it describes the
# committed full-mode run (numbers in `figures/09_ssd_duality.json`; seeds are fixed, so a rerun
# gives the same numbers on the same machine). Quick mode trains for a few steps only: its models
# stay at chance.

# %%
agree = max(max(forward_error), max(backward_error), quad_error, model_error)
equivalent = agree < 1e-12 and max(gradcheck_error.values()) < 1e-6
acc = [mean_acc[N] for N in Ns]
gain = acc[-1] - acc[0]
monotone = all(b >= a - 0.05 for a, b in zip(acc, acc[1:]))  # non-decreasing, up to seed noise
recall = "yes" if gain > 0.3 and monotone else ("partly" if gain > 0.1 else "no")
backbone = "yes" if equivalent and recall == "yes" else ("no" if not equivalent and recall == "no" else "partly")
# the row is ML-Mamba's: its own multimodal claims are untested, so the verdict is at most "partly"
reproduced = "partly" if backbone == "yes" else backbone
print(f"forms agree to {agree:.1e} (float64); gradchecks: worst {max(gradcheck_error.values()):.1e}")
print("MQAR accuracy by N:", {N: round(a, 3) for N, a in mean_acc.items()}, f" chance {chance:.3f}")
print(f"gain from N = {Ns[0]} to N = {Ns[-1]}: {gain:+.3f}; non-decreasing: {monotone}")
print(f"backbone claims: equivalence {'yes' if equivalent else 'no'}, recall vs N {recall}; row verdict: {reproduced}")

# %% [markdown]
# **The committed full-mode run** (2 seeds per N, 600 steps each, 512 test sequences):
#
# | N | 1 | 2 | 4 | 8 | 16 | 32 |
# |---|---|---|---|---|---|---|
# | MQAR test accuracy, seed 0 / seed 1 | 0.23 / 0.12 | 0.25 / 0.18 | 0.25 / 0.18 | 0.995 / 0.19 | 1.000 / 1.000 | 1.000 / 0.999 |
# | mean | 0.18 | 0.22 | 0.21 | 0.59 | 1.00 | 1.00 |
# | Welch bound on the worst key overlap | 1.00 | 0.68 | 0.44 | 0.25 | 0 | 0 |
#
# * **Equivalence: yes.** Every chunk size (1, 7, 8, 16 and 40 = T) matches the recurrence to
#   5e-15 forward and 9e-16 (relative) backward, the quadratic form to 9e-15, a two-block Mamba-2
#   LM's three forms and its token-by-token decode to 3e-16; the three forms' backward passes pass
#   gradcheck (worst relative error 4e-9, the round-off of central differences).
# * **Recall against state size: yes, at this scale.** Accuracy does not fall as N grows (beyond
#   0.216 → 0.214 from N = 2 to 4 and 1.000 → 0.999 from 16 to 32, well inside the seed-to-seed
#   spread), and it goes from 0.18 (N = 1) to 1.00 (N ≥ 16), against chance 0.06. N ≤ 4 learns something (0.18-0.22,
#   about three times chance: panel (d) shows their loss leaving ln 16 for 2.1-2.3) but cannot
#   tell the 8 stored pairs apart. N = 8 is the threshold: one seed recalls 99.5%, the other stays
#   at 0.19, so its mean (0.59) averages two outcomes rather than measuring a partial recall;
#   two seeds cannot say how often it learns. From N = 16, where 15 key vectors fit without
#   overlap, both seeds recall everything, and N = 32 adds nothing (the task is solved).
# * **What this does not show.** The paper's Figure 8 varies N from 16 to 256 on sequences of 256
#   to 1024 tokens, and compares Mamba-2 with Mamba-1, attention and Based; we reproduce only its
#   direction (a larger state recalls more) on sequences 8 to 32 times shorter, where N = 16
#   already suffices, with one architecture and 2 seeds. And ML-Mamba's own claims
#   (multimodal benchmark scores) are not tested at all.
#
# Hence the row's verdict: **partly** (the Mamba-2 backbone's two claims hold at laptop scale;
# ML-Mamba itself is not reproduced).

# %%
accuracy_text = ", ".join(f"N={N}: {mean_acc[N]:.2f}" for N in Ns)
ctx.save_result(
    title="State space duality: one SSM, three algorithms, and what the state size buys",
    paper="ml_mamba",
    claim=(
        "ML-Mamba's backbone is Mamba-2, whose SSD layer is one sequence transformation computed by a "
        "recurrence, by a quadratic masked-attention form Y = (L ∘ CBᵀ)X and by a four-step chunked algorithm "
        "(Dao & Gu 2024, Sec. 2.4 and 6); on MQAR 'increasing from N = 16 to N = 64 and N = 256 consistently "
        "improves performance ... as the larger state allows more information (key-value pairs) to be "
        "memorized' (Sec. 9.1, Figure 8). ML-Mamba's own multimodal results (pre-trained Mamba-2 LLM, vision "
        "encoder, 2-D scan connector, image-text training) are not tested here."
    ),
    measured=(
        f"the recurrent, quadratic and chunked forms (chunks {', '.join(map(str, chunk_sizes))}; T = {Ts}) agree to "
        f"{agree:.0e} forward and backward, a Mamba-2 LM's three forms and its token-by-token decode to "
        f"{model_error:.0e}; gradchecks of every form pass (worst {max(gradcheck_error.values()):.0e}). MQAR "
        f"(8 pairs, T = 32, one Mamba-2 block, {steps} steps, mean of {len(seeds)} seed(s)) test accuracy by state "
        f"size: {accuracy_text} (chance {chance:.2f}). ML-Mamba itself: not reproduced."
    ),
    reproduced=reproduced,
    numbers={
        "equivalence": {
            "T": Ts,
            "chunk_sizes": chunk_sizes,
            "forward_max_abs_difference": forward_error,
            "backward_max_relative_difference": backward_error,
            "quadratic_max_abs_difference": float(quad_error),
            "lm_forms_and_decode_max_abs_difference": float(model_error),
            "gradcheck_worst_relative_error": gradcheck_error,
        },
        "task": {"name": "mqar", "vocab_size": 32, "seq_len": 32, "num_pairs": 8, "random_filler": False,
                 "key_ids": KEY_IDS, "test_sequences": len(test.inputs)},
        "model": {"blocks": 1, "D": D_MODEL, "expand": 2, "headdim": HEADDIM, "heads": 2 * D_MODEL // HEADDIM,
                  "conv_width": 4, "state_numbers_per_layer": {str(N): 2 * D_MODEL * N for N in Ns},
                  "parameters": {str(N): int(n) for N, n in n_params.items()}},
        "training": {"steps": steps, "batch_size": BATCH, "lr": LR, "optimizer": "adamw", "seeds": list(seeds),
                     "ssd_form": "recurrent"},
        "accuracy": {str(N): a for N, a in accuracy.items()},
        "mean_accuracy": {str(N): a for N, a in mean_acc.items()},
        "final_loss": {str(N): float(np.mean([l[-20:].mean() for l in losses[N]])) for N in Ns},
        "welch_bound": {str(N): welch_bound(N) for N in Ns},
        "chance": chance,
        "verdict": {"equivalence": bool(equivalent), "recall_vs_state_size": recall, "backbone": backbone},
        "train_seconds": train_seconds,
    },
)

# %% [markdown]
# ## Summary
#
# * SSD is a selective SSM whose transition is a scalar per head and step, A_t = a_t I. Unrolled,
#   it is Y = (L ∘ C Bᵀ) X: masked attention without softmax, with C, B, X as queries, keys and
#   values, and L = exp(segsum(log a)) a data-dependent causal mask (paper Sec. 2.4, (16)).
# * The matrix is N-semiseparable: every block below the diagonal has rank ≤ N. That is what lets
#   the past be summarised in a (P × N) state, and what the four-step chunked algorithm exploits:
#   quadratic form inside chunks, low-rank factors through the chunk-boundary states across them
#   (Sec. 6). Chunk size 1 is the recurrence, chunk size T the quadratic form; every chunk size in
#   between computes the same function, forward and backward, to float64 round-off.
# * The Mamba-2 block (Sec. 7) produces x, B, C and Δ in parallel from one projection, shares B and
#   C across heads, and normalises after the gate; its decode keeps a constant-size state.
# * At laptop scale, recall follows the state size: one Mamba-2 block whose keys live in N ≤ 4
#   dimensions cannot keep 8 pairs apart (accuracy ≈ 0.2), N = 8 learns it for one seed of two,
#   N ≥ 16 recalls every pair (section 6), in the direction of the paper's Figure 8. ML-Mamba's own
#   results, a multimodal system built on a pre-trained Mamba-2, are not reproduced here.
#
# ## Exercises
#
# 1. With no decay (A = 0), show that SSD is causal linear attention: Y = ((C Bᵀ) ⊙ mask) X. Check
#    it against `ssd_quadratic`.
# 2. Cost per head of the three forms, for T = 4096, N = P = 64 and chunks of Q = 64, counting
#    multiply-adds: recurrence 2 T N P; quadratic T² (N + P) / 2 (causal half); chunked
#    T Q (N + P) / 2 (diagonal blocks) + 2 T N P (chunk states, state → output) + (T / Q) N P (state
#    passing). Which is cheapest, and by how much does the quadratic form lose?
# 3. Semiseparable against softmax. Show that every block below the diagonal of L = exp(segsum(A))
#    has rank 1, and that the same block of a causal softmax attention matrix softmax(QKᵀ) with
#    random q, k of 4 dims has full rank: softmax attention has no fixed-size state.
# 4. Forgetting. Take the trained N = 16 model (`trained[16, 0]`) and make every head forget four
#    times faster (A → 4A, that is A_log → A_log + log 4). What happens to its MQAR accuracy, and
#    why?
#
# ## Solutions

# %%
# 1. No decay: SSD is causal linear attention with C, B, X as queries, keys, values
X1, _, B1, C1 = random_ssd(rng, 1, 12, 2, 3, 4)
Y1, _, _ = ssd_quadratic(X1, np.zeros(X1.shape[:3]), B1, C1)
mask = np.tril(np.ones((12, 12)))
Y1_la = np.einsum("hts,shp->thp", np.einsum("thn,shn->hts", C1[0], B1[0]) * mask, X1[0])
print("exercise 1:", np.allclose(Y1[0], Y1_la, rtol=1e-12, atol=1e-12))

# %%
# 2. Multiply-adds per head
T2, N2, P2, Q2 = 4096, 64, 64, 64
cost = {
    "recurrent": 2 * T2 * N2 * P2,
    "quadratic": T2 * T2 * (N2 + P2) // 2,
    "chunked": T2 * Q2 * (N2 + P2) // 2 + 2 * T2 * N2 * P2 + (T2 // Q2) * N2 * P2,
}
print("exercise 2:", {k: f"{v / 1e6:.0f} M" for k, v in cost.items()},
      f"-> the quadratic form does {cost['quadratic'] / cost['chunked']:.0f}x the chunked form's work; the chunked "
      f"form does {cost['chunked'] / cost['recurrent']:.1f}x the recurrence's, but as matrix products")

# %%
# 3. Rank of the blocks below the diagonal: 1 for L (N = 1), full for softmax attention
A3 = -np.abs(rng.standard_normal(32))
L3 = np.exp(segsum(A3))
q3, k3 = rng.standard_normal((32, 4)), rng.standard_normal((32, 4))
scores = np.where(np.tril(np.ones((32, 32), bool)), q3 @ k3.T, -np.inf)
attn = np.exp(scores - scores.max(-1, keepdims=True))
attn /= attn.sum(-1, keepdims=True)
print("exercise 3: rank of the block rows 16-31 x columns 0-15: L", np.linalg.matrix_rank(L3[16:, :16]),
      "; softmax attention", np.linalg.matrix_rank(attn[16:, :16]))

# %%
# 4. Forgetting four times faster
p4 = trained[16, 0]
fast = {**p4, "blocks": [{"mamba2": {**b["mamba2"], "mixer": {**b["mamba2"]["mixer"],
                                                              "A_log": b["mamba2"]["mixer"]["A_log"] + np.log(4.0)}}}
                         for b in p4["blocks"]]}
acc_fast = test.accuracy(lm_forward(fast, test.inputs, mode="recurrent")[0].argmax(-1))
_, c4 = lm_forward(p4, test.inputs, mode="recurrent")
mix4 = c4.blocks[0][1]  # the Mamba-2 layer's cache: dt (B, T, H), A (H,)
keep = np.exp((mix4["dt"] * mix4["A"]).mean(axis=1))  # (B, H): the geometric mean of a_t = exp(dt_t A) over t
print(f"exercise 4: N = 16, seed 0: accuracy {accuracy[16][0]:.3f} as trained, {acc_fast:.3f} with A x 4; "
      f"mean decay per step a_t by head {np.round(keep.mean(0), 3)}: after 16 steps a pair keeps "
      f"{np.round(keep.mean(0) ** 16, 3)} of its weight, with A x 4 {np.round(keep.mean(0) ** 64, 3)}")
