# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # One recurrence, three forms
#
# **The question.** A recurrence looks sequential by nature: h_t needs h_{t-1}. Yet linear RNNs,
# S4, Mamba, RetNet and GLA all train in parallel over time. How can a loop over time be computed
# in O(log T) parallel steps, and how do you backpropagate through it by hand?
#
# Everything in this lesson is about the first-order linear recurrence
#
# $$h_t = a_t \, h_{t-1} + b_t, \qquad h_{-1} = h_0 \text{ (the initial state)}, \qquad t = 0, \dots, T-1 \tag{1}$$
#
# applied elementwise to a batch of channels: `a`, `b` and `h` have layout (B, T, D). It is the
# skeleton of every diagonal state space model: Mamba's selective scan is (1) with
# a_t = exp(Δ_t A) and b_t = Δ_t B_t u_t, and an exponential moving average is (1) with a
# constant a. We will
#
# 1. write the definition as a plain loop (the **recurrent form**) and derive its backward pass;
# 2. rewrite it with an associative operator to get a log-depth **parallel form**;
# 3. combine both into a **chunked form**, the structure GPU kernels use;
# 4. check that all forms (and the numba kernels) agree, forward and backward;
# 5. measure what each form costs.
#
# The code lives in `ref/mixers/linear_scan/` (one file per form) and `numba_kernels/scan_cpu.py`;
# this lesson imports it and never copies it.

# %%
import matplotlib.pyplot as plt
import numpy as np

from ref.bench.machine import time_interleaved
from ref.lessons import lesson_context
from ref.mixers.linear_scan import (
    linear_scan_chunked,
    linear_scan_chunked_backward,
    linear_scan_parallel,
    linear_scan_parallel_backward,
    linear_scan_recurrent,
    linear_scan_recurrent_backward,
)
from ref.nn import gradcheck

ctx = lesson_context(__file__)
rng = np.random.default_rng(0)
print(f"quick mode: {ctx.quick}; figures go to {ctx.out_dir}")

# %% [markdown]
# ## 1. The definition, and the recurrent form
#
# The most literal implementation loops over batch, channel and time with Python scalars. It is
# far too slow for real use, but nobody can doubt what it computes, so it is our first check.

# %%
def scan_by_definition(a, b, h0):
    """Equation (1), one scalar at a time."""
    B, T, D = a.shape
    h = np.zeros((B, T, D))
    for i in range(B):
        for d in range(D):
            state = h0[i, d]
            for t in range(T):
                state = a[i, t, d] * state + b[i, t, d]  # (1)
                h[i, t, d] = state
    return h


B, T, D = 2, 50, 3
a = rng.uniform(-1, 1, (B, T, D))
b = rng.standard_normal((B, T, D))
h0 = rng.standard_normal((B, D))

h, ht, cache = linear_scan_recurrent(a, b, h0)  # the loop over t, vectorised over (B, D)
print("recurrent form == definition:", np.allclose(h, scan_by_definition(a, b, h0), rtol=1e-14, atol=1e-14))
print("final state is the last h:  ", np.array_equal(ht, h[:, -1]))

# %% [markdown]
# ## 2. The backward pass, by hand
#
# Suppose a loss L depends on all states (through dL/dh_t =: dh_t, the upstream gradient) and on
# the final state (through dht). A state h_t influences L directly, and through the next state
# h_{t+1} = a_{t+1} h_t + b_{t+1}. Write g_t for the *total* derivative dL/dh_t. The chain rule
# gives a recurrence that runs **backwards** in time:
#
# $$g_t = dh_t + a_{t+1}\, g_{t+1}, \qquad g_{T-1} = dh_{T-1} + dht \tag{2}$$
#
# and differentiating (1) for its three inputs:
#
# $$\frac{\partial L}{\partial a_t} = g_t\, h_{t-1}, \qquad \frac{\partial L}{\partial b_t} = g_t, \qquad \frac{\partial L}{\partial h_{-1}} = a_0\, g_0. \tag{3}$$
#
# Notice what (2) is: the same kind of first-order linear recurrence as (1), with coefficients
# a_{t+1} and inputs dh_t, run from t = T-1 down to 0. **The backward of a linear scan is a linear
# scan in reverse**, so every fast way to compute (1) is also a fast backward.
#
# `linear_scan_recurrent_backward` implements (2)-(3) with a reverse loop. We check it the way
# every backward in this package is checked: against float64 central differences of the forward,
# with a random upstream gradient (a sum of ones would hide a transposed axis).

# %%
inputs = {"a": rng.uniform(-1, 1, (2, 6, 3)), "b": rng.standard_normal((2, 6, 3)), "initial_state": rng.standard_normal((2, 3))}
print(gradcheck(linear_scan_recurrent, linear_scan_recurrent_backward, inputs, rng=rng, name="linear_scan_recurrent"))

# %% [markdown]
# ## 3. The parallel form: an associative operator
#
# One step of (1) is the affine map f_t(h) = a_t h + b_t. Composing two such maps gives another:
#
# $$f_t(f_s(h)) = a_t(a_s h + b_s) + b_t = (a_s a_t)\, h + (a_t b_s + b_t).$$
#
# So the pairs (a, b) combine with the operator
#
# $$(a_s, b_s) \bullet (a_t, b_t) = (a_s a_t,\; a_t b_s + b_t) \tag{4}$$
#
# and h_t is the b-part of the prefix (a_0, b_0) • (a_1, b_1) • ... • (a_t, b_t), once the
# initial state is folded into the first pair (b_0 ← a_0 h_{-1} + b_0). Composition of functions
# is associative, hence so is (4): we may bracket the prefix any way we like. Let us check that
# numerically before relying on it.

# %%
def combine(left, right):
    """Equation (4)."""
    (a_s, b_s), (a_t, b_t) = left, right
    return a_s * a_t, a_t * b_s + b_t


p, q, r = [(rng.standard_normal(), rng.standard_normal()) for _ in range(3)]
print("(p.q).r =", combine(combine(p, q), r))
print("p.(q.r) =", combine(p, combine(q, r)))

# %% [markdown]
# Associativity is all a **prefix scan** needs. The Hillis-Steele scan runs ceil(log2 T) rounds;
# in round k every position t ≥ 2^k combines with the position 2^k to its left. After round k,
# position t holds the prefix of its last 2^(k+1) elements; after the last round, all of them.
# Each round is a single vectorised expression over the whole array, so the number of
# *sequential* steps drops from T to log2 T (at the price of T log T total work, where the loop
# did T; Blelloch's variant brings the work back to O(T)).
#
# Its backward is, as promised, the same parallel scan run on time-reversed inputs.

# %%
hp, htp, cache_p = linear_scan_parallel(a, b, h0)
print(f"T = {T}: {int(np.ceil(np.log2(T)))} rounds instead of {T} steps")
print("parallel == recurrent (max abs diff):", np.abs(hp - h).max())
dh, dht = rng.standard_normal(h.shape), rng.standard_normal(ht.shape)
grads_rec = linear_scan_recurrent_backward(dh, dht, cache)
grads_par = linear_scan_parallel_backward(dh, dht, cache_p)
for name, x, y in zip(("da", "db", "dinitial_state"), grads_rec, grads_par):
    print(f"  {name:15s} max abs diff {np.abs(x - y).max():.1e}")

# %% [markdown]
# ## 4. The chunked form: scan inside chunks, carry across
#
# The parallel form does more work than the loop, and on real hardware the work matters. The
# chunked form keeps the loop's O(T) work but exposes parallelism. Cut time into chunks of C steps.
# Unrolling (1) from the start s of t's chunk,
#
# $$h_t = P_t\, h_{s-1} + \ell_t, \qquad P_t = a_s a_{s+1} \cdots a_t, \qquad \ell_t = \text{the scan of the chunk from a zero state.} \tag{5}$$
#
# 1. In **every chunk at once**: the local scans ℓ and running products P (C vectorised steps).
# 2. **Across chunks**, sequentially: the state entering each chunk (T/C steps).
# 3. **Everywhere at once**: equation (5).
#
# That is C + T/C sequential steps, fewest for C ≈ √T. The GPU kernels (`numba_kernels/scan_cuda.py`)
# use exactly this structure to put B·D·T/C threads to work instead of B·D. No a_t is ever
# divided out, so the form stays exact when some a_t are zero.

# %%
for C in (1, 7, 16, T, 2 * T):  # T = 50 is a multiple of none of 7, 16
    hc, htc, cache_c = linear_scan_chunked(a, b, h0, chunk_size=C)
    grads_c = linear_scan_chunked_backward(dh, dht, cache_c)
    worst = max(np.abs(x - y).max() for x, y in zip(grads_c, grads_rec))
    print(f"chunk size {C:3d}: forward max diff {np.abs(hc - h).max():.1e}, gradients max diff {worst:.1e}")

# %% [markdown]
# ## 5. The numba kernel
#
# The NumPy loop pays Python's overhead at every time step: with few channels, that overhead *is*
# the cost. `numba_kernels/scan_cpu.py` compiles the loop. It keeps time sequential (the natural
# order for a CPU with a few cores) and parallelises over tasks of (batch, block of channels);
# inside a task the innermost loop runs over contiguous channels, so it vectorises (a problem too
# small to split, like the 64 channels below, runs in a serial twin of the kernel). The backward
# kernel fuses (2) and (3) into one reverse pass. Same arguments, same results:

# %%
hn, htn, cache_n = linear_scan_recurrent(a, b, h0, backend="numba")  # compiles on first use
grads_n = linear_scan_recurrent_backward(dh, dht, cache_n)
print("numba == numpy loop, forward:", np.abs(hn - h).max())
print("numba == numpy loop, grads:  ", max(np.abs(x - y).max() for x, y in zip(grads_n, grads_rec)))

# %% [markdown]
# The differences are at the level of the last bit: the kernel computes a·h + b as one fused
# multiply-add (`fastmath={"contract"}`), which rounds once instead of twice.
#
# ## 6. Experiment: what does each form cost?
#
# Time the forward pass against T at B·D = 64 channels (1 × 64), float64. Each measurement is the
# median of a few runs after a warm-up call (which also compiles the numba kernel); the runs of
# the four forms are interleaved so that a machine whose speed drifts affects them all alike.

# %%
Ts = [256, 1024, 4096] if ctx.quick else [256, 1024, 4096, 16384, 65536]
repeats = 3 if ctx.quick else 7
forms = {
    "NumPy loop (recurrent)": lambda a, b: linear_scan_recurrent(a, b),
    "NumPy parallel scan": lambda a, b: linear_scan_parallel(a, b),
    "NumPy chunked (C = 64)": lambda a, b: linear_scan_chunked(a, b, chunk_size=64),
    "numba CPU kernel": lambda a, b: linear_scan_recurrent(a, b, backend="numba"),
}
timings = {name: [] for name in forms}
for T_ in Ts:
    a_ = rng.uniform(0.9, 1.0, (1, T_, 64))
    b_ = rng.standard_normal((1, T_, 64))
    # medians after a warm-up call, the repeats of the four forms interleaved
    medians = time_interleaved({name: (lambda fn=fn: fn(a_, b_)) for name, fn in forms.items()}, repeats)
    for name in forms:
        timings[name].append(medians[name])
    print(f"T = {T_:6d}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in timings.items()))

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (name, ts), marker in zip(timings.items(), "osd^"):
    ax.loglog(Ts, np.array(ts) * 1e3, marker=marker, label=name)
ax.set_xlabel("sequence length T")
ax.set_ylabel("forward time (ms), median")
ax.set_title("h_t = a_t h_{t-1} + b_t, B·D = 64, float64")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
ctx.save_figure(fig)

speedup = timings["NumPy loop (recurrent)"][-1] / timings["numba CPU kernel"][-1]
chunked_speedup = timings["NumPy loop (recurrent)"][-1] / timings["NumPy chunked (C = 64)"][-1]
print(f"at T = {Ts[-1]}: numba is {speedup:.0f}x the NumPy loop, the NumPy chunked form {chunked_speedup:.1f}x")

# %% [markdown]
# What the figure shows (numbers in `01_linear_scan.json`):
#
# * The parallel scan wins at small T (log2 T vectorised rounds instead of T interpreted steps),
#   but its T log T work makes it the slowest at large T: on a CPU with two cores, depth is cheap
#   and work is what costs. Its depth would pay on hardware with thousands of lanes.
# * With 64 channels the NumPy loop is dominated by Python's per-step overhead; the chunked form
#   replaces T interpreted steps by C + T/C and is correspondingly faster.
# * The compiled kernel removes the overhead altogether. What is left is memory traffic: at the
#   longest T each of a, b and h is 32 MiB, and the kernel's time is the time to stream them
#   (including the first touch of the freshly allocated h), so its lead over the loop shrinks.

# %%
errors = {
    "parallel": float(np.abs(hp - h).max()),
    "chunked": float(max(np.abs(linear_scan_chunked(a, b, h0, chunk_size=C)[0] - h).max() for C in (1, 7, 16))),
    "numba": float(np.abs(hn - h).max()),
}
agree = all(e < 1e-12 for e in errors.values())
fast = speedup >= 20
ctx.save_result(
    title="One recurrence, three forms",
    claim=(
        "The loop, the log-depth parallel scan and the chunked form compute the same states and gradients; "
        "a numba kernel, sequential in time and parallel over channels, is at least 20x faster than the NumPy "
        "loop at B·D = 64."
    ),
    measured=(
        f"max |difference| to the loop: parallel {errors['parallel']:.1e}, chunked {errors['chunked']:.1e}, "
        f"numba {errors['numba']:.1e} (float64); at T = {Ts[-1]} numba is {speedup:.0f}x the NumPy loop "
        f"({timings['numba CPU kernel'][-1] * 1e3:.2f} ms vs {timings['NumPy loop (recurrent)'][-1] * 1e3:.1f} ms); "
        f"the parallel scan is {timings['NumPy parallel scan'][-1] / timings['NumPy loop (recurrent)'][-1]:.1f}x the "
        "loop's time on this CPU."
    ),
    reproduced="yes" if agree and fast else ("partly" if agree else "no"),
    numbers={"T": Ts, "seconds": timings, "max_abs_difference": errors, "numba_speedup": speedup},
)

# %% [markdown]
# ## Summary
#
# * A linear recurrence is a prefix scan of the associative operator (4): that is why it can be
#   computed in log T parallel steps, and why chunking (scan inside, carry across) is exact.
# * Its backward (2) is the same recurrence, reversed in time, with the coefficients shifted by one;
#   every form of the forward is therefore also a form of the backward.
# * Which form is fastest depends on the hardware: on a 2-core CPU a compiled loop over time wins;
#   on a GPU the chunked form fills the device.
#
# ## Exercises
#
# 1. Show that the backward recurrence (2) can be computed with the *forward* function
#    `linear_scan_recurrent` applied to time-reversed inputs. Which coefficient sequence and which
#    initial state do you pass?
# 2. Count the sequential steps C + ceil(T/C) of the chunked form for T = 4096 and find the best C.
# 3. An exponential moving average m_t = β m_{t-1} + (1 - β) x_t is (1) with a constant a. Write
#    it as a scan and check it against `np.convolve` with the kernel (1 - β) β^k.
#
# ## Solutions

# %%
# 1. Reverse time: s = T-1-t. Then g_s' = a'_s g_{s-1}' + dh'_s with a'_s = a_{t+1} (and a'_0 = 1,
#    since nothing multiplies the carry-in at t = T-1) and initial state dht.
a_next = np.concatenate([a[:, 1:], np.ones_like(a[:, :1])], axis=1)  # (B, T, D): a_{t+1}
g_rev, _, _ = linear_scan_recurrent(a_next[:, ::-1].copy(), dh[:, ::-1].copy(), dht)
g = g_rev[:, ::-1]
print("exercise 1, db = g:", np.allclose(g, grads_rec[1], rtol=1e-13, atol=1e-13))

# %%
# 2. Sequential steps of the chunked form.
steps = {C: C + -(-4096 // C) for C in (8, 16, 32, 64, 128, 256, 512)}
print("exercise 2:", steps, "-> best C =", min(steps, key=steps.get), "(sqrt(4096) = 64)")

# %%
# 3. The exponential moving average as a scan, against a convolution with (1 - beta) beta^k.
beta, x = 0.9, rng.standard_normal(200)
m, _, _ = linear_scan_recurrent(np.full((1, 200, 1), beta), ((1 - beta) * x)[None, :, None])
kernel = (1 - beta) * beta ** np.arange(200)
print("exercise 3:", np.allclose(m[0, :, 0], np.convolve(x, kernel)[:200], rtol=1e-12, atol=1e-12))
