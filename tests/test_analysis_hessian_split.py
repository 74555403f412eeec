"""The split (Gauss-Newton + residual) exact Hessian against independent references.

References computed here, not by the code under test: a float64 nested-tape Hessian
(`tape.jacobian` of the gradient of the mean loss) and central finite differences of the
float64 gradient. The models are tiny piecewise-linear chains with convolutions (valid,
same, strided, dilated), max-pooling, biases and masked kernels, so every block type is
exercised: within a layer (where the residual vanishes), conv->conv, conv->dense,
dense->dense in the per-coordinate and in the per-unit tangent mode.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf import analysis
from rigl_tf.analysis import hessian_split
from rigl_tf.analysis.hessian import select_coordinates, wrapper_masks


def _assign(model, rng, density, dtype):
    masks = []
    for v in model.trainable_variables:
        if len(v.shape) > 1:
            mask = (rng.random(v.shape) < density).astype(dtype)
            mask.flat[0] = 1
            v.assign((rng.normal(size=v.shape) * 0.7 * mask).astype(dtype))
            masks.append(mask)
        else:
            v.assign((rng.normal(size=v.shape) * 0.3).astype(dtype))
            masks.append(None)
    return masks


def _conv_net(dtype="float64", seed=0, density=0.6):
    """Conv(3x3 valid) - MaxPool(same) - Conv(2x2 same, stride 2) - Flatten - Dense 7 - 3."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2), dtype=dtype),
            layers.Conv2D(3, 3, activation="relu", dtype=dtype),
            layers.MaxPooling2D(2, padding="same", dtype=dtype),
            layers.Conv2D(4, 2, strides=2, padding="same", dtype=dtype),
            layers.ReLU(dtype=dtype),
            layers.Flatten(dtype=dtype),
            layers.Dense(7, activation="relu", dtype=dtype),
            layers.Dense(3, dtype=dtype),
        ]
    )
    rng = np.random.default_rng(seed)
    masks = _assign(model, rng, density, dtype)
    x = rng.normal(size=(11, 9, 9, 2)).astype(dtype)
    y = rng.integers(0, 3, 11).astype(np.int32)
    return model, masks, (x, y)


def _mlp(dtype="float64", seed=1, density=0.5):
    """Dense 6 -> 5 (relu, many active: per-unit mode) -> 9 (relu, few: per-coordinate) -> 3."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((6,), dtype=dtype),
            layers.Dense(5, activation="relu", dtype=dtype),
            layers.Dense(9, activation="relu", dtype=dtype),
            layers.Dropout(0.5, dtype=dtype),
            layers.Dense(3, dtype=dtype),
        ]
    )
    rng = np.random.default_rng(seed)
    masks = _assign(model, rng, density, dtype)
    masks[2] = np.zeros((5, 9), dtype)  # layer 2: 4 active weights < 9 units
    masks[2][[0, 1, 2, 3], [2, 5, 8, 0]] = 1
    model.trainable_variables[2].assign(model.trainable_variables[2].numpy() * masks[2])
    model.trainable_variables[3].assign(np.full(9, 0.5, dtype))  # keep layer 2 alive
    x = rng.normal(size=(13, 6)).astype(dtype)
    y = rng.integers(0, 3, 13).astype(np.int32)
    return model, masks, (x, y)


def _nested_tape(model, data, coords):
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


def _split(model, masks, data, batch_size=5, chunk_size=4):
    matrix, coords = analysis.hessian(model, data, masks, method="split",
                                      batch_size=batch_size, chunk_size=chunk_size)
    return matrix, coords


@pytest.mark.slow
@pytest.mark.parametrize("build", [_conv_net, _mlp])
def test_split_equals_float64_nested_tape_in_every_block(build):
    model, masks, data = build()
    matrix, coords = _split(model, masks, data)
    reference = _nested_tape(model, data, coords)
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_allclose(matrix, reference, rtol=1e-9, atol=1e-12)
    # The cross-layer blocks are where the residual lives: they must be non-trivial here.
    var = coords.variable_of
    for later in (2, 4):
        assert np.abs(reference[np.ix_(var == 0, var == later)]).max() > 1e-3


def _squared_error(y, logits):
    """A custom per-example loss (its curvature is not softmax's diag(p) - p p^T)."""
    target = tf.one_hot(tf.cast(y, tf.int32), logits.shape[-1], dtype=logits.dtype)
    return tf.reduce_sum((logits - target) ** 2 * tf.constant([1.0, 2.0, 0.5], logits.dtype),
                         axis=-1)


def test_split_with_a_custom_loss_equals_float64_nested_tape():
    model, masks, (x, y) = _mlp()
    matrix, coords = analysis.hessian(model, (x, y), masks, method="split", batch_size=5,
                                      chunk_size=4, loss_fn=_squared_error)
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(_squared_error(y, model(x, training=False)))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    jac = outer.jacobian(flat, variables)
    full = np.concatenate([tf.reshape(j, [flat.shape[0], -1]).numpy() for j in jac], axis=1)
    sizes = [int(np.prod(s)) for s in coords.shapes]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    selected = np.concatenate([s + idx for s, idx in zip(starts, coords.flat_indices)])
    np.testing.assert_allclose(matrix, full[np.ix_(selected, selected)], rtol=1e-9,
                               atol=1e-12)


@pytest.mark.slow
def test_split_matches_central_finite_differences():
    model, masks, data = _conv_net(density=0.4)
    matrix, coords = _split(model, masks, data, batch_size=11)
    variables = model.trainable_variables
    base = coords.gather([v.numpy() for v in variables])
    x, y = data

    saved = [v.numpy() for v in variables]

    def gradient(point):
        # Selected coordinates from `point`; the others (masked zeros) keep their values.
        for v, value, old in zip(variables, coords.scatter(point), saved):
            v.assign(np.where(_selected(coords, v), value, old))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=False), from_logits=True))
        return coords.gather([g.numpy() for g in tape.gradient(loss, variables)])

    h = 1e-6
    rng = np.random.default_rng(3)
    columns = np.concatenate([rng.choice(np.flatnonzero(coords.variable_of == i), 2)
                              for i in range(len(variables))])
    try:
        for k in columns:
            plus, minus = base.copy(), base.copy()
            plus[k] += h
            minus[k] -= h
            fd = (gradient(plus) - gradient(minus)) / (2 * h)
            np.testing.assert_allclose(matrix[:, k], fd, atol=2e-7, rtol=1e-5)
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)


def _selected(coords, variable):
    index = [p for p in coords.paths].index(variable.path)
    out = np.zeros(int(np.prod(coords.shapes[index])), bool)
    out[coords.flat_indices[index]] = True
    return out.reshape(coords.shapes[index])


@pytest.mark.slow
def test_split_float32_agrees_with_float64_reference():
    model64, masks, data = _conv_net()
    model32, _, _ = _conv_net(dtype="float32")
    for v32, v64 in zip(model32.trainable_variables, model64.trainable_variables):
        v32.assign(v64.numpy().astype(np.float32))
    matrix, coords = _split(model32, masks, (data[0].astype(np.float32), data[1]))
    reference = _nested_tape(model64, data, coords)
    scale = np.abs(reference).max()
    assert np.abs(matrix - reference).max() <= 1e-5 * scale


@pytest.mark.slow
def test_dilated_convolution_and_average_pooling():
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1), dtype="float64"),
            layers.Conv2D(2, 3, dilation_rate=2, activation="relu", dtype="float64"),
            layers.AveragePooling2D(2, dtype="float64"),
            layers.Conv2D(3, 2, activation="relu", dtype="float64"),
            layers.Flatten(dtype="float64"),
            layers.Dense(2, dtype="float64"),
        ]
    )
    rng = np.random.default_rng(5)
    masks = _assign(model, rng, 0.7, "float64")
    data = (rng.normal(size=(6, 10, 10, 1)), rng.integers(0, 2, 6).astype(np.int32))
    matrix, coords = _split(model, masks, data)
    np.testing.assert_allclose(matrix, _nested_tape(model, data, coords), rtol=1e-9, atol=1e-12)


def test_hessian_reads_the_wrappers_masks_by_default():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3)])
    model = rigl_tf.sparsify(base, sparsity=0.75, distribution="uniform")
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(9, 6)).astype(np.float32), rng.integers(0, 3, 9).astype(np.int32))
    matrix, coords = analysis.hessian(model, data)
    # 75% of 48 and of 24 kernel entries are masked: 12 + 6 active, plus 8 + 3 biases.
    assert coords.num_params == 12 + 8 + 6 + 3
    explicit, _ = analysis.hessian(model, data, wrapper_masks(model))
    np.testing.assert_array_equal(matrix, explicit)
    dense, dense_coords = analysis.hessian(model, data, spectrum="dense")
    assert dense_coords.num_params == 48 + 8 + 24 + 3 and dense.shape == (83, 83)


def test_split_refuses_what_it_cannot_do_and_auto_falls_back():
    model = keras.Sequential([keras.Input((4,), dtype="float64"),
                              keras.layers.Dense(3, activation="tanh", dtype="float64"),
                              keras.layers.Dense(2, dtype="float64")])
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(5, 4)), rng.integers(0, 2, 5).astype(np.int32))
    with pytest.raises(ValueError, match="tanh"):
        analysis.hessian(model, data, method="split")
    matrix, coords = analysis.hessian(model, data, method="auto")
    np.testing.assert_allclose(matrix, _nested_tape(model, data, coords), atol=1e-10)
    with pytest.raises(hessian_split.NotSupported, match="BatchNormalization"):
        hessian_split.parse_chain(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                                                    keras.layers.BatchNormalization(),
                                                    keras.layers.Dense(2)]))
