# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S4: why the HiPPO matrix? Remembering a signal, and learning a long delay
#
# **The paper.** Gu, Goel and Ré, *Efficiently Modeling Long Sequences with Structured State
# Spaces* (S4, arXiv 2111.00396). S4 is a state space model (SSM), one per channel,
#
# $$x'(t) = A x(t) + B u(t), \qquad y(t) = C x(t) + D u(t) \tag{S4 1}$$
#
# trained as a long convolution. Most of the paper is about computing that convolution fast
# (lessons on `ref.mixers.s4` follow the algorithm). This lesson is about the *other* half of
# S4: the matrix A it starts from. The paper builds on HiPPO (Gu, Dao et al., arXiv 2008.07669)
# and says (Sec. 2.2) that "simply modifying an SSM from a random matrix A to equation (2)
# improved its performance on the sequential MNIST benchmark from 60% to 98%", where (2) is the
# **HiPPO matrix**. Its ablation (Sec. 4.4, "SSM Ablations: the Importance of HiPPO", on
# sequential CIFAR-10 with at most 100K parameters) concludes that "random NPLR matrices still
# do not perform well, which validates that S4's effectiveness primarily comes from the HiPPO
# initialization, not the NPLR parameterization" (Fig. 4a), and with unconstrained SSMs (Fig. 3)
# that "when A is trained, all initializations are able to reach perfect training accuracy.
# However, their validation accuracies are separated by over 15%."
#
# **The questions**, at laptop scale:
#
# 1. *Without any training*: what does the HiPPO matrix do? Feed a signal of T = 1,000 samples
#    through HiPPO's recurrence with a state of N = 32 numbers and read the whole signal back.
#    Do the same with a random A.
# 2. *With training*: a long-range task, output the white-noise input of 128 steps ago at
#    T = 256. Does S4 learn it from the HiPPO initialisation? From a random one?
#
# Code: `ref/mixers/s4/` (HiPPO-LegS, its NPLR/DPLR forms, the S4 and S4D kernels, both forms
# with their backward), `ref/models/s4.py` (the deep model: encoder, S4 blocks, linear readout)
# and the task `ref.tasks.synthetic.DelayedCopy`. This lesson imports them, writes out HiPPO's
# online recurrence (a ten-line loop) and measures.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from numpy.polynomial import legendre

from ref.lessons import lesson_context
from ref.mixers.s4 import hippo_legs, hippo_legs_dplr, hippo_legs_nplr
from ref.models.s4 import init_s4_model, s4_model, s4_model_backward
from ref.nn import gradcheck, mse, mse_backward
from ref.tasks.synthetic import DelayedCopy
from ref.train import get_optimizer, train, tree_flatten, tree_unflatten, tree_structure

ctx = lesson_context(__file__)
print(f"quick mode: {ctx.quick}")

# %% [markdown]
# ## 1. The HiPPO matrix
#
# S4's equation (2), HiPPO-LegS ("Legendre, scaled"), with S4's sign convention (A negative):
#
# $$A_{nk} = -\begin{cases} \sqrt{2n+1}\sqrt{2k+1} & n > k \\ n+1 & n = k \\ 0 & n < k \end{cases},
# \qquad B_n = \sqrt{2n+1} \tag{S4 2}$$
#
# `hippo_legs` builds it. It is lower triangular, so its eigenvalues are its diagonal,
# -1, -2, ..., -N: real. It is also far from normal: its eigenvectors are exponentially
# ill-conditioned (S4, Lemma 3.2), which is why S4 does not diagonalise it but writes it as
# normal plus rank one, A = S - P Pᵀ with P_n = √(n + ½) (S4, Thm. 1), and diagonalises
# S = V Λ V* with a unitary V (`hippo_legs_nplr`, `hippo_legs_dplr`). The last line below shows
# the ill-conditioning: in double precision, `eigvals` of the same matrix in that basis is far off.

# %%
A4, B4 = hippo_legs(4)
print("A (N = 4):\n", np.round(A4, 3), "\nB:", np.round(B4, 3))
S, P, _ = hippo_legs_nplr(32)
print("S = A + P P^T is normal: max |S S^T - S^T S| =", f"{np.abs(S @ S.T - S.T @ S).max():.1e}")
Lam, P64, _, _ = hippo_legs_dplr(64)
print(f"N = 64: S's eigenvalues -1/2 + i mu, mu from {Lam.imag.min():.2f} to {Lam.imag.max():.0f} (one of each "
      "conjugate pair)")
# the same A in the DPLR basis, A = Λ - P P* over all N modes: unitarily similar, so the same eigenvalues -1 .. -64
lam_full, p_full = np.concatenate([Lam, Lam.conj()]), np.concatenate([P64, P64.conj()])
ev = np.linalg.eigvals(np.diag(lam_full) - np.outer(p_full, p_full.conj()))
print(f"eigenvalues of A computed from its DPLR form: real parts {ev.real.min():.0f} .. {ev.real.max():.0f}, "
      f"|imaginary parts| up to {np.abs(ev.imag).max():.0f}, where they are exactly -1 .. -64")

# %% [markdown]
# ## 2. What the matrix does: an online projection onto Legendre polynomials
#
# HiPPO asks: given the signal f seen so far, on [0, t], which N numbers c(t) best summarise it?
# With the uniform measure on [0, t] (every moment of the past weighs the same) the answer is the
# coefficients of f's projection onto the first N Legendre polynomials, rescaled to [0, t]:
#
# $$f(x) \approx \sum_{n<N} c_n(t)\, \sqrt{2n+1}\, P_n\!\left(\tfrac{2x}{t} - 1\right), \qquad 0 \le x \le t \tag{R}$$
#
# and HiPPO's Theorem 2 shows that these coefficients obey a linear ODE, with exactly the matrix
# (S4 2). In S4's signs (HiPPO writes A with the opposite sign):
#
# $$\frac{d}{dt} c(t) = \frac{1}{t} A\, c(t) + \frac{1}{t} B f(t) \tag{HiPPO 3}$$
#
# $$c_{k+1} = \left(I + \tfrac{A}{k}\right) c_k + \tfrac{1}{k} B f_k \tag{HiPPO 4}$$
#
# (4) is the forward-Euler step of (3) at t = k. The bilinear step, S4's rule (S4 eq. 3) for the
# same ODE, replaces I + A/k by (I - A/2k)⁻¹(I + A/2k) and B/k by (I - A/2k)⁻¹ B/k. Note the
# 1/t: the dynamics slow down as the window grows, so the state covers all of [0, t] whatever t
# is. (S4 drops the 1/t and uses the same A in a time-invariant SSM with a step Δ; section 4.)
#
# Here is the loop, and a smooth test signal of T = 1,000 samples, remembered in N = 32 numbers:

# %%
def hippo_scaled(A, B, f, method="bilinear"):
    """HiPPO (4), or its bilinear version: the state after reading f_1 .. f_T. A, B in S4's signs."""
    N = len(B)
    I = np.eye(N)
    c = np.zeros(N)
    for k in range(1, len(f) + 1):
        if method == "euler":
            c = (I + A / k) @ c + B / k * f[k - 1]  # (HiPPO 4)
        else:
            c = np.linalg.solve(I - A / (2 * k), (I + A / (2 * k)) @ c + B / k * f[k - 1])  # bilinear
    return c


def legendre_decode(c, T):
    """(R): the signal on [0, T] from the coefficients, at the centres of the T samples."""
    x = (np.arange(T) + 0.5) / T  # (T,) in (0, 1): 2x - 1 in (-1, 1)
    n = np.arange(len(c))
    return legendre.legvander(2 * x - 1, len(c) - 1) @ (np.sqrt(2 * n + 1) * c)  # sum_n c_n sqrt(2n+1) P_n


def rel_err(f_hat, f):
    """Relative RMS error ||f_hat - f|| / ||f||."""
    return float(np.sqrt(np.mean((f_hat - f) ** 2) / np.mean(f**2)))


T_sig, N_sig = 1000, 32
sig_rng = np.random.default_rng(0)
xs = np.arange(1, T_sig + 1) / T_sig
f = sum(sig_rng.standard_normal() * np.sin(2 * np.pi * k * xs + sig_rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
A, B = hippo_legs(N_sig)
recon = {}
for method in ("euler", "bilinear"):
    c = hippo_scaled(A, B, f, method)
    recon[method] = rel_err(legendre_decode(c, T_sig), f)
    print(f"HiPPO-LegS ({method:8s}): T = {T_sig} samples in N = {N_sig} numbers, read back with (R): "
          f"relative error {recon[method]:.4f}")
c_half = hippo_scaled(A, B, f[: T_sig // 2])
recon["bilinear, t = T/2"] = rel_err(legendre_decode(c_half, T_sig // 2), f[: T_sig // 2])
print(f"the same state halfway (t = {T_sig // 2}) reads back f on [0, {T_sig // 2}]: relative error "
      f"{recon['bilinear, t = T/2']:.4f}")

# %% [markdown]
# ## 3. The same loop with a random A
#
# Swap in a random Gaussian matrix (entries N(0, 1/N); the S4 ablation's "random Gaussian
# initialization") and keep everything else. Formula (R) is specific to the HiPPO matrix, so
# reading a random A's state with it would be unfair. Instead give the random A the *best*
# linear read-out there is: the state is linear in the signal, c_T = M f for an N × T matrix M
# (one column per sample: the loop run on a unit impulse), and the least-squares decoder
# f̂ = M⁺ c_T (the pseudo-inverse) recovers the part of f that the state holds at all: its
# projection onto the rows of M. For HiPPO that projection is the Legendre one, so M⁺ c_T
# and (R) agree up to the discretisation.

# %%
def state_matrix(A, B, T):
    """M (N, T) with c_T = M f. Column k is the input at step k carried to the end: the bilinear
    step's input term (I - A/2k)^-1 B/k, then every later transition; built from the end backwards,
    with Phi = the product of the transitions after step k."""
    N = len(B)
    I = np.eye(N)
    M = np.empty((N, T))
    Phi = I.copy()
    for k in range(T, 0, -1):
        lhs = I - A / (2 * k)
        M[:, k - 1] = Phi @ np.linalg.solve(lhs, B / k)  # the impulse at step k, carried to T
        Phi = Phi @ np.linalg.solve(lhs, I + A / (2 * k))  # one more transition: steps k .. T
    return M


def best_linear_decode(M, c):
    return np.linalg.lstsq(M, c, rcond=None)[0]  # M^+ c: the minimum-norm least-squares signal


A_rand = np.random.default_rng(1).standard_normal((N_sig, N_sig)) / np.sqrt(N_sig)
M_hippo, M_rand = state_matrix(A, B, T_sig), state_matrix(A_rand, B, T_sig)
c_rand = M_rand @ f
f_hat = {"HiPPO, formula (R)": legendre_decode(M_hippo @ f, T_sig), "HiPPO, best decoder": best_linear_decode(M_hippo, M_hippo @ f),
         "random A, best decoder": best_linear_decode(M_rand, c_rand)}
recon_err = {name: rel_err(fh, f) for name, fh in f_hat.items()}
for name, e in recon_err.items():
    print(f"{name:24s} relative error {e:.2e}")
print(f"random A read with (R) anyway: relative error {rel_err(legendre_decode(c_rand, T_sig), f):.0f} (meaningless)")
print(f"condition number of M: HiPPO {np.linalg.cond(M_hippo):.1f}, random {np.linalg.cond(M_rand):.1e}")

# %% [markdown]
# The HiPPO state is well conditioned (its rows are orthogonal polynomials, sampled) and holds
# the whole signal; the random A's state is numerically of low rank: most of its N directions
# say almost the same thing about the past. Is that just the scale of the random matrix? A
# random matrix σ G/√N - μ I has its eigenvalues in a disc of radius σ around -μ; we try a grid
# of both, each with its own best decoder:

# %%
sigmas, mus = [0.3, 1.0, 3.0, 10.0], [0.0, 1.0, 5.0, 16.0]
G = np.random.default_rng(1).standard_normal((N_sig, N_sig)) / np.sqrt(N_sig)
sweep = np.zeros((len(sigmas), len(mus)))
for i, s in enumerate(sigmas):
    for j, m in enumerate(mus):
        Mr = state_matrix(s * G - m * np.eye(N_sig), B, T_sig)
        sweep[i, j] = rel_err(best_linear_decode(Mr, Mr @ f), f)
print("relative error of the best decoder, rows sigma =", sigmas, ", columns mu =", mus)
print(np.round(sweep, 3))
best_i, best_j = np.unravel_index(np.argmin(sweep), sweep.shape)
print(f"best random matrix: sigma = {sigmas[best_i]}, mu = {mus[best_j]}: {sweep.min():.3f} "
      f"(HiPPO with formula (R): {recon_err['HiPPO, formula (R)']:.4f})")

# %% [markdown]
# So the answer is nuanced. At the scale of the S4 ablation's "random Gaussian" matrix the
# state loses most of the signal even to the best decoder. Shifted and scaled well (a spread of
# eigenvalues far into the left half-plane), a random matrix does better on this very smooth
# signal, with a decoder fitted to it; HiPPO needs no search and no fitting, and its decoder
# is a formula. The next question is whether any of this matters once A is *trained*.
#
# ## 4. S4: the same matrix in a trainable, time-invariant model
#
# S4 keeps the HiPPO matrix but drops the 1/t: a time-invariant SSM (S4 1) with a learned step Δ,
# discretised by the bilinear rule (S4 3) and run as a convolution with the kernel
# K_l = C Ā^l B̄ (S4 4-5). With a fixed Δ the state no longer covers all of [0, t]; it covers a
# window of roughly 1/Δ steps, so S4 draws one Δ per channel, log-uniformly in [1e-3, 1e-1], and
# the channels look back over different distances. `ref/models/s4.py` stacks this into the
# paper's deep model (Sec. 3.4), for x (B, L, d_in):
#
# $$h = x W_{enc} + b_{enc}; \quad \text{per block: } z = \mathrm{LN}(h),\ y = K * z + D z,\ h \leftarrow h + \mathrm{GELU}(y) W + b; \quad \text{out} = h W_{dec} + b_{dec}$$
#
# with one SSM per channel in the DPLR form A = Λ - P P* (``kind="s4"``; its kernel by Cauchy
# sums and Woodbury, `ref.mixers.s4.s4_kernel`) or diagonal (``kind="s4d"``, the S4D model).
# Two initialisations of the same model:
#
# * **HiPPO** (``init="legs"``): Λ, P, B from (S4 2) via `hippo_legs_dplr`.
# * **random** (``init="random"``): state-spaces/s4's random DPLR (``dplr(init="rand")``):
#   Λ_n = -½ + i e^{g_n} with g_n ~ N(0, 1), B = 1, P complex Gaussian (for S4D: no P).
#
# Everything else (Δ, C, D, the linear maps) is drawn identically from the same seed, so the two
# models differ only in A, B and P. Before training, the model's two forms (the convolution and
# the step-by-step recurrence) must agree, and its backward must match finite differences:

# %%
p_small = init_s4_model(np.random.default_rng(0), 1, 3, 4, 1, 1, kind="s4", init="legs")  # H = 3, N = 4
p_small["blocks"][0]["ssm"]["log_dt"][:] = -1.0  # Δ = 0.37: the SSM's gradients well above the differences' noise
u_small = np.random.default_rng(1).standard_normal((2, 9, 1))  # (B, L, d_in)
y_conv, _ = s4_model(p_small, u_small)
y_rec, _ = s4_model(p_small, u_small, mode="recurrent")
print("convolutional vs recurrent form: max |difference| =", f"{np.abs(y_conv - y_rec).max():.1e}")
structure = tree_structure(p_small)


def model_fn(x, **leaves):
    params = tree_unflatten(leaves, structure)
    y, cache = s4_model(params, x)
    return y, (params, cache)


def model_bwd(dy, cache):
    params, model_cache = cache
    dx, grads = s4_model_backward(params, model_cache, dy)
    return {"x": dx, **tree_flatten(grads)}


print(gradcheck(model_fn, model_bwd, {"x": u_small, **tree_flatten(p_small)}, rng=np.random.default_rng(2),
                name="s4_model (one S4 block)"))

# %% [markdown]
# ## 5. The experiment: a delay of 128 steps
#
# The task (`DelayedCopy`): the input is white noise u_t ~ N(0, 1); at every t ≥ 128 the model
# must output u_{t-128}. Nothing in white noise is predictable, so the model must carry the last
# 128 inputs in its state; a time-invariant linear model solves it exactly with the kernel
# K = δ_128, and the squared error of any kernel is Σ_l (K_l - δ_{l,128})², so the loss is the
# fraction of the target's variance the model misses: 1 for predicting 0, 0 for the exact delay.
#
# One block of H = 16 channels with a state of N = 64 each (the paper's N), T = 256, batch 16,
# Adam at a learning rate of 0.01 after a 10% warmup, then cosine decay, for 600 steps, the same
# batches for every model; three seeds (a seed fixes Δ, C, D and the linear maps, shared by the
# two initialisations). The test loss is measured on 64 held-out sequences. One deviation from
# the paper's recipe: S4 trains "the HiPPO parameters (in particular Λ, P, Q, B, C, Δ)" at a
# learning rate of at most 0.001, "which improves stability" (App. D.2), for tens to hundreds of
# epochs; within our 600 steps that recipe learns far more slowly (exercise 4), so every
# parameter here gets 0.01. (Quick mode runs a shorter, smaller version, T = 64 and a delay of
# 32: a check that the code runs, not a verdict.)

# %%
if ctx.quick:
    T_task, lag, steps, seeds = 64, 32, 150, [0]
    H, N = 16, 32
else:
    T_task, lag, steps, seeds = 256, 128, 600, [0, 1, 2]
    H, N = 16, 64
batch_size, lr = 16, 1e-2
task = DelayedCopy(seq_len=T_task, lag=lag)
test_batch = task.sample(np.random.default_rng(999), 64)


def loss_and_grads(params, batch, _rng):
    """Mean squared error over the positions t >= lag, and its gradient."""
    y, cache = s4_model(params, batch.inputs)
    loss, lcache = mse(y[:, lag:], batch.targets[:, lag:])
    dy = np.zeros_like(y)
    dy[:, lag:] = mse_backward(1.0, lcache)[0]
    return float(loss), s4_model_backward(params, cache, dy)[1]


MODELS = {  # name: (kind, init)
    "S4, HiPPO": ("s4", "legs"),
    "S4, random DPLR": ("s4", "random"),
    "S4D, HiPPO (LegS)": ("s4d", "legs"),
    "S4D, random diagonal": ("s4d", "random"),
}
history, test_loss, trained, seconds = {}, {}, {}, {}
for name, (kind, init) in MODELS.items():
    history[name], test_loss[name] = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        params = init_s4_model(np.random.default_rng(seed), 1, H, N, 1, 1, kind=kind, init=init)
        out = train(params, loss_and_grads, lambda rng, step: task.sample(rng, batch_size), steps=steps,
                    rng=np.random.default_rng(100 + seed), optimizer=get_optimizer("adam"), lr=lr,
                    warmup_steps=steps // 10)
        history[name].append(out.history["loss"])
        test_loss[name].append(test_batch.mse(s4_model(out.params, test_batch.inputs)[0]))
        trained.setdefault(name, []).append(out.params)
    seconds[name] = time.perf_counter() - t0
    print(f"{name:22s} test loss (fraction of variance missed) {np.round(test_loss[name], 3)}"
          f"  ({seconds[name] / len(seeds) / steps * 1e3:.0f} ms per step)")

# %% [markdown]
# **What did the models learn?** The best *linear* read of a model's output from a white-noise
# input is its cross-correlation with the input, K̂_l = E[y_t u_{t-l}] (for a linear model
# y = K * u this is exactly K, since E[u_s u_{s'}] = δ_{ss'}). We measure it on the test
# sequences, over the positions t ≥ lag the model was trained on: the exact delay is a spike of
# height 1 at lag 128 and 0 elsewhere.

# %%
def effective_kernel(params, batch, lag):
    """K̂_l = mean over sequences and t >= lag (with t - l >= 0) of y_t u_{t-l}, l = 0 .. T-1."""
    y = s4_model(params, batch.inputs)[0][:, :, 0]  # (B, T)
    u = batch.inputs[:, :, 0]  # (B, T)
    T = u.shape[1]
    return np.array([np.mean(y[:, max(lag, l):] * u[:, max(lag, l) - l : T - l]) for l in range(T)])


responses = {name: [effective_kernel(p, test_batch, lag) for p in runs] for name, runs in trained.items()}
for name, rs in responses.items():
    print(f"{name:22s} effective kernel at lag {lag}: " + ", ".join(f"{r[lag]:+.2f}" for r in rs)
          + f" (seeds {seeds}); largest elsewhere: " + ", ".join(f"{np.abs(np.delete(r, lag)).max():.2f}" for r in rs))

# %% [markdown]
# **Why the random initialisation stalls.** A kernel K_l = C Ā^l B̄ is a combination of the
# modes of A: an eigenvalue λ contributes e^{λΔl}, which decays by |Re λ|Δ and turns by
# Im(λ)Δ radians per step. A spike at lag 128 needs modes that differ a lot, in decay or in
# frequency. Each initialisation starts from these eigenvalues (per step, × Δ, all H channels):
#
# * S4, HiPPO: A is the triangular matrix (S4 2), eigenvalues -1 .. -N exactly: N decay rates,
#   from Δ to NΔ, no oscillation. Its kernels are polynomials in e^{-Δl}, the "exponentially
#   warped Legendre polynomials" of the follow-up paper (Gu et al., *How to Train Your HiPPO*,
#   arXiv 2206.12037).
# * S4D, HiPPO (LegS): A = Λ, the normal part's eigenvalues -½ + iμ: one decay rate, but
#   frequencies from 0.26 to about 1,300.
# * random (both): -½ + i e^{N(0,1)}, one decay rate and slow frequencies, about 0.1 to 10 (for
#   S4 the random rank-one term P P* moves one eigenvalue of each channel far to the left).
#
# The random modes all forget at the same rate and turn slowly: every kernel they form is
# smooth. For S4 the eigenvalues come from the diagonal of (S4 2) and, for the random DPLR
# matrix, from `eigvals` (it is far closer to normal).

# %%
def per_step_eigenvalues(kind, init):
    """Eigenvalues of each channel's A times its Δ, at initialisation (seed 0), all channels."""
    ssm = init_s4_model(np.random.default_rng(0), 1, H, N, 1, 1, kind=kind, init=init)["blocks"][0]["ssm"]
    dt = np.exp(ssm["log_dt"])[:, None]  # (H, 1)
    lam = -np.exp(ssm["log_A_real"]) + 1j * ssm["A_imag"]  # (H, N/2) Λ
    if kind == "s4d":
        eig = lam  # A = Λ (one mode of each conjugate pair)
    elif init == "legs":
        eig = np.broadcast_to(np.diag(hippo_legs(N)[0]), (H, N)).astype(complex)  # -1 .. -N, exactly
    else:
        p = ssm["P_re"] + 1j * ssm["P_im"]
        eig = np.array([np.linalg.eigvals(np.diag(np.concatenate([lam[h], lam[h].conj()]))
                                          - np.outer(np.concatenate([p[h], p[h].conj()]),
                                                     np.concatenate([p[h], p[h].conj()]).conj()))
                        for h in range(H)])  # (H, N): A = Λ - P P* over all N modes
    return (eig * dt).ravel()


spectra = {name: per_step_eigenvalues(*MODELS[name]) for name in MODELS}
spectrum_stats = {}
for name, ev in spectra.items():
    decay, freq = -ev.real, np.abs(ev.imag)
    spectrum_stats[name] = {"decay_per_step_min": float(decay.min()), "decay_per_step_max": float(decay.max()),
                            "frequency_per_step_median": float(np.median(freq)),
                            "frequency_per_step_max": float(freq.max())}
    print(f"{name:22s} decay per step {decay.min():.1e} .. {decay.max():.1e}; frequency per step median "
          f"{np.median(freq):.3f}, max {freq.max():.2f} rad")

# %%
fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
ax = axes[0, 0]
ax.plot(xs * T_sig, f, "k", lw=2.5, label="signal f (T = 1000)")
ax.plot(xs * T_sig, f_hat["HiPPO, formula (R)"], "C0", lw=1.3,
        label=f"HiPPO-LegS, N = 32, formula (R): error {recon_err['HiPPO, formula (R)']:.1e}")
ax.plot(xs * T_sig, f_hat["random A, best decoder"], "C3", lw=1.3,
        label=f"random A, N = 32, best linear decoder: error {recon_err['random A, best decoder']:.2f}")
lo, hi = f.min(), f.max()
ax.set_ylim(lo - 0.6 * (hi - lo), hi + 0.1 * (hi - lo))  # room below the signal for the legend
ax.set_xlabel("time step")
ax.set_title("1. Reading a signal back from N = 32 numbers (no training)")
ax.legend(fontsize=8, loc="lower left")

ax = axes[0, 1]
colors = {"S4, HiPPO": "C0", "S4, random DPLR": "C3", "S4D, HiPPO (LegS)": "C2", "S4D, random diagonal": "C1"}
w = 20
for name, runs in history.items():
    for i, h in enumerate(runs):
        smooth = np.convolve(h, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w, smooth, color=colors[name], lw=1.3, alpha=1.0 if i == 0 else 0.5,
                label=f"{name}: test {np.mean(test_loss[name]):.2f}" if i == 0 else None)
ax.axhline(1.0, color="k", ls=":", lw=1)
ax.set_ylim(0, 1.15)
ax.set_xlabel("training step")
ax.set_ylabel(f"training loss (moving average of {w})")
ax.set_title(f"2. Delayed copy, T = {T_task}, lag = {lag} (lines: {len(seeds)} seed(s))")
ax.legend(fontsize=8)

ax = axes[1, 0]
lags = np.arange(T_task)
ax.axvline(lag, color="k", ls=":", lw=1)
for i, r in enumerate(responses["S4, HiPPO"]):
    ax.plot(lags, r, color=colors["S4, HiPPO"], lw=1.0, alpha=1.0 - 0.3 * i,
            label=f"S4, HiPPO, seed {seeds[i]}: test {test_loss['S4, HiPPO'][i]:.2f}")
ax.plot(lags, responses["S4, random DPLR"][0], color=colors["S4, random DPLR"], lw=1.2,
        label=f"S4, random DPLR, seed {seeds[0]}: test {test_loss['S4, random DPLR'][0]:.2f}")
ax.set_xlabel("lag l")
ax.set_ylabel("effective kernel E[y_t u_(t-l)] on the test set")
ax.set_title(f"3. What the trained S4 models compute (target: a spike of 1 at lag {lag})")
ax.legend(fontsize=8)

ax = axes[1, 1]
for name, ev in spectra.items():
    ax.scatter(-ev.real, np.abs(ev.imag), s=6, color=colors[name], alpha=0.5, label=name)
ax.axhline(np.pi, color="k", ls=":", lw=1)
ax.text(0.01, np.pi * 1.4, "π rad/step", fontsize=8, transform=ax.get_yaxis_transform())  # x in axes units
ax.set_xscale("log")
ax.set_yscale("symlog", linthresh=1e-3)
ax.set_ylim(-3e-4, 1e3)  # frequencies are >= 0; S4 HiPPO's (and one random mode per channel) sit at 0
ax.set_xlabel("decay per step |Re λ|Δ")
ax.set_ylabel("frequency per step |Im λ|Δ (rad)")
ax.set_title(f"4. The eigenvalues each initialisation starts from (H = {H}, N = {N})")
ax.legend(fontsize=8, markerscale=2)
fig.tight_layout()
ctx.save_figure(fig)

# %% [markdown]
# ## 6. What we measured, and the verdict
#
# The tests, fixed before the runs:
#
# * **memory without training**: HiPPO's state read back by formula (R) has a relative error
#   below 5%, and the random A (the S4 ablation's scale) above 50% even with its best decoder;
# * **learning a long delay**: with S4's DPLR parameterisation, the HiPPO initialisation reaches
#   a test loss below 0.3 (it recovers most of the delayed signal) in every seed, and the random
#   DPLR initialisation stays above 0.7 (it stalls) in every seed.
#
# "yes" if both hold, "partly" if one does, "no" otherwise. S4D's pair is reported beside them.

# %%
memory_ok = recon_err["HiPPO, formula (R)"] < 0.05 and recon_err["random A, best decoder"] > 0.5
learn_ok = max(test_loss["S4, HiPPO"]) < 0.3 and min(test_loss["S4, random DPLR"]) > 0.7
verdict = "yes" if memory_ok and learn_ok else ("partly" if memory_ok or learn_ok else "no")
print(f"memory without training: {memory_ok}; HiPPO learns the delay and random stalls: {learn_ok} "
      f"-> reproduced: {verdict}")


def losses(name):
    return "/".join(f"{v:.2f}" for v in test_loss[name])


ctx.save_result(
    title="S4: why the HiPPO matrix? Remembering a signal, and learning a long delay",
    paper="s4",
    claim=(
        "S4's ablation (Sec. 4.4, Figs. 3-4, sequential CIFAR-10, at most 100K parameters): \"random NPLR matrices "
        "still do not perform well, which validates that S4's effectiveness primarily comes from the HiPPO "
        "initialization, not the NPLR parameterization\"; HiPPO's matrix (eq. 2) makes the state an online "
        "projection of the input's history onto Legendre polynomials (Sec. 2.2; HiPPO, Thm. 2). Tiny version: "
        "reconstruct a smooth signal (T = 1000) from N = 32 HiPPO coefficients vs a random A; learn to output "
        "the white-noise input of 128 steps ago (T = 256) from the HiPPO vs a random DPLR initialisation."
    ),
    measured=(
        f"signal read back from {N_sig} numbers: HiPPO-LegS with formula (R) relative error "
        f"{recon_err['HiPPO, formula (R)']:.1e}, random Gaussian A with its best linear decoder "
        f"{recon_err['random A, best decoder']:.2f} (best of a 4x4 grid of random scales and shifts: {sweep.min():.3f}); "
        f"delayed copy T = {T_task}, lag {lag}, {steps} Adam steps, test loss as fraction of variance missed "
        f"(seeds {'/'.join(map(str, seeds))}): S4 HiPPO {losses('S4, HiPPO')}, S4 random DPLR "
        f"{losses('S4, random DPLR')}, S4D-LegS {losses('S4D, HiPPO (LegS)')}, S4D random diagonal "
        f"{losses('S4D, random diagonal')}; effective kernel of the trained models at lag {lag} (1 = the exact "
        f"delay): S4 HiPPO {'/'.join(f'{r[lag]:.2f}' for r in responses['S4, HiPPO'])}, S4 random DPLR "
        f"{'/'.join(f'{r[lag]:.2f}' for r in responses['S4, random DPLR'])}."
    ),
    reproduced=verdict,
    numbers={
        "reconstruction": {"T": T_sig, "N": N_sig, "relative_error": recon_err, "closed_form_by_method": recon,
                           "random_sweep": {"sigma": sigmas, "mu": mus, "relative_error": sweep.tolist()}},
        "delayed_copy": {"seq_len": T_task, "lag": lag, "H": H, "N": N, "layers": 1, "steps": steps,
                         "batch_size": batch_size, "lr": lr, "seeds": seeds, "test_loss": test_loss,
                         "final_train_loss": {k: [float(h[-50:].mean()) for h in v] for k, v in history.items()},
                         "effective_kernel_at_lag": {k: [float(r[lag]) for r in rs] for k, rs in responses.items()},
                         "seconds": seconds},
        "init_spectrum_per_step": spectrum_stats,
    },
)

# %% [markdown]
# **Reading the result.** (The numbers of the committed run are in `figures/08_s4_hippo.json`
# and the gallery; the sentences below describe that run.)
#
# * *Without training*, HiPPO's N = 32 numbers hold a 1,000-step signal to a fraction of a
#   percent, read back by a formula; a random matrix of the ablation's scale keeps a small
#   fraction of it, even with the best decoder that exists for it. Well-chosen scales and shifts
#   of a random matrix do much better on this smooth signal (the sweep): HiPPO's is not the only
#   good A, but a good one found with no search, with a closed-form decoder and a
#   well-conditioned state.
# * *With training*, both random initialisations end at a test loss of 0.84-0.89 in every seed:
#   they barely improve on predicting 0, and their effective kernels reach only 0.09-0.15 at
#   lag 128, barely above their largest value elsewhere (0.08-0.14). At initialisation their modes all forget at
#   the same rate and turn slowly (panel 4: a median of about 0.01 rad per step, none above
#   0.8), so every kernel they form is smooth; our reading (not a measurement) is that Adam,
#   which moves each parameter by about the learning rate per step, cannot move the
#   frequencies from ~1 to the hundreds within 600 steps. The HiPPO initialisations learn, but
#   not equally: S4D-LegS (the diagonal part of the HiPPO matrix) learns the delay in every
#   seed (test loss 0.04-0.09, kernel at lag 128 about 0.9), the full S4 in one seed (0.08, kernel
#   0.89) and only partly in the other two (0.40 and 0.61, kernels 0.58 and 0.37). Its modes
#   do not oscillate at all at initialisation (the eigenvalues -1 .. -N), so a sharp kernel has
#   to come from many decaying modes cancelling, which plausibly explains why it is the slower
#   and less reliable learner here. Hence the verdict "partly": HiPPO is far ahead of random in
#   every pair of runs (same seed, same batches), but the rule fixed before the runs asked the
#   full S4 to learn the delay (test loss below 0.3) in every seed, and it did in one of three.
#   (The S4D paper later found the diagonal version "performs comparably to S4 in almost all
#   settings"; here it is the more reliable of the two.)
# * *Which HiPPO property matters?* Exercise 2 trains S4D-Lin, whose frequencies are spread
#   like HiPPO's but not derived from it: in that one short run (one seed) it learns at least as
#   well as S4D-LegS (full mode: training loss 0.16 against 0.30 after 150 steps). What the
#   random initialisation seems to lack is the spread of timescales and frequencies, which HiPPO is one
#   principled way to provide.
# * *How this differs from the paper.* The paper measures sequential CIFAR-10, where every
#   initialisation fits the training set once A is trained and they differ in *validation*
#   accuracy (by over 15%). Here the random initialisations do not even fit the training task in
#   this budget: at this scale the gap shows up in optimisation, not in generalisation. The
#   model is one block of 16 channels trained for minutes on a CPU, with one learning rate where
#   the paper lowers it for the SSM's parameters (exercise 4: at our budget that recipe learns
#   much more slowly); the paper's models are deep and trained for hours. The direction of the
#   paper's claim holds at this scale; its sizes are not tested.

# %% [markdown]
# ## Summary
#
# * The HiPPO matrix (S4 2) is the ODE of the Legendre coefficients of the input's history:
#   with the 1/t of (HiPPO 3) the state is the optimal N-term summary of all of [0, t], and the
#   past is read back by formula (R).
# * A random A, run the same way, keeps an ill-conditioned, low-rank view of the past.
# * S4 uses the same matrix time-invariantly, with a learned step Δ per channel. On a delay of
#   128 steps, a one-block model started from HiPPO learns (S4D-LegS in every seed, the full S4
#   in one of three within 600 steps), and started from a random DPLR or diagonal matrix it
#   stalls in every seed: its modes are too alike and too slow to form a sharp kernel.
#
# ## Exercises
#
# 1. HiPPO-LegS is *timescale invariant* (HiPPO, Prop. 3): sample the same function twice as
#    densely (T = 2,000) and compare the final coefficients c with those at T = 1,000.
# 2. S4D-Lin (Λ_n = -½ + iπn, `init="lin"`) is not derived from HiPPO, but its frequencies are
#    spread out like HiPPO's. Does it learn the (quick-sized) delay task?
# 3. In panel 4, which Δ would the random modes need so that their fastest mode reaches 1 rad per
#    step? What does that Δ do to the window each channel looks back over?
# 4. Train with the paper's recipe for the SSM's parameters (App. D.2): Λ, P, B, C and Δ at a
#    tenth of the learning rate of the rest (0.001 against 0.01). Write it as an `Optimizer` that
#    runs Adam twice (its moments do not depend on the learning rate) and compare, on the
#    quick-sized task, with one learning rate for everything.
#
# ## Solutions

# %%
# 1. Timescale invariance: the same function, sampled at T = 2000, gives (nearly) the same state
xs2 = np.arange(1, 2 * T_sig + 1) / (2 * T_sig)
sig_rng = np.random.default_rng(0)
f2 = sum(sig_rng.standard_normal() * np.sin(2 * np.pi * k * xs2 + sig_rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
c1, c2 = hippo_scaled(A, B, f), hippo_scaled(A, B, f2)
print(f"exercise 1: max |c(T=2000) - c(T=1000)| = {np.abs(c2 - c1).max():.1e} (|c| up to {np.abs(c1).max():.2f}):"
      " the state describes the function on [0, t], not the number of samples")

# %%
# 2. S4D-Lin on the quick-sized task (T = 64, lag 32; 150 steps, 80 in quick mode), against S4D-LegS
small = DelayedCopy(seq_len=64, lag=32)
ex_steps = 80 if ctx.quick else 150
ex2 = {}
for init in ("lin", "legs"):
    params = init_s4_model(np.random.default_rng(0), 1, 16, 32, 1, 1, kind="s4d", init=init)
    lag_s = small.lag

    def lg(p, batch, _rng):
        y, cache = s4_model(p, batch.inputs)
        loss, lc = mse(y[:, lag_s:], batch.targets[:, lag_s:])
        dy = np.zeros_like(y)
        dy[:, lag_s:] = mse_backward(1.0, lc)[0]
        return float(loss), s4_model_backward(p, cache, dy)[1]

    out = train(params, lg, lambda rng, step: small.sample(rng, 16), steps=ex_steps, rng=np.random.default_rng(7),
                optimizer=get_optimizer("adam"), lr=1e-2, warmup_steps=ex_steps // 10, progress=False)
    ex2[init] = float(out.history["loss"][-20:].mean())
print(f"exercise 2: final training loss after {ex_steps} steps, S4D-Lin {ex2['lin']:.3f}, S4D-LegS {ex2['legs']:.3f}")

# %%
# 3. Fastest random mode: Im λ ~ e^{N(0,1)} is rarely above 10, so Δ would need to be ~0.1 or more;
#    the window of a channel is ~1/(|Re λ| Δ) = 2/Δ steps, so Δ = 0.1 gives a window of ~20 steps,
#    far shorter than the delay of 128: fast random modes forget too soon, slow ones are too smooth.
im_max = init_s4_model(np.random.default_rng(0), 1, H, N, 1, 1, kind="s4", init="random")["blocks"][0]["ssm"]["A_imag"].max()
print(f"exercise 3: largest random Im λ = {im_max:.2f} -> Δ >= {1 / im_max:.2f} for 1 rad/step; "
      f"window 2/Δ <= {2 * im_max:.0f} steps")

# %%
# 4. Adam with a tenth of the learning rate on the SSM's parameters: the moments m, v do not depend on
#    lr, so one Adam step at lr and one at lr / 10 from the same state give both updates exactly
from ref.train import Optimizer, adam_init, adam_step

SLOW = ("log_dt", "log_A_real", "A_imag", "P_re", "P_im", "B_re", "B_im", "C_re", "C_im")


def slow_ssm_step(params, grads, state, *, lr):
    fast, new_state = adam_step(params, grads, state, lr=lr)
    slow, _ = adam_step(params, grads, state, lr=lr / 10)
    for block_fast, block_slow in zip(fast["blocks"], slow["blocks"]):
        block_fast["ssm"].update({k: block_slow["ssm"][k] for k in SLOW if k in block_slow["ssm"]})
    return fast, new_state


recipes = {"one learning rate": get_optimizer("adam"),
           "SSM at lr / 10": Optimizer("adam, SSM at lr/10", adam_init, slow_ssm_step, {})}
ex4 = {}
for recipe, opt in recipes.items():
    params = init_s4_model(np.random.default_rng(0), 1, 16, 32, 1, 1, kind="s4", init="legs")
    out = train(params, lg, lambda rng, step: small.sample(rng, 16), steps=ex_steps, rng=np.random.default_rng(7),
                optimizer=opt, lr=1e-2, warmup_steps=ex_steps // 10, progress=False)
    ex4[recipe] = float(out.history["loss"][-20:].mean())
print(f"exercise 4: final training loss of S4 (HiPPO), T = 64, lag 32, {ex_steps} steps:",
      ", ".join(f"{k} {v:.3f}" for k, v in ex4.items()))
