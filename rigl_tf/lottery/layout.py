"""Run-directory layout of IMP runs: every file name is produced here.

::

    <root>/<run name>/                     e.g. imp_mlp_digits_p0.2_rewind-step100_global
      config.json                          the run's hyperparameters (its identity)
      summary.json                         per-level table (rewritten after each level)
      level_00/ level_01/ ...
        mask.npz                           'layer/attr' -> 0/1 mask
        start.weights.npz                  weights the level trained from (rewound, masked)
        solution.weights.npz               weights at the end of the level
        rewind.weights.npz                 level 0 only: the rewind point theta_K (dense)
        metrics.json                       written last: its presence marks the level done
        branch_<name>_s<seed>/             branches from this level's mask (same files)
      omp_s<sparsity>/                     one-shot magnitude pruning runs (same files)

Weight files are ``.npz`` archives of every model variable (masks included) keyed by the
variable's Keras path (e.g. ``'sparse_dense/dense/kernel'``); read them with
``numpy.load`` or :func:`load_weights`. Every file is written to a temporary name in the
same directory and renamed into place, so a killed process leaves either the old file or
the new one, never a partial one.
"""

import hashlib
import json
import os
from typing import Dict, Mapping, Optional

import numpy as np

from rigl_tf import files
from rigl_tf.files import atomic_output

CONFIG = "config.json"
SUMMARY = "summary.json"
MASK = "mask.npz"
START = "start.weights.npz"
SOLUTION = "solution.weights.npz"
REWIND = "rewind.weights.npz"
METRICS = "metrics.json"
_MAX_NAME = 150


class RunDirConflictError(ValueError):
    """A run directory holds a run with a different configuration."""


def level_dir(run_dir: str, level: int) -> str:
    """``<run_dir>/level_XX``."""
    return os.path.join(run_dir, f"level_{int(level):02d}")


def branch_dir(run_dir: str, level: int, name: str, seed: int) -> str:
    """``<run_dir>/level_XX/branch_<name>_s<seed>``."""
    return os.path.join(level_dir(run_dir, level), f"branch_{name}_s{int(seed)}")


def oneshot_dir(run_dir: str, sparsity: float) -> str:
    """``<run_dir>/omp_s<sparsity>`` (one-shot magnitude pruning to ``sparsity``)."""
    return os.path.join(run_dir, f"omp_s{float(sparsity):g}")


def is_finished(directory: str) -> bool:
    """A level / branch directory is finished when its ``metrics.json`` exists."""
    return os.path.exists(os.path.join(directory, METRICS))


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_format_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(f"{k}{_format_value(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("/", "-").replace(os.sep, "-").replace(" ", "")


def run_name(config: Mapping, defaults: Mapping, head=(), skip=(), prefix: str = "imp") -> str:
    """A directory name made of the hyperparameters that differ from the defaults.

    The name is ``<prefix>_<head parts>_<key><value>...`` for every key of ``config`` not
    in ``skip`` whose value differs from ``defaults``, in ``config`` order (a non-empty
    mapping value contributes its own ``<key><value>`` items). Over 150
    characters it is cut and an 8-character hash of the whole config is appended, so
    distinct configurations keep distinct names.

    Args:
      config: hyperparameters (JSON-like values).
      defaults: their default values.
      head: strings placed right after the prefix (e.g. the network and dataset).
      skip: keys already represented in ``head``.
      prefix: the first word.

    Returns:
      The name (no path separators).
    """
    parts = [prefix] + [_format_value(h) for h in head]
    for key, value in config.items():
        if key in skip or (key in defaults and _same(defaults[key], value)):
            continue
        if isinstance(value, Mapping) and value:  # e.g. model kwargs: their own names
            parts.extend(f"{k}{_format_value(v)}" for k, v in sorted(value.items()))
        else:
            parts.append(f"{key}{_format_value(value)}")
    name = "_".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        name = name[: _MAX_NAME - 9] + "_" + digest
    return name


def _same(a, b) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def claim(run_dir: str, config: Mapping):
    """Creates ``run_dir`` with ``config.json``, or checks that it holds the same config.

    Raises:
      RunDirConflictError: if ``run_dir`` holds a different configuration; the message
        lists the differing hyperparameters.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONFIG)
    config = json.loads(json.dumps(config))
    if not os.path.exists(path):
        if any(name.startswith("level_") for name in os.listdir(run_dir)):
            raise RunDirConflictError(
                f"Run directory {run_dir!r} holds IMP levels but no {CONFIG}; it does not "
                f"belong to this run. Choose another `run_dir` or delete it."
            )
        write_json(path, config)
        return
    stored = read_json(path)
    if stored != config:
        keys = sorted(set(stored) | set(config))
        diffs = [f"{k}: run dir has {stored.get(k, '<missing>')!r}, this run has "
                 f"{config.get(k, '<missing>')!r}"
                 for k in keys if stored.get(k, "<missing>") != config.get(k, "<missing>")]
        raise RunDirConflictError(
            f"Run directory {run_dir!r} belongs to a different configuration ("
            + "; ".join(diffs) + "). Use another `run_dir` (or the default, named by the "
            "hyperparameters), or delete the directory to start over."
        )


# --------------------------------------------------------------------------- atomic I/O


def _atomic(path: str, write, suffix: str = ""):
    """Calls ``write(tmp)`` on a temporary path and renames it to ``path`` on success."""
    del suffix  # the temporary file keeps ``path``'s name (and so its extension)
    with atomic_output(path) as tmp:
        write(tmp)


def write_json(path: str, data) -> None:
    """Writes ``data`` as indented JSON, atomically."""
    files.write_json(path, data)


class CorruptRunFileError(ValueError):
    """A file of an IMP run directory cannot be read (truncated, not JSON/NPZ)."""


def read_json(path: str):
    """Reads a JSON file of a run directory.

    Raises:
      CorruptRunFileError: naming ``path`` if it is not valid JSON.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptRunFileError(
            f"{path!r} is damaged (not valid JSON: {e}); restore it or delete the run "
            f"directory's affected part to recompute it.") from None


def write_arrays(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes a ``.npz`` archive of named arrays atomically."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})

    _atomic(path, write, ".npz")


def read_arrays(path: str) -> Dict[str, np.ndarray]:
    """Reads a ``.npz`` archive into a dict (in stored order)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptRunFileError(
            f"{path!r} is damaged (not a readable .npz archive: {type(e).__name__}: {e}); "
            f"restore it or delete the run directory's affected part to recompute it."
        ) from None


def save_weights(model, path: str) -> None:
    """Saves every variable of ``model`` keyed by its Keras path, atomically."""
    write_arrays(path, {v.path: v.numpy() for v in model.weights})


def load_weights(model, path: str, skip: Optional[set] = None) -> None:
    """Assigns the variables of ``model`` from a file written by :func:`save_weights`.

    Args:
      model: the model (same architecture and layer names as when saved).
      path: the ``.npz`` file.
      skip: variable paths not to assign (e.g. the mask variables).

    Raises:
      ValueError: if a variable of the model is missing from the file or has another
        shape.
    """
    stored = read_arrays(path)
    skip = skip or set()
    for v in model.weights:
        if v.path in skip:
            continue
        if v.path not in stored:
            raise ValueError(
                f"Weights file {path!r} has no variable {v.path!r}; it was written by a "
                f"different architecture (it has {sorted(stored)[:8]}...)."
            )
        value = stored[v.path]
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(
                f"Weights file {path!r}: {v.path!r} has shape {value.shape}, the model "
                f"expects {tuple(v.shape)}."
            )
        v.assign(value)
