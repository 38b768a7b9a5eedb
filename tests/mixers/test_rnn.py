"""RNN, LSTM and GRU (ref.mixers.rnn): every backward against finite differences, the step API
against the sequence API, bidirectional and stacked layers against the cells they compose,
truncated BPTT against a model whose state is detached at the segment boundaries, an independent
loop over PyTorch's formulas, and bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ref.mixers.rnn import (
    gru,
    gru_backward,
    gru_step,
    gru_step_backward,
    lstm,
    lstm_backward,
    lstm_step,
    lstm_step_backward,
    param_names,
    rnn,
    rnn_backward,
    rnn_step,
    rnn_step_backward,
    stacked_rnn,
    stacked_rnn_backward,
)
from ref.nn import gradcheck
from tests.compare import assert_within

pytestmark = pytest.mark.rnn

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
U = np.finfo(np.float64).eps / 2


def weights(rng, mode, I, H, bias=True, gain=1.0):
    """PyTorch's initialisation U(-1/sqrt(H), 1/sqrt(H)) times ``gain`` (gain > 1 for gradients of size)."""
    G, k = GATES[mode], gain / np.sqrt(H)
    p = dict(weight_ih=rng.uniform(-k, k, (G * H, I)), weight_hh=rng.uniform(-k, k, (G * H, H)))
    p["bias_ih"] = rng.uniform(-k, k, G * H) if bias else None
    p["bias_hh"] = rng.uniform(-k, k, G * H) if bias else None
    return p


def run_sequence(mode, x, h0, c0, p, dy, dhT, dcT, truncation=None):
    """One sequence call and its backward, as a dict by name."""
    if mode == "lstm":
        y, hT, cT, cache = lstm(x, h0, c0, **p)
        grads = lstm_backward(dy, dhT, dcT, cache, truncation=truncation)
        names = ("dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")
        return dict(y=y, hT=hT, cT=cT, **dict(zip(names, grads)))
    names = ("dx", "dh0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")
    if mode == "gru":
        y, hT, cache = gru(x, h0, **p)
        grads = gru_backward(dy, dhT, cache, truncation=truncation)
    else:
        y, hT, cache = rnn(x, h0, **p, nonlinearity=mode[4:])
        grads = rnn_backward(dy, dhT, cache, truncation=truncation)
    return dict(y=y, hT=hT, **dict(zip(names, grads)))


# --- gradients against finite differences -----------------------------------------------------


@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("with_h0, bias", [(True, True), (False, False)])
def test_sequence_backward_gradcheck(rng, mode, with_h0, bias):
    B, T, I, H = 2, 5, 3, 4
    x = rng.standard_normal((B, T, I))
    p = weights(rng, mode, I, H, bias, gain=2.0)
    inputs = dict(x=x, h0=rng.standard_normal((B, H)) if with_h0 else None)
    if mode == "lstm":
        inputs["c0"] = rng.standard_normal((B, H)) if with_h0 else None
        forward, backward = lstm, lstm_backward
    elif mode == "gru":
        forward, backward = gru, gru_backward
    else:
        def forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
            return rnn(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity=mode[4:])
        backward = rnn_backward
    report = gradcheck(forward, backward, {**inputs, **p}, rng=rng, name=mode)
    absent = (0 if with_h0 else 1 + (mode == "lstm")) + (0 if bias else 2)
    assert len(report.tensors) == (7 if mode == "lstm" else 6) - absent
    if mode == "rnn_relu":  # finite differences need the pre-activations away from relu's kink, and both sides
        a = np.stack([c[2] for c in forward(**inputs, **p)[-1].caches])
        assert np.abs(a).min() > 1e-4 and (a < 0).any() and (a > 0).any()


@pytest.mark.parametrize("mode", ["rnn_relu", "lstm", "gru"])
def test_float32_in_float32_out(rng, mode):
    B, T, I, H = 2, 3, 2, 3
    p = {k: v.astype(np.float32) for k, v in weights(rng, mode, I, H).items()}
    x, h0 = rng.standard_normal((B, T, I)).astype(np.float32), rng.standard_normal((B, H)).astype(np.float32)
    c0 = h0.copy() if mode == "lstm" else None
    dy, dhT = rng.standard_normal((B, T, H)).astype(np.float32), rng.standard_normal((B, H)).astype(np.float32)
    out = run_sequence(mode, x, h0, c0, p, dy, dhT, dhT.copy() if mode == "lstm" else None, truncation=2)
    for name, value in out.items():
        assert value.dtype == np.float32, name


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_step_backward_gradcheck(rng, mode):
    """The step pair alone: the gradients of the output h_t and of the state are separate inputs."""
    B, I, H = 3, 4, 2
    p = weights(rng, mode, I, H, gain=2.0)
    inputs = dict(x_t=rng.standard_normal((B, I)), h=rng.standard_normal((B, H)))
    if mode == "lstm":
        inputs["c"] = rng.standard_normal((B, H))

        def forward(x_t, h, c, **p):
            out, (h1, c1), cache = lstm_step(x_t, (h, c), p)
            return out, h1, c1, cache

        def backward(dout, dh1, dc1, cache):
            dx_t, (dh, dc), dp = lstm_step_backward(dout, (dh1, dc1), cache)
            return dict(x_t=dx_t, h=dh, c=dc, **dp)
    else:
        step, step_backward = (gru_step, gru_step_backward) if mode == "gru" else (rnn_step, rnn_step_backward)

        def forward(x_t, h, **p):
            out, (h1,), cache = step(x_t, (h,), p)
            return out, h1, cache

        def backward(dout, dh1, cache):
            dx_t, (dh,), dp = step_backward(dout, (dh1,), cache)
            return dict(x_t=dx_t, h=dh, **dp)

    gradcheck(forward, backward, {**inputs, **p}, rng=rng, name=mode + "_step")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_stacked_bidirectional_backward_gradcheck(rng, mode):
    B, T, I, H, L = 2, 4, 3, 2, 2
    names = param_names(L, True)
    G = GATES[mode]
    k = 2.0 / np.sqrt(H)
    params = {}
    for n in names:
        layer = int(n.split("_l")[1][0])
        cols = I if layer == 0 else 2 * H
        shape = {"weight_ih": (G * H, cols), "weight_hh": (G * H, H)}.get(n.split("_l")[0], (G * H,))
        params[n] = rng.uniform(-k, k, shape)
    states = ("h0", "c0") if mode == "lstm" else ("h0",)
    inputs = dict(x=rng.standard_normal((B, T, I)), **{s: rng.standard_normal((2 * L, B, H)) for s in states})

    def forward(x, h0, c0=None, **params):
        state0 = (h0, c0) if mode == "lstm" else (h0,)
        y, sT, cache = stacked_rnn(mode, x, params, state0, num_layers=L, bidirectional=True)
        return (y, *sT, cache)

    def backward(*args):
        *cot, cache = args
        dx, ds0, dp = stacked_rnn_backward(cot[0], tuple(cot[1:]), cache)
        return dict(x=dx, **dict(zip(states, ds0)), **dp)

    gradcheck(forward, backward, {**inputs, **params}, rng=rng, name=f"stacked {mode}")


# --- truncated backprop through time ------------------------------------------------------------


def detached_forward(mode, k, fixed):
    """The model whose state entering each segment [jk, (j+1)k), j >= 1, is the constant ``fixed[j]``.

    Its finite differences are the truncated gradients: what reaches an input or a weight is the
    gradient of the losses of its own segment only. ``fixed[j]``, the states at the boundaries,
    were computed once from the unperturbed inputs. Returns forward(**inputs) -> (*outputs, cache)
    with the cache of the full model (the truncated backward's).
    """

    def forward(x, h0, c0=None, **p):
        T = x.shape[1]
        ys, state = [], (h0, c0)
        for j, start in enumerate(range(0, T, k)):
            if j > 0:
                state = fixed[j]  # detached: a constant, whatever the inputs
            out = run_sequence(mode, x[:, start:start + k], state[0], state[1], p, None, None, None)
            ys.append(out["y"])
            state = (out["hT"], out.get("cT"))
        cache = full_cache(mode, x, h0, c0, p)
        return (np.concatenate(ys, axis=1), *[s for s in state if s is not None], cache)

    return forward


def full_cache(mode, x, h0, c0, p):
    if mode == "lstm":
        return lstm(x, h0, c0, **p)[3]
    if mode == "gru":
        return gru(x, h0, **p)[2]
    return rnn(x, h0, **p, nonlinearity=mode[4:])[2]


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("T, k", [(7, 3), (6, 2), (5, 1)])
def test_truncated_bptt_is_the_gradient_of_the_detached_model(rng, mode, T, k):
    B, I, H = 2, 3, 3
    p = weights(rng, mode, I, H, gain=2.0)
    inputs = dict(x=rng.standard_normal((B, T, I)), h0=rng.standard_normal((B, H)))
    if mode == "lstm":
        inputs["c0"] = rng.standard_normal((B, H))
    fixed = {}  # the states at the segment boundaries, from the unperturbed inputs
    for j, start in enumerate(range(0, T, k)):
        x = inputs["x"][:, :start]
        if start > 0:
            out = run_sequence(mode, x, inputs["h0"], inputs.get("c0"), p, None, None, None)
            fixed[j] = (out["hT"], out.get("cT"))
    backward_full = {"lstm": lstm_backward, "gru": gru_backward}.get(mode, rnn_backward)

    def backward(*args):
        return backward_full(*args, truncation=k)

    gradcheck(detached_forward(mode, k, fixed), backward, {**inputs, **p}, rng=rng, name=f"{mode} truncation={k}")

    # and the cut matters: the full gradient of the weights differs
    cot = dict(dy=rng.standard_normal((B, T, H)), dhT=rng.standard_normal((B, H)))
    cot["dcT"] = rng.standard_normal((B, H)) if mode == "lstm" else None
    full = run_sequence(mode, inputs["x"], inputs["h0"], inputs.get("c0"), p, **cot)
    cut = run_sequence(mode, inputs["x"], inputs["h0"], inputs.get("c0"), p, **cot, truncation=k)
    assert np.abs(full["dweight_hh"] - cut["dweight_hh"]).max() > 1e-3
    assert np.array_equal(full["y"], cut["y"])


@pytest.mark.parametrize("mode", ["rnn_relu", "lstm", "gru"])
def test_truncation_at_least_T_is_full_bptt(rng, mode):
    B, T, I, H = 2, 6, 3, 4
    p = weights(rng, mode, I, H)
    x, h0, c0 = rng.standard_normal((B, T, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    cot = dict(dy=rng.standard_normal((B, T, H)), dhT=rng.standard_normal((B, H)), dcT=rng.standard_normal((B, H)))
    if mode != "lstm":
        c0, cot["dcT"] = None, None
    full = run_sequence(mode, x, h0, c0, p, **cot)
    for k in (T, T + 5):
        got = run_sequence(mode, x, h0, c0, p, **cot, truncation=k)
        for name, value in full.items():
            assert np.array_equal(got[name], value), name


# --- the step API and the sequence API agree ---------------------------------------------------


@st.composite
def shapes(draw):
    return dict(
        mode=draw(st.sampled_from(["rnn_tanh", "rnn_relu", "lstm", "gru"])),
        B=draw(st.integers(1, 3)),
        T=draw(st.one_of(st.just(1), st.integers(1, 9))),
        I=draw(st.integers(1, 5)),
        H=draw(st.integers(1, 6)),
        with_h0=draw(st.booleans()),
        with_final=draw(st.booleans()),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@given(shapes())
def test_step_api_and_sequence_api_agree(case):
    """Looping the public step pair by hand gives exactly the sequence call, forward and backward."""
    rng = np.random.default_rng(case["seed"])
    mode, B, T, I, H = case["mode"], case["B"], case["T"], case["I"], case["H"]
    p = weights(rng, mode, I, H, case["bias"], gain=2.0)
    x = rng.standard_normal((B, T, I))
    n_states = 2 if mode == "lstm" else 1
    state0 = tuple(rng.standard_normal((B, H)) for _ in range(n_states)) if case["with_h0"] else None
    dy = rng.standard_normal((B, T, H))
    dfinal = tuple(rng.standard_normal((B, H)) for _ in range(n_states)) if case["with_final"] else None
    if mode == "lstm":
        step, step_backward = lstm_step, lstm_step_backward
    elif mode == "gru":
        step, step_backward = gru_step, gru_step_backward
    else:
        nl = mode[4:]

        def step(x_t, state, params):
            return rnn_step(x_t, state, params, nonlinearity=nl)

        step_backward = rnn_step_backward

    state = state0 if state0 is not None else tuple(np.zeros((B, H)) for _ in range(n_states))
    ys, caches = [], []
    for t in range(T):
        h, state, cache = step(x[:, t], state, p)
        ys.append(h)
        caches.append(cache)
    dstate = dfinal
    dxs = [None] * T
    dp = {k: 0.0 for k in p}
    for t in range(T - 1, -1, -1):
        dxs[t], dstate, dpt = step_backward(dy[:, t], dstate, caches[t])
        dp = {k: None if v is None else dp[k] + v for k, v in dpt.items()}

    s0 = (*(state0 or (None,)), None)  # (h0, c0 or None)
    df = (*(dfinal or (None,)), None)  # (dhT, dcT or None)
    want = run_sequence(mode, x, s0[0], s0[1], p, dy, df[0], df[1])
    assert np.array_equal(np.stack(ys, axis=1), want["y"])
    assert np.array_equal(state[0], want["hT"])
    if mode == "lstm":
        assert np.array_equal(state[1], want["cT"])
    assert np.array_equal(np.stack(dxs, axis=1), want["dx"])
    for k in p:
        if p[k] is None:
            assert want["d" + k] is None and dp[k] is None
        else:
            assert np.array_equal(dp[k], want["d" + k]), k
    if state0 is None:
        assert want["dh0"] is None
    else:
        assert np.array_equal(dstate[0], want["dh0"])
        if mode == "lstm":
            assert np.array_equal(dstate[1], want["dc0"])


# --- bidirectional and stacked layers are the cells composed -----------------------------------


def flat(mode, I, H, L, bidirectional, rng):
    """Random parameters in PyTorch's names for ``L`` layers."""
    D = 2 if bidirectional else 1
    G, k = GATES[mode], 1.0 / np.sqrt(H)
    params = {}
    for n in param_names(L, bidirectional):
        kind, layer = n.split("_l")[0], int(n.split("_l")[1][0])
        cols = I if layer == 0 else D * H
        shape = {"weight_ih": (G * H, cols), "weight_hh": (G * H, H)}.get(kind, (G * H,))
        params[n] = rng.uniform(-k, k, shape)
    return params


def layer_params(params, layer, suffix=""):
    return {kind: params[f"{kind}_l{layer}{suffix}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_bidirectional_is_forward_pass_and_reversed_pass_concatenated(rng, mode):
    B, T, I, H = 2, 5, 3, 4
    params = flat(mode, I, H, 1, True, rng)
    n = 2 if mode == "lstm" else 1
    x = rng.standard_normal((B, T, I))
    state0 = tuple(rng.standard_normal((2, B, H)) for _ in range(n))
    dy = rng.standard_normal((B, T, 2 * H))
    dstate = tuple(rng.standard_normal((2, B, H)) for _ in range(n))
    y, sT, cache = stacked_rnn(mode, x, params, state0, bidirectional=True)
    dx, ds0, dp = stacked_rnn_backward(dy, dstate, cache)

    def cell(x, d, dy_d):
        s = [s0[d] for s0 in state0] + [None] * (2 - n)
        f = [ds[d] for ds in dstate] + [None] * (2 - n)
        return run_sequence(mode, x, s[0], s[1], layer_params(params, 0, ("", "_reverse")[d]), dy_d, f[0], f[1])

    fwd = cell(x, 0, dy[:, :, :H])
    rev = cell(x[:, ::-1], 1, dy[:, ::-1, H:])  # the reversed pass reads, and is read, backwards in time
    assert np.array_equal(y, np.concatenate([fwd["y"], rev["y"][:, ::-1]], axis=2))
    assert np.array_equal(sT[0], np.stack([fwd["hT"], rev["hT"]]))
    assert np.array_equal(ds0[0], np.stack([fwd["dh0"], rev["dh0"]]))
    if mode == "lstm":
        assert np.array_equal(sT[1], np.stack([fwd["cT"], rev["cT"]]))
        assert np.array_equal(ds0[1], np.stack([fwd["dc0"], rev["dc0"]]))
    assert np.array_equal(dx, fwd["dx"] + rev["dx"][:, ::-1])
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert np.array_equal(dp[f"{kind}_l0"], fwd["d" + kind])
        assert np.array_equal(dp[f"{kind}_l0_reverse"], rev["d" + kind])


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("truncation", [None, 2])
def test_stacked_is_the_layers_composed(rng, mode, truncation):
    B, T, I, H, L = 2, 5, 3, 4, 3
    params = flat(mode, I, H, L, False, rng)
    n = 2 if mode == "lstm" else 1
    x = rng.standard_normal((B, T, I))
    state0 = tuple(rng.standard_normal((L, B, H)) for _ in range(n))
    dy = rng.standard_normal((B, T, H))
    dstate = tuple(rng.standard_normal((L, B, H)) for _ in range(n))
    y, sT, cache = stacked_rnn(mode, x, params, state0, num_layers=L)
    dx, ds0, dp = stacked_rnn_backward(dy, dstate, cache, truncation=truncation)

    inp, layers = x, []
    for layer in range(L):
        s = [s0[layer] for s0 in state0] + [None] * (2 - n)
        out = run_sequence(mode, inp, s[0], s[1], layer_params(params, layer), None, None, None)
        layers.append((inp, s))
        inp = out["y"]
        assert np.array_equal(sT[0][layer], out["hT"])
    assert np.array_equal(y, inp)
    dinp = dy
    for layer in range(L - 1, -1, -1):
        inp, s = layers[layer]
        f = [d[layer] for d in dstate] + [None] * (2 - n)
        out = run_sequence(mode, inp, s[0], s[1], layer_params(params, layer), dinp, f[0], f[1], truncation)
        assert np.array_equal(ds0[0][layer], out["dh0"])
        if mode == "lstm":
            assert np.array_equal(ds0[1][layer], out["dc0"])
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert np.array_equal(dp[f"{kind}_l{layer}"], out["d" + kind])
        dinp = out["dx"]
    assert np.array_equal(dx, dinp)


def test_stacked_without_state0_or_biases(rng):
    B, T, I, H = 1, 3, 2, 3
    params = {k: v for k, v in flat("gru", I, H, 2, True, rng).items() if k.startswith("weight")}
    y, (hT,), cache = stacked_rnn("gru", rng.standard_normal((B, T, I)), params, num_layers=2, bidirectional=True)
    assert y.shape == (B, T, 2 * H) and hT.shape == (4, B, H)
    dx, ds0, dp = stacked_rnn_backward(rng.standard_normal(y.shape), None, cache)
    assert ds0 is None and set(dp) == set(params) and dx.shape == (B, T, I)


# --- an independent implementation: a plain loop over PyTorch's formulas ------------------------


def sigm(v):
    return 1.0 / (1.0 + np.exp(-v))


def loop_lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """torch.nn.LSTM's documented equations, one sample and one gate block at a time."""
    B, T, _ = x.shape
    H = h0.shape[1]
    W_ii, W_if, W_ig, W_io = (W_ih[j * H:(j + 1) * H] for j in range(4))
    W_hi, W_hf, W_hg, W_ho = (W_hh[j * H:(j + 1) * H] for j in range(4))
    b_ii, b_if, b_ig, b_io = (b_ih[j * H:(j + 1) * H] for j in range(4))
    b_hi, b_hf, b_hg, b_ho = (b_hh[j * H:(j + 1) * H] for j in range(4))
    y = np.zeros((B, T, H))
    hT, cT = np.zeros((B, H)), np.zeros((B, H))
    for b in range(B):
        h, c = h0[b], c0[b]
        for t in range(T):
            xt = x[b, t]
            i = sigm(W_ii.dot(xt) + b_ii + W_hi.dot(h) + b_hi)
            f = sigm(W_if.dot(xt) + b_if + W_hf.dot(h) + b_hf)
            g = np.tanh(W_ig.dot(xt) + b_ig + W_hg.dot(h) + b_hg)
            o = sigm(W_io.dot(xt) + b_io + W_ho.dot(h) + b_ho)
            c = f * c + i * g
            h = o * np.tanh(c)
            y[b, t] = h
        hT[b], cT[b] = h, c
    return y, hT, cT


def loop_gru(x, h0, W_ih, W_hh, b_ih, b_hh):
    """torch.nn.GRU's documented equations, one sample and one gate block at a time."""
    B, T, _ = x.shape
    H = h0.shape[1]
    W_ir, W_iz, W_in = (W_ih[j * H:(j + 1) * H] for j in range(3))
    W_hr, W_hz, W_hn = (W_hh[j * H:(j + 1) * H] for j in range(3))
    b_ir, b_iz, b_in = (b_ih[j * H:(j + 1) * H] for j in range(3))
    b_hr, b_hz, b_hn = (b_hh[j * H:(j + 1) * H] for j in range(3))
    y = np.zeros((B, T, H))
    for b in range(B):
        h = h0[b]
        for t in range(T):
            xt = x[b, t]
            r = sigm(W_ir.dot(xt) + b_ir + W_hr.dot(h) + b_hr)
            z = sigm(W_iz.dot(xt) + b_iz + W_hz.dot(h) + b_hz)
            n = np.tanh(W_in.dot(xt) + b_in + r * (W_hn.dot(h) + b_hn))
            h = (1 - z) * n + z * h
            y[b, t] = h
    return y, y[:, -1].copy()


def loop_bound(x, p, T, big):
    """How far two correct float64 evaluations of an LSTM or GRU can be apart (elementwise, any output).

    One step: a pre-activation is a sum of n = I + H + 2 terms, rounded with error at most
    (n + 1) u S, S = max sum of |terms| (at most |x| |W_ih| + |W_hh| max|h| + |b|); sigmoid and tanh
    have slopes <= 1 and each elementwise operation after them (exp, divide, the c or h update)
    adds u times its operands, at most 10 of them of size <= 1 + M. So one step errs by
    e = (n + 11) u (S + 1 + M), M = max |c| (LSTM) or max |W_hn h + b_hn| (GRU).
    An error d in the incoming state grows to at most L d, with L = 1 + (2 + M) ||W_hh||_inf: the
    pre-activations move by ||W_hh||_inf d, sigmoid by a quarter of that and tanh by all of it;
    for the LSTM d c' <= d c + (|c|/4 + 1.5) d a and d h' <= d a / 4 + d c'; for the GRU
    d h' <= d h + d n + 2 d z, d n <= (1 + |gh_n| / 4) d a. After T steps: e (1 + L + ... + L^(T-1)).
    Two implementations: twice that. A bug (a swapped gate, the reset gate applied before W_hn) is
    of the size of the outputs themselves, orders of magnitude above it.
    """
    I, H = x.shape[2], p["weight_hh"].shape[1]
    n = I + H + 2
    S = (np.abs(x).max() * np.abs(p["weight_ih"]).sum(axis=1) + np.abs(p["weight_hh"]).sum(axis=1) * max(1.0, big)
         + np.abs(p["bias_ih"]) + np.abs(p["bias_hh"])).max()
    e = (n + 11) * U * (S + 1 + big)
    L = 1 + (2 + big) * np.abs(p["weight_hh"]).sum(axis=1).max()
    return 2 * e * sum(L**k for k in range(T))


@pytest.mark.parametrize("T", [1, 6])
def test_lstm_matches_a_plain_loop_over_pytorchs_formulas(rng, T):
    B, I, H = 2, 3, 5
    p = weights(rng, "lstm", I, H)
    x, h0, c0 = rng.standard_normal((B, T, I)), rng.uniform(-1, 1, (B, H)), rng.standard_normal((B, H))
    want = loop_lstm(x, h0, c0, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    y, hT, cT, _ = lstm(x, h0, c0, **p)
    tol = loop_bound(x, p, T, big=np.abs(c0).max() + T)  # |c_t| <= |c_{t-1}| + 1: |f c + i g| <= |c| + 1
    assert tol < 1e-6
    for name, got, w in zip(("y", "hT", "cT"), (y, hT, cT), want):
        assert_within(name, got, w, tol)

    # the bound tells gate order i, f, g, o from the common mix-up i, f, o, g
    blocks = [slice(j * H, (j + 1) * H) for j in (0, 1, 3, 2)]
    swapped = {k: np.concatenate([v[b] for b in blocks]) for k, v in p.items()}
    assert np.abs(lstm(x, h0, c0, **swapped)[0] - y).max() > 1e3 * tol


@pytest.mark.parametrize("T", [1, 6])
def test_gru_matches_a_plain_loop_over_pytorchs_formulas(rng, T):
    B, I, H = 2, 3, 5
    p = weights(rng, "gru", I, H)
    x, h0 = rng.standard_normal((B, T, I)), rng.uniform(-1, 1, (B, H))
    want = loop_gru(x, h0, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    y, hT, _ = gru(x, h0, **p)
    gh_n = np.abs(p["weight_hh"][2 * H:]).sum(axis=1).max() + np.abs(p["bias_hh"][2 * H:]).max()
    tol = loop_bound(x, p, T, big=max(gh_n, 1.0))
    assert tol < 1e-6
    assert_within("y", y, want[0], tol)
    assert_within("hT", hT, want[1], tol)

    # the bound tells PyTorch's GRU from the paper's, which applies r before W_hn
    H3 = slice(2 * H, 3 * H)
    h, paper = h0, []
    for t in range(T):
        r = sigm(x[:, t] @ p["weight_ih"][:H].T + p["bias_ih"][:H] + h @ p["weight_hh"][:H].T + p["bias_hh"][:H])
        z = sigm(x[:, t] @ p["weight_ih"][H:2 * H].T + p["bias_ih"][H:2 * H] + h @ p["weight_hh"][H:2 * H].T
                 + p["bias_hh"][H:2 * H])
        n = np.tanh(x[:, t] @ p["weight_ih"][H3].T + p["bias_ih"][H3]
                    + (r * h) @ p["weight_hh"][H3].T + p["bias_hh"][H3])  # W_hn (r * h): the paper's order
        h = (1 - z) * n + z * h
        paper.append(h)
    assert np.abs(np.stack(paper, axis=1) - y).max() > 1e3 * tol


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input(rng):
    B, T, I, H = 2, 4, 3, 5
    x = rng.standard_normal((B, T, I))
    h0, c0 = np.zeros((B, H)), np.zeros((B, H))
    p = weights(rng, "lstm", I, H)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(4H, H\) = \(20, 5\)"):
        lstm(x, h0, c0, **{**p, "weight_hh": np.zeros((3 * H, H))})
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \(4H, I\) = \(20, 3\) \(hidden size H = 5"):
        lstm(x, h0, c0, **{**p, "weight_ih": np.zeros((4 * H + 1, I))})
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \(4H, I\) = \(20, 3\)"):
        lstm(x, h0, c0, **{**p, "weight_ih": np.zeros((4 * H, I + 1))})
    with pytest.raises(ValueError, match=r"bias_hh: expected shape \(4H,\) = \(20,\)"):
        lstm(x, h0, c0, **{**p, "bias_hh": np.zeros(3 * H)})
    with pytest.raises(ValueError, match=r"h0: expected shape \(B, H\) = \(2, 5\) \(batch B = 2 from x"):
        lstm(x, np.zeros((B + 1, H)), c0, **p)
    with pytest.raises(ValueError, match=r"c0: expected shape \(B, H\) = \(2, 5\)"):
        lstm(x, h0, np.zeros((1, H)), **p)
    with pytest.raises(ValueError, match=r"c0: expected dtype float64"):
        lstm(x, h0, c0.astype(np.float32), **p)
    with pytest.raises(ValueError, match=r"x: expected 3 axes \(B, T, I\)"):
        lstm(x[0], h0, c0, **p)
    with pytest.raises(ValueError, match=r"x: expected a time axis of length >= 1"):
        lstm(x[:, :0], h0, c0, **p)

    g = weights(rng, "gru", I, H)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(3H, H\) = \(15, 5\)"):
        gru(x, h0, **{**g, "weight_hh": p["weight_hh"]})
    with pytest.raises(ValueError, match=r"h0: expected shape \(B, H\) = \(2, 5\)"):
        gru(x, np.zeros((B, H + 1)), **g)
    r = weights(rng, "rnn_tanh", I, H)
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \(H, I\) = \(5, 3\)"):
        rnn(x, h0, **{**r, "weight_ih": np.zeros((H, I + 2))})
    with pytest.raises(ValueError, match=r"nonlinearity: expected one of 'tanh', 'relu', got 'sigmoid'"):
        rnn(x, h0, **r, nonlinearity="sigmoid")

    _, _, _, cache = lstm(x, h0, c0, **p)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"truncation: expected an integer >= 1, got"):
            lstm_backward(None, None, None, cache, truncation=bad)
    _, _, gcache = gru(x, h0, **g)
    with pytest.raises(ValueError, match=r"truncation: expected an integer >= 1, got 0"):
        gru_backward(None, None, gcache, truncation=0)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, H\) = \(2, 4, 5\)"):
        lstm_backward(np.zeros((B, T, H + 1)), None, None, cache)
    with pytest.raises(ValueError, match=r"dcT: expected shape \(B, H\) = \(2, 5\)"):
        lstm_backward(None, None, np.zeros((B + 1, H)), cache)

    with pytest.raises(ValueError, match=r"c: expected shape \(B, H\) = \(2, 5\) \(batch B = 2 from x_t"):
        lstm_step(x[:, 0], (h0, np.zeros((3, H))), p)
    with pytest.raises(ValueError, match=r"state: expected a tuple \(h, c\)"):
        lstm_step(x[:, 0], (h0,), p)
    with pytest.raises(ValueError, match=r"weight_hh: expected shape \(3H, H\)"):
        gru_step(x[:, 0], (h0,), {**g, "weight_hh": np.zeros((3 * H + 1, H))})


def test_bad_input_stacked(rng):
    B, T, I, H = 2, 4, 3, 5
    x = rng.standard_normal((B, T, I))
    params = flat("lstm", I, H, 2, True, rng)
    with pytest.raises(ValueError, match=r"weight_ih_l1_reverse: expected shape \(4H, I\) = \(20, 10\)"):
        stacked_rnn("lstm", x, {**params, "weight_ih_l1_reverse": np.zeros((4 * H, H))}, num_layers=2,
                    bidirectional=True)
    with pytest.raises(ValueError, match=r"params: unexpected entry 'weight_ih_l2'"):
        stacked_rnn("lstm", x, {**params, "weight_ih_l2": np.zeros((4 * H, I))}, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"weight_hh_l1: missing"):
        stacked_rnn("lstm", x, {k: v for k, v in params.items() if k != "weight_hh_l1"}, num_layers=2,
                    bidirectional=True)
    with pytest.raises(ValueError, match=r"c0: expected shape \(L \* D, B, H\) = \(4, 2, 5\)"):
        stacked_rnn("lstm", x, params, (np.zeros((4, B, H)), np.zeros((4, B + 1, H))), num_layers=2,
                    bidirectional=True)
    with pytest.raises(ValueError, match=r"state0: expected None or a tuple \(h0, c0\)"):
        stacked_rnn("lstm", x, params, (np.zeros((4, B, H)),), num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"mode: expected one of"):
        stacked_rnn("transformer", x, params, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"num_layers: expected an integer >= 1, got 0"):
        stacked_rnn("lstm", x, params, num_layers=0)
    y, sT, cache = stacked_rnn("lstm", x, params, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"truncation: expected an integer >= 1, got 0"):
        stacked_rnn_backward(None, None, cache, truncation=0)
    with pytest.raises(ValueError, match=r"dcT: expected shape \(L \* D, B, H\) = \(4, 2, 5\)"):
        stacked_rnn_backward(None, (None, np.zeros((2, B, H))), cache)
