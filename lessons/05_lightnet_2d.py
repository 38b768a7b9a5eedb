# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # You only scan once: one additive scan against multi-directional decay scans
#
# **The paper.** Qin, Mao, Shen, Li, Zhang, Dai and Zhong, *You Only Scan Once: Efficient
# Multi-dimension Sequential Modeling with LightNet* (arXiv 2405.21022).
#
# **The question.** Linear attention with a decay (GLA, RetNet, Mamba) is a scan: token t reads a
# state built from the tokens *before* it, each faded by the product of the decays in between.
# An image has no "before". Vision models built on such scans therefore scan the image several
# times, in several orders (Vim: forwards and backwards; VMamba: four directions), and add the
# results. The paper's abstract puts the claim this way: "the utilization of sequential scanning
# to establish a global receptive field necessitates multiple scans for multi-dimensional data,
# thereby leading to inefficiencies. This paper identifies the inefficiency caused by a
# 'multiplicative' linear recurrence and proposes an efficient alternative 'additive' linear
# recurrence to avoid the issue, as it can handle multi-dimensional data within a single scan."
#
# We test that at laptop scale, on a 2-D task that needs global context: is one additive scan
# (LightNet) as accurate as 1, 2 or 4 decay scans (GLA), and what does each cost per training step?
#
# Code: `ref/mixers/lightnet.py` (the additive recurrence, every form), `ref/models/lightnet.py`
# (LightNet's layer, MD-LRPE, MD-TPE, the classifier, the task), `ref/models/multiscan.py` (the
# baseline: GLA along several scan orders). Equation numbers below are this lesson's; the modules'
# docstrings number theirs (the paper's body text was not available to us to match its numbering).

# %%
import matplotlib.pyplot as plt
import numpy as np

from ref.bench.machine import time_interleaved
from ref.lessons import lesson_context
from ref.mixers.gla import gla_recurrent
from ref.mixers.lightnet import (
    lightnet_global,
    lightnet_global_backward,
    lightnet_recurrent,
    lightnet_recurrent_backward,
)
from ref.models.lightnet import image_tokens, init_lightnet, lightnet_forward, lightnet_loss_and_grads, sample_same_row
from ref.models.multiscan import (
    SCANS,
    init_multiscan_classifier,
    multiscan_forward,
    multiscan_gla,
    multiscan_gla_backward,
    multiscan_loss_and_grads,
    scan_permutation,
    scans_for,
)
from ref.nn import gradcheck
from ref.train import train, tree_leaves

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)
print(f"quick mode: {ctx.quick}; figures go to {ctx.out_dir}")


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


# %% [markdown]
# ## 1. Two recurrences: multiplicative and additive
#
# The **multiplicative** recurrence is GLA's: a (K × V) state per head, a forget gate α_t ∈ (0, 1]^K,
#
# $$S_t = \mathrm{diag}(\alpha_t)\, S_{t-1} + k_t^\top v_t \quad\Longrightarrow\quad S_t = \sum_{s \le t} \mathrm{diag}\Big(\prod_{r=s+1}^{t} \alpha_r\Big)\, k_s^\top v_s, \qquad o_t = K^{-1/2}\, q_t S_t. \tag{1}$$
#
# How much token s counts at time t is a product over *every token between them in the scan
# order*. The state at the end of the scan is no global summary: it is dominated by the last
# tokens of the scan. So each token must read its own causal state, and seeing the tokens after
# it needs another scan in another order.
#
# LightNet's **additive** recurrence keeps, per key dimension, a running mass Z_t = Z_{t-1} + e^{x_t}
# of the key logits x_t and the average of the values under that mass:
#
# $$S_t = \frac{1}{Z_t}\sum_{s \le t} e^{x_s} v_s, \qquad\text{i.e. (1) with}\quad \alpha_t = \frac{Z_{t-1}}{Z_t},\quad k_t = \frac{e^{x_t}}{Z_t}. \tag{2}$$
#
# Written as (1), the products telescope, ∏_{r=s+1}^{t} α_r = Z_s / Z_t, and token s weighs
# e^{x_s} / Z_t: its own logit against the total mass, *whatever order the tokens came in*. The
# final state is therefore the same for every scan order, a softmax-weighted sum of all tokens:
#
# $$S = \sum_s \mathrm{softmax}_s(x)\, v_s, \qquad o_t = K^{-1/2}\, q_t\, S \quad\text{for every } t. \tag{3}$$
#
# One pass gives every token a global view: that is "you only scan once". In the non-causal
# setting the pass is not even sequential: (3) is a sum (`lightnet_global`, module equation (8)).
# Let us check both halves of the argument on a 3 × 4 grid: scan it row by row and column by column.

# %%
grid_small = (3, 4)
T_small = 12
q = rng.standard_normal((1, T_small, 1, 4))
x = rng.standard_normal((1, T_small, 1, 4))  # LightNet's key logits
k = rng.standard_normal((1, T_small, 1, 4))
v = rng.standard_normal((1, T_small, 1, 3))
gk = log_sigmoid(rng.standard_normal((1, T_small, 1, 4)))  # GLA's log-gates, log alpha <= 0
_, (S_global, _), _ = lightnet_global(q, x, v)  # (3)
for scan in ("row", "col", "col_reverse"):
    perm = scan_permutation(grid_small, scan)  # step i visits token perm[i]
    _, (S_add, _), _ = lightnet_recurrent(q[:, perm], x[:, perm], v[:, perm])  # (2) along this order
    _, S_mul, _ = gla_recurrent(q[:, perm], k[:, perm], v[:, perm], gk[:, perm])  # (1) along this order
    if scan == "row":
        S_mul_row = S_mul
    print(
        f"scan {scan:12s} additive final state - global sum: {np.abs(S_add - S_global).max():.1e};  "
        f"multiplicative final state, relative change from the row scan: "
        f"{np.abs(S_mul - S_mul_row).max() / np.abs(S_mul_row).max():.2f}"
    )
alpha0 = np.exp(log_sigmoid(0.0) / 16)  # GLA's gate at initialisation: sigmoid(0)^(1/16)
print(f"GLA's initial decay alpha = {alpha0:.4f}: at the end of a 64-token scan the first token weighs "
      f"alpha^63 = {alpha0**63:.3f}, the last 1")

# %% [markdown]
# ## 2. The baseline: a decay scan in several orders
#
# `ref/models/multiscan.py` runs GLA along S scan orders π_s of the grid and averages. With P_s the
# matrix that puts the tokens in the order of scan s, (P_s u)_i = u_{π_s(i)}:
#
# $$o = \frac{1}{S} \sum_{s=1}^{S} P_s^\top\, \mathrm{GLA}\big(P_s q_s,\; P_s k_s,\; P_s v,\; P_s\, \mathrm{gk}_s\big). \tag{4}$$
#
# The orders are row-major forwards and backwards, column-major forwards and backwards; one scan is
# a causal model, two are Vim's bidirectional scan, four are VMamba's cross-scan. Its backward is
# the same thing read backwards: permute the output gradient, run GLA's backward, un-permute
# (P_s^T is a gather with the inverse permutation):
#
# $$(dq_s, dk_s, dv_s, d\mathrm{gk}_s) = \tfrac{1}{S}\, P_s^\top\, \mathrm{GLA}^{\text{backward}}(P_s\, do). \tag{5}$$
#
# Here is the step at which each scan visits each cell of a 3 × 4 grid, then (4) against a plain
# loop over the scans, and (5) against finite differences:

# %%
for scan in SCANS:
    step = np.argsort(scan_permutation(grid_small, scan)).reshape(grid_small)  # step[i, j]: when cell (i, j) is read
    print(f"{scan}:\n{step}")


def one_scan_at_a_time(q, k, v, gk, grid, scans):
    """(4) by a loop over the scans, each un-permuted token by token."""
    o = np.zeros(v.shape)
    for scan in scans:
        perm = scan_permutation(grid, scan)
        o_s, _, _ = gla_recurrent(q[:, perm], k[:, perm], v[:, perm], gk[:, perm])  # (1) in scan order
        for i, token in enumerate(perm):
            o[:, token] += o_s[:, i] / len(scans)  # P_s^T: step i's output belongs to token perm[i]
    return o


o_multi, _ = multiscan_gla(q, k, v, gk, grid=grid_small, scans=SCANS, form="recurrent")
print("(4) == loop over the scans:", np.abs(o_multi - one_scan_at_a_time(q, k, v, gk, grid_small, SCANS)).max())


def fwd(q, k, v, gk):
    return multiscan_gla(q, k, v, gk, grid=grid_small, scans=SCANS, form="chunked", chunk_size=5)


def bwd(do, cache):
    return dict(zip(("q", "k", "v", "gk"), multiscan_gla_backward(do, cache)))


report = gradcheck(fwd, bwd, {"q": q, "k": k, "v": v, "gk": gk}, rng=rng, name="multiscan_gla")
print(f"(5) against finite differences: worst relative error {max(t.rel_err for t in report.tensors):.1e}")

# %% [markdown]
# In the layer (`multiscan_layer`, the GLA layer of lesson 02 with (4) as its mixer), each scan
# has its own query, key and gate projections, as VMamba's per-direction parameters; the values,
# the output norm, the output gate and W_o are shared. Sharing everything would make the four
# scans a set that a transpose or a 180° rotation of the image maps onto itself: the model could
# not tell a 6 from a 9 (exercise 2).
#
# ## 3. One scan or one sum: the same function
#
# LightNet's one causal scan (2) followed by every token reading its final state is (3). Both are
# in `ref.mixers.lightnet`; composing them takes four lines, and we check forward and backward:

# %%
def scan_once(q, x, v):
    """LightNet as one causal scan (2), every token then reading the final state: (3)."""
    _, (S, z), cache = lightnet_recurrent(q, x, v)  # one pass over the tokens, in any order
    return np.einsum("bthk,bhkv->bthv", q, S) * q.shape[-1] ** -0.5, (q, S, cache)


def scan_once_backward(do, c):
    q, S, cache = c
    scale = q.shape[-1] ** -0.5
    dS = scale * np.einsum("bthk,bthv->bhkv", q, do)  # every o_t reads S
    dq_scan, dx, dv, _ = lightnet_recurrent_backward(None, (dS, None), cache)  # back through the scan
    return scale * np.einsum("bthv,bhkv->bthk", do, S) + dq_scan, dx, dv


o_once, c_once = scan_once(q, x, v)
o_sum, _, c_sum = lightnet_global(q, x, v)
do = rng.standard_normal(o_sum.shape)
grads_once = scan_once_backward(do, c_once)
grads_sum = lightnet_global_backward(do, None, c_sum)[:3]
print("one scan == one sum, forward:", np.abs(o_once - o_sum).max(),
      " backward:", max(np.abs(a - b).max() for a, b in zip(grads_once, grads_sum)))

# %% [markdown]
# ## 4. Receptive fields
#
# Which tokens does a token read? For a token t in the middle of an 8 × 8 grid we measure
# |∂o_t / ∂v_s| for every token s, with all queries and keys equal (so that only the decays and
# the orders shape the picture) and GLA's gates at their initial value α ≈ 0.958. One scan reads
# the part of the image that comes before t in raster order; two row scans read everything,
# weighted by the distance *in raster order* (the pixel above is 8 steps away, the pixel to the
# left 1); four scans add the column orders, which bring the pixels above and below closer.
# LightNet reads every token with the weight softmax_s(x) of (3): it depends on the token's key
# logits (random here), not on its place.

# %%
side = 8
grid = (side, side)
T = side * side
t_probe = 3 * side + 4  # row 3, column 4
q_rf = np.ones((1, T, 2, 8))
k_rf = np.ones((1, T, 2, 8))
x_rf = 0.3 * rng.standard_normal((1, T, 2, 8))  # LightNet's key logits
v_rf = rng.standard_normal((1, T, 2, 8))
gk_rf = np.full((1, T, 2, 8), log_sigmoid(0.0) / 16)
do_rf = np.zeros((1, T, 2, 8))
do_rf[:, t_probe] = 1.0
fields = {}
for n in (1, 2, 4):
    _, cache = multiscan_gla(q_rf, k_rf, v_rf, gk_rf, grid=grid, scans=scans_for(n), form="recurrent")
    dv = multiscan_gla_backward(do_rf, cache)[2]
    fields[f"GLA, {n} scan{'s' if n > 1 else ''}"] = np.abs(dv[0]).sum(axis=(1, 2)).reshape(grid)
_, _, cache = lightnet_global(q_rf, x_rf, v_rf)
dv = lightnet_global_backward(do_rf, None, cache)[2]
fields["LightNet, one sum"] = np.abs(dv[0]).sum(axis=(1, 2)).reshape(grid)
r_, c_ = t_probe // side, t_probe % side
for name, f in fields.items():
    print(f"{name:18s}: reads {int((f > 0).sum()):2d} of {T} tokens; "
          f"weight of the pixel to the left / the pixel above: {f[r_, c_ - 1] / f[r_ - 1, c_]:.2f}")

# %% [markdown]
# ## 5. Experiment: are two marked pixels in the same row?
#
# `sample_same_row` draws 8 × 8 images with two pixels set and asks whether they share a row. The
# answer depends on two far-apart tokens and on where they are: a model must relate them across
# the image. One token per pixel (T = 64), features = the pixel value.
#
# * **LightNet**: `init_lightnet` with MD-LRPE, the paper's relative position encoding (the scores
#   between two tokens see their row offset and their column offset, `ref/models/lightnet.py` (8)-(9)),
#   and without MD-TPE: MD-TPE mixes each channel along its row and its column, so MD-TPE plus the
#   block's GLU could count the marks in a row without any attention, and we want the token mixers
#   to do the work. One global sum per layer (3).
# * **GLA, 1, 2 or 4 scans**: `init_multiscan_classifier`, the same classifier (embedding, blocks of
#   RMSNorm, mixer, RMSNorm, GLU, mean pooling, head; the same width, depth and initialisation,
#   xavier-uniform for every projection, as LightNet's code) with the multi-scan GLA layer as its
#   mixer. Its positional information is the decay along each scan.
#
# Every model trains with the same recipe (Adam, learning rate 3e-3 with a 10 % warmup and cosine
# decay to 3e-4, global gradient norm clipped to 1, batches of 32 fresh images) and is tested on
# the same held-out images. The verdict rule, fixed before the runs shown here: the claim reproduces if
# LightNet's mean test accuracy is within 2 points of the best multi-scan model's (2 or 4 scans)
# *and* its training step is cheaper than theirs; "partly" if only one of the two holds.

# %%
D, L = (16, 1) if ctx.quick else (16, 2)
steps = 20 if ctx.quick else 400
seeds = (1,) if ctx.quick else (1, 2)
n_test = 200 if ctx.quick else 1000
batch = 32
models = ["LightNet", "GLA, 1 scan", "GLA, 2 scans", "GLA, 4 scans"]
test_images, test_labels = sample_same_row(np.random.default_rng(123), n_test, side=side)
test_tokens, _ = image_tokens(test_images)  # (n_test, 64, 1)


def build(name, seed):
    """(params, loss_and_grads(params, x, y), forward(params, x)) of one model."""
    r = np.random.default_rng(seed)
    if name == "LightNet":
        params = init_lightnet(r, in_features=1, dim=D, num_classes=2, grid=grid, num_layers=L, use_tpe=False)
        return (params, lambda p, x, y: lightnet_loss_and_grads(p, x, y, grid=grid)[:2],
                lambda p, x: lightnet_forward(p, x, grid=grid)[0])
    n = int(name.split(", ")[1][0])
    options = {"grid": grid, "scans": scans_for(n), "form": "recurrent"}  # recurrent: the fastest NumPy form at T = 64
    params = init_multiscan_classifier(r, in_features=1, dim=D, num_classes=2, grid=grid, num_layers=L, num_scans=n)
    return (params, lambda p, x, y: multiscan_loss_and_grads(p, x, y, **options)[:2],
            lambda p, x: multiscan_forward(p, x, **options)[0])


def batches(r, step):
    images, labels = sample_same_row(r, batch, side=side)
    return image_tokens(images)[0], labels


n_params = {name: int(sum(a.size for a in tree_leaves(build(name, 0)[0]))) for name in models}
print("parameters:", n_params)
results = {name: {"accuracy": [], "loss": []} for name in models}
for seed in seeds:
    for name in models:
        params, loss_and_grads, forward = build(name, seed)
        params, _, history = train(
            params, lambda p, b, r, f=loss_and_grads: f(p, *b), batches, steps=steps, rng=np.random.default_rng(seed),
            optimizer="adam", lr=3e-3, warmup_steps=steps // 10, min_lr=3e-4, clip_norm=1.0, progress=False,
        )
        accuracy = float((forward(params, test_tokens).argmax(-1) == test_labels).mean())
        results[name]["accuracy"].append(accuracy)
        results[name]["loss"].append(history["loss"].tolist())
        print(f"seed {seed}, {name:13s}: test accuracy {accuracy:.3f}, "
              f"training loss over the last 20 steps {history['loss'][-20:].mean():.3f}")

# %% [markdown]
# ## 6. What each costs
#
# **Per training step**: forward and backward of the whole classifier on one batch of 32, the
# models' runs interleaved (medians). **Per mixer**: the token mixer alone (forward and backward,
# B = 4, H = 2, K = V = 16) against the grid size: LightNet's one sum (3), LightNet as one causal
# scan (section 3, a loop over the tokens like GLA's), and GLA along 1, 2 and 4 orders in its
# recurrent form (the fastest NumPy form at these lengths: the chunked form took 3 to 6 times
# longer in our measurements; lesson 02 compares the forms).
#
# *Timing.* NumPy's BLAS runs on one thread (`python -m ref lessons run` sets
# OPENBLAS_NUM_THREADS=1): at these sizes its threads mostly wait for each other, and on a shared machine they make the timings depend on the neighbours.

# %%
x_batch, y_batch = batches(np.random.default_rng(7), 0)
step_fns = {}
for name in models:
    params, loss_and_grads, _ = build(name, 0)
    step_fns[name] = lambda p=params, f=loss_and_grads: f(p, x_batch, y_batch)
step_time = time_interleaved(step_fns, repeats=2 if ctx.quick else 7)
for name, s in step_time.items():
    print(f"{name:13s}: {s * 1e3:6.1f} ms per training step")

sides = [4, 8] if ctx.quick else [8, 16, 32]
mixer_names = ["LightNet, one sum", "LightNet, one scan", "GLA, 1 scan", "GLA, 2 scans", "GLA, 4 scans"]
mixer_time = {name: [] for name in mixer_names}
Bm, Hm, Km = 4, 2, 16
for s_ in sides:
    Tm, gm = s_ * s_, (s_, s_)
    r = np.random.default_rng(s_)
    qm, xm, vm, dom = (r.standard_normal((Bm, Tm, Hm, Km)) for _ in range(4))
    fns = {
        "LightNet, one sum": lambda: lightnet_global_backward(dom, None, lightnet_global(qm, xm, vm)[2]),
        "LightNet, one scan": lambda: scan_once_backward(dom, scan_once(qm, xm, vm)[1]),
    }
    for n in (1, 2, 4):
        qs, ks = r.standard_normal((2, n, Bm, Tm, Hm, Km))  # per-scan queries and keys, as in the layer
        gs = log_sigmoid(r.standard_normal((n, Bm, Tm, Hm, Km))) / 16

        def gla_scans(qs=qs, ks=ks, gs=gs, n=n):
            o, cache = multiscan_gla(qs, ks, vm, gs, grid=gm, scans=scans_for(n), form="recurrent")
            return multiscan_gla_backward(dom, cache)

        fns[f"GLA, {n} scan{'s' if n > 1 else ''}"] = gla_scans
    medians = time_interleaved(fns, repeats=2 if ctx.quick else 5)
    for name in mixer_names:
        mixer_time[name].append(medians[name])
    print(f"{s_:2d} x {s_:2d}: " + ", ".join(f"{name} {medians[name] * 1e3:.1f} ms" for name in mixer_names))

# %%
labels = {"LightNet": "LightNet", "GLA, 1 scan": "GLA x1", "GLA, 2 scans": "GLA x2", "GLA, 4 scans": "GLA x4"}
colors = dict(zip(models, ("C3", "C0", "C1", "C2")))
fig = plt.figure(figsize=(14, 7.5))
spec = fig.add_gridspec(2, 4, height_ratios=(1, 1.15), hspace=0.4, wspace=0.35)
for i, (name, f) in enumerate(fields.items()):
    ax = fig.add_subplot(spec[0, i])
    others = np.delete(f.ravel(), t_probe)  # the token itself (always read) would dwarf the rest
    ax.imshow(np.minimum(f / others.max(), 1), cmap="viridis", vmin=0, vmax=1)
    ax.plot(t_probe % side, t_probe // side, "r*", markersize=12)
    ax.set_title(name, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
fig.text(0.5, 0.95, "which tokens the red token reads at initialisation: |d o_t / d v_s|, "
         "scaled to the largest over s != t", ha="center", fontsize=10)

ax = fig.add_subplot(spec[1, 0])
for name in models:
    for j, curve in enumerate(results[name]["loss"]):
        smooth = np.convolve(curve, np.ones(20) / 20, mode="valid")  # (steps - 19,)
        seconds = (np.arange(len(smooth)) + 20) * step_time[name]  # steps x the median step time
        ax.plot(seconds, smooth, color=colors[name], alpha=0.9 if j == 0 else 0.45,
                label=labels[name] if j == 0 else None)
ax.set_xlabel("training time (s) = steps x step time")
ax.set_ylabel("training loss (20-step mean)")
ax.set_title("same-row task, 8 x 8 (lines: seeds)", fontsize=10)
ax.legend(fontsize=8)

ax = fig.add_subplot(spec[1, 1])
for i, name in enumerate(models):
    accs = results[name]["accuracy"]
    ax.bar(i, np.mean(accs), color=colors[name])
    ax.plot([i] * len(accs), accs, "k.", markersize=8)
ax.axhline(0.5, color="gray", ls=":", lw=1)
ax.set_xticks(range(len(models)), [labels[n] for n in models], fontsize=8)
ax.set_ylim(0.4, 1.02)
ax.set_ylabel(f"test accuracy ({n_test} images)")
ax.set_title("accuracy (bars: mean, dots: seeds)", fontsize=10)

ax = fig.add_subplot(spec[1, 2])
ax.bar(range(len(models)), [step_time[name] * 1e3 for name in models], color=[colors[n] for n in models])
ax.set_xticks(range(len(models)), [labels[n] for n in models], fontsize=8)
ax.set_ylabel("ms, forward + backward")
ax.set_title(f"one training step (batch {batch}, D = {D}, {L} layer{'s' if L > 1 else ''})", fontsize=10)

ax = fig.add_subplot(spec[1, 3])
Ts = [s_ * s_ for s_ in sides]
styles = {"LightNet, one sum": ("C3", "-"), "LightNet, one scan": ("C3", "--"), "GLA, 1 scan": ("C0", "-"),
          "GLA, 2 scans": ("C1", "-"), "GLA, 4 scans": ("C2", "-")}
for name in mixer_names:
    color, ls = styles[name]
    ax.loglog(Ts, np.array(mixer_time[name]) * 1e3, marker="o", color=color, ls=ls, label=name)
ax.set_xlabel("tokens T (grid side^2)")
ax.set_ylabel("ms, forward + backward")
ax.set_title("the token mixer alone", fontsize=10)
ax.legend(fontsize=7)
ax.grid(True, which="both", alpha=0.3)
ctx.save_figure(fig)

# %% [markdown]
# What the committed figure shows (full mode; numbers in `05_lightnet_2d.json`):
#
# * **Accuracy.** LightNet solves the task (1.000 on both seeds); four GLA scans nearly do
#   (0.996 and 1.000); one and two scans stop near 0.88 and 0.91. Two *row* scans help little: in
#   row-major order the pixels of a token's own row are 1 to 7 steps away, and so are pixels of the
#   next row, so a decay, which only knows the distance along the scan, cannot tell "same row"
#   from "next row". The column scans add a second distance that tells them apart. LightNet's
#   MD-LRPE hands the scores the row offset and the column offset directly, in one sum.
# * **Cost per training step.** GLA with 1, 2 and 4 scans took 1.2x, 1.7x and 2.8x LightNet's
#   time per step (92 ms for LightNet on a busy 2-core machine, NumPy, one thread): the 4-scan
#   model that matches LightNet's accuracy costs nearly three times as much per step, and has 1.7x
#   the parameters (its queries, keys and gates are per scan).
# * **The mixer alone.** At T = 1024 tokens, 1, 2 and 4 GLA scans take 4.2x, 6.2x and 10.6x the
#   time of LightNet's one sum, about linear in the number of scans (stacking the scans along the
#   batch axis saves little once the arrays are large). LightNet as *one causal scan* costs about
#   as much as one GLA scan (4.6x the sum; it also scans its normaliser): four GLA scans take 2.3x
#   its time, the paper's argument in its plainest form. The sum is cheaper still because it needs
#   no loop over the tokens at all; part of that factor is NumPy's interpreter overhead at every
#   step of a loop, which a compiled scan would shrink.
#
# Caveats. Two seeds are thin evidence, and training on this task is bumpy (the loss curves spike,
# and the GLA models leave the plateau at chance at different times). In preliminary runs with
# other seeds the 4-scan model once stopped at 0.85 and LightNet once at 0.975. In our first runs
# the GLA layers used GLA's own initialisation (N(0, 0.02) for W_v and W_o): their mixing path
# then starts about 100x weaker than LightNet's and the GLA models sat at chance for hundreds of
# steps, which is why both models now share LightNet's initialisation (section 5).

# %%
mean_acc = {name: float(np.mean(results[name]["accuracy"])) for name in models}
best_multi = max(("GLA, 2 scans", "GLA, 4 scans"), key=mean_acc.get)
acc_ok = mean_acc["LightNet"] >= mean_acc[best_multi] - 0.02
cheaper = all(step_time["LightNet"] < step_time[n] for n in ("GLA, 2 scans", "GLA, 4 scans"))
mixer_ratio = {n: float(mixer_time[n][-1] / mixer_time["LightNet, one sum"][-1]) for n in mixer_names}
verdict = "yes" if acc_ok and cheaper else ("partly" if acc_ok or cheaper else "no")
print(f"mean accuracy: {mean_acc}; best multi-scan: {best_multi}")
print(f"LightNet within 2 points of it: {acc_ok}; its step cheaper than 2 and 4 scans: {cheaper} -> {verdict}")

ctx.save_result(
    title="You only scan once: one additive scan against multi-directional decay scans",
    paper="lightnet",
    claim=(
        "A multiplicative (decay) linear recurrence needs multiple scans to give every token of multi-dimensional "
        "data a global receptive field, which is inefficient; LightNet's additive recurrence handles it within a "
        "single scan (abstract). Tested here: one additive scan matches the accuracy of multi-scan decay models "
        "at a lower cost."
    ),
    measured=(
        f"Same-row task on 8x8 images ({len(seeds)} seed(s), {steps} steps, D = {D}, {L} layer(s)): mean test "
        f"accuracy LightNet {mean_acc['LightNet']:.3f}, GLA with 1/2/4 scans "
        + "/".join(f"{mean_acc[n]:.3f}" for n in models[1:])
        + f"; ms per training step LightNet {step_time['LightNet'] * 1e3:.0f}, GLA with 1/2/4 scans "
        + "/".join(f"{step_time[n] * 1e3:.0f}" for n in models[1:])
        + f". Mixer alone at T = {Ts[-1]}: 1/2/4 GLA scans take "
        + "/".join(f"{mixer_ratio[n]:.1f}" for n in ("GLA, 1 scan", "GLA, 2 scans", "GLA, 4 scans"))
        + f"x the time of LightNet's one sum, LightNet as one causal scan {mixer_ratio['LightNet, one scan']:.1f}x "
        "(NumPy, 1 thread)."
    ),
    reproduced=verdict,
    numbers={
        "task": {"side": side, "n_test": n_test, "steps": steps, "batch": batch, "dim": D, "layers": L,
                 "seeds": list(seeds)},
        "parameters": n_params,
        "test_accuracy": {n: results[n]["accuracy"] for n in models},
        "mean_test_accuracy": mean_acc,
        "seconds_per_training_step": step_time,
        "mixer_tokens": Ts,
        "mixer_seconds": mixer_time,
        "accuracy_within_2_points": bool(acc_ok),
        "step_cheaper_than_multiscan": bool(cheaper),
    },
)

# %% [markdown]
# ## Summary
#
# * A decay recurrence weighs a token by the product of the decays between it and the reader, in
#   the scan's order: its final state is not a global summary, and a token sees only what came
#   before it. Covering an image takes several scans (4).
# * LightNet's additive recurrence weighs token s by e^{x_s} / Z: the products telescope, the
#   final state is the same in every order (3), and one scan, or one sum, serves every token.
# * The multi-scan baseline is a permutation, a scan, an inverse permutation (4)-(5); its cost
#   grows with the number of scans, and every scan is a loop over all tokens.
#
# ## Exercises
#
# 1. Shuffle the tokens of section 1 with a random permutation (not a scan of the grid) and check
#    that LightNet's final state does not change, while GLA's does.
# 2. With the scans' parameters shared (`init_multiscan_classifier(..., num_scans=None)`), show
#    that the 4-scan classifier gives the same logits for an image and its transpose. What is then
#    the best accuracy it can reach on the same-row task? (Half the images are positive; a
#    negative has its second pixel in the same column with probability 1/8.)
# 3. Count the work of the mixers per token and head: GLA's scan does a decay, an outer product and
#    a read of the (K × V) state at every step; LightNet's sum does the outer product once per
#    token and the read once per token. How does the ratio change with the number of scans?
#
# ## Solutions

# %%
# 1. A random order of the 12 tokens.
perm = rng.permutation(T_small)
_, (S_perm, _), _ = lightnet_recurrent(q[:, perm], x[:, perm], v[:, perm])
_, S_mul_perm, _ = gla_recurrent(q[:, perm], k[:, perm], v[:, perm], gk[:, perm])
print("exercise 1: LightNet", np.abs(S_perm - S_global).max(), "| GLA, relative change",
      round(float(np.abs(S_mul_perm - S_mul_row).max() / np.abs(S_mul_row).max()), 2))

# %%
# 2. Shared parameters: the transpose maps the set of four scans onto itself.
shared = init_multiscan_classifier(np.random.default_rng(5), in_features=1, dim=16, num_classes=2, grid=grid,
                                   num_layers=1, num_scans=None)
images, _ = sample_same_row(np.random.default_rng(6), 4, side=side)
logits = multiscan_forward(shared, image_tokens(images)[0], grid=grid, scans=SCANS, form="recurrent")[0]
logits_t = multiscan_forward(shared, image_tokens(images.transpose(0, 2, 1).copy())[0], grid=grid, scans=SCANS,
                             form="recurrent")[0]
print("exercise 2: same logits for the transposed images:", np.allclose(logits, logits_t, rtol=1e-12, atol=1e-12))
# A same-row image and its transpose (a same-column image, negative) get the same answer. Answer
# "positive" for both: the errors are the same-column negatives, 1/2 * 1/8 of the data.
print("            best accuracy:", 1 - 0.5 / 8)

# %%
# 3. Multiply-adds per token and head, K = V = 16: a scan step decays (K V), adds k^T v (K V) and
#    reads q S (K V); the sum adds k^T v once and reads q S once.
Kx = Vx = 16
per_scan = 3 * Kx * Vx
lightnet_sum = 2 * Kx * Vx
print("exercise 3:", {f"{n} scans": f"{n * per_scan / lightnet_sum:.1f}x LightNet's sum" for n in (1, 2, 4)},
      "- and the scans are T sequential steps, the sum a reduction")
