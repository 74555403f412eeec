"""SNFS (sparse momentum, Dettmers & Zettlemoyer 2019): momentum redistribution of the
parameter budget across layers, checked against hand-computed counts and a numpy model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import updaters as U
from rigl_tf.sparsity import masks as M

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("shares, total, caps, expected", [
    # 10 * [1, 1, 2] / 4 = [2.5, 2.5, 5]: floors [2, 2, 5], the leftover unit to the first
    # of the tied largest remainders.
    ([1.0, 1.0, 2.0], 10, [10, 10, 10], [3, 2, 5]),
    # 10 * [1, 1, 8] / 10 = [1, 1, 8] exceeds the last cap 4: it gets 4, and the other 6
    # are split 1:1.
    ([1.0, 1.0, 8.0], 10, [10, 10, 4], [3, 3, 4]),
    # No momentum anywhere: split by the remaining capacity, 5 * [1, 2, 7] / 10.
    ([0.0, 0.0, 0.0], 5, [1, 2, 7], [1, 1, 3]),
    # A closed (cap 0) part gets nothing, whatever its share.
    ([5.0, 1.0, 1.0], 4, [0, 9, 9], [0, 2, 2]),
    # Cascading caps: 12 * [4, 4, 1, 1] / 10 = [4.8, 4.8, 1.2, 1.2]; caps 2 and 3 bind,
    # then 7 are split 1:1 = [3.5, 3.5]: floors [3, 3] and one unit to the first.
    ([4.0, 4.0, 1.0, 1.0], 12, [2, 3, 20, 20], [2, 3, 4, 3]),
])
def test_apportion_by_hand(shares, total, caps, expected):
    got = M.apportion(tf.constant(shares), total, tf.constant(caps)).numpy().tolist()
    assert got == expected
    assert sum(got) == total


def _net():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu", name="a"),
                             L.Dense(12, activation="relu", name="b"), L.Dense(4, name="c")])


def _np_apportion(shares, total, caps):
    """Water-filling with largest remainders (numpy, float64)."""
    shares = np.asarray(shares, np.float64)
    caps = np.asarray(caps, np.int64)
    counts = np.zeros(len(shares), np.int64)
    open_ = caps > 0
    while True:
        rest = total - counts.sum()
        w = np.where(open_, shares, 0.0)
        if w.sum() == 0:
            w = np.where(open_, caps - counts, 0).astype(np.float64)
        want = w / w.sum() * rest if w.sum() > 0 else np.zeros_like(w)
        full = open_ & (want >= caps - counts)
        if not full.any():
            break
        counts[full] = caps[full]
        open_ &= ~full
    base = np.floor(want).astype(np.int64)
    counts += np.where(open_, base, 0)
    left = total - counts.sum()
    frac = np.where(open_, want - base, -1.0)
    for i in np.argsort(-frac, kind="stable")[:left]:
        counts[i] += 1
    return counts


def test_snfs_redistributes_by_mean_momentum_like_a_numpy_model():
    model = rigl_tf.sparsify(_net(), 0.6, "uniform", seed=1)
    beta, f0 = 0.5, 0.5
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.0),  # lr 0: weights stay fixed, so the model is exact
        U.SNFS(momentum=beta, update_freq=2, init_drop_fraction=f0, schedule_alg="constant"))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return grads

    items = rigl_tf.masked_weights(model)
    keys = [k for k, _, _ in items]
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    w = [v.numpy().copy() for _, v, _ in items]
    m0 = [m.numpy().copy() for _, _, m in items]
    v = [np.zeros_like(a) for a in w]
    rng = np.random.RandomState(0)
    for _ in range(2):  # the update happens after the 2nd step
        x = rng.rand(16, 8).astype("float32") * 4
        y = rng.randint(0, 4, 16).astype("int32")
        grads = step(x, y)
        for i, (_, var, _) in enumerate(items):
            v[i] = beta * v[i] + (1 - beta) * grads[index[id(var)]].numpy()
    # The numpy model of one sparse-momentum step.
    n = [int(a.sum()) for a in m0]
    r = [int(np.floor(f0 * k)) for k in n]
    keep = []
    for i in range(3):
        order = np.argsort(-np.where(m0[i] > 0, np.abs(w[i]), -np.inf).ravel(), kind="stable")
        k = np.zeros(w[i].size, np.float32)
        k[order[: n[i] - r[i]]] = 1
        keep.append(k.reshape(w[i].shape))
    mean_momentum = [np.abs(v[i])[m0[i] > 0].mean() for i in range(3)]
    caps = [w[i].size - (n[i] - r[i]) for i in range(3)]
    grow_counts = _np_apportion(mean_momentum, sum(r), caps)
    expected = []
    for i in range(3):
        order = np.argsort(-np.where(keep[i] > 0, -np.inf, np.abs(v[i])).ravel(), kind="stable")
        g = np.zeros(w[i].size, np.float32)
        g[order[: grow_counts[i]]] = 1
        expected.append(keep[i] + g.reshape(w[i].shape))
    got = rigl_tf.get_masks(model)
    for key, e in zip(keys, expected):
        np.testing.assert_array_equal(got[key], e, err_msg=key)
    assert sum(int(a.sum()) for a in got.values()) == sum(n)  # exact total
    assert [int(got[k].sum()) for k in keys] != n  # the budget moved between layers


def test_snfs_without_redistribution_keeps_layer_counts():
    model = rigl_tf.sparsify(_net(), 0.6, "uniform", seed=1)
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.1),
        U.SNFS(update_freq=1, init_drop_fraction=0.5, schedule_alg="constant",
               redistribute=False))
    before = {k: int(m.sum()) for k, m in rigl_tf.get_masks(model).items()}
    model.compile(opt, LOSS)
    rng = np.random.RandomState(1)
    model.fit(rng.rand(16, 8).astype("float32"), rng.randint(0, 4, 16), batch_size=8,
              verbose=0)
    assert {k: int(m.sum()) for k, m in rigl_tf.get_masks(model).items()} == before
    assert U.SNFS().get_config()["redistribute"] is True
    with pytest.raises(ValueError, match="`redistribute` must be True or False, got 'yes'"):
        U.SNFS(redistribute="yes")
