"""The numba LSTM kernels (``numba_kernels.lstm_cpu``) against the NumPy reference, through
``lstm(..., backend="numba")``: forward and every gradient, float64 and float32, gradcheck, bad input.

Error bound (``error_bounds``). The kernel and the reference compute the same function in a
different order: the kernel sums x W_ih^T + b_ih + b_hh for all steps first and then adds
W_hh h as axpys; its sigmoid is 1 / (1 + vexp(-a)), the reference's a branch on the sign; the
backward's weight gradients are one product over all B T steps instead of per-step sums. Each
of the two therefore differs from exact arithmetic by at most a first-order *running error
bound* E u (u the unit roundoff of its dtype), and

    |kernel - reference| <= (u_kernel + u_reference) E          (elementwise)

E is E/u of an error model with these rounding counts, propagated through the recurrence by
the absolute values of the derivatives (in float64, from the reference's values):

* a pre-activation: I + H + 4 roundings of the sum of the absolute values of its terms,
  |x_t| |W_ih|^T + |b_ih| + |b_hh| + |h_{t-1}| |W_hh|^T, plus |W_hh| E_h(t-1) carried from the
  previous step;
* sigmoid and tanh: 4 u relative to their value (exp within 1 ulp, 1 + e, a division; libm's and
  NumPy's tanh within 2 ulp), plus |derivative| times the error of the argument;
* every product and sum: one rounding of its value (three for c = f c + i g); a factor 1 - s
  or 1 - s^2 of an activation s: 2 u absolute (not relative: it cancels near saturation);
* the backward's products da W_hh and da W_ih: 4H + 1 roundings of |da| |W|; the weight and bias
  gradients, sums over the B T steps: B T + 2 roundings of the sum of |terms| (the kernel sums
  all at once, the reference per step then over time), plus the carried errors of da, h_{t-1}.

Float32 kernels run on float32 inputs and are compared with the float64 reference on the same
values upcast, so only the kernel's roundings count (u_32 + u_64). The bound is first order: the
neglected terms are O((E u)^2), below 1e-8 of the bound here. A bug (a wrong gate, a shifted
step, a missing term) errs by the size of the values themselves, orders above the bound.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.rnn import lstm, lstm_backward
from ref.mixers.rnn.lstm import KernelCache
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.rnn

NAMES = ("y", "hT", "cT", "dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")
UNIT = {np.float64: np.finfo(np.float64).eps / 2, np.float32: np.finfo(np.float32).eps / 2}
ACT = 4.0  # roundings of a sigmoid or tanh, relative to its value


def make_case(rng, B, T, I, H, *, with_h0=True, with_c0=True, bias=True, final=True, gain=1.0):
    """PyTorch's initialisation U(-1/sqrt(H), 1/sqrt(H)) (input weights times ``gain``: > 1
    saturates the gates), random states and cotangents, all float64."""
    k = 1.0 / np.sqrt(H)
    inputs = dict(
        x=rng.standard_normal((B, T, I)),
        h0=rng.uniform(-1, 1, (B, H)) if with_h0 else None,
        c0=rng.standard_normal((B, H)) if with_c0 else None,
        weight_ih=gain * rng.uniform(-k, k, (4 * H, I)),
        weight_hh=rng.uniform(-k, k, (4 * H, H)),
        bias_ih=rng.uniform(-k, k, 4 * H) if bias else None,
        bias_hh=rng.uniform(-k, k, 4 * H) if bias else None,
    )
    cot = dict(
        dy=rng.standard_normal((B, T, H)),
        dhT=rng.standard_normal((B, H)) if final else None,
        dcT=rng.standard_normal((B, H)) if final else None,
    )
    return inputs, cot


def cast(d, dtype):
    return {k: None if v is None else v.astype(dtype) for k, v in d.items()}


def run(inputs, cot, backend, truncation=None):
    y, hT, cT, cache = lstm(**inputs, backend=backend)
    grads = lstm_backward(cot["dy"], cot["dhT"], cot["dcT"], cache, truncation=truncation)
    return dict(zip(NAMES, (y, hT, cT, *grads))), cache


def error_bounds(inputs, cot, cache, truncation=None):
    """E (the bound over u, see the module docstring) for every output and gradient, from the
    float64 reference's step caches."""
    x, W_ih, W_hh = inputs["x"], inputs["weight_ih"], inputs["weight_hh"]
    B, T, I = x.shape
    H = W_hh.shape[1]
    aW_ih, aW_hh = np.abs(W_ih), np.abs(W_hh)
    abias = sum(np.abs(inputs[k]) for k in ("bias_ih", "bias_hh") if inputs[k] is not None)
    n_a = I + H + 4
    steps = [dict(zip(("i", "f", "g", "o", "tc"), c[3:8]), hp=c[1], cp=c[2]) for c in cache.caches]
    Eh, Ec = np.zeros((B, H)), np.zeros((B, H))  # the given initial states are exact
    for t, s in enumerate(steps):
        i, f, g, o, tc, hp, cp = (s[k] for k in ("i", "f", "g", "o", "tc", "hp", "cp"))
        s["Ehp"], s["Ecp"] = Eh, Ec
        Ma = np.abs(x[:, t]) @ aW_ih.T + abias + np.abs(hp) @ aW_hh.T  # (B, 4H)
        Ea = n_a * Ma + Eh @ aW_hh.T  # (B, 4H)
        Ea_i, Ea_f, Ea_g, Ea_o = np.split(Ea, 4, axis=1)
        s["Ei"], s["Ef"], s["Eo"] = (q * (1 - q) * e + ACT * q for q, e in ((i, Ea_i), (f, Ea_f), (o, Ea_o)))
        s["Eg"] = (1 - g * g) * Ea_g + ACT * np.abs(g)
        Ec = f * Ec + np.abs(cp) * s["Ef"] + np.abs(g) * s["Ei"] + i * s["Eg"] + 3 * (f * np.abs(cp) + np.abs(i * g))
        s["Etc"] = (1 - tc * tc) * Ec + ACT * np.abs(tc)
        Eh = np.abs(tc) * s["Eo"] + o * s["Etc"] + np.abs(o * tc)
        s["Eh"] = Eh
    E = dict(y=np.stack([s["Eh"] for s in steps], axis=1), hT=Eh, cT=Ec)

    dy = cot["dy"]
    dh_n = np.zeros((B, H)) if cot["dhT"] is None else cot["dhT"]
    dc_n = np.zeros((B, H)) if cot["dcT"] is None else cot["dcT"]
    Edh_n, Edc_n = np.zeros((B, H)), np.zeros((B, H))
    das, Edas = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        s = steps[t]
        i, f, g, o, tc, cp = (s[k] for k in ("i", "f", "g", "o", "tc", "cp"))
        Ei, Ef, Eg, Eo, Etc, Ecp = (s[k] for k in ("Ei", "Ef", "Eg", "Eo", "Etc", "Ecp"))
        dh = dy[:, t] + dh_n
        Edh = Edh_n + np.abs(dh)
        do = dh * tc
        Edo = np.abs(tc) * Edh + np.abs(dh) * Etc + np.abs(do)
        sc = o * (1 - tc * tc)
        Esc = (1 - tc * tc) * Eo + o * (2 * np.abs(tc) * Etc + 2) + np.abs(sc)
        dc = dc_n + dh * sc
        Edc = Edc_n + np.abs(sc) * Edh + np.abs(dh) * Esc + 2 * (np.abs(dc_n) + np.abs(dh * sc))
        q_i, q_f, q_o, q_g = i * (1 - i), f * (1 - f), o * (1 - o), 1 - g * g
        Eq_i, Eq_f, Eq_o = (np.abs(1 - 2 * q) * e + 2 for q, e in ((i, Ei), (f, Ef), (o, Eo)))
        Eq_g = 2 * np.abs(g) * Eg + 2
        da = np.concatenate([dc * g * q_i, dc * cp * q_f, dc * i * q_g, do * q_o], axis=1)  # (B, 4H)
        Eda = np.concatenate([
            np.abs(g * q_i) * Edc + np.abs(dc * q_i) * Eg + np.abs(dc * g) * Eq_i,
            np.abs(cp * q_f) * Edc + np.abs(dc * q_f) * Ecp + np.abs(dc * cp) * Eq_f,
            np.abs(i * q_g) * Edc + np.abs(dc * q_g) * Ei + np.abs(dc * i) * Eq_g,
            q_o * Edo + np.abs(do) * Eq_o,
        ], axis=1) + 3 * np.abs(da)
        das[t], Edas[t] = da, Eda
        dc_n, Edc_n = dc * f, f * Edc + np.abs(dc) * Ef + np.abs(dc * f)
        dh_n, Edh_n = da @ W_hh, Eda @ aW_hh + (4 * H + 1) * np.abs(da) @ aW_hh
        if truncation is not None and t > 0 and t % truncation == 0:
            dh_n, dc_n, Edh_n, Edc_n = (np.zeros((B, H)) for _ in range(4))
    da, Eda = np.stack(das, axis=1), np.stack(Edas, axis=1)  # (B, T, 4H)
    ada = np.abs(da)
    hp = np.stack([s["hp"] for s in steps], axis=1)  # (B, T, H)
    Ehp = np.stack([s["Ehp"] for s in steps], axis=1)
    n_bt = B * T + 2
    sum_bt = lambda a, b: np.einsum("btj,btk->jk", a, b)  # noqa: E731
    Ebias = Eda.sum((0, 1)) + n_bt * ada.sum((0, 1))
    E.update(
        dx=Eda @ aW_ih + (4 * H + 1) * ada @ aW_ih,
        dh0=Edh_n, dc0=Edc_n,
        dweight_ih=sum_bt(Eda, np.abs(x)) + n_bt * sum_bt(ada, np.abs(x)),
        dweight_hh=sum_bt(Eda, np.abs(hp)) + sum_bt(ada, Ehp) + n_bt * sum_bt(ada, np.abs(hp)),
        dbias_ih=Ebias, dbias_hh=Ebias,
    )
    return E


def check_against_reference(inputs, cot, dtype, truncation=None):
    want, ref_cache = run(inputs, cot, "numpy", truncation)  # float64
    got, cache = run(cast(inputs, dtype), cast(cot, dtype), "numba", truncation)
    assert isinstance(cache, KernelCache)
    E = error_bounds(inputs, cot, ref_cache, truncation)
    u = UNIT[dtype] + UNIT[np.float64]
    for name in NAMES:
        if want[name] is not None:
            assert got[name].dtype == dtype, name
        assert_within(name, got[name], want[name], u * E[name])


@st.composite
def lstm_cases(draw):
    return dict(
        B=draw(st.integers(1, 3)),
        T=draw(st.one_of(st.just(1), st.integers(1, 24))),
        I=draw(st.integers(1, 7)),
        H=draw(st.integers(1, 9)),
        with_h0=draw(st.booleans()),
        with_c0=draw(st.booleans()),
        bias=draw(st.booleans()),
        final=draw(st.booleans()),
        gain=draw(st.sampled_from([1.0, 8.0])),  # 8: saturated gates
        truncation=draw(st.sampled_from([None, None, 1, 3])),
        dtype=draw(st.sampled_from([np.float64, np.float32])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@given(lstm_cases())
def test_kernel_matches_reference(case):
    """Forward and every gradient within the derived bound: T = 1, odd sizes, one batch row (the
    serial kernel) and several, with and without each initial state, the biases, the final-state
    cotangents, saturated gates, truncated BPTT; float64 and float32."""
    c = dict(case)
    rng = np.random.default_rng(c.pop("seed"))
    dtype, truncation = c.pop("dtype"), c.pop("truncation")
    inputs, cot = make_case(rng, c.pop("B"), c.pop("T"), c.pop("I"), c.pop("H"), **c)
    check_against_reference(inputs, cot, dtype, truncation)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_reference_at_a_larger_size(rng, dtype):
    """Long enough for the errors to travel: B = 4, T = 100, I = 33, H = 47."""
    inputs, cot = make_case(rng, 4, 100, 33, 47)
    check_against_reference(inputs, cot, dtype)


def test_the_bound_is_tight_enough_to_catch_a_shifted_step(rng):
    """The float32 bound is far below a real bug: the reference with dy shifted by one step."""
    inputs, cot = make_case(rng, 2, 20, 5, 6)
    want, ref_cache = run(inputs, cot, "numpy")
    shifted = dict(cot, dy=np.roll(cot["dy"], 1, axis=1))
    wrong, _ = run(inputs, shifted, "numpy")
    E = error_bounds(inputs, cot, ref_cache)
    u = UNIT[np.float32] + UNIT[np.float64]
    with pytest.raises(AssertionError, match="outside the bound"):
        assert_within("dweight_hh", wrong["dweight_hh"], want["dweight_hh"], u * E["dweight_hh"])
    assert (u * E["dweight_hh"]).max() < 1e-3 * np.abs(want["dweight_hh"]).max()


@pytest.mark.parametrize("with_h0, bias", [(True, True), (False, False)])
def test_numba_backward_gradcheck(rng, with_h0, bias):
    inputs, _ = make_case(rng, 2, 5, 3, 4, with_h0=with_h0, with_c0=with_h0, bias=bias, gain=2.0)

    def forward(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
        return lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, backend="numba")

    report = gradcheck(forward, lstm_backward, inputs, rng=rng, name="lstm_numba")
    assert len(report.tensors) == 7 - (0 if with_h0 else 2) - (0 if bias else 2)


def test_auto_is_numba_and_backward_twice_gives_the_same(rng):
    inputs, cot = make_case(rng, 2, 4, 3, 5)
    *_, cache = lstm(**inputs, backend="auto")
    assert isinstance(cache, KernelCache)
    first = lstm_backward(cot["dy"], cot["dhT"], cot["dcT"], cache)
    second = lstm_backward(cot["dy"], cot["dhT"], cot["dcT"], cache)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_bad_input(rng):
    inputs, cot = make_case(rng, 2, 4, 3, 5)
    with pytest.raises(ValueError, match="backend: lstm supports 'numpy', 'numba', got 'cuda'"):
        lstm(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="backend: expected one of"):
        lstm(**inputs, backend="fortran")
    with pytest.raises(ValueError, match=r"weight_hh: .*\(4H, H\)"):
        lstm(**dict(inputs, weight_hh=inputs["weight_hh"][:-1]), backend="numba")
    *_, cache = lstm(**inputs, backend="numba")
    with pytest.raises(ValueError, match=r"dy: .*\(B, T, H\)"):
        lstm_backward(cot["dy"][:, :-1], None, None, cache)
    with pytest.raises(ValueError, match="dcT: .*float32"):
        lstm_backward(cot["dy"], None, cot["dcT"].astype(np.float32), cache)
    with pytest.raises(ValueError, match="truncation"):
        lstm_backward(cot["dy"], None, None, cache, truncation=0)
