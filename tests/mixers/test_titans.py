"""Titans' memory: the MLP memory's inner gradient, the sequential and chunked forms, forward and backward.

Equalities proven here (float64):
* chunk size 1 == the fully sequential update (a plain loop written out below);
* for every chunk size b, the chunked matmul/scan form == the loop taking gradients at the chunk start;
* the momentum/forgetting decay matrices == the products they stand for; the linear memory's
  matmul read == the per-token weights read;
* every backward == float64 central differences (``gradcheck``): backprop through test-time learning.

Tolerance of the form comparisons. Both forms evaluate the same sums of the same terms in another
order, so they differ by rounding only: about u = 2^-53 per operation on each of the ~T (L + 2)
steps a value passes through, times the size of the values added. With l2-normalised keys,
theta <= 0.5 and gates in [0, 1] the inner step contracts (||k|| = 1), so the recurrence does not
amplify rounding; the bound 256 u (T + 1) (L + 3) (1 + max|want|) is 30 times the worst error seen
in 2,000 hypothesis examples (8.4 u (T + 1) (L + 3) (1 + max|want|)) and still about 10^11 times
below the size of a single misplaced term.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.titans import FORMS, inner_grad, inner_grad_backward, inner_loss, memory_forward
from ref.mixers.titans.chunked import chunk_decays, linear_chunk_read, _mixing
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.titans

U = np.finfo(np.float64).eps / 2
GRADS = ("dq", "dk", "dv", "deta", "dtheta", "dalpha", "dinitial_memory", "dinitial_surprise")


def l2norm(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_memory(rng, B, H, dims, scale=0.5):
    return tuple(scale * rng.standard_normal((B, H, dims[l + 1], dims[l])) for l in range(len(dims) - 1))


def draw_gates(rng, shape, regime):
    """eta, theta, alpha: 'weak' (long memory: eta near 1, alpha near 0) or 'strong' decays."""
    if regime == "weak":
        return rng.uniform(0.9, 1.0, shape), rng.uniform(0.05, 0.5, shape), rng.uniform(0.0, 0.05, shape)
    return rng.uniform(0.0, 0.5, shape), rng.uniform(0.05, 0.5, shape), rng.uniform(0.3, 1.0, shape)


@st.composite
def titans_cases(draw, max_T=9):
    T = draw(st.one_of(st.just(1), st.integers(1, max_T)))
    return dict(
        B=draw(st.integers(1, 2)),
        T=T,
        H=draw(st.integers(1, 2)),
        K=draw(st.sampled_from([1, 3, 5])),
        V=draw(st.sampled_from([1, 2, 3])),
        hidden=draw(st.sampled_from([(), (3,), (4, 3)])),
        chunk_size=draw(st.one_of(st.just(1), st.integers(1, 5), st.just(T), st.just(T + 2))),
        gates=draw(st.sampled_from(["weak", "strong"])),
        with_s0=draw(st.booleans()),
        with_dfinal=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_arrays(case):
    rng = np.random.default_rng(case["seed"])
    B, T, H, K, V = case["B"], case["T"], case["H"], case["K"], case["V"]
    dims = (K, *case["hidden"], V)
    q = l2norm(rng.standard_normal((B, T, H, K)))
    k = l2norm(rng.standard_normal((B, T, H, K)))
    v = rng.standard_normal((B, T, H, V))
    eta, theta, alpha = draw_gates(rng, (B, T, H), case["gates"])
    W0 = make_memory(rng, B, H, dims)
    S0 = make_memory(rng, B, H, dims, 0.1) if case["with_s0"] else None
    dy = rng.standard_normal((B, T, H, V))
    dWT = make_memory(rng, B, H, dims, 1.0) if case["with_dfinal"] else None
    dST = make_memory(rng, B, H, dims, 1.0) if case["with_dfinal"] else None
    return (q, k, v, eta, theta, alpha, W0, S0), (dy, dWT, dST)


def run(form, inputs, cotangents, chunk_size):
    forward, backward = FORMS[form]
    y, M, S, cache = forward(*inputs, chunk_size=chunk_size)
    return dict(y=y, final_memory=M, final_surprise=S, **dict(zip(GRADS, backward(*cotangents, cache))))


def compare(name, got, want, steps):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert_within(name, g, w, 256 * U * steps * (1.0 + np.abs(w).max()))


def naive_loop(q, k, v, eta, theta, alpha, W0, S0):
    """The paper's update written as plainly as possible, one (batch, head) at a time, linear or MLP."""
    B, T, H, _ = q.shape
    y = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            M = [w[b, h].copy() for w in W0]
            S = [np.zeros_like(m) if S0 is None else s[b, h].copy() for m, s in zip(M, S0 or M)]
            for t in range(T):
                G, _ = inner_grad(tuple(M), k[b, t, h], v[b, t, h])  # at M_(t-1)
                S = [eta[b, t, h] * s - theta[b, t, h] * g for s, g in zip(S, G)]
                M = [(1 - alpha[b, t, h]) * m + s for m, s in zip(M, S)]
                y[b, t, h] = memory_forward(tuple(M), q[b, t, h])[0]
    return y


@given(titans_cases())
def test_chunked_equals_the_chunk_start_loop_forward_and_backward(case):
    inputs, cotangents = make_arrays(case)
    steps = (case["T"] + 1) * (len(case["hidden"]) + 3)
    want = run("sequential", inputs, cotangents, case["chunk_size"])
    got = run("chunked", inputs, cotangents, case["chunk_size"])
    for name in want:
        compare(f"chunk_size={case['chunk_size']}: {name}", got[name], want[name], steps)


@given(titans_cases())
def test_chunk_size_one_is_the_fully_sequential_update(case):
    inputs, cotangents = make_arrays(case)
    steps = (case["T"] + 1) * (len(case["hidden"]) + 3)
    want = naive_loop(*inputs)
    for form in FORMS:
        compare(f"{form}: y", run(form, inputs, cotangents, 1)["y"], want, steps)


def test_chunk_start_gradients_differ_from_the_sequential_update(rng):
    """The chunked form is an approximation of the sequential update, not the same function."""
    case = dict(B=1, T=6, H=1, K=3, V=2, hidden=(), chunk_size=3, gates="weak", with_s0=False,
                with_dfinal=False, seed=1)
    inputs, _ = make_arrays(case)
    y1 = FORMS["chunked"][0](*inputs, chunk_size=1)[0]
    y3 = FORMS["chunked"][0](*inputs, chunk_size=3)[0]
    assert np.allclose(y1[:, 0], y3[:, 0]) and not np.allclose(y1, y3)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_decay_scan_equals_the_products_loop(rng, n):
    g = rng.uniform(0.0, 1.0, (2, 3, n))
    R = chunk_decays(g)
    for t in range(n):
        assert_within("R[t, 0]", R[..., t, 0], np.prod(g[..., : t + 1], axis=-1), 8 * U)
        for i in range(n):
            want = np.prod(g[..., i + 1 : t + 1], axis=-1) if i <= t else np.zeros(g.shape[:-1])
            assert_within(f"R[{t}, {i + 1}]", R[..., t, i + 1], want, 8 * U)


def test_momentum_and_forgetting_matrices_equal_the_loop(rng):
    """S_t and M_t from the matrices P, E, X, A, C equal the two recurrences run step by step."""
    n = 5
    eta, theta, alpha = rng.uniform(0, 1, (3, 1, 1, n))
    G = rng.standard_normal((1, 1, n))  # one scalar "gradient" per token
    S0, M0 = 0.7, -1.3
    m = _mixing(eta, theta, alpha)
    S, M = S0, M0
    for t in range(n):
        S = eta[..., t] * S - theta[..., t] * G[..., t]
        M = (1 - alpha[..., t]) * M + S
        assert_within("S_t", m["E"][..., t] * S0 - m["P"][..., t, :] @ G[0, 0], S, 64 * U)
        assert_within("M_t", m["A"][..., t] * M0 + m["C"][..., t] * S0 - m["X"][..., t, :] @ G[0, 0], M, 64 * U)


def test_without_momentum_the_weights_are_the_papers_beta_ratios(rng):
    """eta = 0: X[t, i] = theta_i beta_t / beta_i for i <= t, beta_t = prod_(j<=t) (1 - alpha_j)."""
    n = 6
    theta, alpha = rng.uniform(0.1, 0.9, (2, 1, 1, n))
    m = _mixing(np.zeros((1, 1, n)), theta, alpha)
    beta = np.cumprod(1 - alpha, axis=-1)
    want = np.tril(theta[..., None, :] * beta[..., :, None] / beta[..., None, :])
    assert_within("X", m["X"], want, 64 * U)


def test_linear_matmul_read_equals_the_per_token_weights(rng):
    B, H, n, K, V = 2, 2, 4, 3, 5
    Wc, Sc = rng.standard_normal((2, B, H, V, K))
    q, k = rng.standard_normal((2, B, H, n, K))
    v = rng.standard_normal((B, H, n, V))
    m = _mixing(*rng.uniform(0, 1, (3, B, H, n)))
    G, inner = inner_grad((Wc[:, :, None],), k, v)
    Mt = m["A"][..., None, None] * Wc[:, :, None] + m["C"][..., None, None] * Sc[:, :, None]
    Mt = Mt - np.einsum("bhti,bhivk->bhtvk", m["X"], G[0])
    want = np.einsum("bhtvk,bhtk->bhtv", Mt, q)
    _, _, _, (delta,), _ = inner
    # the same sums in another order: u per operation, n + K + 2 operations deep
    assert_within("y", linear_chunk_read(Wc, Sc, k, q, delta, m), want, 64 * U * (n + K + 2) * (1 + np.abs(want).max()))


@pytest.mark.parametrize("hidden", [(), (4,), (3, 4)])
def test_inner_grad_is_the_gradient_of_the_inner_loss(rng, hidden):
    dims = (3, *hidden, 2)
    W = make_memory(rng, 2, 1, dims, 0.8)
    k, v = rng.standard_normal((2, 1, 3)), rng.standard_normal((2, 1, 2))
    names = [f"W{l}" for l in range(len(W))]
    gradcheck(
        lambda **a: (inner_loss(tuple(a[n] for n in names), a["k"], a["v"]), None),
        lambda dl, _: dict(zip(names, (dl[..., None, None] * g for g in inner_grad(W, k, v)[0]))),
        {**dict(zip(names, W)), "k": k, "v": v},
        wrt=names,
        name="inner_grad",
    )


@pytest.mark.parametrize("hidden", [(), (4,), (3, 4)])
def test_inner_grad_backward_second_order(rng, hidden):
    dims = (3, *hidden, 2)
    W = make_memory(rng, 2, 1, dims, 0.8)
    names = [f"W{l}" for l in range(len(W))]

    def forward(**a):
        G, cache = inner_grad(tuple(a[n] for n in names), a["k"], a["v"])
        return (*G, cache)

    def backward(*args):
        dW, dk, dv = inner_grad_backward(args[:-1], args[-1])
        return {**dict(zip(names, dW)), "k": dk, "v": dv}

    inputs = {**dict(zip(names, W)), "k": rng.standard_normal((2, 1, 3)), "v": rng.standard_normal((2, 1, 2))}
    gradcheck(forward, backward, inputs, name="inner_grad_backward")


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("hidden,chunk_size,T", [((), 1, 4), ((), 3, 5), ((3,), 2, 5), ((3, 2), 4, 3)])
def test_backward_gradcheck(rng, form, hidden, chunk_size, T):
    B, H, K, V = 2, 2, 3, 2
    dims = (K, *hidden, V)
    L = len(dims) - 1
    eta, theta, alpha = draw_gates(rng, (B, T, H), "strong")
    inputs = dict(
        q=l2norm(rng.standard_normal((B, T, H, K))), k=l2norm(rng.standard_normal((B, T, H, K))),
        v=rng.standard_normal((B, T, H, V)), eta=rng.uniform(0.3, 0.9, (B, T, H)), theta=theta,
        alpha=rng.uniform(0.1, 0.6, (B, T, H)),
    )
    inputs.update({f"W{l}": w for l, w in enumerate(make_memory(rng, B, H, dims))})
    inputs.update({f"S{l}": s for l, s in enumerate(make_memory(rng, B, H, dims, 0.3))})
    names = list(inputs)
    forward, backward = FORMS[form]

    def fwd(**a):
        x = [a[n] for n in names]
        y, M, S, cache = forward(*x[:6], x[6 : 6 + L], x[6 + L :], chunk_size=chunk_size)
        return (y, *M, *S, cache)

    def bwd(*args):
        dq, dk, dv, de, dth, da, dW, dS = backward(args[0], args[1 : 1 + L], args[1 + L : 1 + 2 * L], args[-1])
        return dict(zip(names, (dq, dk, dv, de, dth, da, *dW, *dS)))

    gradcheck(fwd, bwd, inputs, name=f"titans_{form}")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_bad_inputs(rng, form):
    forward, backward = FORMS[form]
    B, T, H, K, V = 1, 3, 2, 3, 2
    q = k = rng.standard_normal((B, T, H, K))
    v = rng.standard_normal((B, T, H, V))
    g = np.full((B, T, H), 0.5)
    W0 = make_memory(rng, B, H, (K, 4, V))
    with pytest.raises(ValueError, match=r"v: expected shape \(B, T, H, V\)"):
        forward(q, k, v[:, :2], g, g, g, W0)
    with pytest.raises(ValueError, match=r"alpha: expected a forgetting rate in \[0, 1\]"):
        forward(q, k, v, g, g, g + 1.0, W0)
    with pytest.raises(ValueError, match=r"eta: expected shape \(B, T, H\)"):
        forward(q, k, v, g[:, :, :1], g, g, W0)
    with pytest.raises(ValueError, match=r"initial_memory\[1\]: expected shape .* in = 4"):
        forward(q, k, v, g, g, g, (W0[0], W0[1][..., :3]))
    with pytest.raises(ValueError, match=r"initial_memory\[1\]: expected the last layer to output V = 2"):
        forward(q, k, v, g, g, g, (W0[0], np.zeros((B, H, 5, 4))))
    with pytest.raises(ValueError, match=r"initial_surprise\[0\]: expected shape"):
        forward(q, k, v, g, g, g, W0, (W0[0][..., :2], W0[1]))
    with pytest.raises(ValueError, match=r"chunk_size: expected an integer >= 1, got 0"):
        forward(q, k, v, g, g, g, W0, chunk_size=0)
    with pytest.raises(ValueError, match=r"k: expected dtype float64"):
        forward(q, k.astype(np.float32), v, g, g, g, W0)
    with pytest.raises(ValueError, match=r"theta: expected finite values"):
        forward(q, k, v, g, np.where(g > 0, np.nan, g), g, W0)
    y, M, S, cache = forward(q, k, v, g, g, g, W0)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, H, V\)"):
        backward(y[:, :1], None, None, cache)
    with pytest.raises(ValueError, match=r"dfinal_memory: expected 2 arrays"):
        backward(y, M[:1], None, cache)
