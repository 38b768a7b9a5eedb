"""Golden ops of the linear-attention family in FLA's conventions: linear_attn, retention, simple_gla, gla.

Each op's outputs and gradients are checked against another form of the same mixer (the ops run
the recurrent form), within the error bound of ``tests/mixers/gla_cases.py``; then the options,
their defaults, float32 inputs, and bad input.
"""

import numpy as np
import pytest

from ref import golden
from ref.mixers.gla import gla_chunked, gla_chunked_backward
from ref.mixers.linear_attention import linear_attention_parallel, linear_attention_parallel_backward
from ref.mixers.retention import default_gamma, retention_parallel, retention_parallel_backward
from ref.mixers.simple_gla import simple_gla_chunked, simple_gla_chunked_backward
from tests.compare import assert_within
from tests.mixers.gla_cases import bounds, log_sigmoid

pytestmark = pytest.mark.gla

B, T, H, K, V = 2, 11, 3, 5, 6  # T and the head dims: not powers of two, not multiples of the chunk
OPS = ("linear_attn", "retention", "simple_gla", "gla")
GATE = {"linear_attn": None, "retention": None, "simple_gla": "g", "gla": "gk"}
DEFAULT_FINAL_STATE = {"linear_attn": False, "retention": False, "simple_gla": True, "gla": False}


def make_arrays(op, rng, with_h0=True, dtype=np.float64):
    arrays = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, V)),
    }
    if op == "simple_gla":
        arrays["g"] = log_sigmoid(rng.standard_normal((B, T, H)))
    if op == "gla":
        arrays["gk"] = log_sigmoid(rng.standard_normal((B, T, H, K)))
    if with_h0:
        arrays["initial_state"] = rng.standard_normal((B, H, K, V))
    return {name: x.astype(dtype) for name, x in arrays.items()}


def independent(op, arrays, scale, do, dht):
    """The same op by another form of its mixer: (outputs and gradients by name, their bounds)."""
    q, k, v, h0 = arrays["q"], arrays["k"], arrays["v"], arrays.get("initial_state")
    if op == "linear_attn":
        o, ht, cache = linear_attention_parallel(q, k, v, scale=scale, initial_state=h0)
        dq, dk, dv, dh0 = linear_attention_parallel_backward(do, dht, cache)
        grads, gk = {}, None
    elif op == "retention":
        o, ht, cache = retention_parallel(q, k, v, gamma=default_gamma(H), scale=scale, initial_state=h0)
        dq, dk, dv, dh0 = retention_parallel_backward(do, dht, cache)
        grads, gk = {}, np.broadcast_to(np.log(default_gamma(H))[:, None], q.shape)
    elif op == "simple_gla":
        o, ht, cache = simple_gla_chunked(q, k, v, arrays["g"], scale=scale, initial_state=h0, chunk_size=4)
        dq, dk, dv, dg, dh0 = simple_gla_chunked_backward(do, dht, cache)
        grads, gk = {"dg": dg}, np.broadcast_to(arrays["g"][..., None], q.shape)
    else:
        o, ht, cache = gla_chunked(q, k, v, arrays["gk"], scale=scale, initial_state=h0, chunk_size=4)
        dq, dk, dv, dgk, dh0 = gla_chunked_backward(do, dht, cache)
        grads, gk = {"dgk": dgk}, arrays["gk"]
    want = dict(o=o, ht=ht, dq=dq, dk=dk, dv=dv, dinitial_state=dh0, **grads)
    tol = bounds(q, k, v, gk, h0, do, dht, scale, np.float64)
    tol = dict(
        o=tol["o"],
        ht=tol["ht"],
        dq=tol["dq"],
        dk=tol["dk"],
        dv=tol["dv"],
        dinitial_state=tol["dh0"],
        dg=None if tol["dgk"] is None else 1.5 * tol["dgk"].sum(-1),
        dgk=tol["dgk"],
    )  # dg: test_simple_gla.py
    return want, tol


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_outputs_and_gradients_match_another_form(op, with_h0, rng):
    arrays = make_arrays(op, rng, with_h0)
    arrays["scale"] = np.array(0.3)
    arrays["output_final_state"] = np.array(True)
    arrays["do"] = rng.standard_normal((B, T, H, V))
    arrays["dht"] = rng.standard_normal((B, H, K, V))
    out = golden.run(op, arrays)
    inputs = [n for n in ("q", "k", "v", GATE[op], "initial_state") if n in arrays]
    assert set(out) == {"o", "ht"} | {"d" + n for n in inputs}
    want, tol = independent(op, arrays, 0.3, arrays["do"], arrays["dht"])
    for name, x in out.items():
        assert x.dtype == np.float64, name
        assert_within(f"{op}: {name}", x, want[name], tol[name])


@pytest.mark.parametrize("op", OPS)
def test_without_the_final_state_its_gradient_is_still_right(op, rng):
    arrays = make_arrays(op, rng)
    arrays["output_final_state"] = np.array(False)
    arrays["do"] = rng.standard_normal((B, T, H, V))
    out = golden.run(op, arrays)
    assert "ht" not in out and "o" in out
    want, tol = independent(op, arrays, K**-0.5, arrays["do"], None)
    for name, x in out.items():
        assert_within(f"{op}: {name}", x, want[name], tol[name])


@pytest.mark.parametrize("op", OPS)
def test_defaults(op, rng):
    """scale = K^-0.5; output_final_state as FLA's reference (True only for naive_recurrent_simple_gla)."""
    arrays = make_arrays(op, rng)
    out = golden.run(op, arrays)
    assert ("ht" in out) == DEFAULT_FINAL_STATE[op] and not any(name.startswith("d") for name in out)
    explicit = golden.run(op, {**arrays, "scale": np.array(K**-0.5), "output_final_state": np.array(True)})
    np.testing.assert_array_equal(out["o"], explicit["o"])
    assert "bc3b101" in golden.get(op).mirrors
    assert {o.name: o.default for o in golden.get(op).options} == {
        "scale": None,
        "output_final_state": DEFAULT_FINAL_STATE[op],
    }


@pytest.mark.parametrize("op", OPS)
def test_float32_inputs_are_computed_in_float64(op, rng):
    arrays = make_arrays(op, rng, dtype=np.float32)
    arrays["do"] = rng.standard_normal((B, T, H, V)).astype(np.float32)
    out = golden.run(op, arrays)
    want = golden.run(op, {name: x.astype(np.float64) for name, x in arrays.items()})
    assert set(out) == set(want)
    for name in want:
        assert out[name].dtype == np.float64
        np.testing.assert_array_equal(out[name], want[name], err_msg=name)


def test_retention_is_simple_gla_with_flas_g_gamma(rng):
    """FLA's retention is simple GLA with g = log(1 - 2^(-5-h)) at every step."""
    arrays = make_arrays("retention", rng)
    arrays["do"] = rng.standard_normal((B, T, H, V))
    g = np.broadcast_to(np.log(1 - 2.0 ** (-5 - np.arange(H))), (B, T, H)).copy()
    ret = golden.run("retention", arrays)
    sgla = golden.run("simple_gla", {**arrays, "g": g, "output_final_state": np.array(False)})
    for name in ret:
        np.testing.assert_array_equal(ret[name], sgla[name], err_msg=name)  # the same computation


def test_simple_gla_is_gla_with_the_gate_shared_by_the_key_dims(rng):
    arrays = make_arrays("simple_gla", rng)
    arrays["do"], arrays["dht"] = rng.standard_normal((B, T, H, V)), rng.standard_normal((B, H, K, V))
    gk = np.repeat(arrays["g"][..., None], K, axis=-1)  # (B, T, H, K)
    sgla = golden.run("simple_gla", arrays)
    gla = golden.run(
        "gla", {**{n: x for n, x in arrays.items() if n != "g"}, "gk": gk, "output_final_state": np.array(True)}
    )
    np.testing.assert_array_equal(sgla["dg"], gla["dgk"].sum(-1))  # the same loops, the same roundings
    for name in ("o", "ht", "dq", "dk", "dv", "dinitial_state"):
        np.testing.assert_array_equal(sgla[name], gla[name], err_msg=name)


def _bad(op, rng, **changes):
    arrays = make_arrays(op, rng)
    arrays["do"] = rng.standard_normal((B, T, H, V))
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    return arrays


@pytest.mark.parametrize("op", OPS)
def test_bad_input_names_the_array(op, rng):
    cases = [
        (dict(q=None), rf"inputs: missing required array 'q' \(B, T, H, K\) for op {op}"),
        (dict(h0=np.zeros((B, H, K, V))), f"inputs: unknown array 'h0' for op {op}"),
        (dict(dS=np.zeros((B, H, K, V))), f"inputs: unknown array 'dS' for op {op}"),
        (dict(v=np.zeros((B, T, H + 1, V))), r"v: expected shape \(B, T, H, V\) with \(B, T, H\) = \(2, 11, 3\)"),
        (dict(initial_state=np.zeros((B, H, V, K))), r"initial_state: expected shape \(B, H, K, V\) = \(2, 3, 5, 6\)"),
        (dict(do=np.zeros((B, T, H, K))), r"do: expected shape \(B, T, H, V\) = \(2, 11, 3, 6\)"),
        (dict(scale=np.array(np.nan)), "scale: expected a finite number or None"),
        (dict(scale=np.array(True)), "scale: expected a number, got True"),
        (dict(scale=np.zeros(2)), r"scale: expected a 0-d array \(an option\), got shape \(2,\)"),
        (dict(output_final_state=np.array(2)), "output_final_state: expected a boolean, got 2"),
    ]
    if not DEFAULT_FINAL_STATE[op]:
        cases.append(
            (
                dict(dht=np.zeros((B, H, K, V))),
                f"dht: a cotangent of 'ht', which op {op} outputs only when output_final_state is true "
                r"\(output_final_state is false here\)",
            )
        )
    if op == "simple_gla":
        cases += [
            (dict(g=None), r"inputs: missing required array 'g' \(B, T, H\)"),
            (dict(g=np.zeros((B, T, H, K))), r"g: expected 3 axes \(B, T, H\), got shape \(2, 11, 3, 5\)"),
            (dict(g=np.zeros((B, T, H + 1))), r"g: expected shape \(B, T, H\) = \(2, 11, 3\)"),
            (dict(g=np.full((B, T, H), 0.25)), r"g: expected natural-log gates <= 0 .*got 0.25 at index \(0, 0, 0\)"),
        ]
    if op == "gla":
        cases += [
            (dict(gk=None), r"inputs: missing required array 'gk' \(B, T, H, K\)"),
            (dict(gk=np.zeros((B, T, H))), r"gk: expected 4 axes \(B, T, H, K\), got shape \(2, 11, 3\)"),
            (dict(gk=np.full((B, T, H, K), 0.25)), r"gk: expected natural-log gates <= 0 .*got 0.25"),
        ]
    if op in ("linear_attn", "retention"):
        cases.append((dict(g=np.zeros((B, T, H))), f"inputs: unknown array 'g' for op {op}"))
    for changes, match in cases:
        with pytest.raises(ValueError, match=match):
            golden.run(op, _bad(op, rng, **changes))


def test_dht_is_refused_when_the_final_state_is_switched_off(rng):
    arrays = _bad("simple_gla", rng, output_final_state=np.array(False), dht=np.zeros((B, H, K, V)))
    with pytest.raises(ValueError, match="dht: a cotangent of 'ht', which op simple_gla outputs only when"):
        golden.run("simple_gla", arrays)


def _toy_op(forward, when="flag"):
    return golden.GoldenOp(
        name="toy",
        mirrors="nothing",
        layout="(N,)",
        inputs=(golden.Tensor("x", "(N,)"),),
        outputs=(golden.Tensor("y", "(N,)"), golden.Tensor("z", "(N,)", when=when)),
        options=(golden.Option("flag", bool, False),),
        forward=forward,
    )


def test_an_output_is_conditional_on_a_boolean_option_only(monkeypatch):
    with pytest.raises(ValueError, match="op: output 'z' of toy is produced when 'nope', not a boolean option"):
        golden.register(_toy_op(None, when="nope"))
    assert "toy" not in golden.OPS
    liar = _toy_op(lambda inputs, options: ({"y": inputs["x"], "z": inputs["x"]}, None))  # z although flag is false
    monkeypatch.setitem(golden.OPS, "toy", liar)
    with pytest.raises(RuntimeError, match=r"op toy: produced \['y', 'z'\], its declaration says \['y'\]"):
        golden.run("toy", {"x": np.zeros(3)})
