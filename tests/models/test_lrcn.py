"""LRCN and the single-frame baseline (ref.models.lrcn) and the moving-dot videos
(ref.tasks.moving_dot_videos): finite differences on every parameter of both models, the
per-frame CNN against one frame at a time, order (in)variance, the averaged prediction, the
task's construction, bad input."""

import numpy as np
import pytest

from ref.models.lrcn import (
    frame_cnn,
    frame_cnn_backward,
    init_frame_cnn,
    init_lrcn,
    init_single_frame,
    lrcn,
    lrcn_backward,
    lrcn_loss_and_grads,
    per_step_loss,
    single_frame,
    single_frame_backward,
    single_frame_loss_and_grads,
    video_probabilities,
)
from ref.nn import conv2d, linear, max_pool2d, softmax
from ref.tasks.moving_dot_videos import DIRECTIONS, MovingDotVideos
from tests.models.model_cases import gradcheck_tree, randomize

pytestmark = pytest.mark.lrcn


def tiny_lrcn(rng):
    return randomize(init_lrcn(rng, 2, 4, 3, conv_channels=2, features=3, hidden=3), rng)


def tiny_single_frame(rng):
    return randomize(init_single_frame(rng, 2, 4, 3, conv_channels=2, features=3), rng)


def test_gradcheck_frame_cnn(rng):
    cnn = randomize(init_frame_cnn(rng, 2, 4, 2, 3), rng)
    frames = rng.standard_normal((2, 3, 2, 4, 7))  # W = 7: the pool drops the last column
    with pytest.raises(ValueError, match="image size"):  # cnn.fc was made for 4 x 4 frames
        frame_cnn(cnn, frames)
    cnn["fc"]["W"] = rng.standard_normal((2 * 2 * 3, 3)) / 3  # F (H/2)(W/2) = 2 x 2 x 3
    gradcheck_tree(frame_cnn, frame_cnn_backward, cnn, {"frames": frames}, rng=rng, name="frame_cnn")


def test_gradcheck_lrcn(rng):
    frames = rng.standard_normal((2, 5, 2, 4, 4))  # (B, T, C, H, W)
    gradcheck_tree(lrcn, lrcn_backward, tiny_lrcn(rng), {"frames": frames}, rng=rng, name="lrcn")


def test_gradcheck_single_frame(rng):
    frames = rng.standard_normal((2, 5, 2, 4, 4))
    gradcheck_tree(single_frame, single_frame_backward, tiny_single_frame(rng), {"frames": frames}, rng=rng,
                   name="single_frame")


def test_cnn_per_frame_equals_the_batched_cnn(rng):
    cnn = randomize(init_frame_cnn(rng, 2, 6, 3, 4), rng)
    frames = rng.standard_normal((3, 4, 2, 6, 6))
    phi, _ = frame_cnn(cnn, frames)
    for b in range(3):
        for t in range(4):
            # (5) on one frame, op by op
            z, _ = conv2d(frames[b, t][None], cnn["conv"]["W"], cnn["conv"]["b"], padding=1)
            p, _ = max_pool2d(np.maximum(z, 0), kernel_size=2)
            u, _ = linear(p.reshape(1, -1), cnn["fc"]["W"], cnn["fc"]["b"])
            np.testing.assert_allclose(phi[b, t], np.maximum(u[0], 0), rtol=1e-13, atol=1e-13)


def test_time_order_matters_to_lrcn_only(rng):
    frames = rng.standard_normal((2, 5, 2, 4, 4))
    perm = np.array([3, 0, 4, 1, 2])
    p_sf = tiny_single_frame(rng)
    z, _ = single_frame(p_sf, frames)
    z_perm, _ = single_frame(p_sf, frames[:, perm])
    np.testing.assert_allclose(z_perm, z[:, perm], rtol=1e-13, atol=1e-13)  # per frame, so it permutes
    np.testing.assert_allclose(video_probabilities(z_perm), video_probabilities(z), rtol=1e-13, atol=1e-15)
    p_lrcn = tiny_lrcn(rng)
    y, _ = lrcn(p_lrcn, frames)
    y_perm, _ = lrcn(p_lrcn, frames[:, perm])
    assert np.abs(video_probabilities(y_perm) - video_probabilities(y)).max() > 1e-3
    # causal: step t of LRCN depends on frames 0..t only
    later = frames.copy()
    later[:, 3:] = rng.standard_normal(later[:, 3:].shape)
    y_later, _ = lrcn(p_lrcn, later)
    np.testing.assert_array_equal(y_later[:, :3], y[:, :3])


def test_numba_lstm_backend_matches_numpy(rng):
    params, frames = tiny_lrcn(rng), rng.standard_normal((2, 4, 2, 4, 4))
    y, c = lrcn(params, frames)
    y_nb, c_nb = lrcn(params, frames, backend="numba")
    np.testing.assert_allclose(y_nb, y, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, g = lrcn_backward(params, c, dy)
    dx_nb, g_nb = lrcn_backward(params, c_nb, dy)
    np.testing.assert_allclose(dx_nb, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_nb["lstm"]["weight_hh"], g["lstm"]["weight_hh"], rtol=1e-10, atol=1e-12)


def test_video_probabilities_and_loss(rng):
    logits = rng.standard_normal((3, 4, 5))
    probs, _ = softmax(logits)
    np.testing.assert_allclose(video_probabilities(logits), probs.mean(axis=1), rtol=1e-14)  # (4)
    np.testing.assert_allclose(video_probabilities(logits, 2), probs[:, :2].mean(axis=1), rtol=1e-14)
    labels = np.array([0, 4, 2])
    loss, dlogits = per_step_loss(logits, labels)
    logp = np.log(probs)
    assert loss == pytest.approx(-np.mean([logp[b, t, labels[b]] for b in range(3) for t in range(4)]), rel=1e-13)
    onehot = np.eye(5)[labels][:, None, :]
    np.testing.assert_allclose(dlogits, (probs - onehot) / 12, rtol=1e-12, atol=1e-15)


def test_loss_and_grads_are_the_backward(rng):
    frames, labels = rng.standard_normal((2, 3, 2, 4, 4)), np.array([1, 2])
    for init, fwd, bwd, lg in ((tiny_lrcn, lrcn, lrcn_backward, lrcn_loss_and_grads),
                               (tiny_single_frame, single_frame, single_frame_backward, single_frame_loss_and_grads)):
        params = init(rng)
        loss, grads = lg(params, (frames, labels))
        logits, cache = fwd(params, frames)
        loss2, dlogits = per_step_loss(logits, labels)
        assert loss == loss2
        np.testing.assert_array_equal(grads["head"]["W"], bwd(params, cache, dlogits)[1]["head"]["W"])


def test_moving_dots():
    task = MovingDotVideos(seq_len=6, size=7, dot=2, noise=0.0)
    frames, labels = task.sample(np.random.default_rng(3), 40)
    again, labels2 = task.sample(np.random.default_rng(3), 40)
    np.testing.assert_array_equal(frames, again)  # the same seed, the same videos
    np.testing.assert_array_equal(labels, labels2)
    assert frames.shape == (40, 6, 1, 7, 7) and labels.dtype.kind == "i"
    assert (frames.sum(axis=(2, 3, 4)) == 4).all()  # a 2 x 2 dot in every frame, wrapping on the torus
    for b in range(40):  # frame t + 1 is frame t rolled one pixel in the label's direction
        for t in range(5):
            np.testing.assert_array_equal(np.roll(frames[b, t, 0], DIRECTIONS[labels[b]], axis=(0, 1)),
                                          frames[b, t + 1, 0])
    # one frame says nothing about the label: the position is uniform on the torus for every class
    pos = task.positions(np.random.default_rng(0), np.repeat(np.arange(4), 4000))  # (16000, T, 2)
    counts = np.array([np.bincount(7 * pos[c * 4000:(c + 1) * 4000, 3, 0] + pos[c * 4000:(c + 1) * 4000, 3, 1],
                                   minlength=49) for c in range(4)])  # (4, 49)
    assert counts.min() > 40 and counts.max() < 130  # each about 4000 / 49 ≈ 82


def test_bad_input(rng):
    params = init_lrcn(rng, 1, 4, 3, conv_channels=2, features=3, hidden=3)
    with pytest.raises(ValueError, match="frames: expected 5 axes"):
        lrcn(params, rng.standard_normal((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="frames: expected C = 1"):
        lrcn(params, rng.standard_normal((2, 3, 2, 4, 4)))
    with pytest.raises(ValueError, match="frames: expected dtype float64"):
        lrcn(params, rng.standard_normal((2, 3, 1, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="frames: expected at least one"):
        lrcn(params, np.zeros((2, 0, 1, 4, 4)))
    logits, cache = lrcn(params, rng.standard_normal((2, 3, 1, 4, 4)))
    with pytest.raises(ValueError, match="dlogits: expected shape"):
        lrcn_backward(params, cache, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="labels: expected classes"):
        per_step_loss(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match="labels: expected an integer array"):
        per_step_loss(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="steps: expected an integer in"):
        video_probabilities(logits, 4)
    with pytest.raises(ValueError, match="k: expected an odd"):
        init_lrcn(rng, k=2)
    with pytest.raises(ValueError, match="rng: expected"):
        init_single_frame(0)
    with pytest.raises(ValueError, match="noise"):
        MovingDotVideos(noise=-1.0)
    with pytest.raises(ValueError, match="dot: expected"):
        MovingDotVideos(size=4, dot=4)
    with pytest.raises(ValueError, match="seq_len"):
        MovingDotVideos(seq_len=0)
    with pytest.raises(ValueError, match="labels: expected"):
        MovingDotVideos().positions(rng, np.array([4]))
