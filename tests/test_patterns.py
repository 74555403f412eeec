"""Structured sparsity: N:M groups and blocks hold exactly, after init and every update."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import updaters as U
from rigl_tf.sparsity import patterns as P

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def group_counts(mask, m, in_axis):
    moved = np.moveaxis(mask, in_axis, -1)
    return moved.reshape(moved.shape[:-1] + (-1, m)).sum(-1)


def block_values(mask, rows, cols):
    """For a 2-D [in, out] mask: the set of values inside every block."""
    i, o = mask.shape
    b = mask.reshape(i // rows, rows, o // cols, cols)
    return b.min(axis=(1, 3)), b.max(axis=(1, 3))


def _net():
    return keras.Sequential([
        keras.Input((4, 4, 8)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        L.Flatten(name="flat"),
        L.Dense(32, activation="relu", name="fc1"),
        L.Dense(8, name="fc2"),
    ])


def _data(n=32):
    rng = np.random.RandomState(0)
    return rng.rand(n, 4, 4, 8).astype("float32"), rng.randint(0, 8, n).astype("int32")


def test_parse_and_errors():
    assert P.get_pattern("2:4").spec == "2:4"
    assert P.get_pattern("block:4x1").spec == "block:4x1"
    assert P.get_pattern(None) is P.UNSTRUCTURED
    with pytest.raises(ValueError, match="N:M needs 0 < N <= M"):
        P.get_pattern("5:4")
    with pytest.raises(ValueError, match="Unknown sparsity `pattern` 'diag'; accepted forms"):
        P.get_pattern("diag")


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_nm_select_exact(n, m):
    scores = tf.random.stateless_normal([3, 3, 16, 5], seed=[1, 2])
    pat = P.NM(n, m)
    k = pat.count(scores.shape, None)
    mask = pat.select(scores, k, 2, 3).numpy()
    assert np.all(group_counts(mask, m, 2) == n)
    assert mask.sum() == k == scores.shape.num_elements() * n // m


def test_block_select_all_or_nothing():
    scores = tf.random.stateless_normal([16, 12], seed=[3, 4])
    pat = P.Block(4, 3)
    k = pat.count((16, 12), 0.25)
    mask = pat.select(scores, k, 0, 1).numpy()
    lo, hi = block_values(mask, 4, 3)
    assert np.array_equal(lo, hi)  # every block uniform
    assert mask.sum() == k == 4 * 3 * 4  # 25% of 16 blocks


def test_sparsify_with_nm_and_dividing_error():
    model = rigl_tf.sparsify(_net(), 0.5, "uniform", pattern="2:4")
    masks = rigl_tf.get_masks(model)
    assert np.all(group_counts(masks["conv/kernel"], 4, 2) == 2)
    assert np.all(group_counts(masks["fc1/kernel"], 4, 0) == 2)
    with pytest.raises(ValueError, match="`pattern` '2:3' does not divide weight 'conv/kernel'"):
        rigl_tf.sparsify(_net(), 0.5, pattern="2:3")
    with pytest.raises(ValueError, match="'global' cannot be combined with structured"):
        rigl_tf.sparsify(_net(), 0.5, "global", pattern="2:4")


def test_pattern_map_and_config_round_trip(tmp_path):
    model = rigl_tf.sparsify(_net(), 0.75, "uniform", pattern={"fc1": "block:4x4"})
    wrappers = {w.layer.name: w for w in rigl_tf.keras.model_ops.wrappers(model)}
    assert wrappers["fc1"].get_config()["pattern"] == "block:4x4"
    assert "pattern" not in wrappers["conv"].get_config()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    lw = {w.layer.name: w for w in rigl_tf.keras.model_ops.wrappers(loaded)}
    assert lw["fc1"].pattern.spec == "block:4x4"
    lo, hi = block_values(rigl_tf.get_masks(loaded)["fc1/kernel"], 4, 4)
    assert np.array_equal(lo, hi)


@pytest.mark.parametrize("alg", ["rigl", "set"])
@pytest.mark.parametrize("pattern", ["2:4", "block:4x4"])
def test_dst_keeps_pattern(alg, pattern):
    model = rigl_tf.sparsify(_net(), 0.75, "uniform", pattern=pattern, keep_dense="fc2")
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9),
        U.get_updater(alg, update_freq=2, init_drop_fraction=0.5, schedule_alg="constant"))
    model.compile(opt, LOSS)
    masks0 = rigl_tf.get_masks(model)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert int(opt.last_update_step.numpy()) == 8  # 8 steps: updates after steps 2, 4, 6, 8
    masks = rigl_tf.get_masks(model)
    changed = 0
    for key, mask in masks.items():
        assert mask.sum() == masks0[key].sum(), key
        changed += int((mask != masks0[key]).sum())
        in_axis = 2 if key.startswith("conv") else 0
        if pattern == "2:4":
            assert np.all(group_counts(mask, 4, in_axis) == 2), key
        elif key == "fc1/kernel":
            lo, hi = block_values(mask, 4, 4)
            assert np.array_equal(lo, hi)
    assert changed > 0
    for _, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)


def test_gradual_pruning_to_2_of_4_and_blocks():
    model = rigl_tf.sparsify(_net(), 0.0, "uniform", pattern={"fc1": "2:4", "conv": "block:8x1"})
    pruner = U.MagnitudePruning("polynomial", 0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.05), pruner)
    model.compile(opt, LOSS)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    masks = rigl_tf.get_masks(model)
    assert np.all(group_counts(masks["fc1/kernel"], 4, 0) == 2)
    conv = masks["conv/kernel"]  # [3, 3, 8, 8]: blocks of 8 input channels x 1 output
    per_block = conv.sum(axis=2)
    assert set(np.unique(per_block)) <= {0.0, 8.0}
    assert conv.sum() == 0.5 * conv.size
