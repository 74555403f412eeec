"""rigl_tf.compressed: compact .npz weights + masks, round trips, sizes and bad files."""

import json
import math
import os

import keras
import numpy as np
import pytest

import rigl_tf
from rigl_tf import compressed


def _model(sparsity=0.8, seed=1, width=16, use_batch_norm=False):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    if use_batch_norm:
        h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    return rigl_tf.sparsify(keras.Model(inputs, outputs), sparsity, "uniform", seed=seed,
                            keep_dense="out")


def _x():
    return np.random.default_rng(0).normal(size=(4, 6)).astype("float32")


def _manifest(path):
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["manifest"].tobytes().decode()), set(data.files)


@pytest.mark.parametrize("encoding", ["bitmask", "indices", "auto"])
def test_round_trip_restores_weights_masks_and_outputs(tmp_path, encoding):
    source = _model(0.8, seed=1, use_batch_norm=True)
    bn = source.get_layer("bn")
    bn.moving_mean.assign(np.arange(16, dtype="float32"))  # non-trainable state travels too
    path = compressed.save_compressed(source, tmp_path / "w.npz", encoding)
    keras.backend.clear_session()
    target = _model(0.5, seed=7, use_batch_norm=True)  # other masks, other weights
    counts = compressed.load_compressed(target, path)

    assert counts == {k: int(m.sum()) for k, m in rigl_tf.get_masks(source).items()}
    for k, m in rigl_tf.get_masks(source).items():
        np.testing.assert_array_equal(rigl_tf.get_masks(target)[k], m)
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(target(_x()).numpy(), source(_x()).numpy())
    manifest, _ = _manifest(path)
    assert manifest["version"] == compressed.FORMAT_VERSION
    assert manifest["encoding"] == encoding
    assert [e["key"] for e in manifest["masked"]] == ["hidden/kernel"]
    assert [e["key"] for e in manifest["unmasked"]] == [
        "hidden/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance",
        "out/kernel", "out/bias"]


def test_active_zero_weights_keep_their_mask(tmp_path):
    source = _model(0.5)
    (_, weight, mask), = rigl_tf.masked_weights(source)
    w = weight.numpy()
    first_active = tuple(np.argwhere(mask.numpy() == 1)[0])
    w[first_active] = 0.0  # e.g. a connection RigL just grew
    weight.assign(w)
    path = compressed.save_compressed(source, tmp_path / "w.npz", "indices")
    target = _model(0.5, seed=9)
    compressed.load_compressed(target, path, match="order")
    np.testing.assert_array_equal(rigl_tf.get_masks(target)["hidden/kernel"], mask.numpy())


def test_auto_encoding_and_index_dtypes(tmp_path):
    assert compressed.index_dtype(65536) == np.uint16
    assert compressed.index_dtype(65537) == np.int32
    assert compressed.index_dtype(2**31 + 1) == np.int64
    dense_ish = compressed.save_compressed(_model(0.5), tmp_path / "a.npz", "auto")
    sparse = compressed.save_compressed(_model(0.99, width=300), tmp_path / "b.npz", "auto")
    manifest, files = _manifest(dense_ish)
    assert manifest["masked"][0]["encoding"] == "bitmask" and "masked_0_bitmask" in files
    manifest, files = _manifest(sparse)
    assert manifest["masked"][0]["encoding"] == "indices" and "masked_0_indices" in files
    with np.load(sparse, allow_pickle=False) as data:
        assert data["masked_0_indices"].dtype == np.uint16  # 6 x 300 entries


def test_size_report_at_90_percent():
    inputs = keras.Input((100,))
    outputs = keras.layers.Dense(100, use_bias=False)(inputs)
    model = rigl_tf.sparsify(keras.Model(inputs, outputs), 0.9, "uniform")
    report = compressed.compressed_size_report(model)
    (row,) = report["weights"]
    assert row["size"] == 10000 and row["active"] == 1000 and row["index_dtype"] == "uint16"
    assert row["dense_bytes"] == 40000
    assert row["bitmask_bytes"] == 10000 // 8 + 4000
    assert row["indices_bytes"] == 1000 * (2 + 4)
    assert report["masked"]["bitmask_ratio"] == pytest.approx(1 / 32 + 0.1)
    assert report["masked"]["indices_ratio"] == pytest.approx(0.1 * 1.5)
    assert report["unmasked_bytes"] == 0
    assert report["total"] == report["masked"]


def test_file_size_tracks_the_report(tmp_path):
    model = _model(0.9, width=400)
    full = compressed.compressed_size_report(model)
    report = full["total"]
    for encoding in ("bitmask", "indices"):
        path = compressed.save_compressed(model, tmp_path / f"{encoding}.npz", encoding)
        overhead = os.path.getsize(path) - report[f"{encoding}_bytes"]
        assert 0 < overhead < 3000  # zip + npy headers and the manifest
    assert full["masked"]["bitmask_ratio"] == pytest.approx(1 / 32 + 0.1, abs=1e-3)
    assert report["dense_bytes"] == 4 * sum(w.size for w in rigl_tf.strip(model).get_weights())


def test_wrong_architecture_names_the_key(tmp_path):
    source = _model()
    path = compressed.save_compressed(source, tmp_path / "w.npz")
    wider = _model(width=17)
    before = [w.copy() for w in wider.get_weights()]
    with pytest.raises(ValueError, match=r"'hidden/kernel' with shape \(6, 16\).*\(6, 17\)"):
        compressed.load_compressed(wider, path)
    for a, b in zip(before, wider.get_weights()):  # nothing assigned
        np.testing.assert_array_equal(a, b)

    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu", name="other")(inputs)
    renamed = rigl_tf.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="out")(h)),
                               0.8, "uniform", keep_dense="out")
    with pytest.raises(ValueError, match=r"no masked weight 'hidden/kernel'.*match='order'"):
        compressed.load_compressed(renamed, path)
    compressed.load_compressed(renamed, path, match="order")
    np.testing.assert_array_equal(renamed(_x()).numpy(), source(_x()).numpy())

    with pytest.raises(ValueError, match="no SparseWrapper"):
        compressed.load_compressed(rigl_tf.strip(_model()), path)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    model = _model()
    good = compressed.save_compressed(model, tmp_path / "w.npz")
    data = open(good, "rb").read()

    cases = {
        "garbage.npz": b"this is not a zip file at all",
        "truncated.npz": data[: len(data) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(compressed.CorruptFileError, match="is not a valid"):
            compressed.load_compressed(model, tmp_path / name)

    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(compressed.CorruptFileError, match="single array"):
        compressed.load_compressed(model, tmp_path / "single.npy")

    with np.load(good, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    manifest = json.loads(arrays["manifest"].tobytes())

    def write(name, **changes):
        out = dict(arrays)
        out.update(changes)
        with open(tmp_path / name, "wb") as f:
            np.savez(f, **out)
        return tmp_path / name

    future = dict(manifest, version=99)
    path = write("future.npz", manifest=np.frombuffer(json.dumps(future).encode(), np.uint8))
    with pytest.raises(compressed.CorruptFileError, match="version 99.*reads version 1"):
        compressed.load_compressed(model, path)

    path = write("bits.npz", masked_0_bitmask=np.zeros_like(arrays["masked_0_bitmask"]))
    with pytest.raises(compressed.CorruptFileError, match="bitmask of 'hidden/kernel'"):
        compressed.load_compressed(model, path)

    # An object array can only be read by unpickling: refused, never unpickled.
    path = write("pickled.npz", masked_0_values=np.array([{"x": 1}], dtype=object))
    with pytest.raises(compressed.CorruptFileError, match="is not a valid"):
        compressed.load_compressed(model, path)

    with pytest.raises(FileNotFoundError):
        compressed.load_compressed(model, tmp_path / "missing.npz")


def test_bad_arguments_name_the_parameter(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match=r"`encoding` must be one of .*'gzip'"):
        compressed.save_compressed(model, tmp_path / "w.npz", encoding="gzip")
    path = compressed.save_compressed(model, tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"`match` must be one of .*'shape'"):
        compressed.load_compressed(model, path, match="shape")
    with pytest.raises(ValueError, match="no SparseWrapper"):
        compressed.save_compressed(rigl_tf.strip(model), tmp_path / "p.npz")
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


def test_encoded_bytes_formula():
    sizes = compressed.encoded_bytes(size=1001, active=100, itemsize=4)
    assert sizes == {"dense": 4004, "bitmask": math.ceil(1001 / 8) + 400,
                     "indices": 100 * 2 + 400}
