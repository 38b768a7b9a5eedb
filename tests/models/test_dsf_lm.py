"""The DSF lesson's attention blocks (``ref.models.dsf_lm``): every backward against finite
differences (the feature map, each mixer with its projections, the block with and without the
convolution and the MLP, the whole language model), and the mixers against their definitions."""

import numpy as np
import pytest

from ref.mixers import dsf
from ref.models.dsf_lm import (
    MIXERS,
    dsf_attention_block,
    dsf_attention_block_backward,
    dsf_attention_mixer,
    dsf_attention_mixer_backward,
    elu1,
    elu1_backward,
    init_dsf_attention_block,
)
from ref.models.lm import init_lm, lm_forward, lm_loss_and_grads
from ref.nn import gradcheck
from ref.train import tree_flatten, tree_map, tree_structure, tree_unflatten

pytestmark = pytest.mark.dsf

PREFIX = "params/"


def random_params(rng, params, scale=0.5):
    """Every leaf redrawn at random and non-zero (biases and norm weights included)."""
    return tree_map(lambda a: scale * rng.standard_normal(a.shape), params)


def gradcheck_tree(fn, bwd, params, x, *, rng, name, skip=()):
    """gradcheck on x and every parameter; ``skip``: parameter paths whose exact gradient is zero
    (softmax is invariant to the key bias, so a finite difference sees only round-off there)."""
    structure = tree_structure(params)
    inputs = {"x": x, **{PREFIX + p: leaf for p, leaf in tree_flatten(params).items()}}

    def forward(**arrays):
        p = tree_unflatten({k[len(PREFIX):]: v for k, v in arrays.items() if k != "x"}, structure)
        y, cache = fn(p, arrays["x"])
        return y, (p, cache)

    def backward(dy, cache):
        p, c = cache
        dx, grads = bwd(p, c, dy)
        assert tree_structure(grads) == structure, "grads are not shaped like params"
        return {"x": dx, **{PREFIX + k: g for k, g in tree_flatten(grads).items()}}

    wrt = [key for key in inputs if key[len(PREFIX):] not in skip]
    return gradcheck(forward, backward, inputs, wrt=wrt, rng=rng, name=name)


def test_elu1_gradcheck_and_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5))
    x = np.where(np.abs(x) < 0.05, 0.3, x)  # away from the kink at 0
    y, _ = elu1(x)
    assert np.all(y > 0)
    np.testing.assert_allclose(y, np.where(x > 0, x + 1, np.exp(x)))
    gradcheck(lambda x: elu1(x), lambda dy, c: elu1_backward(dy, c), {"x": x}, rng=rng, name="elu1")


@pytest.mark.parametrize("mixer", MIXERS)
def test_mixer_gradcheck(mixer):
    rng = np.random.default_rng(1)
    attn = init_dsf_attention_block(rng, 6, 2, mixer=mixer, key_dim=3, conv_size=None, mlp=False)["attn"]
    attn = random_params(rng, attn)
    z = rng.standard_normal((2, 5, 6))
    gradcheck_tree(lambda p, x: dsf_attention_mixer(p, x, mixer),
                   lambda p, c, dy: dsf_attention_mixer_backward(p, c, dy), attn, z, rng=rng, name=mixer,
                   skip=("b_k",) if mixer == "softmax" else ())
    if mixer == "softmax":  # softmax_s(q . (k_s + b)) = softmax_s(q . k_s): the key bias gets no gradient
        _, cache = dsf_attention_mixer(attn, z, mixer)
        _, grads = dsf_attention_mixer_backward(attn, cache, rng.standard_normal((2, 5, 6)))
        assert np.abs(grads["b_k"]).max() < 1e-12


@pytest.mark.parametrize("mixer, conv_size, mlp", [("softmax", 3, True), ("linear", 4, True),
                                                   ("normalized", 2, False), ("linear", None, False)])
def test_block_gradcheck(mixer, conv_size, mlp):
    rng = np.random.default_rng(2)
    params = init_dsf_attention_block(rng, 6, 2, mixer=mixer, key_dim=4, conv_size=conv_size, mlp=mlp)
    params = random_params(rng, params)
    x = rng.standard_normal((2, 6, 6))
    gradcheck_tree(lambda p, x: dsf_attention_block(p, x, mixer=mixer), dsf_attention_block_backward,
                   params, x, rng=rng, name=f"{mixer} block", skip=("attn/b_k",) if mixer == "softmax" else ())


def test_mixers_match_their_definitions():
    """(S), (L) and (A) against a loop over t of their formulas (module docstring), one head."""
    rng = np.random.default_rng(3)
    B, T, D, n = 2, 7, 4, 3
    z = rng.standard_normal((B, T, D))
    for mixer in MIXERS:
        attn = random_params(rng, init_dsf_attention_block(rng, D, 1, mixer=mixer, key_dim=n, conv_size=None,
                                                           mlp=False)["attn"])
        y, _ = dsf_attention_mixer(attn, z, mixer)
        q = z @ attn["W_q"][:, 0] + attn["b_q"][0]  # (B, T, n)
        k = z @ attn["W_k"][:, 0] + attn["b_k"][0]
        v = z @ attn["W_v"][:, 0]  # (B, T, V)
        o = np.zeros_like(v)
        for b in range(B):
            for t in range(T):
                if mixer == "softmax":
                    s = q[b, t] @ k[b, : t + 1].T / np.sqrt(n)
                    w = np.exp(s - s.max())
                    w /= w.sum()
                elif mixer == "linear":
                    w = elu1(q[b, t])[0] @ elu1(k[b, : t + 1])[0].T
                    w /= w.sum()
                else:
                    w = (q[b, t] @ k[b, : t + 1].T) / np.exp(z[b, t] @ attn["W_n"][:, 0] + attn["b_n"][0])
                o[b, t] = w @ v[b, : t + 1]
        np.testing.assert_allclose(y, o @ attn["W_o"], rtol=1e-10, atol=1e-12, err_msg=mixer)


def test_linear_mixer_is_its_dsf_system():
    """(L) is the DSF of ``normalized_linear_attention_system``: state size n V per head."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal((2, 6, 4))
    attn = random_params(rng, init_dsf_attention_block(rng, 4, 2, mixer="linear", key_dim=3, conv_size=None,
                                                       mlp=False)["attn"])
    _, cache = dsf_attention_mixer(attn, z, "linear")
    q = elu1(np.einsum("btd,dhk->bthk", z, attn["W_q"]) + attn["b_q"])[0]
    k = elu1(np.einsum("btd,dhk->bthk", z, attn["W_k"]) + attn["b_k"])[0]
    v = np.einsum("btd,dhv->bthv", z, attn["W_v"])
    system = dsf.normalized_linear_attention_system(q, k, v, scale=1.0)
    o, _ = dsf.dsf_run(system)
    assert system.Lambda.shape[-1] == 3 * 2  # N = n V
    np.testing.assert_allclose(o, cache.o, rtol=1e-10, atol=1e-12)


def test_language_model_gradients_and_registration():
    rng = np.random.default_rng(5)
    for kind in ("dsf_softmax", "dsf_linear", "dsf_normalized"):
        params = init_lm(rng, 11, 4, 1, block=kind, num_heads=1, key_dim=2, conv_size=2, mlp=False)
        params = random_params(rng, params, 0.3)
        tokens = rng.integers(0, 11, (2, 5))
        targets = rng.integers(0, 11, (2, 5))
        loss, grads = lm_loss_and_grads(params, (tokens, targets))
        flat = tree_flatten(params)
        g = tree_flatten(grads)
        eps = 1e-6
        for path in ("blocks/0/" + kind + "/attn/W_k", "blocks/0/" + kind + "/conv/weight", "embed"):
            idx = tuple(int(i) for i in np.unravel_index(rng.integers(flat[path].size), flat[path].shape))
            plus = tree_map(np.copy, params)
            minus = tree_map(np.copy, params)
            tree_flatten(plus)[path][idx] += eps
            tree_flatten(minus)[path][idx] -= eps
            num = (lm_loss_and_grads(plus, (tokens, targets))[0] - lm_loss_and_grads(minus, (tokens, targets))[0]) / (2 * eps)
            assert abs(num - g[path][idx]) <= 1e-6 * max(1.0, abs(num)), (kind, path, num, g[path][idx])
        logits, _ = lm_forward(params, tokens, mode="chunked")  # options of other blocks are ignored
        assert logits.shape == (2, 5, 11)


def test_inputs_are_validated():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="mixer"):
        init_dsf_attention_block(rng, 4, mixer="rnn")
    with pytest.raises(ValueError, match="num_heads|D"):
        init_dsf_attention_block(rng, 5, 2)
    p = init_dsf_attention_block(rng, 4, mixer="linear")
    with pytest.raises(ValueError, match="W_n"):
        dsf_attention_mixer(p["attn"], rng.standard_normal((1, 3, 4)), "normalized")


def test_masked_forms_equal_ref_mixers():
    """The block's masked forms of (L) and (A) against ``ref.mixers.linear_attention``, forward and
    backward (the gradient of a random linear function of o with respect to q, k and v)."""
    from ref.mixers.linear_attention import (
        linear_attention_parallel,
        linear_attention_parallel_backward,
        normalized_linear_attention_parallel,
        normalized_linear_attention_parallel_backward,
    )
    from ref.models.dsf_lm import masked_scores, masked_scores_backward

    rng = np.random.default_rng(7)
    q, k = elu1(rng.standard_normal((2, 2, 9, 3, 4)))[0]  # positive features (B, T, H, n)
    v = rng.standard_normal((2, 9, 3, 5))
    do = rng.standard_normal((2, 9, 3, 5))
    A, c = masked_scores(q, k)
    o_ref, _, c_ref = linear_attention_parallel(q, k, v, scale=1.0)
    np.testing.assert_allclose(np.swapaxes(A @ np.swapaxes(v, 1, 2), 1, 2), o_ref, rtol=1e-12, atol=1e-12)
    dq_ref, dk_ref, _, _ = linear_attention_parallel_backward(do, None, c_ref)
    dq, dk = masked_scores_backward(np.swapaxes(do, 1, 2) @ np.swapaxes(np.swapaxes(v, 1, 2), -1, -2), c)
    np.testing.assert_allclose(dq, dq_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-10, atol=1e-12)
    # (L) inside the mixer, through an identity projection: the same as the normalised mixer of ref
    D = 4
    attn = init_dsf_attention_block(rng, D, 1, mixer="linear", key_dim=D, conv_size=None, mlp=False)["attn"]
    attn = {**attn, "W_q": np.eye(D)[:, None], "W_k": 1.5 * np.eye(D)[:, None], "W_v": np.eye(D)[:, None],
            "b_q": np.zeros((1, D)), "b_k": np.zeros((1, D)), "W_o": np.eye(D)}
    z = rng.standard_normal((2, 6, D))
    _, cache = dsf_attention_mixer(attn, z, "linear")
    fq, fk = elu1(z[:, :, None])[0], elu1(1.5 * z[:, :, None])[0]
    o_ref, _, c_ref = normalized_linear_attention_parallel(fq, fk, z[:, :, None], scale=1.0)
    np.testing.assert_allclose(cache.o, o_ref, rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal((2, 6, D))
    dz, _ = dsf_attention_mixer_backward(attn, cache, dy)
    dfq, dfk, dv, _ = normalized_linear_attention_parallel_backward(dy[:, :, None], None, c_ref)
    dz_ref = elu1_backward(dfq, elu1(z[:, :, None])[1])[0] + 1.5 * elu1_backward(dfk, elu1(1.5 * z[:, :, None])[1])[0] + dv
    np.testing.assert_allclose(dz, dz_ref[:, :, 0], rtol=1e-9, atol=1e-12)
