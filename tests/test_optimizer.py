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

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# Loop steps (0-based; iterations before the step) in which RigL(update_freq=3) updates,
# worked out by hand from the reference's convention (not read from `should_update`):
# right after the 3rd, 6th and 9th weight update, i.e. at event steps 3, 6, 9.
_UPDATE_STEPS_FREQ3 = (2, 5, 8)


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


def _inner_slots(optimizer, var):
    """The optimizer's own slot variables for ``var``, by slot name (e.g. 'momentum').

    Read from the Keras optimizer's ``variables`` (named ``<var path>_<slot>`` by Keras,
    with the variable's shape), never from a list rigl_tf builds.
    """
    prefix = var.path.replace("/", "_") + "_"
    return {v.name[len(prefix):]: v for v in optimizer.variables
            if v.name.startswith(prefix) and tuple(v.shape) == tuple(var.shape)}


def _slots(opt, var):
    slots = list(_inner_slots(opt.inner_optimizer, var).values())
    assert slots, f"no slot variables of the inner optimizer found for {var.path}"
    return slots


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
        is_update = t in _UPDATE_STEPS_FREQ3
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
            assert int(opt.last_update_step.numpy()) == t + 1  # the event step
    assert n_updates == 3
    assert int(opt.iterations.numpy()) == 10


# ----------------------------------------------------------------- slots, against Keras itself
# Every optimizer the README lists as supported, with its slot names and the value a fresh
# slot has (Keras's initial values; written here by hand, not read from rigl_tf).
SUPPORTED_OPTIMIZERS = {
    "sgd_momentum": (lambda: keras.optimizers.SGD(0.05, momentum=0.9), {"momentum": 0.0}),
    "sgd_nesterov": (lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                     {"momentum": 0.0}),
    "adam": (lambda: keras.optimizers.Adam(0.01), {"momentum": 0.0, "velocity": 0.0}),
    "adam_amsgrad": (lambda: keras.optimizers.Adam(0.01, amsgrad=True),
                     {"momentum": 0.0, "velocity": 0.0, "velocity_hat": 0.0}),
    "adamw": (lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05),
              {"momentum": 0.0, "velocity": 0.0}),
    "rmsprop": (lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
                {"velocity": 0.0, "momentum": 0.0, "average_gradient": 0.0}),
    "adagrad": (lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.3),
                {"accumulator": 0.3}),
    "nadam": (lambda: keras.optimizers.Nadam(0.01), {"momentum": 0.0, "velocity": 0.0}),
    "adamax": (lambda: keras.optimizers.Adamax(0.01), {"momentum": 0.0, "norm": 0.0}),
    "lion": (lambda: keras.optimizers.Lion(0.003), {"momentum": 0.0}),
    "adadelta": (lambda: keras.optimizers.Adadelta(1.0),
                 {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}),
    "ftrl": (lambda: keras.optimizers.Ftrl(0.05, initial_accumulator_value=0.2),
             {"accumulator": 0.2, "linear": 0.0}),
    "lamb": (lambda: keras.optimizers.Lamb(0.01), {"momentum": 0.0, "velocity": 0.0}),
}


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,)),
        L.Dense(10, activation="tanh", name="fc1"),
        L.Dense(4, name="fc2"),
    ])


def _grad_fn(model, loss_fn=LOSS):
    @tf.function
    def grads(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return grads


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SUPPORTED_OPTIMIZERS))
def test_every_supported_optimizer_slots_through_rigl_update(name):
    """Slots equal a plain Keras twin's at kept positions and a fresh slot's at dropped and
    grown ones, read from the optimizer's own variables (not from rigl_tf's lists)."""
    make, fresh = SUPPORTED_OPTIMIZERS[name]
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform", seed=3)
    opt = rigl_tf.SparseOptimizer(
        make(), U.RigL(update_freq=3, init_drop_fraction=0.5, schedule_alg="constant",
                       regrow_dropped=False))
    variables = model.trainable_variables
    opt.build(variables)
    # The twin: the same Keras optimizer on copies of the variables, fed the masked
    # gradients by this test. It knows nothing about masks or updates.
    twin_vars = [keras.Variable(v.numpy(), name=f"twin{i}") for i, v in enumerate(variables)]
    twin = make()
    twin.build(twin_vars)
    masked = {id(w): (k, m) for k, w, m in rigl_tf.masked_weights(model)}
    grads_fn = _grad_fn(model)
    apply_fn = tf.function(lambda g: opt.apply(g, variables))
    twin_apply = tf.function(lambda g: twin.apply(g, twin_vars))
    rng = np.random.RandomState(0)
    n_updates = 0
    for step in range(7):
        x = rng.rand(16, 6).astype("float32")
        y = rng.randint(0, 4, 16).astype("int32")
        old = {id(w): m.numpy().copy() for _, w, m in rigl_tf.masked_weights(model)}
        grads = grads_fn(x, y)
        twin_apply([g * old[id(v)] if id(v) in old else g for g, v in zip(grads, variables)])
        apply_fn(grads)
        for v, tv in zip(variables, twin_vars):
            mine = _inner_slots(opt.inner_optimizer, v)
            theirs = _inner_slots(twin, tv)
            assert sorted(mine) == sorted(theirs) == sorted(fresh), (name, sorted(mine))
            if id(v) not in masked:  # a bias: plain optimizer behaviour
                np.testing.assert_allclose(v.numpy(), tv.numpy(), rtol=1e-4, atol=1e-6)
                continue
            new = masked[id(v)][1].numpy()
            was = old[id(v)]
            kept = (was == 1) & (new == 1)
            dropped = (was == 1) & (new == 0)
            grown = (was == 0) & (new == 1)
            if not np.array_equal(new, was):
                n_updates += v.path.endswith("fc1/kernel")
                assert dropped.sum() == grown.sum() == int(np.floor(0.5 * was.sum()))
                for slot, reset in fresh.items():
                    got, want = mine[slot].numpy(), theirs[slot].numpy()
                    assert np.all(got[dropped] == np.float32(reset)), (slot, step)
                    assert np.all(got[grown] == np.float32(reset)), (slot, step)
                    np.testing.assert_allclose(got[kept], want[kept], rtol=1e-4, atol=1e-6)
                # Resync the twin to what the specification says the state now is.
                for slot, reset in fresh.items():
                    want = theirs[slot].numpy()
                    theirs[slot].assign(np.where(kept, want, np.float32(reset)))
                tv.assign(tv.numpy() * kept)
            else:
                for slot in fresh:
                    np.testing.assert_allclose(mine[slot].numpy(), theirs[slot].numpy(),
                                               rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(v.numpy(), tv.numpy() * new, rtol=1e-4, atol=1e-6)
            assert np.all(v.numpy()[new == 0] == 0)
        if step == 2:
            # Before the first update the slots must hold something at the positions that
            # are about to be dropped, or the reset check above would prove nothing.
            for v in variables:
                if id(v) in masked:
                    assert any(np.any(s.numpy()[old[id(v)] == 1] != np.float32(r))
                               for s, r in zip(_inner_slots(opt.inner_optimizer, v).values(),
                                               fresh.values()))
    assert n_updates >= 1


def test_external_mask_change_is_enforced_after_the_step():
    """Weights pruned by set_masks stay exactly zero although momentum would move them:
    masks are re-applied after every inner step."""
    model = rigl_tf.sparsify(_mlp(), 0.5, "uniform", seed=3)
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), "static")
    loop = _Loop(model, opt)
    rng = np.random.RandomState(0)
    x, y = rng.rand(16, 6).astype("float32"), rng.randint(0, 4, 16).astype("int32")
    for _ in range(3):
        loop.step(x, y)
    masks = rigl_tf.get_masks(model)
    key = "fc1/kernel" if "fc1/kernel" in masks else sorted(masks)[0]
    mask = masks[key].copy()
    pruned = np.flatnonzero(mask)[:6]
    mom = _inner_slots(opt.inner_optimizer, dict(
        (k, w) for k, w, _ in rigl_tf.masked_weights(model))[key])["momentum"].numpy()
    assert np.all(mom.flat[pruned] != 0)  # momentum would move these weights
    mask.flat[pruned] = 0
    rigl_tf.set_masks(model, {key: mask})
    loop.step(x, y)
    w = dict((k, w) for k, w, _ in rigl_tf.masked_weights(model))[key].numpy()
    assert np.all(w.flat[pruned] == 0)


# ----------------------------------------------------------------- numpy model of RigL
_MSE = keras.losses.MeanSquaredError()


def _np_forward_backward(p, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2) by hand (float64)."""
    z = x @ p["fc1/kernel"] + p["fc1/bias"]
    h = np.tanh(z)
    out = h @ p["fc2/kernel"] + p["fc2/bias"]
    d = 2.0 * (out - y) / out.size
    dh = (d @ p["fc2/kernel"].T) * (1.0 - h**2)
    return {"fc2/kernel": h.T @ d, "fc2/bias": d.sum(0),
            "fc1/kernel": x.T @ dh, "fc1/bias": dh.sum(0)}


def _np_topk(scores, k):
    """k largest, ties to the lower flat index (a stable descending sort)."""
    flat = scores.reshape(-1)
    out = np.zeros(flat.shape, bool)
    out[np.argsort(-flat, kind="stable")[:k]] = True
    return out.reshape(scores.shape)


def _np_rigl(w, mask, g, fraction):
    """One RigL update of one weight: returns the new mask and the 'kept' positions."""
    active = mask.astype(bool)
    n_active = int(active.sum())
    n_drop = int(np.floor(fraction * n_active))
    keep = _np_topk(np.where(active, np.abs(w), -np.inf), n_active - n_drop)
    grow = _np_topk(np.where(keep, -np.inf, np.abs(g)), n_drop)
    new = keep | grow
    return new.astype(np.float32), new & active


@pytest.mark.parametrize("inner", ["momentum", "adam"])
def test_rigl_matches_numpy_model(inner):
    """SGD-with-momentum / Adam + RigL, stepped alongside a numpy model of the whole
    algorithm (masked gradient, inner step, drop lowest |w|, grow highest |dense grad|,
    zero grown weights, reset slots where not kept, re-mask) through three updates."""
    lr, mom, b1, b2, eps = 0.05, 0.9, 0.9, 0.999, 1e-7
    fraction = 0.3
    model = rigl_tf.sparsify(_mlp(), 0.6, "uniform", seed=5)
    keras_inner = (keras.optimizers.SGD(lr, momentum=mom) if inner == "momentum"
                   else keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2, epsilon=eps))
    opt = rigl_tf.SparseOptimizer(
        keras_inner, U.RigL(update_freq=3, init_drop_fraction=fraction,
                            schedule_alg="constant"))
    variables = {v.path.split("/", 2)[-1]: v for v in model.trainable_variables}
    assert sorted(variables) == ["fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel"]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = _MSE(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)

    p = {k: v.numpy().astype(np.float64) for k, v in variables.items()}
    masks = {k: m.astype(np.float64) for k, m in rigl_tf.get_masks(model).items()}
    assert sorted(masks) == ["fc1/kernel", "fc2/kernel"]
    slots = {k: [np.zeros_like(v) for v in (0, 1)] for k, v in p.items()}
    rng = np.random.RandomState(1)
    n_changed = 0
    for t in range(11):
        x = rng.rand(8, 6)
        y = rng.randn(8, 4)
        step(x.astype("float32"), y.astype("float32"))
        # ---- the numpy model
        dense_g = _np_forward_backward(p, x, y)
        for k in p:
            g = dense_g[k] * masks[k] if k in masks else dense_g[k]
            if inner == "momentum":
                slots[k][0] = mom * slots[k][0] - lr * g
                p[k] = p[k] + slots[k][0]
            else:
                m, v = slots[k]
                m = m + (g - m) * (1 - b1)
                v = v + (g * g - v) * (1 - b2)
                lr_t = lr * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
                p[k] = p[k] - lr_t * m / (np.sqrt(v) + eps)
                slots[k] = [m, v]
        if t in _UPDATE_STEPS_FREQ3:
            for k in masks:
                new, kept = _np_rigl(p[k], masks[k], dense_g[k], fraction)
                n_changed += int((new != masks[k]).sum())
                p[k] = p[k] * kept
                slots[k] = [s * kept for s in slots[k]]
                masks[k] = new
        for k in masks:
            p[k] = p[k] * masks[k]
        # ---- compare
        got_masks = rigl_tf.get_masks(model)
        for k, v in variables.items():
            if k in masks:
                np.testing.assert_array_equal(got_masks[k], masks[k], err_msg=f"{k} t={t}")
            # Adam's first steps at a regrown weight are ~ lr * g / (|g| + eps): float32
            # against float64 differs by a few 1e-6 when |g| is near eps.
            np.testing.assert_allclose(v.numpy(), p[k], rtol=1e-4,
                                       atol=1e-5 if inner == "adam" else 1e-6,
                                       err_msg=f"{k} t={t}")
            own = _inner_slots(opt.inner_optimizer, v)
            names = ["momentum"] if inner == "momentum" else ["momentum", "velocity"]
            assert sorted(own) == sorted(names)
            for name, want in zip(names, slots[k]):
                # float32 against float64: tolerance relative to the slot's scale
                np.testing.assert_allclose(own[name].numpy(), want, rtol=1e-4,
                                           atol=1e-4 * np.abs(want).max(),
                                           err_msg=f"{k} {name} t={t}")
    assert n_changed > 0


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
    # Zhu & Gupta, s_t = 0.9 * (1 - (1 - (t - 2) / 6) ** 3) at t = 2, 4, 6, 8:
    # 0, 0.9 * 19/27 = 0.6333, 0.9 * 26/27 = 0.8667, 0.9. Active counts round((1 - s) * n)
    # for conv (108 weights), fc1 (2304), fc2 (120), and for all 2532 together (global).
    expected = {
        "layerwise": {2: (108, 2304, 120), 4: (40, 845, 44), 6: (14, 307, 16),
                      8: (11, 230, 12)},
        "global": {2: 2532, 4: 928, 6: 338, 8: 253},
    }[scope]
    prev = rigl_tf.get_masks(model)
    assert sorted(prev) == ["conv/kernel", "fc1/kernel", "fc2/kernel"]
    for t in range(12):
        loop.step(x, y)
        masks = rigl_tf.get_masks(model)
        for k in masks:
            assert np.all(masks[k] <= prev[k])  # pruning never regrows
        counts = tuple(int(masks[k].sum()) for k in ("conv/kernel", "fc1/kernel", "fc2/kernel"))
        # Pruning step t + 2: tfmot's pruning_step of the next batch, which it prunes
        # for from the weights after this step (t + 1 updates).
        if t + 2 in expected:
            assert (counts if scope == "layerwise" else sum(counts)) == expected[t + 2], t
        else:
            assert all(np.array_equal(masks[k], prev[k]) for k in masks), t
        prev = masks
    for key, w, m in rigl_tf.masked_weights(model):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_magnitude_pruning_keeps_the_largest_weights(scope):
    """With a learning rate of 0 the weights never move, so the pruned mask must be the
    numpy top-k of the initial |w|: per layer (round(0.4 * n) of 108, 2304, 120 =
    43, 922, 48) or over all 2532 weights together (1013)."""
    model = rigl_tf.sparsify(_net(), 0.0, "uniform")
    w0 = {k: w.numpy().copy() for k, w, _ in rigl_tf.masked_weights(model)}
    pruner = U.MagnitudePruning("oneshot", final_sparsity=0.6, begin_step=1, scope=scope)
    loop = _Loop(model, rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.0), pruner))
    x, y = _data(8)
    for _ in range(4):
        loop.step(x, y)
    masks = rigl_tf.get_masks(model)
    keys = ["conv/kernel", "fc1/kernel", "fc2/kernel"]
    if scope == "layerwise":
        for k, count in zip(keys, (43, 922, 48)):
            want = np.zeros(w0[k].size, bool)
            want[np.argsort(-np.abs(w0[k]).reshape(-1), kind="stable")[:count]] = True
            np.testing.assert_array_equal(masks[k].reshape(-1) > 0, want, err_msg=k)
    else:
        flat = np.concatenate([np.abs(w0[k]).reshape(-1) for k in keys])
        want = np.zeros(flat.size, bool)
        want[np.argsort(-flat, kind="stable")[:1013]] = True
        got = np.concatenate([masks[k].reshape(-1) for k in keys]) > 0
        np.testing.assert_array_equal(got, want)


def test_pruning_with_erk_targets_and_random_pruning():
    model = rigl_tf.sparsify(_net(), 0.0, "uniform")
    pruner = U.RandomPruning("oneshot", final_sparsity=0.8, begin_step=1, distribution="erk")
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.05), pruner)
    model.compile(opt, LOSS)
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # ERK by hand: raw density sum(shape) / prod(shape) times one eps with
    # eps * sum_l sum(shape_l) = 0.2 * (108 + 2304 + 120): eps = 506.4 / (14 + 120 + 29)
    # = 3.10675; counts round(eps * sum(shape_l)) = round(43.49), round(372.81), round(90.10)
    # (no layer reaches density 1, so no capping).
    counts = {k: int(m.sum()) for k, m in rigl_tf.get_masks(model).items()}
    assert counts == {"conv/kernel": 43, "fc1/kernel": 373, "fc2/kernel": 90}


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
