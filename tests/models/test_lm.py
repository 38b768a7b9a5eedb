"""The language-model scaffold: finite differences on every parameter of a hybrid stack, the
recurrent decode against the forward, the masked loss, the block registry, and training."""

import numpy as np
import pytest

from ref.models.gla import init_swiglu, swiglu, swiglu_backward
from ref.models.lm import (
    BLOCKS,
    BlockSpec,
    init_lm,
    lm_backward,
    lm_decode,
    lm_forward,
    lm_loss,
    lm_loss_and_grads,
    register_block,
)
from ref.nn import cross_entropy_backward, gradcheck
from ref.tasks import Batch, get_task
from ref.train import train, tree_flatten, tree_structure, tree_unflatten
from tests.compare import assert_within
from tests.models.model_cases import GATE_STEPS, PREFIX, gradcheck_tree, randomize

pytestmark = pytest.mark.gla

HYBRID = ["gla", "retnet", "linear"]


def hybrid(rng, tied=False, vocab=5):
    # one head of width 4: a head of only 2 value dims would make GroupNorm's output +-1 whatever
    # its input, and hide every gradient before it
    return randomize(init_lm(rng, vocab, 4, 3, HYBRID, tied=tied, num_heads=1, mlp_hidden=3), rng)


# A whole model: some gradients (the first block's gates, a retention head deep in the stack) are
# 1e-4 of the largest, where the float64 differences carry up to ~5e-6 relative noise (seen over
# 22 random draws). The layers and blocks are checked at rtol 1e-6; here the check is of the
# wiring, where a mistake is off by O(1).
MODEL_RTOL = 3e-5


@pytest.mark.parametrize("tied", [False, True])
def test_gradcheck_every_parameter_of_a_hybrid_stack(rng, tied):
    params = hybrid(rng, tied)
    assert ("head" in params) is not tied
    tokens = rng.integers(0, 5, (2, 5))
    gradcheck_tree(
        lm_forward,
        lm_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name="lm",
        returns_dx=False,
        steps=GATE_STEPS,
        rtol=MODEL_RTOL,
        chunk_size=3,
    )


def test_loss_and_grads_is_the_gradient_of_the_masked_loss(rng):
    params = randomize(init_lm(rng, 6, 4, 1, "retnet", num_heads=1, mlp_hidden=3), rng)
    batch = Batch(rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5)), rng.random((2, 5)) < 0.5)

    def loss(p, inputs):
        return lm_loss(p, Batch(inputs, batch.targets, batch.loss_mask))

    def loss_backward(p, cache, dloss):
        c_model, c_loss = cache
        return lm_backward(p, c_model, cross_entropy_backward(dloss, c_loss)[0])

    gradcheck_tree(loss, loss_backward, params, {"inputs": batch.inputs}, rng=rng, name="loss", returns_dx=False)
    value, grads = lm_loss_and_grads(params, batch, rng)
    assert value == pytest.approx(float(loss(params, batch.inputs)[0]))
    assert tree_flatten(grads).keys() == tree_flatten(params).keys()


def test_loss_is_taken_only_where_the_mask_says(rng):
    params = init_lm(rng, 7, 8, 1, "gla", num_heads=2)
    inputs, targets = rng.integers(0, 7, (3, 6)), rng.integers(0, 7, (3, 6))
    mask = np.zeros((3, 6), bool)
    mask[:, -2:] = True
    value, _ = lm_loss(params, Batch(inputs, targets, mask))
    other_targets = np.where(mask, targets, (targets + 1) % 7)  # change every target outside the mask
    assert float(lm_loss(params, Batch(inputs, other_targets, mask))[0]) == float(value)
    logits, _ = lm_forward(params, inputs)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, targets[..., None], -1)[..., 0][mask].mean()
    assert float(value) == pytest.approx(want, rel=1e-12)
    # a pair (inputs, targets), as lm_batches yields: every position counts
    full, _ = lm_loss(params, (inputs, targets))
    assert float(full) == pytest.approx(-np.take_along_axis(logp, targets[..., None], -1).mean(), rel=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_decode_token_by_token_equals_the_forward(rng, tied):
    params = hybrid(rng, tied, vocab=9)
    tokens = rng.integers(0, 9, (2, 10))
    logits, _ = lm_forward(params, tokens, chunk_size=4)
    decoded, states = lm_decode(params, tokens)
    assert_within("decode", decoded, logits, 1e-12)
    # continuing from the states equals decoding the whole sequence at once
    first, states = lm_decode(params, tokens[:, :4])
    rest, _ = lm_decode(params, tokens[:, 4:], states)
    assert_within("resumed", np.concatenate([first, rest], axis=1), logits, 1e-12)
    for mode in ("recurrent", "parallel"):
        assert_within(mode, lm_forward(params, tokens, mode=mode)[0], logits, 1e-12)


def test_decode_a_rotary_retnet(rng):
    params = randomize(init_lm(rng, 6, 8, 2, "retnet", num_heads=2, tied=True), rng)
    tokens = rng.integers(0, 6, (2, 7))
    logits, _ = lm_forward(params, tokens, rotary=True)
    assert_within("decode", lm_decode(params, tokens, rotary=True)[0], logits, 1e-12)
    assert np.abs(lm_forward(params, tokens)[0] - logits).max() > 1e-6


@pytest.mark.parametrize("block", ["gla", "retnet", "linear", pytest.param("mom", marks=pytest.mark.mom)])
def test_the_scaffold_learns_associative_recall(block):
    """300 steps of ref.train.train on MQAR (vocab 16, T 16, 2 pairs; 8 value ids: chance 1/8)."""
    task = get_task("mqar", vocab_size=16, seq_len=16, num_pairs=2)
    rng = np.random.default_rng(1)
    params = init_lm(rng, task.vocab_size, 16, 1, block, num_heads=2)
    out = train(params, lm_loss_and_grads, lambda r, s: task.sample(r, 16), steps=300, rng=rng, lr=1e-2, progress=False)
    loss = out.history["loss"]
    assert loss[-20:].mean() < 0.6 * loss[:20].mean()
    test = task.sample(np.random.default_rng(9), 256)
    assert test.accuracy(lm_forward(out.params, test.inputs)[0].argmax(-1)) > 0.3


def test_a_new_block_kind_plugs_in_through_the_registry(rng, monkeypatch):
    """A residual SwiGLU block (no mixing over time) registered without a step function."""

    def init(rng, D, *, dtype=np.float64):
        return init_swiglu(rng, D, 3, dtype=dtype)

    def forward(params, x):
        y, cache = swiglu(params, x)
        return x + y, cache

    def backward(params, cache, dy):
        dx, grads = swiglu_backward(params, cache, dy)
        return dy + dx, grads

    monkeypatch.setitem(BLOCKS, "mlp_only", BlockSpec(init, forward, backward))
    params = randomize(init_lm(rng, 5, 4, 2, ["mlp_only", "gla"], tied=True, per_block={"gla": {"num_heads": 1}}), rng)
    assert list(params["blocks"][0]) == ["mlp_only"]
    tokens = rng.integers(0, 5, (2, 3))
    gradcheck_tree(
        lm_forward,
        lm_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name="lm",
        returns_dx=False,
        steps=GATE_STEPS,
        rtol=MODEL_RTOL,
    )
    with pytest.raises(ValueError, match="block kind 'mlp_only' has no step function"):
        lm_decode(params, tokens)
    with pytest.raises(ValueError, match="block 'gla' is already registered"):
        register_block("gla", init, forward, backward)
    with pytest.raises(ValueError, match="forward: expected a callable"):
        register_block("other", init, None, backward)


def test_bad_inputs_name_the_argument(rng):
    params = init_lm(rng, 5, 8, 1, "gla", num_heads=2)
    tokens = rng.integers(0, 5, (2, 4))
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, V\) = \[0, 5\)"):
        lm_forward(params, tokens + 5)
    with pytest.raises(ValueError, match="tokens: expected an integer dtype"):
        lm_forward(params, tokens.astype(float))
    with pytest.raises(ValueError, match=r"tokens: expected 2 axes \(B, T\)"):
        lm_forward(params, tokens[0])
    with pytest.raises(ValueError, match="block: expected one of"):
        init_lm(rng, 5, 8, 1, "nope")
    with pytest.raises(ValueError, match="block: expected a block name or a list of n_layers = 2 names"):
        init_lm(rng, 5, 8, 2, ["gla"])
    with pytest.raises(ValueError, match="params/blocks/0: unknown block kind 'nope'"):
        lm_forward({**params, "blocks": [{"nope": {}}]}, tokens)
    with pytest.raises(ValueError, match="params/blocks/0: expected a one-key dict"):
        lm_forward({**params, "blocks": [params["blocks"][0]["gla"]]}, tokens)
    with pytest.raises(ValueError, match="batch: expected a ref.tasks.Batch or a tuple"):
        lm_loss_and_grads(params, tokens, rng)
    with pytest.raises(ValueError, match="loss_mask: expected a bool array"):
        lm_loss(params, (tokens, tokens, np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"targets: expected shape \(B, T\)"):
        lm_loss(params, (tokens, tokens[:, :3]))
    logits, cache = lm_forward(params, tokens)
    with pytest.raises(ValueError, match="dlogits: expected shape"):
        lm_backward(params, cache, logits[:, :3])
    with pytest.raises(ValueError, match="states: expected None or a list of 1 block states"):
        lm_decode(params, tokens, states=[None, None])


# ------------------------------------------------------------------------------------------------
# blocks with an auxiliary loss: MoM's load-balancing loss


def _min_router_gap(cache) -> float:
    """The smallest gap, over the MoM blocks' tokens, between the top_k-th and the next router
    logit: a finite-difference step must not change a selection."""
    gap = np.inf
    for c in cache.blocks:
        if hasattr(c, "mixer") and hasattr(c.mixer, "selected"):
            x, W, _ = c.mixer.router
            logits = np.sort(x @ W, axis=-1)[..., ::-1]
            k = int(c.mixer.selected[0, 0].sum())
            if k < logits.shape[-1]:
                gap = min(gap, float((logits[..., k - 1] - logits[..., k]).min()))
    return gap


def mom_stack(rng, blocks, tokens_shape, vocab=5, tied=False, min_gap=0.05):
    """A randomized stack with MoM blocks and token ids, redrawn until no routing is near a tie."""
    for _ in range(100):
        params = randomize(
            init_lm(
                rng,
                vocab,
                4,
                len(blocks),
                blocks,
                tied=tied,
                num_heads=1,
                mlp_hidden=3,
                per_block={"mom": {"num_memories": 3, "key_dim": 2, "value_dim": 4, "conv_size": 2}},
            ),
            rng,
        )
        tokens = rng.integers(0, vocab, tokens_shape)
        if _min_router_gap(lm_forward(params, tokens)[1]) > min_gap:
            return params, tokens
    raise AssertionError("no draw without a near-tie in 100 tries")


@pytest.mark.mom
@pytest.mark.parametrize("blocks, tied", [(["mom", "gla"], False), (["mom", "mom"], True)])
def test_gradcheck_a_stack_with_mom_blocks_and_their_aux_loss(rng, blocks, tied):
    """Every parameter, against finite differences of <logits, dlogits> + daux * aux_loss."""
    params, tokens = mom_stack(rng, blocks, (2, 5), tied=tied)
    structure = tree_structure(params)
    inputs = {PREFIX + path: leaf for path, leaf in tree_flatten(params).items()}

    def fwd(**arrays):
        p = tree_unflatten({k[len(PREFIX) :]: v for k, v in arrays.items()}, structure)
        logits, cache = lm_forward(p, tokens, chunk_size=3)
        return logits, np.asarray(cache.aux_loss), (p, cache)

    def bwd(dlogits, daux, cache):
        p, c = cache
        grads = lm_backward(p, c, dlogits, daux)
        return {PREFIX + k: g for k, g in tree_flatten(grads).items()}

    steps = {"W_a1": 1e-5, "W_a2": 1e-5, "b_a": 1e-5}  # as GATE_STEPS: the GLA gate's small gradients
    for eps, wrt in (
        (1e-6, [k for k in inputs if k.rsplit("/", 1)[-1] not in steps]),
        (1e-5, [k for k in inputs if k.rsplit("/", 1)[-1] in steps]),
    ):
        if wrt:
            gradcheck(fwd, bwd, inputs, wrt=wrt, eps=eps, rtol=MODEL_RTOL, rng=np.random.default_rng(5), name="lm")


@pytest.mark.mom
def test_the_loss_includes_the_aux_loss_and_its_gradient(rng):
    params, _ = mom_stack(rng, ["mom", "gla"], (2, 5), vocab=6)
    batch = Batch(rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5)), rng.random((2, 5)) < 0.6)
    batch.loss_mask[:, -1] = True
    logits, cache = lm_forward(params, batch.inputs)
    assert 0 < cache.aux_loss < 1  # 0.01 * M^2 mean f P, between 0.01 * top_k and 0.01 * M

    def loss(p, inputs):
        return lm_loss(p, Batch(inputs, batch.targets, batch.loss_mask))

    def loss_backward(p, cache, dloss):
        c_model, c_loss = cache
        return lm_backward(p, c_model, cross_entropy_backward(dloss, c_loss)[0], daux=dloss)

    gradcheck_tree(
        loss, loss_backward, params, {"inputs": batch.inputs}, rng=rng, name="loss", returns_dx=False, steps=GATE_STEPS, rtol=MODEL_RTOL
    )
    value, grads = lm_loss_and_grads(params, batch, rng)
    ce = float(lm_loss(params, Batch(batch.inputs, batch.targets, batch.loss_mask))[0]) - cache.aux_loss
    assert value == pytest.approx(ce + cache.aux_loss, rel=1e-12)
    # without daux the gradient is that of the logits alone: the router's gradients differ
    c_loss = lm_loss(params, batch)[1]
    plain = lm_backward(params, c_loss[0], cross_entropy_backward(1.0, c_loss[1])[0])
    router = "blocks/0/mom/mixer/router/W"
    assert not np.allclose(tree_flatten(plain)[router], tree_flatten(grads)[router])


@pytest.mark.mom
def test_decode_a_stack_with_mom_blocks(rng):
    params, tokens = mom_stack(rng, ["mom", "gla", "mom"], (2, 8), vocab=7)
    logits, _ = lm_forward(params, tokens, chunk_size=3)
    assert_within("decode", lm_decode(params, tokens)[0], logits, 1e-12)
    first, states = lm_decode(params, tokens[:, :3])
    rest, _ = lm_decode(params, tokens[:, 3:], states)
    assert_within("resumed", np.concatenate([first, rest], axis=1), logits, 1e-12)
    for mode in ("recurrent", "parallel"):
        assert_within(mode, lm_forward(params, tokens, mode=mode)[0], logits, 1e-12)


def test_blocks_without_aux_loss_are_unchanged(rng):
    """The registry's default is aux_loss=False (the 4-field BlockSpec still works), the cache's
    aux_loss is 0 for such stacks and the loss is the cross-entropy alone."""
    assert BlockSpec(len, len, len).aux_loss is False and BLOCKS["mom"].aux_loss is True
    assert not any(BLOCKS[k].aux_loss for k in ("gla", "retnet", "linear"))
    params = init_lm(rng, 5, 8, 1, "gla", num_heads=2)
    tokens = rng.integers(0, 5, (2, 4))
    _, cache = lm_forward(params, tokens)
    assert cache.aux_loss == 0.0
    with pytest.raises(ValueError, match="aux_loss: expected True or False, got 1"):
        register_block("other", len, len, len, aux_loss=1)


@pytest.mark.parametrize("block", ["gpt2", "llama", "gla"])
def test_backend_reaches_the_mixer(rng, block):
    params = init_lm(rng, 11, 8, 2, block)
    _, cache = lm_forward(params, rng.integers(0, 11, (2, 5)), backend="numba")
    got = [c[1]["mixer"][1].backend if block == "gla" else c[1]["attn"].backend for c in cache.blocks]
    assert got == ["numba", "numba"]
    # ... and the MLP's activation (GELU for gpt2, the swish of SwiGLU otherwise) is the fused one
    mlp_caches = [c[3] for c in cache.blocks]  # (c_n1, c_attn|c_mixer, c_n2, c_mlp); c_mlp[1]: the activation
    assert [m[1][-1] for m in mlp_caches] == ["numba", "numba"]

