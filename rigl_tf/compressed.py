"""Compact storage of a sparse model's weights and masks in one ``.npz`` file.

Each masked weight is stored as its active values (the entries where the mask is 1, in
C order; an active weight may itself be zero) plus the mask's positions, encoded as

* ``'bitmask'``: ``np.packbits`` of the flattened mask: ``ceil(size / 8)`` bytes, or
* ``'indices'``: the flat positions of the ones as uint16 (weights of at most 65,536
  entries), int32 (< 2**31 entries) or int64: ``active * itemsize`` bytes.

For float32 at density ``d`` that is ``1/32 + d`` (bitmask) or ``d * (1 + 2/4)`` /
``d * (1 + 4/4)`` (uint16 / int32 indices) of the dense size. ``'auto'`` picks the smaller
encoding per weight. Every other weight of the model (biases, normalisation statistics,
layers kept dense) is stored as a plain array.

A JSON manifest inside the file (a uint8 array named ``manifest``) records the format
version, encoding, keys, shapes, dtypes and active counts; the file is read with
``allow_pickle=False`` and validated completely before any variable changes.

Weights are keyed like ``rigl_tf.get_masks``: ``'<layer name>/<attribute>'`` for masked
weights and the stripped model's variable path (``'dense/bias'``) for the others, so a
model built the same way in a fresh session matches by name; ``match='order'`` pairs
weights by position instead.
"""

import json
import math
import os
import zipfile
import zlib
from typing import Dict, List, Tuple

import numpy as np

from rigl_tf.files import atomic_output, check_replaceable
from rigl_tf.keras import model_ops

FORMAT_NAME = "rigl_tf.compressed"
FORMAT_VERSION = 1
ENCODINGS = ("bitmask", "indices", "auto")
MATCHES = ("name", "order")


def index_dtype(size: int) -> np.dtype:
    """The smallest index dtype for flat positions of a weight with ``size`` entries."""
    if size <= 2**16:
        return np.dtype(np.uint16)
    if size <= 2**31:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def encoded_bytes(size: int, active: int, itemsize: int) -> Dict[str, int]:
    """Payload bytes of one masked weight in each encoding (values included).

    Args:
      size: number of entries of the weight.
      active: number of ones of its mask.
      itemsize: bytes per value (4 for float32).

    Returns:
      ``{"dense": size * itemsize, "bitmask": ..., "indices": ...}``.
    """
    values = active * itemsize
    return {
        "dense": size * itemsize,
        "bitmask": math.ceil(size / 8) + values,
        "indices": active * index_dtype(size).itemsize + values,
    }


def _check_choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")


def _unmasked_weights(model, masked) -> List[Tuple[str, object]]:
    """(key, variable) for every model weight that is neither masked nor a mask."""
    skip = {id(w) for _, w, _ in masked} | {id(m) for _, _, m in masked}
    wrapped = {(w.name, w.layer.name) for w in model_ops.wrappers(model)}
    out, seen = [], set()
    for variable in model.weights:
        if id(variable) in skip:
            continue
        # 'sparse_dense/dense/bias' -> 'dense/bias': the stripped model's path.
        parts = variable.path.split("/")
        key = "/".join(
            p for i, p in enumerate(parts)
            if not (i + 1 < len(parts) and (p, parts[i + 1]) in wrapped)
        )
        if key in seen:
            raise ValueError(
                f"`model` has two weights with the path {key!r}; give its layers unique names."
            )
        seen.add(key)
        out.append((key, variable))
    return out


def save_compressed(model, path: str, encoding: str = "bitmask") -> str:
    """Writes the weights and masks of a sparse model to one compact ``.npz`` file.

    Args:
      model: a Keras 3 model with SparseWrappers (see ``rigl_tf.sparsify``).
      path: destination file (written as given; '.npz' is conventional). Written
        atomically; an existing file is replaced, an existing non-empty directory is
        refused (nothing in it is removed).
      encoding: 'bitmask', 'indices' or 'auto' (the smaller one per weight).

    Returns:
      The absolute path written.

    Raises:
      ValueError: for an unknown ``encoding`` or a model without SparseWrappers.
      FileExistsError: ``path`` is a directory holding files.
    """
    _check_choice("encoding", encoding, ENCODINGS)
    check_replaceable(path)
    masked = model_ops._require_sparse(model)
    arrays = {}
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "encoding": encoding,
        "masked": [],
        "unmasked": [],
    }
    for i, (key, weight, mask) in enumerate(masked):
        w = np.asarray(weight.numpy())
        on = np.asarray(mask.numpy()).reshape(-1) != 0
        sizes = encoded_bytes(w.size, int(on.sum()), w.dtype.itemsize)
        enc = encoding
        if enc == "auto":
            enc = "bitmask" if sizes["bitmask"] <= sizes["indices"] else "indices"
        arrays[f"masked_{i}_values"] = w.reshape(-1)[on]
        if enc == "bitmask":
            arrays[f"masked_{i}_bitmask"] = np.packbits(on)
        else:
            arrays[f"masked_{i}_indices"] = np.flatnonzero(on).astype(index_dtype(w.size))
        manifest["masked"].append({
            "key": key,
            "shape": list(w.shape),
            "dtype": w.dtype.name,
            "active": int(on.sum()),
            "encoding": enc,
        })
    for j, (key, variable) in enumerate(_unmasked_weights(model, masked)):
        value = np.asarray(variable.numpy())
        arrays[f"unmasked_{j}"] = value
        manifest["unmasked"].append(
            {"key": key, "shape": list(value.shape), "dtype": value.dtype.name}
        )
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
    path = os.path.abspath(os.fspath(path))
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


class CorruptFileError(ValueError):
    """A file is not a valid rigl_tf compressed weights file."""


def _read(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Reads and structurally validates a file; returns (manifest, arrays)."""

    def corrupt(why):
        return CorruptFileError(
            f"`path` {path!r} is not a valid {FORMAT_NAME} file (written by "
            f"rigl_tf.compressed.save_compressed): {why}."
        )

    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise corrupt("it holds a single array, not an .npz archive")
        with data:
            arrays = {name: data[name] for name in data.files}
    except (CorruptFileError, FileNotFoundError):
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise corrupt(f"{type(e).__name__}: {e}") from e
    if "manifest" not in arrays:
        raise corrupt("it has no manifest")
    raw = arrays.pop("manifest")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise corrupt("the manifest is not a uint8 vector")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise corrupt(f"unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise corrupt("the manifest does not name the format")
    if manifest.get("version") != FORMAT_VERSION:
        raise CorruptFileError(
            f"`path` {path!r} has {FORMAT_NAME} format version {manifest.get('version')!r}; "
            f"this rigl_tf reads version {FORMAT_VERSION} only."
        )
    try:
        for i, entry in enumerate(manifest["masked"]):
            _check_masked_entry(i, entry, arrays)
        for j, entry in enumerate(manifest["unmasked"]):
            value = arrays[f"unmasked_{j}"]
            if list(value.shape) != list(entry["shape"]) or value.dtype.name != entry["dtype"]:
                raise ValueError(f"array of {entry['key']!r} does not match the manifest")
    except (KeyError, TypeError, ValueError) as e:
        raise corrupt(f"{type(e).__name__}: {e}") from e
    return manifest, arrays


def _check_masked_entry(i, entry, arrays):
    key, size = entry["key"], int(np.prod(entry["shape"], dtype=np.int64))
    values = arrays[f"masked_{i}_values"]
    if values.dtype.name != entry["dtype"] or values.shape != (entry["active"],):
        raise ValueError(f"values of {key!r} do not match the manifest")
    if entry["encoding"] == "bitmask":
        bits = arrays[f"masked_{i}_bitmask"]
        if bits.dtype != np.uint8 or bits.shape != (math.ceil(size / 8),):
            raise ValueError(f"bitmask of {key!r} has the wrong length or dtype")
        ones = np.unpackbits(bits)
        if ones[size:].any() or int(ones[:size].sum()) != entry["active"]:
            raise ValueError(f"bitmask of {key!r} does not have {entry['active']} ones")
    elif entry["encoding"] == "indices":
        idx = arrays[f"masked_{i}_indices"].astype(np.int64)
        if idx.shape != (entry["active"],) or (
            idx.size and (idx[0] < 0 or idx[-1] >= size or np.any(np.diff(idx) <= 0))
        ):
            raise ValueError(f"indices of {key!r} are not increasing positions below {size}")
    else:
        raise ValueError(f"unknown encoding {entry['encoding']!r} for {key!r}")


def _decode_mask(i, entry, arrays) -> np.ndarray:
    size = int(np.prod(entry["shape"], dtype=np.int64))
    if entry["encoding"] == "bitmask":
        on = np.unpackbits(arrays[f"masked_{i}_bitmask"])[:size].astype(bool)
    else:
        on = np.zeros(size, dtype=bool)
        on[arrays[f"masked_{i}_indices"].astype(np.int64)] = True
    return on


def _pair(kind, stored, current, match, path):
    """Pairs stored entries with the model's (key, ...) tuples by name or position."""
    stored_keys = [e["key"] for e in stored]
    current_keys = [c[0] for c in current]
    if match == "order":
        if len(stored_keys) != len(current_keys):
            raise ValueError(
                f"`path` {path!r} holds {len(stored_keys)} {kind} weights, the model has "
                f"{len(current_keys)}; the architectures differ."
            )
        return list(zip(stored, current))
    by_key = dict(zip(current_keys, current))
    missing = [k for k in stored_keys if k not in by_key]
    extra = [k for k in current_keys if k not in set(stored_keys)]
    if missing or extra:
        what = (f"the model has no {kind} weight {missing[0]!r}" if missing
                else f"the file has no {kind} weight {extra[0]!r}")
        raise ValueError(
            f"`path` {path!r} does not match the model: {what} (file: {stored_keys}; "
            f"model: {current_keys}). Build the same architecture with the same layer "
            f"names (e.g. in a fresh session), or pass match='order'."
        )
    return [(e, by_key[e["key"]]) for e in stored]


def load_compressed(model, path: str, match: str = "name") -> Dict[str, int]:
    """Restores weights and masks saved by :func:`save_compressed` into a sparse model.

    The file is validated completely (structure, manifest, keys, shapes and dtypes against
    the model) before any variable is assigned, so a failed load changes nothing. The file
    is read with ``allow_pickle=False``.

    Args:
      model: a Keras 3 model with SparseWrappers and the architecture of the saved one.
      path: a file written by :func:`save_compressed`.
      match: 'name' pairs weights by key (layer names must match); 'order' pairs them by
        position (same architecture, any layer names).

    Returns:
      The number of active weights per masked key of ``model``.

    Raises:
      CorruptFileError (a ValueError): for a file that is not a valid compressed weights
        file of a supported version.
      ValueError: for an unknown ``match``, or a model whose weights do not match the file
        (the message names the first mismatching key).
      FileNotFoundError: if ``path`` does not exist.
    """
    _check_choice("match", match, MATCHES)
    masked = model_ops._require_sparse(model)
    manifest, arrays = _read(os.fspath(path))
    assignments = []
    pairs = _pair("masked", manifest["masked"], masked, match, path)
    for i, (entry, (key, weight, mask)) in enumerate(pairs):
        _check_shape(entry, key, weight, path)
        on = _decode_mask(i, entry, arrays)
        value = np.zeros(on.size, dtype=weight.dtype)
        value[on] = arrays[f"masked_{i}_values"]
        shape = tuple(weight.shape)
        assignments.append((weight, value.reshape(shape)))
        assignments.append((mask, on.reshape(shape).astype(mask.dtype)))
    unmasked = _unmasked_weights(model, masked)
    for j, (entry, (key, variable)) in enumerate(
        _pair("unmasked", manifest["unmasked"], unmasked, match, path)
    ):
        _check_shape(entry, key, variable, path)
        assignments.append((variable, arrays[f"unmasked_{j}"].astype(variable.dtype)))
    for variable, value in assignments:
        variable.assign(value)
    return {key: int(np.sum(mask.numpy())) for key, _, mask in masked}


def _check_shape(entry, key, variable, path):
    if list(variable.shape) != list(entry["shape"]):
        raise ValueError(
            f"`path` {path!r} stores {entry['key']!r} with shape {tuple(entry['shape'])}, "
            f"but the model's {key!r} has shape {tuple(variable.shape)}."
        )


def compressed_size_report(model) -> Dict[str, object]:
    """Payload bytes of a sparse model's weights: dense vs bitmask vs indices encoding.

    Masks are counted only as their encoding (a dense model needs none); unmasked weights
    cost their dense size in every encoding. File overhead (zip headers, manifest) is a
    few hundred bytes per weight and is not included.

    Args:
      model: a Keras 3 model with SparseWrappers.

    Returns:
      A JSON-serialisable dict::

        {"weights": [{"key", "shape", "size", "active", "dtype", "dense_bytes",
                      "bitmask_bytes", "indices_bytes", "index_dtype"}, ...],
         "masked": {"dense_bytes", "bitmask_bytes", "indices_bytes", "bitmask_ratio",
                    "indices_ratio"},
         "unmasked_bytes": int,
         "total": {... as "masked", over all weights ...}}

      Ratios are encoded / dense bytes.

    Raises:
      ValueError: for a model without SparseWrappers.
    """
    masked = model_ops._require_sparse(model)
    rows = []
    for key, weight, mask in masked:
        size = int(np.prod(weight.shape))
        active = int(np.count_nonzero(mask.numpy()))
        itemsize = np.dtype(weight.dtype).itemsize
        sizes = encoded_bytes(size, active, itemsize)
        rows.append({
            "key": key,
            "shape": list(weight.shape),
            "size": size,
            "active": active,
            "dtype": np.dtype(weight.dtype).name,
            "dense_bytes": sizes["dense"],
            "bitmask_bytes": sizes["bitmask"],
            "indices_bytes": sizes["indices"],
            "index_dtype": index_dtype(size).name,
        })
    unmasked_bytes = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for _, v in _unmasked_weights(model, masked)
    )

    def totals(extra):
        out = {
            name: sum(r[name] for r in rows) + extra
            for name in ("dense_bytes", "bitmask_bytes", "indices_bytes")
        }
        dense = out["dense_bytes"]
        out["bitmask_ratio"] = out["bitmask_bytes"] / dense if dense else 1.0
        out["indices_ratio"] = out["indices_bytes"] / dense if dense else 1.0
        return out

    return {
        "weights": rows,
        "masked": totals(0),
        "unmasked_bytes": unmasked_bytes,
        "total": totals(unmasked_bytes),
    }
