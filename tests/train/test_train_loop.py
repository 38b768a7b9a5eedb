import io
import sys

import numpy as np
import pytest

from ref.train import (
    get_optimizer,
    load_checkpoint,
    lr_at,
    restore_rng,
    train,
    tree_flatten,
    tree_map,
)

N, D = 256, 3
W_TRUE = np.array([1.5, -2.0, 0.5])


def regression_problem(seed=0, noise=0.1):
    """Linear regression with minibatches drawn from rng and a noisy loss (the loop's randomness)."""
    data_rng = np.random.default_rng(seed)
    X = data_rng.standard_normal((N, D))
    y = X @ W_TRUE + 0.3 + noise * data_rng.standard_normal(N)

    def batches(rng, step):
        idx = rng.integers(0, N, size=32)
        return X[idx], y[idx]

    def loss_and_grads(params, batch, rng):
        Xb, yb = batch
        # a random re-weighting of the examples, so that the loss itself uses rng too
        c = 1.0 + 0.1 * rng.standard_normal(len(yb))  # (B,)
        r = Xb @ params["w"] + params["b"] - yb  # (B,)
        loss = np.mean(c * r * r) / 2
        return loss, {"w": Xb.T @ (c * r) / len(yb), "b": np.array([np.mean(c * r)])}

    return batches, loss_and_grads


def init():
    return {"w": np.zeros(D), "b": np.zeros(1)}


def test_trains_and_records_history(rng):
    batches, loss_and_grads = regression_problem()
    params0 = init()
    params, state, history = train(
        params0, loss_and_grads, batches, steps=300, rng=rng, optimizer="adam", lr=0.1, warmup_steps=10, progress=False
    )
    np.testing.assert_allclose(params["w"], W_TRUE, atol=0.05)
    np.testing.assert_allclose(params["b"], [0.3], atol=0.05)
    assert not params0["w"].any()  # the caller's params are untouched
    assert int(state["step"]) == 300
    assert set(history) == {"step", "loss", "lr", "grad_norm"}
    np.testing.assert_array_equal(history["step"], np.arange(300))
    assert history["loss"].shape == history["lr"].shape == history["grad_norm"].shape == (300,)
    assert history["loss"][-20:].mean() < 0.05 * history["loss"][:5].mean()
    assert history["lr"].tolist() == [lr_at(s, 0.1, 10, 300) for s in range(300)]


def test_same_seed_gives_a_bit_identical_trajectory():
    def run(seed):
        batches, loss_and_grads = regression_problem()
        seen = []

        def recording(params, batch, rng):
            seen.append(tree_map(np.copy, params))
            return loss_and_grads(params, batch, rng)

        out = train(init(), recording, batches, steps=25, rng=np.random.default_rng(seed), lr=0.05, progress=False)
        return seen, out

    (seen1, out1), (seen2, out2), (seen3, _) = run(123), run(123), run(124)
    assert len(seen1) == 25
    for p1, p2 in zip(seen1, seen2):
        for path in tree_flatten(p1):
            assert tree_flatten(p1)[path].tobytes() == tree_flatten(p2)[path].tobytes()
    for key in ("loss", "grad_norm"):
        assert out1.history[key].tobytes() == out2.history[key].tobytes()
    assert out1.params["w"].tobytes() == out2.params["w"].tobytes()
    assert not np.array_equal(seen1[-1]["w"], seen3[-1]["w"])  # another seed, another run


def test_gradient_clipping_and_grad_norm_history(rng):
    # a constant gradient of norm 10; with SGD at lr 1 each step moves the weights by the clipped gradient
    g = np.array([6.0, 8.0])

    def loss_and_grads(params, batch, rng):
        return 1.0, {"w": g.copy()}

    params, _, history = train(
        {"w": np.zeros(2)}, loss_and_grads, lambda rng, s: None, steps=3, rng=rng,
        optimizer="sgd", lr=1.0, min_lr=1.0, clip_norm=2.0, progress=False,
    )
    np.testing.assert_allclose(params["w"], -3 * g * 2.0 / 10.0, rtol=1e-15)
    np.testing.assert_array_equal(history["grad_norm"], [10.0, 10.0, 10.0])  # recorded before clipping
    np.testing.assert_array_equal(history["lr"], [1.0, 1.0, 1.0])


def test_iterator_of_batches(rng):
    batches, loss_and_grads = regression_problem()
    data_rng = np.random.default_rng(1)
    fixed = [batches(data_rng, s) for s in range(5)]
    _, _, history = train(init(), loss_and_grads, iter(fixed), steps=5, rng=rng, progress=False)
    assert len(history["loss"]) == 5
    with pytest.raises(ValueError, match=r"batches: the iterator ran out at step 5 \(the run needs 6 batches\)"):
        train(init(), loss_and_grads, iter(fixed), steps=6, rng=rng, progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_stops_naming_the_step(rng, bad):
    def loss_and_grads(params, step, rng_):  # the batch is the step number
        return (bad if step == 7 else 1.0), tree_map(np.ones_like, params)

    with pytest.raises(ValueError, match=rf"loss: expected a finite value, got {bad} at step 7"):
        train(init(), loss_and_grads, lambda rng_, step: step, steps=20, rng=rng, progress=False)


def test_non_finite_gradient_stops_naming_the_step_and_path(rng):
    def loss_and_grads(params, batch, step_rng):
        step = batch
        return 1.0, {"w": np.array([1.0, np.nan if step == 4 else 0.0, 0.0]), "b": np.zeros(1)}

    with pytest.raises(ValueError, match=r"grads/w: expected finite values, got 1 non-finite \(first at index \(1,\): nan\) at step 4"):
        train(init(), loss_and_grads, lambda rng_, step: step, steps=10, rng=rng, progress=False)


def test_checkpoints_resume_bit_identically(tmp_path):
    """Crash after step 6 of 10 with checkpoints every 3 steps, resume: the same run as without the crash."""
    batches, loss_and_grads = regression_problem()
    opt = get_optimizer("adamw", weight_decay=0.1, betas=(0.8, 0.99))
    common = dict(steps=10, optimizer=opt, lr=0.05, warmup_steps=2, min_lr=0.01, clip_norm=5.0, progress=False)

    full = train(init(), loss_and_grads, batches, rng=np.random.default_rng(5), **common)

    class Crash(Exception):
        pass

    def crashing_batches(rng, step):
        if step == 7:
            raise Crash
        return batches(rng, step)

    path = tmp_path / "run" / "ck.npz"
    with pytest.raises(Crash):
        train(init(), loss_and_grads, crashing_batches, rng=np.random.default_rng(5),
              checkpoint_path=path, checkpoint_every=3, meta={"experiment": "resume"}, **common)
    ck = load_checkpoint(path, like=init())
    assert ck.step == 6 and int(ck.opt_state["step"]) == 6
    assert ck.meta["experiment"] == "resume" and ck.meta["train"]["optimizer"] == "adamw"
    assert ck.meta["train"]["hparams"] == {"weight_decay": 0.1, "betas": [0.8, 0.99]}

    resumed = train(ck.params, loss_and_grads, batches, rng=restore_rng(ck.meta["train"]["rng_state"]),
                    opt_state=ck.opt_state, checkpoint_path=path, **common)
    for key in ("w", "b"):
        assert resumed.params[key].tobytes() == full.params[key].tobytes()
    np.testing.assert_array_equal(resumed.history["step"], np.arange(6, 10))
    assert resumed.history["loss"].tobytes() == full.history["loss"][6:].tobytes()
    assert load_checkpoint(path).step == 10  # a final checkpoint at the end


def test_restore_rng_handles_other_bit_generators():
    import json

    from ref.train.loop import _jsonable

    rng = np.random.Generator(np.random.MT19937(3))
    rng.random(5)
    state = json.loads(json.dumps(_jsonable(rng.bit_generator.state)))
    assert restore_rng(state).random() == rng.random()
    with pytest.raises(ValueError, match="state: expected a bit_generator.state dict"):
        restore_rng({"bit_generator": "NoSuchGenerator"})


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_on_a_terminal(rng, monkeypatch, progress):
    batches, loss_and_grads = regression_problem()
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(init(), loss_and_grads, batches, steps=4, rng=rng, progress=progress, log_every=2)
    text = terminal.getvalue()
    if progress:
        assert "train: 100%" in text and "4/4" in text and "loss=" in text and "gnorm=" in text
    else:
        assert text == ""


def test_progress_bar_is_quiet_when_not_a_terminal(rng, capsys):
    batches, loss_and_grads = regression_problem()
    train(init(), loss_and_grads, batches, steps=3, rng=rng, progress=True)  # pytest's capture: not a TTY
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_bad_arguments(rng, tmp_path):
    batches, loss_and_grads = regression_problem()
    ok = dict(steps=5, rng=rng, progress=False)
    cases = [
        (dict(steps=0), "steps: expected an integer >= 1, got 0"),
        (dict(rng=0), "rng: expected a numpy.random.Generator"),
        (dict(optimizer="lbfgs"), "name: expected one of 'sgd', 'adam', 'adamw', got 'lbfgs'"),
        (dict(optimizer=3), "optimizer: expected a name or an Optimizer"),
        (dict(lr=-1.0), "base_lr: expected a finite number >= 0, got -1.0"),
        (dict(warmup_steps=6), "warmup_steps: expected at most total_steps = 5, got 6"),
        (dict(clip_norm=0.0), "clip_norm: expected a finite number > 0 or None, got 0.0"),
        (dict(checkpoint_every=2), "checkpoint_path: expected a path when checkpoint_every is set"),
        (dict(checkpoint_path=tmp_path / "c.npz", checkpoint_every=0), "checkpoint_every: expected an integer >= 1"),
        (dict(log_every=0), "log_every: expected an integer >= 1, got 0"),
        (dict(meta={"train": 1}), "meta: expected a dict without the key 'train'"),
        (dict(meta={"f": np.zeros}), "meta: expected JSON-serialisable data"),
        (dict(opt_state={"step": np.array(9)}), r"opt_state: expected a state whose step count is in \[0, steps = 5\], got 9"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            train(init(), loss_and_grads, batches, **(ok | kwargs))
    with pytest.raises(ValueError, match="batches: expected a callable .* or an iterator, got int"):
        train(init(), loss_and_grads, 5, **ok)
    with pytest.raises(ValueError, match="params/w: expected dtype float32 or float64, got int64"):
        train({"w": np.zeros(3, int), "b": np.zeros(1)}, loss_and_grads, batches, **ok)
    with pytest.raises(ValueError, match=r"grads: expected the structure of params; at the root: missing 'b'"):
        train(init(), lambda p, b, r: (1.0, {"w": np.zeros(3)}), batches, **ok)


def test_bad_loss_and_grads_results(rng):
    cases = [
        (lambda p, b, r: 1.0, "loss_and_grads: expected a pair \\(loss, grads\\), got float at step 0"),
        (lambda p, b, r: ("high", init()), "loss: expected a real number, got str at step 0"),
        (lambda p, b, r: (1.0, {"w": np.zeros(2), "b": np.zeros(1)}), r"at 'w': expected shape \(3,\), got \(2,\) at step 0"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            train(init(), fn, lambda r, s: None, steps=2, rng=rng, progress=False)
