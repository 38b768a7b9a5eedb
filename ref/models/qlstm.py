"""The Languini Kitchen's quasi-LSTM (Stanić et al., 2023, arXiv 2309.11197): a multi-head qLSTM
layer inside a GPT-style pre-LN block.

The layer (B batch, T time, D model width, H heads of K channels each; Languini's
``MultiHeadQuasiLSTMCell``):

    fx = x W_f + b_f,  ix = x W_i + b_i,  zx = x W_z + b_z,  ox = x W_o + b_o      (B, T, H, K)   (1)
    h, c_T = qLSTM(fx, ix, zx, ox, c_{-1})        (ref.mixers.qlstm, per channel)                 (2)
    y = concat_heads(h) W_post + b_post                                            (B, T, D)      (3)

where the cell (2) is f = sigmoid(fx + 1), u = sigmoid(ix) tanh(zx), o = sigmoid(ox),
c_t = f_t c_{t-1} + u_t, h_t = o_t tanh(c_t): no gate reads the state, so (1) and (3) are plain
matrix products over all steps at once, and only the per-channel gated scan is sequential. Heads
only group channels: the cell is elementwise, and the post-head layer (3) mixes them again.

The block (Languini's ``Block``, GPT-2's layout with the attention replaced):

    h = x + qLSTM(LN(x)),     y = h + MLP(LN(h)),     MLP(z) = gelu_tanh(z W_fc + b_fc) W_proj + b_proj   (4)

Sources and choices (languini-kitchen ``languini/projects/lstm/lib.py``):
- four input projections with biases, weights normal(0.02), biases 0; the forget gate adds 1.0
  to its pre-activation (``torch.sigmoid(fx + 1.0)``); the post-head projection has a bias and is
  normal(0.02); Languini uses it for any number of heads in the quasi-LSTM.
- LayerNorm eps 1e-5 with weight and bias; the MLP is GPT-2's (tanh GELU, biases), its output
  projection normal(0.02 / sqrt(2 N)) for N layers (``num_layers``). The MLP width is a config
  value in Languini (``mlp_dim``); ``mlp_hidden`` here, 4D by default as GPT-2.
- the layer's state is the cell state c (B, H, K); Languini also carries the last h, which
  the quasi-LSTM never reads (its gates see only x), so it is not part of the state here.
- Languini's model scales the token embedding by sqrt(D) and has no position embedding; that is
  the language model's business (``ref.models.lm``), not the block's.
- ``mode``: "block_parallel" (default; Languini's fast form, blocks of ``block_length`` steps) or
  "recurrent" (the loop); the same function. For hybrid stacks in ``ref.models.lm``, "chunked"
  is accepted as "block_parallel" with ``block_length = chunk_size``, and "parallel" as one block
  of the whole sequence.

Parameters of the layer (sizes are read from the shapes)::

    W_f, W_i, W_z, W_o (D, H, K)    b_f, b_i, b_z, b_o (H, K)    W_post (H*K, D)    b_post (D,)

A block: ``{"norm1": {"weight", "bias"}, "qlstm": <layer>, "norm2": {...}, "mlp": {W_fc (D, F),
b_fc (F,), W_proj (F, D), b_proj (D,)}}``.

Conventions as ``ref.models.gla``: ``forward(params, x, **options) -> (y, cache)``,
``backward(params, cache, dy) -> (dx, grads)`` with ``grads`` shaped like ``params``;
``*_step(params, x_t, state) -> (y_t, state)`` decodes one token (``state=None`` at the start).
``ref.models.lm`` registers the block as ``"qlstm"``.
"""

from __future__ import annotations

import math

import numpy as np

from ref import checks
from ref.mixers.qlstm import FORGET_BIAS, FORMS
from ref.models.gla import (
    INIT_STD,
    check_cotangent,
    check_dtype,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    normal,
    split_heads,
)
from ref.models.transformer import gpt2_mlp, gpt2_mlp_backward, init_gpt2_mlp
from ref.nn import layer_norm, layer_norm_backward, linear, linear_backward

__all__ = [
    "BLOCK_LENGTH",
    "MODES",
    "init_qlstm_layer",
    "qlstm_layer",
    "qlstm_layer_backward",
    "qlstm_layer_step",
    "init_qlstm_block",
    "qlstm_block",
    "qlstm_block_backward",
    "qlstm_block_step",
]

BLOCK_LENGTH = 32  # Languini's example configuration (block_length = 32)
NORM_EPS = 1e-5  # Languini's LayerNorm
MODES = ("block_parallel", "recurrent", "chunked", "parallel")
GATES = ("f", "i", "z", "o")


# ------------------------------------------------------------------------------------------------
# the layer (1)-(3)


def init_qlstm_layer(
    rng: np.random.Generator, D: int, num_heads: int = 4, *, head_dim: int | None = None, dtype=np.float64
) -> dict:
    """Parameters of a qLSTM layer of width D with ``num_heads`` heads of ``head_dim`` channels
    (default D / num_heads). Weights normal(0.02), biases zero (Languini)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    K = split_heads(D, H, "D", "model width") if head_dim is None else checks.positive_int(head_dim, "head_dim")
    p = {}
    for g in GATES:
        p["W_" + g] = normal(rng, (D, H, K), INIT_STD, dtype)
        p["b_" + g] = np.zeros((H, K), dtype)
    p["W_post"] = normal(rng, (H * K, D), INIT_STD, dtype)
    p["b_post"] = np.zeros(D, dtype)
    return p


def _layer_spec(params, where: str):
    """(D, H, K, dtype) after checking every parameter's shape and dtype."""
    if not isinstance(params, dict) or "W_f" not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a qLSTM layer with parameters W_f, b_f, ..., W_post, b_post, got {got}")
    W_f = checks.float_array(params["W_f"], f"{where}/W_f", ndim=3, dims="(D, H, K)")
    D, H, K = W_f.shape
    spec = {}
    for g in GATES:
        spec["W_" + g] = ((D, H, K), "(D, H, K)")
        spec["b_" + g] = ((H, K), "(H, K)")
    spec["W_post"] = ((H * K, D), "(H*K, D)")
    spec["b_post"] = ((D,), "(D,)")
    check_params(params, where, spec, W_f.dtype)
    return D, H, K, W_f.dtype


def _options(mode, block_length, chunk_size, T):
    """(form, block length) for the mixer from the layer's options."""
    checks.one_of(mode, "mode", MODES)
    if mode == "recurrent":
        return "recurrent", None
    if mode == "parallel":
        return "block_parallel", T
    if mode == "chunked" and block_length is None:
        block_length = chunk_size
    return "block_parallel", checks.positive_int(BLOCK_LENGTH if block_length is None else block_length, "block_length")


def _qlstm_layer(params, x, mode, block_length, chunk_size, initial_state, backend):
    """The layer (1)-(3); returns ``(y, c_T, cache)`` with c_T (B, H, K)."""
    D, H, K, dtype = _layer_spec(params, "params")
    x = checks.sequence_input(x, "x", D, dtype, "the rows of W_f")
    B, T, _ = x.shape
    form, L = _options(mode, block_length, chunk_size, T)
    if initial_state is not None:
        initial_state = checks.state_part(initial_state, "state", (B, H, K), "(B, H, K)", dtype)
        initial_state = initial_state.reshape(B, H * K)  # (B, H*K)
    c = {"x_shape": x.shape, "dtype": dtype, "H": H, "K": K, "form": form}
    # (1) the four gate pre-activations, every step at once
    pre = []
    for g in GATES:
        a, c["lin_" + g] = head_linear(x, params["W_" + g], params["b_" + g])  # (B, T, H, K)
        pre.append(a.reshape(B, T, H * K))  # (B, T, H*K): the cell is elementwise over channels
    # (2) the cell
    forward, _ = FORMS[form]
    options = {"forget_bias": FORGET_BIAS, "backend": backend}
    if form == "block_parallel":
        options["block_length"] = L
    h, ct, c["cell"] = forward(*pre, initial_state, **options)  # h (B, T, H*K), ct (B, H*K)
    # (3) y = concat_heads(h) W_post + b_post
    y, c["post"] = linear(h, params["W_post"], params["b_post"])  # (B, T, D)
    return y, ct.reshape(B, H, K), c


def qlstm_layer(
    params: dict,
    x: np.ndarray,
    *,
    mode: str = "block_parallel",
    block_length: int | None = None,
    chunk_size: int | None = None,
    backend: str = "numpy",
):
    """The qLSTM layer on x (B, T, D) from a zero cell state. ``mode`` picks the cell's form
    (module docstring); ``block_length`` (default 32) its blocks; ``backend`` where the scan runs
    ("numpy", "numba", "cuda", "auto"). Returns ``(y, cache)`` with y (B, T, D)."""
    y, _, cache = _qlstm_layer(params, x, mode, block_length, chunk_size, None, backend)
    return y, cache


def qlstm_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    B, T, _ = c["x_shape"]
    H, K = c["H"], c["K"]
    g = {}
    # (3)
    dh, g["W_post"], g["b_post"] = linear_backward(dy, c["post"])  # (B, T, H*K)
    # (2) the cell; the final state takes no gradient here
    dpre = FORMS[c["form"]][1](dh, None, c["cell"])[:4]  # dfx, dix, dzx, dox (B, T, H*K)
    # (1)
    dx = np.zeros(c["x_shape"], dy.dtype)  # (B, T, D): the sum of the four projections' paths
    for gate, d in zip(GATES, dpre):
        dx_g, g["W_" + gate], g["b_" + gate] = head_linear_backward(d.reshape(B, T, H, K), c["lin_" + gate])
        dx += dx_g
    return dx, {key: g[key] for key in params}


def qlstm_layer_step(params: dict, x_t: np.ndarray, state: np.ndarray | None = None):
    """Decode one token: x_t (B, D) and the cell state c (B, H, K) (None: zeros) -> ``(y_t, c)``.
    Constant memory whatever the length so far."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, ct, _ = _qlstm_layer(params, x_t[:, None, :], "recurrent", None, None, state, "numpy")
    return y[:, 0], ct


# ------------------------------------------------------------------------------------------------
# the block (4)


def init_qlstm_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 4,
    *,
    head_dim: int | None = None,
    mlp_hidden: int | None = None,
    num_layers: int = 1,
    dtype=np.float64,
) -> dict:
    """Parameters of the block (4). ``num_layers`` is the N of the MLP output's init std
    0.02 / sqrt(2 N) (pass the depth of the stack); LayerNorm scales 1, shifts 0."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    N = checks.positive_int(num_layers, "num_layers")
    return {
        "norm1": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "qlstm": init_qlstm_layer(rng, D, num_heads, head_dim=head_dim, dtype=dtype),
        "norm2": {"weight": np.ones(D, dtype), "bias": np.zeros(D, dtype)},
        "mlp": init_gpt2_mlp(rng, D, mlp_hidden, out_std=INIT_STD / math.sqrt(2 * N), dtype=dtype),
    }


def _check_block(params):
    if not isinstance(params, dict) or set(params) != {"norm1", "qlstm", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a block {{'norm1', 'qlstm', 'norm2', 'mlp'}}, got {got}")
    for norm in ("norm1", "norm2"):
        if not isinstance(params[norm], dict) or set(params[norm]) != {"weight", "bias"}:
            raise ValueError(f"params/{norm}: expected a LayerNorm {{'weight', 'bias'}}, got {params[norm]!r:.80}")


def _qlstm_block(params, x, mode, block_length, chunk_size, state, backend):
    _check_block(params)
    D = _layer_spec(params["qlstm"], "params/qlstm")[0]
    x = checks.sequence_input(x, "x", D, params["qlstm"]["W_f"].dtype, "the rows of W_f")
    # (4) h = x + qLSTM(LN(x))
    n1, c_n1 = layer_norm(x, params["norm1"]["weight"], params["norm1"]["bias"], eps=NORM_EPS)
    a, ct, c_mix = _qlstm_layer(params["qlstm"], n1, mode, block_length, chunk_size, state, backend)
    h = x + a
    # (4) y = h + MLP(LN(h))
    n2, c_n2 = layer_norm(h, params["norm2"]["weight"], params["norm2"]["bias"], eps=NORM_EPS)
    m, c_mlp = gpt2_mlp(params["mlp"], n2)
    return h + m, ct, (c_n1, c_mix, c_n2, c_mlp)


def qlstm_block(
    params: dict,
    x: np.ndarray,
    *,
    mode: str = "block_parallel",
    block_length: int | None = None,
    chunk_size: int | None = None,
    backend: str = "numpy",
):
    """The block (4) on x (B, T, D); options as :func:`qlstm_layer`. Returns ``(y, cache)``."""
    y, _, cache = _qlstm_block(params, x, mode, block_length, chunk_size, None, backend)
    return y, cache


def qlstm_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_mix, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_mix["x_shape"], c_mix["dtype"])
    # y = h + m: dh = dy + the path through the MLP
    dn2, g_mlp = gpt2_mlp_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2, db2 = layer_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    # h = x + a: dx = dh + the path through the qLSTM layer
    dn1, g_mix = qlstm_layer_backward(params["qlstm"], c_mix, dh)
    dx_mix, dw1, db1 = layer_norm_backward(dn1, c_n1)
    grads = {
        "norm1": {"weight": dw1, "bias": db1},
        "qlstm": g_mix,
        "norm2": {"weight": dw2, "bias": db2},
        "mlp": g_mlp,
    }
    return dh + dx_mix, grads


def qlstm_block_step(params: dict, x_t: np.ndarray, state: np.ndarray | None = None):
    """Decode one token through the block: x_t (B, D), state c (B, H, K) or None -> ``(y_t, c)``."""
    x_t = checks.float_array(x_t, "x_t", ndim=2, dims="(B, D)")
    y, ct, _ = _qlstm_block(params, x_t[:, None, :], "recurrent", None, None, state, "numpy")
    return y[:, 0], ct
