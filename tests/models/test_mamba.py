"""The Mamba layer, block and language model: finite differences on every parameter, an independent
loop over mamba_ssm's decode equations, the token-by-token decode (also from a prefix and after a
prefill) against the forward, mamba_ssm's initialisation, training on a synthetic task, bad input."""

import math

import numpy as np
import pytest

from ref.models.lm import BLOCKS, BlockSpec, init_lm, lm_backward, lm_decode, lm_forward, lm_loss_and_grads
from ref.models.mamba import (
    BLOCK_NORM_EPS,
    DT_INIT_FLOOR,
    MIXER_FORMS,
    MambaState,
    init_mamba_block,
    init_mamba_layer,
    mamba_block,
    mamba_block_backward,
    mamba_block_prefill,
    mamba_block_step,
    mamba_layer,
    mamba_layer_backward,
    mamba_layer_prefill,
    mamba_layer_step,
)
from ref.tasks import get_task
from ref.train import train
from tests.compare import assert_within
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.mamba

# small sizes: D 4, E 8, N 3, rank 2 (more than mamba's ceil(4/16) = 1, so that the low-rank
# product dt_low W_dt is exercised), convolution width 4
SMALL = {"N": 3, "dt_rank": 2}


def small_layer(rng):
    return randomize(init_mamba_layer(rng, 4, **SMALL), rng)


def small_block(rng):
    return randomize(init_mamba_block(rng, 4, **SMALL), rng)


def chunk_options(mode):
    return {"mode": mode, "chunk_size": 4} if mode == "chunked" else {"mode": mode}


@pytest.fixture
def mamba_lm(monkeypatch):
    """The "mamba" block kind of the scaffold, registered as ``ref.models.lm`` registers it."""
    spec = BlockSpec(init_mamba_block, mamba_block, mamba_block_backward, mamba_block_step)
    monkeypatch.setitem(BLOCKS, "mamba", spec)
    return spec


def naive_mamba_layer(p, x):
    """The layer as mamba_ssm's ``Mamba.step`` runs it, one token at a time, with none of ref.nn or
    ref.mixers: a rolling window of the last W conv inputs (mamba_ssm's conv_state (B, E, W)),
    dt = softplus(dt_low W_dt + dt_bias), h = exp(dt A) h + dt B u, y = (C.h + D u) silu(z).
    Returns the outputs (B, T, D) and the final (conv_state, ssm_state) in mamba_ssm's layouts."""
    Bn, T, _ = x.shape
    E, W = p["conv_weight"].shape
    N = p["A_log"].shape[1]
    R = p["dt_proj"].shape[0]
    A = -np.exp(p["A_log"])  # (E, N)
    window = np.zeros((Bn, E, W))
    h = np.zeros((Bn, E, N))
    out = np.zeros(x.shape)
    for t in range(T):
        xz = x[:, t] @ p["in_proj"]
        x_in, z = xz[:, :E], xz[:, E:]
        window = np.roll(window, -1, axis=-1)
        window[:, :, -1] = x_in
        c = (window * p["conv_weight"]).sum(-1) + p["conv_bias"]
        u = c / (1 + np.exp(-c))
        xbc = u @ p["x_proj"]
        dt_low, B_t, C_t = xbc[:, :R], xbc[:, R : R + N], xbc[:, R + N :]
        dt = np.log1p(np.exp(dt_low @ p["dt_proj"] + p["dt_bias"]))  # (B, E)
        h = np.exp(dt[:, :, None] * A) * h + (dt * u)[:, :, None] * B_t[:, None, :]
        y = (h * C_t[:, None, :]).sum(-1) + p["D"] * u
        y = y * z / (1 + np.exp(-z))
        out[:, t] = y @ p["out_proj"]
    return out, window, h


# ------------------------------------------------------------------------------------------------
# the layer and the block


@pytest.mark.parametrize("mode", MIXER_FORMS)
def test_layer_equals_mamba_ssm_step_by_step(rng, mode):
    params = small_layer(rng)
    x = rng.standard_normal((2, 9, 4))
    want, window, h = naive_mamba_layer(params, x)
    got, _ = mamba_layer(params, x, **chunk_options(mode))
    assert_within(mode, got, want, 1e-12)
    # the state after a prefill, in mamba_ssm's layouts: ours keeps the last W-1 of its W inputs
    _, state = mamba_layer_prefill(params, x, **chunk_options(mode))
    assert_within("conv state", state.conv, window[:, :, 1:].transpose(0, 2, 1), 1e-12)
    assert_within("ssm state", state.ssm, h, 1e-12)


@pytest.mark.parametrize("mode", MIXER_FORMS)
def test_layer_gradcheck_every_parameter(rng, mode):
    params = small_layer(rng)
    x = rng.standard_normal((2, 6, 4))  # T = 6: not a multiple of the chunk size 4
    options = chunk_options(mode)
    gradcheck_tree(mamba_layer, mamba_layer_backward, params, {"x": x}, rng=rng, name="mamba_layer", **options)


def test_block_gradcheck_every_parameter(rng):
    params = small_block(rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_tree(mamba_block, mamba_block_backward, params, {"x": x}, rng=rng, name="mamba_block", chunk_size=2)


def test_block_is_the_residual_of_the_normed_layer(rng):
    params = small_block(rng)
    x = rng.standard_normal((2, 5, 4))
    n = x / np.sqrt((x * x).mean(-1, keepdims=True) + BLOCK_NORM_EPS) * params["norm"]["weight"]
    assert_within("block", mamba_block(params, x)[0], x + naive_mamba_layer(params["mixer"], n)[0], 1e-12)


def test_backward_is_pure_and_float32_runs(rng):
    params = small_block(rng)
    x = rng.standard_normal((2, 5, 4))
    y, cache = mamba_block(params, x)
    dy = rng.standard_normal(y.shape)
    dx1, g1 = mamba_block_backward(params, cache, dy)
    dx2, g2 = mamba_block_backward(params, cache, dy)
    assert np.array_equal(dx1, dx2) and np.array_equal(g1["mixer"]["A_log"], g2["mixer"]["A_log"])
    p32 = {"norm": {"weight": params["norm"]["weight"].astype(np.float32)}}
    p32["mixer"] = {k: v.astype(np.float32) for k, v in params["mixer"].items()}
    y32, c32 = mamba_block(p32, x.astype(np.float32))
    assert y32.dtype == np.float32
    assert_within("float32", y32, y, 1e-5)
    dx32, g32 = mamba_block_backward(p32, c32, dy.astype(np.float32))
    assert dx32.dtype == g32["mixer"]["dt_proj"].dtype == np.float32
    assert_within("float32 dx", dx32, dx1, 1e-4 * np.abs(dx1).max())


# ------------------------------------------------------------------------------------------------
# decoding


def decode(step, params, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y, state = step(params, x[:, t], state)
        ys.append(y)
    return np.stack(ys, axis=1), state


@pytest.mark.parametrize(
    "step, forward, prefill, make",
    [
        (mamba_layer_step, mamba_layer, mamba_layer_prefill, small_layer),
        (mamba_block_step, mamba_block, mamba_block_prefill, small_block),
    ],
    ids=["layer", "block"],
)
def test_decode_token_by_token_equals_the_forward(rng, step, forward, prefill, make):
    params = make(rng)
    x = rng.standard_normal((3, 11, 4))
    full, _ = forward(params, x, chunk_size=4)
    decoded, state = decode(step, params, x)
    assert_within("decode", decoded, full, 1e-12)
    assert isinstance(state, MambaState)
    assert state.conv.shape == (3, 3, 8) and state.ssm.shape == (3, 8, 3)
    # from a prefix: decode 2 tokens (fewer than the W-1 = 3 the convolution keeps), prefill the next
    # 5 with each fast form, decode the rest; every route gives the same outputs
    for mode in MIXER_FORMS:
        first, state = decode(step, params, x[:, :2])
        middle, state = prefill(params, x[:, 2:7], state, **chunk_options(mode))
        rest, state_end = decode(step, params, x[:, 7:], state)
        assert_within(f"prefix, {mode}", np.concatenate([first, middle, rest], axis=1), full, 1e-12)
    # prefilling the whole prompt gives the state that decoding it gives
    _, state_prefill = prefill(params, x)
    assert_within("conv state", state_prefill.conv, state_end.conv, 1e-12)
    assert_within("ssm state", state_prefill.ssm, state_end.ssm, 1e-12)


# ------------------------------------------------------------------------------------------------
# initialisation


def test_init_follows_mamba_ssm(rng):
    D = 40
    p = init_mamba_layer(rng, D)
    E, R, N, W = 80, 3, 16, 4  # expand 2, ceil(40 / 16) = 3, d_state 16, d_conv 4
    shapes = {
        "in_proj": (D, 2 * E),
        "conv_weight": (E, W),
        "conv_bias": (E,),
        "x_proj": (E, R + 2 * N),
        "dt_proj": (R, E),
        "dt_bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj": (E, D),
    }
    assert {k: v.shape for k, v in p.items()} == shapes
    # S4D-Real: A = -(1, 2, ..., N) in every channel; D = 1
    assert np.array_equal(p["A_log"], np.broadcast_to(np.log(np.arange(1.0, N + 1)), (E, N)))
    assert np.array_equal(p["D"], np.ones(E))
    # torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and U(-R^-1/2, R^-1/2) for dt_proj
    for key, fan_in in (("in_proj", D), ("conv_weight", W), ("conv_bias", W), ("x_proj", E), ("out_proj", E)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(p[key]).max() <= bound and np.abs(p[key]).max() > 0.8 * bound, key
    assert np.abs(p["dt_proj"]).max() <= R**-0.5
    # softplus(dt_bias) is the initial step size, in [dt_min, dt_max]
    dt = np.log1p(np.exp(p["dt_bias"]))
    assert dt.min() >= 1e-3 * (1 - 1e-9) and dt.max() <= 1e-1 * (1 + 1e-9)
    # ... and log-uniform: log10(dt) ~ U(-3, -1) over many channels
    wide = init_mamba_layer(np.random.default_rng(0), 512, N=1)
    log_dt = np.log10(np.log1p(np.exp(wide["dt_bias"])))  # 1024 channels
    assert abs(log_dt.mean() + 2) < 0.1 and abs(log_dt.std() - 2 / math.sqrt(12)) < 0.05
    # the floor: step sizes below 1e-4 are raised to it
    floored = init_mamba_layer(rng, 8, dt_min=1e-6, dt_max=1e-5)
    assert_within("floor", np.log1p(np.exp(floored["dt_bias"])), np.full(16, DT_INIT_FLOOR), 1e-15)
    # out_proj divided by sqrt(n_layer), as mamba_ssm's _init_weights
    deep = init_mamba_layer(rng, D, n_layer=4)
    assert np.abs(deep["out_proj"]).max() <= 0.5 / math.sqrt(E)


def test_init_options_dtype_and_seed(rng):
    p = init_mamba_block(np.random.default_rng(3), 6, N=5, expand=3, conv_width=2, dt_rank=4, dtype=np.float32)
    mixer = p["mixer"]
    assert mixer["in_proj"].shape == (6, 36) and mixer["conv_weight"].shape == (18, 2)
    assert mixer["x_proj"].shape == (18, 4 + 10) and mixer["A_log"].shape == (18, 5)
    assert all(v.dtype == np.float32 for v in (*mixer.values(), p["norm"]["weight"]))
    assert np.array_equal(p["norm"]["weight"], np.ones(6, np.float32))
    again = init_mamba_block(np.random.default_rng(3), 6, N=5, expand=3, conv_width=2, dt_rank=4, dtype=np.float32)
    assert all(np.array_equal(mixer[k], again["mixer"][k]) for k in mixer)
    # a width-2 convolution keeps one previous input
    y, state = mamba_block_step(p, np.ones((1, 6), np.float32))
    assert y.dtype == np.float32 and state.conv.shape == (1, 1, 18)


# ------------------------------------------------------------------------------------------------
# the language model: the scaffold of ref.models.lm with Mamba blocks


def small_lm(rng, tied):
    return randomize(init_lm(rng, 5, 4, 2, "mamba", tied=tied, **SMALL), rng)


# A whole model of two blocks. The loss sums logits whose embedding gradients reach ~10, so the
# float64 differences carry ~1e-9 of round-off (u |L| / eps at eps = 1e-6), while the step-size
# parameters of a block (dt_proj, dt_bias, A_log) can have gradients of only ~3e-4: relative errors
# up to 1.7e-5 at eps = 1e-6 (seen over 24 random draws). The round-off falls as 1/eps, so these three
# are checked with a step of 1e-5 (worst seen over 40 draws: 2.9e-6) and the model at rtol 3e-5, as
# in tests/models/test_lm.py; the layers and blocks are checked at rtol 1e-6 above (worst seen
# 2e-8). Here the check is of the wiring, where a mistake is off by O(1).
MODEL_RTOL = 3e-5
STEP_SIZE_STEPS = {"dt_proj": 1e-5, "dt_bias": 1e-5, "A_log": 1e-5}


@pytest.mark.parametrize("tied", [False, True])
def test_lm_gradcheck_every_parameter(rng, mamba_lm, tied):
    params = small_lm(rng, tied)
    assert [list(b) for b in params["blocks"]] == [["mamba"], ["mamba"]]
    tokens = rng.integers(0, 5, (2, 6))
    gradcheck_tree(
        lm_forward,
        lm_backward,
        params,
        {"tokens": tokens},
        rng=rng,
        name="mamba_lm",
        returns_dx=False,
        rtol=MODEL_RTOL,
        steps=STEP_SIZE_STEPS,
        chunk_size=4,
    )


def test_lm_decode_equals_the_forward(rng, mamba_lm):
    params = small_lm(rng, tied=True)
    tokens = rng.integers(0, 5, (2, 10))
    logits, _ = lm_forward(params, tokens, chunk_size=4)
    for mode in ("recurrent", "parallel"):
        assert_within(mode, lm_forward(params, tokens, mode=mode)[0], logits, 1e-12)
    decoded, states = lm_decode(params, tokens)
    assert_within("decode", decoded, logits, 1e-12)
    assert len(states) == 2 and all(isinstance(s, MambaState) for s in states)
    # continuing from the states of a prefix
    first, states = lm_decode(params, tokens[:, :3])
    rest, _ = lm_decode(params, tokens[:, 3:], states)
    assert_within("resumed", np.concatenate([first, rest], axis=1), logits, 1e-12)


def test_a_two_block_mamba_lm_learns_selective_copying(mamba_lm):
    """200 steps of AdamW on selective copying: 2 data tokens at random places among the first 8
    positions, to be output in order at 2 markers (vocab 8: 6 data ids, chance 1/6 per answer).
    The loss falls from ~1.9 (chance, ln 6 = 1.8) to ~0.4 and the answers are ~90% right."""
    task = get_task("selective_copying", num_tokens=2, num_blanks=6, vocab_size=8)
    rng = np.random.default_rng(0)
    params = init_lm(rng, task.vocab_size, 16, 2, "mamba", tied=True, N=4, n_layer=2)

    def loss_and_grads(p, batch, r):  # the recurrent form: the fastest at T = 10
        return lm_loss_and_grads(p, batch, r, mode="recurrent")

    out = train(params, loss_and_grads, lambda r, s: task.sample(r, 16), steps=200, rng=rng, lr=1e-2, progress=False)
    loss = out.history["loss"]
    assert loss[-20:].mean() < 0.3 * loss[:20].mean()
    test = task.sample(np.random.default_rng(9), 256)
    assert test.accuracy(lm_forward(out.params, test.inputs)[0].argmax(-1)) > 0.75


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_name_the_argument(rng):
    params = init_mamba_layer(rng, 4, **SMALL)
    block = init_mamba_block(rng, 4, **SMALL)
    x = rng.standard_normal((2, 5, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\) with D = 4"):
        mamba_layer(params, x[..., :3])
    with pytest.raises(ValueError, match="x: expected dtype float64"):
        mamba_layer(params, x.astype(np.float32))
    with pytest.raises(ValueError, match=r"x: expected 3 axes \(B, T, D\)"):
        mamba_block(block, x[0])
    with pytest.raises(ValueError, match="x: expected a time axis of length >= 1"):
        mamba_layer(params, x[:, :0])
    with pytest.raises(ValueError, match="mode: expected one of"):
        mamba_layer(params, x, mode="fast")
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        mamba_block(block, x, chunk_size=0)
    with pytest.raises(ValueError, match="backend: expected one of"):
        mamba_layer(params, x, backend="tpu")
    with pytest.raises(ValueError, match="params: expected a parameter 'D'"):
        mamba_layer({k: v for k, v in params.items() if k != "D"}, x)
    with pytest.raises(ValueError, match=r"params: unexpected parameters \['bias'\]"):
        mamba_layer({**params, "bias": params["D"]}, x)
    with pytest.raises(ValueError, match=r"params/dt_proj: expected shape \(R, E\) = \(3, 8\)"):
        mamba_layer({**params, "x_proj": np.zeros((8, 9))}, x)  # 9 = R + 2N columns: R = 3
    with pytest.raises(ValueError, match=r"params/A_log: expected shape \(E, N\)"):
        mamba_layer({**params, "A_log": params["A_log"][:4]}, x)
    with pytest.raises(ValueError, match="params/mixer/out_proj: expected dtype float64"):
        mixer32 = {**block["mixer"], "out_proj": block["mixer"]["out_proj"].astype(np.float32)}
        mamba_block({**block, "mixer": mixer32}, x)
    with pytest.raises(ValueError, match="params: expected a Mamba block"):
        mamba_block(params, x)
    y, cache = mamba_block(block, x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(B, T, D\)"):
        mamba_block_backward(block, cache, y[:, :4])
    with pytest.raises(ValueError, match=r"x_t: expected 2 axes \(B, D\)"):
        mamba_block_step(block, x)
    _, state = mamba_block_step(block, x[:, 0])
    with pytest.raises(ValueError, match=r"state.conv: expected shape \(B, W-1, E\) = \(2, 3, 8\)"):
        mamba_block_step(block, x[:, 0], MambaState(state.conv[:, :1], state.ssm))
    with pytest.raises(ValueError, match=r"state.ssm: expected shape \(B, E, N\) = \(1, 8, 3\)"):
        mamba_layer_step(params, x[:1, 0], MambaState(state.conv[:1], state.ssm))
    with pytest.raises(ValueError, match="state: expected None or a pair"):
        mamba_layer_prefill(params, x, state={"conv": state.conv})
    for kwargs, message in (
        ({"N": 0}, "N: expected an integer >= 1"),
        ({"expand": 1.5}, "expand: expected an integer >= 1"),
        ({"conv_width": 0}, "conv_width: expected an integer >= 1"),
        ({"dt_rank": -1}, "dt_rank: expected an integer >= 1"),
        ({"dt_min": 0.0}, "dt_min: expected a positive number"),
        ({"dt_min": 0.1, "dt_max": 0.01}, "dt_max: expected a value >= dt_min"),
        ({"n_layer": 0}, "n_layer: expected an integer >= 1"),
        ({"dtype": np.int64}, "dtype: expected float32 or float64"),
    ):
        with pytest.raises(ValueError, match=message):
            init_mamba_block(rng, 4, **kwargs)
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        init_mamba_layer(0, 4)


# ------------------------------------------------------------------------------------------------
# the time-invariant ablation (selective=False): Δ, B and C are parameters, not functions of x

STEP_SIZE_STEPS_LTI = {"dt_bias": 1e-5, "A_log": 1e-5}  # small gradients: see STEP_SIZE_STEPS


def small_lti_layer(rng):
    return randomize(init_mamba_layer(rng, 4, N=3, selective=False), rng)


def small_lti_block(rng):
    return randomize(init_mamba_block(rng, 4, N=3, selective=False), rng)


def naive_lti_front(p, x):
    """u (B, T, E) and z (B, T, E) of the layer, by the same rolling window as naive_mamba_layer."""
    Bn, T, _ = x.shape
    E, W = p["conv_weight"].shape
    window = np.zeros((Bn, E, W))
    us, zs = [], []
    for t in range(T):
        xz = x[:, t] @ p["in_proj"]
        window = np.roll(window, -1, axis=-1)
        window[:, :, -1] = xz[:, :E]
        c = (window * p["conv_weight"]).sum(-1) + p["conv_bias"]
        us.append(c / (1 + np.exp(-c)))
        zs.append(xz[:, E:])
    return np.stack(us, 1), np.stack(zs, 1)


def naive_lti_layer(p, x):
    """The ablation step by step: dt = softplus(dt_bias) (E,), h = exp(dt A) h + dt B u with the
    parameters B, C (E, N) at every step, y = (C.h + D u) silu(z), out = y W_out."""
    u, z = naive_lti_front(p, x)
    A = -np.exp(p["A_log"])  # (E, N)
    dt = np.log1p(np.exp(p["dt_bias"]))  # (E,)
    h = np.zeros((x.shape[0], *A.shape))
    out = np.zeros(x.shape)
    for t in range(x.shape[1]):
        h = np.exp(dt[:, None] * A) * h + (dt[:, None] * p["B"]) * u[:, t, :, None]
        y = (h * p["C"]).sum(-1) + p["D"] * u[:, t]
        out[:, t] = (y * z[:, t] / (1 + np.exp(-z[:, t]))) @ p["out_proj"]
    return out


@pytest.mark.parametrize("mode", MIXER_FORMS)
def test_lti_layer_equals_the_loop(rng, mode):
    params = small_lti_layer(rng)
    x = rng.standard_normal((2, 9, 4))
    got, _ = mamba_layer(params, x, **chunk_options(mode))
    assert_within(mode, got, naive_lti_layer(params, x), 1e-12)


def test_lti_layer_is_a_causal_convolution(rng):
    """Frozen Δ, B, C: the SSM is the convolution of u with K_k = sum_n C exp(Δ A)^k Δ B."""
    params = small_lti_layer(rng)
    T = 12
    x = rng.standard_normal((2, T, 4))
    u, z = naive_lti_front(params, x)  # (B, T, E)
    A = -np.exp(params["A_log"])
    dt = np.log1p(np.exp(params["dt_bias"]))[:, None]  # (E, 1)
    k = np.arange(T)[:, None, None]  # (T, 1, 1)
    K = (params["C"] * np.exp(dt * A) ** k * dt * params["B"]).sum(-1)  # (T, E)
    y = np.zeros(u.shape)
    for t in range(T):
        y[:, t] = (K[: t + 1][::-1] * u[:, : t + 1]).sum(1)  # sum_k K_k u_{t-k}
    y = (y + params["D"] * u) * z / (1 + np.exp(-z))
    assert_within("convolution", mamba_layer(params, x, chunk_size=5)[0], y @ params["out_proj"], 1e-12)


@pytest.mark.parametrize("mode", MIXER_FORMS)
def test_lti_layer_gradcheck_every_parameter(rng, mode):
    params = small_lti_layer(rng)
    assert "x_proj" not in params and "dt_proj" not in params
    x = rng.standard_normal((2, 6, 4))
    gradcheck_tree(
        mamba_layer, mamba_layer_backward, params, {"x": x}, rng=rng, name="mamba_lti_layer",
        steps=STEP_SIZE_STEPS_LTI, **chunk_options(mode),
    )


def test_lti_block_and_lm_gradcheck_every_parameter(rng, mamba_lm):
    block = small_lti_block(rng)
    x = rng.standard_normal((2, 5, 4))
    gradcheck_tree(
        mamba_block, mamba_block_backward, block, {"x": x}, rng=rng, name="mamba_lti_block",
        steps=STEP_SIZE_STEPS_LTI, chunk_size=2,
    )
    lm = randomize(init_lm(rng, 5, 4, 2, "mamba", tied=True, N=3, selective=False), rng)
    assert all("B" in b["mamba"]["mixer"] and "x_proj" not in b["mamba"]["mixer"] for b in lm["blocks"])
    gradcheck_tree(
        lm_forward, lm_backward, lm, {"tokens": rng.integers(0, 5, (2, 6))}, rng=rng, name="mamba_lti_lm",
        returns_dx=False, rtol=MODEL_RTOL, steps=STEP_SIZE_STEPS_LTI, chunk_size=4,
    )


def test_lti_backward_is_pure_and_float32_runs(rng):
    params = small_lti_block(rng)
    x = rng.standard_normal((2, 5, 4))
    y, cache = mamba_block(params, x)
    dy = rng.standard_normal(y.shape)
    dx1, g1 = mamba_block_backward(params, cache, dy)
    dx2, g2 = mamba_block_backward(params, cache, dy)
    assert np.array_equal(dx1, dx2) and all(np.array_equal(g1["mixer"][k], g2["mixer"][k]) for k in ("B", "C"))
    p32 = {"norm": {"weight": params["norm"]["weight"].astype(np.float32)}}
    p32["mixer"] = {k: v.astype(np.float32) for k, v in params["mixer"].items()}
    y32, c32 = mamba_block(p32, x.astype(np.float32))
    assert y32.dtype == np.float32
    assert_within("float32", y32, y, 1e-5)
    dx32, g32 = mamba_block_backward(p32, c32, dy.astype(np.float32))
    assert dx32.dtype == g32["mixer"]["B"].dtype == g32["mixer"]["C"].dtype == np.float32
    assert_within("float32 dB", g32["mixer"]["B"], g1["mixer"]["B"], 1e-4 * np.abs(g1["mixer"]["B"]).max())


@pytest.mark.parametrize(
    "step, forward, prefill, make",
    [
        (mamba_layer_step, mamba_layer, mamba_layer_prefill, small_lti_layer),
        (mamba_block_step, mamba_block, mamba_block_prefill, small_lti_block),
    ],
    ids=["layer", "block"],
)
def test_lti_decode_equals_the_forward(rng, step, forward, prefill, make):
    params = make(rng)
    x = rng.standard_normal((3, 11, 4))
    full, _ = forward(params, x, chunk_size=4)
    decoded, state = decode(step, params, x)
    assert_within("decode", decoded, full, 1e-12)
    assert state.conv.shape == (3, 3, 8) and state.ssm.shape == (3, 8, 3)
    first, state = decode(step, params, x[:, :5])
    rest, _ = prefill(params, x[:, 5:], state, mode="parallel")
    assert_within("prefill after decode", np.concatenate([first, rest], axis=1), full, 1e-12)


def test_lti_init(rng):
    D, E, N, W = 40, 80, 16, 4
    p = init_mamba_layer(rng, D, selective=False)
    shapes = {
        "in_proj": (D, 2 * E),
        "conv_weight": (E, W),
        "conv_bias": (E,),
        "B": (E, N),
        "C": (E, N),
        "dt_bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj": (E, D),
    }
    assert {k: v.shape for k, v in p.items()} == shapes
    # S4D's B = 1 and C ~ N(0, 1); A and the step sizes as the selective layer
    assert np.array_equal(p["B"], np.ones((E, N)))
    assert abs(p["C"].mean()) < 0.05 and abs(p["C"].std() - 1) < 0.05
    assert np.array_equal(p["A_log"], np.broadcast_to(np.log(np.arange(1.0, N + 1)), (E, N)))
    dt = np.log1p(np.exp(p["dt_bias"]))
    assert dt.min() >= 1e-3 * (1 - 1e-9) and dt.max() <= 1e-1 * (1 + 1e-9)
    # the same seed gives the selective layer the same front end and step sizes
    a = init_mamba_layer(np.random.default_rng(5), D)
    b = init_mamba_layer(np.random.default_rng(5), D, selective=False)
    assert all(np.array_equal(a[k], b[k]) for k in ("in_proj", "conv_weight", "conv_bias", "dt_bias"))
    block = init_mamba_block(rng, 6, N=5, selective=False, dtype=np.float32)
    assert set(block["mixer"]) == set(shapes) and block["mixer"]["C"].dtype == np.float32


def test_lti_bad_inputs_name_the_argument(rng):
    params = init_mamba_layer(rng, 4, N=3, selective=False)
    x = rng.standard_normal((2, 5, 4))
    with pytest.raises(ValueError, match="selective: expected True or False"):
        init_mamba_layer(rng, 4, selective="no")
    with pytest.raises(ValueError, match=r"params: expected a parameter 'C'"):
        mamba_layer({k: v for k, v in params.items() if k != "C"}, x)
    with pytest.raises(ValueError, match=r"params/C: expected shape \(E, N\) = \(8, 3\)"):
        mamba_layer({**params, "C": params["C"][:, :2]}, x)
    selective = init_mamba_layer(rng, 4, N=3)
    with pytest.raises(ValueError, match=r"params: unexpected parameters \['B'\]"):
        mamba_layer({**selective, "B": params["B"]}, x)  # x_proj and B: which layer is it?
