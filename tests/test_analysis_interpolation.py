"""Interpolation paths reproduce their endpoints, restore weights, and barriers behave."""

import keras
import numpy as np
import pytest

from rigl_tf import analysis


def _model(batch_norm=False):
    layers = [keras.Input((6,)), keras.layers.Dense(5, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(3))
    return keras.Sequential(layers)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def _random_weights(model, which="trainable", seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype(np.float32) for w in analysis.get_weights(model, which)]


def _assert_weights_equal(model, saved):
    for a, v in zip(saved, model.weights):
        np.testing.assert_array_equal(a, v.numpy())


def test_endpoints_reproduce_metrics_and_weights_are_restored():
    model = _model()
    data = _data()
    start, end = _random_weights(model, seed=1), _random_weights(model, seed=2)
    saved = [v.numpy().copy() for v in model.weights]
    result = analysis.interpolate(model, start, end, data, batch_size=16)
    _assert_weights_equal(model, saved)
    assert result["alphas"].shape == (29,) and result["loss"].shape == (29,)
    with analysis.temporary_weights(model, start):
        at_start = analysis.evaluate(model, data)
    with analysis.temporary_weights(model, end):
        at_end = analysis.evaluate(model, data)
    _assert_weights_equal(model, saved)
    i0, i1 = int(np.argmin(np.abs(result["alphas"]))), int(np.argmin(np.abs(result["alphas"] - 1)))
    for key in ("loss", "accuracy", "error"):
        np.testing.assert_allclose(result[key][i0], at_start[key], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result[key][i1], at_end[key], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result["error"], 1 - result["accuracy"])


def test_barrier_of_a_model_with_itself_is_zero():
    model = _model()
    w = _random_weights(model)
    out = analysis.linear_mode_connectivity(model, w, w, _data())
    assert out["loss"] == 0.0 and out["error"] == 0.0
    barriers = analysis.pairwise_barriers(model, [w, w, _random_weights(model, seed=5)], _data())
    assert barriers["loss"].shape == (3, 3)
    np.testing.assert_array_equal(barriers["loss"], barriers["loss"].T)
    assert barriers["loss"][0, 1] == 0.0 and np.all(np.diag(barriers["error"]) == 0)
    assert np.all(barriers["loss"] >= 0)


def test_error_barrier_by_hand():
    result = {
        "alphas": np.array([-0.5, 0.0, 0.25, 0.5, 1.0, 1.5]),
        "loss": np.array([9.0, 1.0, 2.0, 3.0, 2.0, 9.0]),
        "error": np.array([0.9, 0.1, 0.1, 0.2, 0.3, 0.9]),
    }
    barrier = analysis.error_barrier(result)
    # loss: 3 - (0.5 * 1 + 0.5 * 2) = 1.5 at alpha 0.5; points outside [0, 1] are ignored.
    assert barrier["loss"] == pytest.approx(1.5) and barrier["loss_alpha"] == 0.5
    # error: 0.2 - (0.5 * 0.1 + 0.5 * 0.3) = 0.0; 0.1 - (0.75*0.1 + 0.25*0.3) = -0.05.
    assert barrier["error"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="alphas must include 1"):
        analysis.error_barrier(
            {"alphas": np.array([0.0, 0.5]), "loss": np.ones(2), "error": np.ones(2)}
        )


def test_batch_norm_statistics_interpolated_with_all_weights():
    model = _model(batch_norm=True)
    data = _data()
    start = _random_weights(model, "all", seed=1)
    end = _random_weights(model, "all", seed=2)
    for w in (start, end):  # moving variances must be positive
        w[5] = np.abs(w[5]) + 0.5
    saved = [v.numpy().copy() for v in model.weights]
    result = analysis.interpolate(model, start, end, data, alphas=[0.0, 0.5, 1.0])
    _assert_weights_equal(model, saved)
    with analysis.temporary_weights(model, end):
        at_end = analysis.evaluate(model, data)
    np.testing.assert_allclose(result["loss"][2], at_end["loss"], rtol=1e-6)
    # Trainable-only lists leave the moving statistics at their current values.
    trainable_start = analysis.get_weights(model)
    trainable_end = [w + 0.1 for w in trainable_start]
    only = analysis.interpolate(model, trainable_start, trainable_end, data, alphas=[0.0])
    np.testing.assert_allclose(only["loss"][0], analysis.evaluate(model, data)["loss"], rtol=1e-6)


def test_masks_applied_to_interpolated_weights():
    model = _model()
    data = _data()
    start, end = _random_weights(model, seed=1), _random_weights(model, seed=2)
    masks = [np.zeros((6, 5)), None, np.zeros((5, 3)), None]
    result = analysis.interpolate(model, start, end, data, alphas=[0.3], masks=masks)
    # Zero kernels: logits equal the output bias for every input.
    bias = 0.7 * start[3] + 0.3 * end[3]
    expected = -np.log(np.exp(bias) / np.exp(bias).sum())[data[1]].mean()
    np.testing.assert_allclose(result["loss"][0], expected, rtol=1e-5)


def test_piecewise_path_and_plane():
    model = _model()
    data = _data()
    w = [_random_weights(model, seed=s) for s in (1, 2, 3)]
    path = analysis.piecewise_path(model, w, data, points_per_segment=3)
    np.testing.assert_allclose(path["t"], [0, 0.5, 1, 1.5, 2])
    assert len(path["segment_barriers"]) == 2 and path["loss"].shape == (5,)

    plane = analysis.plane(model, w[0], w[1], w[2], data, grid=3)
    assert plane["loss"].shape == (3, 3) and plane["points"].shape == (3, 2)
    flat = [np.concatenate([a.ravel() for a in p]).astype(np.float64) for p in w]
    d1, d2 = flat[1] - flat[0], flat[2] - flat[0]
    # Orthonormal basis: the points' coordinates reproduce their mutual distances.
    np.testing.assert_allclose(plane["points"][0], [0, 0])
    np.testing.assert_allclose(plane["points"][1], [np.linalg.norm(d1), 0])
    np.testing.assert_allclose(np.linalg.norm(plane["points"][2]), np.linalg.norm(d2))
    np.testing.assert_allclose(
        np.linalg.norm(plane["points"][2] - plane["points"][1]), np.linalg.norm(flat[2] - flat[1])
    )
    # Evaluating exactly at w1's coordinates reproduces w1's loss.
    at = analysis.plane(model, w[0], w[1], w[2], data, grid=([plane["points"][1][0]], [0.0]))
    with analysis.temporary_weights(model, w[1]):
        expected = analysis.evaluate(model, data)["loss"]
    np.testing.assert_allclose(at["loss"][0, 0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="w2"):
        analysis.plane(model, w[0], w[1], [2 * a - b for a, b in zip(w[1], w[0])], data)


def test_mismatched_weights_are_named():
    model = _model()
    w = _random_weights(model)
    with pytest.raises(ValueError, match="weights_end"):
        analysis.interpolate(model, w, w[:-1], _data())
    with pytest.raises(ValueError, match="weights_start"):
        analysis.interpolate(model, w[:-1], w[:-1], _data())
