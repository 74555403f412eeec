"""Repellent / attractive loss (Maene et al.): value and gradient against hand computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.lottery import repellent


def test_cosine_squared_values():
    assert float(repellent.cosine_squared([1.0, 0.0], [1.0, 1.0])) == pytest.approx(0.5)
    assert float(repellent.cosine_squared([1.0, 2.0], [-2.0, -4.0])) == pytest.approx(1.0)
    assert float(repellent.cosine_squared([1.0, 0.0], [0.0, 3.0])) == 0.0
    assert float(repellent.cosine_squared([0.0, 0.0], [1.0, 1.0])) == 0.0  # no NaN


def test_value_with_mask_strength_and_several_optima():
    w = [tf.constant([[1.0, 2.0]]), tf.constant([5.0])]
    masks = [np.array([[1.0, 1.0]]), np.array([0.0])]  # the second weight is pruned
    prev_a = [np.array([[3.0, -1.0]]), np.array([9.0])]  # masked: (3, -1) -> cos^2 = 1/50
    prev_b = [np.array([[2.0, 4.0]]), np.array([-7.0])]  # parallel -> cos^2 = 1
    value = repellent.repellent_loss(w, [prev_a, prev_b], masks, strength=2.0)
    assert float(value) == pytest.approx(2.0 * (1 / 50 + 1.0) / 2)
    attract = repellent.repellent_loss(w, [prev_a], masks, strength=-0.5)
    assert float(attract) == pytest.approx(-0.5 / 50)
    assert float(repellent.repellent_loss(w, [], masks, strength=3.0)) == 0.0


def test_gradient_matches_hand_computation():
    # a = (1, 2, [masked 5]), b = (3, -1): <a,b> = 1, |a|^2 = 5, |b|^2 = 10.
    # d cos^2/da = 2<a,b> b / (|a|^2 |b|^2) - 2<a,b>^2 a / (|a|^4 |b|^2)
    #            = (6/50 - 2/250, -2/50 - 4/250) = (0.112, -0.056); masked entry: 0.
    w = tf.Variable([1.0, 2.0, 5.0])
    mask = np.array([1.0, 1.0, 0.0])
    prev = [np.array([3.0, -1.0, 8.0])]
    with tf.GradientTape() as tape:
        loss = repellent.repellent_loss([w], [prev], [mask], strength=1.5)
    grad = tape.gradient(loss, w).numpy()
    np.testing.assert_allclose(grad, 1.5 * np.array([0.112, -0.056, 0.0]), rtol=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"previous\[0\]\[0\]"):
        repellent.repellent_loss([tf.zeros([2])], [[np.zeros(3)]])
    with pytest.raises(ValueError, match=r"previous\[0\]` has 2 arrays"):
        repellent.repellent_loss([tf.zeros([2])], [[np.zeros(2), np.zeros(2)]])


def _sparse_mlp():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="h")(inputs)
    outputs = keras.layers.Dense(2, name="out")(x)
    return rigl_tf.sparsify(keras.Model(inputs, outputs), 0.0, "uniform", init="dense")


def test_repellent_model_adds_the_term_in_training_only():
    model = _sparse_mlp()
    rng = np.random.default_rng(0)
    previous = [{k: rng.normal(size=tuple(w.shape)) for k, w, _ in
                 rigl_tf.masked_weights(model)}]
    wrapped = repellent.RepellentModel(model, previous, strength=0.7)
    wrapped.compile(optimizer=rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1)),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=8)
    pred = wrapped(x)
    plain = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, pred))
    train_loss = float(wrapped.compute_loss(x, y, pred, training=True))
    eval_loss = float(wrapped.compute_loss(x, y, pred, training=False))
    weights = [w for _, w, _ in rigl_tf.masked_weights(model)]
    masks = [m for _, _, m in rigl_tf.masked_weights(model)]
    term = float(repellent.repellent_loss(
        weights, [[previous[0][k] for k, _, _ in rigl_tf.masked_weights(model)]], masks, 0.7))
    assert eval_loss == pytest.approx(plain, rel=1e-6)
    assert train_loss == pytest.approx(plain + term, rel=1e-6)
    assert term > 0
    history = wrapped.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_repellent_model_needs_every_masked_weight():
    model = _sparse_mlp()
    with pytest.raises(ValueError, match="misses masked weights"):
        repellent.RepellentModel(model, [{"h/kernel": np.zeros((4, 3))}], strength=1.0)
