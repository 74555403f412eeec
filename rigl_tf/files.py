"""Atomic file output: write to a temporary name next to the target, then rename.

Used by every writer of results, configs, masks and exports, so an interrupted process
never leaves a half-written file or directory where a reader would pick it up.

Paths with a scheme (``gs://bucket/run``, ``ram://...``, any file system TensorFlow's
``tf.io.gfile`` knows) work too: the writer writes a local temporary file or directory,
which is then copied next to the target under a temporary name and renamed over it with
``tf.io.gfile`` (per file: object stores have no atomic directory rename). Local paths use
the operating system directly (the same calls ``tf.io.gfile`` makes for them), so this
module imports TensorFlow only for remote paths.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Optional


def check_replaceable(path: str, owned: Optional[Callable[[str], bool]] = None,
                      what: str = "`path`") -> None:
    """Refuses to replace a directory that holds files this writer did not write.

    A missing path, a file, or an empty directory may be replaced; a non-empty directory
    only if ``owned(path)`` says it is output of the same kind (e.g. a SavedModel).

    Raises:
      FileExistsError: naming the directory and some of its files.
    """
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return
    entries = sorted(os.listdir(path))
    if not entries or (owned is not None and owned(path)):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise FileExistsError(
        f"{what}={path!r} is an existing directory holding other files ({shown}); it is "
        f"never replaced: give a new file or directory name, e.g. "
        f"{os.path.join(path, 'output')!r}.")


@contextlib.contextmanager
def atomic_output(path: str, owned: Optional[Callable[[str], bool]] = None
                  ) -> Iterator[str]:
    """Yields a temporary path next to ``path``; moves it to ``path`` when the block succeeds.

    The caller writes a file or a directory at the yielded path. On success it replaces
    ``path``: an existing file, an empty directory, or a directory that ``owned`` accepts
    as earlier output of the same writer. A directory holding anything else is refused
    before the block runs (see :func:`check_replaceable`). If the block raises, the
    temporary output is removed and ``path`` is untouched.

    Args:
      path: the destination file or directory.
      owned: ``owned(directory) -> bool``: whether an existing non-empty directory at
        ``path`` was written by this writer and may be replaced as a whole.

    Yields:
      The temporary path to write to (same directory and base name suffix as ``path``, so
      writers that check extensions accept it).

    Raises:
      FileExistsError: ``path`` is a directory holding other files.
    """
    if is_remote(path):
        with _remote_output(os.fspath(path)) as target:
            yield target
        return
    path = os.path.abspath(os.fspath(path))
    check_replaceable(path, owned)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    target = os.path.join(staging, os.path.basename(path))
    try:
        yield target
        if not os.path.exists(target):
            raise RuntimeError(f"Nothing was written for {path!r}.")
        old = None
        if os.path.isdir(path) and not os.path.islink(path):
            old = os.path.join(staging, ".old")
            os.rename(path, old)
        try:
            os.replace(target, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def json_default(obj):
    """``json.dump`` fallback for numpy scalars and arrays."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def finite_json(data):
    """``(clean, paths)``: ``data`` with every NaN / infinity (Python or numpy) replaced by
    None, and the '/'-joined paths of the replaced values (valid JSON has no NaN)."""
    import math

    import numpy as np

    found = []

    def clean(obj, where):
        if isinstance(obj, dict):
            return {k: clean(v, f"{where}/{k}" if where else str(k)) for k, v in obj.items()}
        if isinstance(obj, np.ndarray):
            obj = obj.tolist()
        if isinstance(obj, (list, tuple)):
            return [clean(v, f"{where}/{i}" if where else str(i)) for i, v in enumerate(obj)]
        if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
            found.append(where)
            return None
        return obj

    return clean(data, ""), found


def write_json(path: str, data) -> str:
    """Writes ``data`` as indented JSON (numpy values converted), atomically.

    Non-finite numbers are written as ``null`` (never ``NaN``/``Infinity``, which most
    JSON parsers reject); a dict gets a ``"nonfinite_values"`` entry listing their paths.
    """
    data, found = finite_json(data)
    if found and isinstance(data, dict):
        data["nonfinite_values"] = found
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=json_default, allow_nan=False)
            f.write("\n")
    return path


def is_remote(path) -> bool:
    """Whether ``path`` names a non-local file system (``gs://``, ``ram://``, ...)."""
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _upload(local: str, dest: str):
    """Copies the local file ``local`` to ``dest`` via a temporary name and a rename."""
    gfile = _gfile()
    tmp = f"{dest}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        gfile.copy(local, tmp, overwrite=True)
        gfile.rename(tmp, dest, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):  # our own temporary file only
            gfile.remove(tmp)
        raise


@contextlib.contextmanager
def _remote_output(path: str) -> Iterator[str]:
    """`atomic_output` for a remote ``path``: a local staging path, uploaded on success."""
    gfile = _gfile()
    path = path.rstrip("/")
    staging = tempfile.mkdtemp(prefix="rigl_tf-upload-")
    target = os.path.join(staging, path.rsplit("/", 1)[-1])
    try:
        yield target
        if not os.path.exists(target):
            raise RuntimeError(f"Nothing was written for {path!r}.")
        gfile.makedirs(path.rsplit("/", 1)[0])
        if os.path.isdir(target):
            if gfile.isdir(path):
                gfile.rmtree(path)  # replaced as a whole, like a local directory
            for root, _, names in os.walk(target):
                rel = os.path.relpath(root, target)
                dest_dir = path if rel == "." else f"{path}/{rel.replace(os.sep, '/')}"
                gfile.makedirs(dest_dir)
                for name in names:
                    _upload(os.path.join(root, name), f"{dest_dir}/{name}")
        else:
            _upload(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` (local or remote) atomically; returns ``path``."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def write_text(path: str, text: str) -> str:
    """Writes ``text`` (UTF-8) to ``path`` (local or remote) atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def read_text(path: str) -> str:
    """Reads a UTF-8 text file, local or remote."""
    if is_remote(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read().decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()
