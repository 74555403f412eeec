"""rigl_tf.keras.oneshot: SNIP / GraSP / magnitude / random pruning at initialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import oneshot
from rigl_tf.sparsity import distributions as dist_lib


def _model(sparsity=0.0):
    inputs = keras.Input((5,))
    h = keras.layers.Dense(7, activation="tanh")(inputs)
    h = keras.layers.Dense(6, activation="tanh")(h)
    out = keras.layers.Dense(3)(h)
    return rigl_tf.sparsify(keras.Model(inputs, out), sparsity, "uniform", seed=2)


def _batch(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _loss(model, x, y):
    logits = model(x)
    return tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def test_snip_scores_are_weight_times_gradient():
    model = _model()
    x, y = _batch()
    scores = oneshot.oneshot_scores(model, x, y, "snip")
    weights = [w for _, w, _ in rigl_tf.masked_weights(model)]
    with tf.GradientTape() as tape:
        loss = _loss(model, x, y)
    grads = tape.gradient(loss, weights)
    for (key, w, _), g in zip(rigl_tf.masked_weights(model), grads):
        np.testing.assert_allclose(scores[key], np.abs(w.numpy() * g.numpy()), rtol=1e-5)


def test_grasp_scores_use_the_hessian_gradient_product():
    model = _model()
    x, y = _batch()
    scores = oneshot.oneshot_scores(model, x, y, "grasp")
    items = rigl_tf.masked_weights(model)
    weights = [w for _, w, _ in items]
    # Explicit Hessian of the last (smallest) kernel w.r.t. itself and the gradient of all.
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = _loss(model, x, y)
        grads = inner.gradient(loss, weights)
    last = weights[-1]
    jac = outer.jacobian(grads[-1], weights)  # d g_last / d w_i for every i
    hg = sum(tf.tensordot(j, g, axes=len(g.shape)) for j, g in zip(jac, grads))
    np.testing.assert_allclose(scores[items[-1][0]], last.numpy() * hg.numpy(), rtol=1e-4,
                               atol=1e-7)


@pytest.mark.parametrize("method", oneshot.METHODS)
@pytest.mark.parametrize("distribution", ["uniform", "erk", "global"])
def test_prune_at_init_has_exact_counts(method, distribution):
    model = _model()
    x, y = _batch()
    masks = oneshot.prune_at_init(model, x, y, method, 0.7, distribution, seed=4)
    shapes = {k: v.shape for k, v in masks.items()}
    total = sum(int(np.prod(s)) for s in shapes.values())
    if distribution == "global":
        assert sum(int(m.sum()) for m in masks.values()) == dist_lib.num_active(1.0 - 0.7, total)
    else:
        counts = dist_lib.get_counts(shapes, dist_lib.get_densities(shapes, 0.7, distribution))
        assert {k: int(m.sum()) for k, m in masks.items()} == counts
    for key, weight, mask in rigl_tf.masked_weights(model):
        np.testing.assert_array_equal(mask.numpy(), masks[key])
        assert np.all(weight.numpy()[mask.numpy() == 0] == 0)


def test_snip_keeps_the_highest_scores():
    model = _model()
    x, y = _batch()
    scores = {k: v.numpy() for k, v in oneshot.oneshot_scores(model, x, y, "snip").items()}
    masks = oneshot.prune_at_init(model, x, y, "snip", 0.5, "global")
    kept = np.concatenate([scores[k][masks[k] == 1] for k in masks])
    dropped = np.concatenate([scores[k][masks[k] == 0] for k in masks])
    assert kept.min() >= dropped.max()


def test_inactive_connections_are_never_selected():
    model = _model(sparsity=0.5)
    before = rigl_tf.get_masks(model)
    x, y = _batch()
    masks = oneshot.prune_at_init(model, x, y, "random", 0.8, "uniform", seed=9)
    for k in masks:
        assert np.all(masks[k] <= before[k])


def test_bad_arguments():
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match="Unknown one-shot pruning `method` 'snap'"):
        oneshot.prune_at_init(model, x, y, "snap", 0.5)
    with pytest.raises(ValueError, match="distribution"):
        oneshot.prune_at_init(model, x, y, "snip", 0.5, "erx")
    with pytest.raises(ValueError, match="sparsity"):
        oneshot.prune_at_init(model, x, y, "snip", 1.0)
