"""LightNet's layer, block and model: MD-TPE, MD-LRPE, finite differences, causality, learning."""

import numpy as np
import pytest

from ref.mixers.lightnet import lightnet_global, lightnet_recurrent
from ref.models.lightnet import (
    grid_positions,
    image_tokens,
    init_lightnet,
    init_lightnet_block,
    init_lightnet_layer,
    lightnet_backward,
    lightnet_block,
    lightnet_block_backward,
    lightnet_forward,
    lightnet_layer,
    lightnet_layer_backward,
    lightnet_loss_and_grads,
    md_lrpe,
    md_lrpe_backward,
    md_tpe,
    md_tpe_backward,
    sample_same_row,
)
from ref.nn import gradcheck, linear, rms_norm, silu
from ref.tasks import load_digits
from ref.train import adam_init, adam_step, tree_flatten, tree_map, tree_structure, tree_unflatten

pytestmark = pytest.mark.lightnet


def jitter(params, rng, size=0.3):
    """Every parameter random and non-zero (norm weights and biases included), for gradcheck."""
    return tree_map(lambda a: a + size * rng.standard_normal(a.shape), params)


def gradcheck_tree(forward, backward, params, x, rng, name, with_dx=True):
    """gradcheck over every leaf of a parameter tree (and x): the leaves go in by their paths."""
    structure = tree_structure(params)
    flat = tree_flatten(params)

    def fwd(x, **leaves):
        p = tree_unflatten(leaves, structure)
        y, cache = forward(p, x)
        return y, (p, cache)

    def bwd(dy, cache):
        p, c = cache
        out = backward(p, c, dy)
        dx, grads = out if with_dx else (None, out)
        return {"x": dx, **tree_flatten(grads)}

    wrt = list(flat) + (["x"] if with_dx else [])
    return gradcheck(fwd, bwd, {"x": x, **flat}, wrt=wrt, rng=rng, name=name)


# ------------------------------------------------------------------------------------------------
# MD-TPE


def explicit_md_tpe(x, kernels, grid, causal):
    """(10) as one (T, T) Toeplitz-structured matrix per channel, built entry by entry."""
    T, D = x.shape[1], x.shape[2]
    pos = grid_positions(grid)
    M = np.zeros((T, T, D))
    for t in range(T):
        M[t, t] += 1  # the embedding itself
        for s in range(T):
            differ = np.flatnonzero(pos[t] != pos[s])
            if len(differ) == 1:  # on the same line along one axis a
                a = differ[0]
                r = pos[t, a] - pos[s, a]
                if r >= 0 or not causal:
                    M[t, s] += kernels[a][r + grid[a] - 1]
            elif len(differ) == 0:  # offset 0 along every axis
                for a in range(len(grid)):
                    M[t, s] += kernels[a][grid[a] - 1]
    return np.einsum("tsd,bsd->btd", M, x)


@pytest.mark.parametrize("grid", [(6,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_md_tpe_is_an_explicit_toeplitz_product(grid, causal, rng):
    D = 3
    x = rng.standard_normal((2, int(np.prod(grid)), D))
    kernels = [rng.standard_normal((2 * n - 1, D)) for n in grid]
    y, _ = md_tpe(x, kernels, grid, causal=causal)
    np.testing.assert_allclose(y, explicit_md_tpe(x, kernels, grid, causal), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_md_tpe_finite_differences(causal, rng):
    grid = (3, 2)
    inputs = {"x": rng.standard_normal((2, 6, 3)), "k0": rng.standard_normal((5, 3)), "k1": rng.standard_normal((3, 3))}

    def fwd(x, k0, k1):
        return md_tpe(x, [k0, k1], grid, causal=causal)

    def bwd(dy, cache):
        dx, (dk0, dk1) = md_tpe_backward(dy, cache)
        return dx, dk0, dk1

    gradcheck(fwd, bwd, inputs, rng=rng, name="md_tpe")
    if causal:  # the entries of negative offsets (the first n_a - 1) are unused: exactly zero gradient
        _, (dk0, dk1) = md_tpe_backward(rng.standard_normal((2, 6, 3)), fwd(**inputs)[1])
        assert not dk0[:2].any() and not dk1[:1].any()


# ------------------------------------------------------------------------------------------------
# MD-LRPE


@pytest.mark.parametrize("grid", [(7,), (4, 5), (2, 3, 4)])
def test_md_lrpe_score_depends_only_on_the_offset(grid, rng):
    """(9): with the same content q, k at every position, rho_t(q) . rho_s(k) is a function of
    p(t) - p(s) alone, and not a constant one."""
    T, H, K = int(np.prod(grid)), 2, 5
    theta = rng.uniform(0.1, 2.0, (H, K))
    q = np.broadcast_to(rng.standard_normal((1, 1, H, K)), (1, T, H, K)).copy()
    k = np.broadcast_to(rng.standard_normal((1, 1, H, K)), (1, T, H, K)).copy()
    qr, _ = md_lrpe(q, theta, grid)
    kr, _ = md_lrpe(k, theta, grid)
    scores = np.einsum("thk,shk->hts", qr[0], kr[0])  # (H, T, T)
    pos = grid_positions(grid)
    by_offset = {}
    for t in range(T):
        for s in range(T):
            by_offset.setdefault(tuple(pos[t] - pos[s]), []).append(scores[:, t, s])
    for offset, values in by_offset.items():
        np.testing.assert_allclose(values, [values[0]] * len(values), rtol=1e-12, atol=1e-12, err_msg=str(offset))
    distinct = {tuple(np.round(v[0], 8)) for v in by_offset.values()}
    assert len(distinct) > 1  # the offset does matter


def test_md_lrpe_rotation_preserves_the_norm_per_dim(rng):
    """Each coordinate is rotated in the complex plane: x^2 = (x cos)^2 + (x sin)^2."""
    x = rng.standard_normal((2, 12, 2, 4))
    y, _ = md_lrpe(x, rng.standard_normal((2, 4)), (3, 4))
    np.testing.assert_allclose(y[..., :4] ** 2 + y[..., 4:] ** 2, x**2, rtol=1e-13)


def test_md_lrpe_finite_differences(rng):
    inputs = {"x": rng.standard_normal((2, 6, 2, 3)), "theta": rng.standard_normal((2, 3))}
    gradcheck(lambda x, theta: md_lrpe(x, theta, (2, 3)), md_lrpe_backward, inputs, rng=rng, name="md_lrpe")


# ------------------------------------------------------------------------------------------------
# the layer and the block


LAYER_CASES = [
    (False, "chunked", (2, 3)),  # non-causal: the global sum (form unused)
    (True, "recurrent", (6,)),
    (True, "chunked", (2, 3)),
    (True, "parallel", (6,)),
]


@pytest.mark.parametrize("causal, form, grid", LAYER_CASES)
@pytest.mark.parametrize("lrpe", [False, True])
def test_layer_finite_differences(causal, form, grid, lrpe, rng):
    params = jitter(init_lightnet_layer(rng, 6, 2, gate_rank=2, grid_axes=len(grid) if lrpe else None), rng)
    x = rng.standard_normal((2, 6, 6))

    def forward(p, x):
        return lightnet_layer(p, x, causal=causal, grid=grid, form=form, chunk_size=4)

    gradcheck_tree(forward, lightnet_layer_backward, params, x, rng, f"lightnet_layer {form}")


def test_block_finite_differences(rng):
    params = jitter(init_lightnet_block(rng, 6, 2, mlp_hidden=5, gate_rank=2, grid_axes=2), rng)
    x = rng.standard_normal((1, 6, 6))

    def forward(p, x):
        return lightnet_block(p, x, causal=False, grid=(2, 3))

    gradcheck_tree(forward, lightnet_block_backward, params, x, rng, "lightnet_block")


def test_layer_causal_forms_agree(rng):
    params = jitter(init_lightnet_layer(rng, 8, 2, grid_axes=1), rng)
    x, dy = rng.standard_normal((2, 11, 8)), rng.standard_normal((2, 11, 8))
    results = {}
    for form in ("recurrent", "chunked", "parallel"):
        y, cache = lightnet_layer(params, x, causal=True, form=form, chunk_size=4)
        results[form] = (y, *lightnet_layer_backward(params, cache, dy))
    y, dx, grads = results["recurrent"]
    for form in ("chunked", "parallel"):
        np.testing.assert_allclose(results[form][0], y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(results[form][1], dx, rtol=1e-10, atol=1e-12)
        for path, g in tree_flatten(grads).items():
            np.testing.assert_allclose(tree_flatten(results[form][2])[path], g, rtol=1e-10, atol=1e-12, err_msg=path)


@pytest.mark.parametrize("causal", [True, False])
def test_layer_without_lrpe_is_the_mixer(causal, rng):
    """(1)-(7) without MD-LRPE: the mixer of ref.mixers.lightnet (causal: the scan; else global)."""
    D, H = 8, 2
    params = jitter(init_lightnet_layer(rng, D, H, grid_axes=None), rng)
    x = rng.standard_normal((2, 9, D))
    y, _ = lightnet_layer(params, x, causal=causal)
    heads = lambda W: np.einsum("btd,dhk->bthk", x, W)  # noqa: E731
    q, _ = silu(heads(params["W_q"]))
    mixer = lightnet_recurrent if causal else lightnet_global
    o, _, _ = mixer(q, heads(params["W_k"]), heads(params["W_v"]))
    n, _ = rms_norm(o.reshape(2, 9, D), params["norm_weight"], eps=1e-6)
    s, _ = silu(x @ params["W_u1"] @ params["W_u2"])
    want, _ = linear(n * s, params["W_o"])
    np.testing.assert_allclose(y, want, rtol=1e-11, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# the model


def small_model(rng, grid, *, tpe=True, lrpe=True, F=3, C=3, dtype=np.float64, base=10.0):
    return init_lightnet(
        rng,
        in_features=F,
        dim=8,
        num_classes=C,
        grid=grid,
        num_layers=1,
        num_heads=2,
        use_tpe=tpe,
        use_lrpe=lrpe,
        gate_rank=2,
        mlp_hidden=5,
        lrpe_base=base,
        dtype=dtype,
    )


@pytest.mark.parametrize(
    "causal, grid, pool", [(False, (3, 4), "mean"), (True, (7,), None), (True, (2, 3), "last")]
)
def test_model_finite_differences(causal, grid, pool, rng):
    params = jitter(small_model(rng, grid), rng)
    x = rng.standard_normal((2, int(np.prod(grid)), 3))

    def forward(p, x):
        return lightnet_forward(p, x, grid=grid, causal=causal, pool=pool, chunk_size=2)

    gradcheck_tree(forward, lightnet_backward, params, x, rng, "lightnet model", with_dx=False)


@pytest.mark.parametrize("grid", [(12,), (3, 4)])
def test_causal_model_ignores_the_future(grid, rng):
    params = jitter(small_model(rng, grid), rng)
    x = rng.standard_normal((2, 12, 3))
    y, _ = lightnet_forward(params, x, grid=grid, causal=True, pool=None, chunk_size=5)
    x_later = x.copy()
    x_later[:, 7:] = rng.standard_normal((2, 5, 3))
    y_later, _ = lightnet_forward(params, x_later, grid=grid, causal=True, pool=None, chunk_size=5)
    np.testing.assert_allclose(y_later[:, :7], y[:, :7], rtol=1e-12, atol=1e-13)
    assert np.abs(y_later[:, 7:] - y[:, 7:]).max() > 1e-3


def test_positional_encodings_break_permutation_invariance(rng):
    """Without MD-TPE and MD-LRPE the non-causal model is a function of the set of tokens."""
    grid = (3, 4)
    x = rng.standard_normal((2, 12, 3))
    perm = rng.permutation(12)
    for tpe, lrpe, invariant in [(False, False, True), (True, False, False), (False, True, False)]:
        params = jitter(small_model(rng, grid, tpe=tpe, lrpe=lrpe), rng)
        y, _ = lightnet_forward(params, x, grid=grid)
        y_perm, _ = lightnet_forward(params, x[:, perm], grid=grid)
        assert np.allclose(y_perm, y, rtol=1e-12, atol=1e-13) == invariant, (tpe, lrpe)


def test_float32_model_stays_float32(rng):
    params = small_model(rng, (2, 3), dtype=np.float32)
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    loss, grads, logits = lightnet_loss_and_grads(params, x, np.array([0, 2]), grid=(2, 3))
    assert logits.dtype == np.float32 and np.isfinite(loss)
    assert all(g.dtype == np.float32 for g in tree_flatten(grads).values())


def test_image_tokens(rng):
    images = rng.standard_normal((2, 4, 6))
    tokens, grid = image_tokens(images, patch=2)
    assert grid == (2, 3) and tokens.shape == (2, 6, 4)
    np.testing.assert_array_equal(tokens[1, 4], images[1, 2:4, 2:4].ravel())  # token (1, 1)
    pixels, grid = image_tokens(images)
    assert grid == (4, 6)
    np.testing.assert_array_equal(pixels[:, :, 0], images.reshape(2, 24))


def test_same_row_task(rng):
    images, labels = sample_same_row(rng, 64, side=5)
    assert images.shape == (64, 5, 5) and labels.sum() == 32
    for image, label in zip(images, labels):
        rows, cols = np.nonzero(image)
        assert len(rows) == 2 and (rows[0] == rows[1]) == bool(label)


def test_learns_the_digits(rng):
    X_train, y_train, X_test, y_test = load_digits(test_fraction=0.2, rng=0)
    tokens, grid = image_tokens(X_train.reshape(-1, 8, 8) / 16, patch=2)  # 4 x 4 tokens of 2 x 2 pixels
    tokens_test, _ = image_tokens(X_test.reshape(-1, 8, 8) / 16, patch=2)
    params = init_lightnet(rng, in_features=4, dim=16, num_classes=10, grid=grid, num_layers=1, num_heads=2)
    state = adam_init(params)
    for _ in range(60):
        batch = rng.integers(0, len(y_train), 64)
        _, grads, _ = lightnet_loss_and_grads(params, tokens[batch], y_train[batch], grid=grid)
        params, state = adam_step(params, grads, state, lr=1e-2)
    logits, _ = lightnet_forward(params, tokens_test, grid=grid)
    assert (logits.argmax(-1) == y_test).mean() > 0.7


def test_same_row_needs_position(rng):
    """Without positional encoding every image of the task gets the same logits (chance level);
    with MD-LRPE a few steps of training solve it."""
    side = 4
    images, labels = sample_same_row(rng, 64, side=side)
    tokens, grid = image_tokens(images)
    blind = small_model(rng, grid, tpe=False, lrpe=False, F=1, C=2)
    logits, _ = lightnet_forward(blind, tokens, grid=grid)
    np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), rtol=1e-12, atol=1e-13)

    params = init_lightnet(
        rng, in_features=1, dim=16, num_classes=2, grid=grid, num_layers=1, use_tpe=False, lrpe_base=10.0
    )
    state = adam_init(params)
    for _ in range(200):
        batch_images, batch_labels = sample_same_row(rng, 32, side=side)
        _, grads, _ = lightnet_loss_and_grads(params, image_tokens(batch_images)[0], batch_labels, grid=grid)
        params, state = adam_step(params, grads, state, lr=1e-2)
    logits, _ = lightnet_forward(params, tokens, grid=grid)
    assert (logits.argmax(-1) == labels).mean() > 0.9


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_input(rng):
    params = small_model(rng, (2, 3))
    x = rng.standard_normal((2, 6, 3))
    with pytest.raises(ValueError, match=r"grid: expected axis lengths whose product is the number of tokens T = 6"):
        lightnet_forward(params, x, grid=(2, 2))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, F\) with F = 3"):
        lightnet_forward(params, rng.standard_normal((2, 6, 4)), grid=(2, 3))
    with pytest.raises(ValueError, match="x: expected dtype float64"):
        lightnet_forward(params, x.astype(np.float32), grid=(2, 3))
    with pytest.raises(ValueError, match="causal: expected True or False, got 1"):
        lightnet_forward(params, x, grid=(2, 3), causal=1)
    with pytest.raises(ValueError, match="pool: expected one of 'mean', 'last', None"):
        lightnet_forward(params, x, grid=(2, 3), pool="max")
    with pytest.raises(ValueError, match="form: expected one of 'recurrent', 'chunked', 'parallel'"):
        lightnet_forward(params, x, grid=(2, 3), causal=True, form="global")
    with pytest.raises(ValueError, match=r"kernels/0: expected shape \(2 n_a - 1, D\) = \(5, 8\)"):
        lightnet_forward(params, x, grid=(3, 2))
    with pytest.raises(ValueError, match="num_heads: expected a divisor of the model width D = 8, got 3"):
        init_lightnet(rng, in_features=3, dim=8, num_classes=2, grid=(2, 3), num_heads=3)
    with pytest.raises(ValueError, match="grid_axes: MD-LRPE needs a head dim K >= the number of axes"):
        init_lightnet(rng, in_features=3, dim=4, num_classes=2, grid=(2, 1, 2), num_heads=2)
    with pytest.raises(ValueError, match="grid: expected a non-empty tuple"):
        init_lightnet(rng, in_features=3, dim=4, num_classes=2, grid=6)
    layer = init_lightnet_layer(rng, 8, 2)
    with pytest.raises(ValueError, match=r"params/W_v: expected shape \(D, H, K\) = \(8, 2, 4\)"):
        lightnet_layer({**layer, "W_v": np.zeros((8, 2, 3))}, rng.standard_normal((1, 4, 8)), causal=True)
    with pytest.raises(ValueError, match="theta: expected shape"):
        md_lrpe(rng.standard_normal((1, 6, 2, 3)), np.zeros((2, 4)), (2, 3))
    with pytest.raises(ValueError, match=r"patch: expected a divisor of the image height and width \(8, 8\), got 3"):
        image_tokens(np.zeros((1, 8, 8)), patch=3)
    with pytest.raises(ValueError, match="side: expected an image side >= 2"):
        sample_same_row(rng, 4, side=1)
