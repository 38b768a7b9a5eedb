"""The LSTM language model (ref.models.lstm_lm): finite differences on every parameter with each
backend, the numba layers against the NumPy reference on the model's own activations, the loss's
gradient, the structure of the gradients, bad input.

numpy == numba. The two backends share every op but the LSTM layers (embedding, head and loss are
the same NumPy code), so the model agrees across backends when each layer does. Each numba layer
is checked on the input the model gives it, against ``lstm(backend="numpy")`` on the same input,
within the running error bound derived in ``tests/mixers/test_lstm_kernel.py``
(``error_bounds``: |kernel - reference| <= (u_kernel + u_64) E, elementwise), forward and
backward; and finite differences check the numba model's gradients as a whole.
"""

import numpy as np
import pytest

from ref.mixers.rnn.lstm import KernelCache
from ref.models.lstm_lm import (
    init_lstm_lm,
    lstm_lm_backward,
    lstm_lm_forward,
    lstm_lm_loss,
    lstm_lm_loss_and_grads,
)
from ref.train import tree_flatten
from tests.compare import assert_within
from tests.mixers.test_lstm_kernel import NAMES, UNIT, cast, error_bounds, run
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.rnn

VOCAB = 7


def small_model(rng, *, D=3, n_layers=2, hidden=4, dtype=np.float64):
    params = randomize(init_lstm_lm(rng, VOCAB, D, n_layers, hidden=hidden, dtype=dtype), rng)
    tokens = rng.integers(0, VOCAB, (2, 5))
    return params, tokens


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_gradcheck_every_parameter(rng, backend, n_layers):
    params, tokens = small_model(rng, n_layers=n_layers)
    gradcheck_tree(lstm_lm_forward, lstm_lm_backward, params, {"tokens": tokens}, rng=rng,
                   name=f"lstm_lm {backend}", returns_dx=False, backend=backend)  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_layers_match_the_reference_on_the_model_activations(rng, dtype):
    """Every numba layer of a 2-layer model, on the input the model feeds it, within the derived
    bound of the NumPy reference (forward and every gradient); T = 1 included."""
    for T in (1, 9):
        params = init_lstm_lm(rng, VOCAB, 5, 2, hidden=6, dtype=dtype)
        tokens = rng.integers(0, VOCAB, (3, T))
        _, cache = lstm_lm_forward(params, tokens, backend="numba")
        for layer, c in enumerate(cache.layers):
            assert isinstance(c, KernelCache)
            p = params["lstm"]
            inputs = dict(x=c.x, h0=None, c0=None, **{w: p[f"{w}_l{layer}"] for w in
                          ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})  # fmt: skip
            inputs = cast(inputs, np.float64)
            cot = dict(dy=rng.standard_normal(c.y.shape), dhT=None, dcT=None)
            want, ref_cache = run(inputs, cot, "numpy")
            got, _ = run(cast(inputs, dtype), cast(cot, dtype), "numba")
            np.testing.assert_array_equal(got["y"], c.y)  # the model ran exactly this layer
            E = error_bounds(inputs, cot, ref_cache)
            u = UNIT[dtype] + UNIT[np.float64]
            for name in NAMES:
                assert_within(f"layer {layer} {name}", got[name], want[name], u * E[name])


def test_layers_are_chained(rng):
    """Layer l reads layer l-1's output; layer 0 reads the embedding rows of the tokens."""
    params, tokens = small_model(rng)
    _, cache = lstm_lm_forward(params, tokens, backend="numba")
    np.testing.assert_array_equal(cache.layers[0].x, params["embed"][tokens])
    np.testing.assert_array_equal(cache.layers[1].x, cache.layers[0].y)


def test_loss_and_grads_are_the_cross_entropy_and_its_gradient(rng):
    params, tokens = small_model(rng)
    targets = rng.integers(0, VOCAB, tokens.shape)
    loss, grads = lstm_lm_loss_and_grads(params, (tokens, targets), backend="numba")
    logits, _ = lstm_lm_forward(params, tokens)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, targets[..., None], -1).mean()
    assert abs(loss - want) < 1e-12
    W = params["lstm"]["weight_hh_l1"]
    i = (3, 2)
    old = W[i]
    W[i] = old + 1e-6
    up = float(lstm_lm_loss(params, (tokens, targets))[0])
    W[i] = old - 1e-6
    down = float(lstm_lm_loss(params, (tokens, targets))[0])
    W[i] = old
    assert abs((up - down) / 2e-6 - grads["lstm"]["weight_hh_l1"][i]) < 1e-8


def test_init_shapes_and_float32(rng):
    params = init_lstm_lm(rng, 11, 6, 3, hidden=5, dtype=np.float32)
    shapes = {k: v.shape for k, v in tree_flatten(params).items()}
    assert shapes["embed"] == (11, 6) and shapes["head/W"] == (5, 11) and shapes["head/b"] == (11,)
    assert shapes["lstm/weight_ih_l0"] == (20, 6) and shapes["lstm/weight_ih_l2"] == (20, 5)
    assert len(params["lstm"]) == 12 and all(v.dtype == np.float32 for v in tree_flatten(params).values())
    tokens = rng.integers(0, 11, (2, 4))
    loss, grads = lstm_lm_loss_and_grads(params, (tokens, tokens), backend="numba")
    assert np.isfinite(loss) and all(g.dtype == np.float32 for g in tree_flatten(grads).values())


def test_bad_input(rng):
    params, tokens = small_model(rng)
    with pytest.raises(ValueError, match="n_layers: expected"):
        init_lstm_lm(rng, VOCAB, 3, 0)
    with pytest.raises(ValueError, match="params: expected an LSTM language model"):
        lstm_lm_forward({"embed": params["embed"]}, tokens)
    broken = dict(params, lstm={k: v for k, v in params["lstm"].items() if k != "bias_hh_l1"})
    with pytest.raises(ValueError, match="params/lstm: expected weight_ih_l<i>"):
        lstm_lm_forward(broken, tokens)
    with pytest.raises(ValueError, match=r"tokens: expected 2 axes \(B, T\)"):
        lstm_lm_forward(params, tokens[0])
    with pytest.raises(ValueError, match="backend: lstm supports 'numpy', 'numba', got 'cuda'"):
        lstm_lm_forward(params, tokens, backend="cuda")
    _, cache = lstm_lm_forward(params, tokens)
    with pytest.raises(ValueError, match="cache: expected the LSTMLMCache"):
        lstm_lm_backward(params, cache.layers, np.zeros((2, 5, VOCAB)))
