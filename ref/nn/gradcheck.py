"""Finite-difference gradient checking for any forward/backward pair.

Every op in this package is a pure pair::

    *outputs, cache = op(**inputs)          # forward: outputs, then the cache, last
    grads = op_backward(*cotangents, cache) # backward: d<input> for each input, in order

``gradcheck`` treats the pair as a black box. It draws a random cotangent ``dy_k`` for every
output ``y_k`` (random, never ``ones_like``: a sum of ones hides transposed or mixed-up axes),
defines the scalar

    L(inputs) = sum_k <y_k(inputs), dy_k>

whose exact gradient is what backward returns, and compares each analytic gradient with the
float64 central difference

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps).

Tolerance. The central difference has truncation error O(eps^2 |L'''|) and round-off error of
about u |L| / eps with u = 1.1e-16. With eps = 1e-6 and O(1) values both are below 1e-9, so a
per-tensor relative error ``max|numeric - analytic| / max|numeric|`` above ``rtol = 1e-6``
cannot be numerical noise: it is a bug. Inputs at a kink (relu at 0, max-pool ties) are the
one exception; tests draw inputs away from them.

It also checks the contract of the pair: forward and backward leave their inputs untouched,
and calling backward twice on the same cache gives the same gradients (nothing accumulates).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["gradcheck", "GradcheckReport", "TensorReport", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` on a mismatch; its message is the full report."""


@dataclass
class TensorReport:
    """The comparison for one input tensor."""

    name: str
    shape: tuple
    max_abs_err: float
    rel_err: float  # max_abs_err / max|numeric| (per tensor)
    ok: bool
    numeric_head: np.ndarray
    analytic_head: np.ndarray
    worst_index: tuple
    note: str = ""


@dataclass
class GradcheckReport:
    op: str
    tensors: list[TensorReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # contract violations (mutation, accumulation)

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.ok for t in self.tensors)

    def __str__(self) -> str:
        lines = [f"gradcheck {self.op}: {'ok' if self.ok else 'FAILED'}"]
        lines.append(f"  {'tensor':<16}{'shape':<18}{'max abs err':>12}{'rel err':>11}  status")
        for t in self.tensors:
            status = "ok" if t.ok else "MISMATCH"
            lines.append(
                f"  {t.name:<16}{str(t.shape):<18}{t.max_abs_err:>12.3e}{t.rel_err:>11.3e}  {status}{t.note}"
            )
            if not t.ok:
                fmt = {"float_kind": lambda v: f"{v: .6e}"}
                lines.append(f"    numeric : {np.array2string(t.numeric_head, formatter=fmt)}")
                lines.append(f"    analytic: {np.array2string(t.analytic_head, formatter=fmt)}")
                lines.append(f"    worst element at index {t.worst_index}")
        lines.extend(f"  contract: {p}" for p in self.problems)
        return "\n".join(lines)


def _split_forward(result) -> tuple[list, object]:
    """forward returns (y, cache) or (y1, ..., yk, cache): outputs first, the cache last."""
    if not isinstance(result, tuple) or len(result) < 2:
        raise ValueError("forward: expected a tuple (*outputs, cache), got " + type(result).__name__)
    return list(result[:-1]), result[-1]


def _loss(outputs: Sequence, cotangents: Sequence) -> float:
    total = 0.0
    for y, dy in zip(outputs, cotangents):
        if isinstance(y, np.ndarray) and dy is not None:
            total += float(np.sum(y.astype(np.float64) * dy))
    return total


def _positional_names(forward: Callable) -> list[str]:
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def _grads_by_name(grads, names: list[str], signature_names: list[str], array_names: list[str]) -> dict:
    """Name the gradients: by key for a dict; else positionally, by forward's signature (so an
    op may return ``None`` for optional inputs that were left out, and options may be passed as
    keyword-only inputs) or by the order of inputs."""
    if isinstance(grads, Mapping):
        return dict(grads)
    if not isinstance(grads, tuple):
        grads = (grads,)
    for order in (signature_names, names):
        if len(grads) == len(order) and set(array_names) <= set(order):
            return dict(zip(order, grads))
    raise ValueError(
        f"backward: expected one gradient per input of forward ({', '.join(signature_names or names)}), "
        f"got {len(grads)}"
    )


def gradcheck(
    forward: Callable,
    backward: Callable,
    inputs: Mapping[str, object],
    *,
    wrt: Sequence[str] | None = None,
    cotangents: Sequence[np.ndarray | None] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-12,
    rng: np.random.Generator | None = None,
    name: str | None = None,
    raise_on_failure: bool = True,
) -> GradcheckReport:
    """Check ``backward`` against float64 central differences of ``forward``.

    Parameters
    ----------
    forward : callable(**inputs) -> (*outputs, cache)
    backward : callable(*cotangents, cache) -> gradients: a dict by input name, or a tuple with
        one entry per positional parameter of ``forward`` (``None`` for an input that is absent
        or not differentiable), or else one per entry of ``inputs``, in order.
    inputs : name -> value. Floating arrays must be float64; other values (ints, flags) are
        passed through unchanged and not differentiated.
    wrt : names of the inputs to check (default: every floating array).
    cotangents : one per output (``None`` to leave an output out of the loss); default random
        standard normal for every output that is an array.
    eps, rtol, atol : step and per-tensor tolerance: pass iff
        ``max|numeric - analytic| <= atol + rtol * max|numeric|``.
    rng : source of the random cotangents (default ``np.random.default_rng(0)``).
    raise_on_failure : raise :class:`GradcheckError` with the report if anything mismatches.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    names = list(inputs)
    arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)}
    for k, v in arrays.items():
        if v.dtype != np.float64:
            raise ValueError(f"{k}: gradcheck needs float64 inputs, got {v.dtype}")
    wrt = list(arrays) if wrt is None else list(wrt)
    for k in wrt:
        if k not in arrays:
            raise ValueError(f"wrt: {k!r} is not a float64 array among the inputs ({', '.join(arrays)})")

    report = GradcheckReport(op=name or getattr(forward, "__name__", "op"))
    originals = {k: v.copy() for k, v in arrays.items()}
    work = {k: (v.copy() if k in arrays else v) for k, v in inputs.items()}

    outputs, cache = _split_forward(forward(**work))
    if cotangents is None:
        # non-array outputs (e.g. updated running statistics) take no part in the loss
        cotangents = [rng.standard_normal(y.shape) if isinstance(y, np.ndarray) else None for y in outputs]
    if len(cotangents) != len(outputs):
        raise ValueError(f"cotangents: expected {len(outputs)} (one per output), got {len(cotangents)}")

    sig_names = _positional_names(forward)
    grads = _grads_by_name(backward(*cotangents, cache), names, sig_names, list(arrays))
    grads_again = _grads_by_name(backward(*cotangents, cache), names, sig_names, list(arrays))
    for k in wrt:
        g1, g2 = grads.get(k), grads_again.get(k)
        if g1 is not None and not np.array_equal(g1, g2):
            report.problems.append(f"calling backward twice changed d{k} (gradients must not accumulate)")
    for k in arrays:
        if not np.array_equal(work[k], originals[k]):
            report.problems.append(f"forward or backward modified the input {k!r} in place")

    for k in wrt:
        x = work[k]
        analytic = grads.get(k)
        if analytic is None:
            analytic = np.zeros_like(x)
            note = "  (backward returned None)"
        else:
            note = ""
        analytic = np.asarray(analytic, dtype=np.float64)
        if analytic.shape != x.shape:
            report.problems.append(f"d{k} has shape {analytic.shape}, expected {x.shape}")
            continue
        numeric = np.zeros_like(x)
        flat, num_flat = x.reshape(-1), numeric.reshape(-1)  # views into x and numeric
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            lp = _loss(_split_forward(forward(**work))[0], cotangents)
            flat[i] = orig - eps
            lm = _loss(_split_forward(forward(**work))[0], cotangents)
            flat[i] = orig
            num_flat[i] = (lp - lm) / (2 * eps)
        diff = np.abs(numeric - analytic)
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(numeric).max()) if numeric.size else 0.0
        rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
        worst = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape)) if diff.size else ()
        report.tensors.append(
            TensorReport(
                name=k,
                shape=tuple(x.shape),
                max_abs_err=max_abs,
                rel_err=rel,
                ok=bool(max_abs <= atol + rtol * scale),
                numeric_head=numeric.reshape(-1)[:6].copy(),
                analytic_head=analytic.reshape(-1)[:6].copy(),
                worst_index=worst,
                note=note,
            )
        )
    if raise_on_failure and not report.ok:
        raise GradcheckError(str(report))
    return report
