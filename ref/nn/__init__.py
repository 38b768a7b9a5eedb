"""Building blocks, each a pure forward/backward pair: ``y, cache = op(...)`` and
``dx, *dparams = op_backward(dy, cache)``. ``gradcheck`` checks any such pair.

Conventions shared by every op here:
- forward: ``op(x, *params, **options)`` with the options keyword-only; it returns the outputs,
  then the cache (``y, cache`` or ``y1, y2, cache``) and never modifies its inputs.
- backward: ``op_backward(dy1, [dy2, ...], cache)`` takes one cotangent per output (None for an
  extra output that does not reach the loss) and returns a tuple with one gradient per
  positional input of the forward, in order, None for an absent optional input or an integer
  one. A one-input op returns ``(dx,)``, so ``dx, *dparams = op_backward(dy, cache)`` always
  unpacks the same way.
- computation stays in the dtype of the input (float32 or float64); mixing them is an error.

One concept per module: embedding, layernorm, rmsnorm, groupnorm, batchnorm, dropout,
activations, softmax, conv1d (causal depthwise), im2col, conv2d, pool2d, losses, rope (rotary
position embedding).
"""

from ref.nn.activations import (
    gelu,
    gelu_backward,
    host_backend,
    logsigmoid,
    logsigmoid_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    softplus,
    softplus_backward,
    tanh,
    tanh_backward,
)
from ref.nn.batchnorm import batch_norm, batch_norm_backward
from ref.nn.conv1d import causal_conv1d, causal_conv1d_backward
from ref.nn.conv2d import conv2d, conv2d_backward
from ref.nn.dropout import dropout, dropout_backward
from ref.nn.embedding import embedding, embedding_backward
from ref.nn.gradcheck import GradcheckError, GradcheckReport, gradcheck
from ref.nn.groupnorm import group_norm, group_norm_backward
from ref.nn.layernorm import layer_norm, layer_norm_backward
from ref.nn.linear import linear, linear_backward
from ref.nn.losses import cross_entropy, cross_entropy_backward, mse, mse_backward
from ref.nn.pool2d import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from ref.nn.rmsnorm import rms_norm, rms_norm_backward
from ref.nn.rope import rope, rope_backward
from ref.nn.softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

__all__ = [
    "host_backend",
    "gradcheck",
    "GradcheckError",
    "GradcheckReport",
    "linear",
    "linear_backward",
    "embedding",
    "embedding_backward",
    "layer_norm",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_backward",
    "group_norm",
    "group_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "dropout",
    "dropout_backward",
    "relu",
    "relu_backward",
    "gelu",
    "gelu_backward",
    "sigmoid",
    "sigmoid_backward",
    "silu",
    "silu_backward",
    "tanh",
    "tanh_backward",
    "softplus",
    "softplus_backward",
    "logsigmoid",
    "logsigmoid_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "causal_conv1d",
    "causal_conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "mse",
    "mse_backward",
    "rope",
    "rope_backward",
]
