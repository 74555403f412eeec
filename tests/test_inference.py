"""rigl_tf.inference: SparseDense execution of sparse Dense / 1x1 Conv2D layers."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf import inference
from rigl_tf.inference import SparseDense

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = dict(rtol=1e-5, atol=1e-5)


def _conv_mlp(sparsity=0.9, **kwargs):
    """1x1 conv (sparse), 3x3 conv, strided 1x1 conv (never converted), two Dense."""
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(16, 1, activation="relu", name="pointwise")(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv3x3")(h)
    h = keras.layers.Conv2D(4, 1, strides=2, name="strided")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="gelu", name="hidden")(h)
    outputs = keras.layers.Dense(5, name="logits")(h)
    return rigl_tf.sparsify(keras.Model(inputs, outputs), sparsity, "uniform", seed=3, **kwargs)


def _x(batch, shape=(6, 6, 3)):
    return np.random.default_rng(batch).normal(size=(batch,) + shape).astype("float32")


@pytest.mark.parametrize("kind", ["auto", "coo", "csr"])
def test_outputs_match_the_dense_model_at_batch_1_and_64(kind):
    model = _conv_mlp(0.9)
    fast = inference.to_sparse_inference(model, min_sparsity=0.5, kind=kind)
    assert [layer.name for layer in inference.sparse_layers(fast)] == [
        "pointwise", "hidden", "logits"]
    assert all(not layer.trainable_weights for layer in inference.sparse_layers(fast))
    signature = tf.TensorSpec((None, 6, 6, 3), tf.float32)
    dynamic = tf.function(lambda x: fast(x, training=False), input_signature=[signature])
    for batch in (1, 64):
        x = _x(batch)
        expected = model(x).numpy()
        np.testing.assert_allclose(fast(x).numpy(), expected, **TOL)
        np.testing.assert_allclose(dynamic(x).numpy(), expected, **TOL)  # tf.cond for auto
    np.testing.assert_allclose(fast.predict(_x(64), batch_size=64, verbose=0),
                               model(_x(64)).numpy(), **TOL)


def test_sparse_dense_stores_exactly_the_nonzeros():
    model = _conv_mlp(0.9)
    fast = inference.to_sparse_inference(model, min_sparsity=0.0)
    plain = rigl_tf.strip(model)
    for layer in inference.sparse_layers(fast):
        kernel = plain.get_layer(layer.name).kernel.numpy()
        kernel = kernel.reshape(kernel.shape[-2], kernel.shape[-1])
        assert layer.nnz == np.count_nonzero(kernel)
        assert layer.sparsity == pytest.approx(1 - np.count_nonzero(kernel) / kernel.size)
        rebuilt = np.zeros_like(kernel)
        idx = layer.kernel_indices.numpy()
        rebuilt[idx[:, 0], idx[:, 1]] = layer.kernel_values.numpy()
        np.testing.assert_array_equal(rebuilt, kernel)
        assert layer.kernel_indices.dtype == "int64" and not layer.trainable_weights


def test_min_sparsity_selects_layers():
    model = _conv_mlp(0.9, custom_sparsity={"hidden": 0.5, "logits": 0.95})
    # Exact counts: 'pointwise' keeps round(0.1 * 48) = 5 of 48 entries (sparsity 0.896).
    fast = inference.to_sparse_inference(model, min_sparsity=0.85)
    assert [layer.name for layer in inference.sparse_layers(fast)] == ["pointwise", "logits"]
    assert isinstance(fast.get_layer("hidden"), keras.layers.Dense)
    assert isinstance(fast.get_layer("conv3x3"), keras.layers.Conv2D)
    assert isinstance(fast.get_layer("strided"), keras.layers.Conv2D)
    assert inference.to_sparse_inference(model, min_sparsity=1.0).count_params() == \
        rigl_tf.strip(model).count_params()  # nothing is fully zero: nothing converted
    np.testing.assert_allclose(fast(_x(2)).numpy(), model(_x(2)).numpy(), **TOL)


def test_plain_model_nd_input_and_empty_kernel():
    inputs = keras.Input((3, 8))
    h = keras.layers.Dense(6, activation="tanh", name="per_token")(inputs)
    outputs = keras.layers.Dense(2, use_bias=False, name="zero")(h)
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("per_token").kernel.numpy()
    kernel[np.abs(kernel) < 0.5] = 0.0
    model.get_layer("per_token").kernel.assign(kernel)
    model.get_layer("zero").kernel.assign(np.zeros((6, 2), "float32"))
    fast = inference.to_sparse_inference(model, min_sparsity=0.0)
    assert fast.get_layer("zero").nnz == 0
    for batch in (1, 64):
        x = _x(batch, (3, 8))
        out = fast(x).numpy()
        assert out.shape == (batch, 3, 2)
        np.testing.assert_allclose(out, model(x).numpy(), **TOL)


def test_keras_file_round_trip(tmp_path):
    model = _conv_mlp(0.9)
    fast = inference.to_sparse_inference(model, min_sparsity=0.5, kind="coo")
    path = str(tmp_path / "fast.keras")
    fast.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("hidden")
    assert isinstance(layer, SparseDense) and layer.kind == "coo"
    np.testing.assert_allclose(loaded(_x(3)).numpy(), model(_x(3)).numpy(), **TOL)
    config = layer.get_config()
    assert SparseDense.from_config(config).get_config() == config


def test_bad_arguments_name_the_parameter():
    model = _conv_mlp(0.9)
    kinds = r"\['auto', 'coo', 'csr'\]"
    with pytest.raises(ValueError, match=rf"`kind` must be one of {kinds}.*'cusparse'"):
        inference.to_sparse_inference(model, kind="cusparse")
    with pytest.raises(ValueError, match=r"`min_sparsity` must be a number in \[0, 1\].*1.5"):
        inference.to_sparse_inference(model, min_sparsity=1.5)
    with pytest.raises(ValueError, match=r"`nnz` must be an int in \[0, .* = 6\].*7"):
        SparseDense(units=3, input_dim=2, nnz=7)
    with pytest.raises(ValueError, match=r"`units` must be a positive int.*0"):
        SparseDense(units=0, input_dim=2, nnz=0)
    with pytest.raises(TypeError, match=r"'conv3x3'.*cannot be executed as SparseDense"):
        SparseDense.from_layer(rigl_tf.strip(model).get_layer("conv3x3"))
    with pytest.raises(TypeError, match="Keras 3"):
        inference.to_sparse_inference(object())

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        inference.to_sparse_inference(sub)


@pytest.mark.slow
def test_bench_inference_quick_prints_json():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_inference.py"), "--quick"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("quick", "models", "cases", "crossover_sparsity",
                "crossover_sparsity_by_batch", "settings", "seconds"):
        assert key in result
    assert result["quick"] is True
    assert set(result["models"]) == set(result["crossover_sparsity"]) == {"mlp", "ffn"}
    assert len(result["cases"]) == 2 * len(result["settings"]["sparsities"]) * 2
    for case in result["cases"]:
        for key in ("model", "sparsity", "batch", "dense_ms", "sparse_ms", "coo_ms",
                    "csr_ms", "speedup", "dense_examples_per_s", "sparse_examples_per_s"):
            assert key in case
        assert case["dense_ms"] > 0 and case["sparse_ms"] > 0
        assert case["max_abs_diff"] < 1e-4
    for value in result["crossover_sparsity"].values():
        assert value is None or value in result["settings"]["sparsities"]
