"""Yi's depth up-scaling (Young et al., *Yi: Open Foundation Models by 01.AI*, arXiv 2403.04652,
Section 7.3): make a deeper model from a trained one by duplicating a contiguous range of its blocks,
then continue pretraining.

Yi's block is the Llama block (pre-RMSNorm, grouped-query attention, SwiGLU, RoPE, no biases), which
is ``ref.models.transformer`` (``init_transformer_lm(..., arch="llama")``); this module adds only what
depth up-scaling needs on top of a trained model of that kind (B batch, T time, D width, L blocks).

The residual stream entering block l and leaving it (l = 0 .. L-1):

    h_0 = E[tokens],   h_{l+1} = block_l(h_l)                                                   (1)

How much block l changes its stream, per token, as the cosine between its input and its output:

    c_l = mean_{b, t} <h_l[b, t], h_{l+1}[b, t]> / (|h_l[b, t]| |h_{l+1}[b, t]|)                (2)

c_l close to 1 means the block's residual branch adds little in the direction orthogonal to its
input: the block nearly passes its stream through. Yi-9B was made from the 32-block Yi-6B by
duplicating blocks 12..27 (16 blocks, the half-open range [12, 28)), chosen because their c_l was
close to 1, giving 48 blocks:

    upscale(blocks, [s, e)) = blocks[0 : e] ++ copy(blocks[s : e]) ++ blocks[e : L]             (3)

so the new model runs blocks s .. e-1 twice in a row: 0, .., e-1, s, .., e-1, e, .., L-1. Every
array of the new model is a fresh copy: training it never touches the original (nor do the two
copies of a duplicated block share memory: they are separate parameters from step 0 on).

Public functions:

- :func:`residual_streams` (1): the L + 1 streams h_0 .. h_L, each (B, T, D).
- :func:`layer_cosine_similarity` (2): c_0 .. c_{L-1}, float64 (L,).
- :func:`depth_upscale` (3): the up-scaled model.
- :func:`pick_range`: the window of ``n`` consecutive blocks with the highest (or lowest) mean c_l.
- :func:`upscaled_order`: the order (3) runs the original blocks in, as a list of indices.

The model may also be GPT-2 (``arch="gpt2"``, learned positions added to h_0); the functions only
read ``params["blocks"]`` and the embeddings.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

from ref import checks
from ref.models.transformer import gpt2_block, llama_block

__all__ = ["residual_streams", "layer_cosine_similarity", "depth_upscale", "pick_range", "upscaled_order"]

_BLOCK_FORWARD = {"llama": llama_block, "gpt2": gpt2_block}


def _check_model(params) -> list:
    """The model's block kinds, after checking that it is a model of ``init_transformer_lm``."""
    if not isinstance(params, dict) or "blocks" not in params or "embed" not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a model of init_transformer_lm (with 'embed' and 'blocks'), got {got}")
    blocks = params["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"params/blocks: expected a non-empty list of blocks, got {blocks!r:.60}")
    kinds = []
    for i, entry in enumerate(blocks):
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in _BLOCK_FORWARD:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(
                f"params/blocks/{i}: expected {{kind: block params}} with kind in {sorted(_BLOCK_FORWARD)}, got {got}"
            )
        kinds.append(next(iter(entry)))
    checks.float_array(params["embed"], "params/embed", ndim=2, dims="(vocab, D)")
    return kinds


def _check_tokens(tokens, vocab: int) -> np.ndarray:
    if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu" or tokens.ndim != 2 or tokens.shape[1] < 1:
        got = f"{tokens.dtype} {tokens.shape}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ValueError(f"tokens: expected an integer array (B, T) with T >= 1, got {got}")
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise ValueError(
            f"tokens: expected ids in [0, vocab_size = {vocab}), got values in [{tokens.min()}, {tokens.max()}]"
        )
    return tokens


def residual_streams(params: dict, tokens: np.ndarray) -> list[np.ndarray]:
    """(1): the residual stream before the first block and after each block, L + 1 arrays (B, T, D)
    (the final norm and the head are not applied)."""
    kinds = _check_model(params)
    tokens = _check_tokens(tokens, params["embed"].shape[0])
    T = tokens.shape[1]
    h = params["embed"][tokens]  # (1) h_0 = E[tokens]: (B, T, D)
    if "pos_embed" in params:  # GPT-2's learned positions
        P = params["pos_embed"]
        if T > P.shape[0]:
            raise ValueError(f"tokens: expected T <= {P.shape[0]} (the rows of params/pos_embed), got T = {T}")
        h = h + P[None, :T]  # (B, T, D)
    streams = [h]
    for i, kind in enumerate(kinds):
        h, _ = _BLOCK_FORWARD[kind](params["blocks"][i][kind], h)  # (1) h_{l+1} = block_l(h_l): (B, T, D)
        streams.append(h)
    return streams


def layer_cosine_similarity(params: dict, tokens: np.ndarray) -> np.ndarray:
    """(2): for each block, the cosine between its input and output residual stream, averaged over
    the B * T tokens. Returns float64 (L,)."""
    streams = residual_streams(params, tokens)
    cos = []
    for h_in, h_out in zip(streams[:-1], streams[1:]):
        h_in, h_out = h_in.astype(np.float64), h_out.astype(np.float64)  # (B, T, D)
        dot = np.sum(h_in * h_out, axis=-1)  # (B, T)
        norms = np.linalg.norm(h_in, axis=-1) * np.linalg.norm(h_out, axis=-1)  # (B, T)
        # (2) c_l = mean over tokens of the cosine (a zero vector has cosine 0 with anything)
        cos.append(float(np.mean(np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0))))
    return np.array(cos)


def _check_range(start, stop, L: int) -> tuple[int, int]:
    for name, value in (("start", start), ("stop", stop)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name}: expected an integer block index, got {value!r}")
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= L:
        raise ValueError(
            f"start, stop: expected a non-empty range of blocks 0 <= start < stop <= L = {L} (half-open "
            f"[start, stop)), got start = {start}, stop = {stop}"
        )
    return start, stop


def upscaled_order(n_layers: int, start: int, stop: int) -> list[int]:
    """(3) as indices: the original blocks the up-scaled model runs, in order,
    ``[0, .., stop-1, start, .., stop-1, stop, .., n_layers-1]``."""
    L = checks.positive_int(n_layers, "n_layers")
    start, stop = _check_range(start, stop, L)
    return list(range(stop)) + list(range(start, stop)) + list(range(stop, L))


def depth_upscale(params: dict, start: int, stop: int) -> dict:
    """(3): a new model whose blocks are the original ones with blocks ``[start, stop)`` repeated
    right after the range (L + stop - start blocks). Every array is a fresh copy (nothing is shared
    with ``params`` or between the two copies of a block); embeddings, final norm and head are kept.
    Yi-9B from Yi-6B: ``depth_upscale(yi_6b, 12, 28)``, 32 -> 48 blocks."""
    _check_model(params)
    order = upscaled_order(len(params["blocks"]), start, stop)
    new = {key: copy.deepcopy(value) for key, value in params.items() if key != "blocks"}
    new["blocks"] = [copy.deepcopy(params["blocks"][i]) for i in order]  # one deep copy per position
    return new


def pick_range(cosines, n: int, *, highest: bool = True) -> tuple[int, int]:
    """The window ``[start, start + n)`` of n consecutive blocks whose mean cosine (2) is the highest
    (``highest=True``, Yi's choice) or the lowest; the first such window on ties."""
    try:
        c = np.asarray(cosines, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"cosines: expected a sequence of numbers (L,), got {cosines!r:.60}") from None
    c = checks.float_array(c, "cosines", ndim=1, dims="(L,)")
    n = checks.positive_int(n, "n")
    if n > len(c):
        raise ValueError(f"n: expected a window of at most L = {len(c)} blocks (the length of cosines), got {n}")
    if not isinstance(highest, bool):
        raise ValueError(f"highest: expected True or False, got {highest!r}")
    checks.finite(c, "cosines")
    means = np.convolve(c, np.ones(n) / n, mode="valid")  # mean over each window: (L - n + 1,)
    start = int(np.argmax(means) if highest else np.argmin(means))
    return start, start + n
