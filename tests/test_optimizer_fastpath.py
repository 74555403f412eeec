"""SparseOptimizer's per-step fast path: masks are re-applied only where it is needed.

For inner optimizers that keep zeros (weight, gradient and slots all zero -> weight stays
exactly zero), SparseOptimizer skips the mask re-application on ordinary steps. These
tests check that property of each optimizer directly (expected value: exactly 0), that
optimizers without it still get the re-application, and that masks changed from outside
the train step cannot leave stale slots behind.
"""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras.optimizer import keeps_zeros

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
O = keras.optimizers

# Every built-in optimizer, with the options that add terms to its update.
KEEPERS = {
    "sgd": lambda: O.SGD(0.1),
    "sgd_nesterov_wd_clip": lambda: O.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1,
                                          clipnorm=1.0),
    "adam_amsgrad": lambda: O.Adam(0.1, amsgrad=True),
    "adamw": lambda: O.AdamW(0.1, weight_decay=0.5),
    "rmsprop_centered": lambda: O.RMSprop(0.1, momentum=0.5, centered=True),
    "adagrad": lambda: O.Adagrad(0.1),
    "nadam": lambda: O.Nadam(0.1),
    "adamax": lambda: O.Adamax(0.1),
    "lion": lambda: O.Lion(0.1),
    "adadelta": lambda: O.Adadelta(1.0),
    "ftrl": lambda: O.Ftrl(0.1, l1_regularization_strength=0.01,
                           l2_regularization_strength=0.01,
                           l2_shrinkage_regularization_strength=0.01, beta=0.1),
    "lamb": lambda: O.Lamb(0.1),
    "loss_scaled_sgd": lambda: O.LossScaleOptimizer(O.SGD(0.1, momentum=0.9)),
}


@pytest.mark.parametrize("name", sorted(KEEPERS))
def test_builtin_optimizers_keep_masked_weights_exactly_zero(name):
    # The property the fast path relies on, checked on the inner optimizer alone: with the
    # gradient masked and the weight and slots starting at zero, no step moves the weight.
    opt = KEEPERS[name]()
    assert keeps_zeros(opt)
    rng = np.random.RandomState(0)
    mask = (rng.rand(6, 5) < 0.5).astype("float32")
    var = keras.Variable(rng.randn(6, 5).astype("float32") * mask)
    opt.build([var])
    for _ in range(5):
        grad = tf.constant(rng.randn(6, 5).astype("float32") * 10.0 * mask)
        opt.apply([grad], [var])
    w = var.numpy()
    assert np.all(w[mask == 0] == 0.0)
    assert np.any(w[mask == 1] != 0.0)


class _Drifting(O.SGD):
    """An SGD subclass whose update moves every weight (e.g. a constant decay target)."""

    def update_step(self, gradient, variable, learning_rate):
        variable.assign_sub(learning_rate * (gradient + 0.01))


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(4, 3, activation="relu", name="conv"),
        L.Flatten(name="flat"),
        L.Dense(12, activation="relu", name="fc1"),
        L.Dense(5, name="fc2"),
    ])


def _data(n=32, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 6, 6, 2).astype("float32"), rng.randint(0, 5, n).astype("int32")


def _assert_masked_zero(model):
    for key, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0.0), key


@pytest.mark.parametrize("inner", [
    lambda: _Drifting(0.1, name="drifting"),                  # subclass: not trusted
    lambda: O.SGD(0.1, momentum=0.9, use_ema=True, ema_overwrite_frequency=2),
])
def test_masks_reapplied_every_step_when_inner_optimizer_does_not_keep_zeros(inner):
    # RigL drops connections, so EMA values at dropped positions are non-zero; only the
    # re-application keeps those weights at zero. A custom loop, as model.fit also zeroes
    # them once at its end (finalize_variable_values).
    opt = inner()
    assert not keeps_zeros(opt)
    model = rigl_tf.sparsify(_net(), 0.7, "erk")
    sparse_opt = rigl_tf.SparseOptimizer(
        opt, rigl_tf.updaters.RigL(update_freq=4, init_drop_fraction=0.5))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        sparse_opt.apply(tape.gradient(loss, model.trainable_variables),
                         model.trainable_variables)

    x, y = _data()
    for i in range(15):  # ordinary steps after the last update
        step(x[i % 8 * 4:][:4], y[i % 8 * 4:][:4])
        _assert_masked_zero(model)
    assert 4 <= int(sparse_opt.last_update_step.numpy()) < int(sparse_opt.iterations.numpy()) - 1


def test_masks_reapplied_with_gradient_accumulation():
    # The accumulated gradient of a connection pruned between two accumulation steps is
    # not zero: the update at the second step moves it unless masks are re-applied.
    opt = O.SGD(0.1, gradient_accumulation_steps=2)
    assert not keeps_zeros(opt)
    model = rigl_tf.sparsify(_net(), 0.5, "uniform")
    sparse_opt = rigl_tf.SparseOptimizer(opt)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        sparse_opt.apply(tape.gradient(loss, model.trainable_variables),
                         model.trainable_variables)

    x, y = _data()
    step(x[:8], y[:8])  # accumulates only
    rng = np.random.RandomState(1)
    rigl_tf.set_masks(model, {k: m * (rng.rand(*m.shape) < 0.5)
                              for k, m in rigl_tf.get_masks(model).items()})
    before = [w.numpy().copy() for _, w, _ in rigl_tf.masked_weights(model)]
    step(x[8:16], y[8:16])  # applies the accumulated gradients
    assert any(np.any(b != w.numpy()) for b, (_, w, _) in
               zip(before, rigl_tf.masked_weights(model)))
    _assert_masked_zero(model)


def test_fit_with_ema_ends_with_masked_weights_zero():
    # Keras copies the moving averages into the weights at the end of fit; at connections
    # dropped during training they are not zero.
    model = rigl_tf.sparsify(_net(), 0.7, "erk")
    sparse_opt = rigl_tf.SparseOptimizer(
        O.SGD(0.1, momentum=0.9, use_ema=True),
        rigl_tf.updaters.RigL(update_freq=4, init_drop_fraction=0.5))
    model.compile(sparse_opt, LOSS)
    model.fit(*_data(), batch_size=4, epochs=2, verbose=0)
    assert int(sparse_opt.last_update_step.numpy()) == 16  # 16 steps: updates after 4, 8, 12, 16
    _assert_masked_zero(model)


def test_weights_assigned_before_training_are_masked_at_step_0():
    model = rigl_tf.sparsify(_net(), 0.8, "erk")
    for _, w, _ in rigl_tf.masked_weights(model):
        w.assign(np.full(w.shape, 0.5, "float32"))  # dense values everywhere
    opt = rigl_tf.SparseOptimizer(O.SGD(0.1, momentum=0.9))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    x, y = _data(8)
    step(x, y)
    _assert_masked_zero(model)


def test_weights_assigned_between_compile_and_fit_are_masked():
    model = rigl_tf.sparsify(_net(), 0.8, "erk")
    model.compile(rigl_tf.SparseOptimizer(O.SGD(0.1, momentum=0.9)), LOSS)
    for _, w, _ in rigl_tf.masked_weights(model):
        w.assign(np.full(w.shape, 0.5, "float32"))  # dense values everywhere
    seen = []
    check = keras.callbacks.LambdaCallback(  # after step 1, before fit's finalize
        on_train_batch_end=lambda batch, logs: seen.append(
            [float(np.abs(w.numpy()[m.numpy() == 0]).max())
             for _, w, m in rigl_tf.masked_weights(model)]))
    model.fit(*_data(8), batch_size=8, epochs=1, verbose=0, callbacks=[check])
    assert seen == [[0.0, 0.0, 0.0]]
    _assert_masked_zero(model)


def test_masks_set_mid_training_reset_slots_and_keep_weights_zero():
    model = rigl_tf.sparsify(_net(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(O.SGD(0.1, momentum=0.9))
    model.compile(opt, LOSS)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # Prune half of the active connections from outside the train step.
    rng = np.random.RandomState(1)
    new = {k: m * (rng.rand(*m.shape) < 0.5) for k, m in rigl_tf.get_masks(model).items()}
    rigl_tf.set_masks(model, new)
    base = opt.inner_optimizer
    for it in opt.masked_items:
        momentum = base.momentums[base._get_variable_index(it.var)].numpy()
        assert np.all(momentum[new[it.key] == 0] == 0.0), it.key
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    _assert_masked_zero(model)
    for key, m in rigl_tf.get_masks(model).items():
        np.testing.assert_array_equal(m, new[key])


def _step_graph(model):
    model.fit(*_data(8), batch_size=8, epochs=1, verbose=0)
    x, y = _data(8)
    step = tf.function(lambda x, y: model.train_step((x, y)))
    return step.get_concrete_function(tf.constant(x), tf.constant(y)).graph


def _top_level_op_counts(model):
    return collections.Counter(op.type for op in _step_graph(model).get_operations())


def test_ordinary_step_has_one_gradient_multiply_per_mask_and_no_extra_writes():
    # Hand count: a static SparseOptimizer adds to the dense step one Mul per masked
    # weight (the gradient mask) and no variable write outside the step-0 branch.
    dense = _top_level_op_counts(_compiled(_net(), O.SGD(0.1, momentum=0.9)))
    sparse_model = rigl_tf.sparsify(_net(), 0.5, "uniform")
    sparse = _top_level_op_counts(
        _compiled(sparse_model, rigl_tf.SparseOptimizer(O.SGD(0.1, momentum=0.9))))
    assert len(rigl_tf.masked_weights(sparse_model)) == 3
    assert sparse["Mul"] - dense["Mul"] == 3
    assert sparse["AssignVariableOp"] == dense["AssignVariableOp"]
    assert sparse["AssignAddVariableOp"] == dense["AssignAddVariableOp"]
    assert sparse["If"] == dense["If"]  # masks applied once at tracing, not in the step


def _compiled(model, opt):
    model.compile(opt, LOSS)
    return model


def test_rewind_and_update_conds_stay_single_if_nodes():
    # Lowered to switch/merge, each cond would run a Switch node per input (gradients,
    # variables, slots) and its untaken branch's nodes as dead ones on every ordinary step,
    # 4-7% of an MLP step (issue 16). Hand count: one cond for the rewind snapshot, one
    # for the mask update (RigL's first update is due after step 100, so no step-0 cond).
    model = rigl_tf.sparsify(_net(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(O.SGD(0.1, momentum=0.9),
                                  rigl_tf.updaters.RigL(update_freq=100), rewind_step=3)
    graph = _step_graph(_compiled(model, opt))
    conds = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert len(conds) == 2
    for op in conds:
        assert op.get_attr("_lower_using_switch_merge") is False
