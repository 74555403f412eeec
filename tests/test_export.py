"""rigl_tf.export (module rigl_tf.deploy): deployable formats of sparse models, atomic writes, size report."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf import deploy as export_lib
from rigl_tf.files import atomic_output


def _sparse_model(sparsity=0.75, width=16, inputs_dim=6):
    inputs = keras.Input((inputs_dim,))
    h = keras.layers.Dense(width, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(h)
    return rigl_tf.sparsify(keras.Model(inputs, outputs), sparsity, "uniform", seed=1)


def _x(n=5, dim=6):
    return np.random.default_rng(0).normal(size=(n, dim)).astype("float32")


def _leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith(".tmp-")]


def test_keras_and_saved_model_exports_predict_like_the_sparse_model(tmp_path):
    model = _sparse_model()
    x = _x()
    expected = model(x).numpy()
    keras_path = export_lib.export(model, tmp_path / "m.keras", "keras")
    saved_path = export_lib.export(model, tmp_path / "sm", format="saved_model")

    loaded = keras.models.load_model(keras_path)
    assert not rigl_tf.keras.model_ops.wrappers(loaded)  # stripped
    np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    restored = tf.saved_model.load(saved_path)  # keep a reference: it owns the variables
    served = restored.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)
    layer = keras.layers.TFSMLayer(saved_path, call_endpoint="serve")
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-6, atol=1e-6)
    for fmt, path in (("keras", keras_path), ("saved_model", saved_path)):
        np.testing.assert_allclose(export_lib.load_exported(path, fmt)(x), expected,
                                   rtol=1e-6, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_export_report_writes_every_format_and_tflite_predicts_alike(tmp_path):
    # The only test that converts to TFLite: 4 conversions of a 2k-parameter model.
    model = _sparse_model(0.9, width=64, inputs_dim=32)
    x = _x(4, dim=32)
    expected = model(x).numpy()
    report = export_lib.export_report(model, tmp_path)

    assert report["formats"] == list(export_lib.FORMATS)
    kernels = 32 * 64 + 64 * 3
    assert report["sparse"]["params"] == report["dense"]["params"] == kernels + 64 + 3
    active = sum(int(m.sum()) for m in rigl_tf.get_masks(model).values())
    biases_nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights()
                         if w.ndim == 1)
    assert report["sparse"]["nonzeros"] == active + biases_nonzero
    assert report["dense"]["nonzeros"] == kernels + biases_nonzero
    for fmt in export_lib.FORMATS:
        for side in ("sparse", "dense"):
            entry = report[side]["files"][fmt]
            assert os.path.exists(entry["path"])
            assert entry["bytes"] == export_lib.file_size(entry["path"]) > 0
            assert 0 < entry["gzip_bytes"]
        ratio = report["ratios"][fmt]
        assert ratio["bytes"] == (report["sparse"]["files"][fmt]["bytes"]
                                  / report["dense"]["files"][fmt]["bytes"])
        predict = export_lib.load_exported(report["sparse"]["files"][fmt]["path"], fmt)
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(predict(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)
    # Zeros compress; dense random weights do not. Sparse TFLite stores fewer bytes raw.
    assert report["sparse"]["files"]["keras"]["gzip_bytes"] < \
        report["dense"]["files"]["keras"]["gzip_bytes"]
    assert report["sparse"]["files"]["tflite_sparse"]["bytes"] < \
        report["sparse"]["files"]["tflite"]["bytes"]
    table = export_lib.format_export_report(report)
    for fmt in export_lib.FORMATS:
        assert fmt in table
    assert _leftovers(tmp_path / "sparse") == [] and _leftovers(tmp_path / "dense") == []


def test_export_of_a_plain_model(tmp_path):
    model = rigl_tf.strip(_sparse_model())
    path = export_lib.export(model, tmp_path / "plain.keras")
    x = _x()
    np.testing.assert_allclose(keras.models.load_model(path)(x).numpy(), model(x).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_unknown_format_is_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"`format` must be one of .*'tflite_sparse'.*'onnx'"):
        export_lib.export(_sparse_model(), tmp_path / "m.onnx", format="onnx")
    with pytest.raises(ValueError, match=r"`format`.*None"):
        export_lib.load_exported(tmp_path / "m", None)
    with pytest.raises(ValueError, match=r"`path` must end in '.keras'.*m.h5"):
        export_lib.export(_sparse_model(), tmp_path / "m.h5", format="keras")
    with pytest.raises(ValueError, match=r"`formats` entries must be in .*'pb'"):
        export_lib.export_report(_sparse_model(), tmp_path, formats=["keras", "pb"])
    with pytest.raises(ValueError, match=r"`formats` must name at least one"):
        export_lib.export_report(_sparse_model(), tmp_path, formats=[])
    assert os.listdir(tmp_path) == []


def test_non_keras3_model_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="Keras 3"):
        export_lib.export(object(), tmp_path / "m.keras")


def test_failed_export_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")

    def broken(plain, path, sparse):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export_lib, "_write_tflite", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_lib.export(_sparse_model(), target, "tflite")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_saved_model_replaces_an_earlier_saved_model_but_no_other_directory(tmp_path):
    target = tmp_path / "sm"
    export_lib.export(_sparse_model(), target, "saved_model")
    first = (target / "saved_model.pb").stat().st_ino
    export_lib.export(_sparse_model(), target, "saved_model")
    assert (target / "saved_model.pb").stat().st_ino != first  # replaced as a whole
    assert sorted(os.listdir(tmp_path)) == ["sm"]
    (target / "stale.txt").write_text("user file")  # no longer only a SavedModel
    with pytest.raises(FileExistsError, match="stale.txt"):
        export_lib.export(_sparse_model(), target, "saved_model")
    assert (target / "stale.txt").read_text() == "user file"


def test_atomic_output_restores_nothing_when_nothing_written(tmp_path):
    with pytest.raises(RuntimeError, match="Nothing was written"):
        with atomic_output(tmp_path / "x.bin"):
            pass
    assert os.listdir(tmp_path) == []


def test_dense_counterpart_fills_masked_weights_and_copies_the_rest():
    model = _sparse_model(0.9)
    dense = export_lib.dense_counterpart(model, seed=3)
    plain = rigl_tf.strip(model)
    assert [w.shape for w in dense.weights] == [w.shape for w in plain.weights]
    for d, p in zip(dense.weights, plain.weights):
        if len(d.shape) == 2:
            assert np.count_nonzero(d.numpy()) == d.numpy().size
        else:
            np.testing.assert_array_equal(d.numpy(), p.numpy())
    # The sparse model is untouched.
    assert all(int(m.sum()) < m.size for m in rigl_tf.get_masks(model).values())
