"""PV-RNN: the predictive-coding-inspired variational RNN of Ahmadi & Tani (arXiv 1811.01339).

A stack of L levels of leaky (multiple-timescale) RNN units, level 0 at the bottom, each with a
stochastic latent z. Level k has H_k deterministic units d^k and Z_k latent units z^k and a time
constant tau_k >= 1 (large tau: slow units). At every step t the levels are computed from the top
(k = L - 1) down, because level k reads the higher level's *current* state d^{k+1}_t (Section 2.1):

    h^k_t = (1 - 1/tau_k) h^k_{t-1}
            + (1/tau_k) (d^k_{t-1} W_dd + z^k_t W_dz + d^{k+1}_t W_up)      (1)  leaky integration
    d^k_t = tanh(h^k_t)                                                    (2)  h^k_{-1} = 0, d^k_{-1} = 0

The latent has a prior computed from the level's previous state (the generative model) and an
approximate posterior whose parameters are free *adaptive vectors* A, one pair per training
sequence, level and step (the inference model: no encoder reads the data; the data reach A only
through the gradient of the prediction error):

    prior      mu^p_t = tanh(d_{t-1} W_mu),   sigma^p_t = exp(d_{t-1} W_sigma)        (3)
    posterior  mu^q_t = tanh(A^mu_t),          sigma^q_t = exp(A^sigma_t)              (4)
    z_t = mu + sigma * eps,   eps ~ N(0, I)   (the reparameterisation; posterior in training,
                                               prior in generation)                  (5)
    x_hat_t = tanh(d^0_t W_o + b_o)                                                   (6)

Since d_{-1} = 0, the prior at t = 0 is exactly N(0, I). Training minimises the negative
evidence lower bound with the KL term weighted by the *meta-prior* w (Section 2.2):

    loss = 1/(B T) sum_{b,t} [ 1/X sum_i (x_hat - x)^2  +  w/Z sum_{k,j} KL(q || p) ]  (7)
    KL(q || p) = log sigma^p - log sigma^q + (sigma^q^2 + (mu^q - mu^p)^2) / (2 sigma^p^2) - 1/2   (8)

(X output dims, Z = sum_k Z_k latent dims; the paper also normalises each term by its
dimension.) Large w forces q onto p: the latents stop carrying information and the network must
produce the data deterministically. Small w lets each A memorise its sequence while the prior
learns little: generation from the prior is noise.

Parameters (a tree; ``n_seq`` training sequences of length ``seq_len``)::

    levels  [ {W_dd (H_k, H_k), W_dz (Z_k, H_k), W_mu (H_k, Z_k), W_sigma (H_k, Z_k),
               W_up (H_{k+1}, H_k) for k < L - 1}, ... ]
    out     {W (H_0, X), b (X,)}
    A       [ {A_mu (n_seq, T, Z_k), A_sigma (n_seq, T, Z_k)}, ... ]     the adaptive vectors

Functions: :func:`init_pv_rnn`; :func:`pv_rnn_forward` / :func:`pv_rnn_backward` (the posterior
pass with given eps: outputs x_hat and the KL of every latent, and BPTT to every weight and to A);
:func:`pv_rnn_loss_and_grads` (equation 7); :func:`pv_rnn_generate` (sampling from the prior);
:func:`gaussian_kl` (equation 8, elementwise).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks

__all__ = [
    "init_pv_rnn",
    "gaussian_kl",
    "pv_rnn_forward",
    "pv_rnn_backward",
    "pv_rnn_loss_and_grads",
    "pv_rnn_generate",
]


# --- validation --------------------------------------------------------------------------------


def _sizes(params):
    """(H per level, Z per level, X, n_seq, T) read off the parameter tree, which is checked."""
    if not isinstance(params, dict) or set(params) != {"levels", "out", "A"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with the keys 'A', 'levels', 'out' (init_pv_rnn), got {got}")
    levels, A = params["levels"], params["A"]
    if not isinstance(levels, list) or not levels or not isinstance(A, list) or len(A) != len(levels):
        raise ValueError("params: expected 'levels' and 'A' to be lists with one entry per level (init_pv_rnn)")
    L = len(levels)
    H = [checks.float_array(lv.get("W_dd"), f"params['levels'][{k}]['W_dd']", ndim=2).shape[0] for k, lv in enumerate(levels)]
    Z = [checks.float_array(lv.get("W_dz"), f"params['levels'][{k}]['W_dz']", ndim=2).shape[0] for k, lv in enumerate(levels)]
    W_o = checks.float_array(params["out"].get("W"), "params['out']['W']", ndim=2, dims="(H_0, X)")
    X = W_o.shape[1]
    dtype = W_o.dtype
    n_seq, T = A[0]["A_mu"].shape[:2] if isinstance(A[0], dict) and "A_mu" in A[0] else (None, None)
    for k, lv in enumerate(levels):
        shapes = {"W_dd": (H[k], H[k]), "W_dz": (Z[k], H[k]), "W_mu": (H[k], Z[k]), "W_sigma": (H[k], Z[k])}
        if k < L - 1:
            shapes["W_up"] = (H[k + 1], H[k])
        if set(lv) != set(shapes):
            raise ValueError(f"params['levels'][{k}]: expected the keys {sorted(shapes)}, got {sorted(lv)}")
        for name, shape in shapes.items():
            a = checks.float_array(lv[name], f"params['levels'][{k}]['{name}']", ndim=2)
            checks.same_shape(a, f"params['levels'][{k}]['{name}']", shape, "", "from W_dd and W_dz")
            checks.same_dtype(a, f"params['levels'][{k}]['{name}']", dtype, "the dtype of params['out']['W']")
        for name in ("A_mu", "A_sigma"):
            a = checks.float_array(A[k].get(name) if isinstance(A[k], dict) else None, f"params['A'][{k}]['{name}']", ndim=3)
            checks.same_shape(a, f"params['A'][{k}]['{name}']", (n_seq, T, Z[k]), "(n_seq, T, Z_k)", "from the levels")
    checks.same_shape(W_o, "params['out']['W']", (H[0], X), "(H_0, X)", "H_0 from level 0")
    b = checks.float_array(params["out"].get("b"), "params['out']['b']", ndim=1, dims="(X,)")
    checks.same_shape(b, "params['out']['b']", (X,), "(X,)", "from W")
    return H, Z, X, n_seq, T


def _taus(tau, L: int) -> list[float]:
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        tau = (tau,)
    tau = list(tau) if isinstance(tau, (tuple, list)) else None
    if tau is None or len(tau) != L or not all(
        isinstance(t, numbers.Real) and not isinstance(t, bool) and 1 <= t < np.inf for t in tau
    ):
        raise ValueError(f"tau: expected {L} time constant(s) >= 1 (one per level), got {tau!r}")
    return [float(t) for t in tau]


def _indices(idx, n_seq: int) -> np.ndarray:
    if idx is None:
        return np.arange(n_seq)
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n_seq:
        raise ValueError(f"idx: expected a 1-D array of sequence indices in [0, {n_seq}), got {idx!r}")
    return idx


def _noise(eps, name: str, shapes: list[tuple], dtype) -> list[np.ndarray]:
    if not isinstance(eps, (list, tuple)) or len(eps) != len(shapes):
        raise ValueError(f"{name}: expected a list of {len(shapes)} arrays (one per level), got {type(eps).__name__}")
    out = []
    for k, (e, shape) in enumerate(zip(eps, shapes)):
        e = checks.float_array(e, f"{name}[{k}]", ndim=3, dims="(B, T, Z_k)")
        checks.same_shape(e, f"{name}[{k}]", shape, "(B, T, Z_k)", "from the parameters and the batch")
        checks.same_dtype(e, f"{name}[{k}]", dtype, "the dtype of the parameters")
        out.append(e)
    return out


# --- the model ---------------------------------------------------------------------------------


def init_pv_rnn(rng, n_seq: int, seq_len: int, x_dim: int, hidden=(20,), latent=(2,), dtype=np.float64):
    """Parameters for L = len(hidden) levels. Weights uniform in +-1/sqrt(fan in); the prior
    weights start small (the prior starts near N(0, I)); A = 0 (the posterior starts at N(0, I))."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    n_seq, seq_len, x_dim = (checks.positive_int(v, n) for v, n in ((n_seq, "n_seq"), (seq_len, "seq_len"), (x_dim, "x_dim")))
    hidden, latent = tuple(hidden), tuple(latent)
    if not hidden or len(hidden) != len(latent):
        raise ValueError(f"hidden, latent: expected one size per level in each, got {hidden} and {latent}")
    for k, (h, z) in enumerate(zip(hidden, latent)):
        checks.positive_int(h, f"hidden[{k}]")
        checks.positive_int(z, f"latent[{k}]")

    def uniform(shape, fan, scale=1.0):
        bound = scale / np.sqrt(fan)
        return rng.uniform(-bound, bound, shape).astype(dtype)

    L = len(hidden)
    levels = []
    for k in range(L):
        H, Z = hidden[k], latent[k]
        lv = {
            "W_dd": uniform((H, H), H),
            "W_dz": uniform((Z, H), Z),
            "W_mu": uniform((H, Z), H, 0.1),
            "W_sigma": uniform((H, Z), H, 0.1),
        }
        if k < L - 1:
            lv["W_up"] = uniform((hidden[k + 1], H), hidden[k + 1])
        levels.append(lv)
    A = [{"A_mu": np.zeros((n_seq, seq_len, z), dtype), "A_sigma": np.zeros((n_seq, seq_len, z), dtype)} for z in latent]
    out = {"W": uniform((hidden[0], x_dim), hidden[0]), "b": np.zeros(x_dim, dtype)}
    return {"levels": levels, "out": out, "A": A}


def gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p):
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) elementwise, from the log standard deviations."""
    # (8)
    return (
        log_sigma_p
        - log_sigma_q
        + (np.exp(2 * log_sigma_q) + (mu_q - mu_p) ** 2) * np.exp(-2 * log_sigma_p) / 2
        - 0.5
    )


def _shift(d):
    """d_{t-1} for every t: (B, T, H) with zeros at t = 0 (d_{-1} = 0)."""
    return np.concatenate([np.zeros_like(d[:, :1]), d[:, :-1]], axis=1)  # (B, T, H)


def _step(lv, tau, h_prev, d_prev, z, d_up):
    """Equations (1)-(2) for one level and one step; returns (h, d)."""
    pre = d_prev @ lv["W_dd"] + z @ lv["W_dz"]  # (B, H)
    if d_up is not None:
        pre = pre + d_up @ lv["W_up"]
    # (1)
    h = (1 - 1 / tau) * h_prev + pre / tau
    # (2)
    return h, np.tanh(h)


def pv_rnn_forward(params, eps, tau, idx=None):
    """The posterior pass (training): z from the adaptive vectors A of the sequences ``idx``.

    ``eps``: one array (B, T, Z_k) per level, the standard normal noise of (5); ``tau``: one time
    constant per level; ``idx``: which training sequences (default all, B = n_seq).
    Returns ``(x_hat (B, T, X), kl, cache)`` with ``kl`` a list of (B, T, Z_k): equation (8)
    for every latent unit and step.
    """
    H, Z, X, n_seq, T = _sizes(params)
    L = len(H)
    tau = _taus(tau, L)
    idx = _indices(idx, n_seq)
    B = len(idx)
    dtype = params["out"]["W"].dtype
    eps = _noise(eps, "eps", [(B, T, z) for z in Z], dtype)

    # (4), (5): the posterior does not depend on the state, so all steps at once
    mu_q = [np.tanh(params["A"][k]["A_mu"][idx]) for k in range(L)]  # (B, T, Z_k)
    log_sq = [params["A"][k]["A_sigma"][idx] for k in range(L)]  # (B, T, Z_k)
    sigma_q = [np.exp(a) for a in log_sq]
    z = [mu_q[k] + sigma_q[k] * eps[k] for k in range(L)]  # (B, T, Z_k)

    d = [np.zeros((B, T, h), dtype) for h in H]  # (B, T, H_k)
    h_state = [np.zeros((B, h), dtype) for h in H]
    for t in range(T):
        for k in reversed(range(L)):  # top-down: level k reads d^{k+1}_t
            d_prev = d[k][:, t - 1] if t > 0 else np.zeros((B, H[k]), dtype)
            d_up = d[k + 1][:, t] if k < L - 1 else None
            h_state[k], d[k][:, t] = _step(params["levels"][k], tau[k], h_state[k], d_prev, z[k][:, t], d_up)

    # (3): the prior from d_{t-1}, all steps at once
    d_prev = [_shift(dk) for dk in d]  # (B, T, H_k)
    mu_p = [np.tanh(d_prev[k] @ params["levels"][k]["W_mu"]) for k in range(L)]  # (B, T, Z_k)
    log_sp = [d_prev[k] @ params["levels"][k]["W_sigma"] for k in range(L)]  # (B, T, Z_k)
    kl = [gaussian_kl(mu_q[k], log_sq[k], mu_p[k], log_sp[k]) for k in range(L)]
    # (6)
    x_hat = np.tanh(d[0] @ params["out"]["W"] + params["out"]["b"])  # (B, T, X)
    cache = dict(tau=tau, idx=idx, n_seq=n_seq, eps=eps, mu_q=mu_q, log_sq=log_sq, sigma_q=sigma_q, z=z,
                 d=d, d_prev=d_prev, mu_p=mu_p, log_sp=log_sp, x_hat=x_hat)
    return x_hat, kl, cache


def pv_rnn_backward(params, cache, dx_hat, dkl):
    """Backpropagation through time of :func:`pv_rnn_forward`: gradients of every weight and of the
    adaptive vectors A (zero rows for the sequences not in the batch), shaped like params."""
    c = cache
    levels = params["levels"]
    L = len(levels)
    x_hat, d, d_prev, tau = c["x_hat"], c["d"], c["d_prev"], c["tau"]
    B, T, _ = x_hat.shape
    dx_hat = checks.output_cotangent(dx_hat, "dx_hat", x_hat.shape, x_hat.dtype)
    if not isinstance(dkl, (list, tuple)) or len(dkl) != L:
        raise ValueError(f"dkl: expected a list of {L} arrays (one per level), got {type(dkl).__name__}")
    dkl = [checks.output_cotangent(g, f"dkl[{k}]", c["mu_q"][k].shape, x_hat.dtype, "(B, T, Z_k)") for k, g in enumerate(dkl)]

    # (6) backward
    dy = dx_hat * (1 - x_hat**2)  # (B, T, X)
    grads_out = {"W": np.einsum("bth,btx->hx", d[0], dy), "b": dy.sum((0, 1))}
    dd_direct = [np.zeros_like(dk) for dk in d]  # gradient reaching d^k_t other than through (1)
    dd_direct[0] += dy @ params["out"]["W"].T

    # (8) backward, and (3) backward into d_{t-1}
    grads_levels = [dict() for _ in range(L)]
    dmu_q, dlog_sq = [], []
    for k in range(L):
        inv_var_p = np.exp(-2 * c["log_sp"][k])  # 1 / sigma_p^2
        diff = c["mu_q"][k] - c["mu_p"][k]
        ratio = np.exp(2 * (c["log_sq"][k] - c["log_sp"][k]))  # sigma_q^2 / sigma_p^2
        dmu_q.append(dkl[k] * diff * inv_var_p)
        dlog_sq.append(dkl[k] * (ratio - 1))
        dmu_p = -dkl[k] * diff * inv_var_p
        dlog_sp = dkl[k] * (1 - ratio - diff**2 * inv_var_p)
        du_mu = dmu_p * (1 - c["mu_p"][k] ** 2)  # through tanh of (3)
        grads_levels[k]["W_mu"] = np.einsum("bth,btz->hz", d_prev[k], du_mu)
        grads_levels[k]["W_sigma"] = np.einsum("bth,btz->hz", d_prev[k], dlog_sp)
        dd_prev = du_mu @ levels[k]["W_mu"].T + dlog_sp @ levels[k]["W_sigma"].T  # (B, T, H_k): into d_{t-1}
        dd_direct[k][:, :-1] += dd_prev[:, 1:]  # (the step t = 0 reads d_{-1} = 0, a constant)

    # (1)-(2) backward, reverse in time; within a step bottom-up (the reverse of the forward order)
    dpre = [np.zeros_like(dk) for dk in d]  # (B, T, H_k): gradient of the bracket of (1)
    carry_dh = [np.zeros((B, dk.shape[2]), dk.dtype) for dk in d]  # into h_{t-1} through the leak
    carry_dd = [np.zeros((B, dk.shape[2]), dk.dtype) for dk in d]  # into d_{t-1} through W_dd
    for t in reversed(range(T)):
        from_below = None
        for k in range(L):
            dd = dd_direct[k][:, t] + carry_dd[k]
            if from_below is not None:
                dd = dd + from_below
            dh = dd * (1 - d[k][:, t] ** 2) + carry_dh[k]
            g = dh / tau[k]
            dpre[k][:, t] = g
            carry_dh[k] = (1 - 1 / tau[k]) * dh
            carry_dd[k] = g @ levels[k]["W_dd"].T
            from_below = g @ levels[k]["W_up"].T if k < L - 1 else None

    grads_A = []
    for k in range(L):
        grads_levels[k]["W_dd"] = np.einsum("bth,btg->hg", d_prev[k], dpre[k])
        grads_levels[k]["W_dz"] = np.einsum("btz,bth->zh", c["z"][k], dpre[k])
        if k < L - 1:
            grads_levels[k]["W_up"] = np.einsum("btg,bth->gh", d[k + 1], dpre[k])
        dz = dpre[k] @ levels[k]["W_dz"].T  # (B, T, Z_k)
        # (5) backward: z = mu_q + sigma_q eps, sigma_q = exp(A_sigma)
        g_mu = (dmu_q[k] + dz) * (1 - c["mu_q"][k] ** 2)  # through tanh of (4)
        g_sigma = dlog_sq[k] + dz * c["sigma_q"][k] * c["eps"][k]
        full_mu = np.zeros((c["n_seq"],) + g_mu.shape[1:], g_mu.dtype)  # (n_seq, T, Z_k)
        full_sigma = np.zeros_like(full_mu)
        np.add.at(full_mu, c["idx"], g_mu)  # a sequence drawn twice in a batch gets both gradients
        np.add.at(full_sigma, c["idx"], g_sigma)
        grads_A.append({"A_mu": full_mu, "A_sigma": full_sigma})
    return {"levels": grads_levels, "out": grads_out, "A": grads_A}


def pv_rnn_loss_and_grads(params, x, eps, tau, w, idx=None):
    """Equation (7) and its gradients. Returns ``(loss, grads, parts)``, ``parts`` holding the
    two terms without weight: ``rec`` (mean squared error) and ``kl`` (mean KL per latent and step)."""
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= w < np.inf:
        raise ValueError(f"w: expected a finite meta-prior >= 0, got {w!r}")
    x_hat, kl, cache = pv_rnn_forward(params, eps, tau, idx)
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, X)")
    checks.same_shape(x, "x", x_hat.shape, "(B, T, X)", "from the batch and the parameters")
    B, T, X = x_hat.shape
    Z = sum(k.shape[2] for k in kl)
    err = x_hat - x
    rec = float((err**2).sum() / (B * T * X))
    kl_mean = float(sum(k.sum() for k in kl) / (B * T * Z))
    dx_hat = 2 * err / (B * T * X)
    dkl = [np.full_like(k, w / (B * T * Z)) for k in kl]
    grads = pv_rnn_backward(params, cache, dx_hat, dkl)
    return rec + w * kl_mean, grads, {"rec": rec, "kl": kl_mean}


def pv_rnn_generate(params, tau, B: int, T: int, rng=None, eps=None):
    """Generation from the prior: z_t = mu^p_t + sigma^p_t eps_t with (3), no adaptive vectors.

    Noise from ``rng`` (standard normal) or given as ``eps`` (a list of (B, T, Z_k)). Returns
    ``(x (B, T, X), info)``, ``info`` holding per level ``mu_p``, ``sigma_p`` (B, T, Z_k) and ``d``."""
    H, Z, X, _, _ = _sizes(params)
    L = len(H)
    tau = _taus(tau, L)
    B, T = checks.positive_int(B, "B"), checks.positive_int(T, "T")
    dtype = params["out"]["W"].dtype
    if eps is None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator when eps is not given, got {type(rng).__name__}")
        eps = [rng.standard_normal((B, T, z)).astype(dtype) for z in Z]
    eps = _noise(eps, "eps", [(B, T, z) for z in Z], dtype)
    d = [np.zeros((B, T, h), dtype) for h in H]
    mu_p = [np.zeros((B, T, z), dtype) for z in Z]
    sigma_p = [np.zeros((B, T, z), dtype) for z in Z]
    h_state = [np.zeros((B, h), dtype) for h in H]
    for t in range(T):
        for k in reversed(range(L)):
            lv = params["levels"][k]
            d_prev = d[k][:, t - 1] if t > 0 else np.zeros((B, H[k]), dtype)
            # (3)
            mu_p[k][:, t] = np.tanh(d_prev @ lv["W_mu"])
            sigma_p[k][:, t] = np.exp(d_prev @ lv["W_sigma"])
            # (5) with the prior
            z = mu_p[k][:, t] + sigma_p[k][:, t] * eps[k][:, t]
            d_up = d[k + 1][:, t] if k < L - 1 else None
            h_state[k], d[k][:, t] = _step(lv, tau[k], h_state[k], d_prev, z, d_up)
    x = np.tanh(d[0] @ params["out"]["W"] + params["out"]["b"])  # (6)
    return x, {"mu_p": mu_p, "sigma_p": sigma_p, "d": d}
