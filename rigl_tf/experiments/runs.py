"""Reading rigl-train logdirs for the command-line analysis tools (``tools/*.py``).

One place for what every tool needs:

* :func:`load_run`: a logdir -> :class:`Run` (the experiment spec re-read from the logdir's
  ``operative_config.gin``, the dataset, a lazily built model, the checkpoint steps, and
  ``restore(step)``);
* :func:`parse_checkpoint`: ``LOGDIR``, ``LOGDIR:STEP``, ``LOGDIR/ckpt-STEP`` or
  ``LOGDIR/mask_updates/{before,after}/ckpt-STEP`` -> ``(run, prefix, label)``;
* :func:`read_scalars`: the scalar summaries of a logdir's ``summaries/`` event files
  (core TensorFlow only; TensorBoard is not needed);
* atomic output (:func:`save_npy`, :func:`save_json`, :func:`save_plot`) and checked input
  (:func:`load_npy`, :func:`load_json`, :func:`load_npz`) with :class:`ToolError` messages naming the
  parameter, and :func:`tool_main`, which turns those errors into one line on stderr and
  exit code 2.

It lives in ``rigl_tf.experiments`` because it reads rigl-train's file layout; the
analysis library itself stays free of gin and of the experiment code.
"""

import glob
import json
import os
import re
import sys

import numpy as np

OPERATIVE_CONFIG = "operative_config.gin"
MASK_UPDATE_KINDS = ("before", "after")
_SEED_RE = re.compile(r"^# rigl-train seed = (\d+)", re.MULTILINE)
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.index$")


class ToolError(ValueError):
    """Bad input of an analysis tool; the message names the parameter and the value."""


# --------------------------------------------------------------------------- runs


def checkpoint_steps(directory):
    """Sorted steps of the ``ckpt-<step>`` checkpoints in ``directory`` (no recursion)."""
    if not os.path.isdir(directory):
        return []
    steps = []
    for name in os.listdir(directory):
        m = _CKPT_RE.match(name)
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


class Run:
    """One rigl-train logdir: its spec, dataset, model and checkpoints.

    Attributes:
      logdir: the run directory.
      spec: the `ExperimentSpec` re-read from ``operative_config.gin``.
      seed: the run's seed (from the config header; 0 if absent).
      info: the dataset info.
      steps: sorted steps of the regular checkpoints ``ckpt-<step>``.
    """

    def __init__(self, logdir, spec, seed, info):
        self.logdir = logdir
        self.spec = spec
        self.seed = seed
        self.info = info
        self.steps = checkpoint_steps(logdir)
        self._model = None
        self._checkpoint = None

    @property
    def model(self):
        """The run's model (built on first use; weights are whatever was restored last)."""
        if self._model is None:
            import keras

            from rigl_tf.experiments import train

            keras.backend.clear_session()  # layer names as in the run (dense, dense_1, ...)
            self._model = train.build_for_restore(self.spec, self.info, self.seed)
            self._checkpoint = train.make_checkpoint(self._model)
        return self._model

    def mask_update_steps(self):
        """Steps with both a ``before`` and an ``after`` mask-update checkpoint."""
        before, after = (
            set(checkpoint_steps(os.path.join(self.logdir, "mask_updates", k)))
            for k in MASK_UPDATE_KINDS
        )
        return sorted(before & after)

    def prefix(self, step, kind=None, name="--checkpoint"):
        """Checkpoint prefix of ``step`` (``kind``: None, 'before' or 'after').

        Raises:
          ToolError: if the checkpoint does not exist.
        """
        directory = (
            self.logdir if kind is None else os.path.join(self.logdir, "mask_updates", kind)
        )
        prefix = os.path.join(directory, f"ckpt-{int(step)}")
        if not os.path.exists(prefix + ".index"):
            available = checkpoint_steps(directory)
            raise ToolError(
                f"{name}: no checkpoint at step {step} in {directory!r}; available steps: "
                f"{_short(available)}."
            )
        return prefix

    def restore(self, prefix, name="--checkpoint"):
        """Restores model weights and masks from a checkpoint prefix of this run.

        Raises:
          ToolError: if the checkpoint does not match the run's model.
        """
        model = self.model
        try:
            status = self._checkpoint.restore(prefix)
            status.expect_partial()
            status.assert_existing_objects_matched()
        except Exception as e:  # corrupt file, other architecture
            raise ToolError(
                f"{name}: checkpoint {prefix!r} cannot be restored into the model of "
                f"{self.logdir!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        return model

    def masks(self):
        """Current masks aligned with ``model.trainable_variables`` (None for dense ones)."""
        from rigl_tf.keras.wrapper import get_mask

        out = []
        for v in self.model.trainable_variables:
            m = get_mask(v)
            out.append(None if m is None else np.asarray(m.numpy()))
        return out

    def weights(self):
        """Current trainable weights (numpy copies, aligned with trainable variables)."""
        return [np.array(v.numpy()) for v in self.model.trainable_variables]

    def names(self):
        """A run-independent name per trainable variable.

        Masked weights get their mask key (``'dense/kernel'``, as in ``rigl_tf.get_masks``);
        other variables their path without the model's name (``'sparse_dense/dense/bias'``).
        """
        import rigl_tf

        keys = {id(v): k for k, v, _ in rigl_tf.masked_weights(self.model)}
        return [keys.get(id(v), v.path.split("/", 1)[-1]) for v in self.model.trainable_variables]

    def data(self, split="train", num_examples=0, seed=0):
        """Evaluation data of the run's dataset (no augmentation).

        Args:
          split: 'train' or 'test'.
          num_examples: > 0: a fixed random subset of that many examples (seeded by
            ``seed``) as ``(x, y)`` arrays; 0: the whole split as a batched dataset.
          seed: seed choosing the subset.

        Returns:
          ``(x, y)`` arrays or a batched ``tf.data.Dataset``.
        """
        from rigl_tf.experiments import train

        if split not in self.info.num_examples:
            raise ToolError(
                f"--split: got {split!r}; dataset {self.info.name!r} has splits "
                f"{', '.join(sorted(self.info.num_examples))}."
            )
        if num_examples < 0:
            raise ToolError(f"--num_examples: must be >= 0 (0 = whole split); got {num_examples}.")
        if num_examples == 0:
            return train.eval_dataset(self.spec, split)
        return train.fixed_batch(self.spec, split, num_examples, seed, self.info)


def _short(values, limit=12):
    values = list(values)
    if len(values) <= limit:
        return ", ".join(map(str, values)) or "none"
    return ", ".join(map(str, values[: limit // 2] + ["..."] + values[-limit // 2 :]))


_RUN_CACHE = {}


def load_run(logdir, name="--logdir"):
    """Reads a rigl-train logdir (cached per absolute path within the process).

    Args:
      logdir: the run directory (holds ``operative_config.gin``).
      name: the parameter name for error messages.

    Returns:
      A :class:`Run`.

    Raises:
      ToolError: if the directory or its operative config is missing or unreadable.
    """
    key = os.path.abspath(logdir)
    if key in _RUN_CACHE:
        return _RUN_CACHE[key]
    if not os.path.isdir(logdir):
        raise ToolError(f"{name}: {logdir!r} is not a directory; give a rigl-train logdir.")
    config_path = os.path.join(logdir, OPERATIVE_CONFIG)
    if not os.path.exists(config_path):
        raise ToolError(
            f"{name}: {logdir!r} has no {OPERATIVE_CONFIG}; give a logdir written by rigl-train."
        )
    from rigl_tf.experiments import config as config_lib
    from rigl_tf.experiments import datasets

    with open(config_path) as f:
        text = f.read()
    m = _SEED_RE.search(text)
    seed = int(m.group(1)) if m else 0
    try:
        config_lib.parse((), (), config_path)
        spec = config_lib.resolve()
        info = datasets.get_dataset_info(
            spec.data.dataset_name, spec.data.data_dir, spec.data.image_size
        )
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise ToolError(f"{name}: {config_path!r} cannot be used: {e}") from None
    run = Run(logdir, spec, seed, info)
    _RUN_CACHE[key] = run
    return run


def _find_logdir(directory):
    """The nearest directory at or above ``directory`` (3 levels) with an operative config."""
    current = os.path.abspath(directory)
    for _ in range(4):
        if os.path.exists(os.path.join(current, OPERATIVE_CONFIG)):
            return current
        current = os.path.dirname(current)
    return None


def parse_checkpoint(spec, name="--checkpoint"):
    """Resolves a checkpoint argument to ``(run, prefix, label)``.

    Accepted forms: ``LOGDIR`` (its latest checkpoint), ``LOGDIR:STEP``,
    ``LOGDIR/ckpt-STEP`` and ``LOGDIR/mask_updates/{before,after}/ckpt-STEP`` (the
    mask-update checkpoints), optionally prefixed by ``LABEL=``.

    Raises:
      ToolError: for a missing logdir or checkpoint.
    """
    label = None
    if "=" in spec and not os.path.exists(spec):
        label, spec = spec.split("=", 1)
    base, step = spec, None
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if tail.isdigit():
            base, step = head, int(tail)
    if os.path.isdir(base):
        run = load_run(base, name)
        if step is None:
            if not run.steps:
                raise ToolError(f"{name}: {spec!r} holds no ckpt-<step> checkpoint.")
            step = run.steps[-1]
        prefix = run.prefix(step, name=name)
        return run, prefix, label or f"{os.path.basename(os.path.normpath(base))}:{step}"
    if step is not None:
        raise ToolError(f"{name}: {spec!r}: {base!r} is not a directory (expected LOGDIR:STEP).")
    if not os.path.exists(base + ".index"):
        raise ToolError(
            f"{name}: {spec!r} is neither a logdir nor a checkpoint prefix (no "
            f"{os.path.basename(base)}.index); use LOGDIR, LOGDIR:STEP or LOGDIR/ckpt-STEP."
        )
    logdir = _find_logdir(os.path.dirname(base))
    if logdir is None:
        raise ToolError(f"{name}: no {OPERATIVE_CONFIG} found above checkpoint {spec!r}.")
    run = load_run(logdir, name)
    rel = os.path.relpath(base, logdir)
    return run, base, label or f"{os.path.basename(os.path.normpath(logdir))}/{rel}"


# --------------------------------------------------------------------------- summaries


def read_scalars(logdir, name="--logdir"):
    """Scalar summaries of a logdir: ``{tag: (steps, values)}`` (sorted by step).

    Reads every event file under ``logdir/summaries`` (or ``logdir`` itself if it has no
    ``summaries/``); for a repeated (tag, step) the last value wins. A damaged event file
    (e.g. truncated by a killed writer) contributes every record before the damage; the
    damage is reported on stderr.

    Raises:
      ToolError: if there are no event files.
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    if not os.path.isdir(logdir):
        raise ToolError(f"{name}: {logdir!r} is not a directory; give a rigl-train logdir.")
    root = os.path.join(logdir, "summaries")
    root = root if os.path.isdir(root) else logdir
    files = sorted(glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise ToolError(f"{name}: {logdir!r} has no event files (summaries/events.out.tfevents.*).")
    series = {}
    for path in files:
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                event = event_pb2.Event.FromString(record.numpy())
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    kind = value.WhichOneof("value")
                    if kind == "simple_value":
                        number = float(value.simple_value)
                    elif kind == "tensor":
                        array = tf.make_ndarray(value.tensor)
                        if array.size != 1 or array.dtype.kind not in "fiu":
                            continue  # images, text, histograms
                        number = float(array.reshape(()))
                    else:
                        continue
                    series.setdefault(value.tag, {})[int(event.step)] = number
        except (tf.errors.DataLossError, _decode_error()) as e:
            # A killed writer leaves a truncated last record: keep everything before it.
            print(f"warning: event file {path!r} is damaged after record {count} "
                  f"({type(e).__name__}); using the {count} intact records before it.",
                  file=sys.stderr)
    return {
        tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)]))
        for tag, v in sorted(series.items())
    }


def _decode_error():
    """Exceptions of a record that is complete but not a valid Event protocol buffer."""
    from google.protobuf.message import DecodeError

    return DecodeError


# --------------------------------------------------------------------------- files


def _atomic(path, write):
    """Calls ``write(tmp)`` on a temporary path next to ``path``; renames it on success."""
    from rigl_tf.files import atomic_output

    with atomic_output(path) as tmp:
        write(tmp)
    return path


def save_npy(path, array):
    """Writes one array with ``np.save`` (no pickle) atomically; returns ``path``."""

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)

    return _atomic(path, write)


def save_json(path, data):
    """Writes indented JSON atomically (non-finite numbers as null, see ``files.write_json``)."""
    from rigl_tf.files import write_json

    return write_json(path, data)


def save_plot(path, plot_fn, *args, **kwargs):
    """Calls ``plot_fn(*args, tmp_path, **kwargs)`` and renames the PNG into place."""
    return _atomic(path, lambda tmp: plot_fn(*args, tmp, **kwargs))


def load_npy(path, name):
    """Reads an ``.npy`` file (``allow_pickle=False``).

    Raises:
      ToolError: if the file is missing or not a valid numeric array file.
    """
    if not os.path.exists(path):
        raise ToolError(f"{name}: file {path!r} does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise ToolError(f"{name}: {path!r} is not a valid .npy file ({e}).") from None


def load_json(path, name, required=()):
    """Reads a JSON object, checking that ``required`` keys are present.

    Raises:
      ToolError: if the file is missing, not JSON, or lacks a key.
    """
    if not os.path.exists(path):
        raise ToolError(f"{name}: file {path!r} does not exist.")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ToolError(f"{name}: {path!r} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ToolError(f"{name}: {path!r} must hold a JSON object; got {type(data).__name__}.")
    missing = [k for k in required if k not in data]
    if missing:
        raise ToolError(f"{name}: {path!r} lacks the key(s) {', '.join(missing)}.")
    return data


def load_npz(path, name):
    """Reads a ``.npz`` archive of named arrays (``allow_pickle=False``) into a dict.

    Raises:
      ToolError: if the file is missing or not a valid archive.
    """
    if not os.path.exists(path):
        raise ToolError(f"{name}: file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as e:
        raise ToolError(f"{name}: {path!r} is not a valid .npz archive ({e}).") from None


def add_data_args(parser, split="train", num_examples=0):
    """Adds ``--split``, ``--num_examples`` and ``--data_seed`` to an argparse parser."""
    parser.add_argument("--split", default=split, choices=("train", "test"),
                        help=f"Dataset split to evaluate on (default {split}).")
    parser.add_argument("--num_examples", type=int, default=num_examples,
                        help="A fixed random subset of this many examples; 0 = whole split "
                        f"(default {num_examples}).")
    parser.add_argument("--data_seed", type=int, default=0,
                        help="Seed choosing the subset (default 0).")


def safe_name(label):
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(label)).strip("_") or "run"


# Arguments that name where results go or how they are printed, not what they are.
_NOT_INPUTS = ("out_dir", "out", "name", "overwrite", "debug", "digits", "logy")
_pending = []  # (paths, request) of results computed in this process, recorded on success
_claims = None  # contextlib.ExitStack holding the output-directory locks (see tool_main)


def _fingerprint_path(path):
    """(size, mtime) of a file, of a checkpoint's files, or of a directory's top files."""
    def stat(p):
        st = os.stat(p)
        return [os.path.basename(p), st.st_size, st.st_mtime_ns]

    if os.path.isfile(path):
        return [stat(path)]
    if os.path.isdir(path):
        return [stat(os.path.join(path, n)) for n in sorted(os.listdir(path))
                if not n.startswith(".") and os.path.isfile(os.path.join(path, n))]
    if os.path.exists(path + ".index"):
        return [stat(p) for p in sorted(glob.glob(glob.escape(path) + ".*"))]
    return None


def _fingerprints(value, out):
    if isinstance(value, (list, tuple)):
        for v in value:
            _fingerprints(v, out)
        return
    if not isinstance(value, str) or not value:
        return
    for token in re.split(r"[,=]", value):
        for candidate in (token, re.sub(r":-?\d+$", "", token)):
            if candidate and candidate not in out:
                fp = _fingerprint_path(candidate)
                if fp is not None:
                    out[os.path.abspath(candidate)] = fp
                    break


def request_of(args, **extra):
    """What produced a result: the tool's parameters and the state of its input files.

    Args:
      args: the parsed ``argparse`` namespace (or a dict); output-location and display
        options are left out.
      **extra: further parameters (e.g. the one run a per-run output comes from).

    Returns:
      A JSON-able dict ``{"parameters": {...}, "inputs": {path: [[file, size, mtime]]}}``.
    """
    params = dict(vars(args) if not isinstance(args, dict) else args)
    params.update(extra)
    params = {k: v for k, v in sorted(params.items()) if k not in _NOT_INPUTS}
    inputs = {}
    _fingerprints(list(params.values()), inputs)
    return json.loads(json.dumps({"parameters": params, "inputs": inputs}, default=str))


def manifest_path(paths):
    """The sidecar recording the request that produced ``paths``."""
    return f"{paths[0]}.inputs.json"


def _difference(old, new):
    diffs = []
    for section in ("parameters", "inputs"):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                if section == "parameters":
                    diffs.append(f"--{key}: {a.get(key, '<unset>')!r} -> "
                                 f"{b.get(key, '<unset>')!r}")
                else:
                    diffs.append(f"input {key} changed")
    return "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")


def claim_output(directory, name="--out_dir"):
    """Makes ``directory``, checks it is writable and locks it for this process.

    Called before any computation, so a file or read-only path fails at once.

    Raises:
      ToolError: ``directory`` is a file or not writable; DirectoryLockedError if another
        process writes there.
    """
    import contextlib
    import tempfile

    from rigl_tf import locking

    global _claims
    if locking.is_remote(directory or ""):
        return  # gs:// etc.: written through tf.io.gfile, not locked (see rigl_tf.locking)
    directory = os.path.abspath(directory or ".")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ToolError(f"{name}: {directory!r} is a file; give a directory for the outputs.")
    if _claims is None:
        _claims = contextlib.ExitStack()
    if directory in getattr(_claims, "_rigl_dirs", set()):
        return
    created = not os.path.isdir(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
            pass
    except OSError as e:
        raise ToolError(f"{name}: cannot write to {directory!r} ({e.strerror or e}).") from None
    finally:
        if created and os.path.isdir(directory):  # removed again if nothing is written
            _claims.callback(_remove_if_empty, directory)
    _claims.enter_context(locking.exclusive(directory, name))
    _claims._rigl_dirs = getattr(_claims, "_rigl_dirs", set()) | {directory}


def _remove_if_empty(directory):
    try:
        os.rmdir(directory)
    except OSError:
        pass


def existing(paths, overwrite, request=None, name="--out_dir"):
    """Whether the result ``paths`` can be reused (else the caller computes it).

    The output directory is claimed first (:func:`claim_output`). A result is reused only
    if every path exists, ``overwrite`` is off, and its sidecar (:func:`manifest_path`)
    records the same ``request`` (see :func:`request_of`); a result of another request is
    recomputed, saying what differs. The sidecar of a computed result is written when the
    tool finishes successfully.

    Args:
      paths: the output files of one result.
      overwrite: recompute regardless.
      request: the parsed arguments (or :func:`request_of`'s dict); None: no check.
      name: the output parameter, for messages.

    Raises:
      ToolError: an output path is a directory, or the output directory is not writable.
    """
    for path in paths:
        if "://" not in path and os.path.isdir(path):
            raise ToolError(f"{name}: {path!r} is a directory; give a file path for the "
                            "output (nothing in that directory is replaced).")
    for directory in sorted({os.path.dirname(p if "://" in p else os.path.abspath(p))
                             for p in paths}):
        claim_output(directory, name)
    if request is not None and not (isinstance(request, dict) and "parameters" in request):
        request = request_of(request)
    if request is not None:
        _pending.append((list(paths), request))
    if overwrite or not all(os.path.exists(p) for p in paths):
        return False
    if request is None:
        return True
    sidecar = manifest_path(paths)
    try:
        from rigl_tf.files import read_text

        recorded = json.loads(read_text(sidecar))
    except Exception:  # noqa: BLE001 (missing, unreadable or not JSON: recompute)
        print(f"{paths[0]}: no record of the inputs that produced it; recomputing.")
        return False
    if recorded != request:
        print(f"{paths[0]} was computed for other inputs ({_difference(recorded, request)}); "
              "recomputing.")
        return False
    _pending.pop()
    return True


def _record_pending():
    from rigl_tf.files import write_json

    while _pending:
        paths, request = _pending.pop(0)
        if all(os.path.exists(p) for p in paths):
            write_json(manifest_path(paths), request)


# --------------------------------------------------------------------------- entry point


def make_parser(description):
    """An ``argparse.ArgumentParser`` that raises `ToolError` instead of exiting."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise ToolError(f"{self.prog}: {message}")

        def parse_args(self, *args, **kwargs):
            parsed = super().parse_args(*args, **kwargs)
            from rigl_tf import startup

            startup.import_tensorflow()  # after parsing: --help and usage errors stay fast
            return parsed

    parser = Parser(description=description)
    parser.add_argument("--progress", default=None, choices=("auto", "bar", "lines", "off"),
                        help="Progress with ETA on stderr: 'bar' (redrawn), 'lines' (a line "
                        "every 10 s, for logs), 'off'; default 'auto' (bar on a terminal, "
                        "else quiet) or $RIGL_TF_PROGRESS.")
    return parser


def progress(args, total, desc):
    """A `rigl_tf.progress.Progress` for a command's long loop (``--progress`` mode)."""
    from rigl_tf.progress import Progress

    return Progress(total=total, desc=desc, mode=getattr(args, "progress", None))


def tool_main(run_fn, argv=None):
    """Runs ``run_fn(argv)``; a `ToolError` prints one ``error: ...`` line, returns 2.

    Args:
      run_fn: the tool's body, taking the argument list.
      argv: arguments (default ``sys.argv[1:]``).

    Returns:
      0 on success, 2 on bad input.
    """
    global _claims
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    del _pending[:]
    try:
        run_fn(argv)
        _record_pending()
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 (one line on the command line; --debug: traceback)
        if debug:
            raise
        from rigl_tf.errors import message

        print(f"error: {message(e)} (--debug shows the traceback)", file=sys.stderr)
        return 2 if isinstance(e, (ValueError, TypeError, OSError)) else 1
    finally:
        del _pending[:]
        if _claims is not None:
            _claims.close()
            _claims = None
    return 0
