"""Titans' memory layer and the MAL and MAC blocks: gradients by finite differences, forms agreeing,
the MAC equations composed by hand, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.attention import attention_parallel
from ref.mixers.titans import memory_forward, titans_sequential
from ref.models.titans import (
    init_mac_block,
    init_mal_block,
    init_memory_layer,
    mac_block,
    mac_block_backward,
    mal_block,
    mal_block_backward,
    memory_layer,
    memory_layer_backward,
)
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.titans

U = np.finfo(np.float64).eps / 2


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(flat):
    tree = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def randomise(rng, params, scale=0.5):
    """Every parameter random and non-zero (the gate biases included)."""
    return unflatten({k: scale * rng.standard_normal(v.shape) for k, v in flatten(params).items()})


def check_block(forward, backward, params, x, **options):
    flat = flatten(params)
    inputs = {"x": x, **flat}

    def fwd(**a):
        return forward(unflatten({k: a[k] for k in flat}), a["x"], **options)

    def bwd(dy, cache):
        dx, grads = backward(params, cache, dy)
        return {"x": dx, **flatten(grads)}

    gradcheck(fwd, bwd, inputs, name=forward.__name__)


@pytest.mark.parametrize("form", ["chunked", "sequential"])
@pytest.mark.parametrize("hidden,chunk_size", [((), 2), ((3,), 3)])
def test_memory_layer_gradcheck(rng, form, hidden, chunk_size):
    params = randomise(rng, init_memory_layer(rng, 4, num_heads=2, head_dim=3, value_dim=2, memory_hidden=hidden))
    x = rng.standard_normal((2, 5, 4))
    check_block(memory_layer, memory_layer_backward, params, x, form=form, chunk_size=chunk_size)


@pytest.mark.parametrize("hidden", [(), (3,)])
def test_mal_block_gradcheck(rng, hidden):
    params = randomise(rng, init_mal_block(rng, 4, num_heads=2, head_dim=3, memory_hidden=hidden))
    check_block(mal_block, mal_block_backward, params, rng.standard_normal((2, 5, 4)), chunk_size=2)


@pytest.mark.parametrize("hidden,segment_len,chunk_size,T", [((), 3, None, 7), ((3,), 3, 2, 5), ((), 4, 1, 4)])
def test_mac_block_gradcheck(rng, hidden, segment_len, chunk_size, T):
    params = randomise(rng, init_mac_block(rng, 4, num_heads=2, head_dim=3, memory_hidden=hidden, num_persistent=2))
    x = rng.standard_normal((2, T, 4))
    check_block(mac_block, mac_block_backward, params, x, segment_len=segment_len, chunk_size=chunk_size)


@given(
    T=st.integers(1, 7),
    segment_len=st.integers(1, 4),
    chunk_size=st.integers(1, 4),
    hidden=st.sampled_from([(), (3,)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_forms_agree_in_the_blocks(T, segment_len, chunk_size, hidden, seed):
    """The sequential loop and the chunked form give the same blocks, forward and backward."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, T, 4))
    dy = rng.standard_normal((1, T, 4))
    for init, forward, backward, options in (
        (init_mal_block, mal_block, mal_block_backward, {}),
        (init_mac_block, mac_block, mac_block_backward, {"segment_len": segment_len}),
    ):
        params = init(rng, 4, num_heads=2, head_dim=3, memory_hidden=hidden)
        results = []
        for form in ("sequential", "chunked"):
            y, cache = forward(params, x, form=form, chunk_size=chunk_size, **options)
            dx, grads = backward(params, cache, dy)
            results.append({"y": y, "dx": dx, **flatten(grads)})
        want, got = results
        for name in want:  # the mixer's bound (tests/mixers/test_titans.py), a model's worth of steps
            tol = 256 * U * (T + 1) * 8 * (1.0 + np.abs(want[name]).max())
            assert_within(f"{forward.__name__}: {name}", got[name], want[name], tol)


def test_mac_is_the_paper_equations_for_one_segment(rng):
    """With T <= segment_len: h = M_0(q) W_O, y = Attn([p || h || x]) at x, out = x + y * memory_layer(y)."""
    params = init_mac_block(rng, 4, num_heads=2, head_dim=3, memory_hidden=(3,))
    mem, attn, p = params["memory"], params["attn"], params["persistent"]
    x = rng.standard_normal((2, 3, 4))
    out, _ = mac_block(params, x, segment_len=5)

    def feature(z, W, normalise):
        f = np.einsum("btd,dhk->bthk", z, W)
        f = f / (1 + np.exp(-f))
        return f / np.sqrt((f * f).sum(-1, keepdims=True) + 1e-12) if normalise else f

    M0 = tuple(np.broadcast_to(mem[f"M0_{l}"][None, None], (2, 3) + mem[f"M0_{l}"].shape) for l in range(2))
    h = memory_forward(M0, feature(x, mem["W_q"], True))[0].reshape(2, 3, -1) @ mem["W_o"]
    context = np.concatenate([np.broadcast_to(p, (2, 2, 4)), h, x], axis=1)
    qa, ka, va = (np.einsum("btd,dhk->bthk", context, attn[w]) for w in ("W_q", "W_k", "W_v"))
    a = attention_parallel(qa, ka, va, mask="prefix_lm", prefix_len=5)[0].reshape(2, 8, -1) @ attn["W_o"]
    y = a[:, 5:]
    z, _ = memory_layer(mem, y, chunk_size=5)
    assert_within("out", out, x + y * z, 1e-12)


def test_memory_layer_reads_the_titans_mixer(rng):
    """The layer is the mixer on its projections: the gates are sigmoids, q and k unit vectors."""
    params = init_memory_layer(rng, 4, num_heads=1, head_dim=2)
    x = rng.standard_normal((1, 3, 4))
    y, cache = memory_layer(params, x, form="sequential", chunk_size=1)
    (form, c_proj, c_mix, c_out, _), _, _ = cache
    assert form == "sequential"
    # |k| = |u| / sqrt(|u|^2 + eps) = 1 - eps / (2 |u|^2) + ..., eps = 1e-12 and |u|^2 > 1e-4 here
    assert_within("|k|", np.linalg.norm(c_mix.k, axis=-1), np.ones((1, 3, 1)), 1e-8)
    assert np.all((c_mix.eta > 0) & (c_mix.eta < 1))
    m, *_ = titans_sequential(c_mix.q, c_mix.k, c_mix.v, c_mix.eta, c_mix.theta, c_mix.alpha,
                              (params["M0_0"][None],))
    assert_within("y", y, m.reshape(1, 3, -1) @ params["W_o"], 1e-12)


def test_bad_inputs(rng):
    params = init_mac_block(rng, 4, num_heads=2, head_dim=3)
    x = rng.standard_normal((1, 5, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\) with D = 4"):
        mac_block(params, x[..., :3])
    with pytest.raises(ValueError, match=r"segment_len: expected an integer >= 1, got 0"):
        mac_block(params, x, segment_len=0)
    with pytest.raises(ValueError, match=r"form: expected one of 'sequential', 'chunked', got 'parallel'"):
        mac_block(params, x, form="parallel")
    with pytest.raises(ValueError, match=r"params/persistent: expected shape \(Np, D\) with D = 4"):
        mac_block({**params, "persistent": np.zeros((2, 3))}, x)
    with pytest.raises(ValueError, match=r"params: expected a dict with exactly the keys"):
        mac_block({"memory": params["memory"]}, x)
    mem = params["memory"]
    with pytest.raises(ValueError, match=r"params/M0_0: expected the memory's last layer to output V = 3"):
        memory_layer({**mem, "M0_0": np.zeros((2, 2, 3))}, x)
    with pytest.raises(ValueError, match=r"chunk_size: expected an integer >= 1"):
        memory_layer(mem, x, chunk_size=0)
    with pytest.raises(ValueError, match=r"x: expected dtype float64"):
        memory_layer(mem, x.astype(np.float32))
    y, cache = mal_block(init_mal_block(rng, 4, head_dim=3), x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, D\)"):
        mal_block_backward(init_mal_block(rng, 4, head_dim=3), cache, y[:, :2])
