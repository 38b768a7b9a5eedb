"""Golden ops: one op run in float64 from named arrays, in the conventions of a community reference.

``run(op, arrays)`` takes the arrays of an IN.npz:

* the op's **inputs**, under the argument names of the reference it mirrors (``a``, ``b``,
  ``initial_state``, ...); floating inputs are converted to float64;
* its **options** as 0-d arrays (``chunk_size``, ``scale``, ...);
* optional **cotangents** of its outputs, named ``d<output>`` (``dh``, ``dht``, ...).

It returns the outputs and, when at least one cotangent was given, the gradient of every floating
input that was given, named ``d<input>`` (missing cotangents count as zero). Unknown, missing or
ill-typed arrays raise ValueError naming the array.

Some outputs exist only when a boolean option is set (FLA's final state ``ht`` with
``output_final_state``): such a ``Tensor`` names the option in ``when``. The op then returns only
the outputs it produced, and a cotangent of an output that was not produced is an error.

Each op also declares what ``python -m ref golden export`` needs: ``reference``, the name of the
community function it mirrors (``naive_recurrent_gla``); ``state_layout``, how its states are laid
out; ``conventions``, the facts a kernel author must get right (gate convention, default scale,
traps), written into every bundle's manifest; and ``cases(rng)``, the generator of its golden
cases (``ref.golden.cases.Case``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: str  # the layout, e.g. "(B, T, D)"
    doc: str = ""
    optional: bool = False
    when: str = ""  # outputs only: the boolean option that must be true for it to be produced


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int, float or bool
    default: object
    doc: str = ""


@dataclass(frozen=True)
class GoldenOp:
    """What a golden op takes and gives, and the function that computes it.

    ``forward(inputs, options) -> (outputs, backward)`` where ``outputs`` holds the outputs
    produced (see ``produced``) and ``backward(cotangents) -> grads`` maps ``d<output>`` arrays
    (None if absent) to ``d<input>`` arrays.
    """

    name: str
    mirrors: str  # the community reference whose conventions it follows
    layout: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    forward: Callable
    options: tuple[Option, ...] = ()
    notes: str = ""
    differentiable: tuple[str, ...] = field(default=())  # inputs with a gradient; default all
    reference: str = ""  # the function it mirrors, e.g. "naive_recurrent_gla"
    state_layout: str = ""  # e.g. "[K, V] per head (FLA's default, state_v_first=False)"; "" if stateless
    conventions: tuple[str, ...] = ()  # gate convention, default scale, traps: one fact per string
    cases: Callable | None = None  # cases(rng) -> list[Case]: the golden cases that export writes

    @property
    def grad_inputs(self) -> tuple[str, ...]:
        return self.differentiable or tuple(t.name for t in self.inputs)

    def produced(self, options: dict) -> tuple[str, ...]:
        """The outputs produced with these options: those without ``when``, and those whose option is true."""
        return tuple(t.name for t in self.outputs if not t.when or options[t.when])


OPS: dict[str, GoldenOp] = {}


def register(op: GoldenOp) -> GoldenOp:
    if op.name in OPS:
        raise ValueError(f"op: {op.name!r} is registered twice")
    flags = {o.name for o in op.options if o.kind is bool}
    for t in op.outputs:
        if t.when and t.when not in flags:
            raise ValueError(f"op: output {t.name!r} of {op.name} is produced when {t.when!r}, not a boolean option")
    names = [t.name for t in op.inputs] + [o.name for o in op.options] + ["d" + t.name for t in op.outputs]
    names += [t.name for t in op.outputs] + ["d" + n for n in op.grad_inputs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:  # a golden case file holds all of them side by side
        raise ValueError(f"op: {op.name} uses the name {clash[0]!r} for two arrays (inputs, options, outputs, d<...>)")
    OPS[op.name] = op
    return op


def get(name: str) -> GoldenOp:
    if name not in OPS:
        raise ValueError(f"op: expected one of {', '.join(sorted(OPS))}, got {name!r}")
    return OPS[name]


def _option_value(opt: Option, value: np.ndarray):
    if value.ndim != 0:
        raise ValueError(f"{opt.name}: expected a 0-d array (an option), got shape {value.shape}")
    v = value.item()
    if opt.kind is not bool and isinstance(v, bool):
        raise ValueError(f"{opt.name}: expected {'an integer' if opt.kind is int else 'a number'}, got {v!r}")
    if opt.kind is bool:
        if not isinstance(v, (bool, np.bool_)) and v not in (0, 1):
            raise ValueError(f"{opt.name}: expected a boolean, got {v!r}")
        return bool(v)
    if opt.kind is int:
        if isinstance(v, float) and not v.is_integer() or isinstance(v, (str, bytes)):
            raise ValueError(f"{opt.name}: expected an integer, got {v!r}")
        return int(v)
    if isinstance(v, (str, bytes)):
        raise ValueError(f"{opt.name}: expected a number, got {v!r}")
    return opt.kind(v)


def split_arrays(op: GoldenOp, arrays: dict[str, np.ndarray]):
    """Sort an IN.npz's arrays into (inputs as float64, options, cotangents); validate names."""
    input_names = {t.name for t in op.inputs}
    option_names = {o.name for o in op.options}
    cot_names = {"d" + t.name for t in op.outputs}
    unknown = sorted(set(arrays) - input_names - option_names - cot_names)
    if unknown:
        raise ValueError(
            f"inputs: unknown array {unknown[0]!r} for op {op.name} (inputs: {', '.join(t.name for t in op.inputs)}; "
            f"options: {', '.join(sorted(option_names)) or 'none'}; cotangents: {', '.join(sorted(cot_names))})"
        )
    inputs = {}
    for t in op.inputs:
        if t.name not in arrays:
            if not t.optional:
                raise ValueError(f"inputs: missing required array {t.name!r} {t.shape} for op {op.name}")
            continue
        x = np.asarray(arrays[t.name])
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{t.name}: expected a floating array {t.shape}, got dtype {x.dtype}")
        inputs[t.name] = x.astype(np.float64)
    options = {o.name: o.default for o in op.options}
    for o in op.options:
        if o.name in arrays:
            options[o.name] = _option_value(o, np.asarray(arrays[o.name]))
    cotangents = {}
    for name in sorted(cot_names & set(arrays)):
        x = np.asarray(arrays[name])
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name}: expected a floating array (a cotangent), got dtype {x.dtype}")
        cotangents[name] = x.astype(np.float64)
    return inputs, options, cotangents


def run(name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run golden op ``name`` in float64 on the arrays of an IN.npz; see the module docstring."""
    op = get(name)
    inputs, options, cotangents = split_arrays(op, arrays)
    produced = op.produced(options)
    for cot in cotangents:
        if cot[1:] not in produced:
            when = next(t.when for t in op.outputs if t.name == cot[1:])
            raise ValueError(
                f"{cot}: a cotangent of {cot[1:]!r}, which op {op.name} outputs only when {when} is true "
                f"({when} is false here)"
            )
    outputs, backward = op.forward(inputs, options)
    if set(outputs) != set(produced):
        raise RuntimeError(f"op {op.name}: produced {sorted(outputs)}, its declaration says {sorted(produced)}")
    result = dict(outputs)
    if cotangents:
        full = {"d" + t.name: cotangents.get("d" + t.name) for t in op.outputs}
        grads = backward(full)
        for k in op.grad_inputs:
            if k in inputs:
                result["d" + k] = grads["d" + k]
    return result
