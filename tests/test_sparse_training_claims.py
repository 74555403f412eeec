"""Central claims of the sparse-training updaters, checked against hand-worked numbers.

Each test guards a mutant in ``tools/mutation_check.py``; expected values are worked out
by hand in the comments (never read back from the object under test).
"""

import keras
import numpy as np
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import updaters as U

L = keras.layers


def _item(shape):
    size = int(np.prod(shape))
    return U.MaskedVar(index=0, key="k", var=None, mask=None, shape=shape, size=size)


def _one_layer(kernel, mask):
    """A Dense(4) on 2 inputs, sparse, with the given kernel values and mask."""
    keras.utils.set_random_seed(0)
    model = rigl_tf.sparsify(
        keras.Sequential([keras.Input((2,)), L.Dense(4, name="d")]), 0.5, "uniform")
    (_, var, m), = rigl_tf.masked_weights(model)
    m.assign(np.asarray(mask, np.float32))
    var.assign(np.asarray(kernel, np.float32) * np.asarray(mask, np.float32))
    return model, var, m


def test_rigl_may_regrow_a_connection_it_just_dropped():
    # RigL (Evci et al. 2020, Alg. 1; reference sparse_optimizers.py): the grow scores are
    # masked only by the *kept* connections, so a dropped connection may come back.
    # Active |w| = [5, 4, 3, 0.1] at positions 0..3; drop fraction 0.25 of 4 active ->
    # floor(1.0) = 1 dropped: position 3 (|w| = 0.1). |grad| is largest (9) at position 3,
    # so with regrow_dropped=True (the default, as in RigL) it is regrown: mask unchanged.
    w = tf.constant([5.0, -4.0, 3.0, 0.1, 0.0, 0.0, 0.0, 0.0])
    m = tf.constant([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    g = tf.constant([0.0, 0.0, 0.0, -9.0, 1.0, 2.0, 0.5, 0.0])
    rigl = U.RigL(update_freq=1, init_drop_fraction=0.25, schedule_alg="constant")
    rigl.build([_item((8,))])
    new, = rigl.compute_masks(1, [w], [m], [g], [None])
    np.testing.assert_array_equal(new.numpy(), [1, 1, 1, 1, 0, 0, 0, 0])
    # Without regrowing, the next best |grad| among never-active ones is 2 (position 5).
    no_regrow = U.RigL(update_freq=1, init_drop_fraction=0.25, schedule_alg="constant",
                       regrow_dropped=False)
    no_regrow.build([_item((8,))])
    new, = no_regrow.compute_masks(1, [w], [m], [g], [None])
    np.testing.assert_array_equal(new.numpy(), [1, 1, 1, 0, 0, 1, 0, 0])


def test_snfs_momentum_is_an_exponential_moving_average_of_the_gradient():
    # SNFS (Dettmers & Zettlemoyer 2019): v <- beta * v + (1 - beta) * g, beta = 0.9.
    # Kernel (2, 4) flattened: active positions 0..3 (|w| = 4, 3, 2, 1), inactive 4..7.
    # Step 1 gradient: 1.0 at position 4 only. Step 2 gradient: 0.5 at position 5 only.
    #   v[4] = 0.9 * (0.1 * 1.0) + 0.1 * 0 = 0.09
    #   v[5] = 0.9 * 0 + 0.1 * 0.5        = 0.05
    # (with the coefficients swapped: v[4] = 0.1 * 0.9 = 0.09, v[5] = 0.9 * 0.5 = 0.45).
    # The update after step 2 drops floor(0.25 * 4) = 1 weight (position 3, |w| = 1) and
    # regrows 1 at the largest |v|: position 4. lr = 0 keeps the weights fixed.
    kernel = np.array([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    model, var, m = _one_layer(kernel, mask)
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.0),
        U.SNFS(momentum=0.9, redistribute=False, update_freq=2, init_drop_fraction=0.25,
               schedule_alg="constant"))
    vars_ = model.trainable_variables
    for flat_pos, value in ((4, 1.0), (5, 0.5)):
        grads = [tf.zeros_like(v) for v in vars_]
        gk = np.zeros(8, np.float32)
        gk[flat_pos] = value
        grads[[id(v) for v in vars_].index(id(var))] = tf.constant(gk.reshape(2, 4))
        opt.apply(grads, vars_)
    expected = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(m.numpy(), expected)
    np.testing.assert_array_equal(var.numpy()[0, :3], [4.0, 3.0, 2.0])
    assert var.numpy()[1, 0] == 0.0  # grown weight starts at zero


def test_magnitude_pruning_never_regrows_when_the_target_is_denser():
    # 8 weights, 2 active (positions 1 and 6). Target sparsity 0.5 -> round(0.5 * 8) = 4
    # would be kept, but pruning only removes: the count is min(4, 2) = 2 and the mask is
    # unchanged.
    w = tf.constant([9.0, 0.5, 8.0, 7.0, 6.0, 5.0, 0.2, 4.0])
    m = tf.constant([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    pruner = U.MagnitudePruning(schedule="constant", final_sparsity=0.5, begin_step=1,
                                frequency=1)
    pruner.build([_item((8,))])
    new, = pruner.compute_masks(1, [w], [m], [None], [None])
    np.testing.assert_array_equal(new.numpy(), m.numpy())
    # A sparser target still prunes by magnitude among the active ones: sparsity 0.875 ->
    # round(0.125 * 8) = 1 kept, the larger |w| of the two active (0.5 at position 1).
    pruner = U.MagnitudePruning(schedule="constant", final_sparsity=0.875, begin_step=1,
                                frequency=1)
    pruner.build([_item((8,))])
    new, = pruner.compute_masks(1, [w], [m], [None], [None])
    np.testing.assert_array_equal(new.numpy(), [0, 1, 0, 0, 0, 0, 0, 0])


def test_rigl_grown_weights_start_at_zero():
    # RigL (Evci et al. 2020, Sec. 3): newly activated connections are initialised to 0.
    # Active |w| = [4, 3, 2, 1] (positions 0..3), drop floor(0.25 * 4) = 1: position 3.
    # |grad| is 3 at position 5, 0 elsewhere: position 5 is grown, with weight 0; the
    # dropped weight is zeroed; lr = 0 keeps the others at their values.
    kernel = np.array([[4.0, 3.0, 2.0, 1.0], [7.0, 7.0, 7.0, 7.0]])  # row 1 masked out
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    model, var, m = _one_layer(kernel, mask)
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.0),
        U.RigL(update_freq=1, init_drop_fraction=0.25, schedule_alg="constant"))
    vars_ = model.trainable_variables
    grads = [tf.zeros_like(v) for v in vars_]
    gk = np.zeros((2, 4), np.float32)
    gk[1, 1] = 3.0  # flat position 5
    grads[[id(v) for v in vars_].index(id(var))] = tf.constant(gk)
    opt.apply(grads, vars_)  # event step 1: an update step
    np.testing.assert_array_equal(m.numpy(), [[1, 1, 1, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(var.numpy(), [[4, 3, 2, 0], [0, 0, 0, 0]])
