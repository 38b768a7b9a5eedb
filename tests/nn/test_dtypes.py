"""Every op computes in the dtype of its input: float32 in gives float32 outputs and gradients,
close to the float64 result."""

from functools import partial

import numpy as np
import pytest

import ref.nn as nn


def _cases(rng):
    n = rng.standard_normal
    return {
        "linear": (nn.linear, nn.linear_backward, {"x": n((2, 3)), "W": n((3, 4)), "b": n(4)}),
        "embedding": (nn.embedding, nn.embedding_backward, {"ids": np.array([[1, 0, 1]]), "table": n((3, 4))}),
        "layer_norm": (nn.layer_norm, nn.layer_norm_backward, {"x": n((2, 5)), "weight": n(5), "bias": n(5)}),
        "rms_norm": (nn.rms_norm, nn.rms_norm_backward, {"x": n((2, 5)), "weight": n(5)}),
        "group_norm": (
            partial(nn.group_norm, num_groups=2),
            nn.group_norm_backward,
            {"x": n((2, 3, 4)), "weight": n(4), "bias": n(4)},
        ),
        "batch_norm_train": (
            nn.batch_norm,
            nn.batch_norm_backward,
            {"x": n((4, 2, 2, 2)), "weight": n(2), "bias": n(2), "running_mean": n(2), "running_var": 1 + n(2) ** 2},
        ),
        "batch_norm_eval": (
            partial(nn.batch_norm, training=False),
            nn.batch_norm_backward,
            {"x": n((4, 2)), "weight": n(2), "bias": n(2), "running_mean": n(2), "running_var": 1 + n(2) ** 2},
        ),
        "dropout": (
            lambda x: nn.dropout(x, p=0.5, rng=np.random.default_rng(1)),
            nn.dropout_backward,
            {"x": n((3, 4))},
        ),
        "relu": (nn.relu, nn.relu_backward, {"x": n(6)}),
        "gelu_none": (nn.gelu, nn.gelu_backward, {"x": n(6)}),
        "gelu_tanh": (partial(nn.gelu, approximate="tanh"), nn.gelu_backward, {"x": n(6)}),
        "sigmoid": (nn.sigmoid, nn.sigmoid_backward, {"x": n(6) * 10}),
        "silu": (nn.silu, nn.silu_backward, {"x": n(6)}),
        "tanh": (nn.tanh, nn.tanh_backward, {"x": n(6)}),
        "softplus": (nn.softplus, nn.softplus_backward, {"x": n(6) * 15}),
        "logsigmoid": (nn.logsigmoid, nn.logsigmoid_backward, {"x": n(6) * 10}),
        "softmax": (nn.softmax, nn.softmax_backward, {"x": n((2, 5))}),
        "log_softmax": (nn.log_softmax, nn.log_softmax_backward, {"x": n((2, 5))}),
        "causal_conv1d": (
            nn.causal_conv1d,
            nn.causal_conv1d_backward,
            {"x": n((2, 3, 4)), "weight": n((4, 3)), "bias": n(4), "initial_state": n((2, 2, 4))},
        ),
        "conv2d": (
            partial(nn.conv2d, stride=2, padding=1),
            nn.conv2d_backward,
            {"x": n((1, 2, 5, 5)), "weight": n((3, 2, 3, 3)), "bias": n(3)},
        ),
        "max_pool2d": (partial(nn.max_pool2d, kernel_size=2), nn.max_pool2d_backward, {"x": n((1, 2, 4, 4))}),
        "avg_pool2d": (partial(nn.avg_pool2d, kernel_size=2), nn.avg_pool2d_backward, {"x": n((1, 2, 4, 4))}),
        "cross_entropy": (
            partial(nn.cross_entropy, label_smoothing=0.1),
            nn.cross_entropy_backward,
            {"logits": n((2, 3, 5)), "targets": np.array([[0, 4, -100], [1, 2, 3]])},
        ),
        "mse": (nn.mse, nn.mse_backward, {"pred": n((2, 3)), "target": n((2, 3))}),
    }


def _run(forward, backward, inputs, cotangent_rng):
    *outputs, cache = forward(**inputs)
    cotangents = [cotangent_rng.standard_normal(np.shape(y)) for y in outputs]
    dtype = next(v.dtype for v in inputs.values() if np.issubdtype(v.dtype, np.floating))
    grads = backward(*[c.astype(dtype) for c in cotangents], cache)
    return outputs, [g for g in grads if g is not None]


@pytest.mark.parametrize("name", list(_cases(np.random.default_rng(0))))
def test_float32_in_float32_out(rng, name):
    forward, backward, inputs = _cases(rng)[name]
    inputs32 = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}
    out64, grads64 = _run(forward, backward, inputs, np.random.default_rng(5))
    out32, grads32 = _run(forward, backward, inputs32, np.random.default_rng(5))
    assert len(grads32) == len(grads64) > 0
    for a32, a64 in zip(out32 + grads32, out64 + grads64):
        assert a32.dtype == np.float32, name
        scale = max(float(np.abs(a64).max()), 1.0)
        np.testing.assert_allclose(a32, a64, rtol=0, atol=2e-5 * scale)
