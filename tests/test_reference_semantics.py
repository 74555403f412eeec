"""The reference code's conventions (google-research/rigl rigl_tf2 and tfmot), each checked
against numbers worked out by hand or a small numpy model written here."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import updaters as U

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), L.Dense(12, activation="relu", name="fc1"),
                             L.Dense(3, name="fc2")])


def _data(n=8, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 6).astype("float32"), rng.randint(0, 3, n).astype("int32")


def _step_fn(model, opt):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return grads

    return step


def test_mask_updates_happen_after_update_freq_2x_3x_steps():
    # The reference checks is_update_iter(optimizer.iterations) right after
    # apply_gradients: with update_freq = 3 masks change after the 3rd, 6th, 9th step.
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1),
                                  U.SET(update_freq=3, init_drop_fraction=0.5, seed=1))
    step = _step_fn(model, opt)
    x, y = _data()
    seen, changed = [], []
    before = rigl_tf.get_masks(model)
    for _ in range(10):
        step(x, y)
        after = rigl_tf.get_masks(model)
        changed.append(any(not np.array_equal(before[k], after[k]) for k in after))
        seen.append(int(opt.last_update_step.numpy()))
        before = after
    assert changed == [False, False, True, False, False, True, False, False, True, False]
    assert seen == [-1, -1, 3, 3, 3, 6, 6, 6, 9, 9]
    # The callbacks' view: the step starting at iterations 2 (0-based batch 2) updates.
    assert [opt.updates_masks_in_step(i) for i in range(7)] == [
        False, False, True, False, False, True, False]
    assert opt.update_step_of(5) == 6


def test_rigl_with_cosine_and_no_end_is_refused():
    with pytest.raises(ValueError, match=r"'cosine' drop-fraction .*must be > 0, got -1"):
        U.RigL(schedule_alg="cosine")
    assert U.RigL().get_config()["schedule_alg"] == "lr"  # the reference's default


def test_cosine_drop_fraction_in_training_uses_the_papers_formula():
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.1),
        U.RigL(update_freq=2, start_step=4, end_step=8, init_drop_fraction=0.4,
               schedule_alg="cosine"))
    step = _step_fn(model, opt)
    x, y = _data()
    fractions = {}
    for _ in range(8):
        step(x, y)
        fractions[int(opt.last_update_step.numpy())] = float(opt.last_drop_fraction.numpy())
    # f(t) = 0.4 / 2 * (1 + cos(pi * t / 8)) from step 0, although updates start at 4.
    assert sorted(k for k in fractions if k >= 0) == [4, 6, 8]
    assert fractions[4] == pytest.approx(0.2)  # cos(pi/2) = 0
    assert fractions[6] == pytest.approx(0.2 * (1 - 0.7071067811865476), rel=1e-5)
    assert fractions[8] == pytest.approx(0.0, abs=1e-7)


def test_lr_drop_fraction_reads_lr_at_the_update_step_over_the_warmup_peak():
    # Linear warm-up 0 -> 0.1 over 4 steps, then cosine decay over 10 steps (Keras
    # CosineDecay). lr(0) = 0, so normalising by lr(0) would never change a mask.
    lr = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=10, warmup_target=0.1,
                                                warmup_steps=4)
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(lr),
                                  U.RigL(update_freq=2, init_drop_fraction=0.4))  # 'lr'
    step = _step_fn(model, opt)
    x, y = _data()
    fractions = {}
    for _ in range(6):
        step(x, y)
        fractions[int(opt.last_update_step.numpy())] = float(opt.last_drop_fraction.numpy())
    # t = 2: in warm-up, lr = 0.1 * 2 / 4 = 0.05 -> 0.4 * 0.5.
    assert fractions[2] == pytest.approx(0.2, rel=1e-5)
    # t = 4: warm-up done, lr = 0.1 -> 0.4.
    assert fractions[4] == pytest.approx(0.4, rel=1e-5)
    # t = 6: lr = 0.1 * 0.5 * (1 + cos(pi * 2 / 10)) -> 0.4 * 0.5 * (1 + 0.80901699).
    assert fractions[6] == pytest.approx(0.2 * 1.8090169943749475, rel=1e-5)


def test_rigl_train_warmup_schedule_has_its_target_as_peak():
    from rigl_tf.experiments import config as C

    spec = C.optimizer(learning_rate=0.05, schedule="cosine", warmup_steps=100)
    lr = C.build_learning_rate(spec, 1000)
    assert float(lr(0)) == 0.0
    assert U.peak_learning_rate(lr) == pytest.approx(0.05)
    step = C.optimizer(learning_rate=0.1, schedule="step", boundaries=(10,), values=(0.1, 0.3))
    assert U.peak_learning_rate(C.build_learning_rate(step, 100)) == pytest.approx(0.3)


def test_lr_schedule_without_a_usable_peak_is_refused_at_build():
    class Ramp(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.01 * tf.cast(step, tf.float32)

    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(Ramp()), U.RigL(update_freq=2))
    with pytest.raises(ValueError, match="peak learning rate, which is 0.0 .*peak_learning_rate"):
        opt.build(model.trainable_variables)
    Ramp.peak_learning_rate = 1.0  # declared: accepted
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(Ramp()), U.RigL(update_freq=2))
    opt.build(model.trainable_variables)


def test_gradual_magnitude_pruning_acts_like_tfmot_polynomial_decay():
    """A numpy model of tfmot's loop: in batch b (0-based) tfmot first increments
    pruning_step to t = b + 1, then, if t is a pruning step, prunes the current weights
    (after b updates) to s(t) = s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** 3
    and trains batch b with the new masks."""
    model = rigl_tf.sparsify(_mlp(), 0.0, "uniform")
    lr = 0.5
    pruner = U.MagnitudePruning("polynomial", 0.0, 0.75, begin_step=2, end_step=6,
                                frequency=2)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(lr), pruner)
    step = _step_fn(model, opt)
    kernels = [w for _, w, _ in rigl_tf.masked_weights(model)]
    keys = [k for k, _, _ in rigl_tf.masked_weights(model)]
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    # Hand-computed targets at pruning steps 2, 4, 6: 0, 0.75 * (1 - 0.5 ** 3), 0.75.
    targets = {2: 0.0, 4: 0.75 * (1 - 0.5 ** 3), 6: 0.75}
    w = [k.numpy().copy() for k in kernels]
    m = [np.ones_like(a) for a in w]
    for b in range(8):
        x, y = _data(8, seed=b)
        grads = step(x, y)  # rigl_tf: this batch, then the masks for batch b + 1
        for i, k in enumerate(kernels):
            g = grads[index[id(k)]].numpy()
            w[i] = (w[i] - lr * g * m[i]) * m[i]  # SGD on the active weights
        t = b + 2  # tfmot's pruning_step in the next batch, before its update
        if t in targets:
            for i in range(len(w)):
                keep = int(np.round((1 - targets[t]) * w[i].size))
                scores = np.where(m[i] > 0, np.abs(w[i]), -np.inf).ravel()
                new = np.zeros(w[i].size, np.float32)
                new[np.argsort(-scores, kind="stable")[:keep]] = 1
                m[i] = new.reshape(w[i].shape)
                w[i] = w[i] * m[i]
        masks = rigl_tf.get_masks(model)
        for i, k in enumerate(kernels):
            np.testing.assert_array_equal(masks[keys[i]], m[i], err_msg=f"batch {b}")
            np.testing.assert_allclose(k.numpy(), w[i], rtol=1e-5, atol=1e-6)
        if t in targets:
            assert int(opt.last_update_step.numpy()) == t
    assert [int(a.sum()) for a in m] == [round(0.25 * a.size) for a in w]


_TFMOT_LOOP = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as tfk
    tfk.utils.set_random_seed(0)
    m = tfk.Sequential([tfk.layers.Dense(16, activation="relu", input_shape=(10,)),
                        tfk.layers.Dense(4)])
    w0 = [w.tolist() for w in m.get_weights()]
    sched = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=2, end_step=8,
                                                 frequency=2)
    p = tfmot.sparsity.keras.prune_low_magnitude(m, pruning_schedule=sched)
    p.compile(tfk.optimizers.SGD(0.2),
              tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(0)
    x, y = rng.rand(48, 10).astype("float32"), rng.randint(0, 4, 48)
    counts = []

    class Rec(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append([int(l.pruning_vars[0][1].numpy().sum()) for l in p.layers])

    p.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
          callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Rec()])
    out = {"w0": w0, "counts": counts, "x": x.tolist(), "y": y.tolist(),
           "masks": [l.pruning_vars[0][1].numpy().tolist() for l in p.layers],
           "kernels": [(l.pruning_vars[0][0].numpy() * l.pruning_vars[0][1].numpy()).tolist()
                       for l in p.layers]}
    json.dump(out, open(sys.argv[1], "w"))
""")


@pytest.mark.slow
def test_gradual_pruning_matches_real_tfmot_in_a_standard_loop(tmp_path):
    """The real thing: tfmot's PolynomialDecay with fit + UpdatePruningStep (tf_keras, in a
    subprocess) and rigl_tf's pruning on a Keras 3 twin with the same weights and data."""
    pytest.importorskip("tensorflow_model_optimization")
    pytest.importorskip("tf_keras")
    script, out = tmp_path / "tfmot_loop.py", tmp_path / "tfmot.json"
    script.write_text(_TFMOT_LOOP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, str(script), str(out)], check=True, env=env,
                   timeout=600)
    ref = json.loads(out.read_text())
    model = keras.Sequential([keras.Input((10,)), L.Dense(16, activation="relu"), L.Dense(4)])
    model.set_weights([np.array(w, np.float32) for w in ref["w0"]])
    model = rigl_tf.sparsify(model, 0.0, "uniform", init="dense")
    pruner = U.MagnitudePruning("polynomial", 0.0, 0.75, begin_step=2, end_step=8,
                                frequency=2)
    model.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.2), pruner), LOSS)
    counts = []

    class Rec(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append([int(m.sum()) for m in rigl_tf.get_masks(self.model).values()])

    x, y = np.array(ref["x"], np.float32), np.array(ref["y"], np.int32)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Rec()])
    # tfmot changes a mask inside batch b; rigl_tf right after batch b - 1: the masks a
    # batch trains with are the same. Dense(10->16): 160 weights, Dense(16->4): 64.
    assert ref["counts"][3:5] == [[76, 30], [76, 30]]  # round(160 * (1 - 0.5278)), ...
    assert counts[:-1] == ref["counts"][1:]
    masks = list(rigl_tf.get_masks(model).values())
    for got, want in zip(masks, ref["masks"]):
        np.testing.assert_array_equal(got, np.array(want, np.float32))
    for (_, w, _), want in zip(rigl_tf.masked_weights(model), ref["kernels"]):
        np.testing.assert_allclose(w.numpy(), np.array(want, np.float32), rtol=1e-4,
                                   atol=1e-6)


def test_pruning_at_step_1_prunes_the_initial_weights_before_the_first_update():
    model = rigl_tf.sparsify(_mlp(), 0.0, "uniform")
    w0 = {k: w.numpy().copy() for k, w, _ in rigl_tf.masked_weights(model)}
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1),
                                  U.MagnitudePruning("oneshot", final_sparsity=0.5,
                                                     begin_step=1))
    assert opt.updates_masks_in_step(0) and not opt.updates_masks_in_step(1)
    step = _step_fn(model, opt)
    x, y = _data()
    step(x, y)
    for key, m in rigl_tf.get_masks(model).items():
        keep = np.argsort(-np.abs(w0[key]).ravel(), kind="stable")[: m.size // 2]
        expected = np.zeros(m.size, np.float32)
        expected[keep] = 1
        np.testing.assert_array_equal(m.ravel(), expected)
    assert int(opt.last_update_step.numpy()) == 1
    with pytest.raises(ValueError, match="One-shot pruning `begin_step` must be >= 1"):
        U.MagnitudePruning("oneshot", final_sparsity=0.5, begin_step=0)


def test_unit_scaled_grow_init_is_glorot_fan_average():
    # Grown weights are U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) of the new mask.
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.0),
                                  U.SET(update_freq=1, grow_init="unit_scaled",
                                        regrow_dropped=False, schedule_alg="constant",
                                        init_drop_fraction=0.5))
    masks0 = rigl_tf.get_masks(model)
    x, y = _data()
    _step_fn(model, opt)(x, y)
    for key, w, m in rigl_tf.masked_weights(model):
        m = m.numpy()
        fan_in = m.sum(0, keepdims=True) * np.ones_like(m)
        fan_out = m.sum(1, keepdims=True) * np.ones_like(m)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        grown = (masks0[key] == 0) & (m == 1)
        assert grown.sum() > 0
        assert np.all(np.abs(w.numpy()[grown]) <= limit[grown] + 1e-6)
        assert math.isfinite(float(np.abs(w.numpy()).max()))
