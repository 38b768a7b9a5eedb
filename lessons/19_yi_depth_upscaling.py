# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Growing a trained model deeper: Yi's depth up-scaling
#
# **The paper.** 01.AI (Young et al.), *Yi: Open Foundation Models by 01.AI* (arXiv 2403.04652).
# The Yi models are Llama-architecture decoders (pre-RMSNorm, grouped-query attention, SwiGLU, RoPE,
# no biases). Section 7.3 ("depth upscaling") builds Yi-9B out of the trained Yi-6B without training
# from scratch: the 32 blocks of Yi-6B become 48 by **duplicating a contiguous range of 16 blocks
# (12 to 27)**, and the result is further pretrained (about 0.8T more tokens). The range is chosen
# with a diagnostic: for each block, the **cosine similarity between its input and its output**
# hidden states. In the middle-to-late blocks of Yi-6B it is close to 1, i.e. these blocks barely
# rotate the residual stream, so running them a second time should barely change what the model
# computes. The paper reports that the freshly up-scaled model ("Yi-9B Init") scores about like
# Yi-6B, and that after continued training Yi-9B is clearly better, especially at code and math.
#
# **The question.** At laptop scale, on a small Llama character model:
#
# 1. Does duplicating the *highest*-cosine blocks barely change the model at step 0, compared with
#    duplicating the *lowest*-cosine ones?
# 2. Does the up-scaled model then train to a lower loss than the original trained for the same
#    number of steps? And, the honest comparison, for the same *compute* (the deeper model costs
#    more per step)?
#
# Code: `ref/models/yi.py` (the cosine diagnostic and the up-scaling) on top of
# `ref/models/transformer.py` (the Llama block and language model, with hand-written backward).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from ref.lessons import lesson_context
from ref.models.transformer import (
    init_transformer_lm,
    llama_block,
    transformer_lm_forward,
    transformer_lm_loss_and_grads,
)
from ref.models.yi import depth_upscale, layer_cosine_similarity, pick_range, residual_streams, upscaled_order
from ref.nn import cross_entropy
from ref.tasks import CharTokenizer, lm_batches, load_text_corpus, train_val_split
from ref.train import get_optimizer, train
from ref.train.tree import tree_flatten

ctx = lesson_context(__file__)
SEED = 0

# %% [markdown]
# ## 1. The diagnostic and the operation
#
# Write the residual stream entering block l as h_l (h_0 the token embeddings) and
# h_{l+1} = block_l(h_l). The diagnostic (`ref/models/yi.py`, equation (2)) is the per-token
# cosine, averaged over tokens:
#
# $$c_l = \operatorname{mean}_{b,t}\ \frac{\langle h_l[b,t],\, h_{l+1}[b,t]\rangle}{\lVert h_l[b,t]\rVert\,\lVert h_{l+1}[b,t]\rVert}. \tag{2}$$
#
# A pre-norm block is h + f(h) (twice over: attention, then the MLP). c_l ≈ 1 means the branch
# f adds little next to h, so the block nearly passes its input through, and a second copy of it
# right after would also nearly pass its input through. Depth up-scaling of the range [s, e)
# (equation (3)):
#
# $$\text{blocks}_{0..e-1},\ \text{copy}(\text{blocks}_{s..e-1}),\ \text{blocks}_{e..L-1}. \tag{3}$$
#
# For Yi-9B, L = 32, [s, e) = [12, 28): 48 blocks. The indices the new model runs:

# %%
yi9b = upscaled_order(32, 12, 28)
print(len(yi9b), "blocks:", yi9b)

# %% [markdown]
# A first check on a random float64 model: the up-scaled model's logits equal running the
# original blocks in that order by hand (the stream of `residual_streams`, then the final norm
# and the head), and its arrays are copies, not views of the original.

# %%
rng = np.random.default_rng(SEED)
tiny = init_transformer_lm(rng, 11, 16, 4, "llama", num_heads=4, num_kv_heads=2)
tokens = rng.integers(0, 11, (2, 9))
up = depth_upscale(tiny, 1, 3)
h = tiny["embed"][tokens]  # (B, T, D)
for i in upscaled_order(4, 1, 3):
    h, _ = llama_block(tiny["blocks"][i]["llama"], h)  # (B, T, D)
by_hand = (h / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + 1e-6)) * tiny["norm"]["weight"] @ tiny["head"]
logits_up, _ = transformer_lm_forward(up, tokens)
print(f"max |up-scaled logits - by hand| = {np.abs(logits_up - by_hand).max():.1e}")
shared = [path for path, a in tree_flatten(up).items() for b in tree_flatten(tiny).values() if np.shares_memory(a, b)]
print("arrays shared with the original:", shared)
print("streams h_0..h_L:", len(residual_streams(tiny, tokens)), "; cosines c_l:", layer_cosine_similarity(tiny, tokens).round(3))

# %% [markdown]
# ## 2. The base model: a small Llama on Coriolanus
#
# One character per token (Shakespeare's *Coriolanus*, the corpus this package ships), the first
# 90% for training and the last 10% for validation. The "Yi-6B" of this lesson: 4 Llama blocks,
# width D = 48, 4 query heads sharing 2 key/value heads (GQA, as Yi), SwiGLU width 128, context
# T = 32, batch 16, float32, AdamW, lr 3e-3 with 10% warmup and cosine decay to 3e-4.
# Validation loss (nats per character) is measured on non-overlapping windows of the held-out text.

# %%
text = load_text_corpus()
tok = CharTokenizer.from_corpus(text)
ids = tok.encode(text)  # (N,)
train_ids, val_ids = train_val_split(ids, val_fraction=0.1)
VOCAB, D, N_LAYERS, HEADS, KV_HEADS, T, B = tok.vocab_size, 48, 4, 4, 2, 32, 16
DTYPE = np.float32
PRETRAIN_STEPS = 30 if ctx.quick else 1000
CONTINUE_STEPS = 12 if ctx.quick else 300
OPT = get_optimizer("adamw", weight_decay=0.0)

n_val = 16 if ctx.quick else len(val_ids) // (T + 1)
val_starts = np.arange(n_val) * (T + 1)  # (W,)
val_x = val_ids[val_starts[:, None] + np.arange(T)]  # (W, T)
val_y = val_ids[val_starts[:, None] + np.arange(T) + 1]  # (W, T)


def val_loss(params):
    """Mean next-character cross-entropy (nats) over the validation windows."""
    total = 0.0
    for i in range(0, n_val, 64):
        logits, _ = transformer_lm_forward(params, val_x[i : i + 64])  # (b, T, vocab)
        loss, _ = cross_entropy(logits, val_y[i : i + 64])
        total += float(loss) * len(logits)
    return total / n_val


t0 = time.perf_counter()
base = init_transformer_lm(
    np.random.default_rng(SEED), VOCAB, D, N_LAYERS, "llama", num_heads=HEADS, num_kv_heads=KV_HEADS, dtype=DTYPE
)
rng_train = np.random.default_rng(SEED + 1)
base, _, base_hist = train(
    base, transformer_lm_loss_and_grads, lm_batches(train_ids, B, T, rng_train), steps=PRETRAIN_STEPS,
    rng=rng_train, optimizer=OPT, lr=3e-3, warmup_steps=max(1, PRETRAIN_STEPS // 10), min_lr=3e-4,
    clip_norm=1.0, progress=False,
)
base_val = val_loss(base)
print(f"pretrained {PRETRAIN_STEPS} steps in {time.perf_counter() - t0:.1f} s: validation {base_val:.4f} nats/char")

# %% [markdown]
# ## 3. Which blocks barely change the stream?
#
# The cosine (2) of each block on the validation windows:

# %%
cos = layer_cosine_similarity(base, val_x[:64])
print("c_l per block:", cos.round(4))

# %% [markdown]
# ## 4. The verdict rule, fixed before the experiment
#
# We duplicate half the blocks, as Yi did (16 of 32): a window of n = 2 of the 4 blocks, the one
# of highest mean cosine ("high", Yi's rule, `pick_range(..., highest=True)`) and the one of lowest
# ("low"). Step 0 is the validation loss of the up-scaled model before any training, minus the
# base model's. Then three runs continue from the same base, each with a fresh AdamW at a constant
# lr 1e-3 (10% warmup), the same batches: the original 4-block model, the high up-scaled model and
# the low up-scaled model, each for S steps; the original continues to r·S steps, where r is the
# up-scaled model's training FLOPs per token over the original's (counted as in lesson 16: 2 FLOPs
# per matrix weight, plus attention's 2D(T+1) per block, times 3 for forward and backward).
#
# * **A (step 0):** Δ_high < Δ_low, where Δ = val loss of the up-scaled model at step 0 minus the
#   base model's.
# * **B (equal steps):** after S steps the high up-scaled model's validation loss is lower than the
#   original's at S steps by more than 0.01 nats (about the standard error of a mean over ~15k
#   validation characters).
# * **C (equal compute):** the same, against the original at r·S steps.
#
# **Reproduced: yes** if A, B and C hold; **partly** if A or B holds but not all three; **no** if
# neither A nor B holds. (The paper claims A and B; it does not claim C.) The rule is computed in
# code below and was not changed after seeing the results.

# %%
MARGIN = 0.01
N_DUP = N_LAYERS // 2
high = pick_range(cos, N_DUP, highest=True)
low = pick_range(cos, N_DUP, highest=False)
print(f"high-cosine window {high}, low-cosine window {low}")

# every window of 1 and of 2 blocks, for the picture: its mean cosine and the step-0 change
windows = [(s, s + n) for n in (1, 2) for s in range(N_LAYERS - n + 1)]
step0 = {}
for s, e in windows:
    step0[(s, e)] = val_loss(depth_upscale(base, s, e)) - base_val
    print(f"duplicate blocks [{s}, {e}): mean cosine {cos[s:e].mean():.4f}, step-0 change {step0[(s, e)]:+.4f} nats")
delta_high, delta_low = step0[high], step0[low]

# %% [markdown]
# ## 5. Continued training, at equal steps and at equal compute


# %%
def matmul_weights(params):
    """Weights used in matrix products: every array of 2 or more axes but the token embedding."""
    return int(sum(a.size for path, a in tree_flatten(params).items() if a.ndim >= 2 and path != "embed"))


def train_flops_per_token(params):
    return 3 * (2 * matmul_weights(params) + len(params["blocks"]) * 2 * D * (T + 1))


up_high, up_low = depth_upscale(base, *high), depth_upscale(base, *low)
ratio = train_flops_per_token(up_high) / train_flops_per_token(base)
S = CONTINUE_STEPS
S_equal = int(round(ratio * S))
EVAL_EVERY = max(1, S // (2 if ctx.quick else 6))
print(f"FLOPs per token: up-scaled / original = {ratio:.3f}; original continues {S_equal} steps")


def continue_training(params, steps, seed=SEED + 2):
    """Fresh AdamW, constant lr 1e-3 after a 10% warmup (of S), the same batches for every run;
    validation loss every EVAL_EVERY steps. Returns (params, [(step, val)], seconds)."""
    rng = np.random.default_rng(seed)
    batches = lm_batches(train_ids, B, T, rng)
    curve, state, done, seconds = [(0, val_loss(params))], None, 0, 0.0
    while done < steps:
        nxt = min(steps, done + EVAL_EVERY)
        t = time.perf_counter()
        params, state, _ = train(
            params, transformer_lm_loss_and_grads, batches, steps=nxt, rng=rng, optimizer=OPT, lr=1e-3,
            warmup_steps=max(1, S // 10), min_lr=1e-3, clip_norm=1.0, opt_state=state, progress=False,
        )
        seconds += time.perf_counter() - t
        done = nxt
        curve.append((done, val_loss(params)))
    return params, curve, seconds


runs = {}
for name, (params, steps) in {"original": (base, S_equal), "up-scaled (high)": (up_high, S), "up-scaled (low)": (up_low, S)}.items():
    _, curve, seconds = continue_training(params, steps)
    runs[name] = dict(curve=curve, seconds=seconds, steps=steps)
    print(f"{name:17s}: {steps} steps in {seconds:5.1f} s; validation " + ", ".join(f"{s}:{v:.4f}" for s, v in curve))


def val_at(name, step):
    return dict(runs[name]["curve"])[step]


# the original's curve is evaluated every EVAL_EVERY steps, and S is a multiple of EVAL_EVERY
assert S % EVAL_EVERY == 0, "choose S and EVAL_EVERY so that the original is evaluated at step S"
orig_equal_steps = val_at("original", S)
orig_equal_compute = val_at("original", S_equal)
high_final, low_final = val_at("up-scaled (high)", S), val_at("up-scaled (low)", S)
measured_time_ratio = (runs["up-scaled (high)"]["seconds"] / S) / (runs["original"]["seconds"] / S_equal)

# %% [markdown]
# ## 6. The verdict, computed from the rule of section 4

# %%
A = bool(delta_high < delta_low)
B_ok = bool(high_final < orig_equal_steps - MARGIN)
C_ok = bool(high_final < orig_equal_compute - MARGIN)
reproduced = "yes" if (A and B_ok and C_ok) else ("partly" if (A or B_ok) else "no")
print(f"A (step 0): delta_high {delta_high:+.4f} < delta_low {delta_low:+.4f}: {A}")
print(f"B (equal steps, {S}): up-scaled {high_final:.4f} vs original {orig_equal_steps:.4f}: {B_ok}")
print(f"C (equal compute, original {S_equal} steps): up-scaled {high_final:.4f} vs original {orig_equal_compute:.4f}: {C_ok}")
print("reproduced:", reproduced)

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
ax = axes[0]
colors = ["tab:green" if high[0] <= l < high[1] else ("tab:red" if low[0] <= l < low[1] else "tab:gray") for l in range(N_LAYERS)]
ax.bar(range(N_LAYERS), cos, color=colors)
ax.set(xlabel="block l", ylabel="mean cos(h_l, h_{l+1})", title="(a) input/output cosine per block (2)",
       ylim=(min(0.0, cos.min() - 0.05), 1.0))
ax.set_xticks(range(N_LAYERS))
ax.text(0.02, 0.95, f"green: high window {high}\nred: low window {low}", transform=ax.transAxes, va="top", fontsize=8)
ax = axes[1]
for (s, e), d in step0.items():
    ax.scatter(cos[s:e].mean(), d, color="tab:blue" if e - s == 1 else "tab:orange")
    ax.annotate(f"[{s},{e})", (cos[s:e].mean(), d), fontsize=8, xytext=(3, 3), textcoords="offset points")
ax.scatter([], [], color="tab:blue", label="1 block duplicated")
ax.scatter([], [], color="tab:orange", label="2 blocks duplicated")
ax.axhline(0, color="k", lw=0.5)
ax.set(xlabel="mean cosine of the duplicated window", ylabel="step-0 change of validation loss (nats)",
       title="(b) up-scaling before any training")
ax.legend(fontsize=8)
ax = axes[2]
f_orig, f_up = train_flops_per_token(base), train_flops_per_token(up_high)
for name, style in (("original", "k-o"), ("up-scaled (high)", "g-o"), ("up-scaled (low)", "r--o")):
    steps_, vals = zip(*runs[name]["curve"])
    per_token = f_orig if name == "original" else f_up
    ax.plot(np.array(steps_) * B * T * per_token / 1e12, vals, style, ms=3, label=name)
ax.axvline(S * B * T * f_up / 1e12, color="gray", ls=":", lw=1)
ax.plot(S * B * T * f_orig / 1e12, orig_equal_steps, "ko", mfc="none", ms=9, label=f"original at {S} steps (equal steps)")
ax.set(xlabel="continued-training compute (TFLOPs)", ylabel="validation loss (nats/char)",
       title=f"(c) continued training (dotted: {S} up-scaled steps)")
ax.legend(fontsize=8)
fig.suptitle(f"Yi depth up-scaling on a {N_LAYERS}-block Llama character model ({'quick' if ctx.quick else 'full'} mode)")
fig.tight_layout()
ctx.save_figure(fig)

ctx.save_result(
    title="Yi: depth up-scaling by duplicating high-cosine blocks",
    paper="yi",
    claim=(
        "Yi-9B is made from Yi-6B by duplicating the 16 blocks 12-27 (32 -> 48 blocks), chosen because "
        "their input/output cosine similarity is close to 1; the up-scaled model (Yi-9B Init) performs "
        "about like Yi-6B, and after continued pretraining Yi-9B is clearly better (Section 7.3)."
    ),
    measured=(
        f"4-block Llama char model (D = {D}), {PRETRAIN_STEPS} pretraining steps, block cosines "
        f"{np.round(cos, 3).tolist()}. Step 0: duplicating the high window {high} changes validation loss "
        f"by {delta_high:+.4f} nats, the low window {low} by {delta_low:+.4f}. After {S} continued steps: "
        f"up-scaled (high) {high_final:.4f}, up-scaled (low) {low_final:.4f}, original {orig_equal_steps:.4f} "
        f"at equal steps and {orig_equal_compute:.4f} at equal FLOPs ({S_equal} steps, ratio {ratio:.2f}). "
        f"A={A}, B={B_ok}, C={C_ok}."
    ),
    reproduced=reproduced,
    numbers={
        "config": {"D": D, "n_layers": N_LAYERS, "heads": HEADS, "kv_heads": KV_HEADS, "T": T, "batch": B,
                   "dtype": "float32", "pretrain_steps": PRETRAIN_STEPS, "continue_steps": S,
                   "continue_lr": 1e-3, "seed": SEED, "val_windows": int(n_val), "margin": MARGIN},
        "base_val": base_val,
        "cosines": cos.tolist(),
        "high_window": list(high),
        "low_window": list(low),
        "step0_change": {f"[{s},{e})": v for (s, e), v in step0.items()},
        "flops_ratio": ratio,
        "measured_time_ratio": measured_time_ratio,
        "original_steps_equal_compute": S_equal,
        "curves": {name: r["curve"] for name, r in runs.items()},
        "final": {"upscaled_high": high_final, "upscaled_low": low_final, "original_equal_steps": orig_equal_steps,
                  "original_equal_compute": orig_equal_compute},
        "verdict": {"A_step0": A, "B_equal_steps": B_ok, "C_equal_compute": C_ok},
    },
)

# %% [markdown]
# ## 7. What we found
#
# The full run (1,000 pretraining steps, 300 continued steps; the numbers in
# `figures/19_yi_depth_upscaling.json`):
#
# * **The cosines** are 0.68, 0.87, 0.96 and 0.87 for blocks 0-3. The first block rotates the stream
#   most (the token embeddings are small, so its output dominates its input). None is close to 1:
#   in a 4-block model every block does real work.
# * **Step 0.** Every duplication costs 0.06 to 0.10 nats on a base loss of 1.786 nats/char (+3.5 to
#   6%): nothing here is "barely changed". Among single blocks, the highest-cosine block 2 is the
#   cheapest to repeat (+0.063) and the lowest-cosine block 0 costs +0.092, but block 3 (cosine
#   0.87) is the most expensive (+0.104): the cosine is a rough guide, not a ranking. For the
#   two-block windows of the rule, high [2, 4) costs +0.1007 and low [0, 2) +0.1036: **A holds, by
#   0.003 nats**, a margin we would not call a clear effect.
# * **Continued training.** After 300 steps the up-scaled (high) model reaches 1.7846, the original
#   1.7846 at the same 300 steps (a difference under 1e-4 nats): **B fails** (no win beyond 0.01).
#   At equal FLOPs the original trains 446 steps and reaches 1.7603, 0.024 lower: **C fails**. The
#   low-window model trails the high one by 0.002 after 300 steps.
# * **Verdict: partly**, by the rule: only A holds, narrowly.
#
# Why not more, at this scale? Yi-6B had seen 3.1T tokens and was up-scaled with 0.8T more; the
# premise is a model whose middle blocks have become near pass-throughs, so a copy starts almost
# free, and a budget long enough for the extra depth to pay. Our base model saw 0.5M characters,
# its blocks are far from pass-through, and up-scaling first costs 0.1 nats that the 300 continued
# steps (about one pass over the training text) spend their time recovering. The original is also
# still improving at its own size, so extra capacity is not yet what limits it. (Both continued runs
# restart AdamW at a higher learning rate than pretraining ended with, which is the bump at step
# 50 of the original's curve; it costs both models alike.)
#
# ## Summary
#
# * Depth up-scaling (Yi, Section 7.3) turns a trained L-block model into a deeper one by
#   repeating a contiguous range of blocks, [s, e) run twice in a row (3): no new kind of layer, no
#   training from scratch; every copy is an independent parameter from then on.
# * The range is chosen with a cheap diagnostic, the cosine between each block's input and output
#   residual stream (2): where it is close to 1 the block nearly passes its input through, and a
#   second pass through it changes the model's function least. A block whose two residual branches
#   output zero has cosine exactly 1 and duplicates for free (exercise 3).
# * Whether the deeper model is worth it is a question of compute, not of steps: each step of the
#   up-scaled model costs (L + e - s) / L times more block FLOPs, so it must beat the original
#   trained for that much longer.
#
# ## Exercises
#
# 1. Yi-6B has width 4096, 32 blocks, 32 query heads sharing 4 key/value heads (head dim 128),
#    SwiGLU width 11008 and a 64,000-token vocabulary with an untied head. Count its parameters,
#    and those of the model up-scaled by duplicating blocks [12, 28). Compare with the 8.8B that
#    01.AI gives for Yi-9B.
# 2. With the cosines of section 3, which window would Yi's rule pick if we duplicated one block,
#    or three? Does the step-0 change of section 4 rank the one-block windows in the order of
#    their cosines?
# 3. Make the copies start as exact identities: zero the output projections (attention `W_o`,
#    MLP `W_down`) of the duplicated copies only. Show that the step-0 change is then exactly 0,
#    whatever the range, and explain why training can still move those copies (what is the
#    gradient of `W_o` when it is zero?).
#
# ## Solutions

# %%
# 1. Parameters per block: W_q, W_o (D x D), W_k, W_v (D x 4*128), three SwiGLU matrices D x F,
#    two RMSNorm scales; plus the embedding, the head and the final norm.
D6, F6, KV6, V6 = 4096, 11008, 4 * 128, 64000
per_block = 2 * D6 * D6 + 2 * D6 * KV6 + 3 * D6 * F6 + 2 * D6
outside = 2 * V6 * D6 + D6
for name, L_ in (("Yi-6B", 32), ("up-scaled [12, 28)", len(upscaled_order(32, 12, 28)))):
    print(f"{name:20s}: {L_} blocks, {(L_ * per_block + outside) / 1e9:.2f}B parameters")
print(f"per-token training FLOPs ratio (matrix products, no attention): "
      f"{(48 * per_block + V6 * D6) / (32 * per_block + V6 * D6):.3f}")

# %%
# 2. Yi's rule on our cosines, for windows of 1, 2 and 3 blocks, and the one-block step-0 ranking.
for n in (1, 2, 3):
    print(f"n = {n}: highest-cosine window {pick_range(cos, n)}, lowest {pick_range(cos, n, highest=False)}")
one_block = [(s, s + 1) for s in range(N_LAYERS)]
by_cos = sorted(one_block, key=lambda w: -cos[w[0]])
by_change = sorted(one_block, key=lambda w: step0[w])
print("one-block windows by decreasing cosine:    ", by_cos)
print("one-block windows by increasing step-0 loss:", by_change)

# %%
# 3. Identity copies: zero W_o and W_down of the second copy of each duplicated block.
def upscale_identity_copies(params, start, stop):
    new = depth_upscale(params, start, stop)
    for i in range(stop, stop + (stop - start)):  # the copies sit right after the range
        new["blocks"][i]["llama"]["attn"]["W_o"][:] = 0.0
        new["blocks"][i]["llama"]["mlp"]["W_down"][:] = 0.0
    return new


for window in (high, low):
    print(f"identity copies of {window}: step-0 change {val_loss(upscale_identity_copies(base, *window)) - base_val:+.2e}")
# The gradient of W_o is (attention output)^T (upstream gradient): it does not involve W_o itself,
# so it is non-zero and the first step moves W_o away from 0 (then W_q, W_k, W_v get gradients too).
ident = upscale_identity_copies(base, *high)
_, grads = transformer_lm_loss_and_grads(ident, (val_x[:8], val_y[:8]))
print("|dW_o| of the first identity copy:", float(np.abs(grads["blocks"][high[1]]["llama"]["attn"]["W_o"]).max()))
