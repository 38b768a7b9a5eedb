"""A small decoder-only language model: the scaffold the lessons train their mixers in.

    h = Embedding(tokens)                                    (B, T, D)
    h = block_L(... block_1(h))                              each a residual mixer block
    logits = RMSNorm(h) W_head     (W_head = W_embed^T when the head is tied)      (B, T, vocab)

Blocks come from a registry, ``BLOCKS``: a name maps to a :class:`BlockSpec` ``(init, forward,
backward, step)``:

- ``init(rng, D, *, dtype, **kwargs) -> params``
- ``forward(params, x, **options) -> (y, cache)``, x and y (B, T, D)
- ``backward(params, cache, dy) -> (dx, grads)``
- ``step(params, x_t, state) -> (y_t, state)`` (optional): one token of constant-memory decoding,
  ``state=None`` at the start; needed only by :func:`lm_decode`.
- ``aux_loss`` (default False): the block adds an auxiliary loss of its own to the model's loss
  (a mixture's load-balancing loss). Its ``forward`` then returns ``(y, aux_loss, cache)`` and its
  ``backward(params, cache, dy, daux) -> (dx, grads)`` takes the gradient of that scalar too.
  :func:`lm_forward` sums the blocks' aux losses (``LMCache.aux_loss``), :func:`lm_loss` adds
  the sum to the cross-entropy and :func:`lm_loss_and_grads` sends ``daux = 1`` back to each.

Registered here: ``"gla"`` (``ref.models.gla``), ``"retnet"`` (``ref.models.retnet``),
``"linear"``, plain linear attention: the GLA block whose layer has neither the forget gate nor the
output gate, ``"mom"`` (``ref.models.mom``, with its load-balancing loss), ``"qlstm"``
(``ref.models.qlstm``, the Languini quasi-LSTM), ``"mamba"`` (``ref.models.mamba``), ``"mamba2"``
(``ref.models.mamba2``), and softmax attention: ``"llama"`` (RoPE, GQA, SwiGLU) and ``"gpt2"``
(``ref.models.transformer``). Another mixer plugs in with ``register_block(name, init, forward,
backward, step)``.

Parameters::

    embed (vocab, D)
    blocks: a list, entry i = {kind: block params}, e.g. [{"gla": {...}}, {"retnet": {...}}]
    norm: {weight (D,)}
    head (D, vocab)            absent when tied to the embedding

The block kind is the key of each entry, so ``lm_forward(params, tokens)`` needs no configuration
and hybrid stacks are just lists of different kinds. Initialisation: embedding and head
normal(0.02) (FLA's ``initializer_range``), blocks by their own ``init``.

Training: :func:`lm_loss_and_grads` has the signature ``ref.train.train`` calls,
``(params, batch, rng) -> (loss, grads)``, with the mean cross-entropy over the positions of
``batch.loss_mask`` (a ``ref.tasks.Batch``) or over every position (an ``(inputs, targets)`` pair,
as ``ref.tasks.lm_batches`` yields)::

    params = init_lm(rng, vocab_size=task.vocab_size, D=32, n_layers=2, block="gla")
    params, _, history = train(params, lm_loss_and_grads, lambda rng, s: task.sample(rng, 32),
                               steps=300, rng=rng, lr=3e-3)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ref import checks
from ref.models.gla import (
    check_dtype,
    check_rng,
    gla_block,
    gla_block_backward,
    gla_block_step,
    init_gla_block,
    normal,
)
from ref.models.mamba import init_mamba_block, mamba_block, mamba_block_backward, mamba_block_step
from ref.models.mamba2 import init_mamba2_block, mamba2_block, mamba2_block_backward, mamba2_block_step
from ref.models.mom import init_mom_block, mom_block, mom_block_backward, mom_block_step
from ref.models.qlstm import init_qlstm_block, qlstm_block, qlstm_block_backward, qlstm_block_step
from ref.models.retnet import init_retnet_block, retnet_block, retnet_block_backward, retnet_block_step
from ref.models.transformer import (
    gpt2_block,
    gpt2_block_backward,
    gpt2_block_step,
    init_gpt2_block,
    init_llama_block,
    llama_block,
    llama_block_backward,
    llama_block_step,
)
from ref.nn import (
    _validate,
    cross_entropy,
    cross_entropy_backward,
    embedding,
    embedding_backward,
    host_backend,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
)

__all__ = [
    "BlockSpec",
    "BLOCKS",
    "LMCache",
    "register_block",
    "init_linear_block",
    "init_lm",
    "lm_forward",
    "lm_backward",
    "lm_loss",
    "lm_loss_and_grads",
    "lm_decode",
]

NORM_EPS = 1e-6  # the final RMSNorm (FLA)
INIT_STD = 0.02  # embedding and head
IGNORE_INDEX = -100  # targets outside the loss mask


class BlockSpec(NamedTuple):
    """How the scaffold builds, runs and differentiates one kind of block (see the module docstring)."""

    init: Callable
    forward: Callable
    backward: Callable
    step: Callable | None = None
    aux_loss: bool = False


BLOCKS: dict[str, BlockSpec] = {}


def register_block(
    name: str, init, forward, backward, step=None, *, aux_loss: bool = False, replace: bool = False
) -> BlockSpec:
    """Make a block kind available to :func:`init_lm` and :func:`lm_forward` as ``name``;
    ``aux_loss=True`` for a block whose forward also returns an auxiliary loss (module docstring)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name: expected a non-empty string without '/' (it becomes a parameter path), got {name!r}")
    for role, fn in (("init", init), ("forward", forward), ("backward", backward)):
        if not callable(fn):
            raise ValueError(f"{role}: expected a callable, got {fn!r}")
    if step is not None and not callable(step):
        raise ValueError(f"step: expected a callable or None, got {step!r}")
    if not isinstance(aux_loss, bool):
        raise ValueError(f"aux_loss: expected True or False, got {aux_loss!r}")
    if name in BLOCKS and not replace:
        raise ValueError(f"name: block {name!r} is already registered (pass replace=True to override it)")
    BLOCKS[name] = BlockSpec(init, forward, backward, step, aux_loss)
    return BLOCKS[name]


def init_linear_block(rng: np.random.Generator, D: int, num_heads: int = 4, **kwargs) -> dict:
    """The ``"linear"`` block: a GLA block without the forget gate (no decay: S_t = S_{t-1} +
    k_t^T v_t) and without the output gate."""
    return init_gla_block(rng, D, num_heads, decay_gate=False, output_gate=False, **kwargs)


register_block("gla", init_gla_block, gla_block, gla_block_backward, gla_block_step)
register_block("retnet", init_retnet_block, retnet_block, retnet_block_backward, retnet_block_step)
register_block("linear", init_linear_block, gla_block, gla_block_backward, gla_block_step)
register_block("mom", init_mom_block, mom_block, mom_block_backward, mom_block_step, aux_loss=True)
register_block("qlstm", init_qlstm_block, qlstm_block, qlstm_block_backward, qlstm_block_step)
# softmax attention: "llama" carries its positions by RoPE; "gpt2" here has none (its learned
# positions live in ref.models.transformer's GPT-2 LM), so use it only where position comes from
# content or from other blocks
register_block("mamba", init_mamba_block, mamba_block, mamba_block_backward, mamba_block_step)
register_block("mamba2", init_mamba2_block, mamba2_block, mamba2_block_backward, mamba2_block_step)
register_block("llama", init_llama_block, llama_block, llama_block_backward, llama_block_step)
register_block("gpt2", init_gpt2_block, gpt2_block, gpt2_block_backward, gpt2_block_step)


# ------------------------------------------------------------------------------------------------


def init_lm(
    rng: np.random.Generator,
    vocab_size: int,
    D: int,
    n_layers: int,
    block="gla",
    *,
    tied: bool = False,
    dtype=np.float64,
    per_block: dict | None = None,
    **block_kwargs,
) -> dict:
    """Parameters of the model. ``block``: a registered kind for every layer, or a list of
    ``n_layers`` kinds (a hybrid). ``block_kwargs`` go to every block's ``init`` (e.g.
    ``num_heads=2``), ``per_block[kind]`` (a dict of keyword arguments) to the blocks of that kind
    only (e.g. ``per_block={"gla": {"gate_rank": 4}}``). ``tied``: the head is the transposed
    embedding (no ``head`` parameter)."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    V = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    L = checks.positive_int(n_layers, "n_layers")
    kinds = [block] * L if isinstance(block, str) else list(block) if isinstance(block, (list, tuple)) else None
    if kinds is None or len(kinds) != L:
        raise ValueError(f"block: expected a block name or a list of n_layers = {L} names, got {block!r}")
    for kind in kinds:
        checks.one_of(kind, "block", tuple(BLOCKS))
    if not isinstance(tied, bool):
        raise ValueError(f"tied: expected True or False, got {tied!r}")
    per_block = {} if per_block is None else per_block
    if not isinstance(per_block, dict) or not all(isinstance(v, dict) for v in per_block.values()):
        raise ValueError(f"per_block: expected a dict {{kind: {{keyword: value}}}}, got {per_block!r}")
    for kind in per_block:
        checks.one_of(kind, "per_block", tuple(BLOCKS))
    params = {
        "embed": normal(rng, (V, D), INIT_STD, dtype),
        "blocks": [
            {kind: BLOCKS[kind].init(rng, D, dtype=dtype, **{**block_kwargs, **per_block.get(kind, {})})}
            for kind in kinds
        ],
        "norm": {"weight": np.ones(D, dtype)},
    }
    if not tied:
        params["head"] = normal(rng, (D, V), INIT_STD, dtype)
    return params


def _check_lm(params) -> None:
    if not isinstance(params, dict) or not {"embed", "blocks", "norm"} <= set(params) <= {
        "embed",
        "blocks",
        "norm",
        "head",
    }:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a language model {{'embed', 'blocks', 'norm'[, 'head']}}, got {got}")
    if not isinstance(params["blocks"], list):
        raise ValueError(f"params/blocks: expected a list of blocks, got {type(params['blocks']).__name__}")


def _block_kind(entry, i: int) -> str:
    """The registered kind of blocks[i], which must be a one-key dict {kind: params}."""
    if not isinstance(entry, dict) or len(entry) != 1:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"params/blocks/{i}: expected a one-key dict {{kind: block params}}, got {got}")
    (kind,) = entry
    if kind not in BLOCKS:
        raise ValueError(f"params/blocks/{i}: unknown block kind {kind!r}; registered: {', '.join(BLOCKS)}")
    return kind


def _check_tokens(tokens, name: str = "tokens") -> np.ndarray:
    tokens = _validate.int_array(tokens, name)
    if tokens.ndim != 2:
        raise ValueError(f"{name}: expected 2 axes (B, T), got shape {tokens.shape}")
    checks.nonempty_time(tokens.shape[1], name)
    return tokens


def _head(params, n):
    """logits = n W_head, with W_head = W_embed^T when tied. Returns (logits, cache)."""
    W = params["head"] if "head" in params else params["embed"].T  # (D, vocab)
    return linear(n, W)


class LMCache(NamedTuple):
    """What :func:`lm_forward` keeps for :func:`lm_backward`; ``aux_loss`` is the sum of the
    auxiliary losses of the blocks that have one (0.0 when none does)."""

    embed: tuple
    blocks: list
    norm: tuple
    head: tuple
    shape: tuple
    dtype: np.dtype
    aux_loss: float = 0.0


def lm_forward(params: dict, tokens: np.ndarray, **block_options):
    """Logits (B, T, vocab) for token ids (B, T). ``block_options`` go to every block's forward
    (e.g. ``mode="recurrent"``, ``chunk_size=16``). Returns ``(logits, cache)``; the blocks'
    auxiliary losses, summed, are ``cache.aux_loss``."""
    _check_lm(params)
    tokens = _check_tokens(tokens)
    backend = host_backend(block_options.get("backend", "numpy"))
    h, c_embed = embedding(tokens, params["embed"], backend=backend)  # (B, T, D)
    c_blocks = []
    aux_loss = 0.0
    for i, entry in enumerate(params["blocks"]):
        kind = _block_kind(entry, i)
        if BLOCKS[kind].aux_loss:
            h, aux, c = BLOCKS[kind].forward(entry[kind], h, **block_options)  # (B, T, D), a float
            aux_loss += float(aux)
        else:
            h, c = BLOCKS[kind].forward(entry[kind], h, **block_options)  # (B, T, D)
        c_blocks.append(c)
    n, c_norm = rms_norm(h, params["norm"]["weight"], eps=NORM_EPS, backend=backend)
    logits, c_head = _head(params, n)  # (B, T, vocab)
    return logits, LMCache(c_embed, c_blocks, c_norm, c_head, logits.shape, logits.dtype, aux_loss)


def lm_backward(params: dict, cache, dlogits: np.ndarray, daux=None) -> dict:
    """Gradients of every parameter, a tree shaped like ``params`` (the token ids get none), from
    dlogits and ``daux``, the gradient of ``cache.aux_loss`` (None: 0, the logits' gradient alone)."""
    c_embed, c_blocks, c_norm, c_head, shape, dtype, _ = cache
    dlogits = _validate.cotangent(dlogits, "dlogits", shape, dtype, "(B, T, vocab)")
    if isinstance(daux, np.ndarray) and daux.shape == ():
        daux = daux.item()
    daux = None if daux is None else _validate.real(daux, "daux")
    g = {}
    dn, dW_head, _ = linear_backward(dlogits, c_head)  # dW_head (D, vocab)
    dh, dw = rms_norm_backward(dn, c_norm)
    g["norm"] = {"weight": dw}
    g["blocks"] = [None] * len(c_blocks)
    for i in range(len(c_blocks) - 1, -1, -1):
        (kind,) = params["blocks"][i]
        if BLOCKS[kind].aux_loss:  # the sum sends daux to every block's aux loss
            dh, grads = BLOCKS[kind].backward(params["blocks"][i][kind], c_blocks[i], dh, daux)
        else:
            dh, grads = BLOCKS[kind].backward(params["blocks"][i][kind], c_blocks[i], dh)
        g["blocks"][i] = {kind: grads}
    _, dembed = embedding_backward(dh, c_embed)
    if "head" in params:
        g["head"] = dW_head
        g["embed"] = dembed
    else:
        g["embed"] = dembed + dW_head.T  # the tied embedding is used twice: its gradients add
    return {key: g[key] for key in params}


def _unpack_batch(batch):
    """(inputs, targets with IGNORE_INDEX outside the loss mask) from a Batch or a tuple."""
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        inputs, targets, mask = batch.inputs, batch.targets, getattr(batch, "loss_mask", None)
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        inputs, targets, mask = (*batch, None)[:3]
    else:
        raise ValueError(
            f"batch: expected a ref.tasks.Batch or a tuple (inputs, targets[, loss_mask]), got {type(batch).__name__}"
        )
    inputs = _check_tokens(inputs, "inputs")
    targets = _validate.int_array(targets, "targets")
    checks.same_shape(targets, "targets", inputs.shape, "(B, T)", "the shape of inputs")
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise ValueError(f"loss_mask: expected a bool array, got {getattr(mask, 'dtype', type(mask).__name__)}")
        checks.same_shape(mask, "loss_mask", inputs.shape, "(B, T)", "the shape of inputs")
        targets = np.where(mask, targets, IGNORE_INDEX)  # (B, T)
    return inputs, targets


def lm_loss(params: dict, batch, **block_options):
    """Mean next-token cross-entropy over the masked positions, plus the blocks' auxiliary losses
    (``c_model.aux_loss``; none for most blocks). Returns ``(loss, cache)``."""
    inputs, targets = _unpack_batch(batch)
    logits, c_model = lm_forward(params, inputs, **block_options)
    loss, c_loss = cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    if c_model.aux_loss:
        loss = np.asarray(loss + c_model.aux_loss, dtype=loss.dtype)  # a 0-d array, as the cross-entropy
    return loss, (c_model, c_loss)


def lm_loss_and_grads(params: dict, batch, rng: np.random.Generator | None = None, **block_options):
    """``(loss, grads)`` for ``ref.train.train``; ``rng`` is unused (the model has no dropout)."""
    loss, (c_model, c_loss) = lm_loss(params, batch, **block_options)
    dlogits, _ = cross_entropy_backward(1.0, c_loss)
    return float(loss), lm_backward(params, c_model, dlogits, daux=1.0)


def lm_decode(params: dict, tokens: np.ndarray, states: list | None = None, **step_options):
    """The recurrent path: feed ``tokens`` (B, T) one at a time through every block's ``step``,
    carrying one state per block (constant memory in T). Returns ``(logits (B, T, vocab),
    states)``; pass ``states`` back to continue the same sequences. ``step_options`` go to every
    block's step (e.g. ``rotary=True`` for RetNet blocks trained with it). Equals
    :func:`lm_forward` with the same options."""
    _check_lm(params)
    tokens = _check_tokens(tokens)
    kinds = [_block_kind(entry, i) for i, entry in enumerate(params["blocks"])]
    for i, kind in enumerate(kinds):
        if BLOCKS[kind].step is None:
            raise ValueError(f"params/blocks/{i}: block kind {kind!r} has no step function, so it cannot decode")
    if states is None:
        states = [None] * len(kinds)
    elif not isinstance(states, list) or len(states) != len(kinds):
        raise ValueError(
            f"states: expected None or a list of {len(kinds)} block states (from lm_decode), got {states!r:.80}"
        )
    states = list(states)
    x, _ = embedding(tokens, params["embed"])  # (B, T, D)
    out = []
    for t in range(tokens.shape[1]):
        h = x[:, t]  # (B, D)
        for i, kind in enumerate(kinds):
            h, states[i] = BLOCKS[kind].step(params["blocks"][i][kind], h, states[i], **step_options)
        n, _ = rms_norm(h, params["norm"]["weight"], eps=NORM_EPS)
        logits_t, _ = _head(params, n)  # (B, vocab)
        out.append(logits_t)
    return np.stack(out, axis=1), states
