"""SUMA: a Shallow Untrained Multihead Attention encoder, and the fMRI-style localizer of its
language-selective units (AlKhamissi, Tuckute, Bosselut and Schrimpf, *Brain-Like Language
Processing via a Shallow Untrained Multihead Attention Network*, arXiv 2406.15109).

The model is never trained: every weight is a draw from its initialisation. It is one pre-norm
attention block, applied ``n_cycles`` times with the *same* weights (the paper's "simple form of
recurrence"; 2 cycles in the paper), over BPE tokens (B batch, T time, D width, H heads, K = D/H):

    h^0   = E[tokens]                                  token embedding, no positions          (1)
    z^c   = RMSNorm(h^(c-1))                            the block's input norm                (2)
    a^c   = Attn(z^c)        bidirectional multihead softmax attention, no biases            (3)
    h^c   = h^(c-1) + a^c                               residual, no MLP                       (4)
            c = 1 .. n_cycles, the same RMSNorm weight and the same W_q, W_k, W_v, W_o each time

Initialisation as Llama's (the official code builds SUMA from a Llama config): E, W_q, W_k, W_v,
W_o ~ normal(0, init_std) with init_std = 0.02 (``initializer_range``), the RMSNorm weight = 1.
The paper's SUMA is D = 4096 wide with 512 heads (K = 8). Without positions, (1)-(4) are
permutation-equivariant: permuting the tokens permutes the outputs (tests/models/test_suma.py).

Units and pooling (the official extraction): a stimulus's units are the outputs of the two
recorded sites of the block, the input norm z and the attention a, in the *last* cycle, taken at
the *last token* of the stimulus: 2D units per stimulus (:func:`suma_units`).

The localizer (as fMRI localizes the language network, Fedorenko et al. 2010): for every unit u, a
Welch two-sample t statistic between its responses to sentences (n_s stimuli) and to non-word
strings (n_n stimuli),

    t_u = (mean_s - mean_n) / sqrt(var_s / n_s + var_n / n_n)    (variances with ddof = 1)      (5)

then the units with the largest t_u are "language-selective" (:func:`localize`: the top
``fraction`` of the units, or the top ``k``; the official code keeps k = 4096 units, about 1% of
Llama-2-7B's units).
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.models.transformer import attention_layer, init_attention_layer
from ref.nn.rmsnorm import rms_norm

__all__ = [
    "INIT_STD",
    "N_CYCLES",
    "init_suma",
    "suma_layer",
    "suma_forward",
    "pad_batch",
    "last_token",
    "suma_units",
    "welch_t",
    "top_units",
    "localize",
]

INIT_STD = 0.02  # Llama's initializer_range, the paper's initialisation
N_CYCLES = 2  # the paper's SUMA applies its one block twice


def init_suma(
    rng: np.random.Generator,
    vocab_size: int,
    D: int = 4096,
    num_heads: int = 512,
    *,
    init_std: float = INIT_STD,
    dtype=np.float64,
) -> dict:
    """Random (and final: SUMA is untrained) parameters ``{"embed": (V, D), "norm": {"weight": (D,)},
    "attn": <attention layer>}``. Weights normal(0, ``init_std``), the norm weight ones."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    V = checks.positive_int(vocab_size, "vocab_size")
    D = checks.positive_int(D, "D")
    H = checks.positive_int(num_heads, "num_heads")
    if D % H:
        raise ValueError(f"num_heads: expected a divisor of D = {D} (K = D / num_heads per head), got {H}")
    init_std = checks.positive_float(init_std, "init_std")
    dtype = np.dtype(dtype)
    if dtype not in checks.FLOAT_DTYPES:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    embed = (init_std * rng.standard_normal((V, D))).astype(dtype)  # (V, D)
    attn = init_attention_layer(rng, D, H, std=init_std, dtype=dtype)  # W_q, W_k, W_v (D, H, K), W_o (D, D)
    return {"embed": embed, "norm": {"weight": np.ones(D, dtype)}, "attn": attn}


def _check_params(params) -> tuple[int, int, np.dtype]:
    if not isinstance(params, dict) or set(params) != {"embed", "norm", "attn"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected the dict of init_suma with keys ['attn', 'embed', 'norm'], got {got}")
    embed = checks.float_array(params["embed"], "params/embed", ndim=2, dims="(V, D)")
    return embed.shape[0], embed.shape[1], embed.dtype


def _check_tokens(tokens, padding_mask, V: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu" or tokens.ndim != 2:
        got = f"{tokens.dtype} array of shape {tokens.shape}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ValueError(f"tokens: expected an integer array (B, T), got {got}")
    B, T = tokens.shape
    if B == 0 or T == 0:
        raise ValueError(f"tokens: expected at least one stimulus and one token, got shape {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(f"tokens: expected ids in [0, {V}) (the rows of params/embed), got [{tokens.min()}, {tokens.max()}]")
    if padding_mask is None:
        return tokens, np.ones((B, T), dtype=bool)
    if not isinstance(padding_mask, np.ndarray) or padding_mask.dtype != np.bool_:
        got = getattr(padding_mask, "dtype", type(padding_mask).__name__)
        raise ValueError(f"padding_mask: expected a bool array (B, T), True = a real token, got {got}")
    checks.same_shape(padding_mask, "padding_mask", (B, T), "(B, T)", "from tokens")
    if not padding_mask.any(axis=1).all():
        raise ValueError("padding_mask: expected at least one real token (True) in every row, got an empty row")
    return tokens, padding_mask


def _check_cycles(n_cycles) -> int:
    if isinstance(n_cycles, bool) or not isinstance(n_cycles, numbers.Integral) or n_cycles < 1:
        raise ValueError(f"n_cycles: expected a positive integer (the paper: 2), got {n_cycles!r}")
    return int(n_cycles)


def suma_layer(params: dict, h: np.ndarray, padding_mask: np.ndarray | None = None):
    """One cycle (2)-(4) on h (B, T, D). Returns ``(h_next, z, a)``: the new residual stream, the
    norm's output z and the attention's output a (the two recorded sites)."""
    _check_params(params)
    # (2) z = RMSNorm(h)
    z, _ = rms_norm(h, params["norm"]["weight"])  # (B, T, D)
    # (3) bidirectional multihead attention over the real tokens
    a, _ = attention_layer(params["attn"], z, mask="bidirectional", padding_mask=padding_mask)  # (B, T, D)
    # (4) residual, no MLP
    return h + a, z, a


def suma_forward(params: dict, tokens: np.ndarray, padding_mask: np.ndarray | None = None, *, n_cycles: int = N_CYCLES):
    """(1)-(4): the token embedding, then the same block ``n_cycles`` times. Returns ``(h, sites)``:
    the final residual stream (B, T, D) and, per cycle, ``{"norm": z (B, T, D), "attn": a (B, T, D)}``."""
    V, _, _ = _check_params(params)
    tokens, mask = _check_tokens(tokens, padding_mask, V)
    n_cycles = _check_cycles(n_cycles)
    # (1) no positional embedding
    h = params["embed"][tokens]  # (B, T, D)
    sites = []
    for _ in range(n_cycles):
        h, z, a = suma_layer(params, h, mask)  # the same params every cycle: shared weights
        sites.append({"norm": z, "attn": a})
    return h, sites


def pad_batch(sequences, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id sequences to one array. Returns ``(tokens (B, T) int64, padding_mask (B, T)
    bool)``, True at the real tokens."""
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("sequences: expected at least one token sequence, got none")
    for i, s in enumerate(seqs):
        if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu":
            raise ValueError(f"sequences[{i}]: expected a non-empty 1-d integer sequence, got {s.dtype} shape {s.shape}")
    T = max(s.size for s in seqs)
    tokens = np.full((len(seqs), T), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(seqs), T), dtype=bool)  # (B, T)
    for i, s in enumerate(seqs):
        tokens[i, : s.size] = s
        mask[i, : s.size] = True
    return tokens, mask


def last_token(x: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
    """x (B, T, D) at each row's last real token (padding on the right): (B, D)."""
    lengths = padding_mask.sum(axis=1)  # (B,)
    return x[np.arange(x.shape[0]), lengths - 1]  # (B, D)


def suma_units(
    params: dict,
    sequences,
    *,
    n_cycles: int = N_CYCLES,
    batch_size: int = 64,
) -> np.ndarray:
    """The 2D units of every stimulus: [z, a] of the last cycle at the stimulus's last token, as the
    official extraction records them. ``sequences``: token id sequences (one per stimulus), run in
    batches of ``batch_size``. Returns (n_stimuli, 2D)."""
    batch_size = checks.positive_int(batch_size, "batch_size")
    seqs = list(sequences)
    if not seqs:
        raise ValueError("sequences: expected at least one token sequence, got none")
    out = []
    for start in range(0, len(seqs), batch_size):
        tokens, mask = pad_batch(seqs[start : start + batch_size])
        _, sites = suma_forward(params, tokens, mask, n_cycles=n_cycles)
        last = sites[-1]
        out.append(np.concatenate([last_token(last["norm"], mask), last_token(last["attn"], mask)], axis=1))  # (b, 2D)
    return np.concatenate(out, axis=0)  # (n_stimuli, 2D)


def welch_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(5): Welch's t per unit between samples a (n_a, U) and b (n_b, U), as
    ``scipy.stats.ttest_ind(a, b, equal_var=False).statistic``. A unit with zero variance in both
    samples has t = nan (0/0) or +-inf, as scipy."""
    a = checks.float_array(a, "a", ndim=2, dims="(n_a, U)")
    b = checks.float_array(b, "b", ndim=2, dims="(n_b, U)")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"b: expected {a.shape[1]} units (the columns of a), got shape {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"a, b: expected at least 2 samples each (ddof = 1 variances), got {a.shape[0]} and {b.shape[0]}")
    # (5) the standard error of the difference of means, each variance with ddof = 1
    se = np.sqrt(a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0])  # (U,)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a.mean(axis=0) - b.mean(axis=0)) / se  # (U,)


def top_units(t: np.ndarray, *, fraction: float | None = None, k: int | None = None) -> np.ndarray:
    """Boolean mask of the top units by t: the ``k`` largest, or the top ``fraction`` (k =
    max(1, round(fraction * U))). nan never ranks; ties are broken by the lower unit index."""
    t = checks.float_array(t, "t", ndim=1, dims="(U,)")
    U = t.shape[0]
    if (fraction is None) == (k is None):
        raise ValueError(f"fraction, k: expected exactly one of them, got fraction={fraction!r}, k={k!r}")
    if k is None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
            raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
        k = max(1, int(round(fraction * U)))
    k = checks.positive_int(k, "k")
    if k > U:
        raise ValueError(f"k: expected at most the number of units U = {U}, got {k}")
    key = np.where(np.isnan(t), -np.inf, t)
    order = np.argsort(-key, kind="stable")  # (U,) largest first, ties by index
    mask = np.zeros(U, dtype=bool)
    mask[order[:k]] = True
    return mask


def localize(sentences: np.ndarray, non_words: np.ndarray, *, fraction: float | None = None, k: int | None = None):
    """The localizer: Welch t (5) of every unit's responses to sentences (n_s, U) vs non-words
    (n_n, U), then the top units. Returns ``(mask (U,) bool, t (U,))``."""
    t = welch_t(sentences, non_words)
    return top_units(t, fraction=fraction, k=k), t
