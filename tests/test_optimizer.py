"""SparseOptimizer + updaters: the invariants every topology update must keep."""

import json
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
from rigl_tf.keras.optimizer import slot_spec
from rigl_tf.sparsity import distributions as D

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(6, 3, activation="relu", name="conv"),
        L.Flatten(name="flat"),
        L.Dense(24, activation="relu", name="fc1"),
        L.Dense(5, name="fc2"),
    ])


def _data(n=32, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, 6, 6, 2).astype("float32"), rng.randint(0, 5, n).astype("int32")


def _inner(name):
    return {
        "sgd": lambda: keras.optimizers.SGD(0.05),
        "momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        "adam": lambda: keras.optimizers.Adam(0.01),
        "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01),
        "rmsprop": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    }[name]()


def _slots(opt, var):
    index = [id(it.var) for it in opt.masked_items].index(id(var))
    return [s for s, _ in opt._slot_lists.value[index]]


class _Loop:
    """A custom tf.function training loop (also the documented custom-loop usage)."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)
            return loss

        self.step = step


def _snapshot(opt):
    return {
        it.key: (it.mask.numpy().copy(), it.var.numpy().copy(),
                 [s.numpy().copy() for s in _slots(opt, it.var)])
        for it in opt.masked_items
    }


@pytest.mark.parametrize("alg", ["set", "rigl", "rigl_inverted", "snfs"])
@pytest.mark.parametrize("inner", ["momentum", "adam"])
def test_dst_invariants(alg, inner):
    model = rigl_tf.sparsify(_net(), 0.8, "uniform", init="unit_scaled")
    opt = rigl_tf.SparseOptimizer(
        _inner(inner), U.get_updater(alg, update_freq=3, init_drop_fraction=0.4, seed=1))
    loop = _Loop(model, opt)
    x, y = _data()
    counts = {k: int(m.sum()) for k, m in rigl_tf.get_masks(model).items()}
    n_updates = 0
    for t in range(10):
        before = _snapshot(opt) if opt.built else None
        loop.step(x[t % 4 * 8:(t % 4 + 1) * 8], y[t % 4 * 8:(t % 4 + 1) * 8])
        after = _snapshot(opt)
        # The reference's steps: masks change right after the 3rd, 6th and 9th update.
        is_update = t + 1 in (3, 6, 9)
        n_updates += is_update
        # SNFS redistributes the budget across layers: its total count is exact.
        assert sum(int(a[0].sum()) for a in after.values()) == sum(counts.values())
        for key, (mask, w, slots) in after.items():
            if alg != "snfs":
                assert int(mask.sum()) == counts[key], (key, t)
            assert np.all(w[mask == 0] == 0), (key, t)
            for s in slots:
                assert np.all(s[mask == 0] == 0), (key, t)
            if before is None:
                continue
            old = before[key][0]
            grown = (mask == 1) & (old == 0)
            dropped = (mask == 0) & (old == 1)
            if not is_update:
                np.testing.assert_array_equal(mask, old)
                continue
            if alg != "snfs":
                assert grown.sum() == dropped.sum()
            assert np.all(w[grown] == 0)  # grown connections start at zero
            for s in slots:
                assert np.all(s[grown] == 0)  # and with fresh optimizer state
        if is_update:
            assert int(opt.last_update_step.numpy()) == t + 1
    assert n_updates == 3  # event steps 3, 6, 9
    assert int(opt.iterations.numpy()) == 10


def test_rigl_grows_largest_gradients_and_drops_smallest_weights():
    model = rigl_tf.sparsify(_net(), 0.8, "uniform", seed=2)
    updater = U.RigL(update_freq=1, init_drop_fraction=0.25,
                     schedule_alg="constant", regrow_dropped=False)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.0), updater)  # lr 0: weights fixed
    x, y = _data(8)
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    weights = {v.path: v.numpy().copy() for v in model.trainable_variables}
    masks0 = {k: m.copy() for k, m in rigl_tf.get_masks(model).items()}
    opt.apply(grads, model.trainable_variables)
    gmap = {v.path: g.numpy() for v, g in zip(model.trainable_variables, grads)}
    for it in opt.masked_items:
        old = masks0[it.key]
        new = it.mask.numpy()
        w, g = weights[it.var.path], gmap[it.var.path]
        n_drop = int(np.floor(0.25 * old.sum()))
        dropped = (old == 1) & (new == 0)
        grown = (old == 0) & (new == 1)
        assert dropped.sum() == grown.sum() == n_drop
        kept = (old == 1) & (new == 1)
        assert np.abs(w[dropped]).max() <= np.abs(w[kept]).min()
        never = (old == 0) & (new == 0)
        assert np.abs(g[grown]).min() >= np.abs(g[never]).max()


def test_regrow_dropped_keeps_exactness_on_dense_layer():
    model = rigl_tf.sparsify(_net(), 0.5, "uniform", custom_sparsity={"fc2": 0.0})
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.1),
        U.RigL(update_freq=1, regrow_dropped=False, schedule_alg="constant"))
    loop = _Loop(model, opt)
    x, y = _data(8)
    loop.step(x, y)
    assert rigl_tf.get_masks(model)["fc2/kernel"].sum() == 24 * 5


@pytest.mark.parametrize("alg", ["set", "rigl"])
def test_deterministic_for_seed(alg):
    def run(seed):
        model = rigl_tf.sparsify(_net(), 0.8, "uniform", seed=0)
        opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                      U.get_updater(alg, update_freq=2, seed=seed))
        model.compile(opt, LOSS)
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return list(rigl_tf.get_masks(model).values())

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    if alg == "set":  # SET's growth is random: another seed grows elsewhere
        assert not all(np.array_equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("inner", ["sgd", "momentum", "adam", "adamw", "rmsprop"])
def test_fit_with_every_optimizer(jit, inner):
    model = rigl_tf.sparsify(_net(), 0.7, "erk")
    opt = rigl_tf.SparseOptimizer(_inner(inner), U.RigL(update_freq=2))
    model.compile(opt, LOSS, metrics=["accuracy"], jit_compile=jit)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert int(opt.iterations.numpy()) == 8
    assert int(opt.last_update_step.numpy()) == 8  # events after updates 2, 4, 6, 8
    for key, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_gradual_magnitude_pruning(scope):
    model = rigl_tf.sparsify(_net(), 0.0, "uniform")
    pruner = U.MagnitudePruning("polynomial", 0.0, 0.9, begin_step=2, end_step=8, frequency=2,
                                scope=scope)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.05, momentum=0.9), pruner)
    loop = _Loop(model, opt)
    x, y = _data(8)
    prev = rigl_tf.get_masks(model)
    sizes = {k: m.size for k, m in prev.items()}
    for t in range(12):
        loop.step(x, y)
        masks = rigl_tf.get_masks(model)
        for k in masks:
            assert np.all(masks[k] <= prev[k])  # pruning never regrows
        # Zhu & Gupta targets s(t) = 0.9 - 0.9 * (1 - (t - 2) / 6) ** 3 at event steps
        # t = 2, 4, 6, 8 (iterations after the update, as tfmot's pruning_step), i.e. in
        # loop steps 1, 3, 5, 7.
        targets = {1: 0.0, 3: 0.9 * (1 - (2 / 3) ** 3), 5: 0.9 * (1 - (1 / 3) ** 3), 7: 0.9}
        if t in targets:
            target = targets[t]
            if scope == "layerwise":
                for k, m in masks.items():
                    assert int(m.sum()) == max(1, int(np.round((1 - target) * sizes[k]))), (k, t)
            else:
                total = sum(sizes.values())
                assert sum(int(m.sum()) for m in masks.values()) == int(np.round((1 - target) * total))
        else:
            assert all(np.array_equal(masks[k], prev[k]) for k in masks)
        prev = masks
    for key, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)
        if scope == "layerwise":
            assert int(m.numpy().sum()) == D.num_active(0.1, m.numpy().size)


def test_pruning_with_erk_targets_and_random_pruning():
    model = rigl_tf.sparsify(_net(), 0.0, "uniform")
    pruner = U.RandomPruning("oneshot", final_sparsity=0.8, begin_step=1, distribution="erk")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.05), pruner)
    model.compile(opt, LOSS)
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    shapes = {k: m.shape for k, m in rigl_tf.get_masks(model).items()}
    dens = D.get_densities(shapes, 0.8, "erk")
    for k, m in rigl_tf.get_masks(model).items():
        assert int(m.sum()) == D.num_active(dens[k], m.size)


def test_masks_and_slots_identical_across_mirrored_replicas():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices")
    # Reduction to one device avoids collective ops, whose instance keys would collide with
    # another MirroredStrategy created in the same test process.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = rigl_tf.sparsify(_net(), 0.8, "uniform")
        opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                      U.RigL(update_freq=2, init_drop_fraction=0.5))
        model.compile(opt, LOSS)
    x, y = _data()
    masks0 = rigl_tf.get_masks(model)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert int(opt.last_update_step.numpy()) == 6  # 6 steps, events after updates 2, 4, 6

    def local(v):
        return [t.numpy() for t in strategy.experimental_local_results(v.value)]

    changed = 0
    for it in opt.masked_items:
        for var in [it.var, it.mask] + _slots(opt, it.var):
            a, b = local(var)
            np.testing.assert_array_equal(a, b)
        changed += int((local(it.mask)[0] != masks0[it.key]).sum())
    assert changed > 0


def test_rewind_step_captures_and_restores():
    model = rigl_tf.sparsify(_net(), 0.5, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), "static",
                                  rewind_step=2)
    loop = _Loop(model, opt)
    x, y = _data(8)
    with pytest.raises(ValueError, match="no snapshot yet"):
        loop.step(x, y)
        opt.rewind()
    loop.step(x, y)
    at_2 = [v.numpy().copy() for v in model.trainable_variables]
    for _ in range(3):
        loop.step(x, y)
    assert not np.array_equal(at_2[0], model.trainable_variables[0].numpy())
    # Prune some more, then rewind: weights come back under the *current* masks.
    key = next(iter(rigl_tf.get_masks(model)))
    new_mask = rigl_tf.get_masks(model)[key].copy()
    new_mask.flat[np.flatnonzero(new_mask)[:5]] = 0
    rigl_tf.set_masks(model, {key: new_mask})
    opt.rewind()
    assert int(opt.iterations.numpy()) == 2
    for v, ref in zip(model.trainable_variables, at_2):
        from rigl_tf.keras.wrapper import get_mask
        mask = get_mask(v)
        expected = ref if mask is None else ref * mask.numpy()
        np.testing.assert_array_equal(v.numpy(), expected)
    for s in opt.inner_optimizer.momentums:
        assert not np.any(s.numpy())


def test_keras_file_round_trip_with_sparse_optimizer(tmp_path):
    model = rigl_tf.sparsify(_net(), 0.8, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.Adam(0.01),
                                  U.SET(update_freq=2, init_drop_fraction=0.2, seed=3),
                                  rewind_step=1)
    model.compile(opt, LOSS)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    lopt = loaded.optimizer
    assert isinstance(lopt, rigl_tf.SparseOptimizer)
    assert lopt.updater.get_config() == opt.updater.get_config()
    assert lopt.rewind_step == 1
    assert int(lopt.iterations.numpy()) == 4
    for a, b in zip(opt.variables, lopt.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for (k, w, m), (k2, w2, m2) in zip(rigl_tf.masked_weights(model),
                                       rigl_tf.masked_weights(loaded)):
        np.testing.assert_array_equal(m.numpy(), m2.numpy())
        np.testing.assert_array_equal(w.numpy(), w2.numpy())
    # Both continue identically.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(rigl_tf.get_masks(model).values(), rigl_tf.get_masks(loaded).values()):
        np.testing.assert_array_equal(a, b)


_RESUME_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    tf.config.experimental.enable_op_determinism()
    import rigl_tf
    mode, ckdir, steps_from, steps_to, out = sys.argv[1:6]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(6, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(5)])
    model = rigl_tf.sparsify(model, 0.8, "uniform", init="unit_scaled", seed=0)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                  rigl_tf.updaters.SET(update_freq=3, seed=1))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt.build(model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
    if mode == "resume":
        ckpt.read(os.path.join(ckdir, "ckpt-%s" % steps_from)).assert_consumed()
    rng = np.random.RandomState(0)
    xs, ys = rng.rand(64, 6, 6, 2).astype("float32"), rng.randint(0, 5, 64)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    for t in range(int(steps_from), int(steps_to)):
        i = t % 8
        step(xs[i * 8:(i + 1) * 8], ys[i * 8:(i + 1) * 8])
    assert int(opt.iterations.numpy()) == int(steps_to)
    ckpt.write(os.path.join(ckdir, "ckpt-%s" % steps_to))
    np.savez(out, *[v.numpy() for v in model.weights], *[v.numpy() for v in opt.variables])
""")


@pytest.mark.slow
def test_checkpoint_resume_in_fresh_process_matches_uninterrupted(tmp_path):
    script = os.path.join(tmp_path, "run.py")
    with open(script, "w") as f:
        f.write(_RESUME_SCRIPT)

    def run(*args):
        subprocess.run([sys.executable, script, *map(str, args)], check=True,
                       capture_output=True, text=True)

    full, part = os.path.join(tmp_path, "full"), os.path.join(tmp_path, "part")
    os.makedirs(full)
    os.makedirs(part)
    run("fresh", full, 0, 14, os.path.join(tmp_path, "full.npz"))
    run("fresh", part, 0, 7, os.path.join(tmp_path, "a.npz"))
    run("resume", part, 7, 14, os.path.join(tmp_path, "b.npz"))
    a = np.load(os.path.join(tmp_path, "full.npz"))
    b = np.load(os.path.join(tmp_path, "b.npz"))
    assert len(a.files) == len(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


def test_embedding_indexed_slices_with_rigl():
    model = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(50, 8, name="emb"),
                              L.Flatten(), L.Dense(3, name="out")])
    model = rigl_tf.sparsify(model, 0.7, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.Adam(0.01),
                                  U.RigL(update_freq=2, init_drop_fraction=0.3))
    model.compile(opt, LOSS)
    x = np.random.RandomState(0).randint(0, 50, (16, 5))
    y = np.random.RandomState(1).randint(0, 3, 16)
    masks0 = rigl_tf.get_masks(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    masks = rigl_tf.get_masks(model)
    assert masks["emb/embeddings"].sum() == masks0["emb/embeddings"].sum()
    assert not np.array_equal(masks["emb/embeddings"], masks0["emb/embeddings"])
    for _, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)


def test_lr_drop_fraction_schedule():
    model = rigl_tf.sparsify(_net(), 0.8, "uniform")
    lr = keras.optimizers.schedules.PolynomialDecay(0.1, 10, 0.0, power=1.0)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(lr),
                                  U.RigL(update_freq=5, init_drop_fraction=0.4, schedule_alg="lr"))
    loop = _Loop(model, opt)
    x, y = _data(8)
    for _ in range(6):
        loop.step(x, y)
    # The update after the 5th step reads lr(5) = 0.1 * (1 - 5/10) = 0.05; peak 0.1.
    assert int(opt.last_update_step.numpy()) == 5
    assert float(opt.last_drop_fraction.numpy()) == pytest.approx(0.4 * 0.5, rel=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_scaling_composes(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = rigl_tf.sparsify(_net(), 0.8, "uniform")
        opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                      U.RigL(update_freq=2))
        model.compile(opt, LOSS)
        # Keras wraps the optimizer for loss scaling under float16 only.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
            policy == "mixed_float16")
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert int(opt.last_update_step.numpy()) == 4  # 4 steps: events after updates 2, 4
        for key, w, m in rigl_tf.masked_weights(model):
            assert m.dtype == w.dtype == "float32"
            assert np.all(w.numpy()[m.numpy() == 0] == 0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: U.RigL(init_drop_fraction=1.5), r"`init_drop_fraction` must be in \[0.0, 1.0\], got 1.5"),
        (lambda: U.SET(update_freq=0), "`update_freq` must be >= 1, got 0"),
        (lambda: U.RigL(update_freq=10, start_step=100, end_step=50), "`end_step` \\(50\\) must be >= `start_step` \\(100\\)"),
        (lambda: U.get_updater("rigl2"), "Unknown updater `update_alg` 'rigl2'; known updaters: .*rigl, rigl_inverted"),
        (lambda: U.RigL(schedule_alg="linear"), "Unknown drop-fraction `schedule_alg` 'linear'"),
        (lambda: U.MagnitudePruning(scope="local"), "Unknown pruning `scope` 'local'"),
        (lambda: U.SNFS(momentum=1.0), "`momentum` must be in"),
        (lambda: rigl_tf.SparseOptimizer(keras.optimizers.SGD(), "static", rewind_step=-1), "`rewind_step` must be None or an integer >= 0, got -1"),
        (lambda: rigl_tf.SparseOptimizer("sgd", "rigl"), "`inner_optimizer` must be a Keras 3 optimizer, got str"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_unknown_optimizer_state_is_refused_for_dst():
    class MyOpt(keras.optimizers.Optimizer):
        def build(self, var_list):
            super().build(var_list)
            self.acc = self.add_optimizer_variables(var_list, "acc")

        def update_step(self, g, v, lr):
            v.assign_sub(lr * g)

    assert slot_spec(MyOpt(0.1)) is None
    with pytest.raises(ValueError, match="MyOpt has optimizer state.*updater 'rigl'.*register_optimizer_slots"):
        rigl_tf.SparseOptimizer(MyOpt(0.1), "rigl")
    rigl_tf.SparseOptimizer(MyOpt(0.1), "static")  # never regrows: allowed


def test_model_without_wrappers_is_refused():
    model = _net()
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), "rigl")
    model.compile(opt, LOSS)
    x, y = _data(8)
    with pytest.raises(ValueError, match="no masked weights.*sparsify"):
        model.fit(x, y, verbose=0)


def test_updater_registry_lists_all():
    assert U.list_updaters() == sorted(
        ["static", "set", "rigl", "rigl_inverted", "snfs", "magnitude", "random"])
    json.dumps(U.RigL().get_config())  # configs are JSON-serialisable


def test_rigl_with_heldout_batch_gradients():
    from rigl_tf.keras.optimizer import heldout_gradient_fn

    model = rigl_tf.sparsify(_net(), 0.8, "uniform", seed=2)
    xh, yh = _data(8, seed=5)
    opt = rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.0),
        U.RigL(update_freq=1, init_drop_fraction=0.25, schedule_alg="constant",
               regrow_dropped=False),
        gradient_fn=heldout_gradient_fn(model, xh, yh))
    loop = _Loop(model, opt)
    masks0 = rigl_tf.get_masks(model)
    with tf.GradientTape() as tape:
        loss = LOSS(yh, model(xh, training=False))
    weights = [w for _, w, _ in rigl_tf.masked_weights(model)]
    held = dict(zip([k for k, _, _ in rigl_tf.masked_weights(model)],
                    [g.numpy() for g in tape.gradient(loss, weights)]))
    x, y = _data(8, seed=9)  # the training batch differs from the held-out one
    loop.step(x, y)
    for key, new in rigl_tf.get_masks(model).items():
        old, g = masks0[key], held[key]
        grown = (old == 0) & (new == 1)
        never = (old == 0) & (new == 0)
        assert grown.sum() > 0
        assert np.abs(g[grown]).min() >= np.abs(g[never]).max()


def test_grow_init_unit_scaled():
    model = rigl_tf.sparsify(_net(), 0.8, "uniform")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.0),
                                  U.SET(update_freq=1, grow_init="unit_scaled",
                                        regrow_dropped=False, schedule_alg="constant"))
    loop = _Loop(model, opt)
    masks0 = rigl_tf.get_masks(model)
    x, y = _data(8)
    loop.step(x, y)
    for key, w, m in rigl_tf.masked_weights(model):
        grown = (masks0[key] == 0) & (m.numpy() == 1)
        assert grown.sum() > 0 and np.all(w.numpy()[grown] != 0)
        assert np.all(w.numpy()[m.numpy() == 0] == 0)
    with pytest.raises(ValueError, match="Unknown `grow_init` 'ones'"):
        U.RigL(grow_init="ones")
