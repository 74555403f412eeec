"""One writer per directory: an exclusive lock on a logdir, IMP run or output directory.

``with locking.exclusive(directory):`` holds an ``flock`` on ``directory/.rigl_tf.lock``
for the block. The lock file names its holder (pid, host, command); a second process
asking for the same directory fails at once with :class:`DirectoryLockedError`, one
sentence naming the holder, and changes nothing in the directory.

How: the lock file is opened (created if needed) and locked with
``fcntl.flock(LOCK_EX | LOCK_NB)``; after locking, the file at the path must still be
the one locked (same inode), otherwise a releasing holder removed it in between and the
lock is taken again. The holder removes the file (while still holding the lock) when it
releases, and removes ``directory`` too if it created it and left it empty, so a run
that fails before writing anything leaves nothing behind. The kernel drops the lock
when the holder dies (also on SIGKILL); a stale lock file left by a killed process is
simply taken over.

Locks are re-entrant within one process (the lottery and the trainer may both claim a
directory of the same run).

Limits: ``flock`` is local to one machine (and to NFS clients whose kernel maps it to
NFS locks). Paths with a URL scheme (``gs://``, ``s3://``, ``hdfs://``) are not locked:
a warning is logged once per directory and the block runs unlocked, so two writers on a
remote logdir are not detected.
"""

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Dict, Iterator, Optional

LOCK_NAME = ".rigl_tf.lock"

_held: Dict[str, list] = {}  # real path -> [file object, count]
_guard = threading.Lock()
_warned = set()


class DirectoryLockedError(RuntimeError):
    """Another process holds the directory's lock."""


def is_remote(path: str) -> bool:
    """Whether ``path`` names a remote file system (``scheme://...``)."""
    return "://" in os.fspath(path)


def _holder_text(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (f"process {info.get('pid')} on host {info.get('host')!r} "
                f"({info.get('command', '?')}, since {info.get('since', '?')})")
    except (OSError, ValueError, AttributeError):
        return "another process (its lock file names no holder yet)"


def _try_lock(lock_path: str, what: str, directory: str):
    import fcntl

    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DirectoryLockedError(
                    f"{what} {directory!r} is in use by {_holder_text(lock_path)}; wait for "
                    f"it to finish or use another directory (lock file {lock_path})."
                ) from None
            raise
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file after we opened it: retry


@contextlib.contextmanager
def exclusive(directory: str, what: str = "directory") -> Iterator[Optional[str]]:
    """Holds the exclusive lock of ``directory`` (created if missing) for the block.

    Args:
      directory: the directory to own.
      what: how messages name it, e.g. '`--logdir`'.

    Yields:
      The lock file's path (None for an unlocked remote path).

    Raises:
      DirectoryLockedError: another process holds the lock (nothing was changed).
    """
    directory = os.fspath(directory)
    if is_remote(directory):
        if directory not in _warned:
            _warned.add(directory)
            logging.getLogger("rigl_tf").warning(
                "%s %r is on a remote file system: it is not locked, so a second writer "
                "would not be detected.", what, directory)
        yield None
        return
    real = os.path.realpath(directory)
    with _guard:
        entry = _held.get(real)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield os.path.join(real, LOCK_NAME)
        finally:
            with _guard:
                entry[1] -= 1
        return
    created = not os.path.isdir(real)
    os.makedirs(real, exist_ok=True)
    lock_path = os.path.join(real, LOCK_NAME)
    try:
        fd = _try_lock(lock_path, what, directory)
    except BaseException:
        if created:
            _remove_empty(real)
        raise
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": os.path.basename(sys.argv[0] or "python"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    with _guard:
        _held[real] = [fd, 1]
    try:
        yield lock_path
    finally:
        with _guard:
            del _held[real]
        try:
            os.unlink(lock_path)  # still locked: nobody else can have it now
        except OSError:
            pass
        os.close(fd)
        if created:
            _remove_empty(real)


def _remove_empty(directory: str):
    try:
        os.rmdir(directory)
    except OSError:
        pass  # not empty (the run wrote something) or already gone
