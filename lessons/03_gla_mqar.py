# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Recall from a fixed-size state: GLA on multi-query associative recall
#
# **The paper.** Yang, Wang, Shen, Panda and Kim, *Gated Linear Attention Transformers with
# Hardware-Efficient Training* (arXiv 2312.06635). Lesson 02 derived GLA's three forms; this one
# asks what its forget gate is *for*.
#
# **The claim.** Section 5.2 ("Recall-intensive tasks") trains models on the synthetic multi-query
# associative recall task, MQAR: "We follow Arora et al. (2023a)'s experimental setting [...] For
# RetNet and GLA the number of heads is set to 2" (Zoology's MQAR sweeps: two-layer models,
# vocabulary 8,192, model widths 64 to 512, a learning-rate sweep per model). Figure 4 plots the
# accuracies. The text: "Standard quadratic attention achieves perfect scores in
# all settings and is thus omitted. [...] models with matrix-valued hidden states (i.e.,
# Mamba/RetNet/GLA) outperform Hyena/RWKV, and our GLA outperforms RetNet, confirming the benefits
# of using data-dependent gates."
#
# **The question, at laptop scale.** Four two-layer decoders that differ only in their sequence
# mixer (vocabulary 64, width 32): ungated linear attention, retention (RetNet: a fixed decay per
# head), GLA (a data-dependent decay per key dimension) and softmax attention. How does their
# MQAR accuracy fall as the number of key-value pairs grows? Is the order softmax > GLA > RetNet ≥
# linear attention, and does the gap grow with the number of pairs?
#
# We will (1) look at the task, (2) write the four mixers side by side, (3) see without any
# training why a fixed-size state runs out of room, (4) isolate the one skill recall needs and
# that only some mixers can learn, and (5) train all four on MQAR.
#
# Code: `ref/tasks/synthetic.py` (MQAR), `ref/models/lm.py` (the decoder and its blocks),
# `ref/models/gla.py`, `ref/models/retnet.py`, `ref/models/transformer.py`, `ref/mixers/`. This
# lesson only assembles and trains.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from ref.lessons import lesson_context
from ref.mixers.attention import attention_parallel
from ref.mixers.gla import gla_recurrent
from ref.mixers.retention import default_gamma
from ref.models.lm import init_lm, lm_forward, lm_loss_and_grads
from ref.tasks import Batch, get_task
from ref.train import get_optimizer, train

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The task
#
# MQAR (Zoology, Arora et al. 2023): N key-value pairs, then a query region where some of the keys
# come back. At each query the model must output the value that followed that key. Keys are token
# ids 1..31, values 32..63 (vocabulary 64); keys are distinct within a sequence, and so are
# values. The loss and the accuracy are taken at the query positions only (`loss_mask`), and the
# answer is never fed back as an input, so the model must read it from its memory of the pairs.
# As in Zoology's MQAR experiments (`random_non_queries=False`), the positions that are neither
# pairs nor queries hold the filler token 0.

# %%
demo = get_task("mqar", vocab_size=64, seq_len=24, num_pairs=4, random_filler=False)
b = demo.sample(np.random.default_rng(3), 1)
print("inputs :", " ".join(f"{t:2d}" for t in b.inputs[0]))
print("targets:", " ".join(f"{t:2d}" if m else " ." for t, m in zip(b.targets[0], b.loss_mask[0])))

# %% [markdown]
# ## 2. Four ways to remember
#
# All four blocks share the decoder of `ref.models.lm`: embedding, two pre-norm residual blocks
# (a mixer, then an MLP), a final RMSNorm and a linear head. Per head, with q_t, k_t, v_t linear
# maps of the block's input x_t:
#
# | mixer | what it keeps after t tokens | update | block |
# |---|---|---|---|
# | linear attention | S_t (K × V) | S_t = S_{t-1} + k_tᵀ v_t  (1) | `"linear"` |
# | retention (RetNet) | S_t (K × V) | S_t = γ_h S_{t-1} + k_tᵀ v_t, γ_h = 1 − 2^{−5−h}  (2) | `"retnet"` |
# | GLA | S_t (K × V) | S_t = diag(α_t) S_{t-1} + k_tᵀ v_t, α_t = σ(x_t W_1 W_2 + b)^{1/16}  (3) | `"gla"` |
# | softmax attention | every k_s, v_s, s ≤ t | o_t = Σ_s softmax_s(q_t·k_s/√K) v_s  (4) | `"llama"` |
#
# and o_t = q_t S_t for the first three. (1) is the paper's linear attention (Sec. 2.1), (2)
# RetNet's retention with its fixed per-head decays, (3) the GLA layer of Sec. 4.1 (low-rank gate,
# τ = 16, one gate per key dimension, data-dependent), (4) causal softmax attention with rotary
# position embeddings (the Llama block, the paper's Transformer++ baseline). The "linear" block
# is the GLA block with neither the forget gate nor the output gate. GLA and RetNet use the
# paper's head sizes (GLA: keys D/2 and values D wide over all heads; RetNet: D and 2D) and, as
# in the paper's MQAR runs, 2 heads; so does softmax attention here.
#
# The first three keep a state whose size does not depend on T; softmax attention keeps a KV
# cache that grows with every token. Per layer, at width D = 32 and T = 64:

# %%
D, H, VOCAB, N_LAYERS = 32, 2, 64, 2
MODELS = {  # label: block kind
    "linear attention": "linear",
    "retention (RetNet)": "retnet",
    "GLA": "gla",
    "softmax attention": "llama",
}
COLORS = {"linear attention": "tab:gray", "retention (RetNet)": "tab:orange", "GLA": "tab:blue",
          "softmax attention": "tab:green"}


def memory_floats(kind, T):
    """Floats one layer keeps to process token T+1: the recurrent state, or the KV cache."""
    p = init_lm(np.random.default_rng(0), VOCAB, D, 1, block=kind, num_heads=H)["blocks"][0][kind]
    if kind == "llama":
        _, Hkv, K = p["attn"]["W_k"].shape  # (D, H, K)
        return 2 * T * Hkv * K  # keys and values of every token
    mixer = p["mixer"]
    _, Hh, K = mixer["W_k"].shape  # (D, H, K)
    V = mixer["W_v"].shape[2]  # (D, H, V)
    return Hh * K * V


for label, kind in MODELS.items():
    print(f"{label:20s} {memory_floats(kind, 64):5d} floats per layer at T = 64 "
          f"({'grows with T' if kind == 'llama' else 'any T'})")

# %% [markdown]
# ## 3. Why a fixed-size state runs out of room (no training)
#
# Take the best case for a linear-attention memory: one head, keys and values that are random
# unit vectors in R^K (one per token id, as embeddings), N pairs written with (1), then each key
# asked once. Reading key j gives
#
# $$q S = k_j S = \underbrace{(k_j\cdot k_j)}_{=1}\, v_j + \sum_{i\ne j} (k_j\cdot k_i)\, v_i ,$$
#
# the right value plus crosstalk from every other pair, each term of size about 1/√K. We decode
# by the nearest value embedding. With a fixed decay (2) the older pairs are also shrunk by
# γ^age before the crosstalk of the newer ones is added. Softmax attention instead keeps every
# pair and, with a sharp enough softmax, picks the one that matches. The mixers are those of
# `ref.mixers` (`gla_recurrent` with no gate is (1), with a constant gate (2); `attention_parallel`
# is (4)):

# %%
def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ideal_recall(N, K, mixer, trials, rng, gamma=0.9, n_tokens=64):
    """Write N random (key, value) pairs, then query every key; accuracy of the nearest value."""
    E_k, E_v = unit(rng.standard_normal((2, n_tokens, K)))  # key and value embeddings (n_tokens, K)
    ki = np.argsort(rng.random((trials, n_tokens)), axis=1)[:, :N]  # (trials, N) distinct keys
    vi = np.argsort(rng.random((trials, n_tokens)), axis=1)[:, :N]  # (trials, N) distinct values
    keys, vals = E_k[ki][:, :, None], E_v[vi][:, :, None]  # (B, N, H=1, K)
    zero = np.zeros_like(keys)
    q = np.concatenate([zero, keys], axis=1)  # (B, 2N, 1, K): N writes, then N reads
    k = np.concatenate([keys, zero], axis=1)
    v = np.concatenate([vals, zero], axis=1)
    if mixer == "softmax":
        o, _ = attention_parallel(q, k, v, scale=30.0)  # a sharp softmax
    else:
        gk = None if mixer == "linear" else np.full(q.shape, np.log(gamma))  # (1) or (2)
        o, _, _ = gla_recurrent(q, k, v, gk, scale=1.0)
    pred = (o[:, N:, 0] @ E_v.T).argmax(-1)  # (B, N) nearest value embedding
    return float((pred == vi).mean())


ideal_N = [2, 4, 8, 16, 32]
ideal_K = 16
ideal_trials = 64 if ctx.quick else 256
ideal_cases = {  # label: (K, mixer)
    f"linear attention (1), K = {ideal_K}": (ideal_K, "linear"),
    f"linear attention (1), K = {2 * ideal_K}": (2 * ideal_K, "linear"),
    f"fixed decay (2), γ = 0.9, K = {ideal_K}": (ideal_K, "decay"),
    "softmax attention (4)": (ideal_K, "softmax"),
}
ideal = {name: [ideal_recall(n, K, mixer, ideal_trials, rng) for n in ideal_N]
         for name, (K, mixer) in ideal_cases.items()}
for name, accs in ideal.items():
    print(f"{name:36s}", " ".join(f"{a:.2f}" for a in accs), " (N =", ideal_N, ")")

# %% [markdown]
# A K-dimensional state holds on the order of K pairs before crosstalk wins; doubling K moves the cliff;
# a fixed decay makes it worse, since old pairs fade while newer crosstalk does not; softmax
# attention does not care. This is "the gap grows with the number of pairs" before any learning,
# and it says what a gate must do to help: it cannot make the state bigger, only decide what to
# keep in it.
#
# ## 4. The skill recall needs: reading the previous token
#
# Section 3 wrote each pair as one (key, value) outer product. A trained model does not get that
# for free: the key and its value arrive as *two consecutive tokens*. To store "key → value" the
# model must, at the value's position, know which token came just before (the first half of an
# induction head). Softmax attention learns that from its position embedding (RoPE) in layer 1.
# The recurrent mixers have no position embedding; their only sense of order is how fast their
# state forgets:
#
# * linear attention (1) never forgets: its state after t tokens is a sum that does not depend
#   on their order at all (only the second layer, which sums functions of the first layer's
#   states, sees order, and only indirectly);
# * retention (2) forgets at fixed rates, γ_h ≈ 0.969 and 0.984 for its two heads: even in the
#   faster head the last token weighs only 3% more than the one before it, 37% more than the one
#   ten tokens back;
# * GLA (3) can learn to forget *fast in some key dimensions and at some tokens* (its gate
#   depends on the input), which is exactly what isolating the last token takes.
#
# A direct test: train each model to output the previous token, on uniform random tokens
# (targets = inputs shifted by one, every position but the first in the loss; T = 32; the recipe
# of section 5 with a learning rate of 3e-3, 300 steps, two seeds).

# %%
def shift_batch(rng, batch_size, T=32, lag=1):
    x = rng.integers(0, VOCAB, (batch_size, T))  # (B, T)
    mask = np.ones((batch_size, T), bool)
    mask[:, :lag] = False
    return Batch(x, np.roll(x, lag, axis=1), mask)


BLOCK_OPTIONS = {"linear": {"mode": "chunked", "chunk_size": 8}, "retnet": {"mode": "chunked", "chunk_size": 8},
                 "gla": {"mode": "chunked", "chunk_size": 8}, "llama": {}}


def fit(kind, batches, steps, lr, seed):
    """Train a fresh model; returns (params, loss history, seconds)."""
    rng = np.random.default_rng(seed)
    params = init_lm(rng, VOCAB, D, N_LAYERS, block=kind, dtype=np.float32, num_heads=H)
    options = BLOCK_OPTIONS[kind]

    def loss_and_grads(p, batch, rng):
        return lm_loss_and_grads(p, batch, rng, **options)

    start = time.perf_counter()
    out = train(params, loss_and_grads, batches, steps=steps, rng=rng,
                optimizer=get_optimizer("adamw", weight_decay=0.0), lr=lr,
                warmup_steps=max(1, steps // 10), clip_norm=1.0, progress=False)
    return out.params, out.history["loss"], time.perf_counter() - start


def accuracy(kind, params, batch):
    logits, _ = lm_forward(params, batch.inputs, **BLOCK_OPTIONS[kind])
    return batch.accuracy(logits.argmax(-1))


shift_steps = 30 if ctx.quick else 300
shift_seeds = [0] if ctx.quick else [0, 1]
shift_test = shift_batch(np.random.default_rng(123), 256)
shift_accs = {label: [] for label in MODELS}
for label, kind in MODELS.items():
    for seed in shift_seeds:
        params, hist, secs = fit(kind, lambda r, s: shift_batch(r, 32), shift_steps, 3e-3, seed)
        shift_accs[label].append(accuracy(kind, params, shift_test))
        print(f"previous token, {label:20s} seed {seed}: accuracy {shift_accs[label][-1]:.3f} "
              f"after {shift_steps} steps ({secs:.0f} s)")
shift_acc = {label: float(np.mean(a)) for label, a in shift_accs.items()}
print("RetNet's decays gamma_h:", np.round(default_gamma(H), 4),
      "; GLA's gate at initialisation: alpha = sigmoid(0)^(1/16) =", round(0.5 ** (1 / 16), 4))

# %% [markdown]
# ## 5. The experiment: MQAR accuracy against the number of pairs
#
# Vocabulary 64, T = 32 (the pairs, then the query region), N = 2, 4 and 8 pairs, every key asked
# once (Q = N; the query slots are drawn as in Zoology, most of them early in the query region).
# The four models of section 2 (width 32, 2 layers, 2 heads, float32) get the same recipe: AdamW
# (no weight decay), learning rate 1e-3 with a 10% linear warmup and a cosine decay, gradient
# clipping at 1, batches of 32 fresh sequences, the same number of steps. Accuracy is measured on
# 512 held-out sequences at the query positions. A model that has only learned *which* values
# occur in the sequence, without binding them to their keys, scores 1/N (the dotted line).
#
# This is far smaller than the paper's setting: Zoology trains for 64 epochs of 100,000
# sequences, batches of up to 512, and sweeps the learning rate per model; here each model sees
# 1,000 × 32 = 32,000 sequences, one seed per point (the whole lesson costs about 7 CPU-minutes
# in NumPy).

# %%
MQAR_T = 32
mqar_N = [2, 8] if ctx.quick else [2, 4, 8]
mqar_steps = 30 if ctx.quick else 1000
mqar_seeds = [0]
mqar_lr = 1e-3
mqar_acc = {label: np.zeros((len(mqar_N), len(mqar_seeds))) for label in MODELS}
mqar_loss = {}
mqar_seconds = {label: 0.0 for label in MODELS}
for i, N in enumerate(mqar_N):
    task = get_task("mqar", vocab_size=VOCAB, seq_len=MQAR_T, num_pairs=N, random_filler=False)
    test = task.sample(np.random.default_rng(1000 + N), 512)
    for j, seed in enumerate(mqar_seeds):
        for label, kind in MODELS.items():
            params, hist, secs = fit(kind, lambda r, s: task.sample(r, 32), mqar_steps, mqar_lr, seed)
            mqar_acc[label][i, j] = accuracy(kind, params, test)
            mqar_loss[(label, N, seed)] = hist
            mqar_seconds[label] += secs
            print(f"MQAR N = {N}, seed {seed}, {label:20s}: accuracy {mqar_acc[label][i, j]:.3f} "
                  f"(final loss {hist[-20:].mean():.2f}, {secs:.0f} s)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
ax = axes[0]
for (name, accs), style in zip(ideal.items(), ["-", "--", ":", "-"]):
    color = "tab:green" if "softmax" in name else ("tab:orange" if "decay" in name else "tab:gray")
    ax.plot(ideal_N, accs, style, marker="o", color=color, label=name)
ax.set_xscale("log", base=2)
ax.set_xticks(ideal_N, [str(n) for n in ideal_N])
ax.set_xlabel("key-value pairs N")
ax.set_ylabel("recall accuracy")
ax.set_ylim(0, 1.05)
ax.set_title("(a) no training: one head, random embeddings")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)

ax = axes[1]
labels = list(MODELS)
spread = np.array([[shift_acc[l] - min(shift_accs[l]), max(shift_accs[l]) - shift_acc[l]] for l in labels]).T
ax.bar(range(len(labels)), [shift_acc[l] for l in labels], yerr=spread, capsize=4, color=[COLORS[l] for l in labels])
ax.axhline(1 / VOCAB, color="k", ls=":", lw=1)
ax.set_xticks(range(len(labels)), [l.replace(" (RetNet)", "\n(RetNet)").replace(" attention", "\nattention")
                                   for l in labels])
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1.05)
ax.set_title(f"(b) output the previous token ({shift_steps} steps, {len(shift_seeds)} seed(s), min-max)")
ax.grid(alpha=0.3, axis="y")

ax = axes[2]
for label in MODELS:
    acc = mqar_acc[label]
    ax.plot(mqar_N, acc.mean(axis=1), marker="o", color=COLORS[label], label=label)
    if acc.shape[1] > 1:
        ax.fill_between(mqar_N, acc.min(axis=1), acc.max(axis=1), color=COLORS[label], alpha=0.2)
ax.plot(mqar_N, [1 / n for n in mqar_N], "k:", lw=1, label="1/N: values known, keys not bound")
ax.set_xscale("log", base=2)
ax.set_xticks(mqar_N, [str(n) for n in mqar_N])
ax.set_xlabel("key-value pairs N")
ax.set_ylabel("MQAR accuracy (512 test sequences)")
ax.set_ylim(0, 1.05)
ax.set_title(f"(c) MQAR, T = {MQAR_T}, D = {D}, {mqar_steps} steps, {len(mqar_seeds)} seed(s)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
ctx.save_figure(fig)

# %% [markdown]
# ## 6. What reproduced
#
# The verdict is computed from the numbers above, by the rules stated here before looking:
# softmax attention is "near perfect" if it scores at least 0.9 at every N; GLA "outperforms
# RetNet" if its accuracy is higher by more than 0.05 at every N ≥ 4 (where 1/N leaves room).

# %%
mean_acc = {label: mqar_acc[label].mean(axis=1) for label in MODELS}
big = [i for i, n in enumerate(mqar_N) if n >= 4]
attention_perfect = bool(np.all(mean_acc["softmax attention"] >= 0.9))
gla_beats_retnet = bool(big) and all(mean_acc["GLA"][i] > mean_acc["retention (RetNet)"][i] + 0.05 for i in big)
gate_helps_shift = all(shift_acc["GLA"] > shift_acc[other] + 0.1
                       for other in ("retention (RetNet)", "linear attention"))
if attention_perfect and gla_beats_retnet:
    reproduced = "yes"
elif attention_perfect or gla_beats_retnet:
    reproduced = "partly"
else:
    reproduced = "no"
print("softmax attention >= 0.9 at every N:", attention_perfect)
print("GLA > RetNet + 0.05 at every N >= 4:", gla_beats_retnet)
print("GLA learns the previous-token skill that RetNet and linear attention do not:", gate_helps_shift)
print("reproduced:", reproduced)


def row(label):
    return "/".join(f"{a:.2f}" for a in mean_acc[label])


ctx.save_result(
    title="Recall from a fixed-size state: GLA on multi-query associative recall",
    paper="gla",
    claim=(
        "On the synthetic MQAR task (Zoology's setting, 2-layer models), 'standard quadratic attention achieves "
        "perfect scores in all settings' and 'our GLA outperforms RetNet, confirming the benefits of using "
        "data-dependent gates' (GLA paper, Sec. 5.2, Figure 4). Tested here at laptop scale: accuracy against the "
        "number of key-value pairs for linear attention, retention, GLA and softmax attention."
    ),
    measured=(
        f"MQAR, vocab {VOCAB}, T = {MQAR_T}, D = {D}, 2 layers, {mqar_steps} steps, N = "
        f"{'/'.join(map(str, mqar_N))} pairs: softmax attention {row('softmax attention')}, GLA {row('GLA')}, "
        f"RetNet {row('retention (RetNet)')}, linear attention {row('linear attention')} (1/N = "
        f"{'/'.join(f'{1 / n:.2f}' for n in mqar_N)}). The skill recall needs, outputting the previous token "
        f"({shift_steps} steps): GLA {shift_acc['GLA']:.2f}, RetNet {shift_acc['retention (RetNet)']:.2f}, "
        f"linear attention {shift_acc['linear attention']:.2f}, softmax attention {shift_acc['softmax attention']:.2f}."
    ),
    reproduced=reproduced,
    numbers={
        "mqar": {
            "vocab_size": VOCAB, "seq_len": MQAR_T, "num_pairs": mqar_N, "steps": mqar_steps, "batch_size": 32,
            "lr": mqar_lr, "seeds": mqar_seeds, "test_sequences": 512,
            "accuracy": {label: mqar_acc[label].tolist() for label in MODELS},
            "train_seconds": mqar_seconds,
        },
        "previous_token": {"steps": shift_steps, "lr": 3e-3, "seeds": shift_seeds, "accuracy": shift_acc,
                           "accuracy_per_seed": shift_accs},
        "no_training": {"K": ideal_K, "N": ideal_N, "trials": ideal_trials, "accuracy": ideal},
        "model": {"D": D, "layers": N_LAYERS, "heads": H, "dtype": "float32",
                  "state_floats_per_layer_T64": {label: memory_floats(kind, 64) for label, kind in MODELS.items()}},
        "verdict": {"attention_perfect": attention_perfect, "gla_beats_retnet": gla_beats_retnet,
                    "gla_learns_previous_token": bool(gate_helps_shift)},
    },
)

# %% [markdown]
# ## 7. Reading the result
#
# What the committed run (full mode; numbers in `figures/03_gla_mqar.json`) shows:
#
# * **Softmax attention** recalls 0.96 and 0.98 of the queries at N = 2 and 4, then 0.13 at N = 8.
#   Its KV cache has room for every pair at every N here; what ran out at N = 8 is the training
#   budget: the two-layer induction circuit (a previous-token head, then a matching head) appears
#   abruptly after a plateau, and at N = 8 it had not appeared within 1,000 steps (final loss 2.44,
#   about log 8 + 0.4). So "perfect scores in all settings" is reproduced for N ≤ 4 only.
# * **Linear attention, retention and GLA** all score 1/N to within about 0.01 at every N (0.49-0.51,
#   0.25-0.26, 0.12-0.13; final losses near log N): they learned which values occur in a
#   sequence, not which key each belongs to. With all three at the floor there is no order
#   between them to read, so "GLA outperforms RetNet" is **not reproduced** at this budget, and
#   neither is the growing gap. In trials outside this lesson, longer training (5,000 steps at
#   N = 4), learning rates of 1e-3 to 3e-3 and width 64 did not lift GLA off the floor either.
# * **The previous-token test** (panel b) shows where the recurrent models are stuck and what the
#   gate buys: trained for that skill alone, GLA gets it exactly (1.00, both seeds), as does
#   softmax attention, while retention (0.45) and linear attention (0.34) cannot isolate the last
#   token with fixed or no decay. In MQAR the same skill must be discovered without being asked
#   for, only through the second layer's recall; none of the recurrent models found that
#   composition within 1,000 steps.
#
# Why the paper's models get further: Zoology trains each point for 64 epochs of 100,000
# sequences with a learning-rate sweep, about 200 times the sequences seen here, and its current
# MQAR configurations put a convolution mixer (its BaseConv, kernel size 3) in front of every
# sequence mixer, attention included, which can hand the previous token to the mixer directly
# (FLA's GLA layer has a short convolution, width 4, as an option, off by default). The blocks
# of `ref.models.lm` have no such convolution, so here each recurrent model must build the shift
# out of its decay, which is exactly the skill panel (b) isolates. The verdict by the rules of
# section 6 is therefore **no** for the MQAR claim as stated, with the mechanism the paper
# credits (data-dependent gates) visible in panel (b).
#
# ## Summary
#
# * MQAR asks a model to bind each key to the token that follows it and to recall the binding
#   later. Softmax attention keeps every token (a KV cache growing with T); linear attention,
#   retention and GLA keep a K × V state per head whose size does not depend on T.
# * A K-dimensional state holds on the order of K pairs before crosstalk wins (section 3); a fixed decay
#   makes it worse; no gate can make the state larger, a gate can only choose what to keep.
# * Binding needs the previous token, and a recurrent mixer without position embeddings gets order
#   only from forgetting. GLA's data-dependent, per-dimension gate can learn to isolate the last
#   token; retention's fixed slow decays and linear attention's no decay cannot (section 4). This is
#   the mechanism behind the paper's "benefits of using data-dependent gates".
# * At laptop scale the full MQAR task is a different matter: see section 7 for what this budget
#   does and does not show.
#
# ## Exercises
#
# 1. **State against cache.** At width D = 64 and 2 heads, how many floats does one layer of GLA,
#    RetNet and softmax attention keep? From which sequence length on is the KV cache larger than
#    GLA's state?
# 2. **Capacity scales with K.** With the no-training memory of section 3 (linear attention), find
#    the largest N at which recall stays ≥ 0.9 for K = 8, 16, 32, 64. How does it grow with K?
# 3. **How sharp can a fresh gate be?** GLA's gate is α = σ(z)^{1/16}. What is α at z = 0, and how
#    much of a token's contribution is left 30 tokens later? Which pre-activation z gives α = e^{-1}
#    (a token's weight divided by e at every step)? Why does that make isolating the last token
#    slow to learn?
# 4. **Two tokens back.** Repeat the test of section 4 with targets two positions back (`lag=2`)
#    for GLA and RetNet.
#
# ## Solutions

# %%
# 1. Floats per layer at D = 64, 2 heads: recurrent states are fixed, the KV cache grows by 2 * D per token
D64 = {}
for label, kind in MODELS.items():
    p = init_lm(np.random.default_rng(0), VOCAB, 64, 1, block=kind, num_heads=2)["blocks"][0][kind]
    if kind == "llama":
        D64[label] = f"{2 * np.prod(p['attn']['W_k'].shape[1:])} per token"
    else:
        D64[label] = int(p["mixer"]["W_k"].shape[1] * p["mixer"]["W_k"].shape[2] * p["mixer"]["W_v"].shape[2])
print("exercise 1:", D64, "-> the cache passes GLA's state after", D64["GLA"] // (2 * 64), "tokens")

# %%
# 2. Largest N with recall >= 0.9, for growing K (linear attention, no training)
ex_rng = np.random.default_rng(7)
ex_N = [2, 4, 8, 16, 32, 64]
capacity = {}
for K in (8, 16, 32, 64):
    ok = [n for n in ex_N if ideal_recall(n, K, "linear", 64, ex_rng) >= 0.9]
    capacity[K] = max(ok) if ok else 0
print("exercise 2: largest N with recall >= 0.9:", capacity, "-> the room grows with K")

# %%
# 3. GLA's gate alpha = sigmoid(z)^(1/16)
alpha0 = 0.5 ** (1 / 16)
z_for = -np.log(np.exp(16.0) - 1)  # sigmoid(z)^(1/16) = e^-1  <=>  sigmoid(z) = e^-16
print(f"exercise 3: alpha(0) = {alpha0:.3f}, left after 30 tokens {alpha0 ** 30:.2f}; "
      f"alpha = 1/e needs z = {z_for:.1f} (the 1/16 makes slow decays easy and sharp ones far away)")

# %%
# 4. Two tokens back, GLA and RetNet
ex_steps = 20 if ctx.quick else 300
lag2_test = shift_batch(np.random.default_rng(321), 256, lag=2)
for label in ("GLA", "retention (RetNet)"):
    kind = MODELS[label]
    params, _, _ = fit(kind, lambda r, s: shift_batch(r, 32, lag=2), ex_steps, 3e-3, seed=0)
    acc = accuracy(kind, params, lag2_test)
    print(f"exercise 4: two tokens back, {label}: accuracy {acc:.3f} after {ex_steps} steps")
