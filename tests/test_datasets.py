"""Tests for the dataset registry (rigl_tf.experiments.datasets)."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from rigl_tf.experiments import datasets


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def _images(ds):
    return np.concatenate([x.numpy() for x, _ in ds])


# --------------------------------------------------------------------------- registry / args


def test_list_datasets():
    names = datasets.list_datasets()
    assert names == sorted(names)
    expected = {
        "digits", "mnist_idx", "fashion_mnist_idx", "mnist", "fashion_mnist", "cifar10",
        "cifar100", "imagenet2012",
    }  # fmt: skip
    assert expected <= set(names)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="name") as info:
        datasets.get_dataset("svhn", "train", 8)
    assert "'svhn'" in str(info.value)
    for name in datasets.list_datasets():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="svhn"):
        datasets.get_dataset_info("svhn")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split": "validation"}, "split.*'validation'.*train"),
        ({"batch_size": 0}, "batch_size.*0"),
        ({"batch_size": -3}, "batch_size.*-3"),
        ({"batch_size": 2.5}, "batch_size.*2.5"),
        ({"normalization": "zca"}, "normalization.*'zca'.*standardize"),
        ({"image_size": (28,)}, "image_size"),
        ({"seed": "1"}, "seed"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    args = {"name": "digits", "split": "train", "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        datasets.get_dataset(**args)


def test_drop_remainder_larger_than_split_fails():
    with pytest.raises(ValueError, match="batch_size.*360.*drop_remainder"):
        datasets.get_dataset("digits", "test", 500, drop_remainder=True)


# --------------------------------------------------------------------------- digits


def test_digits_info_shapes_ranges_and_label_counts():
    info = datasets.get_dataset_info("digits")
    assert info.input_shape == (8, 8, 1)
    assert info.num_classes == 10
    assert info.num_examples == {"train": 1437, "test": 360}
    assert info.splits == ("train", "test")
    for split in info.splits:
        ds = datasets.get_dataset("digits", split, 100)
        images, labels = _images(ds), _labels(ds)
        assert images.shape == (info.num_examples[split], 8, 8, 1)
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.min() == 0.0 and images.max() == 1.0
        counts = np.bincount(labels, minlength=10)
        assert counts.sum() == info.num_examples[split] and len(counts) == 10
    # Stratified split: every class has 35-37 test examples.
    test_counts = np.bincount(_labels(datasets.get_dataset("digits", "test", 360)))
    assert test_counts.min() >= 35 and test_counts.max() <= 37


def test_digits_determinism_and_reshuffling():
    def epochs(seed, n=2):
        ds = datasets.get_dataset("digits", "train", 1437, seed=seed)
        return [_labels(ds) for _ in range(n)]

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # same seed
    assert not np.array_equal(a[0], c[0])  # different seed
    assert not np.array_equal(a[0], a[1])  # reshuffled every epoch
    assert np.array_equal(np.sort(a[0]), np.sort(c[0]))  # same examples


def test_test_split_is_not_shuffled_by_default():
    first = _labels(datasets.get_dataset("digits", "test", 50, seed=0))
    second = _labels(datasets.get_dataset("digits", "test", 50, seed=7))
    assert np.array_equal(first, second)


def test_batching_drop_remainder_and_repeat():
    sizes = [int(y.shape[0]) for _, y in datasets.get_dataset("digits", "train", 100)]
    assert sizes == [100] * 14 + [37]
    dropped = datasets.get_dataset("digits", "train", 100, drop_remainder=True)
    assert [int(y.shape[0]) for _, y in dropped] == [100] * 14
    assert dropped.element_spec[0].shape.as_list() == [100, 8, 8, 1]
    repeated = datasets.get_dataset("digits", "train", 100, repeat=True, drop_remainder=True)
    assert len(list(repeated.take(20))) == 20


def test_digits_resize_and_standardize():
    ds = datasets.get_dataset("digits", "train", 1437, image_size=28, shuffle=False)
    images = _images(ds)
    assert images.shape == (1437, 28, 28, 1)
    assert datasets.get_dataset_info("digits", image_size=(28, 28)).input_shape == (28, 28, 1)
    standardized = _images(
        datasets.get_dataset("digits", "train", 1437, normalization="standardize")
    )
    assert abs(standardized.mean()) < 0.01 and abs(standardized.std() - 1) < 0.01


def test_fixed_batch_is_deterministic():
    x1, y1 = datasets.get_fixed_batch("digits", "train", 64, seed=3)
    x2, y2 = datasets.get_fixed_batch("digits", "train", 64, seed=3)
    x3, _ = datasets.get_fixed_batch("digits", "train", 64, seed=4)
    assert x1.shape == (64, 8, 8, 1) and y1.shape == (64,) and y1.dtype == np.int32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    with pytest.raises(ValueError, match="num_examples.*2000.*1437"):
        datasets.get_fixed_batch("digits", "train", 2000)
    with pytest.raises(ValueError, match="augment"):
        datasets.get_fixed_batch("digits", "train", 8, augment=True)


# --------------------------------------------------------------------------- IDX


def _idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim])
    header += np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx_dir(directory, n_train=12, n_test=5, gz=False, rng=None):
    rng = rng or np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        arrays[prefix] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            path = os.path.join(directory, f"{prefix}-{kind}-ubyte")
            if gz:
                with gzip.open(path + ".gz", "wb") as f:
                    f.write(data)
            else:
                with open(path, "wb") as f:
                    f.write(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_loads(tmp_path, gz):
    arrays = _write_idx_dir(str(tmp_path), gz=gz)
    info = datasets.get_dataset_info("mnist_idx", data_dir=str(tmp_path))
    assert info.input_shape == (28, 28, 1)
    assert info.num_examples == {"train": 12, "test": 5}
    ds = datasets.get_dataset("mnist_idx", "test", 4, data_dir=str(tmp_path))
    images, labels = _images(ds), _labels(ds)
    expected_images, expected_labels = arrays["t10k"]
    np.testing.assert_allclose(images[..., 0], expected_images / 255.0, atol=1e-6)
    assert np.array_equal(labels, expected_labels)
    assert labels.dtype == np.int32 and images.dtype == np.float32


def test_read_idx_plain_gzip_and_wide_types(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    plain = tmp_path / "a-idx3"
    plain.write_bytes(_idx_bytes(array, 0x0C))
    zipped = tmp_path / "a-idx3.gz"
    zipped.write_bytes(gzip.compress(_idx_bytes(array, 0x0C)))
    for path in (plain, zipped):
        result = datasets.read_idx(str(path))
        assert np.array_equal(result, array) and result.dtype == np.int32
        assert datasets.read_idx_shape(str(path)) == (2, 3, 4)


def test_corrupt_idx_files_name_the_file(tmp_path):
    bad_magic_dir, truncated_dir = tmp_path / "magic", tmp_path / "truncated"
    for directory in (bad_magic_dir, truncated_dir):
        directory.mkdir()
        _write_idx_dir(str(directory))
    (bad_magic_dir / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x08\x03" + bytes(20))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic"):
        datasets.get_dataset("mnist_idx", "train", 4, data_dir=str(bad_magic_dir))
    truncated = truncated_dir / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*corrupt"):
        datasets.get_dataset("mnist_idx", "test", 4, data_dir=str(truncated_dir))
    truncated_gz = truncated_dir / "train-labels-idx1-ubyte"
    truncated_gz.rename(truncated_dir / "train-labels-idx1-ubyte.gz.bak")
    (truncated_dir / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros(12, np.uint8)))[:-12]
    )
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz.*corrupt"):
        datasets.get_dataset("mnist_idx", "train", 4, data_dir=str(truncated_dir))


def test_mismatched_idx_counts_fail(tmp_path):
    _write_idx_dir(str(tmp_path))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*does not match"):
        datasets.get_dataset("mnist_idx", "test", 4, data_dir=str(tmp_path))


def test_missing_idx_files_name_file_and_directory(tmp_path):
    _write_idx_dir(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        datasets.get_dataset("mnist_idx", "test", 4, data_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.get_dataset("mnist_idx", "train", 4, data_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="data_dir"):
        datasets.get_dataset("mnist_idx", "train", 4)


def test_empty_idx_split_fails(tmp_path):
    _write_idx_dir(str(tmp_path), n_test=0)
    with pytest.raises(ValueError, match="empty"):
        datasets.get_dataset("mnist_idx", "test", 4, data_dir=str(tmp_path))


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST_IDX_DIR), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_idx_directory():
    info = datasets.get_dataset_info("fashion_mnist_idx")
    assert info.num_examples == {"train": 60_000, "test": 10_000}
    assert info.input_shape == (28, 28, 1) and info.num_classes == 10
    for split, n in info.num_examples.items():
        ds = datasets.get_dataset("fashion_mnist_idx", split, n, shuffle=False)
        (images, labels), = list(ds)
        assert images.shape == (n, 28, 28, 1) and labels.shape == (n,)
        assert float(images.numpy().min()) == 0.0 and float(images.numpy().max()) == 1.0
        # Fashion-MNIST is balanced: n / 10 examples per class.
        assert np.array_equal(np.bincount(labels.numpy()), np.full(10, n // 10))


# --------------------------------------------------------------------------- tfds


def test_tfds_mock_mnist_and_cifar10_shapes():
    with tfds.testing.mock_data(num_examples=6):
        mnist = datasets.get_dataset("mnist", "train", 4, drop_remainder=True)
        images, labels = next(iter(mnist))
        assert images.shape == (4, 28, 28, 1) and labels.dtype.name == "int32"
        assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
        cifar = datasets.get_dataset("cifar10", "test", 3)
        images, labels = next(iter(cifar))
        assert images.shape == (3, 32, 32, 3) and labels.dtype.name == "int32"
        # Standardised by default.
        assert float(images.numpy().min()) < 0.0


def test_tfds_mock_cifar_augmentation_keeps_shape_and_is_seeded():
    def batch(**kwargs):
        with tfds.testing.mock_data(num_examples=8):
            ds = datasets.get_dataset("cifar10", "train", 8, shuffle=False, **kwargs)
            return next(iter(ds))[0].numpy()

    plain = batch(augment=False)
    augmented = batch(augment=True, seed=1)
    assert augmented.shape == plain.shape == (8, 32, 32, 3)
    assert not np.array_equal(plain, augmented)
    assert np.array_equal(augmented, batch(augment=True, seed=1))
    assert not np.array_equal(augmented, batch(augment=True, seed=2))


def test_tfds_mock_imagenet_crops_to_image_size():
    with tfds.testing.mock_data(num_examples=3):
        for split in ("train", "test"):
            ds = datasets.get_dataset("imagenet2012", split, 3, image_size=64)
            images, labels = next(iter(ds))
            assert images.shape == (3, 64, 64, 3)
            assert int(labels.numpy().max()) < 1000
    assert datasets.get_dataset_info("imagenet2012").input_shape == (224, 224, 3)


def test_missing_tfds_dataset_explains_how_to_provide_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.get_dataset("cifar10", "train", 8, data_dir=str(tmp_path))
    message = str(info.value)
    assert "'cifar10'" in message
    assert str(tmp_path) in message
    assert "tfds build cifar10" in message
    assert "digits" in message and "mnist_idx" in message


# ------------------------------------------------- tfds preprocessing on known pixel values
def _records(images, labels, encode=False):
    """A `tfds.testing.mock_data(as_dataset_fn=...)` returning these exact records."""

    def as_dataset_fn(builder, split, decoders=None, read_config=None, **kwargs):
        imgs = images
        if decoders is not None or encode:  # ImageNet keeps JPEG strings (SkipDecoding)
            imgs = [tf.io.encode_jpeg(tf.constant(i), quality=100, chroma_downsampling=False)
                    .numpy() for i in images]
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.stack(imgs) if not isinstance(imgs[0], bytes) else np.array(imgs),
             "label": np.asarray(labels, np.int64)})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset_fn)


def test_tfds_cifar10_standardization_constants_by_hand():
    # Channel values 51, 102, 204 = 0.2, 0.4, 0.8 of 255; CIFAR-10 mean (0.4914, 0.4822,
    # 0.4465), std (0.2470, 0.2435, 0.2616): (0.2 - 0.4914) / 0.2470 = -1.179757, ...
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 51, 102, 204
    with _records([image, 255 - image], [3, 7]):
        images, labels = next(iter(datasets.get_dataset("cifar10", "test", 2)))
    np.testing.assert_array_equal(labels.numpy(), [3, 7])
    want = np.array([-1.179757, -0.337577, 1.351300], np.float32)
    np.testing.assert_allclose(images.numpy()[0], np.broadcast_to(want, (32, 32, 3)), atol=1e-5)
    # 255 - (51, 102, 204) = (204, 153, 51): (0.8 - 0.4914) / 0.2470 = 1.249393, ...
    want2 = np.array([1.249393, 0.483778, -0.942278], np.float32)
    np.testing.assert_allclose(images.numpy()[1], np.broadcast_to(want2, (32, 32, 3)), atol=1e-5)


def test_tfds_mnist_unit_and_standardize_by_hand():
    image = np.zeros((28, 28, 1), np.uint8)
    image[3:9, 4:20] = 255
    image[20, 20] = 51
    with _records([image], [5]):
        unit = next(iter(datasets.get_dataset("mnist", "test", 1)))[0].numpy()[0]
        std = next(iter(datasets.get_dataset("mnist", "test", 1,
                                              normalization="standardize")))[0].numpy()[0]
    want = image.astype(np.float32) / 255.0
    np.testing.assert_allclose(unit, want, atol=1e-7)
    # MNIST mean 0.1307, std 0.3081: 0 -> -0.424213, 1 -> 2.821487, 0.2 -> 0.224927.
    assert std[0, 0, 0] == pytest.approx(-0.424213, abs=1e-5)
    assert std[5, 5, 0] == pytest.approx(2.821487, abs=1e-5)
    assert std[20, 20, 0] == pytest.approx(0.224927, abs=1e-5)


def test_tfds_cifar_augmentation_is_a_padded_crop_and_flip():
    """Every augmented image is a 32x32 window of the 4-pixel zero-padded original,
    possibly mirrored; over examples the offsets and both flips all occur."""
    n = 24
    ii, jj = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    base = np.stack([1 + (ii * 7 + jj) % 250, 1 + (jj * 5 + ii) % 250,
                     1 + (ii * jj) % 250], -1).astype(np.uint8)  # no zero pixels
    with _records([base] * n, list(range(n))):
        ds = datasets.get_dataset("cifar10", "train", n, shuffle=False, augment=True, seed=3,
                                  normalization="unit")
        images = next(iter(ds))[0].numpy()
    padded = np.pad(base.astype(np.float32) / 255.0, ((4, 4), (4, 4), (0, 0)))
    seen = set()
    for out in images:
        match = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                 if np.allclose(out, (lambda w: w[:, ::-1] if flip else w)(
                     padded[dy:dy + 32, dx:dx + 32]), atol=1e-6)]
        assert match, "augmented image is not a padded crop (+ flip) of the original"
        seen.update(match)
    assert {f for _, _, f in seen} == {0, 1}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 5


def test_tfds_imagenet_eval_takes_the_central_crop():
    """Evaluation crops the central 224/256 of the shorter side: a 256x256 image with a
    16-pixel border of another colour gives only the centre colour, standardised with the
    ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[...] = (250, 10, 10)  # border
    image[16:240, 16:240] = (51, 153, 204)  # centre: 0.2, 0.6, 0.8
    with _records([image], [1]):
        out = next(iter(datasets.get_dataset("imagenet2012", "test", 1)))[0].numpy()[0]
    assert out.shape == (224, 224, 3)
    # (0.2 - 0.485) / 0.229 = -1.244541, (0.6 - 0.456) / 0.224 = 0.642857,
    # (0.8 - 0.406) / 0.225 = 1.751111; JPEG (quality 100) rounding: +-3/255/std.
    want = np.array([-1.244541, 0.642857, 1.751111], np.float32)
    np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), atol=3 / 255 / 0.224)
