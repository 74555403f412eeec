"""MetaInit: learns weight norms only; masks and directions are kept."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.experiments.metainit import gradient_quotient, meta_init


def _model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, activation="relu")(inputs)
    h = keras.layers.Dense(12, activation="relu")(h)
    out = keras.layers.Dense(3)(h)
    return rigl_tf.sparsify(keras.Model(inputs, out), 0.6, "erk", seed=3)


def test_meta_init_changes_norms_and_keeps_masks():
    model = _model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    masks = rigl_tf.get_masks(model)
    before = [v.numpy() for v in model.trainable_variables]
    result = meta_init(model, x, y, steps=4, learning_rate=0.1)
    after = [v.numpy() for v in model.trainable_variables]
    assert len(result["gq"]) == 5 and result["best_gq"] == min(result["gq"])
    assert result["best_gq"] < result["gq"][0]
    assert not np.allclose(result["norms"], result["initial_norms"])
    for key, m in rigl_tf.get_masks(model).items():
        np.testing.assert_array_equal(m, masks[key])
    for _, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)
    for b, a, n in zip([v for v in before if v.ndim >= 2], [v for v in after if v.ndim >= 2],
                       result["norms"]):
        assert np.linalg.norm(a) == pytest.approx(n, rel=1e-5)
        cos = np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)
        assert cos == pytest.approx(1.0, abs=1e-6)  # only the scale changed
    for b, a in zip(before, after):
        if b.ndim == 1:
            np.testing.assert_array_equal(a, b)  # biases untouched


def test_gradient_quotient_is_zero_when_the_gradient_does_not_change():
    g = [tf.constant([1.0, -2.0, 3.0])]
    assert float(gradient_quotient(g, [tf.zeros(3)], [None])) == pytest.approx(0.0, abs=1e-5)
    # H g = g gives |0/g - 1| = 1 on every active entry; masked entries are ignored.
    assert float(gradient_quotient(g, g, [tf.constant([1.0, 0.0, 1.0])])) == pytest.approx(1.0)


def test_bad_steps():
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        meta_init(_model(), np.zeros((2, 6), "float32"), np.zeros(2, "int32"), steps=0)
