# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # One linear system for attention, SSMs and RNNs: the Dynamical Systems Framework
#
# **The paper.** Sieber, Amo Alonso, Didier, Zeilinger and Orvieto, *Understanding the differences
# in Foundation Models: Attention, State Space Models, and Recurrent Neural Networks* (arXiv
# 2405.15731, NeurIPS 2024; code: IntelligentControlSystems/dsf-mqar). Its tool is the Dynamical
# Systems Framework (DSF): write every sequence mixer as one linear, structured, time-varying system
#
# $$h_t = \Lambda_t h_{t-1} + B_t u_t, \qquad y_t = C_t h_t + D_t u_t \tag{DSF}$$
#
# with a state h_t of size N = n d (d input channels, n the *state expansion*). Everything else,
# feature maps, gates, normalisers, discretisations, only decides how (Λ_t, B_t, C_t, D_t) are
# computed from the input. In that common form the paper compares the models: when linear attention
# and a selective SSM are the same system (Sec. 4), why softmax attention has no finite N, and what
# state expansion and normalisation buy on recall.
#
# **The questions.**
#
# 1. Is (DSF) really each mixer? Run linear attention, retention, GLA, Mamba's S6 and Mamba-2's SSD
#    through one recurrence loop and compare with their own implementations, to float64 rounding.
# 2. Under which conditions are linear attention and a selective SSM one and the same system?
# 3. Why does softmax attention need a state that grows with T?
# 4. The paper's recall experiment. Its Fig. 1: on MQAR, the accuracy of linear attention
#    approaches softmax attention's as the state expansion n grows. Its Sec. 4 also proposes a
#    *normalised attention*, unnormalised linear attention divided by exp(w . x_t) (eq. (21) in v3 of
#    the paper; `MHNA` in its code), and compares it with softmax and linear attention, S6 and SSD
#    (Fig. 5 in v3: a grid over model widths and n). Does a small model trained here recall more as
#    n grows, does it approach softmax attention, and where does normalised attention stand?
#
# Code: the recurrence and every mixer's system in `ref/mixers/dsf.py` (read its docstring for the
# derivations), the three attention blocks of the experiment in `ref/models/dsf_lm.py`, the scaffold
# in `ref/models/lm.py`, MQAR in `ref/tasks/synthetic.py`. This lesson only assembles, checks and
# trains.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import ref.models.dsf_lm  # noqa: F401  (registers the blocks "dsf_softmax", "dsf_linear", "dsf_normalized")
from ref.lessons import lesson_context
from ref.mixers import dsf
from ref.mixers.gla import gla_recurrent
from ref.mixers.linear_attention import linear_attention_recurrent, normalized_linear_attention_recurrent
from ref.mixers.retention import retention_recurrent
from ref.mixers.selective_scan import selective_scan_recurrent
from ref.mixers.ssd import ssd_recurrent
from ref.models.dsf_lm import elu1
from ref.models.lm import init_lm, lm_forward, lm_loss_and_grads
from ref.tasks import get_task
from ref.train import get_optimizer, train

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The recurrence, by hand
#
# `dsf.dsf_recurrent(u, Lambda, B, C, D)` runs (DSF) as a loop over time, one system per batch
# row (layout: u (Bn, T, d), Λ (Bn, T, N) diagonal, B (Bn, T, N, d), C (Bn, T, p, N)). Its matrix
# form, `dsf.dsf_kernel`, writes the same map as y_t = Σ_{s≤t} Φ_ts u_s with
# Φ_ts = C_t Λ_t ⋯ Λ_{s+1} B_s: the "attention matrix" of any DSF. First a check of both against
# the definition, written out with Python loops:

# %%
Bn, T, d, N, p = 2, 6, 3, 4, 2
u = rng.standard_normal((Bn, T, d))
Lam = rng.uniform(0.2, 1.0, (Bn, T, N))  # diagonal Λ_t
Bm = rng.standard_normal((Bn, T, N, d))
Cm = rng.standard_normal((Bn, T, p, N))
y, hT, _ = dsf.dsf_recurrent(u, Lam, Bm, Cm)

y_loop = np.zeros((Bn, T, p))
for b in range(Bn):
    h = np.zeros(N)
    for t in range(T):
        h = Lam[b, t] * h + Bm[b, t] @ u[b, t]  # (DSF), Λ_t diagonal
        y_loop[b, t] = Cm[b, t] @ h
Phi = dsf.dsf_kernel(Lam, Bm, Cm, T=T)  # (Bn, T, p, T, d)
y_kernel = np.einsum("btpsd,bsd->btp", Phi, u)
print(f"recurrence vs loop: {np.abs(y - y_loop).max():.1e};  recurrence vs kernel: {np.abs(y - y_kernel).max():.1e}")

# %% [markdown]
# ## 2. Every mixer is a system
#
# The builders `dsf.<mixer>_system` take a mixer's own inputs and return the arrays of (DSF) (and
# maps back to the mixer's layout). For the attention-like mixers u_t = v_t and the state S (K × V)
# is flattened to N = K V; for S6 u_t holds the D channels and N = D N_s (the paper's N = n d with
# n = N_s):
#
# | mixer | Λ_t | B_t | C_t |
# |---|---|---|---|
# | linear attention | I | k_t ⊗ I_V | q_tᵀ ⊗ I_V |
# | retention | γ_h I (time-invariant) | k_t ⊗ I_V | q_tᵀ ⊗ I_V |
# | GLA | diag(exp(gk_t)) ⊗ I_V | k_t ⊗ I_V | q_tᵀ ⊗ I_V |
# | S6 (Mamba) | diag(exp(Δ_t[d] A[d, n])) | Δ_t[d] b_t[n] on channel d | c_t[n] on channel d |
# | SSD (Mamba-2) | exp(A_t) I | I_p ⊗ B_t | I_p ⊗ C_tᵀ |
#
# (scale factors omitted). We run each mixer's own recurrent implementation and its system through
# the *same* `dsf_recurrent`, on random inputs with decays strong and weak, and report the largest
# difference.

# %%
B_, T_, H_, K_, V_ = 2, 16, 2, 4, 3
q, k = rng.standard_normal((2, B_, T_, H_, K_))
v = rng.standard_normal((B_, T_, H_, V_))
gk = np.log(rng.uniform(0.5, 1.0, (B_, T_, H_, K_)))  # GLA log-gates
gamma = np.array([0.9, 0.99])
equal = {}

o, _, _ = linear_attention_recurrent(q, k, v)
equal["linear attention"] = np.abs(dsf.dsf_run(dsf.linear_attention_system(q, k, v))[0] - o).max()
o, _, _ = retention_recurrent(q, k, v, gamma=gamma)
equal["retention"] = np.abs(dsf.dsf_run(dsf.retention_system(q, k, v, gamma=gamma))[0] - o).max()
o, _, _ = gla_recurrent(q, k, v, gk)
equal["GLA"] = np.abs(dsf.dsf_run(dsf.gla_system(q, k, v, gk))[0] - o).max()

Dch, Ns = 4, 3  # S6: D channels, N_s states each
us = rng.standard_normal((B_, Dch, T_))
delta = rng.uniform(0.05, 1.0, (B_, Dch, T_))
A_s6 = -rng.uniform(0.1, 2.0, (Dch, Ns))
b_s6, c_s6 = rng.standard_normal((2, B_, Ns, T_))  # input-dependent ("variable") B and C
D_skip = rng.standard_normal(Dch)
out, _, _ = selective_scan_recurrent(us, delta, A_s6, b_s6, c_s6, D_skip)
equal["S6 (selective scan)"] = np.abs(dsf.dsf_run(dsf.selective_scan_system(us, delta, A_s6, b_s6, c_s6, D_skip))[0]
                                      - out).max()

X = rng.standard_normal((B_, T_, H_, V_))
A_ssd = -rng.uniform(0.0, 1.0, (B_, T_, H_))
Bs, Cs = rng.standard_normal((2, B_, T_, H_, K_))
Y, _, _ = ssd_recurrent(X, A_ssd, Bs, Cs)
equal["SSD (Mamba-2)"] = np.abs(dsf.dsf_run(dsf.ssd_system(X, A_ssd, Bs, Cs))[0] - Y).max()

for name, err in equal.items():
    print(f"{name:22s} max |DSF - native| = {err:.1e}")
assert max(equal.values()) < 1e-12

# %% [markdown]
# Every difference is rounding. (`tests/mixers/test_dsf.py` checks the same for the backward passes,
# initial states, LightNet and S4D, with error bounds derived from the sums involved.)
#
# ## 3. When are linear attention and a selective SSM the same system?
#
# Put both in the form above, S6's channel in the role of the value index and its state index in
# the role of the key index. Two coincidences (the docstring of `ref/mixers/dsf.py` derives them):
#
# **(a) Gated.** An S6 whose step Δ_t, row A, input vector b_t and output vector c_t are *shared by
# the V channels of a head* is GLA with q_t = c_t, k_t = Δ_t b_t, v_t = u_t and log-gate
# gk_t = Δ_t A. Conversely a GLA head is an S6 iff its log-gate is rank one in (time, key):
# gk_t[k] = Δ_t A[k]. GLA's general gate (any function of t and k) is not; linear attention
# (Λ = I) is S6 with A = 0, which S6's A = -exp(A_log) < 0 only approaches.

# %%
heads, Vh, L = 2, 3, 12
Dn = heads * Vh
u6 = rng.standard_normal((B_, Dn, L))
delta6 = np.repeat(rng.uniform(0.1, 1.0, (B_, heads, L)), Vh, axis=1)  # one Δ_t per head
A6 = np.repeat(-rng.uniform(0.1, 1.0, (heads, Ns)), Vh, axis=0)  # one row of A per head
b6, c6 = rng.standard_normal((2, B_, heads, Ns, L))  # grouped b_t, c_t: one per head
out6, _, _ = selective_scan_recurrent(u6, delta6, A6, b6, c6)
args = dsf.selective_scan_as_gla(u6, delta6, A6, b6, c6, heads=heads)
o_gla, _, _ = gla_recurrent(**args)
coincide_a = np.abs(np.moveaxis(o_gla.reshape(B_, L, Dn), 1, 2) - out6).max()
print(f"(a) S6 with Δ, A, b, c shared per head == GLA with gk = Δ A, k = Δ b, q = c: max diff {coincide_a:.1e}")

delta_bad = delta6.copy()
delta_bad[:, 1] *= 1.5  # channel 1 of head 0 gets its own step size
try:
    dsf.selective_scan_as_gla(u6, delta_bad, A6, b6, c6, heads=heads)
    refused_a = False
except ValueError as err:
    refused_a = True
    print("    with a step size per channel:", str(err)[:110], "...")

# %% [markdown]
# **(b) Normalised.** Normalised linear attention o_t = q_t S_t / (q_t · z_t) (z_t the sum of the
# keys) divides by a normaliser η_t that depends on the whole prefix. Dividing the *state* by it,
# h_t = S_t / η_t, makes it a DSF with Λ_t = (η_{t-1}/η_t) I and B_t = (k_t/η_t) ⊗ I_V: the
# normaliser becomes an input-dependent state transition, like S6's. It is an SSD (Λ_t = exp(A_t) I
# with A_t ≤ 0) exactly when η_t never decreases; then A_t = log(η_{t-1}/η_t), B_t = k_t/η_t,
# C_t = q_t. A query constant in time with positive keys makes η grow; random queries generally
# do not.

# %%
Tn = 10
qc = np.repeat(elu1(rng.standard_normal((B_, 1, H_, K_)))[0], Tn, axis=1)  # the same query at every step
kp = elu1(rng.standard_normal((B_, Tn, H_, K_)))[0]  # positive features
vn = rng.standard_normal((B_, Tn, H_, V_))
o_norm, _, _ = normalized_linear_attention_recurrent(qc, kp, vn)
ssd_args = dsf.normalized_attention_as_ssd(qc, kp, vn)
Y_b, _, _ = ssd_recurrent(**ssd_args)
coincide_b = np.abs(Y_b - o_norm).max()
print(f"(b) normalised attention with a growing normaliser == SSD with A_t = log(eta_t-1 / eta_t): max diff "
      f"{coincide_b:.1e} (all A_t <= 0: {bool(np.all(ssd_args['A'] <= 0))})")
qr = elu1(rng.standard_normal((B_, Tn, H_, K_)))[0]  # a query that changes
try:
    dsf.normalized_attention_as_ssd(qr, kp, vn)
    refused_b = False
except ValueError as err:
    refused_b = True
    print("    with a query that changes:", str(err)[:120], "...")

# %% [markdown]
# ## 4. Softmax attention has no finite state
#
# Through any cut τ, a DSF passes what u_0..u_{τ-1} contribute to the outputs at t ≥ τ through
# h_{τ-1}, so the block Φ[t ≥ τ, s < τ] of its kernel has rank at most N. For linear attention the
# rank is at most K (one value channel); softmax attention's block has full rank for generic
# queries and keys (exp(q · k) is a strictly positive definite kernel, the paper's Sec. 4 argument
# via its infinite Taylor series), so N ≥ min(τ, T - τ) for every τ: the state must grow with T.
# `dsf.softmax_attention_system` is the DSF whose state is the KV cache, N = T V.

# %%
def cut_ranks(system, T):
    """Numerical rank of the kernel block Phi[t >= tau, s < tau] for every cut tau."""
    Phi = dsf.dsf_kernel(system.Lambda, system.B, system.C, system.D, T=T)[0, :, 0, :, 0]  # (T, T)
    ranks = []
    for tau in range(1, T):
        s = np.linalg.svd(Phi[tau:, :tau], compute_uv=False)
        ranks.append(int((s > 1e-8 * s[0]).sum()))
    return ranks


Tr, Kr = 24, 3
qr1, kr1 = rng.standard_normal((2, 1, Tr, 1, Kr))
vr1 = rng.standard_normal((1, Tr, 1, 1))
rank_softmax = cut_ranks(dsf.softmax_attention_system(qr1, kr1, vr1, scale=1.0), Tr)
rank_linear = cut_ranks(dsf.linear_attention_system(qr1, kr1, vr1, scale=1.0), Tr)
print("rank across cut tau, softmax:", rank_softmax)
print("rank across cut tau, linear :", rank_linear, f"(<= K = {Kr})")

# %% [markdown]
# ## 5. The recall experiment
#
# **Task.** MQAR (Zoology's multi-query associative recall, `ref.tasks`): N key-value pairs, then the
# keys again; the model must output each key's value. We use the paper's smallest setting,
# sequence length T = 64 with 4 pairs, with a vocabulary of 64 (31 keys, 32 values) instead of
# 8,192, filler token 0 between queries (`random_filler=False`, as the paper's
# `random_non_queries=False`).
#
# **Models.** A one-block decoder (`ref.models.lm`), width d = 32, one head, with the three mixers
# of `ref/models/dsf_lm.py`:
#
# * **softmax attention** (S): o_t = Σ_s softmax_s(q_t · k_s / √n) v_s; its state is the KV cache;
# * **linear attention** (L), the paper's (Katharopoulos et al.): φ = elu + 1 on q and k, normalised
#   by Σ_s φ(q_t) · φ(k_s); state N = n d, n the query/key width: the state expansion;
# * **normalised attention** (A), the paper's proposal: o_t = Σ_s (q_t · k_s) v_s / exp(w · x_t + b),
#   no feature map, a learned normaliser of the current input; also N = n d.
#
# **What we changed, and why.** (i) Every block has a short causal depthwise convolution (width 4)
# before the mixer, the same for all three. The paper's attention models carry learned absolute
# position embeddings instead; our scaffold has none, and without some way to see the previous
# token a mixer cannot store a value under the key that precedes it (lesson 03, section 7: that
# alone kept every recurrent model at chance there). The convolution hands each token its
# predecessors, so the mixers differ only in how they store and read the pairs. (ii) One block,
# not two, without dropout, with the scaffold's SwiGLU-free block (`mlp=False`: the paper's
# linear-attention configuration also has no MLP, `state_mixer = Identity`). (iii) A budget of
# 600 steps of 32 fresh sequences (19,200 sequences) with one learning rate (3e-3, AdamW, 10%
# warmup, cosine decay, clipping at 1) and one seed per point, instead of 64 epochs of 100,000
# sequences and the best of four learning rates. (iv) n from 2 to 32 instead of 32 to 256, since
# d = 32 and 4 pairs is where a small state runs out.
#
# The verdict rules, fixed before the run: the accuracy of linear attention **rises with n** if it
# gains at least 0.1 from the smallest to the largest n and never drops by more than 0.05 from one
# n to the next; it **approaches softmax** if at the largest n it is within 0.1 of softmax
# attention's. Both: "yes"; rises only: "partly"; otherwise "no".

# %%
MQAR_T, MQAR_PAIRS, VOCAB, D = (32, 4, 64, 32) if ctx.quick else (64, 4, 64, 32)
STEPS = 30 if ctx.quick else 600
N_EXPANSION = [2, 8] if ctx.quick else [2, 4, 8, 16, 32]
N_SOFTMAX = 8  # the key width of softmax attention (its state is the KV cache, whatever n)
LR, BATCH, SEED = 3e-3, 32, 0
task = get_task("mqar", vocab_size=VOCAB, seq_len=MQAR_T, num_pairs=MQAR_PAIRS, random_filler=False)
test = task.sample(np.random.default_rng(1000), 64 if ctx.quick else 512)


def fit(kind, n, seed=SEED):
    """Train one model; returns (test accuracy, loss history, seconds)."""
    r = np.random.default_rng(seed)
    params = init_lm(r, VOCAB, D, 1, block=kind, dtype=np.float32, num_heads=1, key_dim=n, conv_size=4, mlp=False)
    start = time.perf_counter()
    out = train(params, lm_loss_and_grads, lambda rr, s: task.sample(rr, BATCH), steps=STEPS, rng=r,
                optimizer=get_optimizer("adamw", weight_decay=0.0), lr=LR, warmup_steps=max(1, STEPS // 10),
                clip_norm=1.0, progress=False)
    logits, _ = lm_forward(out.params, test.inputs)
    return float(test.accuracy(logits.argmax(-1))), out.history["loss"], time.perf_counter() - start


results = {"softmax": {}, "linear": {}, "normalized": {}}
histories, seconds = {}, {}
acc, hist, secs = fit("dsf_softmax", N_SOFTMAX)
results["softmax"][N_SOFTMAX], histories[("softmax", N_SOFTMAX)], seconds["softmax"] = acc, hist, secs
print(f"softmax attention  n = {N_SOFTMAX:2d}: accuracy {acc:.3f}  final loss {hist[-20:].mean():.3f}  ({secs:.0f} s)")
for mixer in ("linear", "normalized"):
    seconds[mixer] = 0.0
    for n in N_EXPANSION:
        acc, hist, secs = fit(f"dsf_{mixer}", n)
        results[mixer][n], histories[(mixer, n)] = acc, hist
        seconds[mixer] += secs
        print(f"{mixer:10s} attention n = {n:2d} (state N = {n * D:4d}): accuracy {acc:.3f}  "
              f"final loss {hist[-20:].mean():.3f}  ({secs:.0f} s)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
ax = axes[0]
names = list(equal) + ["(a) S6 = GLA", "(b) norm. attn = SSD"]
errs = list(equal.values()) + [coincide_a, coincide_b]
ax.barh(range(len(names)), [max(e, 1e-18) for e in errs], color=["tab:blue"] * len(equal) + ["tab:purple"] * 2)
ax.axvline(np.finfo(np.float64).eps, color="k", ls=":", lw=1, label="float64 epsilon")
ax.set_xscale("log")
ax.set_xlim(1e-18, 1e-10)
ax.set_yticks(range(len(names)), names)
ax.invert_yaxis()
ax.set_xlabel("max |DSF form - native mixer|")
ax.set_title("(a) one recurrence, every mixer (float64)")
ax.legend(fontsize=8, loc="lower right")

ax = axes[1]
taus = np.arange(1, Tr)
ax.plot(taus, rank_softmax, marker="o", ms=3, color="tab:green", label="softmax attention")
ax.plot(taus, rank_linear, marker="s", ms=3, color="tab:gray", label=f"linear attention (K = {Kr})")
ax.plot(taus, np.minimum(taus, Tr - taus), "k:", lw=1, label="min(τ, T - τ)")
ax.set_xlabel("cut τ")
ax.set_ylabel("rank of Φ[t ≥ τ, s < τ] (a lower bound on N)")
ax.set_title(f"(b) the state softmax attention needs (T = {Tr})")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)

ax = axes[2]
for mixer, color, label in (("linear", "tab:gray", "linear attention (elu+1, normalised)"),
                            ("normalized", "tab:blue", "normalised attention, / exp(w·x)")):
    ax.plot(N_EXPANSION, [results[mixer][n] for n in N_EXPANSION], marker="o", color=color, label=label)
ax.axhline(results["softmax"][N_SOFTMAX], color="tab:green", ls="--", label="softmax attention")
ax.axhline(1 / MQAR_PAIRS, color="k", ls=":", lw=1, label="1/pairs: values known, keys not bound")
ax.set_xscale("log", base=2)
ax.set_xticks(N_EXPANSION, [str(n) for n in N_EXPANSION])
ax.set_xlabel("state expansion n (state N = n d, d = 32)")
ax.set_ylabel(f"MQAR accuracy ({len(test.inputs)} test sequences)")
ax.set_ylim(0, 1.05)
ax.set_title(f"(c) MQAR, T = {MQAR_T}, {MQAR_PAIRS} pairs, {STEPS} steps, 1 seed")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
ctx.save_figure(fig)

# %% [markdown]
# ## 6. What reproduced
#
# The rules of section 5, applied to the numbers above.

# %%
lin = [results["linear"][n] for n in N_EXPANSION]
nrm = [results["normalized"][n] for n in N_EXPANSION]
soft = results["softmax"][N_SOFTMAX]
rises = bool(lin[-1] - lin[0] >= 0.1 and all(b >= a - 0.05 for a, b in zip(lin, lin[1:])))
approaches = bool(soft - lin[-1] <= 0.1)
reproduced = "yes" if rises and approaches else ("partly" if rises else "no")
normalized_better = int(sum(b > a for a, b in zip(lin, nrm)))
print(f"linear attention rises with n: {rises}; within 0.1 of softmax at n = {N_EXPANSION[-1]}: {approaches}")
print(f"normalised attention beats linear attention at {normalized_better} of {len(N_EXPANSION)} values of n")
print("reproduced:", reproduced)


def row(values):
    return "/".join(f"{a:.2f}" for a in values)


ctx.save_result(
    title="One linear system for attention, SSMs and RNNs: the Dynamical Systems Framework",
    paper="foundation_model_differences",
    claim=(
        "Every mixer is the linear time-varying system h_t = Λ_t h_{t-1} + B_t u_t, y_t = C_t h_t + D_t u_t "
        "(Sec. 3), in which linear attention and selective SSMs coincide under stated conditions (Sec. 4) and "
        "softmax attention has no finite state; on MQAR 'the performance of linear attention approaches that of "
        "softmax attention as the state expansion n increases' (Fig. 1; tested here); the proposed normalised "
        "attention (unnormalised linear attention divided by exp(w . x_t), eq. (21) of v3) is compared with it in "
        "Fig. 5 of v3 (measured here, not part of the verdict)."
    ),
    measured=(
        f"DSF forms vs native mixers (linear attention, retention, GLA, S6, SSD): max difference "
        f"{max(equal.values()):.1e}; coincidences (a) S6 = GLA {coincide_a:.1e}, (b) normalised attention = SSD "
        f"{coincide_b:.1e}. MQAR, T = {MQAR_T}, {MQAR_PAIRS} pairs, d = {D}, one block with a width-4 short "
        f"convolution, {STEPS} steps, 1 seed: softmax attention {soft:.2f}; linear attention at n = "
        f"{'/'.join(map(str, N_EXPANSION))}: {row(lin)}; normalised attention: {row(nrm)}."
    ),
    reproduced=reproduced,
    numbers={
        "equivalence_max_abs_diff": {**{k2: float(v2) for k2, v2 in equal.items()},
                                     "(a) S6 with shared step/A/b/c = GLA": float(coincide_a),
                                     "(b) normalised attention with growing normaliser = SSD": float(coincide_b)},
        "coincidence_conditions_enforced": {"(a) per-channel step size refused": refused_a,
                                            "(b) decreasing normaliser refused": refused_b},
        "kernel_rank_across_cut": {"T": Tr, "K": Kr, "softmax": rank_softmax, "linear": rank_linear},
        "mqar": {
            "seq_len": MQAR_T, "num_pairs": MQAR_PAIRS, "vocab_size": VOCAB, "d_model": D, "layers": 1, "heads": 1,
            "conv_size": 4, "mlp": False, "steps": STEPS, "batch_size": BATCH, "lr": LR, "seed": SEED,
            "test_sequences": len(test.inputs), "state_expansion_n": N_EXPANSION, "softmax_key_dim": N_SOFTMAX,
            "accuracy": {"softmax": soft, "linear": dict(zip(map(str, N_EXPANSION), lin)),
                         "normalized": dict(zip(map(str, N_EXPANSION), nrm))},
            "final_loss": {f"{m}_n{n}": float(h[-20:].mean()) for (m, n), h in histories.items()},
            "train_seconds": seconds,
        },
        "verdict": {"linear_rises_with_n": rises, "linear_within_0.1_of_softmax": approaches,
                    "normalized_beats_linear_at": f"{normalized_better}/{len(N_EXPANSION)}"},
    },
)

# %% [markdown]
# ## 7. Reading the result
#
# What the committed run (full mode; numbers in `figures/11_dsf_framework.json`) shows:
#
# **Sections 1-4 hold to rounding.** One loop over time reproduces linear attention, retention, GLA,
# S6 and SSD to at most 1.8e-15; the two coincidences hold exactly (8.9e-16 and 2.2e-16) where
# their conditions hold, and the builders refuse the inputs where they fail (a step size per
# channel; a normaliser that decreases). The cut ranks show the gap of the paper's Sec. 4: linear
# attention's never exceeds K = 3; softmax attention's is min(τ, T - τ), the most a block of that
# shape can have.
#
# **The recall experiment** (T = 64, 4 pairs, d = 32, 600 steps, one seed):
#
# | n (state N = 32 n) | 2 | 4 | 8 | 16 | 32 |
# |---|---|---|---|---|---|
# | linear attention | 0.41 | 0.51 | 0.62 | 0.56 | 0.81 |
# | normalised attention | 0.45 | 0.82 | 0.92 | 0.96 | 0.98 |
#
# and softmax attention 1.00 (its loss 0.07). So:
#
# * **Linear attention recalls more with more state, but not monotonically and not up to softmax.**
#   From n = 2 to 32 it gains 0.40 (0.41 to 0.81), yet it dips by 0.052 from n = 8 to 16, just over
#   the 0.05 the rule allows for one seed, and at n = 32 it is still 0.19 below softmax attention.
#   By the rules of section 5, fixed before the run, the verdict is **no**: neither "rises" (by the
#   strict monotonicity test) nor "within 0.1 of softmax" holds. The direction of the paper's Fig. 1
#   is visible (a 16-fold state buys +0.40); whether the dip at n = 16 is seed noise we did not test
#   (one seed per point, to keep the run at five minutes), and we did not add seeds after seeing it.
# * **Normalised attention** (the paper's eq. (21) of v3) beats linear attention at every n (5 of 5),
#   rises monotonically, and at n = 32 is within 0.02 of softmax attention: at this scale it, not
#   linear attention, is the variant that "approaches softmax as n grows". A likely reason (not
#   tested here): in DSF terms its normaliser sits in the readout C_t and depends on x_t alone, and
#   its scores q_t . k_s may take either sign, while linear attention's elu+1 features make every
#   score positive, so each stored pair adds crosstalk of one sign that its normaliser cannot
#   cancel.
# * **What differs from the paper**: the short convolution instead of position embeddings, one block
#   instead of two, no MLP and no dropout, vocabulary 64 instead of 8,192, n from 2 to 32 instead of
#   32 to 256, a 19,200-sequence budget with one learning rate instead of 6.4 million sequences with
#   the best of four, and one seed. With d = 32 and 4 pairs the small n are where the state runs out;
#   the paper's n >= 32 at d >= 64 mostly leaves linear attention near its ceiling on this task.
#
# ## Summary
#
# * (DSF) h_t = Λ_t h_{t-1} + B_t u_t, y_t = C_t h_t + D_t u_t is every mixer here; the models differ
#   in how Λ_t, B_t, C_t depend on the input and in the state size N = n d.
# * Linear attention and S6 coincide when S6's step, decay row and input/output vectors are shared
#   across the value channels of a head (and GLA is S6 iff its log-gate is rank one); normalised
#   linear attention is SSD iff its normaliser never decreases: a normaliser is an input-dependent
#   state transition.
# * Softmax attention needs a state that grows with T (rank argument); a fixed-state model can only
#   approximate it.
# * On MQAR at laptop scale, linear attention gains 0.40 in accuracy from n = 2 to n = 32 but with a
#   dip at n = 16 and a gap of 0.19 to softmax attention at n = 32: by the rules fixed in advance,
#   the Fig. 1 claim is **not reproduced** (verdict "no"); the paper's normalised attention rises
#   monotonically to 0.98, within 0.02 of softmax attention.
#
# ## Exercises
#
# 1. **State sizes.** For the MQAR models above (d = 32, one head, T = 64), how many floats does each
#    mixer keep to process the next token: linear and normalised attention at n = 2 and 32,
#    softmax attention with its KV cache (keys n = 8 wide, values 32)?
# 2. **Retention is time-invariant.** Check that `dsf.retention_system` has one Λ for every step,
#    and that a GLA system with the constant gate log γ_h gives retention's output.
# 3. **Break coincidence (a) the other way.** Build a GLA gate that is *not* rank one in
#    (time, key), e.g. gk_t[k] = -softplus(random), and show that no single pair (Δ_t, A) fits it.
# 4. **Where normalised attention is no SSD.** For the random queries of section 3 (b), at how many
#    steps does η_t decrease, i.e. Λ_t = η_{t-1}/η_t > 1?
#
# ## Solutions

# %%
# 1. Floats kept per layer to process the next token
for n in (2, 32):
    print(f"exercise 1: linear / normalised attention, n = {n:2d}: N = n d = {n * D} floats (+ {n} for the "
          f"linear attention normaliser z_t)")
print(f"exercise 1: softmax attention at T = 64: (n + d) T = {(N_SOFTMAX + D) * 64} floats, growing with T")

# %%
# 2. Retention: one Λ for all steps, and GLA with a constant gate is retention
sys_ret = dsf.retention_system(q, k, v, gamma=gamma)
o_ret, _, _ = retention_recurrent(q, k, v, gamma=gamma)
o_const, _, _ = gla_recurrent(q, k, v, np.broadcast_to(np.log(gamma)[None, None, :, None], q.shape).copy())
print("exercise 2: Lambda time axis:", sys_ret.Lambda.shape[1], "; max |GLA(log gamma) - retention| =",
      f"{np.abs(o_const - o_ret).max():.1e}")

# %%
# 3. A GLA gate of rank > 1 in (time, key) has no factorisation gk_t[k] = delta_t A[k]
g_free = -np.log1p(np.exp(rng.standard_normal((T_, K_))))  # -softplus: one head, one batch row
sv = np.linalg.svd(g_free, compute_uv=False)
print(f"exercise 3: singular values of the log-gate (T x K): {np.round(sv, 3)} -> rank {int((sv > 1e-10 * sv[0]).sum())}"
      " > 1: not delta_t A")

# %%
# 4. How often the normaliser of random queries decreases
eta = np.einsum("bthk,bthk->bth", qr, np.cumsum(kp, axis=1))
print(f"exercise 4: eta_t < eta_(t-1) at {int((np.diff(eta, axis=1) < 0).sum())} of {eta[:, 1:].size} steps")
