"""Atomic file output: write to a temporary name next to the target, then rename.

Used by every writer of results, configs, masks and exports, so an interrupted process
never leaves a half-written file or directory where a reader would pick it up.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yields a temporary path next to ``path``; moves it to ``path`` when the block succeeds.

    The caller writes a file or a directory at the yielded path. On success it replaces
    ``path`` (an existing file or directory there is replaced as a whole); if the block
    raises, the temporary output is removed and ``path`` is untouched.

    Args:
      path: the destination file or directory.

    Yields:
      The temporary path to write to (same directory and base name suffix as ``path``, so
      writers that check extensions accept it).
    """
    path = os.path.abspath(os.fspath(path))
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


def write_json(path: str, data) -> str:
    """Writes ``data`` as indented JSON (numpy values converted), atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=json_default)
            f.write("\n")
    return path
