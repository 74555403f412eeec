"""SparseWrapper, sparsify/strip, masks in and out, reports, sparsity-aware init on models."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.experiments.models import get_model
from rigl_tf.sparsity import distributions as D

L = keras.layers


def _lenet():
    return get_model("lenet5", (28, 28, 1), 10)


MODELS = {
    "lenet5": _lenet,
    "mlp": lambda: get_model("mlp", (28, 28, 1), 10),
    "resnet20": lambda: get_model("resnet20", (16, 16, 3), 10, width_multiplier=0.5),
    "vgg16": lambda: get_model("vgg16", (32, 32, 3), 10, width_multiplier=0.125),
}


def _expected_counts(model, sparse, sparsity, dist):
    items = rigl_tf.masked_weights(sparse)
    shapes = {k: tuple(w.shape) for k, w, _ in items}
    dens = D.get_densities(shapes, sparsity, dist)
    return {k: D.num_active(dens[k], np.prod(s)) for k, s in shapes.items()}, shapes


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dist", ["uniform", "er", "erk"])
def test_exact_counts_every_distribution(name, dist):
    model = MODELS[name]()
    sparse = rigl_tf.sparsify(model, 0.9, dist, seed=1)
    expected, _ = _expected_counts(model, sparse, 0.9, dist)
    masks = rigl_tf.get_masks(sparse)
    assert {k: int(m.sum()) for k, m in masks.items()} == expected
    for key, weight, mask in rigl_tf.masked_weights(sparse):
        w, m = weight.numpy(), mask.numpy()
        assert np.all(w[m == 0] == 0), key
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert m.dtype == w.dtype


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_global_distribution_total_exact(name):
    sparse = rigl_tf.sparsify(MODELS[name](), 0.8, "global")
    masks = rigl_tf.get_masks(sparse)
    total = sum(m.size for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == D.num_active(0.2, total)


def test_dense_init_keeps_weights_under_mask():
    model = _lenet()
    sparse = rigl_tf.sparsify(model, 0.5, "uniform", init="dense")
    for (key, weight, mask) in rigl_tf.masked_weights(sparse):
        layer_name, attr = key.split("/")
        orig = getattr(model.get_layer(layer_name), attr).numpy()
        np.testing.assert_array_equal(weight.numpy(), orig * mask.numpy())
    # Unwrapped weights (biases) are copied unchanged.
    np.testing.assert_array_equal(
        model.layers[-1].bias.numpy(), sparse.layers[-1].layer.bias.numpy()
    )


def test_seed_determinism():
    # Layer names differ between builds in one process; compare in layer order.
    a = list(rigl_tf.get_masks(rigl_tf.sparsify(_lenet(), 0.9, seed=5)).values())
    b = list(rigl_tf.get_masks(rigl_tf.sparsify(_lenet(), 0.9, seed=5)).values())
    c = list(rigl_tf.get_masks(rigl_tf.sparsify(_lenet(), 0.9, seed=6)).values())
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_keep_dense_and_custom_sparsity():
    model = _lenet()
    first = model.layers[0].name
    sparse = rigl_tf.sparsify(model, 0.9, "uniform", keep_dense=first)
    assert not isinstance(sparse.layers[0], rigl_tf.SparseWrapper)
    assert all(not k.startswith(first + "/") for k in rigl_tf.get_masks(sparse))
    by_type = rigl_tf.sparsify(model, 0.9, keep_dense=L.Conv2D)
    assert all("conv" not in k for k in rigl_tf.get_masks(by_type))
    by_pred = rigl_tf.sparsify(model, 0.9, keep_dense=lambda layer: layer.name == first)
    assert set(rigl_tf.get_masks(by_pred)) == set(rigl_tf.get_masks(sparse))
    last = [k for k in rigl_tf.get_masks(sparse)][-1]
    layer = last.split("/")[0]
    custom = rigl_tf.sparsify(model, 0.9, "uniform", custom_sparsity={layer: 0.5})
    m = rigl_tf.get_masks(custom)[last]
    assert m.sum() == D.num_active(0.5, m.size)


def test_given_masks_are_used():
    model = _lenet()
    sparse = rigl_tf.sparsify(model, 0.9, seed=1)
    masks = rigl_tf.get_masks(sparse)
    again = rigl_tf.sparsify(model, 0.5, "uniform", masks=masks, seed=2)
    got = rigl_tf.get_masks(again)
    assert all(np.array_equal(got[k], masks[k]) for k in masks)


def test_strip_identical_outputs():
    model = get_model("resnet20", (16, 16, 3), 10, width_multiplier=0.5)
    sparse = rigl_tf.sparsify(model, 0.9, init="unit_scaled")
    plain = rigl_tf.strip(sparse)
    x = np.random.RandomState(0).rand(4, 16, 16, 3).astype("float32")
    np.testing.assert_array_equal(sparse(x, training=False).numpy(), plain(x, training=False).numpy())
    assert not any(isinstance(layer, rigl_tf.SparseWrapper) for layer in plain.layers)
    def names(m):
        return [layer.name for layer in m.layers if not isinstance(layer, L.InputLayer)]

    assert names(plain) == names(model)
    assert plain.count_params() == model.count_params()


def test_nested_models_are_wrapped():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner_dense")], name="block")
    inp = keras.Input((6,))
    out = L.Dense(3, name="head")(inner(inp))
    model = keras.Model(inp, out)
    sparse = rigl_tf.sparsify(model, 0.5, "uniform")
    assert set(rigl_tf.get_masks(sparse)) == {"inner_dense/kernel", "head/kernel"}
    x = np.ones((2, 6), "float32")
    np.testing.assert_allclose(rigl_tf.strip(sparse)(x), sparse(x), rtol=0, atol=0)


# ----------------------------------------------------------------- every layer type
def _layer_cases():
    return [
        ("dense", lambda: L.Dense(4), (5,), "float32"),
        ("einsum", lambda: L.EinsumDense("abc,cd->abd", output_shape=(3, 4)), (3, 5), "float32"),
        ("conv1d", lambda: L.Conv1D(4, 3), (8, 3), "float32"),
        ("conv2d", lambda: L.Conv2D(4, 3), (8, 8, 3), "float32"),
        ("conv3d", lambda: L.Conv3D(2, 2), (4, 4, 4, 2), "float32"),
        ("conv1dt", lambda: L.Conv1DTranspose(4, 3), (8, 3), "float32"),
        ("conv2dt", lambda: L.Conv2DTranspose(4, 3), (8, 8, 3), "float32"),
        ("conv3dt", lambda: L.Conv3DTranspose(2, 2), (4, 4, 4, 2), "float32"),
        ("dwconv1d", lambda: L.DepthwiseConv1D(3, depth_multiplier=2), (8, 3), "float32"),
        ("dwconv2d", lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3), "float32"),
        ("sepconv1d", lambda: L.SeparableConv1D(4, 3), (8, 3), "float32"),
        ("sepconv2d", lambda: L.SeparableConv2D(4, 3, depth_multiplier=2), (8, 8, 3), "float32"),
        ("embedding", lambda: L.Embedding(20, 4), (6,), "int32"),
    ]


@pytest.mark.parametrize("name, make, shape, dtype", _layer_cases(), ids=[c[0] for c in _layer_cases()])
def test_every_layer_type_config_save_train(tmp_path, name, make, shape, dtype):
    inp = keras.Input(shape, dtype=dtype)
    out = make()(inp)
    out = L.Dense(2, name="head")(L.Flatten()(out))
    model = keras.Model(inp, out)
    sparse = rigl_tf.sparsify(model, 0.5, "uniform", keep_dense="head", init="unit_scaled")
    wrapper = sparse.layers[1]
    assert isinstance(wrapper, rigl_tf.SparseWrapper)
    n_prunable = 2 if name.startswith("sepconv") else 1
    assert len(wrapper.masks) == n_prunable
    assert len(wrapper.non_trainable_weights) == n_prunable
    # Config round trip.
    clone = rigl_tf.SparseWrapper.from_config(wrapper.get_config())
    assert clone.get_config() == wrapper.get_config()
    # .keras round trip keeps masks and outputs.
    x = (np.random.RandomState(0).randint(0, 20, (2,) + shape) if dtype == "int32"
         else np.random.RandomState(0).rand(2, *shape)).astype(dtype)
    path = os.path.join(tmp_path, "m.keras")
    sparse.save(path)
    loaded = keras.models.load_model(path)
    for k, m in rigl_tf.get_masks(sparse).items():
        np.testing.assert_array_equal(m, rigl_tf.get_masks(loaded)[k])
    np.testing.assert_allclose(loaded(x), sparse(x), rtol=1e-6, atol=1e-6)
    # A training step keeps masked weights at zero.
    sparse.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1)), "mse")
    sparse.fit(x, np.ones((2, 2), "float32"), verbose=0, epochs=2)
    for key, weight, mask in rigl_tf.masked_weights(sparse):
        assert np.all(weight.numpy()[mask.numpy() == 0] == 0), key
        assert int(mask.numpy().sum()) == D.num_active(0.5, mask.numpy().size)


def test_checkpoint_round_trip(tmp_path):
    sparse = rigl_tf.sparsify(_lenet(), 0.9, seed=3)
    masks = rigl_tf.get_masks(sparse)
    ckpt = tf.train.Checkpoint(model=sparse)
    path = ckpt.write(os.path.join(tmp_path, "ckpt"))
    fresh = rigl_tf.sparsify(_lenet(), 0.9, seed=4)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    got = list(rigl_tf.get_masks(fresh).values())
    assert all(np.array_equal(g, m) for g, m in zip(got, masks.values()))


def test_set_masks_validation_and_apply():
    sparse = rigl_tf.sparsify(_lenet(), 0.5, "uniform")
    key = next(iter(rigl_tf.get_masks(sparse)))
    shape = rigl_tf.get_masks(sparse)[key].shape
    before = rigl_tf.get_masks(sparse)
    with pytest.raises(ValueError, match=rf"`masks\['{key}'\]` has shape \(2, 2\), expected"):
        rigl_tf.set_masks(sparse, {key: np.ones((2, 2))})
    with pytest.raises(ValueError, match="only 0 and 1"):
        rigl_tf.set_masks(sparse, {key: np.full(shape, 0.5)})
    with pytest.raises(ValueError, match="`masks` names 'nope'"):
        rigl_tf.set_masks(sparse, {"nope": np.ones(shape)})
    assert all(np.array_equal(before[k], v) for k, v in rigl_tf.get_masks(sparse).items())
    zeros = np.zeros(shape, np.float32)
    zeros.flat[0] = 1
    rigl_tf.set_masks(sparse, {key: zeros})
    weight = dict((k, w) for k, w, _ in rigl_tf.masked_weights(sparse))[key].numpy()
    assert np.count_nonzero(weight) <= 1


def test_sparsity_report():
    sparse = rigl_tf.sparsify(get_model("mlp", (28, 28, 1), 10), 0.9, "uniform")
    report = rigl_tf.sparsity_report(sparse)
    sizes = [784 * 300, 300 * 100, 100 * 10]
    assert [r["size"] for r in report.rows] == sizes
    assert [r["active"] for r in report.rows] == [D.num_active(0.1, s) for s in sizes]
    assert report.total["size"] == sum(sizes)
    assert report.total["active"] == sum(r["active"] for r in report.rows)
    text = str(report)
    assert "total" in text and "dense/kernel" in text
    full = rigl_tf.sparsity_report(sparse, include_dense=True)
    assert len(full.rows) == 6  # three kernels + three biases


# ----------------------------------------------------------------- signal propagation
def _deep_mlp(depth=8, width=300):
    layers = [keras.Input((784,))]
    layers += [L.Dense(width, activation="relu") for _ in range(depth)]
    layers += [L.Dense(10)]
    return keras.Sequential(layers)


def test_signal_propagation_fig1c():
    """At 95% sparsity with ReLU, dense init collapses the output; unit_scaled keeps O(1).

    The sparse-aware inits use the ReLU (He) scaling, scale 2 over the sparse fan-in, which
    preserves the signal through ReLU layers; the package default (fan-avg, scale 1, the
    paper's Glorot choice) is for the training experiments, not this propagation claim.
    """
    x = np.random.RandomState(0).normal(size=(256, 784)).astype("float32")
    model = _deep_mlp()
    stds = {}
    for init in ["dense", "layer_scaled", "unit_scaled"]:
        kw = {} if init == "dense" else {"init_method": "fanin_normal", "init_scale": 2.0}
        sparse = rigl_tf.sparsify(model, 0.95, "uniform", init=init, seed=0, **kw)
        stds[init] = float(np.std(sparse(x).numpy()))
    assert 0.2 < stds["unit_scaled"] < 5.0, stds
    assert stds["dense"] < 1e-3, stds
    assert stds["layer_scaled"] > 100 * stds["dense"], stds


def test_initialize_on_wrapped_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = rigl_tf.SparseWrapper(L.Dense(64, activation="relu"))
            self.d2 = rigl_tf.SparseWrapper(L.Dense(10))

        def call(self, x):
            return self.d2(self.d1(x))

    net = Net()
    net(np.zeros((1, 32), "float32"))
    counts = rigl_tf.init_masks(net, 0.75, "uniform", seed=0)
    assert counts == {"dense/kernel": 512, "dense_1/kernel": 160}
    rigl_tf.initialize(net, "unit_scaled", seed=0)
    for _, w, m in rigl_tf.masked_weights(net):
        assert np.all(w.numpy()[m.numpy() == 0] == 0)
    with pytest.raises(TypeError, match="subclassed model.*SparseWrapper"):
        rigl_tf.sparsify(net, 0.5)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(sparsity=1.0), ValueError, r"`sparsity` must be in \[0, 1\), got 1.0"),
        (dict(sparsity=0.5, distribution="normal"), ValueError, "Unknown `distribution` 'normal'"),
        (dict(sparsity=0.5, init="he"), ValueError, "Unknown `init` 'he'"),
        (dict(sparsity=0.5, init="unit_scaled", init_method="x"), ValueError, "unit_scaled `method` 'x'"),
        (dict(sparsity=0.5, custom_sparsity={"conv9": 0.1}), ValueError, "`custom_sparsity` names 'conv9'"),
        (dict(sparsity=0.5, keep_dense="conv9"), ValueError, "`keep_dense` names layer 'conv9'"),
        (dict(sparsity=0.5, masks={"dense/kernel": np.ones((3, 3))}), ValueError, "has shape \\(3, 3\\)"),
    ],
)
def test_sparsify_bad_input(kwargs, exc, match):
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, name="dense"), L.Dense(2, name="out")])
    with pytest.raises(exc, match=match):
        rigl_tf.sparsify(model, **kwargs)


def test_no_prunable_layer_and_non_keras():
    model = keras.Sequential([keras.Input((4,)), L.BatchNormalization()])
    with pytest.raises(ValueError, match="no prunable layer"):
        rigl_tf.sparsify(model, 0.5)
    with pytest.raises(TypeError, match="must be a Keras 3 keras.Model, got dict"):
        rigl_tf.sparsify({}, 0.5)
    with pytest.raises(ValueError, match="no SparseWrapper layers"):
        rigl_tf.get_masks(model)
    with pytest.raises(TypeError, match="has no prunable weights.*Supported layer types"):
        rigl_tf.SparseWrapper(L.BatchNormalization())


def test_keras2_model_points_to_interop():
    tf_keras = pytest.importorskip("tf_keras")
    k2 = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(TypeError, match="Keras 2 \\(tf_keras\\).*rigl_tf.interop.tfmot"):
        rigl_tf.sparsify(k2, 0.5)


def test_custom_layer_protocol():
    @keras.saving.register_keras_serializable("rigl_tf_test")
    class Scale(L.Layer):
        prunable_weights_spec = [("w", (0,), (1,))]

        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3), initializer="ones")

        def call(self, x):
            return x @ self.w

    model = keras.Sequential([keras.Input((10,)), Scale(name="scale")])
    sparse = rigl_tf.sparsify(model, 0.7, "uniform")
    assert int(rigl_tf.get_masks(sparse)["scale/w"].sum()) == 9


def test_non_tensorflow_backend_fails_clearly():
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", "import rigl_tf"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "rigl_tf requires Keras 3 with the TensorFlow backend" in out.stderr
