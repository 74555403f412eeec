"""Dataset registry producing batched `tf.data.Dataset`s of `(image, label)` pairs.

Three kinds of sources, all looked up by name (`list_datasets()`):

* `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes); needs no files,
  the offline default. Fixed stratified split: 1437 train / 360 test.
* `mnist_idx`, `fashion_mnist_idx`: a local directory of MNIST-format IDX files
  (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
  `t10k-labels-idx1-ubyte`, each optionally gzipped). `fashion_mnist_idx` defaults to
  the Debian `dataset-fashion-mnist` directory; `mnist_idx` needs `data_dir` (any
  10-class IDX directory works with it).
* `mnist`, `fashion_mnist`, `cifar10`, `cifar100`, `imagenet2012`: TensorFlow Datasets,
  loaded with `download=False` from `data_dir` (default: `TFDS_DATA_DIR` or
  `~/tensorflow_datasets`).

Every dataset has the splits `'train'` and `'test'` (for `imagenet2012`, `'test'` reads
the official validation set). Images are float32 `(height, width, channels)`, scaled to
[0, 1] and, with `normalization='standardize'`, shifted and scaled per channel by the
dataset's mean and standard deviation. Labels are int32 class indices.

Pipelines are deterministic given `seed`: shuffling uses the seed (reshuffling every
epoch from a seeded sequence), and augmentation uses stateless random ops whose seeds
come from `tf.data.Dataset.random(seed)`.
"""

import dataclasses
import functools
import gzip
import math
import os

import numpy as np
import tensorflow as tf

SPLITS = ("train", "test")
NORMALIZATIONS = ("unit", "standardize")

_DATASETS = {}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset as produced by `get_dataset`.

    Attributes:
      name: registry name.
      input_shape: shape of one preprocessed image, `(height, width, channels)`.
      num_classes: number of classes; labels are in `[0, num_classes)`.
      num_examples: dict mapping each split name to its number of examples.
    """

    name: str
    input_shape: tuple
    num_classes: int
    num_examples: dict

    @property
    def splits(self):
        """The split names, a tuple."""
        return tuple(self.num_examples)


class DatasetSource:
    """Base class of the registry entries; subclass it to register a new dataset.

    Subclasses set `num_classes`, `mean` and `std` (per channel, on [0, 1] images),
    `default_normalization`, `augmentation` (`'none'`, `'cifar'` or `'imagenet'`) and
    `shuffle_buffer`, and implement `native_shape`, `num_examples` and `load`.
    """

    num_classes = None
    mean = None
    std = None
    default_normalization = "unit"
    augmentation = "none"
    shuffle_buffer = None  # None: the whole split.
    # Whether each example must be preprocessed on its own (variable image sizes or
    # encoded images); otherwise preprocessing runs on whole batches.
    per_example = False

    def native_shape(self, data_dir):
        """Returns the stored image shape `(height, width, channels)`."""
        raise NotImplementedError

    def num_examples(self, data_dir):
        """Returns a dict mapping each split to its number of examples."""
        raise NotImplementedError

    def load(self, split, data_dir, shuffle_files, seed):
        """Returns an unbatched dataset of `(image, int label)`; images uint8 or float in [0, 1]."""
        raise NotImplementedError


def register_dataset(name, source):
    """Registers `source` (a `DatasetSource`) under `name`.

    Args:
      name: registry name, a non-empty string not already registered.
      source: a `DatasetSource` instance.

    Raises:
      ValueError: if `name` is empty or already registered, or `source` is not a
        `DatasetSource`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_dataset: `name` must be a non-empty string, got {name!r}.")
    if name in _DATASETS:
        raise ValueError(f"register_dataset: `name`={name!r} is already registered.")
    if not isinstance(source, DatasetSource):
        raise ValueError(
            f"register_dataset: `source` must be a DatasetSource, got {type(source).__name__}."
        )
    _DATASETS[name] = source


def list_datasets():
    """Returns the sorted names of all registered datasets."""
    return sorted(_DATASETS)


def get_dataset_info(name, data_dir=None, image_size=None):
    """Returns the `DatasetInfo` of dataset `name` without loading its examples.

    For IDX directories only the file headers are read; for tfds datasets the published
    split sizes are returned (the data need not be present).

    Args:
      name: a name from `list_datasets()`.
      data_dir: data directory (see `get_dataset`).
      image_size: output image size as passed to `get_dataset`.

    Returns:
      A `DatasetInfo`.

    Raises:
      ValueError: on an unknown `name`, a bad `image_size`, or a missing `data_dir` for
        a dataset that needs one (`mnist_idx`).
      FileNotFoundError: if an IDX dataset's files are missing.
    """
    source = _lookup(name)
    shape = _output_shape(source, data_dir, image_size)
    return DatasetInfo(
        name=name,
        input_shape=shape,
        num_classes=source.num_classes,
        num_examples=dict(source.num_examples(data_dir)),
    )


def get_dataset(
    name,
    split,
    batch_size,
    *,
    shuffle=None,
    seed=0,
    data_dir=None,
    repeat=False,
    drop_remainder=False,
    augment=None,
    normalization=None,
    image_size=None,
    shuffle_buffer=None,
    prefetch=True,
):
    """Builds the batched input pipeline of one split of dataset `name`.

    Order: load -> shuffle -> repeat -> augment + normalize -> batch -> prefetch.

    Args:
      name: a name from `list_datasets()`.
      split: 'train' or 'test'.
      batch_size: examples per batch, a positive int.
      shuffle: shuffle the examples (seeded, reshuffled every epoch); default: True for
        'train', False otherwise.
      seed: int seed for shuffling, file order and augmentation.
      data_dir: directory holding the data: the IDX directory for `*_idx` datasets, the
        tfds data directory for tfds datasets; ignored by `digits`.
      repeat: repeat the dataset indefinitely.
      drop_remainder: drop the last batch if it is smaller than `batch_size`.
      augment: apply the dataset's training augmentation (CIFAR: 4-pixel zero-padding +
        random crop + horizontal flip; ImageNet: random-resized crop + flip); default:
        True for 'train'. Datasets without a standard augmentation (digits, MNIST,
        Fashion-MNIST) ignore it.
      normalization: 'unit' (scale to [0, 1]) or 'standardize' (then subtract the
        per-channel mean and divide by the std); default: 'standardize' for CIFAR and
        ImageNet, 'unit' otherwise.
      image_size: int or (height, width). ImageNet: crop size (default 224). Other
        datasets: images are resized (bilinear) to it when given (e.g. digits to 28).
      shuffle_buffer: shuffle buffer size; default: the whole split for in-memory
        datasets, a dataset-specific size for tfds datasets.
      prefetch: add `prefetch(tf.data.AUTOTUNE)` at the end.

    Returns:
      A `tf.data.Dataset` of `(images, labels)`: float32 `(batch,) + input_shape` and
      int32 `(batch,)`.

    Raises:
      ValueError: on an unknown `name`, `split` or `normalization`, a non-positive
        `batch_size`, an empty split, or `drop_remainder` leaving no batch.
      FileNotFoundError: if the data are not available locally (message says how to
        provide them).
    """
    source = _lookup(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown `split`={split!r} for dataset {name!r}; use one of {SPLITS}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int, got {seed!r}.")
    normalization = source.default_normalization if normalization is None else normalization
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown `normalization`={normalization!r}; use one of {NORMALIZATIONS}."
        )
    if shuffle_buffer is not None and (
        isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 1
    ):
        raise ValueError(f"`shuffle_buffer` must be a positive int, got {shuffle_buffer!r}.")
    training = split == "train"
    shuffle = training if shuffle is None else bool(shuffle)
    augment = training if augment is None else bool(augment)
    augment = augment and source.augmentation != "none"
    out_shape = _output_shape(source, data_dir, image_size)

    ds = source.load(split, data_dir, shuffle_files=shuffle, seed=seed)
    cardinality = int(ds.cardinality())
    if cardinality == 0:
        raise ValueError(f"Split {split!r} of dataset {name!r} is empty (data_dir={data_dir!r}).")
    if drop_remainder and not repeat and 0 < cardinality < batch_size:
        raise ValueError(
            f"`batch_size`={batch_size} exceeds the {cardinality} examples of split {split!r} "
            f"of {name!r}; with drop_remainder=True no batch would remain."
        )
    if shuffle:
        buffer = shuffle_buffer or source.shuffle_buffer or cardinality
        if buffer <= 0:  # unknown cardinality and no buffer size given
            buffer = 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    preprocess = functools.partial(
        _preprocess, source=source, out_shape=out_shape, normalization=normalization
    )
    autotune = tf.data.AUTOTUNE

    def prepare(image, label, augment_seed=None):
        return preprocess(image, augment_seed=augment_seed), tf.cast(label, tf.int32)

    if augment:
        # One int64 per example (re-drawn every epoch) seeds the stateless augmentation ops.
        rng = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, rng)).map(
            lambda pair, r: prepare(pair[0], pair[1], r), num_parallel_calls=autotune
        )
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    elif source.per_example:
        ds = ds.map(prepare, num_parallel_calls=autotune)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:  # cheaper: the same preprocessing, vectorised over whole batches
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(prepare, num_parallel_calls=autotune)
    if prefetch:
        ds = ds.prefetch(autotune)
    return ds


def get_fixed_batch(name, split, num_examples, *, seed=0, data_dir=None, **kwargs):
    """Returns one fixed, deterministic batch of examples (for gradient-norm / Hessian studies).

    The examples are the first `num_examples` of the split shuffled with `seed`, without
    augmentation; the same arguments always give the same batch.

    Args:
      name: a name from `list_datasets()`.
      split: 'train' or 'test'.
      num_examples: batch size, a positive int not larger than the split.
      seed: int seed choosing the examples.
      data_dir: data directory (see `get_dataset`).
      **kwargs: `normalization`, `image_size` or `shuffle_buffer` (see `get_dataset`).

    Returns:
      `(images, labels)` numpy arrays: float32 `(num_examples,) + input_shape` and int32
      `(num_examples,)`.

    Raises:
      ValueError: on bad arguments or if the split has fewer than `num_examples` examples.
    """
    allowed = {"normalization", "image_size", "shuffle_buffer"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"get_fixed_batch got unexpected keyword argument(s) {unknown}; allowed: "
            f"{sorted(allowed)}."
        )
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
        raise ValueError(f"`num_examples` must be a positive int, got {num_examples!r}.")
    ds = get_dataset(
        name, split, num_examples, shuffle=True, seed=seed, data_dir=data_dir,
        augment=False, prefetch=False, **kwargs,
    )  # fmt: skip
    for images, labels in ds.take(1):
        if images.shape[0] < num_examples:
            raise ValueError(
                f"`num_examples`={num_examples} exceeds the {images.shape[0]} examples of "
                f"split {split!r} of dataset {name!r}."
            )
        return images.numpy(), labels.numpy()
    raise ValueError(f"Split {split!r} of dataset {name!r} is empty.")


# --------------------------------------------------------------------------- helpers


def _lookup(name):
    if name not in _DATASETS:
        raise ValueError(
            f"Unknown dataset `name`={name!r}; known datasets: {', '.join(list_datasets())}."
        )
    return _DATASETS[name]


def _image_hw(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    else:
        try:
            hw = tuple(image_size)
        except TypeError:
            hw = ()
    if len(hw) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                               for d in hw):  # fmt: skip
        raise ValueError(
            f"`image_size` must be a positive int or a (height, width) pair, got {image_size!r}."
        )
    return hw


def _output_shape(source, data_dir, image_size):
    native = tuple(source.native_shape(data_dir))
    hw = _image_hw(image_size)
    if hw is None and source.augmentation == "imagenet":
        hw = (224, 224)
    return native if hw is None else hw + native[-1:]


def _preprocess(image, source, out_shape, normalization, augment_seed=None):
    """Decodes/crops/resizes, optionally augments, and normalises images (one or a batch)."""
    h, w = out_shape[0], out_shape[1]
    if source.augmentation == "imagenet":
        image = _imagenet_crop(image, h, w, augment_seed)
    else:
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
        if tuple(image.shape[-3:-1]) != (h, w):
            image = tf.image.resize(image, (h, w))
        if augment_seed is not None and source.augmentation == "cifar":
            # Zero-pad by 4, take a random crop of the original size, random flip.
            padded = tf.image.pad_to_bounding_box(image, 4, 4, h + 8, w + 8)
            image = tf.image.stateless_random_crop(
                padded, (h, w, out_shape[2]), seed=tf.stack([augment_seed, 0])
            )
            image = tf.image.stateless_random_flip_left_right(
                image, seed=tf.stack([augment_seed, 1])
            )
    if normalization == "standardize":
        mean = tf.constant(source.mean, tf.float32)
        std = tf.constant(source.std, tf.float32)
        image = (image - mean) / std
    return image


def _imagenet_crop(encoded, h, w, augment_seed):
    """Random-resized crop (+ flip) for training, resize-256 + center-crop-224 for eval.

    Works on encoded JPEG strings so only the crop is decoded. Training follows the
    Inception recipe: a crop covering 8%-100% of the area with aspect ratio 3/4-4/3,
    resized to (h, w); evaluation crops the central 87.5% (224 of 256).
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    if augment_seed is not None:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
            seed=tf.stack([augment_seed, 0]),
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
    else:
        ih, iw = shape[0], shape[1]
        # Side of the central crop: (h / (h + 32)) of the shorter side, i.e. 224/256.
        crop = tf.cast(
            tf.cast(h, tf.float32) / (h + 32) * tf.cast(tf.minimum(ih, iw), tf.float32),
            tf.int32,
        )
        window = tf.stack([(ih - crop + 1) // 2, (iw - crop + 1) // 2, crop, crop])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, (h, w), method="bicubic")
    image = tf.clip_by_value(image / 255.0, 0.0, 1.0)
    if augment_seed is not None:
        image = tf.image.stateless_random_flip_left_right(image, seed=tf.stack([augment_seed, 1]))
    return image


class _ArraySource(DatasetSource):
    """A dataset held in memory as numpy arrays."""

    def arrays(self, split, data_dir):
        """Returns `(images, labels)` numpy arrays of one split."""
        raise NotImplementedError

    def load(self, split, data_dir, shuffle_files, seed):
        images, labels = self.arrays(split, data_dir)
        return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))


# --------------------------------------------------------------------------- digits


class _DigitsSource(_ArraySource):
    """scikit-learn's 8x8 digits with a fixed stratified 1437/360 train/test split."""

    num_classes = 10
    # Per-pixel statistics of the train split on [0, 1] images (values 0..16 / 16).
    mean = (0.3054,)
    std = (0.3761,)
    _num_test = 360
    _split_seed = 0

    def native_shape(self, data_dir):
        return (8, 8, 1)

    def num_examples(self, data_dir):
        return {"train": 1797 - self._num_test, "test": self._num_test}

    @functools.lru_cache(maxsize=1)
    def _all_splits(self):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        images = (data.images / 16.0).astype(np.float32)[..., None]
        labels = data.target.astype(np.int32)
        x_tr, x_te, y_tr, y_te = train_test_split(
            images, labels, test_size=self._num_test, random_state=self._split_seed,
            stratify=labels,
        )  # fmt: skip
        return {"train": (x_tr, y_tr), "test": (x_te, y_te)}

    def arrays(self, split, data_dir):
        return self._all_splits()[split]


# --------------------------------------------------------------------------- IDX files

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_idx_header(f, path):
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise ValueError(
            f"IDX file {path!r} is corrupt or not an IDX file: bad magic number {magic!r} "
            "(expected 0x00 0x00, a type code in "
            f"{[hex(c) for c in _IDX_DTYPES]} and the number of dimensions)."
        )
    ndim = magic[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise ValueError(f"IDX file {path!r} is truncated inside its header ({ndim} dimensions).")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    return _IDX_DTYPES[magic[2]], dims


def read_idx_shape(path):
    """Returns the array shape stored in an IDX file (gzipped or not), reading only its header.

    Args:
      path: path of the IDX file.

    Returns:
      The shape, a tuple of ints.

    Raises:
      ValueError: if the file is not a valid IDX file.
    """
    with _open_maybe_gzip(path) as f:
        return _read_idx_header(f, path)[1]


def read_idx(path):
    """Reads an IDX file (gzipped or not) into a numpy array.

    Args:
      path: path of the IDX file.

    Returns:
      A numpy array with the stored shape and the native-endian version of its dtype.

    Raises:
      ValueError: if the magic number is invalid or the data size does not match the
        header; the message names the file.
    """
    try:
        with _open_maybe_gzip(path) as f:
            dtype, dims = _read_idx_header(f, path)
            payload = f.read()
    except (OSError, EOFError) as e:  # e.g. a truncated gzip stream
        raise ValueError(f"IDX file {path!r} is corrupt: {e}") from e
    expected = math.prod(dims) * dtype.itemsize
    if len(payload) != expected:
        raise ValueError(
            f"IDX file {path!r} is corrupt: header declares shape {dims} of {dtype} "
            f"({expected} bytes) but {len(payload)} data bytes follow."
        )
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx_file(directory, stem, dataset_name):
    # Also accept the "train-images.idx3-ubyte" spelling of some MNIST mirrors.
    candidates = [stem, stem + ".gz"]
    dotted = stem.replace("-idx", ".idx")
    candidates += [dotted, dotted + ".gz"]
    for candidate in candidates:
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"IDX file {stem!r} (or {stem + '.gz'!r}) for dataset {dataset_name!r} not found in "
        f"directory {directory!r}. Expected files: "
        f"{', '.join(s for pair in _IDX_FILES.values() for s in pair)} (optionally .gz)."
    )


@functools.lru_cache(maxsize=4)
def _cached_idx(path, mtime_ns, size):
    del mtime_ns, size  # only part of the cache key
    array = read_idx(path)
    array.setflags(write=False)
    return array


def _read_idx_cached(path):
    st = os.stat(path)
    return _cached_idx(os.path.realpath(path), st.st_mtime_ns, st.st_size)


class _IdxSource(_ArraySource):
    """A directory of MNIST-format IDX files with 10 classes."""

    num_classes = 10

    def __init__(self, dataset_name, default_dir, mean, std):
        self.dataset_name = dataset_name
        self.default_dir = default_dir
        self.mean = mean
        self.std = std

    def _dir(self, data_dir):
        directory = data_dir or self.default_dir
        if directory is None:
            raise ValueError(
                f"Dataset {self.dataset_name!r} needs `data_dir`: a directory holding the IDX "
                f"files {', '.join(s for pair in _IDX_FILES.values() for s in pair)} "
                "(optionally .gz)."
            )
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"IDX directory {directory!r} for dataset {self.dataset_name!r} does not "
                "exist; pass `data_dir` pointing to the directory of IDX files."
            )
        return directory

    def _paths(self, split, data_dir):
        directory = self._dir(data_dir)
        return tuple(_find_idx_file(directory, s, self.dataset_name) for s in _IDX_FILES[split])

    def native_shape(self, data_dir):
        images_path, _ = self._paths("train", data_dir)
        dims = read_idx_shape(images_path)
        if len(dims) not in (3, 4):
            raise ValueError(
                f"IDX images file {images_path!r} has shape {dims}; expected "
                "(count, height, width) or (count, height, width, channels)."
            )
        return dims[1:] + ((1,) if len(dims) == 3 else ())

    def num_examples(self, data_dir):
        return {s: read_idx_shape(self._paths(s, data_dir)[1])[0] for s in SPLITS}

    def arrays(self, split, data_dir):
        images_path, labels_path = self._paths(split, data_dir)
        images = _read_idx_cached(images_path)
        labels = _read_idx_cached(labels_path)
        if images.ndim not in (3, 4):
            raise ValueError(
                f"IDX images file {images_path!r} has shape {images.shape}; expected "
                "(count, height, width) or (count, height, width, channels)."
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"IDX labels file {labels_path!r} has shape {labels.shape}, which does not "
                f"match the {images.shape[0]} images of {images_path!r}."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"IDX labels file {labels_path!r} has labels outside [0, {self.num_classes})."
            )
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8:  # other IDX types are taken to be in [0, 1] already
            images = images.astype(np.float32)
        return images, labels.astype(np.int32)


# --------------------------------------------------------------------------- tfds


class _TfdsSource(DatasetSource):
    """A TensorFlow Datasets dataset, read locally with `download=False`."""

    def __init__(self, dataset_name, tfds_name, shape, num_classes, sizes, mean, std,
                 normalization, augmentation, shuffle_buffer, test_split="test",
                 cache=True):  # fmt: skip
        self.dataset_name = dataset_name
        self.tfds_name = tfds_name
        self.shape = shape
        self.num_classes = num_classes
        self.sizes = sizes
        self.mean = mean
        self.std = std
        self.default_normalization = normalization
        self.augmentation = augmentation
        self.shuffle_buffer = shuffle_buffer
        self.test_split = test_split
        self.cache = cache
        self.per_example = augmentation == "imagenet"

    def native_shape(self, data_dir):
        return self.shape

    def num_examples(self, data_dir):
        return dict(self.sizes)

    def load(self, split, data_dir, shuffle_files, seed):
        import tensorflow_datasets as tfds

        tfds_split = "train" if split == "train" else self.test_split
        decoders = None
        if self.augmentation == "imagenet":  # keep JPEGs encoded; _imagenet_crop decodes
            decoders = {"image": tfds.decode.SkipDecoding()}
        try:
            ds = tfds.load(
                self.tfds_name,
                split=tfds_split,
                data_dir=data_dir,
                download=False,
                as_supervised=True,
                shuffle_files=shuffle_files,
                decoders=decoders,
                read_config=tfds.ReadConfig(shuffle_seed=seed),
            )
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
            raise FileNotFoundError(self._missing_message(data_dir)) from e
        if self.cache:
            ds = ds.cache()
        return ds

    def _missing_message(self, data_dir):
        import tensorflow_datasets as tfds

        try:
            searched = os.fspath(tfds.builder(self.tfds_name, data_dir=data_dir).data_dir)
        except Exception:  # noqa: BLE001 -- only for the message
            searched = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        manual = (
            " (ImageNet needs the manually downloaded archives in DIR/downloads/manual)"
            if self.tfds_name == "imagenet2012"
            else ""
        )
        return (
            f"Dataset {self.dataset_name!r} (tfds {self.tfds_name!r}) is not prepared in "
            f"data_dir {searched!r}, and nothing is downloaded here (download=False). To "
            f"provide it, run `tfds build {self.tfds_name} --data_dir=DIR` on a machine with "
            f"internet access{manual}, copy DIR/{self.tfds_name} to this machine and pass "
            "`data_dir`=DIR (or set TFDS_DATA_DIR). Offline alternatives: 'digits', "
            "'fashion_mnist_idx', or 'mnist_idx' with `data_dir` set to a directory of IDX "
            "files."
        )


# --------------------------------------------------------------------------- registry

_MNIST_STATS = ((0.1307,), (0.3081,))
_FASHION_STATS = ((0.2860,), (0.3530,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

FASHION_MNIST_IDX_DIR = "/usr/share/datasets/fashion-mnist"

register_dataset("digits", _DigitsSource())
register_dataset("mnist_idx", _IdxSource("mnist_idx", None, *_MNIST_STATS))
register_dataset(
    "fashion_mnist_idx", _IdxSource("fashion_mnist_idx", FASHION_MNIST_IDX_DIR, *_FASHION_STATS)
)
_SMALL = {"train": 60_000, "test": 10_000}
_CIFAR = {"train": 50_000, "test": 10_000}
register_dataset(
    "mnist",
    _TfdsSource("mnist", "mnist", (28, 28, 1), 10, _SMALL, *_MNIST_STATS, "unit", "none",
                60_000),
)  # fmt: skip
register_dataset(
    "fashion_mnist",
    _TfdsSource("fashion_mnist", "fashion_mnist", (28, 28, 1), 10, _SMALL, *_FASHION_STATS,
                "unit", "none", 60_000),
)  # fmt: skip
register_dataset(
    "cifar10",
    _TfdsSource("cifar10", "cifar10", (32, 32, 3), 10, _CIFAR, *_CIFAR10_STATS,
                "standardize", "cifar", 50_000),
)  # fmt: skip
register_dataset(
    "cifar100",
    _TfdsSource("cifar100", "cifar100", (32, 32, 3), 100, _CIFAR, *_CIFAR100_STATS,
                "standardize", "cifar", 50_000),
)  # fmt: skip
register_dataset(
    "imagenet2012",
    _TfdsSource("imagenet2012", "imagenet2012", (None, None, 3), 1000,
                {"train": 1_281_167, "test": 50_000}, *_IMAGENET_STATS, "standardize",
                "imagenet", 10_000, test_split="validation", cache=False),
)  # fmt: skip
