"""Exact Hessians, spectra, power iteration and SLQ on tiny masked models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rigl_tf import analysis
from rigl_tf.analysis.hessian import METHODS, SPECTRA, eigenvalues


def _tiny(dtype="float32", seed=0):
    """Dense 4 -> 3 (tanh) -> 2 with masks on both kernels; masked weights set to zero."""
    model = keras.Sequential(
        [
            keras.Input((4,), dtype=dtype),
            keras.layers.Dense(3, activation="tanh", dtype=dtype),
            keras.layers.Dense(2, dtype=dtype),
        ]
    )
    rng = np.random.default_rng(seed)
    masks = [
        np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]], np.float32),
        None,
        np.array([[1, 0], [1, 1], [0, 1]], np.float32),
        None,
    ]
    for v, m in zip(model.trainable_variables, masks):
        value = rng.normal(size=v.shape) * 0.8
        v.assign((value * m if m is not None else value * 0.3).astype(dtype))
    x = rng.normal(size=(10, 4)).astype(dtype)
    y = rng.integers(0, 2, 10).astype(np.int32)
    return model, masks, (x, y)


def _nested_tape_hessian(model, data, coords):
    """Full Hessian of the mean loss via tape.jacobian of the gradient, restricted to coords."""
    x, y = data
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            logits = model(x, training=False)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grads = inner.gradient(loss, variables)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
    jac = outer.jacobian(flat, variables)
    full = np.concatenate([tf.reshape(j, [flat.shape[0], -1]).numpy() for j in jac], axis=1)
    sizes = [int(np.prod(s)) for s in coords.shapes]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    selected = np.concatenate([s + idx for s, idx in zip(starts, coords.flat_indices)])
    return full[np.ix_(selected, selected)]


def _eager_gradient(model, data):
    x, y = data
    with tf.GradientTape() as tape:
        logits = model(x, training=False)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("method", [m for m in METHODS if m != "split"])  # tanh: no split
@pytest.mark.parametrize("spectrum", SPECTRA)
def test_hessian_equals_nested_tape(method, spectrum):
    model, masks, data = _tiny()
    # chunk 5 makes chunks straddle variables; two batches test the accumulation.
    matrix, coords = analysis.hessian(
        model, data, masks, spectrum=spectrum, chunk_size=5, batch_size=5, method=method
    )
    expected_p = (7 + 3 + 4 + 2) if spectrum == "sparse" else (12 + 3 + 6 + 2)
    assert matrix.shape == (expected_p, expected_p) and coords.num_params == expected_p
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, matrix.T)
    reference = _nested_tape_hessian(model, data, coords)
    np.testing.assert_allclose(matrix, reference, atol=2e-6, rtol=1e-4)
    np.testing.assert_allclose(
        eigenvalues(matrix), np.linalg.eigvalsh((reference + reference.T) / 2), atol=2e-6
    )


class _ReversedOrder(keras.Model):
    """Creates the output layer first, so trainable_variables run from output to input."""

    def __init__(self):
        super().__init__()
        self.out = keras.layers.Dense(2)
        self.hidden = keras.layers.Dense(3, activation="tanh")

    def call(self, x):
        return self.out(self.hidden(x))


def test_hessian_is_exact_whatever_the_variable_order():
    model = _ReversedOrder()
    _, _, data = _tiny()
    model(data[0][:1])
    assert model.trainable_variables[0].shape == (3, 2)  # output kernel first
    matrix, coords = analysis.hessian(model, data, chunk_size=4)
    np.testing.assert_allclose(
        matrix, _nested_tape_hessian(model, data, coords), atol=2e-6, rtol=1e-4
    )


def test_hessian_matches_finite_differences_float64():
    model, masks, data = _tiny(dtype="float64")
    matrix, coords = analysis.hessian(model, data, masks, chunk_size=64)
    base = coords.gather([v.numpy() for v in model.trainable_variables])
    h = 1e-5
    fd = np.zeros_like(matrix)
    for k in range(coords.num_params):
        columns = []
        for sign in (1.0, -1.0):
            point = base.copy()
            point[k] += sign * h
            with analysis.temporary_weights(model, coords.scatter(point)):
                columns.append(coords.gather(_eager_gradient(model, data)))
        fd[:, k] = (columns[0] - columns[1]) / (2 * h)
    np.testing.assert_allclose(matrix, fd, atol=1e-8)


def test_hessian_dataset_input_and_coordinate_metadata():
    model, masks, (x, y) = _tiny()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    from_ds, coords = analysis.hessian(model, ds, masks, chunk_size=64)
    from_arrays, _ = analysis.hessian(model, (x, y), masks, batch_size=10)
    np.testing.assert_allclose(from_ds, from_arrays, atol=1e-6)
    # Coordinates: variable 0 keeps its 7 active entries, in flat order; biases are complete.
    np.testing.assert_array_equal(coords.flat_indices[0], np.flatnonzero(masks[0]))
    np.testing.assert_array_equal(coords.offsets, [0, 7, 10, 14, 16])
    assert coords.paths == tuple(v.path for v in model.trainable_variables)
    vector = np.arange(coords.num_params, dtype=np.float64)
    np.testing.assert_array_equal(coords.gather(coords.scatter(vector)), vector)
    assert np.all(coords.scatter(vector)[0][masks[0] == 0] == 0)


def test_hvp_and_operator_match_matrix():
    model, masks, data = _tiny()
    matrix, coords = analysis.hessian(model, data, masks)
    v = np.random.default_rng(1).normal(size=coords.num_params)
    np.testing.assert_allclose(analysis.hvp(model, data, v, masks), matrix @ v, atol=1e-6)
    op = analysis.HessianOperator(model, data, masks, spectrum="dense")
    dense, _ = analysis.hessian(model, data, masks, spectrum="dense")
    w = np.random.default_rng(2).normal(size=op.num_params)
    np.testing.assert_allclose(op.matvec(w), dense @ w, atol=1e-6)


def test_power_iteration_matches_exact_top_eigenvalues():
    model, masks, data = _tiny()
    matrix, _ = analysis.hessian(model, data, masks)
    eigs = eigenvalues(matrix)
    by_magnitude = eigs[np.argsort(-np.abs(eigs))]
    values, vectors = analysis.power_iteration(
        model, data, k=2, masks=masks, max_iterations=500, tol=1e-8
    )
    np.testing.assert_allclose(values[0], by_magnitude[0], rtol=1e-3)
    np.testing.assert_allclose(values[1], by_magnitude[1], rtol=1e-2)
    assert vectors.shape == (matrix.shape[0], 2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), 1.0, atol=1e-9)


def test_slq_moments_and_ritz_values_match_exact_spectrum():
    model, masks, data = _tiny()
    matrix, _ = analysis.hessian(model, data, masks)
    eigs = eigenvalues(matrix)
    p = len(eigs)
    # Through the model: with m = P steps the extreme Ritz values are the extreme eigenvalues.
    result = analysis.slq_density(model, data, num_probes=2, num_steps=p, masks=masks)
    for nodes in result["nodes"]:
        assert nodes.min() >= eigs.min() - 1e-5 and nodes.max() <= eigs.max() + 1e-5
        np.testing.assert_allclose([nodes.min(), nodes.max()], [eigs.min(), eigs.max()], atol=1e-5)
    np.testing.assert_allclose(np.trapezoid(result["density"], result["grid"]), 1.0, atol=1e-3)
    # Many probes on the matrix: Hutchinson estimates of the first moments converge.
    many = analysis.slq_density(matrix, num_probes=400, num_steps=8, seed=3)
    nodes, weights = np.concatenate(many["nodes"]), np.concatenate(many["weights"]) / 400
    scale = np.abs(eigs).max()
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-12)
    assert abs(weights @ nodes - eigs.mean()) < 0.05 * scale
    assert abs(weights @ nodes**2 - np.mean(eigs**2)) < 0.05 * scale**2
    # The smoothed density is close to the exact smoothed density.
    sigma = 0.1 * scale
    grid = np.linspace(eigs.min() - 5 * sigma, eigs.max() + 5 * sigma, 400)
    exact = analysis.spectral_density(eigs, grid, sigma)
    approx = analysis.slq_density(
        matrix, num_probes=400, num_steps=p, grid=grid, sigma=sigma, seed=4
    )
    l1 = np.trapezoid(np.abs(exact - approx["density"]), grid)
    assert l1 < 0.15


def test_spectrum_summary_and_density_by_hand():
    eigs = np.array([-0.5, -0.1, 0.0, 0.2, 2.0])
    summary = analysis.spectrum_summary(eigs)
    assert summary == {
        "num_params": 5,
        "max_eigenvalue": 2.0,
        "min_eigenvalue": -0.5,
        "num_negative": 2,
        "fraction_negative": 0.4,
        "negative_ratio": 0.25,
    }
    assert analysis.spectrum_summary(eigs, tol=0.2)["num_negative"] == 1
    grid = np.linspace(-3, 5, 4001)
    density = analysis.spectral_density(eigs, grid, sigma=0.1)
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-6)
    # One eigenvalue, weight 1: the peak of a unit Gaussian.
    np.testing.assert_allclose(
        analysis.spectral_density([1.0], [1.0], sigma=0.5), 1 / (0.5 * np.sqrt(2 * np.pi))
    )


def test_bad_arguments_name_the_parameter():
    model, masks, data = _tiny()
    with pytest.raises(ValueError, match="spectrum"):
        analysis.hessian(model, data, masks, spectrum="full")
    with pytest.raises(ValueError, match="chunk_size"):
        analysis.hessian(model, data, masks, chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        analysis.hessian(model, data, masks, method="finite")
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        analysis.hessian(model, data, [np.ones((3, 4))] + masks[1:])
    with pytest.raises(ValueError, match="masks"):
        analysis.hessian(model, data, masks[:2])
    with pytest.raises(ValueError, match="sigma"):
        analysis.spectral_density([1.0], [0.0], sigma=0.0)
    with pytest.raises(ValueError, match="k"):
        analysis.power_iteration(np.eye(3), k=4)
    with pytest.raises(ValueError, match="max_params"):
        analysis.hessian(model, data, masks, spectrum="dense", max_params=10)
