"""Text from a mixture of sparse Markov chains, with an exact Bayes-optimal predictor (lessons 30-31).

A source has K *topics*. Topic k is a first-order Markov chain on a vocabulary of V tokens whose
transition matrix P_k (V, V) is sparse: each row has ``branching`` successors, chosen at random,
with Dirichlet(1) weights. A sequence starts with a uniform token x_0 and a uniform topic z_0;
before emitting each next token the topic is redrawn uniformly with probability ``switch``::

    z_0 ~ U{1..K},  x_0 ~ U{0..V-1}
    z_{t+1} = z_t  with probability 1 - switch,  else  ~ U{1..K}                      (M1)
    x_{t+1} ~ P_{z_{t+1}}[x_t, :]                                                     (M2)

With ``switch = 0`` (source A) the topic is fixed for a whole sequence, so a good language model
must infer it from the context and keep it in its state. A source with ``switch > 0`` and the same
chains (source B from :meth:`MarkovSource.shifted`) changes topic mid-sequence, which never
happens in A: the same local statistics, a different long-range structure, a distribution shift.

Since the topic is the only hidden variable, the exact predictive distribution is a filter over
the K topics (:meth:`MarkovSource.bayes_nll`): with b_t the posterior over z_t given x_0..x_t,

    b'_t = (1 - switch) b_t + switch / K                                              (M3)
    p(x_{t+1} | x_0..x_t) = sum_k b'_t(k) P_k[x_t, x_{t+1}]                           (M4)
    b_{t+1}(k) = b'_t(k) P_k[x_t, x_{t+1}] / p(x_{t+1} | x_0..x_t)                    (M5)

so a lesson can show how far a model is from the best possible next-token loss.
Deterministic: the chains come from ``seed``, the sequences from the ``rng`` passed to
:meth:`MarkovSource.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ref import checks

__all__ = ["MarkovSource"]


@dataclass(frozen=True)
class MarkovSource:
    """K sparse Markov chains on V tokens (module docstring). ``transitions`` (K, V, V)."""

    transitions: np.ndarray
    switch: float = 0.0

    @classmethod
    def random(cls, vocab_size: int = 16, n_topics: int = 4, branching: int = 4, *, seed: int = 0, switch: float = 0.0):
        """The chains of a source, drawn from ``seed``: each row of each P_k has ``branching``
        distinct successors with Dirichlet(1) weights."""
        V = checks.positive_int(vocab_size, "vocab_size")
        K = checks.positive_int(n_topics, "n_topics")
        S = checks.positive_int(branching, "branching")
        if S > V:
            raise ValueError(f"branching: expected at most vocab_size = {V} successors, got {S}")
        rng = np.random.default_rng(seed)
        P = np.zeros((K, V, V))
        for k in range(K):
            for v in range(V):
                succ = rng.choice(V, size=S, replace=False)
                P[k, v, succ] = rng.dirichlet(np.ones(S))
        return cls(P, _check_switch(switch))

    def __post_init__(self):
        P = np.asarray(self.transitions)
        if P.ndim != 3 or P.shape[1] != P.shape[2] or not np.allclose(P.sum(-1), 1.0) or (P < 0).any():
            raise ValueError(f"transitions: expected (K, V, V) row-stochastic matrices, got shape {P.shape}")
        _check_switch(self.switch)

    @property
    def vocab_size(self) -> int:
        return self.transitions.shape[1]

    @property
    def n_topics(self) -> int:
        return self.transitions.shape[0]

    def shifted(self, switch: float) -> "MarkovSource":
        """The same chains with topic switches (M1): the shifted source B."""
        return replace(self, switch=_check_switch(switch))

    def sample(self, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
        """Token ids (batch_size, length), int64, by (M1)-(M2)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        B = checks.positive_int(batch_size, "batch_size")
        T = checks.positive_int(length, "length")
        K, V = self.n_topics, self.vocab_size
        cdf = np.cumsum(self.transitions, axis=-1)  # (K, V, V)
        x = np.zeros((B, T), dtype=np.int64)
        z = rng.integers(0, K, B)
        x[:, 0] = rng.integers(0, V, B)
        for t in range(1, T):
            redraw = rng.random(B) < self.switch  # (M1)
            z = np.where(redraw, rng.integers(0, K, B), z)
            u = rng.random(B)[:, None]
            row = cdf[z, x[:, t - 1]]  # (B, V)
            x[:, t] = np.minimum((u > row).sum(-1), V - 1)  # (M2) inverse-cdf sampling
        return x

    def prefix_distribution(self, prefixes: np.ndarray):
        """For token prefixes (N, t), t >= 0: ``(log p(prefix) (N,), p(next token | prefix) (N, V))``
        by the filter (M3)-(M5); the empty prefix has log p = 0 and a uniform next token."""
        prefixes = np.asarray(prefixes)
        if prefixes.ndim != 2 or not np.issubdtype(prefixes.dtype, np.integer):
            raise ValueError(f"prefixes: expected integer token ids (N, t), got {prefixes.dtype} {prefixes.shape}")
        N, t = prefixes.shape
        K, V = self.n_topics, self.vocab_size
        if t == 0:
            return np.zeros(N), np.full((N, V), 1.0 / V)
        logp = np.full(N, -np.log(V))  # x_0 is uniform
        b = np.full((N, K), 1.0 / K)
        for i in range(t - 1):
            prior = (1.0 - self.switch) * b + self.switch / K  # (M3)
            joint = prior * self.transitions[:, prefixes[:, i], prefixes[:, i + 1]].T  # (N, K)
            p = joint.sum(-1)  # (M4)
            with np.errstate(divide="ignore", invalid="ignore"):
                logp += np.log(p)
                b = np.where(p[:, None] > 0, joint / p[:, None], 1.0 / K)  # (M5); impossible prefixes keep any b
        prior = (1.0 - self.switch) * b + self.switch / K
        nxt = np.einsum("nk,knv->nv", prior, self.transitions[:, prefixes[:, -1], :])  # (N, V)
        return logp, nxt

    def bayes_nll(self, tokens: np.ndarray) -> np.ndarray:
        """The exact next-token loss -log p(x_{t+1} | x_0..x_t), (B, T-1), by the filter (M3)-(M5)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] < 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens: expected integer token ids (B, T) with T >= 2, got {tokens.dtype} {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"tokens: expected ids in [0, {self.vocab_size}), got [{tokens.min()}, {tokens.max()}]")
        B, T = tokens.shape
        K = self.n_topics
        b = np.full((B, K), 1.0 / K)  # x_0 carries no information on the topic
        nll = np.zeros((B, T - 1))
        for t in range(T - 1):
            prior = (1.0 - self.switch) * b + self.switch / K  # (M3)
            like = self.transitions[:, tokens[:, t], tokens[:, t + 1]].T  # (B, K)
            joint = prior * like
            p = joint.sum(-1)  # (M4)
            nll[:, t] = -np.log(p)
            b = joint / p[:, None]  # (M5)
        return nll


def _check_switch(switch) -> float:
    if isinstance(switch, bool) or not isinstance(switch, (int, float, np.floating)) or not 0.0 <= switch <= 1.0:
        raise ValueError(f"switch: expected a probability in [0, 1], got {switch!r}")
    return float(switch)
