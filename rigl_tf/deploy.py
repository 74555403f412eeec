"""Export sparse Keras 3 models to deployable formats and measure what sparsity saves.

A sparse model (``rigl_tf.sparsify``) stores masked weights as exact zeros, so every
format below is written from the stripped plain model (``rigl_tf.strip``) and computes the
same function:

* ``'keras'``: a ``.keras`` file (``keras.saving.save_model``);
* ``'saved_model'``: a TensorFlow SavedModel directory with a ``serve`` endpoint
  (``model.export(path, format='tf_saved_model')``);
* ``'tflite'``: a float TFLite flatbuffer (``tf.lite.TFLiteConverter.from_saved_model``);
* ``'tflite_sparse'``: the same with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``, which
  stores sufficiently sparse constant tensors in TFLite's compressed sparse format.

The zeros only make the ``.keras`` and SavedModel files more compressible; their raw size is
the dense size. :func:`export_report` writes each format for the sparse model and for a
dense model of the same architecture and tabulates raw and gzip sizes.

Every writer is atomic: output goes to a temporary path next to the destination and is
renamed into place only after it is complete; on failure the temporary path is removed
and an existing destination is left as it was.
"""

import gzip
import os
import tempfile
import warnings
from typing import Callable, Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.files import atomic_output  # noqa: F401  (re-exported)
from rigl_tf.keras import model_ops

FORMATS = ("keras", "saved_model", "tflite", "tflite_sparse")

# Default file name of each format inside an export_report directory.
_FILE_NAMES = {
    "keras": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_sparse": "model_sparse.tflite",
}


def check_format(format) -> str:  # noqa: A002 (Keras and TF call this argument `format`)
    """Returns ``format`` if it is one of :data:`FORMATS`.

    Raises:
      ValueError: naming the parameter, the bad value and the allowed values.
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"`format` must be one of {list(FORMATS)}, got {format!r}.")
    return format




def _plain(model):
    """The stripped model when ``model`` has SparseWrappers, else ``model`` itself."""
    model_ops.check_keras3_model(model)
    return model_ops.strip(model) if model_ops.wrappers(model) else model


# Entries of a SavedModel directory; export replaces such a directory, nothing else.
SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "saved_model.pbtxt", "variables", "assets",
                                 "assets.extra", "fingerprint.pb", "keras_metadata.pb"})


def is_saved_model_dir(path: str) -> bool:
    """Whether ``path`` is a directory holding a SavedModel and nothing else."""
    entries = set(os.listdir(path))
    return bool(entries) and entries <= SAVED_MODEL_ENTRIES and (
        "saved_model.pb" in entries or "saved_model.pbtxt" in entries)


def _write_saved_model(plain, path: str):
    plain.export(path, format="tf_saved_model", verbose=False)


def _write_tflite(plain, path: str, sparse: bool):
    with tempfile.TemporaryDirectory(prefix="rigl_tf_tflite_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        _write_saved_model(plain, saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)


def export(model, path: str, format: str = "keras") -> str:  # noqa: A002
    """Writes a sparse (or plain) Keras 3 model in a deployable format.

    The SparseWrappers are stripped first (:func:`rigl_tf.strip`; a model compiled with a
    SparseOptimizer is saved compiled with its inner optimizer); masked weights are exact
    zeros, so the exported model computes the same outputs as ``model``.

    Args:
      model: a Keras 3 Sequential or functional model, with or without SparseWrappers.
      path: destination; a file for 'keras' (must end in '.keras'), 'tflite' and
        'tflite_sparse', a directory for 'saved_model'. An existing file, or an earlier
        SavedModel directory, is replaced; a directory holding other files is refused
        (nothing in it is removed).
      format: one of 'keras', 'saved_model', 'tflite', 'tflite_sparse'.

    Returns:
      The absolute path written.

    Raises:
      ValueError: for an unknown ``format`` or a 'keras' path without the '.keras' suffix.
      FileExistsError: ``path`` is a directory holding other files.
      TypeError: if ``model`` is not a Keras 3 model.
    """
    check_format(format)
    path = os.path.abspath(os.fspath(path))
    if format == "keras" and not path.endswith(".keras"):
        raise ValueError(
            f"`path` must end in '.keras' for format='keras', got {path!r}."
        )
    plain = _plain(model)
    with atomic_output(path, owned=is_saved_model_dir if format == "saved_model" else None
                       ) as tmp:
        if format == "keras":
            keras.saving.save_model(plain, tmp)
        elif format == "saved_model":
            _write_saved_model(plain, tmp)
        else:
            _write_tflite(plain, tmp, sparse=format == "tflite_sparse")
    return path


def load_exported(path: str, format: str) -> Callable[[np.ndarray], np.ndarray]:  # noqa: A002
    """Loads an exported model and returns a function from a numpy batch to numpy outputs.

    Used to check that an export computes what the sparse model computes. TFLite files are
    run with ``ai_edge_litert`` when it is installed, else with ``tf.lite.Interpreter``
    (its deprecation warning is silenced); the input is resized to the batch's shape.

    Args:
      path: a path written by :func:`export`.
      format: the format it was written in (see :data:`FORMATS`).

    Returns:
      ``predict(x) -> np.ndarray`` for a single-input, single-output model.

    Raises:
      ValueError: for an unknown ``format``.
    """
    check_format(format)
    if format == "keras":
        loaded = keras.models.load_model(path)
        return lambda x: np.asarray(loaded(x, training=False))
    if format == "saved_model":
        loaded = tf.saved_model.load(path)
        return lambda x: loaded.serve(tf.convert_to_tensor(x)).numpy()
    interpreter = _tflite_interpreter(path)

    def predict(x):
        x = np.asarray(x)
        (inp,) = interpreter.get_input_details()
        if tuple(inp["shape"]) != x.shape:
            interpreter.resize_tensor_input(inp["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return predict


def _tflite_interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter  # the successor of tf.lite
    except ImportError:
        Interpreter = None
    if Interpreter is not None:
        return Interpreter(model_path=path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return tf.lite.Interpreter(model_path=path)


# --------------------------------------------------------------------------- sizes


def file_size(path: str) -> int:
    """Size in bytes of a file, or the total size of the files under a directory."""
    if os.path.isdir(path):
        return sum(os.path.getsize(f) for f in _files(path))
    return os.path.getsize(path)


def gzip_size(path: str) -> int:
    """Bytes after gzip (level 9) of a file, or the sum over the files of a directory."""
    total = 0
    for name in (_files(path) if os.path.isdir(path) else [path]):
        with open(name, "rb") as f:
            total += len(gzip.compress(f.read(), compresslevel=9, mtime=0))
    return total


def _files(directory: str):
    for root, _, names in sorted(os.walk(directory)):
        for name in sorted(names):
            yield os.path.join(root, name)


def _counts(model) -> Dict[str, float]:
    values = [np.asarray(w) for w in model.get_weights()]
    params = int(sum(v.size for v in values))
    nonzeros = int(sum(np.count_nonzero(v) for v in values))
    return {
        "params": params,
        "nonzeros": nonzeros,
        "sparsity": 1.0 - nonzeros / params if params else 0.0,
    }


def dense_counterpart(model, seed: int = 0):
    """A plain model of the same architecture whose masked weights are random and dense.

    Every weight that has a mask in ``model`` is replaced by normal noise with the standard
    deviation of its active entries (1 if it has none), so no entry is zero; all other
    weights (biases, normalisation, layers kept dense) are copied.

    Args:
      model: a Keras 3 model, sparse or plain (a plain model is returned as a copy).
      seed: seed of the numpy generator.

    Returns:
      A new plain Keras model.
    """
    model_ops.check_keras3_model(model)
    plain = model_ops.strip(model)
    layers = {layer.name: layer for layer in model_ops.iter_layers(plain)}
    rng = np.random.default_rng(seed)
    for key, source, _ in model_ops.masked_weights(model):
        layer_name, attr = key.split("/", 1)
        weight = getattr(layers[layer_name], attr)
        active = np.asarray(source.numpy())
        active = active[active != 0]
        scale = float(active.std()) if active.size > 1 and active.std() > 0 else 1.0
        noise = rng.normal(0.0, scale, size=tuple(weight.shape))
        noise[noise == 0] = scale  # exact zeros are (nearly) impossible; make it certain
        weight.assign(noise.astype(weight.dtype))
    return plain


def export_report(
    model,
    outdir: str,
    formats: Sequence[str] = FORMATS,
    seed: int = 0,
) -> Dict[str, object]:
    """Exports a sparse model and its dense counterpart in each format and compares sizes.

    Writes ``outdir/sparse/<file>`` and ``outdir/dense/<file>`` for every format (file
    names: model.keras, saved_model/, model.tflite, model_sparse.tflite). The dense model
    is :func:`dense_counterpart`: same architecture, every masked weight random and dense.

    Args:
      model: a Keras 3 model, normally sparse (a plain model gives equal columns).
      outdir: directory to write into (created if needed).
      formats: formats to write, a subset of :data:`FORMATS`.
      seed: seed of the dense counterpart's random weights.

    Returns:
      A JSON-serialisable dict::

        {"formats": [...],
         "sparse": {"params", "nonzeros", "sparsity",
                    "files": {format: {"path", "bytes", "gzip_bytes"}}},
         "dense": {... the same for the dense counterpart ...},
         "ratios": {format: {"bytes": sparse/dense, "gzip_bytes": sparse/dense}}}

      ``format_export_report(report)`` renders it as a text table.

    Raises:
      ValueError: if ``formats`` is empty or names an unknown format.
    """
    if isinstance(formats, str):
        formats = [formats]
    formats = list(formats)
    if not formats:
        raise ValueError(f"`formats` must name at least one of {list(FORMATS)}, got [].")
    for f in formats:
        if not isinstance(f, str) or f not in FORMATS:
            raise ValueError(
                f"`formats` entries must be in {list(FORMATS)}, got {f!r} in {formats!r}."
            )
    plain = _plain(model)
    dense = dense_counterpart(model, seed=seed)
    report = {"formats": formats, "ratios": {}}
    for name, source in (("sparse", plain), ("dense", dense)):
        entry = dict(_counts(source))
        entry["files"] = {}
        for fmt in formats:
            path = export(source, os.path.join(outdir, name, _FILE_NAMES[fmt]), fmt)
            entry["files"][fmt] = {
                "path": path,
                "bytes": file_size(path),
                "gzip_bytes": gzip_size(path),
            }
        report[name] = entry
    for fmt in formats:
        s, d = report["sparse"]["files"][fmt], report["dense"]["files"][fmt]
        report["ratios"][fmt] = {
            "bytes": s["bytes"] / d["bytes"],
            "gzip_bytes": s["gzip_bytes"] / d["gzip_bytes"],
        }
    return report


def format_export_report(report: Dict[str, object]) -> str:
    """Renders an :func:`export_report` dict as a text table."""
    s, d = report["sparse"], report["dense"]
    lines = [
        f"parameters {s['params']:,}; non-zeros: sparse {s['nonzeros']:,} "
        f"(sparsity {s['sparsity']:.4f}), dense {d['nonzeros']:,}",
    ]
    head = (f"{'format':<15} {'sparse bytes':>13} {'dense bytes':>13} {'ratio':>7} "
            f"{'sparse gzip':>13} {'dense gzip':>13} {'ratio':>7}")
    lines += [head, "-" * len(head)]
    for fmt in report["formats"]:
        sf, df, r = s["files"][fmt], d["files"][fmt], report["ratios"][fmt]
        lines.append(
            f"{fmt:<15} {sf['bytes']:>13,} {df['bytes']:>13,} {r['bytes']:>7.3f} "
            f"{sf['gzip_bytes']:>13,} {df['gzip_bytes']:>13,} {r['gzip_bytes']:>7.3f}"
        )
    return "\n".join(lines)
