import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ref.tasks import MQAR, TASKS, Batch, Copying, SelectiveCopying, get_task
from ref.tasks.synthetic import InductionHeads


def _check_batch(task, batch, B):
    T = task.seq_len
    assert isinstance(batch, Batch)
    assert batch.inputs.shape == batch.targets.shape == batch.loss_mask.shape == (B, T)
    assert batch.inputs.dtype == batch.targets.dtype == np.int64 and batch.loss_mask.dtype == bool
    assert batch.inputs.min() >= 0 and batch.inputs.max() < task.vocab_size
    assert batch.targets.min() >= 0 and batch.targets.max() < task.vocab_size
    assert np.all(batch.targets[~batch.loss_mask] == 0)


def check_copying(task, batch):
    M, L, A = task.num_tokens, task.num_blanks, task.vocab_size
    x, y, m = batch.inputs, batch.targets, batch.loss_mask
    data = y[:, L + M :]  # (B, M)
    assert np.all((data >= 1) & (data <= A - 2))
    np.testing.assert_array_equal(x[:, L + M :], A - 1)  # the markers
    assert np.all(m[:, L + M :]) and not np.any(m[:, : L + M])
    for row, answer in zip(x[:, : L + M], data):
        if task.selective:
            np.testing.assert_array_equal(row[row != 0], answer)  # data in order among blanks
        else:
            np.testing.assert_array_equal(row[:M], answer)  # the data come first ...
            np.testing.assert_array_equal(row[M:], 0)  # ... then L blanks


def check_mqar(task, batch):
    N, Q = task.num_pairs, task.num_queries
    (k_lo, k_hi), (v_lo, v_hi) = task.key_range, task.value_range
    for x, y, m in zip(batch.inputs, batch.targets, batch.loss_mask):
        keys, values = x[0 : 2 * N : 2], x[1 : 2 * N : 2]
        assert len(set(keys.tolist())) == N and len(set(values.tolist())) == N  # distinct in a sample
        assert np.all((keys >= k_lo) & (keys < k_hi)) and np.all((values >= v_lo) & (values < v_hi))
        value_of = dict(zip(keys.tolist(), values.tolist()))
        queries = np.flatnonzero(m)
        assert len(queries) == Q
        assert queries.min() >= 2 * N and np.all((queries - 2 * N) % 2 == 0)
        asked = x[queries]
        assert len(set(asked.tolist())) == Q  # each pair asked at most once
        for p in queries:  # the target is the value paired with that key earlier in the sequence
            assert y[p] == value_of[int(x[p])]
        if not task.random_filler:
            filler = np.ones(task.seq_len, bool)
            filler[: 2 * N] = False
            filler[queries] = False
            np.testing.assert_array_equal(x[filler], 0)


def check_induction_heads(task, batch):
    V, T, s = task.vocab_size, task.seq_len, task.special_id
    x, y, m = batch.inputs, batch.targets, batch.loss_mask
    assert s == V - 1
    assert np.all(m[:, T - 1]) and not np.any(m[:, : T - 1])  # only the last position is scored
    np.testing.assert_array_equal(x[:, T - 1], s)
    first = x[:, : T - 1] == s  # (B, T - 1)
    assert np.all(first.sum(1) == 1)  # s occurs exactly once before the end ...
    p = np.argmax(first, axis=1)
    assert p.max() <= T - 3  # ... and is followed by an ordinary token
    np.testing.assert_array_equal(y[:, T - 1], x[np.arange(len(x)), p + 1])
    assert np.all(y[:, T - 1] < s)


CHECKS = {
    "copying": check_copying,
    "selective_copying": check_copying,
    "mqar": check_mqar,
    "induction_heads": check_induction_heads,
}


def test_registry():
    assert set(TASKS) == {"copying", "selective_copying", "mqar", "induction_heads"}
    assert TASKS["mqar"] is MQAR and TASKS["copying"] is Copying and TASKS["selective_copying"] is SelectiveCopying
    assert TASKS["induction_heads"] is InductionHeads
    task = get_task("mqar", num_pairs=4, seq_len=64)
    assert task == MQAR(num_pairs=4, seq_len=64) and task.num_queries == 4 and task.key_vocab_size == 31
    with pytest.raises(
        ValueError, match="name: expected one of 'copying', 'selective_copying', 'mqar', 'induction_heads', got 'mqr'"
    ):
        get_task("mqr")
    with pytest.raises(
        ValueError, match="num_pair: not a parameter of task 'mqar'; expected one of vocab_size, seq_len"
    ):
        get_task("mqar", num_pair=4)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("copying").num_tokens = 3


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_default_tasks_have_the_documented_structure(name, rng):
    task = get_task(name)
    batch = task.sample(rng, 16)
    _check_batch(task, batch, 16)
    CHECKS[name](task, batch)


def test_sizes():
    assert Copying(num_tokens=3, num_blanks=5, vocab_size=7).seq_len == 11
    assert SelectiveCopying().seq_len == 256 and SelectiveCopying().vocab_size == 16
    t = Copying(vocab_size=7)
    assert (t.blank_id, t.marker_id) == (0, 6)
    m = MQAR(vocab_size=64, seq_len=128, num_pairs=8)
    assert m.key_range == (1, 32) and m.value_range == (32, 64) and m.num_slots == 56
    ih = InductionHeads()  # Mamba's setting: vocab 16, trained at length 256
    assert (ih.vocab_size, ih.seq_len, ih.special_id) == (16, 256, 15)


def test_copying_worked_example():
    task = Copying(num_tokens=3, num_blanks=2, vocab_size=5)
    batch = task.sample(np.random.default_rng(0), 1)
    d = batch.targets[0, 5:]
    np.testing.assert_array_equal(batch.inputs[0], [*d, 0, 0, 4, 4, 4])
    np.testing.assert_array_equal(batch.targets[0], [0, 0, 0, 0, 0, *d])
    np.testing.assert_array_equal(batch.loss_mask[0], [0, 0, 0, 0, 0, 1, 1, 1])


@given(
    num_tokens=st.integers(1, 6),
    num_blanks=st.integers(0, 8),
    vocab_size=st.integers(3, 9),
    selective=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_copying_structure_for_any_config(num_tokens, num_blanks, vocab_size, selective, seed):
    cls = SelectiveCopying if selective else Copying
    task = cls(num_tokens=num_tokens, num_blanks=num_blanks, vocab_size=vocab_size)
    batch = task.sample(np.random.default_rng(seed), 5)
    _check_batch(task, batch, 5)
    check_copying(task, batch)


def test_selective_copying_scatters_the_data(rng):
    task = SelectiveCopying(num_tokens=4, num_blanks=20, vocab_size=6)
    batch = task.sample(rng, 200)
    first = np.argmax(batch.inputs[:, :24] != 0, axis=1)  # position of the first data token
    assert first.min() == 0 and first.max() > 5  # not always at the start, unlike copying


def test_induction_heads_worked_example():
    task = InductionHeads(vocab_size=5, seq_len=8)
    batch = task.sample(np.random.default_rng(3), 1)
    x = batch.inputs[0]
    p = int(np.flatnonzero(x[:7] == 4)[0])  # the planted special token s = 4
    assert x[7] == 4 and batch.targets[0, 7] == x[p + 1]
    np.testing.assert_array_equal(batch.loss_mask[0], [0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch.targets[0, :7], 0)


@given(vocab_size=st.integers(3, 20), seq_len=st.integers(3, 40), seed=st.integers(0, 2**32 - 1))
def test_induction_heads_structure_for_any_config(vocab_size, seq_len, seed):
    task = InductionHeads(vocab_size=vocab_size, seq_len=seq_len)
    batch = task.sample(np.random.default_rng(seed), 7)
    _check_batch(task, batch, 7)
    check_induction_heads(task, batch)


def test_induction_heads_plants_s_anywhere_and_answers_uniformly(rng):
    task = InductionHeads(vocab_size=6, seq_len=20)
    batch = task.sample(rng, 4000)
    p = np.argmax(batch.inputs[:, :19] == 5, axis=1)
    assert p.min() == 0 and p.max() == 17  # positions 0 .. T - 3, all reached
    counts = np.bincount(batch.targets[:, -1], minlength=5)
    assert counts.min() > 0.8 * 4000 / 5  # the answer is any of the 5 ordinary tokens, about equally


@given(
    vocab_size=st.integers(4, 40),
    num_pairs=st.integers(1, 6),
    extra_queries=st.integers(0, 5),
    extra_len=st.integers(0, 20),
    power=st.sampled_from([None, 0.01, 0.5, 2.0]),
    random_filler=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_mqar_structure_for_any_config(vocab_size, num_pairs, extra_queries, extra_len, power, random_filler, seed):
    num_queries = max(1, num_pairs - extra_queries)
    assume(2 * num_pairs <= vocab_size - 1)
    key_vocab_size = (vocab_size - 1) // 2
    assume(num_pairs <= key_vocab_size and num_pairs <= vocab_size - 1 - key_vocab_size)
    task = MQAR(
        vocab_size=vocab_size,
        seq_len=2 * num_pairs + 2 * num_queries + extra_len,
        num_pairs=num_pairs,
        num_queries=num_queries,
        key_vocab_size=key_vocab_size,
        power_a=power,
        random_filler=random_filler,
    )
    batch = task.sample(np.random.default_rng(seed), 6)
    _check_batch(task, batch, 6)
    check_mqar(task, batch)


def test_mqar_tight_fit(rng):
    """Every key, every value and every query slot used: the validation bounds are attainable."""
    task = MQAR(vocab_size=9, seq_len=16, num_pairs=4, key_vocab_size=4, random_filler=False)
    batch = task.sample(rng, 50)
    check_mqar(task, batch)
    assert np.all(np.sort(batch.inputs[:, 0:8:2], axis=1) == [1, 2, 3, 4])
    assert np.all(batch.loss_mask[:, 8::2])


def test_mqar_power_law_puts_queries_early():
    """Zoology's gaps: with power_a = 0.01 most queries sit in the first half of the query region."""
    rng = np.random.default_rng(0)
    first_half = {}
    for power in (0.01, None):
        task = MQAR(vocab_size=64, seq_len=128, num_pairs=8, power_a=power)
        m = task.sample(rng, 2000).loss_mask[:, 16:]  # (B, 112) the query region
        first_half[power] = m[:, :56].sum() / m.sum()
    assert first_half[0.01] > 0.65
    assert abs(first_half[None] - 0.5) < 0.03


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_same_seed_same_batch(name):
    task = get_task(name)
    a = task.sample(np.random.default_rng(7), 8)
    b = task.sample(np.random.default_rng(7), 8)
    c = task.sample(np.random.default_rng(8), 8)
    for f in ("inputs", "targets", "loss_mask"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.inputs, c.inputs)


def test_batch_accuracy(rng):
    batch = get_task("mqar").sample(rng, 4)
    assert batch.accuracy(batch.targets) == 1.0
    wrong = batch.targets.copy()
    wrong[batch.loss_mask] += 1
    assert batch.accuracy(wrong) == 0.0
    with pytest.raises(ValueError, match=r"predictions: expected shape \(B, T\) = \(4, 128\)"):
        batch.accuracy(batch.targets[:, :-1])


@pytest.mark.parametrize(
    "name, config, match",
    [
        ("copying", {"vocab_size": 2}, r"vocab_size: expected an integer >= 3 \(blank 0, at least one data token"),
        ("copying", {"num_tokens": 0}, "num_tokens: expected an integer >= 1, got 0"),
        ("copying", {"num_blanks": -1}, "num_blanks: expected an integer >= 0, got -1"),
        ("selective_copying", {"num_tokens": 2.0}, "num_tokens: expected an integer >= 1, got 2.0"),
        ("mqar", {"num_pairs": 40}, "num_pairs: expected at most key_vocab_size = 31 pairs"),
        ("mqar", {"key_vocab_size": 60}, r"num_pairs: expected at most 3 pairs \(the value ids 61 .. 63"),
        (
            "mqar",
            {"num_pairs": 16, "seq_len": 60},
            r"seq_len: expected at least 2 \* num_pairs \+ 2 \* num_queries = 64",
        ),
        ("mqar", {"num_queries": 9}, r"num_queries: expected an integer in \[1, num_pairs = 8\], got 9"),
        ("mqar", {"num_queries": 0}, r"num_queries: expected an integer in \[1, num_pairs = 8\], got 0"),
        ("mqar", {"key_vocab_size": 63}, r"key_vocab_size: expected an integer in \[1, vocab_size - 2 = 62\], got 63"),
        ("mqar", {"vocab_size": 2}, "vocab_size: expected an integer >= 3"),
        ("mqar", {"num_pairs": True}, "num_pairs: expected an integer >= 1, got True"),
        ("mqar", {"power_a": 0}, "power_a: expected a positive number or None, got 0"),
        ("mqar", {"random_filler": 1}, "random_filler: expected a bool, got 1"),
        ("induction_heads", {"vocab_size": 2}, r"vocab_size: expected an integer >= 3 \(at least two ordinary"),
        ("induction_heads", {"seq_len": 2}, r"seq_len: expected an integer >= 3 \(the special token"),
        ("induction_heads", {"seq_len": 8.0}, "seq_len: expected an integer >= 3"),
    ],
)
def test_bad_configs(name, config, match):
    with pytest.raises(ValueError, match=match):
        get_task(name, **config)


def test_bad_sample_arguments():
    task = get_task("copying")
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator, got int"):
        task.sample(0, 4)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        task.sample(np.random.default_rng(0), 0)


# --- the continuous delayed copy (a regression task, not in TASKS) -------------------------------


def test_delayed_copy_structure(rng):
    from ref.tasks.synthetic import DelayedCopy, SignalBatch

    task = DelayedCopy(seq_len=20, lag=7)
    batch = task.sample(rng, 5)
    assert isinstance(batch, SignalBatch) and "delayed_copy" not in TASKS
    assert batch.inputs.shape == batch.targets.shape == (5, 20, 1) and batch.loss_mask.shape == (5, 20)
    assert batch.inputs.dtype == batch.targets.dtype == np.float64 and batch.loss_mask.dtype == bool
    np.testing.assert_array_equal(batch.targets[:, 7:], batch.inputs[:, :13])  # y_t = u_{t - lag}
    np.testing.assert_array_equal(batch.targets[:, :7], 0)
    assert not batch.loss_mask[:, :7].any() and batch.loss_mask[:, 7:].all()
    a, b = task.sample(np.random.default_rng(3), 4), task.sample(np.random.default_rng(3), 4)
    np.testing.assert_array_equal(a.inputs, b.inputs)


def test_delayed_copy_is_white_noise_and_mse_scores_it():
    from ref.tasks.synthetic import DelayedCopy

    batch = DelayedCopy().sample(np.random.default_rng(0), 400)  # T = 256, lag = 128 by default
    u = batch.inputs[..., 0]
    assert abs(u.mean()) < 0.01 and abs(u.var() - 1) < 0.01
    assert abs(np.mean(u[:, 1:] * u[:, :-1])) < 0.01  # uncorrelated in time: nothing to predict
    assert batch.mse(batch.targets) == 0.0
    assert abs(batch.mse(np.zeros_like(batch.inputs)) - 1) < 0.02  # predicting 0 scores the variance
    with pytest.raises(ValueError, match=r"predictions: expected shape \(B, T, 1\) = \(400, 256, 1\)"):
        batch.mse(batch.targets[:, 1:])


@pytest.mark.parametrize(
    "config, match",
    [
        ({"lag": 0}, "lag: expected an integer >= 1, got 0"),
        ({"lag": 256}, r"lag: expected an integer in \[1, seq_len - 1 = 255\]"),
        ({"seq_len": 1}, "seq_len: expected an integer >= 2, got 1"),
        ({"lag": 2.0}, "lag: expected an integer >= 1, got 2.0"),
    ],
)
def test_delayed_copy_bad_configs(config, match):
    from ref.tasks.synthetic import DelayedCopy

    with pytest.raises(ValueError, match=match):
        DelayedCopy(**config)


def test_signal_batch_validates():
    from ref.tasks.synthetic import SignalBatch

    x = np.zeros((2, 5, 1))
    with pytest.raises(ValueError, match=r"inputs: expected shape \(B, T, 1\), got \(2, 5\)"):
        SignalBatch(x[..., 0], x[..., 0], np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="loss_mask: expected dtype bool"):
        SignalBatch(x, x, np.ones((2, 5)))
