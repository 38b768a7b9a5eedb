"""Golden op ``attention`` (FLA naive_parallel_attn conventions): outputs and gradients against an
independent computation (the recurrent form), options, float64, bad input naming the array."""

import numpy as np
import pytest

import ref.golden.attention  # noqa: F401  (registers the op)
from ref import golden
from ref.mixers.attention import attention_recurrent, attention_recurrent_backward

pytestmark = pytest.mark.attention


def _inputs(rng, B=2, T=7, HQ=4, H=2, K=5, V=3, dtype=np.float64):
    return {
        "q": rng.standard_normal((B, T, HQ, K)).astype(dtype),
        "k": rng.standard_normal((B, T, H, K)).astype(dtype),
        "v": rng.standard_normal((B, T, H, V)).astype(dtype),
    }


def _recurrent(q, k, v, do, **kwargs):
    o, cache = attention_recurrent(q, k, v, **kwargs)
    return o, *attention_recurrent_backward(do, cache)


def _bidirectional_by_decoding(q, k, v, do, scale):
    """Bidirectional attention row by row: query t alone (T = 1) after all T keys sees every key,
    so it is the causal recurrent form with one query; dk and dv add up over the rows."""
    T = q.shape[1]
    o, dq = np.empty_like(do), np.empty_like(q)
    dk, dv = np.zeros_like(k), np.zeros_like(v)
    for t in range(T):
        o_t, dq_t, dk_t, dv_t = _recurrent(q[:, t : t + 1], k, v, do[:, t : t + 1], mask="causal", scale=scale)
        o[:, t : t + 1], dq[:, t : t + 1] = o_t, dq_t
        dk += dk_t
        dv += dv_t
    return o, dq, dk, dv


@pytest.mark.parametrize(
    "options",
    [{}, {"causal": np.array(True), "scale": np.array(0.3)}, {"causal": np.array(False)}, {"window_size": np.array(3)}],
    ids=["defaults", "causal-scale", "bidirectional", "window"],
)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (3, 1)], ids=["MHA", "GQA", "MQA"])
def test_outputs_and_gradients_match_an_independent_form(options, heads, rng):
    arrays = _inputs(rng, HQ=heads[0], H=heads[1])
    arrays["do"] = rng.standard_normal((2, 7, heads[0], 3))
    out = golden.run("attention", {**arrays, **options})
    assert set(out) == {"o", "dq", "dk", "dv"}
    scale = float(options["scale"]) if "scale" in options else 5**-0.5
    q, k, v, do = arrays["q"], arrays["k"], arrays["v"], arrays["do"]
    if "causal" in options and not options["causal"]:
        want = _bidirectional_by_decoding(q, k, v, do, scale)
    elif "window_size" in options:
        want = _recurrent(q, k, v, do, mask="sliding_window", window=int(options["window_size"]), scale=scale)
    else:
        want = _recurrent(q, k, v, do, mask="causal", scale=scale)
    for name, x in zip(("o", "dq", "dk", "dv"), want):
        assert out[name].dtype == np.float64
        np.testing.assert_allclose(out[name], x, rtol=1e-12, atol=1e-13, err_msg=name)


def test_causal_row_zero_is_v_zero_and_float32_runs_in_float64(rng):
    arrays = _inputs(rng, HQ=2, H=2, dtype=np.float32)
    out = golden.run("attention", arrays)
    assert set(out) == {"o"} and out["o"].dtype == np.float64
    np.testing.assert_allclose(out["o"][:, 0], arrays["v"][:, 0].astype(np.float64), rtol=1e-15)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("k"), r"inputs: missing required array 'k' \(B, T, H, K\) for op attention"),
        (lambda a: a.update(mask=np.ones((7, 7), bool)), "inputs: unknown array 'mask'"),
        (
            lambda a: a.update(q=a["q"].astype(np.int64)),
            r"q: expected a floating array \(B, T, HQ, K\), got dtype int64",
        ),
        (
            lambda a: a.update(k=a["k"][:, :5], v=a["v"][:, :5]),
            r"k: expected shape \(B, T, H, K\) with \(B, T\) = \(2, 7\)",
        ),
        (lambda a: a.update(v=a["v"][:, :, :1]), r"v: expected shape \(B, S, H, V\) with \(B, S, H\) = \(2, 7, 2\)"),
        (lambda a: a.update(k=a["k"][:, :, :, :4]), r"k: expected shape \(B, S, H, K\) with B = 2 and K = 5"),
        (
            lambda a: a.update(k=np.zeros((2, 7, 3, 5)), v=np.zeros((2, 7, 3, 3))),
            "k: expected a number of heads H that divides HQ = 4",
        ),
        (lambda a: a.update(do=np.zeros((2, 7, 4, 5))), r"do: expected shape \(B, T, HQ, V\) = \(2, 7, 4, 3\)"),
        (
            lambda a: a.update(causal=np.array(False), window_size=np.array(2)),
            "window_size: only used with causal = true",
        ),
        (lambda a: a.update(window_size=np.array(0)), "window_size: expected an integer >= 1, got 0"),
        (lambda a: a.update(scale=np.array([1.0, 2.0])), r"scale: expected a 0-d array \(an option\)"),
    ],
)
def test_bad_input_names_the_array(change, match, rng):
    arrays = _inputs(rng)
    change(arrays)
    with pytest.raises(ValueError, match=match):
        golden.run("attention", arrays)


def test_the_op_is_described():
    op = golden.get("attention")
    assert "naive_parallel_attn" in op.mirrors
    assert [t.name for t in op.inputs] == ["q", "k", "v"] and [t.name for t in op.outputs] == ["o"]
    assert {o.name: o.default for o in op.options} == {"scale": None, "causal": True, "window_size": None}
