"""Building blocks, each a pure forward/backward pair: ``y, cache = op(...)`` and
``dx, *dparams = op_backward(dy, cache)``. ``gradcheck`` checks any such pair."""

from ref.nn.gradcheck import GradcheckError, GradcheckReport, gradcheck
from ref.nn.linear import linear, linear_backward

__all__ = ["gradcheck", "GradcheckError", "GradcheckReport", "linear", "linear_backward"]
