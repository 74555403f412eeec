"""`strip` and `export` on a model compiled with SparseOptimizer (the README's first example)."""

import os

import keras
import numpy as np
import pytest

import rigl_tf


def _compiled_sparse():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    sparse = rigl_tf.sparsify(model, sparsity=0.5, distribution="uniform", seed=0)
    optimizer = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.05, momentum=0.9),
        rigl_tf.updaters.RigL(update_freq=2, init_drop_fraction=0.3, end_step=10))
    sparse.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, size=32)
    sparse.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return sparse, x, y


def test_strip_compiled_sparse_model_keeps_inner_optimizer_and_loss():
    sparse, x, y = _compiled_sparse()
    plain = rigl_tf.strip(sparse)
    assert not any(isinstance(la, rigl_tf.SparseWrapper) for la in plain.layers)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), sparse.predict(x, verbose=0))
    # Compiled with the inner optimizer's configuration (a fresh SGD, step 0).
    assert plain.compiled
    assert type(plain.optimizer) is keras.optimizers.SGD
    assert float(plain.optimizer.learning_rate) == pytest.approx(0.05)
    assert plain.optimizer.momentum == pytest.approx(0.9)
    assert int(plain.optimizer.iterations) == 0
    # Same loss: evaluate gives the mean cross-entropy of the logits, computed here in numpy.
    logits = plain.predict(x, verbose=0).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                                                         keepdims=True)) \
        - logits.max(1, keepdims=True)
    expected = -logp[np.arange(len(y)), y].mean()
    loss, acc = plain.evaluate(x, y, batch_size=32, verbose=0)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains as a plain model
    # The sparse model is untouched and still trains with its SparseOptimizer.
    assert sparse.compiled and isinstance(sparse.optimizer, rigl_tf.SparseOptimizer)
    sparse.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_strip_uncompiled_model_stays_uncompiled():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    sparse = rigl_tf.sparsify(model, sparsity=0.4, distribution="uniform", seed=1)
    plain = rigl_tf.strip(sparse)
    assert not plain.compiled and not sparse.compiled
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(plain(x), sparse(x))


def test_export_compiled_sparse_model(tmp_path):
    sparse, x, _ = _compiled_sparse()
    path = rigl_tf.export(sparse, os.path.join(tmp_path, "m.keras"))
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is keras.optimizers.SGD
    np.testing.assert_allclose(loaded.predict(x, verbose=0), sparse.predict(x, verbose=0),
                               rtol=0, atol=0)
