"""The bad-input catalogue: one row per user mistake, the exception and the message.

Single source of truth for README's "Errors" table (``python tools/errors_table.py``
prints it) and for ``tests/test_errors_catalogue.py`` (one test per row). Every message
names the parameter, the bad value and what is allowed.
"""

import os

import keras
import numpy as np

L = keras.layers


def _mlp():
    return keras.Sequential([keras.Input((8,)), L.Dense(8, name="hidden"), L.Dense(4, name="out")])


def _sparse():
    import rigl_tf

    return rigl_tf.sparsify(_mlp(), 0.5, "uniform")


def _sparsify(**kwargs):
    import rigl_tf

    return lambda: rigl_tf.sparsify(_mlp(), **kwargs)


def _updater(name, **kwargs):
    from rigl_tf.keras import updaters

    return lambda: updaters.get_updater(name, **kwargs)


def _fit_without_wrappers():
    import rigl_tf

    model = _mlp()
    model.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), "rigl"), "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 4)), verbose=0)


def _custom_optimizer_for_rigl():
    import rigl_tf

    class MyOpt(keras.optimizers.Optimizer):
        def update_step(self, g, v, lr):
            v.assign_sub(lr * g)

    rigl_tf.SparseOptimizer(MyOpt(0.1), "rigl")


def _rewind_before_snapshot():
    import rigl_tf

    model = _sparse()
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), "static", rewind_step=5)
    opt.build(model.trainable_variables)
    opt.rewind()


def _set_masks(value):
    def call():
        import rigl_tf

        rigl_tf.set_masks(_sparse(), {"hidden/kernel": value})

    return call


def _keras2_model():
    import tf_keras

    import rigl_tf

    rigl_tf.sparsify(tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))]), 0.5)


def _subclassed():
    import rigl_tf

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    rigl_tf.sparsify(net, 0.5)


def _dataset(**kwargs):
    def call():
        from rigl_tf.experiments import datasets

        datasets.get_dataset(**kwargs)

    return call


def _model(name):
    def call():
        from rigl_tf.experiments import models

        models.get_model(name, (8, 8, 1), 10)

    return call


def _hessian_too_big():
    from rigl_tf.analysis import hessian

    model = keras.Sequential([keras.Input((64,)), L.Dense(64), L.Dense(10)])
    hessian(model, (np.ones((2, 64), "float32"), np.zeros(2, "int32")), spectrum="dense",
            max_params=100)


def _similarity_bad_probs():
    from rigl_tf.analysis import similarity

    similarity.disagreement(np.ones((3, 2)), np.ones((4, 2)))


def _prune_at_init_unknown():
    from rigl_tf.keras import oneshot

    oneshot.prune_at_init(_sparse(), np.ones((2, 8), "float32"), np.zeros(2, "int32"),
                          method="obd", sparsity=0.5)


# (area, what the user did, callable, exception class, regex the message must match)
CATALOGUE = [
    ("sparsify", "sparsity of 1.0", _sparsify(sparsity=1.0), ValueError,
     r"`sparsity` must be in \[0, 1\), got 1.0"),
    ("sparsify", "negative sparsity", _sparsify(sparsity=-0.1), ValueError,
     r"`sparsity` must be in \[0, 1\), got -0.1"),
    ("sparsify", "sparsity that is not a number", _sparsify(sparsity="high"), ValueError,
     r"`sparsity` must be a number in \[0, 1\), got 'high'"),
    ("sparsify", "unknown distribution", _sparsify(sparsity=0.5, distribution="gaussian"),
     ValueError, r"Unknown `distribution` 'gaussian'; known distributions: uniform, er, erk"),
    ("sparsify", "unknown initializer", _sparsify(sparsity=0.5, init="he"), ValueError,
     r"Unknown `init` 'he'; known sparse initializers: dense, layer_scaled, unit_scaled"),
    ("sparsify", "unknown unit_scaled method",
     _sparsify(sparsity=0.5, init="unit_scaled", init_method="fan_normal"), ValueError,
     r"Unknown unit_scaled `method` 'fan_normal'; known methods: fanin_normal"),
    ("sparsify", "override map naming a missing layer",
     _sparsify(sparsity=0.5, custom_sparsity={"conv9": 0.1}), ValueError,
     r"`custom_sparsity` names 'conv9', which is not a prunable .* prunable layers are"),
    ("sparsify", "keep_dense naming a missing layer",
     _sparsify(sparsity=0.5, keep_dense="conv9"), ValueError,
     r"`keep_dense` names layer 'conv9', which is not in the model"),
    ("sparsify", "initial mask of the wrong shape",
     _sparsify(sparsity=0.5, masks={"hidden/kernel": np.ones((3, 3))}), ValueError,
     r"`masks\['hidden/kernel'\]` has shape \(3, 3\), expected \(8, 8\)"),
    ("sparsify", "unknown sparsity pattern", _sparsify(sparsity=0.5, pattern="diagonal"),
     ValueError, r"Unknown sparsity `pattern` 'diagonal'; accepted forms"),
    ("sparsify", "N:M pattern with N > M", _sparsify(sparsity=0.5, pattern="5:4"),
     ValueError, r"`pattern` '5:4': N:M needs 0 < N <= M"),
    ("sparsify", "pattern that does not divide a weight", _sparsify(sparsity=0.5, pattern="2:3"),
     ValueError, r"`pattern` '2:3' does not divide weight 'hidden/kernel'.*is 8, not a multiple of M=3"),
    ("sparsify", "global distribution with a structured pattern",
     _sparsify(sparsity=0.5, distribution="global", pattern="2:4"), ValueError,
     r"`distribution` 'global' cannot be combined with structured patterns"),
    ("sparsify", "model without prunable layers",
     lambda: __import__("rigl_tf").sparsify(
         keras.Sequential([keras.Input((4,)), L.BatchNormalization()]), 0.5),
     ValueError, r"has no prunable layer left to sparsify \(supported types: .*Dense"),
    ("sparsify", "not a Keras model", lambda: __import__("rigl_tf").sparsify({"a": 1}, 0.5),
     TypeError, r"`model` must be a Keras 3 keras.Model, got dict"),
    ("sparsify", "a Keras 2 (tf_keras) model", _keras2_model, TypeError,
     r"`model` is a Keras 2 \(tf_keras\) model.*rigl_tf.interop.tfmot"),
    ("sparsify", "a subclassed model", _subclassed, TypeError,
     r"is a subclassed model.*rigl_tf.SparseWrapper in its __init__"),
    ("SparseWrapper", "wrapping a layer without prunable weights",
     lambda: __import__("rigl_tf").SparseWrapper(L.BatchNormalization()), TypeError,
     r"has no prunable weights\. Supported layer types: .*Dense"),
    ("set_masks", "mask with values other than 0/1", _set_masks(np.full((8, 8), 0.5)),
     ValueError, r"`masks\['hidden/kernel'\]` must contain only 0 and 1"),
    ("set_masks", "mask for an unknown weight",
     lambda: __import__("rigl_tf").set_masks(_sparse(), {"nope": np.ones((8, 8))}), ValueError,
     r"`masks` names 'nope', which is not a prunable"),
    ("get_masks", "a model with no SparseWrapper", lambda: __import__("rigl_tf").get_masks(_mlp()),
     ValueError, r"`model` has no SparseWrapper layers; call rigl_tf.sparsify"),
    ("updaters", "unknown updater", _updater("rigl2"), ValueError,
     r"Unknown updater `update_alg` 'rigl2'; known updaters: magnitude, random, rigl"),
    ("updaters", "drop fraction above 1", _updater("rigl", init_drop_fraction=1.5), ValueError,
     r"`init_drop_fraction` must be in \[0.0, 1.0\], got 1.5"),
    ("updaters", "update_freq of 0", _updater("set", update_freq=0), ValueError,
     r"`update_freq` must be >= 1, got 0"),
    ("updaters", "end_step before start_step",
     _updater("rigl", update_freq=10, start_step=100, end_step=50), ValueError,
     r"`end_step` \(50\) must be >= `start_step` \(100\)"),
    ("updaters", "unknown drop-fraction schedule", _updater("rigl", schedule_alg="linear"),
     ValueError, r"Unknown drop-fraction `schedule_alg` 'linear'; known schedules: constant"),
    ("updaters", "unknown pruning schedule", _updater("magnitude", schedule="exponential"),
     ValueError, r"Unknown pruning `schedule` 'exponential'; known schedules: polynomial"),
    ("updaters", "final sparsity of 1", _updater("magnitude", final_sparsity=1.0), ValueError,
     r"`final_sparsity` must be in \[0.0, 1.0\), got 1.0"),
    ("updaters", "initial sparsity above the final one",
     _updater("magnitude", initial_sparsity=0.9, final_sparsity=0.5), ValueError,
     r"`initial_sparsity` \(0.9\) must be <= `final_sparsity` \(0.5\)"),
    ("updaters", "unknown pruning scope", _updater("magnitude", scope="local"), ValueError,
     r"Unknown pruning `scope` 'local'; known scopes: layerwise, global"),
    ("SparseOptimizer", "negative rewind step",
     lambda: __import__("rigl_tf").SparseOptimizer(keras.optimizers.SGD(), rewind_step=-1),
     ValueError, r"`rewind_step` must be None or an integer >= 0, got -1"),
    ("SparseOptimizer", "inner optimizer that is not a Keras 3 optimizer",
     lambda: __import__("rigl_tf").SparseOptimizer("sgd", "rigl"), TypeError,
     r"`inner_optimizer` must be a Keras 3 optimizer, got str"),
    ("SparseOptimizer", "optimizer whose state cannot be reset, with a regrowing updater",
     _custom_optimizer_for_rigl, ValueError,
     r"`inner_optimizer` MyOpt has optimizer state .* Supported: .*SGD"),
    ("SparseOptimizer", "training a model without SparseWrappers", _fit_without_wrappers,
     ValueError, r"found no masked weights .*call rigl_tf.sparsify first"),
    ("SparseOptimizer", "rewind() before the rewind step was reached", _rewind_before_snapshot,
     ValueError, r"no snapshot yet; training must pass step 5"),
    ("models", "unknown model name", _model("resnet1000"), ValueError,
     r"Unknown `network_name`='resnet1000'; known models: "),
    ("datasets", "unknown dataset name", _dataset(name="svhn2", split="train", batch_size=8),
     ValueError, r"svhn2"),
    ("datasets", "batch size of 0", _dataset(name="digits", split="train", batch_size=0),
     ValueError, r"`batch_size` must be a positive"),
    ("datasets", "unknown split", _dataset(name="digits", split="validation", batch_size=8),
     ValueError, r"validation"),
    ("datasets", "IDX directory without the files",
     _dataset(name="mnist_idx", split="train", batch_size=8, data_dir=os.devnull + "_missing"),
     (FileNotFoundError, ValueError),
     r"IDX directory '.*_missing' for dataset 'mnist_idx' does not exist; pass `data_dir`"),
    ("datasets", "tfds dataset not downloaded (offline)",
     _dataset(name="cifar10", split="train", batch_size=8, data_dir=os.devnull + "_missing"),
     (FileNotFoundError, ValueError), r"cifar10.*(tfds build|digits)"),
    ("analysis", "Hessian larger than max_params", _hessian_too_big, ValueError,
     r"max_params"),
    ("analysis", "probability tables of different shapes", _similarity_bad_probs, ValueError,
     r"shape"),
    ("oneshot", "unknown pruning-at-init method", _prune_at_init_unknown, ValueError,
     r"'obd'.*snip"),
]
