"""RegBench: in-context learning of regular languages drawn from random finite automata.

After Akyürek, Wang, Kim and Andreas, *In-Context Language Learning: Architectures and
Algorithms* (arXiv 2401.12973, the RegBench benchmark; official code berlino/seq_icl). Every example is a *fresh*
random DFA; the example shows several strings sampled from it, joined by a separator, and a
language model must continue them: it can only do well by inferring the language in context.

The automaton (the paper's benchmark description; ``RandomDFASampler`` of the official code)::

    states       Q = {0, ..., S-1}, start state 0, S drawn uniformly from [min_states, max_states]
    alphabet     Σ: alphabet_size symbols drawn without replacement from the num_symbols of the
                 vocabulary (the official code uses |Σ| = S, our default)
    edges        each state q gets k_q ~ U{1, ..., min(max_out_edges, |Σ|)} outgoing edges with
                 distinct symbols from Σ, each to a uniformly random state: δ(q, a) = q'
                 (the official code's bound is exclusive: its max_outgoing_edges=5 means 1-4)
    sampling     from state q, the next symbol is uniform over q's k_q edges (a probabilistic
                 automaton with uniform transitions: P(a | q) = 1 / k_q for every edge (q, a))

There are no accepting states: a string is *in the language* iff it traces a path from the start
state (every symbol is an edge of the state reached so far), as in the official code's ``DFA``.

A sequence (one example)::

    |  a b a c  |  b b  |  a c a  |  ...     (| = separator, id num_symbols; symbols 0 .. num_symbols-1)

starts with a separator, then strings of uniformly random length in [min_length, max_length],
each followed by a separator, cut at seq_len + 1 tokens; inputs = tokens[:-1], targets =
tokens[1:]. After each input token the automaton is in a known state (the start state after a
separator), so the *true next-symbol distribution* is known exactly at every position:

    q_t = δ*(0, current string up to t),   p*(a | x_{≤t}) = 1[δ(q_t, a) defined] / k_{q_t}.   (1)

The string lengths are random, so whether a separator comes next is not predictable from the
language; the metrics therefore score the *next symbol given that one comes*: at the positions
whose target is a symbol, a prediction p over the vocabulary is restricted to the symbols and
renormalised, p(a | symbol) = p(a) / Σ_b p(b). The two metrics of the paper (greedy accuracy and total variation distance):

    accuracy = mean over scored positions of  1[ δ(q_t, argmax_a p(a)) is defined ]          (2)
    TVD      = mean over scored positions of  ½ Σ_a | p(a | symbol) − p*(a | x_{≤t}) |         (3)

Accuracy asks whether the greedy next symbol keeps the string in the language; TVD (total
variation distance, in [0, 1]) whether the model also spreads its mass like the automaton.

The in-context n-gram estimator (the paper's n-gram baselines; ``ngram.py`` of the official code): at
position i, with window w_i = x_{i-n+2..i} (the last n-1 tokens; empty for n = 1), count what
followed every earlier occurrence of the window in the same sequence,

    c_i(v) = #{ s : max(1, n-1) ≤ s ≤ i,  x_{s-n+1..s-1} = w_i,  x_s = v },                     (4)

and predict p_n(a) = c_i(a) / Σ_b c_i(b) over the symbols a (separators that followed the window
are not counted as symbols). When no symbol ever followed the window it backs off to order n − 1,
then n − 2, ..., and finally to the uniform distribution over the symbols. (4) is exactly what the
paper's "n-gram head" computes with attention: see ``ref.models.ngram_head``.
"""

from __future__ import annotations

import numbers
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from ref import checks

__all__ = [
    "DFA",
    "random_dfa",
    "RegBench",
    "RegBatch",
    "ngram_counts",
    "ngram_probs",
    "legal_accuracy",
    "total_variation",
]


def _int_at_least(value, name: str, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}{why}, got {value!r}")
    return int(value)


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


@dataclass(frozen=True, eq=False)
class DFA:
    """A deterministic finite automaton over symbols 0 .. num_symbols-1; start state 0.

    ``transitions`` (S, num_symbols) int64: ``transitions[q, a]`` is δ(q, a), or -1 where state q
    has no edge labelled a. Every state has at least one edge (sampling never gets stuck).
    """

    transitions: np.ndarray  # (S, num_symbols) int64

    def __post_init__(self):
        t = self.transitions
        if not isinstance(t, np.ndarray) or t.ndim != 2 or not np.issubdtype(t.dtype, np.integer):
            got = f"shape {t.shape}, dtype {t.dtype}" if isinstance(t, np.ndarray) else type(t).__name__
            raise ValueError(f"transitions: expected an integer array (S, num_symbols), got {got}")
        S = t.shape[0]
        if S < 1 or t.shape[1] < 1:
            raise ValueError(f"transitions: expected at least one state and one symbol, got shape {t.shape}")
        if t.min() < -1 or t.max() >= S:
            raise ValueError(f"transitions: expected entries in [-1, {S - 1}] (-1 = no edge), got [{t.min()}, {t.max()}]")
        if not np.all((t >= 0).any(axis=1)):
            raise ValueError(f"transitions: expected every state to have an edge; states without one: "
                             f"{np.flatnonzero(~(t >= 0).any(axis=1)).tolist()}")
        # plain lists for the sampler (a Python loop over symbols; numpy calls per symbol are slow)
        object.__setattr__(self, "_delta", t.tolist())
        object.__setattr__(self, "_edges", [[a for a, q in enumerate(row) if q >= 0] for row in self._delta])

    @property
    def num_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def num_symbols(self) -> int:
        return self.transitions.shape[1]

    @property
    def alphabet(self) -> tuple:
        """The symbols that label at least one edge."""
        return tuple(int(a) for a in np.flatnonzero((self.transitions >= 0).any(axis=0)))

    def _symbol(self, a, name="symbol") -> int:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not 0 <= a < self.num_symbols:
            raise ValueError(f"{name}: expected a symbol in [0, {self.num_symbols - 1}], got {a!r}")
        return int(a)

    def run(self, string) -> int:
        """δ*(0, string): the state reached, or -1 once a symbol has no edge."""
        q = 0
        for a in string:
            q = int(self.transitions[q, self._symbol(a, "string")])
            if q < 0:
                return -1
        return q

    def accepts(self, string) -> bool:
        """True iff ``string`` traces a path from the start state (the language of RegBench)."""
        return self.run(string) >= 0

    def next_distribution(self, state: int) -> np.ndarray:
        """p*(· | q) (num_symbols,): uniform over the edges of ``state``, eq. (1)."""
        if isinstance(state, bool) or not isinstance(state, numbers.Integral) or not 0 <= state < self.num_states:
            raise ValueError(f"state: expected a state in [0, {self.num_states - 1}], got {state!r}")
        legal = self.transitions[state] >= 0  # (num_symbols,)
        return legal / legal.sum()

    def sample(self, rng: np.random.Generator, length: int) -> list:
        """A random string of ``length`` symbols: from each state, a uniformly random edge."""
        _check_rng(rng)
        length = _int_at_least(length, "length", 0)
        edges, delta = self._edges, self._delta  # the symbols of each state; δ
        q, out = 0, []
        for u in rng.random(length).tolist():
            a = edges[q][int(u * len(edges[q]))]  # uniform over the k_q edges
            out.append(a)
            q = delta[q][a]
        return out


def random_dfa(
    rng: np.random.Generator,
    num_symbols: int,
    num_states: int,
    *,
    alphabet_size: int | None = None,
    max_out_edges: int = 3,
) -> DFA:
    """A random DFA as in RegBench (module docstring): ``alphabet_size`` (default ``num_states``)
    symbols out of ``num_symbols``; each state 1 .. min(max_out_edges, alphabet_size) edges with
    distinct symbols, each to a uniformly random state."""
    _check_rng(rng)
    V = _int_at_least(num_symbols, "num_symbols", 1)
    S = _int_at_least(num_states, "num_states", 1)
    A = S if alphabet_size is None else _int_at_least(alphabet_size, "alphabet_size", 1)
    if A > V:
        raise ValueError(f"alphabet_size: expected at most num_symbols = {V}, got {A}")
    E = _int_at_least(max_out_edges, "max_out_edges", 1)
    alphabet = rng.choice(V, size=A, replace=False)  # (A,)
    transitions = np.full((S, V), -1, dtype=np.int64)
    ks = rng.integers(1, min(E, A) + 1, size=S)  # (S,) the number of edges of each state
    for q in range(S):
        symbols = alphabet[rng.permutation(A)[: ks[q]]]  # k_q distinct symbols of the alphabet
        transitions[q, symbols] = rng.integers(0, S, size=ks[q])
    return DFA(transitions)


@dataclass(frozen=True, eq=False)
class RegBatch:
    """One batch of RegBench.

    inputs, targets (B, T) int64 (targets = inputs shifted by one); ``loss_mask`` (B, T) bool,
    every position (the model is trained on every next token, separators included);
    ``score_mask`` (B, T) bool, the positions whose target is a symbol (where the metrics are
    taken); ``legal`` (B, T, num_symbols) bool, the edges of the state q_t after inputs[:, :t+1];
    ``dfas``: the B automata.
    """

    inputs: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray
    score_mask: np.ndarray
    legal: np.ndarray
    dfas: tuple

    @property
    def true_probs(self) -> np.ndarray:
        """p*(a | x_{≤t}) (B, T, num_symbols), eq. (1)."""
        return self.legal / self.legal.sum(axis=-1, keepdims=True)

    def accuracy(self, probs) -> float:
        """Eq. (2) for predictions ``probs`` (B, T, vocab) (probabilities or logits: only the argmax is used)."""
        return legal_accuracy(probs, self.legal, self.score_mask)

    def tvd(self, probs) -> float:
        """Eq. (3) for next-token probabilities ``probs`` (B, T, vocab)."""
        return total_variation(probs, self.legal, self.score_mask)


@dataclass(frozen=True)
class RegBench:
    """The task: ``sample(rng, B)`` draws B fresh automata and one sequence from each.

    Vocabulary: symbols 0 .. num_symbols-1 and the separator ``num_symbols`` (vocab_size =
    num_symbols + 1). Defaults are a laptop-scale RegBench (the official configuration: a vocabulary
    of 20, up to 9 states, strings of up to 49 symbols, 10-19 strings per example, so sequences of
    hundreds of tokens).
    """

    num_symbols: int = 12
    seq_len: int = 96
    min_states: int = 4
    max_states: int = 6
    max_out_edges: int = 3
    min_length: int = 1
    max_length: int = 10

    def __post_init__(self):
        _int_at_least(self.num_symbols, "num_symbols", 1)
        _int_at_least(self.seq_len, "seq_len", 1)
        _int_at_least(self.min_states, "min_states", 1)
        _int_at_least(self.max_states, "max_states", self.min_states, " (min_states)")
        if self.max_states > self.num_symbols:
            raise ValueError(f"max_states: expected at most num_symbols = {self.num_symbols} (alphabet size = "
                             f"number of states), got {self.max_states}")
        _int_at_least(self.max_out_edges, "max_out_edges", 1)
        _int_at_least(self.min_length, "min_length", 1)
        _int_at_least(self.max_length, "max_length", self.min_length, " (min_length)")

    @property
    def vocab_size(self) -> int:
        return self.num_symbols + 1

    @property
    def separator(self) -> int:
        return self.num_symbols

    def sample_dfa(self, rng: np.random.Generator) -> DFA:
        S = int(rng.integers(self.min_states, self.max_states + 1))
        return random_dfa(rng, self.num_symbols, S, max_out_edges=self.max_out_edges)

    def sample_example(self, rng: np.random.Generator, dfa: DFA) -> tuple:
        """One sequence of seq_len + 1 tokens from ``dfa`` and the state after each token
        (the start state 0 after a separator)."""
        _check_rng(rng)
        tokens, states = [self.separator], [0]
        delta = dfa._delta
        while len(tokens) < self.seq_len + 1:
            q = 0
            for a in dfa.sample(rng, int(rng.integers(self.min_length, self.max_length + 1))):
                q = delta[q][a]
                tokens.append(a)
                states.append(q)
            tokens.append(self.separator)
            states.append(0)
        return np.array(tokens[: self.seq_len + 1]), np.array(states[: self.seq_len + 1])

    def sample(self, rng: np.random.Generator, batch_size: int) -> RegBatch:
        _check_rng(rng)
        B = checks.positive_int(batch_size, "batch_size")
        dfas = tuple(self.sample_dfa(rng) for _ in range(B))
        tokens, states = zip(*(self.sample_example(rng, d) for d in dfas))
        tokens, states = np.stack(tokens), np.stack(states)  # (B, T + 1)
        legal = np.stack([d.transitions[s[:-1]] >= 0 for d, s in zip(dfas, states)])  # (B, T, num_symbols)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T)
        return RegBatch(inputs, targets, np.ones(inputs.shape, bool), targets != self.separator, legal, dfas)


# ---- metrics ---------------------------------------------------------------------------------


def _check_metric_inputs(probs, legal, mask):
    if not isinstance(legal, np.ndarray) or legal.dtype != np.bool_ or legal.ndim != 3:
        got = f"shape {legal.shape}, dtype {legal.dtype}" if isinstance(legal, np.ndarray) else type(legal).__name__
        raise ValueError(f"legal: expected a bool array (B, T, num_symbols), got {got}")
    B, T, A = legal.shape
    probs = checks.float_array(probs, "probs", ndim=3, dims="(B, T, vocab)")
    if probs.shape[:2] != (B, T) or probs.shape[2] < A:
        raise ValueError(f"probs: expected shape (B, T, vocab) with (B, T) = {(B, T)} and vocab >= num_symbols = {A} "
                         f"(from legal), got {probs.shape}")
    checks.finite(probs, "probs")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise ValueError(f"mask: expected a bool array (B, T), got {getattr(mask, 'dtype', type(mask).__name__)}")
    checks.same_shape(mask, "mask", (B, T), "(B, T)", "from legal")
    if not mask.any():
        raise ValueError("mask: expected at least one scored position, got none")
    if not np.all(legal[mask].any(axis=-1)):
        raise ValueError("legal: expected at least one legal symbol at every scored position")
    return probs[..., :A], legal, mask


def legal_accuracy(probs, legal, mask) -> float:
    """Eq. (2): the fraction of the positions of ``mask`` (B, T) where the most probable symbol
    (argmax of ``probs`` (B, T, vocab) over the first num_symbols columns; ties: the lowest id) is a
    legal transition, ``legal`` (B, T, num_symbols)."""
    p, legal, mask = _check_metric_inputs(probs, legal, mask)
    greedy = p.argmax(axis=-1)  # (B, T)
    ok = np.take_along_axis(legal, greedy[..., None], axis=-1)[..., 0]  # (B, T)
    return float(ok[mask].mean())


def total_variation(probs, legal, mask) -> float:
    """Eq. (3): the mean over ``mask`` of ½ ||p(· | symbol) − p*||_1, with ``probs`` (B, T, vocab)
    probabilities (non-negative, some mass on the symbols) and p* uniform over ``legal``."""
    p, legal, mask = _check_metric_inputs(probs, legal, mask)
    if p.min() < 0:
        raise ValueError(f"probs: expected probabilities >= 0, got a minimum of {p.min()}")
    p, legal = p[mask], legal[mask]  # (N, A)
    mass = p.sum(axis=-1, keepdims=True)
    if np.any(mass <= 0):
        raise ValueError("probs: expected some mass on the symbols at every scored position, got rows of zeros")
    p_true = legal / legal.sum(axis=-1, keepdims=True)
    return float((0.5 * np.abs(p / mass - p_true).sum(axis=-1)).mean())


# ---- the in-context n-gram estimator ---------------------------------------------------------


def _check_tokens(tokens, vocab_size):
    V = _int_at_least(vocab_size, "vocab_size", 1)
    if not isinstance(tokens, np.ndarray) or not np.issubdtype(tokens.dtype, np.integer) or tokens.ndim != 2:
        got = f"shape {tokens.shape}, dtype {tokens.dtype}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
        raise ValueError(f"tokens: expected an integer array (B, T), got {got}")
    checks.nonempty_time(tokens.shape[1], "tokens")
    if tokens.min() < 0 or tokens.max() >= V:
        raise ValueError(f"tokens: expected ids in [0, {V - 1}] (vocab_size = {V}), got [{tokens.min()}, {tokens.max()}]")
    return tokens, V


def ngram_counts(tokens, n: int, vocab_size: int) -> np.ndarray:
    """c_i(v) of eq. (4), (B, T, vocab_size) float64: how often v followed, earlier in the same
    row, the window of the n-1 tokens ending at i. Written as the definition: one pass, a table
    window -> Counter of next tokens, updated with the pair (x_{s-n+1..s-1}, x_s) before position s
    is queried (so s ≤ i)."""
    tokens, V = _check_tokens(tokens, vocab_size)
    n = _int_at_least(n, "n", 1)
    B, T = tokens.shape
    counts = np.zeros((B, T, V))
    for b in range(B):
        x = tokens[b].tolist()
        table = defaultdict(Counter)  # window (tuple of n-1 tokens) -> Counter of the next token
        for i in range(T):
            s = i  # add the pair whose next token is x_s = x_i
            if s >= max(1, n - 1):
                table[tuple(x[s - n + 1 : s])][x[s]] += 1
            if i >= n - 2:  # the window w_i = x_{i-n+2..i} exists
                for v, c in table.get(tuple(x[i - n + 2 : i + 1]), {}).items():
                    counts[b, i, v] = c
    return counts


def ngram_probs(tokens, n: int, num_symbols: int, vocab_size: int) -> np.ndarray:
    """The in-context n-gram predictor with back-off (module docstring), (B, T, vocab_size):
    p_n over the symbols 0 .. num_symbols-1 (zero on the other ids); where no symbol followed the
    window, order n-1, ..., 1, then uniform over the symbols."""
    tokens, V = _check_tokens(tokens, vocab_size)
    n = _int_at_least(n, "n", 1)
    A = _int_at_least(num_symbols, "num_symbols", 1)
    if A > V:
        raise ValueError(f"num_symbols: expected at most vocab_size = {V}, got {A}")
    B, T = tokens.shape
    out = np.zeros((B, T, V))
    out[..., :A] = 1.0 / A  # the last resort: uniform over the symbols
    done = np.zeros((B, T), bool)
    for m in range(n, 0, -1):  # the highest order that has seen a symbol wins
        c = ngram_counts(tokens, m, V)[..., :A]  # (B, T, A)
        total = c.sum(axis=-1)  # (B, T)
        use = ~done & (total > 0)
        out[use, :A] = c[use] / total[use, None]
        done |= use
    return out
