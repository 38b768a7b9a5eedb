# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Mamba: selection is what lets a state space model copy and recall
#
# **The paper.** Gu and Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*
# (arXiv 2312.00752). Structured state space models (S4 and its descendants) are linear and
# *time-invariant* (LTI): the same recurrence, the same convolution kernel, at every step, whatever
# the input. The paper argues that this is their weakness on "content-aware" tasks, and makes three
# parameters of the SSM, the step size Δ and the matrices B and C, functions of the input
# ("selection", the S6 layer). Its evidence on synthetic tasks (Sec. 4.1):
#
# * **Selective copying** (Table 1; T = 4096, vocabulary 16, 16 tokens to copy, 2 layers, D = 64,
#   400K steps): "gated architectures such as H3 and Mamba only partially improve performance,
#   while the selection mechanism (modifying S4 to S6) easily solves this task". Accuracy: S4
#   without gate 18.3%, S6 without gate 97.0%; H3 with S4 57.0%, with S6 99.7%; **the Mamba block
#   with S4 56.4%, with S6 99.8%** (Hyena inside H3 30.1%, inside Mamba 28.4%).
# * **Induction heads** (Table 2, full numbers in Table 11; vocabulary 16, 2 layers, trained at
#   T = 256): Mamba "generalizes perfectly to million-length sequences, or 4000× longer than it saw
#   during training, while no other method goes beyond 2×". At the training length the LTI models
#   H3 and Hyena solve the task too; what separates them from Mamba is how far they extrapolate
#   (Table 11 has the accuracy of every model at every length, 2^6 to 2^20).
#
# **The question.** At laptop scale, with the *same* Mamba block and only the SSM switched from
# selective (S6) to time-invariant (Δ, B, C learned constants: an S4D-like layer), does selection
# make the difference on these two tasks? That is the paper's "Mamba / S4" against "Mamba / S6"
# (Table 1's last rows), and Table 2's length generalisation.
#
# The code: the selective scan in `ref/mixers/selective_scan/` (recurrent, parallel and chunked
# forms), the Mamba layer and block in `ref/models/mamba.py` (the time-invariant ablation is its
# `selective=False`), the language-model scaffold in `ref/models/lm.py` (block `"mamba"`), the tasks
# in `ref/tasks/synthetic.py`. Equation numbers (1)-(4) are the paper's (Sec. 2); (1)-(9) in code
# comments of `ref/models/mamba.py` are that module's.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from ref.lessons import lesson_context
from ref.mixers.selective_scan import FORMS
from ref.models.lm import NORM_EPS, init_lm, lm_forward, lm_loss_and_grads
from ref.models.mamba import mamba_block_prefill
from ref.nn import embedding, rms_norm
from ref.tasks import get_task
from ref.train import train

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)
print(f"quick mode: {ctx.quick}; figures go to {ctx.out_dir}")

# %% [markdown]
# ## 1. The selective scan, from the paper's equations
#
# Per channel d (D of them) and state entry n (N of them), an SSM maps an input x_t to an output
# y_t through a state h_t. The continuous system h'(t) = A h(t) + B x(t), y(t) = C h(t) (1) is
# discretised with a step Δ by the zero-order hold (4), Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) − I)·ΔB,
# and run as a linear recurrence (2):
#
# $$h_t = \bar A\, h_{t-1} + \bar B\, x_t, \qquad y_t = C h_t. \tag{2}$$
#
# Mamba's code (`selective_scan_ref`) keeps Ā = exp(ΔA) but uses the simpler B̄ = ΔB (the first
# order of (4); the paper's Sec. 3.5 notes the choice matters little), with A diagonal, negative
# and real (S4D-Real, A_dn = −(n+1)). The **selection** (Algorithm 2) makes Δ, B and C functions of
# the input at every step:
#
# $$B_t = s_B(x_t),\quad C_t = s_C(x_t),\quad \Delta_t = \mathrm{softplus}(\text{Parameter} + s_\Delta(x_t)),\qquad
# h_t = e^{\Delta_t A} h_{t-1} + \Delta_t B_t\, x_t,\quad y_t = C_t\cdot h_t + D\, x_t .$$
#
# (Mamba's layer also multiplies y by a gate silu(z), z another projection of the input.) Written
# with scalar loops, one (batch, channel, state entry, step) at a time, in the selective scan's
# layout (u, Δ, z: (B, D, L); B_t, C_t: (B, N, L)):

# %%
def s6_by_definition(u, delta, A, B, C, D, z, delta_bias):
    """Algorithm 2 with softplus(Δ + bias), B̄ = ΔB and the gate silu(z), one scalar at a time."""
    Bn, Dn, L = u.shape
    N = A.shape[1]
    out = np.zeros_like(u)
    for b in range(Bn):
        for d in range(Dn):
            h = np.zeros(N)
            for t in range(L):
                dt = np.log1p(np.exp(delta[b, d, t] + delta_bias[d]))  # Δ_t = softplus(...)
                y = D[d] * u[b, d, t]
                for n in range(N):
                    h[n] = np.exp(dt * A[d, n]) * h[n] + dt * B[b, n, t] * u[b, d, t]  # (2), selective
                    y += C[b, n, t] * h[n]
                out[b, d, t] = y * z[b, d, t] / (1 + np.exp(-z[b, d, t]))  # y silu(z)
    return out


Bn, Dn, N, L = 2, 3, 4, 13
u, delta, z = (rng.standard_normal((Bn, Dn, L)) for _ in range(3))
A = -np.broadcast_to(np.arange(1.0, N + 1), (Dn, N))  # S4D-Real
B_t, C_t = rng.standard_normal((Bn, N, L)), rng.standard_normal((Bn, N, L))
D_skip, bias = rng.standard_normal(Dn), rng.standard_normal(Dn)
want = s6_by_definition(u, delta, A, B_t, C_t, D_skip, z, bias)
for form, (forward, _) in FORMS.items():
    options = {"chunk_size": 4} if form == "chunked" else {}
    got, _, _ = forward(u, delta, A, B_t, C_t, D_skip, z, bias, True, **options)
    print(f"selective scan, {form:9s} form: max |out - definition| = {np.abs(got - want).max():.1e}")

# %% [markdown]
# ## 2. The time-invariant ablation is a convolution
#
# Make Δ, B and C learned constants instead (Algorithm 1, "SSM (S4)"). Then Ā and B̄ are the same at
# every step, and unrolling (2) gives the convolution (3) with the kernel
#
# $$\bar K = (C\bar B,\ C\bar A\bar B,\ \dots,\ C\bar A^k\bar B,\ \dots), \qquad y = x * \bar K. \tag{3}$$
#
# `ref/models/mamba.py` builds this ablation with `selective=False`: x_proj and dt_proj (which
# compute Δ_t, B_t, C_t from the input) are replaced by parameters B, C (D, N) and Δ =
# softplus(dt_bias); the rest of the block (input projection, short convolution, gate, output
# projection) is unchanged. The selective scan accepts such "fixed" B and C; we check that it
# computes the convolution (3), here by a direct sum over k:

# %%
B_fix, C_fix = rng.standard_normal((Dn, N)), rng.standard_normal((Dn, N))
zero = np.zeros((Bn, Dn, L))
y_scan, _, _ = FORMS["recurrent"][0](u, zero, A, B_fix, C_fix, None, None, bias, True)  # Δ = softplus(bias)
dt = np.log1p(np.exp(bias))[:, None]  # (D, 1)
K = np.stack([(C_fix * np.exp(dt * A) ** k * dt * B_fix).sum(-1) for k in range(L)], axis=-1)  # (D, L): (3)
y_conv = np.stack([(K[:, : t + 1][:, ::-1] * u[..., : t + 1]).sum(-1) for t in range(L)], axis=-1)
print(f"LTI scan vs convolution with the kernel (3): max |difference| = {np.abs(y_scan - y_conv).max():.1e}")
print("the same kernel for every input: y_t weighs x_(t-k) by K_k, whatever x_(t-k) is")

# %% [markdown]
# That last line is the paper's argument (Sec. 3.1): an LTI model weighs the token k steps back
# by K_k whatever that token is. It can copy a token from a *fixed* distance (the plain copying
# task: "it only requires time-awareness"), but when the tokens to keep sit at random places
# among noise, "the spacing between inputs-to-outputs is varying and cannot be modeled by static
# convolution kernels". A selective model can set Δ_t ≈ 0 on a noise token, which leaves the
# state untouched (exp(0·A) = 1, 0·B = 0): it skips the token. (The rest of the Mamba block is
# not LTI: the gate silu(z) multiplies by a function of the current token, and two layers
# compose. That is why the paper's gated LTI models score well above chance, 56–57%.)
#
# ## 3. Two models, one block
#
# The language-model scaffold of `ref/models/lm.py`: embedding, 2 Mamba blocks (RMSNorm, the layer,
# a residual), RMSNorm, a head tied to the embedding. D = 32 (the paper: 64), E = 2D inner
# channels, N = 16 state entries, a short convolution of width 4. The same seed gives both models
# the same embedding and, in the first block, the same input projection, convolution and step sizes
# (the draws after the SSM's own parameters then differ); the selective model has the projections
# x_proj, dt_proj, the LTI one the constants B, C.

# %%
config = dict(D=32, n_layers=2, N=16, n_layer=2, tied=True, dtype=np.float32)


def build(vocab_size, selective, seed):
    return init_lm(np.random.default_rng(seed), vocab_size, block="mamba", selective=selective, **config)


def n_params(params):
    return sum(leaf.size for leaf in _leaves(params))


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


MODELS = {"Mamba (S6, selective)": True, "Mamba, LTI ablation (S4D-like)": False}
for name, selective in MODELS.items():
    mixer = build(16, selective, 0)["blocks"][0]["mamba"]["mixer"]
    print(f"{name:32s} {n_params(build(16, selective, 0)):6d} parameters; SSM inputs: "
          + ("x_proj " + str(mixer["x_proj"].shape) + ", dt_proj " + str(mixer["dt_proj"].shape) if selective
             else "B " + str(mixer["B"].shape) + ", C " + str(mixer["C"].shape)))

# %% [markdown]
# **Which backend.** Training runs the selective scan in its recurrent form. Full mode uses the
# jitted CPU kernel of the selective scan (`numba_kernels/selective_scan_cpu.py`, reached as
# `backend="numba"`, tested equal to the NumPy form forward and backward): the same function,
# several times faster (its first call compiles it, once per machine). Quick mode uses the NumPy
# form. The experiment is the same either way, only the time changes.

# %%
backend = "numpy" if ctx.quick else "numba"  # quick mode: tiny sizes, no time to compile kernels
scan_options = dict(mode="recurrent", backend=backend)
print("selective scan backend:", backend)

# %% [markdown]
# ## 4. Selective copying
#
# `get_task("selective_copying")`: M data tokens (ids 1..14) scattered in order among blanks (0,
# the "noise"), then M markers (15); at the j-th marker the model must output the j-th data token.
# Chance is 1/14 per answer.
#
# **Our tiny version**: T = 64, M = 4 tokens, vocabulary 16 (the paper: T = 4096, M = 16), so
# that NumPy can train it in minutes. With M = 8 at T = 64 the selective model had not solved the
# task within this budget in our trial (68% of the tokens after 1,400 steps at learning rate 1e-2,
# exercise 3's recipe; training loss 0.83 at step 1,200), so we copy 4.
# The recipe, the same for both models: AdamW (weight decay 0.01), learning rate 5e-3 with a 10%
# warmup and a cosine decay, batch 32, float32; one training seed per model. The test set is 512
# fresh sequences.

# %%
steps = 12 if ctx.quick else 1200
batch_size, lr = (16 if ctx.quick else 32), 5e-3
T_train = 24 if ctx.quick else 64  # quick mode: a shorter task, only to run every line
copy_task = get_task("selective_copying", num_tokens=4, num_blanks=T_train - 8, vocab_size=16)  # T = 64
copy_test = copy_task.sample(np.random.default_rng(1000), 64 if ctx.quick else 512)


def predict(params, inputs, chunk=128):
    """argmax logits (B, T), in batches of ``chunk`` sequences."""
    return np.concatenate([lm_forward(params, inputs[i:i + chunk], **scan_options)[0].argmax(-1)
                           for i in range(0, len(inputs), chunk)])


def fit(task, selective, seed=0):
    params = build(task.vocab_size, selective, 100 + seed)
    t0 = time.perf_counter()
    out = train(params, lambda p, b, r: lm_loss_and_grads(p, b, r, **scan_options),
                lambda r, s: task.sample(r, batch_size), steps=steps, rng=np.random.default_rng(seed),
                lr=lr, warmup_steps=steps // 10)
    return out, time.perf_counter() - t0


copy_runs, copy_acc, seconds = {}, {}, {}
for name, selective in MODELS.items():
    copy_runs[name], seconds[f"copy: {name}"] = fit(copy_task, selective)
    copy_acc[name] = copy_test.accuracy(predict(copy_runs[name].params, copy_test.inputs))
    print(f"selective copying, {name:32s} test accuracy {copy_acc[name]:.3f}"
          f"  ({seconds[f'copy: {name}']:.0f} s)")

# %% [markdown]
# ## 5. Induction heads, and how far they generalise
#
# `get_task("induction_heads")`: T − 1 random tokens (ids 0..14) with a special token s (15)
# planted once; s again at the end, where the model must output the token that followed s the
# first time ("Harry Potter … Harry → Potter"). Only that answer is scored; chance is 1/15. We
# train at T = 64 (the paper: 256), same recipe as above, and test at T = 64 … 8192, 128× the
# training length (the paper went to 4096×).
#
# **Reading long sequences in constant memory.** The recurrent form carries a state from step to
# step, so a sequence of any length can be read in segments: each block continues from the state
# (`MambaState`: the short convolution's last inputs and the SSM state h) that the previous segment
# left. `mamba_block_prefill` does exactly that; here is the scaffold of `lm_forward` around it,
# checked against `lm_forward` itself:

# %%
def last_logits(params, tokens, segment=128):
    """Logits at the last position (B, vocab), the blocks reading ``tokens`` (B, T) ``segment``
    tokens at a time with their state carried over: memory O(segment), whatever T."""
    h, _ = embedding(tokens, params["embed"])  # (B, T, D)
    for entry in params["blocks"]:
        state, outs = None, []
        for s in range(0, tokens.shape[1], segment):
            y, state = mamba_block_prefill(entry["mamba"], h[:, s:s + segment], state, **scan_options)
            outs.append(y)
        h = np.concatenate(outs, axis=1)  # (B, T, D)
    n, _ = rms_norm(h[:, -1], params["norm"]["weight"], eps=NORM_EPS)  # (B, D)
    return n @ params["embed"].T  # the tied head


check_tokens = get_task("induction_heads", seq_len=40).sample(np.random.default_rng(2), 3).inputs
probe = build(16, True, 7)
print("segments of 16 vs lm_forward: max |logit difference| =",
      f"{np.abs(last_logits(probe, check_tokens, 16) - lm_forward(probe, check_tokens)[0][:, -1]).max():.1e}")

# %%
induction_task = get_task("induction_heads", seq_len=T_train, vocab_size=16)
test_lengths = [T_train * 2**i for i in range(4 if ctx.quick else 8)]  # up to 128x the training length
n_test = 16 if ctx.quick else 128

induction_runs, induction_acc = {}, {}
for name, selective in MODELS.items():
    induction_runs[name], seconds[f"induction: {name}"] = fit(induction_task, selective)
    t0 = time.perf_counter()
    induction_acc[name] = []
    for T_test in test_lengths:
        test = get_task("induction_heads", seq_len=T_test, vocab_size=16).sample(np.random.default_rng(T_test), n_test)
        pred = last_logits(induction_runs[name].params, test.inputs).argmax(-1)  # (B,)
        induction_acc[name].append(float((pred == test.targets[:, -1]).mean()))
    seconds[f"induction test: {name}"] = time.perf_counter() - t0
    print(f"induction heads, {name:32s} accuracy at T = {test_lengths}: {np.round(induction_acc[name], 3)}")

# %% [markdown]
# ## 6. What the selective model learned: where does Δ_t move?
#
# The paper's intuition behind both tasks (Sec. 3.5.2) is that Δ_t does the selecting: large Δ_t writes the current token into
# the state (and forgets some of the old), Δ_t ≈ 0 leaves the state as it was. In the trained
# selective-copying model, here is the step size Δ_t of every inner channel of the first block,
# averaged over channels, on blanks and on data tokens (read from the NumPy scan's cache):

# %%
params_s6 = copy_runs["Mamba (S6, selective)"].params
sample = copy_test.inputs[:64]
_, cache = lm_forward(params_s6, sample, mode="recurrent", backend="numpy")
delta_s6 = cache.blocks[0][1]["scan"].delta  # (B, E, T): softplus(Δ + bias) of the first block
mean_delta = delta_s6.mean(axis=1)  # (B, T)
is_data = (sample != 0) & (sample != copy_task.marker_id)
is_blank = sample == 0
delta_data, delta_blank = float(mean_delta[is_data].mean()), float(mean_delta[is_blank].mean())
params_lti = copy_runs["Mamba, LTI ablation (S4D-like)"].params
delta_lti = float(np.log1p(np.exp(params_lti["blocks"][0]["mamba"]["mixer"]["dt_bias"])).mean())
print(f"selective model, block 1: mean Δ on data tokens {delta_data:.4f}, on blanks {delta_blank:.4f}"
      f" (ratio {delta_data / delta_blank:.1f}); LTI model: Δ = {delta_lti:.4f} on every token")

# %% [markdown]
# ## 7. The figure and the verdict
#
# The tests, fixed before the runs:
#
# * **selective copying reproduced** when the selective model copies ≥ 90% of the tokens and the
#   LTI ablation scores at least 30 points less ("far lower");
# * **induction heads reproduced** when the selective model is ≥ 95% right at every tested length
#   (up to 128× the training length) and the LTI ablation is at least 30 points lower at the
#   longest length, or never learned the task at all.
#
# Both: "yes"; one of the two: "partly"; neither: "no".

# %%
chance_copy, chance_ind = 1 / 14, 1 / 15
S6, LTI = list(MODELS)
copy_ok = copy_acc[S6] >= 0.9 and copy_acc[LTI] <= copy_acc[S6] - 0.3
ind_ok = min(induction_acc[S6]) >= 0.95 and induction_acc[LTI][-1] <= induction_acc[S6][-1] - 0.3
verdict = "yes" if copy_ok and ind_ok else "partly" if copy_ok or ind_ok else "no"
print(f"selective copying reproduced: {copy_ok}; induction heads reproduced: {ind_ok} -> {verdict}")

fig, axes = plt.subplots(2, 2, figsize=(13, 9))
colors = {S6: "C0", LTI: "C3"}

ax = axes[0, 0]
window = max(1, steps // 40)
for runs, style, task_name in ((copy_runs, "-", "selective copying"), (induction_runs, "--", "induction heads")):
    for name, run in runs.items():
        loss = np.convolve(run.history["loss"], np.ones(window) / window, mode="valid")
        ax.plot(np.arange(len(loss)) + window, loss, style, color=colors[name], label=f"{task_name}: {name}")
ax.axhline(np.log(14), color="gray", lw=0.8, ls=":")
ax.axhline(np.log(15), color="gray", lw=0.8, ls=":")
ax.text(0, np.log(15) * 1.01, "chance: ln 14, ln 15", fontsize=8, color="gray")
ax.set_xlabel("training step")
ax.set_ylabel(f"training loss (mean of {window} steps)")
ax.set_title(f"training, {steps} steps, batch {batch_size}, T = {T_train} ({backend} scan)")
ax.legend(fontsize=7)

ax = axes[0, 1]
names = [S6, LTI]
ours = [copy_acc[n] for n in names]
paper = [0.998, 0.564]  # Table 1: the Mamba block with S6, with S4
x = np.arange(2)
ax.bar(x - 0.18, ours, 0.36, color=[colors[n] for n in names],
       label=f"ours: T = {copy_task.seq_len}, {copy_task.num_tokens} tokens")
ax.bar(x + 0.18, paper, 0.36, color=[colors[n] for n in names], alpha=0.35,
       label="paper, Table 1 (Mamba block): T = 4096, 16 tokens")
for i, (a, p) in enumerate(zip(ours, paper)):
    ax.text(i - 0.18, a + 0.02, f"{a:.3f}", ha="center")
    ax.text(i + 0.18, p + 0.02, f"{p:.3f}", ha="center", color="gray")
ax.axhline(chance_copy, color="k", ls="--", lw=1, label=f"chance ({chance_copy:.3f})")
ax.set_xticks(x, ["Mamba block + S6\n(selective)", "Mamba block + LTI SSM\n(the paper's S4 row)"])
ax.set_ylim(0, 1.3)
ax.set_ylabel("test accuracy (tokens copied)")
ax.set_title("selective copying")
ax.legend(fontsize=8, loc="upper right", ncol=1)

ax = axes[1, 0]
for name in names:
    ax.plot(test_lengths, induction_acc[name], "o-", color=colors[name], label=name)
ax.axvline(induction_task.seq_len, color="k", ls=":", lw=1)
ax.text(induction_task.seq_len * 1.05, 0.5, "training\nlength", fontsize=8)
ax.axhline(chance_ind, color="k", ls="--", lw=1, label=f"chance ({chance_ind:.3f})")
ax.set_xscale("log", base=2)
ax.set_ylim(0, 1.05)
ax.set_xlabel("test sequence length T")
ax.set_ylabel(f"accuracy ({n_test} sequences per length)")
ax.set_title(f"induction heads: trained at T = {induction_task.seq_len}, tested up to "
             f"{test_lengths[-1]} ({test_lengths[-1] // induction_task.seq_len}x)")
ax.legend(fontsize=8)

ax = axes[1, 1]
row = 0
t_axis = np.arange(sample.shape[1])
ax.plot(t_axis, mean_delta[row], "-", color=colors[S6], lw=1, label="selective: Δ_t (mean over channels)")
ax.axhline(delta_lti, color=colors[LTI], lw=1, label="LTI: Δ (mean over channels), every step")
marks = {"data token": (is_data[row], "o"), "marker": (sample[row] == copy_task.marker_id, "v")}
for label, (where, marker) in marks.items():
    ax.plot(t_axis[where], mean_delta[row][where], marker, color="k", ms=5, label=label)
ax.set_yscale("log")
ax.set_xlabel("position t in one test sequence (blanks elsewhere)")
ax.set_ylabel("step size Δ_t, first block")
ax.set_title(f"what selection learned: Δ on data {delta_data:.3f} vs blanks {delta_blank:.4f}")
ax.legend(fontsize=8)
fig.tight_layout()
ctx.save_figure(fig)

# %%
ctx.save_result(
    title="Mamba: selection is what lets a state space model copy and recall",
    paper="mamba",
    claim=(
        "Making Δ, B, C input-dependent (S6) solves content-aware tasks that time-invariant SSMs cannot: "
        "on selective copying (Table 1; T = 4096, 16 tokens, vocab 16) the Mamba block scores 99.8% with S6 "
        "against 56.4% with S4 (no gate: 97.0% vs 18.3%); on induction heads (Table 2/11; trained at T = 256) "
        "Mamba 'generalizes perfectly to million-length sequences, or 4000x longer than it saw during training, "
        "while no other method goes beyond 2x'. Tiny version: the same Mamba block with the SSM selective or "
        "LTI (Δ, B, C learned constants), selective copying at T = 64 with 4 tokens, induction heads trained at "
        "T = 64 and tested to 128x."
    ),
    measured=(
        f"after {steps} steps (batch {batch_size}, one seed per model; {backend} scan): selective copying test "
        f"accuracy {copy_acc[S6]:.3f} (S6) vs {copy_acc[LTI]:.3f} (LTI), chance {chance_copy:.3f}; induction heads "
        f"accuracy at T = {test_lengths[0]} / {test_lengths[-1]}: S6 {induction_acc[S6][0]:.3f} / "
        f"{induction_acc[S6][-1]:.3f}, LTI {induction_acc[LTI][0]:.3f} / {induction_acc[LTI][-1]:.3f} "
        f"(min of S6 over all lengths {min(induction_acc[S6]):.3f}), chance {chance_ind:.3f}; "
        f"the selective model's mean Δ in block 1 is {delta_data:.3f} on data tokens and {delta_blank:.4f} on blanks."
    ),
    reproduced=verdict,
    numbers={
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "config": {k: (v.__name__ if isinstance(v, type) else v) for k, v in config.items()},
        "backend": backend,
        "selective_copying": {"seq_len": copy_task.seq_len, "num_tokens": copy_task.num_tokens,
                              "vocab_size": copy_task.vocab_size, "n_test": len(copy_test.inputs),
                              "test_accuracy": copy_acc, "chance": chance_copy,
                              "paper_table1_mamba_block": {"S6": 0.998, "S4": 0.564}},
        "induction_heads": {"train_seq_len": induction_task.seq_len, "vocab_size": induction_task.vocab_size,
                            "test_lengths": test_lengths, "n_test_per_length": n_test,
                            "accuracy": induction_acc, "chance": chance_ind},
        "final_training_loss": {f"copy: {n}": float(r.history["loss"][-50:].mean()) for n, r in copy_runs.items()}
        | {f"induction: {n}": float(r.history["loss"][-50:].mean()) for n, r in induction_runs.items()},
        "delta_block1": {"selective_data_tokens": delta_data, "selective_blanks": delta_blank, "lti_every_token": delta_lti},
        "seconds": seconds,
        "verdict_tests": {"selective_copying": bool(copy_ok), "induction_heads": bool(ind_ok)},
    },
)

# %% [markdown]
# **Reading the result.** (The numbers of the committed run are in
# `figures/07_mamba_selective_copying.json` and the gallery. Quick mode trains for 12 steps on
# shorter sequences: its accuracies are chance and it is no verdict.)
#
# *Selective copying: reproduced.* After 1,200 steps the selective model copies 99.9% of the
# tokens of 512 test sequences (training loss 0.02); the LTI ablation, the same block with Δ, B, C
# frozen, reaches 14.0% (chance 7.1%; training loss 2.11, still near ln 14 = 2.64 after a quick
# first drop). The paper's gap for the Mamba block is 99.8% against 56.4% at T = 4096 with 16
# tokens; ours is wider at the LTI end. Our LTI block gets 2 layers of D = 32 and 1,200 steps
# where the paper's had 400K; we do not claim that it would stay at 14% with the paper's budget,
# only that with the *same* budget and recipe, selection is the difference between solving the
# task and barely beating chance. (The loss curves show where the selective model found the
# solution: a plateau near ln 14 for about 250 steps, then a steady fall.)
#
# *Induction heads: partly reproduced.* Trained at T = 64, the selective model is 100% right at
# 1×, 2×, 4× and 8× the training length (T = 64 ... 512), then 96.9% at 16×, 85.2% at 32×,
# 63.3% at 64× and 57.8% at 128× (T = 8192; 128 sequences per length, so about ±4 points). The
# paper's Mamba stayed at 100% to 4000×; ours generalises well past the 2× at which the paper's
# other models stop, but not "perfectly". The LTI ablation never learned the task: 42.2% at the
# training length (loss 1.56 at the end, still falling), 14.1% at 2×, chance (7.0%) at 128×. By the
# test we fixed in advance (S6 ≥ 95% at every length) the claim of perfect extrapolation did not
# reproduce here; the ablation's contrast did. One plausible cause, which we did not test: the
# decay exp(Δ_t A) over thousands of steps that the model never saw in training slowly erodes the
# one token it must keep, unless Δ_t is driven to (nearly) zero on every unimportant token; the
# paper's models trained at T = 256 for far longer.
#
# *Where Δ_t moves.* In the first block, averaged over its 64 inner channels, the selective model's
# step is 0.118 on data tokens against 0.092 on blanks (ratio 1.3; the LTI model's constant step
# is 0.021). In the test sequence of the figure Δ_t peaks on the data tokens and dips sharply
# (to about 0.03) two steps after each. That is a selection signal, but not the clean "Δ_t ≈ 0 on
# every blank" switch of the paper's intuition: averaged over channels the contrast is modest, and
# the selection is shared with B_t, C_t, the gate and the second block.

# %% [markdown]
# ## Summary
#
# * S6 is the SSM recurrence (2) with Δ, B and C computed from the input at every step (Algorithm
#   2); the three forms of `ref.mixers.selective_scan` compute the same function as a scalar loop.
# * With Δ, B, C constant the same layer is LTI, a causal convolution with the kernel (3): it weighs
#   a token by its distance, not by what it is. `init_mamba_layer(..., selective=False)` is that
#   ablation inside an unchanged Mamba block.
# * At laptop scale (2 blocks, D = 32, 1,200 steps, one seed), selection is the whole
#   difference on selective copying: 99.9% against 14.0% for the same block made LTI (the paper:
#   99.8% against 56.4%). On induction heads trained at T = 64 the selective model is perfect up to
#   8× the training length and degrades beyond (57.8% at 128×), while the LTI block does not learn
#   the task even at the training length (42.2%): the contrast reproduces, the paper's perfect
#   extrapolation to 4000× does not, here.
# * The recurrent form reads a sequence of any length in constant memory: the state of a block is
#   the convolution's last 3 inputs and h (E × N), carried from segment to segment.
#
# ## Exercises
#
# 1. *Selection as gating* (the paper's Theorem 1). With N = 1, A = −1, B = 1 and the zero-order
#    hold B̄ = (1 − e^{−Δ})/(−A)·B of (4), show that h_t = (1 − g_t) h_{t−1} + g_t x_t with
#    g_t = 1 − e^{−Δ_t} = σ(Δ_raw) when Δ_t = softplus(Δ_raw): a gated RNN. Check it with the
#    selective scan, passing a variable B_t that turns Mamba's ΔB into the zero-order hold.
# 2. *The LTI kernel.* For the trained LTI model of selective copying, compute the kernel (3) of a
#    few channels of the first block (Δ, A, B, C are all parameters) and plot K_k against k. How
#    far back does it reach, compared with T = 64? What can such a kernel do with a token whose
#    position varies from sequence to sequence?
# 3. *Eight tokens.* Train the selective model on selective copying with M = 8 tokens (T = 64) for
#    as many steps as you can afford; where is it after 1,200 steps, and does a larger learning rate
#    help? (Our trial, the solution below run for 1,400 steps at 1e-2: 68% of the tokens of 128
#    test sequences; mean training loss 2.67 over the first 50 steps, 1.34 at step 600, 0.83 at
#    step 1,200.)
#
# ## Solutions

# %%
# 1. Theorem 1: with B_t = (1 - exp(-Δ_t)) / Δ_t, Mamba's b_t = Δ_t B_t x_t is the zero-order hold
L1 = 30
x1 = rng.standard_normal((1, 1, L1))
raw = rng.standard_normal((1, 1, L1))
delta1 = np.log1p(np.exp(raw))  # Δ_t = softplus(raw)
B_zoh = ((1 - np.exp(-delta1)) / delta1)[:, 0][:, None, :]  # (B, N = 1, L): variable B
ones = np.ones((1, 1, L1))
y1, _, _ = FORMS["recurrent"][0](x1, raw, -np.ones((1, 1)), B_zoh, ones, None, None, None, True)
g = 1 / (1 + np.exp(-raw[0, 0]))  # σ(raw) = 1 - exp(-softplus(raw))
h, gated = 0.0, []
for t in range(L1):
    h = (1 - g[t]) * h + g[t] * x1[0, 0, t]
    gated.append(h)
print(f"exercise 1: max |selective scan - gated RNN| = {np.abs(y1[0, 0] - np.array(gated)).max():.1e}")

# %%
# 2. The kernel of the first block of the trained LTI model, channels 0..3
mixer = params_lti["blocks"][0]["mamba"]["mixer"]
A_lti = -np.exp(mixer["A_log"].astype(np.float64))  # (E, N)
dt_lti = np.log1p(np.exp(mixer["dt_bias"].astype(np.float64)))[:, None]  # (E, 1)
k = np.arange(copy_task.seq_len)[:, None, None]
K_lti = (mixer["C"] * np.exp(dt_lti * A_lti) ** k * dt_lti * mixer["B"]).sum(-1)  # (T, E): (3)
reach = (np.abs(K_lti) > 0.1 * np.abs(K_lti).max(axis=0)).sum(axis=0)  # steps with |K_k| > 10% of the peak
print("exercise 2: |K_k| above 10% of its peak for", np.round(np.percentile(reach, [10, 50, 90])).astype(int),
      f"of the {copy_task.seq_len} steps (10th, 50th, 90th percentile over the channels): one fixed weighting of the"
      " past per channel,"
      " the same for a data token and for a blank at that distance")

# %%
# 3. Eight tokens: the task and one short run (the full exercise takes many more steps)
eight = get_task("selective_copying", num_tokens=8, num_blanks=48, vocab_size=16)
ex_steps = 3 if ctx.quick else 100
ex = train(build(16, True, 3), lambda p, b, r: lm_loss_and_grads(p, b, r, **scan_options),
           lambda r, s: eight.sample(r, batch_size), steps=ex_steps, rng=np.random.default_rng(3), lr=1e-2,
           progress=False)
ex_test = eight.sample(np.random.default_rng(4), 32 if ctx.quick else 128)
print(f"exercise 3: 8 tokens, {ex_steps} steps at lr 1e-2: test accuracy"
      f" {ex_test.accuracy(predict(ex.params, ex_test.inputs)):.3f} (chance {1 / 14:.3f}); keep going")
