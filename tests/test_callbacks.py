"""rigl_tf.keras.callbacks: summaries, gradient flow around mask updates, NaN guard."""

import glob
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.keras import callbacks as cb


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return x, y


def _model(updater="static", sparsity=0.5, lr=0.05, **kwargs):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    out = keras.layers.Dense(2)(h)
    model = rigl_tf.sparsify(keras.Model(inputs, out), sparsity, "uniform", seed=1)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(lr, momentum=0.9),
                                  rigl_tf.updaters.get_updater(updater, **kwargs))
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _tags(logdir):
    out = {}
    for f in glob.glob(str(logdir / "*")):
        for event in tf.compat.v1.train.summary_iterator(f):
            for v in event.summary.value:
                out.setdefault(v.tag, []).append(
                    (event.step, v.metadata.plugin_data.plugin_name, v))
    return out


def _scalar(v):
    return float(tf.make_ndarray(v.tensor))


def test_sparsity_summary_writes_sparsity_drop_fraction_and_mask_images(tmp_path):
    x, y = _data()
    model = _model("rigl", update_freq=2, init_drop_fraction=0.5, schedule_alg="constant",
                   regrow_dropped=False)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[cb.SparsitySummary(str(tmp_path), every_n_steps=2)])
    tags = _tags(tmp_path)
    steps = [s for s, _, _ in tags["sparsity/total"]]
    assert steps == [0, 2, 4]
    assert all(_scalar(v) == pytest.approx(0.5) for _, _, v in tags["sparsity/total"])
    assert _scalar(tags["sparsity/dense/kernel"][0][2]) == pytest.approx(0.5)
    assert _scalar(tags["mask_update/drop_fraction"][-1][2]) == pytest.approx(0.5)
    # 24 and 8 active weights at 50%: floor(0.5 * 24) + floor(0.5 * 8) = 16 newly grown.
    assert _scalar(tags["mask_update/num_changed"][-1][2]) == 16
    step, plugin, value = tags["mask/dense/kernel"][-1]  # the final masks
    assert plugin == "images" and step == 4
    width, height = (int(b) for b in value.tensor.string_val[:2])
    assert (height, width) == (6, 8)
    png = tf.io.decode_png(value.tensor.string_val[2]).numpy()[:, :, 0]
    mask = rigl_tf.get_masks(model)["dense/kernel"]
    np.testing.assert_array_equal(png, (mask * 255).astype(np.uint8))


def test_mask_image_shapes():
    assert cb.mask_image(tf.ones([5])).shape == (1, 1, 5, 1)
    assert cb.mask_image(tf.ones([3, 3, 2, 4])).shape == (1, 18, 4, 1)


def test_gradient_flow_matches_the_masked_gradient(tmp_path):
    x, y = _data()
    model = _model()
    flow = cb.GradientFlow(x[:32], y[:32], every_n_steps=4, writer=str(tmp_path))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[flow])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        value = loss(y[:32], model(x[:32]))
    grads = tape.gradient(value, model.trainable_variables)
    expected = 0.0
    for g, v in zip(grads, model.trainable_variables):
        mask = rigl_tf.keras.wrapper.get_mask(v)
        g = g.numpy() * (1.0 if mask is None else mask.numpy())
        expected += float(np.sum(g ** 2))
    total, per_var = flow.measure()
    assert total == pytest.approx(expected, rel=1e-5)
    assert len(per_var) == len(model.trainable_variables)
    periodic = [h["step"] for h in flow.history if h["kind"] == "periodic"]
    assert periodic == [0, 4, 8]
    tags = _tags(tmp_path)
    assert {"gradient_flow/norm", "gradient_flow/squared_norm"} <= set(tags)
    assert any(t.startswith("gradient_flow/norm/") and "kernel" in t for t in tags)
    last = tags["gradient_flow/norm"][-1][2]
    assert _scalar(last) == pytest.approx(
        math.sqrt([h for h in flow.history if h["step"] == 8][0]["squared_norm"]), rel=1e-6)
    assert "gradient_flow/mask_update/before" not in tags  # static mask: no updates


def test_gradient_flow_measures_before_and_after_every_mask_update(tmp_path):
    x, y = _data()
    model = _model("rigl", update_freq=3, init_drop_fraction=0.5, schedule_alg="constant")
    flow = cb.GradientFlow(x[:32], y[:32], every_n_steps=100, writer=str(tmp_path))

    masks_seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            masks_seen["begin"] = rigl_tf.get_masks(self.model)

    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Spy(), flow])
    updates = sorted({h["step"] for h in flow.history if h["kind"] == "before"})
    assert updates == [3, 6]
    assert int(model.optimizer.last_update_step.numpy()) == 6
    tags = _tags(tmp_path)
    before = {s: _scalar(v) for s, _, v in tags["gradient_flow/mask_update/before"]}
    after = {s: _scalar(v) for s, _, v in tags["gradient_flow/mask_update/after"]}
    change = {s: _scalar(v) for s, _, v in tags["gradient_flow/mask_update/change"]}
    assert sorted(before) == [3, 6]
    for s in before:
        assert change[s] == pytest.approx(after[s] - before[s], rel=1e-5, abs=1e-7)
        assert after[s] != before[s]


def test_distance_to_init(tmp_path):
    x, y = _data()
    model = _model()
    dist = cb.DistanceToInit(every_n_steps=2, writer=str(tmp_path))
    start = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[dist])
    per_var, (l2, cos) = dist.distances()
    now = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    ref = np.concatenate([w.ravel() for w in start])
    assert l2 == pytest.approx(np.linalg.norm(now - ref), rel=1e-5)
    assert cos == pytest.approx(1 - now @ ref / np.linalg.norm(now) / np.linalg.norm(ref),
                                rel=1e-4, abs=1e-7)
    assert [h["step"] for h in dist.history] == [2, 4]
    assert dist.history[-1]["l2"] > 0
    assert "distance_to_init/cosine/all" in _tags(tmp_path)
    # A given reference point (e.g. step 0 of a resumed run) is used as is.
    fixed = cb.DistanceToInit(every_n_steps=1, initial_weights=start)
    fixed.set_model(model)
    fixed.on_train_begin()
    assert fixed.distances()[1][0] == pytest.approx(l2, rel=1e-6)
    bad = cb.DistanceToInit(initial_weights=start[:1])
    bad.set_model(model)
    with pytest.raises(ValueError, match="initial_weights"):
        bad.on_train_begin()


def test_cosine_distance():
    assert cb.cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert cb.cosine_distance([1, 2], [2, 4]) == pytest.approx(0.0, abs=1e-12)
    assert cb.cosine_distance([0, 0], [1, 1]) == 0.0


def test_nan_guard_stops_at_the_first_bad_loss(capsys):
    x, y = _data()
    model = _model(lr=1e30)  # the first step blows the weights up; the second loss is NaN
    guard = cb.NanGuard()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[guard])
    assert guard.failed_step == 2
    assert int(model.optimizer.iterations.numpy()) == 2
    assert "Training diverged" in guard.message and "step 2" in guard.message
    assert "Training diverged" in capsys.readouterr().out
    assert len(history.history["loss"]) == 1


def test_metrics_summary_writes_train_test_and_learning_rate(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(optimizer=model.optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x, y),
              callbacks=[cb.MetricsSummary(str(tmp_path))])
    tags = _tags(tmp_path)
    for tag in ("train/loss", "train/accuracy", "test/loss", "test/accuracy", "learning_rate"):
        assert [s for s, _, _ in tags[tag]] == [4, 8], tag
    assert _scalar(tags["learning_rate"][0][2]) == pytest.approx(0.05)


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps"):
        cb.SparsitySummary(None, every_n_steps=0)
    with pytest.raises(TypeError, match="writer"):
        cb.GradientFlow(np.zeros((1, 6)), np.zeros(1), writer=3)


def test_read_step_reads_the_counter_plain_and_distributed():
    # The fast path (one ReadVariableOp) and the fallback (.numpy()) give the value last
    # assigned, also after compiled steps changed it.
    opt = keras.optimizers.SGD(0.1)
    opt.build([keras.Variable(np.ones(2, "float32"))])
    assert cb.read_step(opt.iterations) == 0
    opt.iterations.assign(41)
    assert cb.read_step(opt.iterations) == 41
    opt.iterations.assign_add(1)
    assert cb.read_step(opt.iterations) == 42
    assert cb.read_step(tf.Variable(7, dtype=tf.int64)) == 7
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        opt2 = keras.optimizers.SGD(0.1)
        opt2.build([keras.Variable(np.ones(2, "float32"))])
    opt2.iterations.assign(5)
    assert cb.read_step(opt2.iterations) == 5
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), batch_size=2,
              epochs=1, verbose=0)
    assert cb.read_step(model.optimizer.iterations) == 4
