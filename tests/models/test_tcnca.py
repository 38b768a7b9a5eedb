"""TCNCA (arXiv 2312.05605): the dilated convolution, the TCN stack and its explicit kernel, the
receptive field, chunked attention == full attention under the block-diagonal causal mask, the block
(float64 gradients by finite differences) and the block inside the LM scaffold."""

import numpy as np
import pytest

from ref.mixers.attention import attention_parallel, attention_parallel_backward
from ref.models.lm import BLOCKS, init_lm, lm_forward, lm_loss_and_grads
from ref.models.tcnca import (
    chunked_attention,
    chunked_attention_backward,
    dilated_causal_conv1d,
    dilated_causal_conv1d_backward,
    explicit_kernel,
    init_tcnca_block,
    receptive_field,
    tcn,
    tcn_backward,
    tcn_kernel,
    tcnca_block,
    tcnca_block_backward,
)
from ref.nn import causal_conv1d, gradcheck

pytestmark = pytest.mark.attention


@pytest.mark.parametrize("K, d, T", [(3, 1, 7), (3, 4, 10), (2, 3, 4), (1, 2, 5)])
def test_dilated_conv_gradcheck(K, d, T):
    rng = np.random.default_rng(K * 10 + d)
    inputs = {"x": rng.standard_normal((2, T, 3)), "weight": rng.standard_normal((3, K)), "bias": rng.standard_normal(3)}

    def fwd(x, weight, bias):
        return dilated_causal_conv1d(x, weight, bias, dilation=d)

    gradcheck(fwd, dilated_causal_conv1d_backward, inputs, rng=rng, name="dilated_causal_conv1d")


@pytest.mark.parametrize("K, d", [(3, 1), (3, 4), (4, 2)])
def test_dilated_conv_equals_zero_stuffed_kernel(K, d):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 20, 3)), rng.standard_normal((3, K))
    y, _ = dilated_causal_conv1d(x, w, dilation=d)
    y_ref, _, _ = causal_conv1d(x, explicit_kernel(w, d))
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)


def test_tcn_gradcheck():
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((2, 11, 3)), "weight": rng.standard_normal((3, 3, 2))}

    def fwd(x, weight):
        return tcn(x, weight, dilation_base=2)

    gradcheck(fwd, tcn_backward, inputs, rng=rng, name="tcn")


@pytest.mark.parametrize("L, K, f", [(1, 3, 2), (3, 3, 2), (4, 2, 2), (2, 3, 3), (3, 2, 1)])
def test_tcn_stack_equals_one_explicit_kernel(L, K, f):
    rng = np.random.default_rng(L + K + f)
    w = rng.standard_normal((L, 4, K))
    x = rng.standard_normal((2, 40, 4))
    kernel = tcn_kernel(w, f)
    assert kernel.shape == (4, receptive_field(K, L, f))
    y, _ = tcn(x, w, dilation_base=f)
    y_ref, _, _ = causal_conv1d(x, kernel)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L, K, f", [(3, 3, 2), (2, 4, 3), (4, 2, 1)])
def test_receptive_field(L, K, f):
    """A perturbation at t - R + 1 changes y_t; one at t - R (or earlier) does not."""
    rng = np.random.default_rng(3)
    R = receptive_field(K, L, f)
    assert R == 1 + (K - 1) * (L if f == 1 else (f**L - 1) // (f - 1))
    T = R + 5
    w = rng.uniform(0.5, 1.5, (L, 2, K))  # no zero taps: every lag inside R is reached
    x = rng.standard_normal((1, T, 2))
    y, _ = tcn(x, w, dilation_base=f)
    t = T - 1
    for s, changes in ((t - R + 1, True), (t - R, False), (0, False)):
        x2 = x.copy()
        x2[0, s] += 1.0
        y2, _ = tcn(x2, w, dilation_base=f)
        assert (np.abs(y2[0, t] - y[0, t]).max() > 1e-6) == changes, (s, R)


@pytest.mark.parametrize("T, c", [(12, 4), (13, 4), (5, 8), (6, 1)])
def test_chunked_equals_block_diagonal_full_attention(T, c):
    rng = np.random.default_rng(T * c)
    q, k = rng.standard_normal((2, 2, T, 2, 3))
    v = rng.standard_normal((2, T, 2, 4))
    do = rng.standard_normal((2, T, 2, 4))
    o, cache = chunked_attention(q, k, v, c)
    o_mask, cache_mask = attention_parallel(q, k, v, mask="chunked", chunk_size=c)
    block_diag = np.tril(np.ones((T, T), bool)) & (np.arange(T)[:, None] // c == np.arange(T)[None, :] // c)
    o_arr, _ = attention_parallel(q, k, v, mask=block_diag)
    np.testing.assert_allclose(o, o_mask, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(o, o_arr, rtol=1e-13, atol=1e-13)
    for g, g_ref in zip(chunked_attention_backward(do, cache), attention_parallel_backward(do, cache_mask)):
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-13)


def test_chunked_attention_gradcheck():
    rng = np.random.default_rng(4)
    inputs = {"q": rng.standard_normal((1, 7, 2, 3)), "k": rng.standard_normal((1, 7, 2, 3)),
              "v": rng.standard_normal((1, 7, 2, 2))}

    def fwd(q, k, v):
        return chunked_attention(q, k, v, 3)

    gradcheck(fwd, chunked_attention_backward, inputs, rng=rng, name="chunked_attention")


def _block_fns(p, **options):
    names = {(group, key) for group in p for key in p[group]}

    def fwd(x, **flat):
        params = {g: {k: flat[f"{g}/{k}"] for (gg, k) in names if gg == g} for g in p}
        return tcnca_block(params, x, **options)

    def bwd(dy, cache):
        dx, grads = tcnca_block_backward(p, cache, dy)
        return {"x": dx, **{f"{g}/{k}": grads[g][k] for (g, k) in names}}

    return fwd, bwd


@pytest.mark.parametrize("T, c, layers", [(9, 4, 3), (5, None, 2), (6, 6, 1)])
def test_block_gradcheck(T, c, layers):
    rng = np.random.default_rng(T + layers)
    p = init_tcnca_block(rng, 4, qk_dim=3, v_dim=5, tcn_layers=layers, kernel_size=2)
    for group in p.values():  # every parameter random and non-zero, biases included
        for key in group:
            group[key] = group[key] + 0.3 * rng.standard_normal(group[key].shape)
    fwd, bwd = _block_fns(p, chunk_size=c)
    inputs = {"x": rng.standard_normal((2, T, 4)), **{f"{g}/{k}": p[g][k] for g in p for k in p[g]}}
    # eps 1e-5: some q/k gradients are ~1e-4, where the round-off of eps = 1e-6 (~1e-9) is 1e-5 relative
    gradcheck(fwd, bwd, inputs, rng=rng, eps=1e-5, name="tcnca_block")


def test_block_is_causal_and_sees_back_R_plus_chunk_offset():
    """y_t depends on x_s only for s in [chunk start of t - R + 1, t]: the chunk of t, each of its
    tokens seeing R back through the TCN."""
    rng = np.random.default_rng(5)
    p = init_tcnca_block(rng, 4, tcn_layers=2, kernel_size=3)  # R = 1 + 2 * 3 = 7
    R, c, T = receptive_field(3, 2, 2), 4, 20
    x = rng.standard_normal((1, T, 4))
    y, _ = tcnca_block(p, x, chunk_size=c)
    t = 14  # chunk [12, 16): sees back to 12 - R + 1 = 6
    first = (t // c) * c - R + 1
    for s in range(T):
        x2 = x.copy()
        x2[0, s] += 1.0
        y2, _ = tcnca_block(p, x2, chunk_size=c)
        assert (np.abs(y2[0, t] - y[0, t]).max() > 1e-10) == (first <= s <= t), s


def test_numba_backend_matches_numpy():
    rng = np.random.default_rng(6)
    p = init_tcnca_block(rng, 8, tcn_layers=2)
    x = rng.standard_normal((2, 19, 8))
    dy = rng.standard_normal(x.shape)
    y, c = tcnca_block(p, x, chunk_size=5)
    y_nb, c_nb = tcnca_block(p, x, chunk_size=5, backend="numba")
    np.testing.assert_allclose(y_nb, y, rtol=1e-10, atol=1e-12)
    dx, g = tcnca_block_backward(p, c, dy)
    dx_nb, g_nb = tcnca_block_backward(p, c_nb, dy)
    np.testing.assert_allclose(dx_nb, dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g_nb["tcn"]["weight"], g["tcn"]["weight"], rtol=1e-9, atol=1e-11)


def test_registered_in_lm_scaffold():
    assert "tcnca" in BLOCKS
    rng = np.random.default_rng(7)
    params = init_lm(rng, vocab_size=7, D=4, n_layers=2, block="tcnca", tcn_layers=2)
    tokens = rng.integers(0, 7, (2, 9))
    logits, _ = lm_forward(params, tokens, chunk_size=4)
    assert logits.shape == (2, 9, 7)
    loss, grads = lm_loss_and_grads(params, (tokens, rng.integers(0, 7, (2, 9))), chunk_size=4)
    assert np.isfinite(loss) and grads["blocks"][1]["tcnca"]["tcn"]["weight"].shape == (2, 4, 3)


def test_bad_input():
    rng = np.random.default_rng(8)
    p = init_tcnca_block(rng, 4, tcn_layers=1)
    with pytest.raises(ValueError, match="x"):
        tcnca_block(p, rng.standard_normal((1, 5, 3)))
    with pytest.raises(ValueError, match="chunk_size"):
        tcnca_block(p, rng.standard_normal((1, 5, 4)), chunk_size=0)
    with pytest.raises(ValueError, match="dilation"):
        dilated_causal_conv1d(rng.standard_normal((1, 5, 4)), rng.standard_normal((4, 2)), dilation=0)
