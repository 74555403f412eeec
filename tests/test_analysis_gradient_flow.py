"""Gradient norm of the masked mean-loss gradient equals a direct computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rigl_tf import analysis


def _model_and_data(batch_norm=False):
    layers = [keras.Input((5,)), keras.layers.Dense(4, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(3))
    model = keras.Sequential(layers)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    y = rng.integers(0, 3, 23)
    masks = [None] * len(model.trainable_variables)
    masks[0] = (rng.random((5, 4)) < 0.5).astype(np.float32)
    masks[-2] = (rng.random((4, 3)) < 0.5).astype(np.float32)
    for v, m in zip(model.trainable_variables, masks):
        if m is not None:
            v.assign(v.numpy() * m)
    return model, masks, (x, y)


def _direct(model, masks, data):
    x, y = data
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
        )
    grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]
    return [g if m is None else g * m for g, m in zip(grads, masks)]


def test_gradient_norm_equals_direct_computation():
    model, masks, data = _model_and_data()
    expected = _direct(model, masks, data)
    squared = [float(np.sum(g**2)) for g in expected]
    # Batches of 5 leave an uneven last batch: the mean must still be over all 23 examples.
    result = analysis.gradient_norm(model, data, masks, per_variable=True, batch_size=5)
    np.testing.assert_allclose(result["squared_norm"], sum(squared), rtol=1e-5)
    np.testing.assert_allclose(result["norm"], np.sqrt(sum(squared)), rtol=1e-5)
    assert result["num_examples"] == 23
    paths = [v.path for v in model.trainable_variables]
    assert list(result["per_variable"]) == paths
    for path, s in zip(paths, squared):
        np.testing.assert_allclose(
            result["per_variable"][path]["squared_norm"], s, rtol=1e-5, atol=1e-12
        )
    # Without masks the norm is larger: inactive connections have non-zero gradients.
    dense = analysis.gradient_norm(model, data, batch_size=5)
    assert dense["squared_norm"] > result["squared_norm"]
    assert "per_variable" not in dense


def test_mean_gradients_are_masked_and_dataset_matches_arrays():
    model, masks, (x, y) = _model_and_data()
    grads, n = analysis.mean_gradients(model, (x, y), masks)
    assert n == 23
    assert np.all(grads[0][masks[0] == 0] == 0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    from_ds, _ = analysis.mean_gradients(model, ds, masks)
    for a, b in zip(grads, from_ds):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_training_mode_restores_batch_norm_statistics():
    model, masks, data = _model_and_data(batch_norm=True)
    before = [v.numpy().copy() for v in model.weights]
    result = analysis.gradient_norm(model, data, masks, training=True)
    assert result["norm"] > 0
    for a, v in zip(before, model.weights):
        np.testing.assert_array_equal(a, v.numpy())


def test_bad_data_and_masks_are_named():
    model, masks, (x, y) = _model_and_data()
    with pytest.raises(ValueError, match="data"):
        analysis.gradient_norm(model, (x, y[:3]))
    with pytest.raises(TypeError, match="data"):
        analysis.gradient_norm(model, x)
    with pytest.raises(ValueError, match=r"masks\[0\].*binary"):
        analysis.gradient_norm(model, (x, y), [np.full((5, 4), 0.5)] + masks[1:])
    with pytest.raises(ValueError, match="batch_size"):
        analysis.gradient_norm(model, (x, y), batch_size=0)
