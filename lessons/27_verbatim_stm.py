# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Verbatim short-term memory: repeat surprisal in a transformer and an LSTM
#
# **The paper.** Armeni, Honey and Linzen, *Characterizing Verbatim Short-Term Memory in Neural
# Language Models* (CoNLL 2022, arXiv 2210.13569). Language models read English vignettes in which
# a list of nouns occurs twice ("Mary wrote down the following list of words: ... When she got
# back, she read the list again: ..."). Retrieval is measured as the drop in surprisal from the
# first list to the second. Their findings (abstract; section 3, Figs. 2-4):
#
# * a transformer (GPT-2, and one trained on WikiText-103) **retrieves the identity and the order of
#   the nouns**: repeat surprisal falls to a few percent of the first list's, whatever the list
#   length (3-10 nouns) and the length of the intervening text; a *permuted* second list is
#   retrieved less well than the exact repeat, and a *novel* list not at all;
# * an LSTM shows only a **modest reduction** (its repeat surprisal stays high), limited to short
#   intervening texts and to the first nouns, insensitive to order: a coarser, fading "gist";
# * the transformers' memory is "markedly enhanced" when they are trained on a larger corpus
#   (section 3.3): it is learned.
#
# **The question.** Does the contrast appear when a small 2-layer transformer and an LSTM with about
# the same number of parameters are trained, for the same number of steps, on a toy language in
# which noun lists sometimes recur?
#
# Code: `ref/tasks/verbatim_lists.py` (the toy language, training documents and the test paradigm),
# `ref/models/repeat_surprisal.py` (surprisal, repeat surprisal, two reference models). The models
# are `ref.models.transformer` (llama blocks) and `ref.models.lstm_lm`, with their own hand-written,
# gradchecked backward passes.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from ref.lessons import lesson_context
from ref.models.lstm_lm import init_lstm_lm, lstm_lm_loss_and_grads
from ref.models.repeat_surprisal import (
    induction_logits,
    lm_logits_fn,
    paradigm_repeat_surprisal,
    token_surprisal,
    uniform_logits,
)
from ref.models.transformer import init_transformer_lm, transformer_lm_loss_and_grads
from ref.tasks.verbatim_lists import CONDITIONS, VerbatimLanguage
from ref.train import train
from ref.train.tree import tree_leaves

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The measure
#
# The surprisal of token x_t is its negative log-probability under the model given what came before,
# read from the logits z_{t-1} of the previous position; a trial's **repeat surprisal** is the mean
# surprisal on the second list's nouns as a percentage of the mean on the first list's (paper,
# section 2):
#
# $$s_t = -\log \operatorname{softmax}(z_{t-1})[x_t] \tag{1}$$
#
# $$\text{repeat surprisal} = 100 \cdot \bar s(\text{list}_2) \,/\, \bar s(\text{list}_1). \tag{2}$$
#
# 100 % means nothing was retrieved; near 0 % means the second list was predicted almost perfectly.
# The paper reports medians over trials; so do we.
#
# ## 2. The toy language and the paradigm
#
# Filler "sentences" come from a fixed random Markov chain over 12 filler words and "."; 16 nouns
# appear only in lists, `LIST n1 n2 ... .` ("wrote down the following list:"). In training
# documents a list is followed, after filler of random length, by `AGAIN` and the same nouns in the
# same order with probability 0.7 ("she read the list again:"), or else by a new list. The test
# paradigm (section 2 of the paper, token level) presents a filler prefix, `LIST list1 .`, exactly
# g filler tokens, then `AGAIN list2 .` with list2 the same list (*repeat*), a derangement of it
# (*permuted*) or fresh nouns (*novel*); the three conditions of a trial share everything else.

# %%
lang = VerbatimLanguage(n_nouns=16, n_filler=12, language_seed=0)
V = lang.vocab_size
names = {0: ".", 1: "LIST", 2: "AGAIN"}
word = lambda t: names.get(int(t), f"w{t - 3}" if t < lang.first_noun else f"N{t - lang.first_noun}")  # noqa: E731
demo = lang.paradigm(np.random.default_rng(1), 1, 3, 6, prefix=4)
for c in CONDITIONS:
    print(f"{c:9s}", " ".join(word(t) for t in demo.tokens[c][0]))
print("list1 at positions", demo.list1, " list2 at positions", demo.list2, " vocabulary", V)

# %% [markdown]
# Two reference "models" bound what a trained one can do. A model with no memory (uniform logits)
# scores exactly 100 % in every condition. The **induction rule**, a perfect verbatim copier
# ("after token a, predict what followed a last time", the mechanism of induction heads),
# predicts every noun of a repeated list but the first: 100/n %. On a permuted list it predicts the
# old successor, which is wrong, and on a novel list it has nothing to copy.

# %%
ref_par = lang.paradigm(np.random.default_rng(2), 50, 5, 8)
for label, fn in [("no memory", lambda tok: uniform_logits(tok, V)), ("induction rule", lambda tok: induction_logits(tok, V))]:
    rs = paradigm_repeat_surprisal(fn, ref_par)
    print(f"{label:15s}", ", ".join(f"{c} {np.median(rs[c]):6.1f} %" for c in CONDITIONS))

# %% [markdown]
# ## 3. Two language models with matched parameters
#
# A 2-layer llama-style transformer (D = 48, 4 heads, SwiGLU hidden 48, RoPE) and a 1-layer LSTM
# language model (embedding 48, hidden 64): about 33-35 thousand parameters each. Both see the same
# stream of documents (the same seed), the same optimizer (AdamW, lr 5e-3 after 30 warm-up steps,
# then constant, gradient clipping at 1), the same number of steps. A constant learning rate lets
# us stop, measure and resume: we measure the repeat condition (5 nouns, short gap) along the way to
# see the memory emerge with training (the paper's section 3.3 varies corpus size; steps × tokens
# is our stand-in).

# %%
B, T = (8, 48) if ctx.quick else (16, 64)
GAP_RANGE = (0, 12)  # training gaps; the long test gap (24) is longer than any seen in training
CHECKPOINTS = [10, 25] if ctx.quick else [250, 500, 750, 1000, 1250, 1500]
LIST_LENGTHS = [3, 5] if ctx.quick else [3, 5, 8]
GAPS = {"short": 4, "long": 24}
N_TRIALS = 12 if ctx.quick else 100
LR, WARMUP = 5e-3, (5 if ctx.quick else 30)

transformer = init_transformer_lm(np.random.default_rng(10), V, 48, 2, "llama", num_heads=4, mlp_hidden=48)
lstm = init_lstm_lm(np.random.default_rng(10), V, 48, 1, hidden=64)
n_params = {k: int(sum(x.size for x in tree_leaves(p))) for k, p in [("transformer", transformer), ("lstm", lstm)]}
print("parameters:", n_params)

models = {
    "transformer": (transformer, transformer_lm_loss_and_grads),
    "lstm": (lstm, lambda p, b, r: lstm_lm_loss_and_grads(p, b, r, backend="numba")),
}
probe = lang.paradigm(np.random.default_rng(3), 48 if not ctx.quick else 12, 5, GAPS["short"])
curves, trained, seconds, final_loss = {}, {}, {}, {}
for name, (params, loss_fn) in models.items():
    data_rng = np.random.default_rng(4)  # the same documents for both models
    batches = lambda r, step: lang.sample_documents(data_rng, B, T, gap_range=GAP_RANGE)  # noqa: E731
    opt_state, curves[name], t0, losses = None, [], time.process_time(), []
    for stop in CHECKPOINTS:
        res = train(params, loss_fn, batches, steps=stop, rng=np.random.default_rng(5), lr=LR, warmup_steps=WARMUP,
                    min_lr=LR, clip_norm=1.0, opt_state=opt_state, progress=False)  # fmt: skip
        params, opt_state = res.params, res.opt_state
        losses += list(res.history["loss"])
        rs = paradigm_repeat_surprisal(lm_logits_fn(name, params), probe)
        curves[name].append(float(np.median(rs["repeat"])))
        print(f"{name:11s} step {stop:5d}: loss {np.mean(res.history['loss'][-20:]):.3f}, "
              f"repeat surprisal (5 nouns, gap {GAPS['short']}) {curves[name][-1]:6.1f} %")  # fmt: skip
    trained[name], seconds[name] = params, time.process_time() - t0
    final_loss[name] = float(np.mean(losses[-50:]))
print("CPU seconds of training:", {k: round(v, 1) for k, v in seconds.items()})

# %% [markdown]
# ## 4. The experiment: repeat / permuted / novel, list length, intervening text
#
# The same trials for both models: for each list length and gap, `N_TRIALS` matched triples.

# %%
results = {name: {} for name in trained}  # results[model][(n, gap name)][condition] = median %
spread = {name: {} for name in trained}  # the interquartile range, for the figure
for n in LIST_LENGTHS:
    for gname, g in GAPS.items():
        par = lang.paradigm(np.random.default_rng(100 + 10 * n + g), N_TRIALS, n, g)
        for name, params in trained.items():
            rs = paradigm_repeat_surprisal(lm_logits_fn(name, params), par)
            results[name][(n, gname)] = {c: float(np.median(rs[c])) for c in CONDITIONS}
            spread[name][(n, gname)] = {c: np.percentile(rs[c], [25, 75]).tolist() for c in CONDITIONS}
for name in trained:
    print(name)
    for (n, gname), r in results[name].items():
        print(f"   n = {n}, {gname:5s} gap: " + ", ".join(f"{c} {r[c]:6.1f} %" for c in CONDITIONS))

# %% [markdown]
# **Verdict rule** (fixed before the full run). Over every list length and both gaps, medians of
# (2) in full mode:
#
# * (a) the transformer retrieves verbatim: its *repeat* median is <= 20 % in every cell;
# * (b) it retrieves order: its *permuted* median is above its *repeat* median in every cell;
# * (c) the LSTM's reduction is modest: its *repeat* median is >= 50 % in every cell (and above
#   the transformer's);
# * (d) the LSTM's reduction fades: its *repeat* median, averaged over list lengths, is higher at
#   the long gap than at the short one.
#
# "yes" if (a)-(d) all hold; "partly" if the transformer's repeat median is below the LSTM's in
# every cell but some of (a)-(d) fail; "no" otherwise.

# %%
cells = list(results["transformer"])
tr, ls = results["transformer"], results["lstm"]
crit = {
    "a_transformer_repeat_le_20": all(tr[k]["repeat"] <= 20 for k in cells),
    "b_transformer_permuted_gt_repeat": all(tr[k]["permuted"] > tr[k]["repeat"] for k in cells),
    "c_lstm_repeat_ge_50_and_above_transformer": all(ls[k]["repeat"] >= 50 and ls[k]["repeat"] > tr[k]["repeat"] for k in cells),
    "d_lstm_fades_with_gap": bool(
        np.mean([ls[(n, "long")]["repeat"] for n in LIST_LENGTHS]) > np.mean([ls[(n, "short")]["repeat"] for n in LIST_LENGTHS])
    ),
}
transformer_better = all(tr[k]["repeat"] < ls[k]["repeat"] for k in cells)
verdict = "yes" if all(crit.values()) else ("partly" if transformer_better else "no")
print(crit, "->", verdict)

# %% [markdown]
# In the full run (numbers in the Summary) the transformer's repeat surprisal is well below the
# LSTM's but far above the paper's few percent, and the training curve is still falling at the last
# checkpoint.
#
# ## 5. Where in the list is the memory?
#
# The paper's LSTM retrieves mostly the first nouns of the list. The surprisal of each noun of the
# second list, by its position, in the repeat condition (8 nouns in full mode), shows whether a model
# recalls the whole list or only its start.

# %%
n_pos = LIST_LENGTHS[-1]
pos_par = lang.paradigm(np.random.default_rng(7), N_TRIALS, n_pos, GAPS["short"])
by_position = {}
for name, params in trained.items():
    s = {c: token_surprisal(lm_logits_fn(name, params)(pos_par.tokens[c]), pos_par.tokens[c]) for c in ("repeat", "novel")}
    first = np.median(s["repeat"][:, pos_par.list1], axis=0)
    by_position[name] = {"list1": first.tolist(), "list2_repeat": np.median(s["repeat"][:, pos_par.list2], axis=0).tolist()}
    print(f"{name:11s} list1 " + " ".join(f"{v:4.2f}" for v in first))
    print(f"{'':11s} list2 " + " ".join(f"{v:4.2f}" for v in by_position[name]["list2_repeat"]))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
colors = {"repeat": "tab:blue", "permuted": "tab:orange", "novel": "tab:green"}
for ax, name in zip(axes[:2], ["transformer", "lstm"]):
    for c in CONDITIONS:
        for gname, style in [("short", "-"), ("long", "--")]:
            med = [results[name][(n, gname)][c] for n in LIST_LENGTHS]
            ax.plot(LIST_LENGTHS, med, style, marker="o", color=colors[c], label=f"{c}, gap {GAPS[gname]}")
    ax.axhline(100, color="gray", lw=0.8)
    ax.set_title(f"{name} ({n_params[name] / 1000:.1f}k parameters)")
    ax.set_xlabel("list length (nouns)")
    ax.set_xticks(LIST_LENGTHS)
    ax.set_ylim(0, max(130, 5 + max(v for r in results[name].values() for v in r.values())))
axes[0].set_ylabel("repeat surprisal (%), median over trials")
axes[0].legend(fontsize=7)
for name, marker in [("transformer", "o"), ("lstm", "s")]:
    axes[2].plot(CHECKPOINTS, curves[name], marker=marker, label=name)
axes[2].axhline(100, color="gray", lw=0.8)
axes[2].set_xlabel("training steps")
axes[2].set_ylabel("repeat surprisal (%), repeat, 5 nouns")
axes[2].set_title("memory emerges with training")
axes[2].legend()
fig.suptitle("Verbatim recall of a noun list: 100 · s̄(list 2) / s̄(list 1)")
fig.tight_layout()
ctx.save_figure(fig)

# %%
short_long = {name: {g: float(np.mean([results[name][(n, g)]["repeat"] for n in LIST_LENGTHS])) for g in GAPS} for name in trained}
ctx.save_result(
    title="Verbatim short-term memory: repeat surprisal",
    paper="verbatim_stm",
    claim=(
        "Transformers retrieve the identity and order of a list of nouns seen earlier: the second list's surprisal "
        "drops to a few percent of the first list's regardless of list length and intervening-text length, and a "
        "permuted list is retrieved less well than the exact repeat; an LSTM shows only a modest, fading reduction "
        "(a coarse semantic gist); the transformers' memory improves with training on more data "
        "(Armeni, Honey & Linzen 2022, abstract, section 3, Figs. 2-4)."
    ),
    measured=(
        f"Toy language, 2-layer transformer ({n_params['transformer']} params) vs 1-layer LSTM ({n_params['lstm']}), "
        f"{CHECKPOINTS[-1]} steps each. Median repeat surprisal, repeat condition, averaged over list lengths "
        f"{LIST_LENGTHS}: transformer {short_long['transformer']['short']:.1f} % (gap {GAPS['short']}) / "
        f"{short_long['transformer']['long']:.1f} % (gap {GAPS['long']}); LSTM {short_long['lstm']['short']:.1f} % / "
        f"{short_long['lstm']['long']:.1f} %. Transformer permuted "
        f"{np.mean([tr[k]['permuted'] for k in cells]):.1f} %, novel {np.mean([tr[k]['novel'] for k in cells]):.1f} %; "
        f"LSTM permuted {np.mean([ls[k]['permuted'] for k in cells]):.1f} %, novel "
        f"{np.mean([ls[k]['novel'] for k in cells]):.1f} %. Criteria: {crit}."
    ),
    reproduced=verdict,
    numbers={
        "parameters": n_params,
        "list_lengths": LIST_LENGTHS,
        "gaps": GAPS,
        "n_trials": N_TRIALS,
        "median_repeat_surprisal": {m: {f"n{n}_{g}": r for (n, g), r in res.items()} for m, res in results.items()},
        "iqr": {m: {f"n{n}_{g}": r for (n, g), r in res.items()} for m, res in spread.items()},
        "training_curve": {"steps": CHECKPOINTS, **curves},
        "surprisal_by_position": by_position,
        "final_train_loss": final_loss,
        "train_cpu_seconds": seconds,
        "criteria": {k: bool(v) for k, v in crit.items()},
    },
)

# %% [markdown]
# ## Summary
#
# What the full run measured (`figures/27_verbatim_stm.json`; 1500 steps of 16 × 64 tokens each,
# about 135 CPU seconds for the transformer and 35 for the LSTM):
#
# * **The verdict is "partly".** The transformer's median repeat surprisal is below the LSTM's in
#   every cell, but it is 73-78 % at the short gap and 91-97 % at the long one, nowhere near the
#   paper's few percent: criterion (a) fails, and so does (b) (the permuted list is retrieved worse
#   than the repeat only at the short gap with 5 and 8 nouns, not in the other four cells). The LSTM shows no retrieval at all (100 ± 1 % in every condition), so
#   (c) holds trivially and (d) by a hair (100.5 vs 100.1 %).
# * **The transformer is caught in the middle of learning to copy.** Its repeat surprisal on the
#   probe fell from ~100 % to 89 % at step 1250 and 80 % at step 1500 (right panel), while its loss
#   kept falling: the abrupt formation of an induction circuit (a previous-token head feeding a head
#   that attends to the token after the earlier occurrence of the current one) had begun and not
#   finished. The per-position surprisals show how: the second list gets easier noun by noun
#   (2.72 → 2.06 nats from the first to the eighth noun, vs 2.77-3.02 on the first list), the
#   signature of copying "what came next last time", which needs the preceding noun as its cue.
#   The *novel* condition already rises above 100 % (126-153 % at the short gap): the model has
#   learned that `AGAIN` announces a repeat and is surprised by fresh nouns, exactly as the
#   induction rule of section 2 is on a permuted list.
# * **Scale and budget explain the gap to the paper**, which trained on WikiText-103 (100M tokens)
#   or used GPT-2; we train 1.5M tokens, and the paper itself finds the transformer's retrieval
#   "markedly enhanced" with more training data, which our training curve shows in miniature. In a
#   development run with another initialisation and data seed (same sizes and optimizer), the
#   same transformer crossed the transition between steps 800 and 1000 and reached 4 % repeat vs
#   332 % permuted at step 1000 (5 nouns, gap 4, 32 trials): *when* the transition happens is seed-dependent, and the committed
#   run with its fixed seeds did not reach it within the CPU budget. We report the committed run.
# * The LSTM, with the same parameters and steps, learned the filler statistics (its final training
#   loss, 2.27 nats, is close to the transformer's 2.23) but nothing about lists: holding 3-8 of 16 nouns in order in a 64-unit
#   state is a harder thing to learn from this signal than pointing back with attention.
#
# ## Exercises
#
# 1. The induction rule scored 100/n % on a repeated list: the first noun of list 2 follows `AGAIN`,
#    which never occurred before. Which single change to the paradigm would let a perfect copier
#    reach ~0 %? Check it with `induction_logits`.
# 2. Repeat surprisal is a ratio of means, not a mean of ratios. Compute both for the trained
#    transformer in the repeat condition; when do they differ much?
# 3. The paper's LSTM retrieves mostly the first nouns. Compute, for the LSTM, the repeat surprisal
#    of the first two nouns of list 2 and of the rest separately.
#
# ## Solutions

# %%
# 1. Repeat the marker too: if list 2 is introduced by LIST (which preceded list 1), the copier
#    predicts list1[0] after it. Replace AGAIN by LIST in the repeat condition.
par1 = lang.paradigm(np.random.default_rng(8), 20, 5, 8)
tok = par1.tokens["repeat"].copy()
tok[:, par1.list2[0] - 1] = 1  # LIST
s1 = token_surprisal(induction_logits(tok, V), tok)
print("exercise 1:", np.median(100 * s1[:, par1.list2].mean(1) / s1[:, par1.list1].mean(1)).round(6), "%")

# %%
# 2. Ratio of means (the paper's measure) vs mean of per-noun ratios.
s2 = token_surprisal(lm_logits_fn("transformer", trained["transformer"])(par1.tokens["repeat"]), par1.tokens["repeat"])
ratio_of_means = 100 * s2[:, par1.list2].mean(1) / s2[:, par1.list1].mean(1)
mean_of_ratios = 100 * (s2[:, par1.list2] / s2[:, par1.list1]).mean(1)
print(f"exercise 2: median ratio of means {np.median(ratio_of_means):.1f} %, mean of ratios {np.median(mean_of_ratios):.1f} %"
      " (they differ when some list-1 nouns happen to be easy, e.g. a noun that was likely anyway)")  # fmt: skip

# %%
# 3. The LSTM's retrieval by part of the list.
s3 = token_surprisal(lm_logits_fn("lstm", trained["lstm"])(par1.tokens["repeat"]), par1.tokens["repeat"])
head, rest = slice(0, 2), slice(2, None)
for label, part in [("first two nouns", head), ("the rest", rest)]:
    r = 100 * s3[:, par1.list2[part]].mean(1) / s3[:, par1.list1[part]].mean(1)
    print(f"exercise 3: LSTM, {label}: {np.median(r):.1f} %")
