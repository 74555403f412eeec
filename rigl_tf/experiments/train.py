r"""rigl-train: gin-configured sparse training (dense, pruning, lottery, scratch, SET, RigL,
SNIP, GraSP, small-dense) with checkpoints, resumption and TensorBoard summaries.

Usage::

    rigl-train --gin_config=configs/quickstart.gin --logdir=/tmp/qs
    python -m rigl_tf.experiments.train --gin_config=configs/mnist_lenet5/rigl.gin \
        --gin_bindings="training.total_steps = 1000" --logdir=/tmp/rigl --seed=1

The logdir holds:

* ``operative_config.gin``: every gin parameter the run used (plus a seed header); a
  logdir with a different one is refused unless ``--overwrite``;
* ``ckpt-<step>``: ``tf.train.CheckpointManager`` checkpoints at step 0, every
  ``training.save_freq`` steps and at the end (model, masks, optimizer with slots and
  ``iterations``); restarting with the same logdir resumes from the latest one, and the
  data pipeline is fast-forwarded to that step (it is a deterministic function of seed
  and step);
* ``mask_updates/{before,after}/ckpt-<step>`` with ``training.checkpoint_mask_updates``;
* ``summaries/``: TensorBoard (train/test loss and accuracy, learning rate, sparsity,
  gradient norm on a held-out batch, its change at mask updates, drop fraction, distance
  to init, mask images);
* ``results.json``: final metrics, sparsity report, wall time (written atomically).

Checkpoint layout: ``tf.train.Checkpoint(model=..., optimizer=..., masks=[...],
variables=[...])`` where ``masks`` lists the mask variables in ``rigl_tf.masked_weights``
order and ``variables`` is ``model.variables``; lottery/scratch runs read those lists.
``optimizer`` is the outermost optimizer: the ``SparseOptimizer``, or the
``SkipNonFinite`` (``training.nonfinite='skip'``) / ``LossScaleOptimizer``
(``training.mixed_precision='mixed_float16'``) wrapped around it.

Strategies: ``default``, ``mirrored`` and ``tpu`` train with ``model.fit``;
``multi_worker`` (``MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``) trains with
``distributed.custom_fit`` because Keras 3's ``model.fit`` fails under that strategy
(keras-team/keras issue 20585). There only the chief writes ``results.json`` and the
logdir; other workers write their checkpoints and summaries under
``logdir/workertemp/<task>``, and every worker resumes from the chief's checkpoints.

A SIGKILL at any point is safe: checkpoint files are complete before the ``checkpoint``
state file (rewritten atomically) names them, so a partial checkpoint is never restored,
and the text files are written to a temporary name and renamed.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import rigl_tf  # noqa: E402
from rigl_tf import locking  # noqa: E402
from rigl_tf.experiments import config as config_lib  # noqa: E402
from rigl_tf.experiments import datasets  # noqa: E402
from rigl_tf.experiments import distributed  # noqa: E402
from rigl_tf.experiments import models  # noqa: E402
from rigl_tf.experiments.nonfinite import SkipNonFinite  # noqa: E402
from rigl_tf.keras import callbacks as callbacks_lib  # noqa: E402
from rigl_tf.keras import oneshot  # noqa: E402
from rigl_tf.keras.wrapper import get_mask  # noqa: E402

OPERATIVE_CONFIG = "operative_config.gin"
RESULTS = "results.json"
CKPT_NAME = "ckpt"

# The command-line flags live in a module without TensorFlow, so `rigl-train --help`
# answers before TensorFlow is imported (see rigl_tf/commands/train.py).
from rigl_tf.experiments.train_flags import (  # noqa: E402,F401
    FLAGS, MODES, STRATEGIES, progress_verbosity)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept.

    Attributes:
      reason: what diverged and where, e.g. "`loss` is nan at step 2" (without advice).
      last_checkpoint: the last good checkpoint's prefix (None if none was written).
    """

    def __init__(self, message: str, reason: Optional[str] = None,
                 last_checkpoint: Optional[str] = None):
        super().__init__(message)
        self.reason = reason
        self.last_checkpoint = last_checkpoint


class LogdirConflictError(ValueError):
    """The logdir holds a run with a different operative config."""


# --------------------------------------------------------------------------- strategy


def make_strategy(name: str, tpu: Optional[str] = None):
    """Creates the tf.distribute strategy called ``name``.

    Args:
      name: 'default' (no distribution), 'mirrored' (all local GPUs, else all logical
        CPUs), 'multi_worker' (MultiWorkerMirroredStrategy, cluster from TF_CONFIG) or
        'tpu' (TPUStrategy on ``tpu``).
      tpu: the TPU address for 'tpu'.

    Returns:
      A ``tf.distribute.Strategy``.

    Raises:
      ValueError: for an unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown `--strategy` {name!r}; known strategies: {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":  # trained with distributed.custom_fit (see run_experiment)
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if tpu in (None, "local") else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and (
        "chief" not in resolver.cluster_spec().as_dict())


def _worker_dir(logdir, strategy):
    """Non-chief workers write to a private directory (required by MultiWorkerMirrored)."""
    if _is_chief(strategy):
        return logdir
    resolver = strategy.cluster_resolver
    return os.path.join(logdir, "workertemp", f"{resolver.task_type}_{resolver.task_id}")


# --------------------------------------------------------------------------- checkpoints


def checkpoint_masks(model) -> List:
    """The mask variables of ``model`` in ``masked_weights`` order (checkpoint list)."""
    return [m for _, _, m in rigl_tf.masked_weights(model)]


def make_checkpoint(model, optimizer=None, **extra) -> tf.train.Checkpoint:
    """The checkpoint object of a run (see the module docstring for the layout).

    ``extra``: further trackables saved with the run (e.g. :attr:`TrainStart.track`).
    """
    kwargs = dict(model=model, masks=checkpoint_masks(model), variables=list(model.variables))
    if optimizer is not None:
        kwargs["optimizer"] = optimizer
    kwargs.update(extra)
    return tf.train.Checkpoint(**kwargs)


def resolve_checkpoint(path: str, name: str) -> str:
    """Turns a logdir, a checkpoint prefix or ``path:step`` into a checkpoint prefix.

    Args:
      path: a run's logdir (its latest checkpoint), a prefix such as
        ``logdir/ckpt-500``, or ``logdir:500`` / ``prefix:500``.
      name: the parameter name for error messages.

    Returns:
      The checkpoint prefix.

    Raises:
      FileNotFoundError: if no such checkpoint exists.
    """
    base, step = path, None
    if ":" in path:
        head, tail = path.rsplit(":", 1)
        if tail.lstrip("-").isdigit():
            base, step = head, int(tail)
    if step is not None:
        prefix = os.path.join(base, f"{CKPT_NAME}-{step}") if tf.io.gfile.isdir(base) else (
            f"{base.rsplit('-', 1)[0]}-{step}" if "-" in os.path.basename(base) else base)
    elif tf.io.gfile.isdir(base):
        prefix = tf.train.latest_checkpoint(base)
        if prefix is None:
            raise FileNotFoundError(f"`{name}`={path!r}: no checkpoint in that directory.")
    else:
        prefix = base
    if not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(
            f"`{name}`={path!r}: checkpoint {prefix!r} not found (give a logdir, a checkpoint "
            f"prefix like LOGDIR/ckpt-500, or LOGDIR:500)."
        )
    return prefix


def checkpoint_steps(directory: str) -> List[int]:
    """Steps of the ``ckpt-<step>`` checkpoints whose index file is in ``directory``."""
    steps = []
    for path in tf.io.gfile.glob(os.path.join(directory, f"{CKPT_NAME}-*.index")):
        tail = os.path.basename(path)[len(CKPT_NAME) + 1:-len(".index")]
        if tail.isdigit():
            steps.append(int(tail))
    return sorted(steps)


def checkpoint_damage(prefix: str) -> Optional[str]:
    """Why the checkpoint ``prefix`` does not read back intact (None if every tensor reads)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as e:  # noqa: BLE001 (truncated files raise many different types)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return None


def find_resume_checkpoint(logdir: str, log=print, repair: bool = True) -> Optional[str]:
    """The checkpoint a run in ``logdir`` resumes from, verified by reading it back.

    With a valid ``checkpoint`` state file, its latest checkpoint is used (newer files it
    does not name were interrupted writes); if that checkpoint is damaged, the newest
    older intact one is. If checkpoints exist but the state file is missing, unreadable
    or names a missing checkpoint, the newest intact ``ckpt-<step>`` is used, the choice
    is reported, and the state file is rewritten to name it. Damaged checkpoints are
    reported by path and skipped (never deleted).

    Returns:
      A checkpoint prefix, or None if ``logdir`` holds no checkpoint.

    Raises:
      ValueError: checkpoints exist but none reads back intact.
    """
    steps = checkpoint_steps(logdir)
    state_path = os.path.join(logdir, "checkpoint")
    state = None
    if tf.io.gfile.exists(state_path):
        try:
            state = tf.train.get_checkpoint_state(logdir)
        except Exception:  # noqa: BLE001 (garbage state file)
            state = None
    named = None
    if state is not None and state.model_checkpoint_path:
        named = os.path.basename(state.model_checkpoint_path)
        tail = named[len(CKPT_NAME) + 1:] if named.startswith(f"{CKPT_NAME}-") else ""
        named = int(tail) if tail.isdigit() and int(tail) in steps else None
    if not steps:
        return None
    trusted = named is not None
    if not trusted:
        why = ("is missing" if not tf.io.gfile.exists(state_path) else
               "is unreadable" if state is None else "names a checkpoint that does not exist")
        log(f"The checkpoint state file {state_path} {why}; looking for the newest intact "
            f"checkpoint among {len(steps)} on disk.")
    candidates = [s for s in reversed(steps) if not trusted or s <= named]
    damaged = []
    for step in candidates:
        prefix = os.path.join(logdir, f"{CKPT_NAME}-{step}")
        why = checkpoint_damage(prefix)
        if why is None:
            if damaged or not trusted:
                log(f"Resuming from {prefix} (newest intact checkpoint).")
            if not trusted and repair:
                tf.compat.v1.train.update_checkpoint_state(
                    logdir, prefix, all_model_checkpoint_paths=[
                        os.path.join(logdir, f"{CKPT_NAME}-{s}") for s in steps if s <= step])
            return prefix
        damaged.append(prefix)
        log(f"Checkpoint {prefix} is damaged ({why}); skipped.")
    raise ValueError(
        f"`--logdir`={logdir!r}: no checkpoint reads back intact (damaged: "
        f"{', '.join(damaged)}). Move them away, or pass --overwrite to start over.")


def _list_length(prefix: str, attr: str) -> Optional[int]:
    """Number of elements of the root list ``attr`` in a checkpoint (None if absent)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    for child in graph.nodes[0].children:
        if child.local_name == attr:
            return len(graph.nodes[child.node_id].children)
    return None


def _read_list(prefix: str, attr: str, like: Sequence, name: str, path: str) -> List[np.ndarray]:
    """Reads the checkpoint list ``attr`` into arrays shaped like ``like``."""
    count = _list_length(prefix, attr)
    if count is None:
        raise ValueError(
            f"`{name}`={path!r}: checkpoint {prefix!r} has no {attr!r} list; it was not "
            f"written by rigl-train."
        )
    if count != len(like):
        raise ValueError(
            f"`{name}`={path!r}: checkpoint {prefix!r} has {count} {attr}, but this model has "
            f"{len(like)}; the network must be the same as in the source run."
        )
    holders = [tf.Variable(tf.zeros(tuple(v.shape), v.dtype), trainable=False) for v in like]
    try:
        status = tf.train.Checkpoint(**{attr: holders}).restore(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"`{name}`={path!r}: the {attr} in checkpoint {prefix!r} do not match this model "
            f"(shapes {[tuple(v.shape) for v in like]}): {e}"
        ) from None
    return [h.numpy() for h in holders]


def load_masks(model, path: str, name: str = "network.mask_init_path") -> Dict[str, np.ndarray]:
    """Reads another run's masks for ``model`` (same architecture) from a checkpoint.

    Args:
      model: the sparse model (defines the expected shapes).
      path: a logdir, checkpoint prefix or ``path:step`` (see :func:`resolve_checkpoint`).
      name: parameter name for error messages.

    Returns:
      Masks keyed like ``rigl_tf.get_masks(model)``.
    """
    prefix = resolve_checkpoint(path, name)
    items = rigl_tf.masked_weights(model)
    values = _read_list(prefix, "masks", [m for _, _, m in items], name, path)
    return {k: v for (k, _, _), v in zip(items, values)}


def load_variables(model, path: str, name: str = "network.weight_init_path") -> List[np.ndarray]:
    """Reads another run's ``model.variables`` (same architecture) from a checkpoint."""
    prefix = resolve_checkpoint(path, name)
    return _read_list(prefix, "variables", list(model.variables), name, path)


def shuffle_masks(model, seed: int):
    """Permutes every mask within its weight (same counts), seeded by (seed, index)."""
    new = {}
    for index, (key, _, mask) in enumerate(rigl_tf.masked_weights(model)):
        m = np.asarray(mask.numpy())
        rng = np.random.default_rng([int(seed), index])
        new[key] = rng.permutation(m.reshape(-1)).reshape(m.shape)
    rigl_tf.set_masks(model, new)


# --------------------------------------------------------------------------- model


def _keep_dense(model, names):
    """Resolves 'first'/'last' tokens to the model's first/last prunable layer names."""
    from rigl_tf.keras.model_ops import iter_layers
    from rigl_tf.keras.wrapper import is_prunable

    prunable = [layer.name for layer in iter_layers(model) if is_prunable(layer)]
    out = []
    for n in names:
        if n == "first" and prunable:
            out.append(prunable[0])
        elif n == "last" and prunable:
            out.append(prunable[-1])
        else:
            out.append(n)
    return out or None


def build_dense_model(spec: config_lib.ExperimentSpec, info):
    """The (dense) Keras model named by ``network`` for the dataset's shapes."""
    net = spec.network
    kwargs = dict(net.model_kwargs)
    kwargs.update(activation=net.activation, weight_decay=net.weight_decay)
    if net.small_dense_density is not None:
        full = models.get_model(net.network_name, info.input_shape, info.num_classes, **kwargs)
        target = net.small_dense_density * models.count_params(full)
        del full
        kwargs["width_multiplier"] = models.small_dense_width_multiplier(
            net.network_name, info.input_shape, info.num_classes, target, **kwargs)
    try:
        return models.get_model(net.network_name, info.input_shape, info.num_classes, **kwargs)
    except ValueError as e:
        raise ValueError(f"network.*: {e}") from None


def build_model(spec: config_lib.ExperimentSpec, info, seed: int, batch_fn=None, log=print,
                dry_run: bool = False):
    """Builds the sparse model a run starts from (before any checkpoint is restored).

    Order: model -> sparsify (initial topology) -> masks from ``mask_init_path`` ->
    ``shuffle_mask`` -> weights from ``weight_init_path`` (else ``weight_init_method``) ->
    ``noise_stddev`` -> one-shot pruning (snip/grasp/random) -> MetaInit.

    Args:
      spec: the experiment spec.
      info: the dataset info (input shape, classes).
      seed: the run's seed.
      batch_fn: ``() -> (x, y)`` giving one training batch (one-shot pruning, MetaInit).
      log: a print-like function.
      dry_run: a missing ``mask_init_path`` / ``weight_init_path`` checkpoint (e.g. the
        pruning run of a lottery config has not run yet) is reported instead of raised.

    Returns:
      The sparse Keras model.
    """
    net, sp = spec.network, spec.sparsity
    dense = build_dense_model(spec, info)
    oneshot_alg = spec.mask_updater.update_alg in config_lib.ONESHOT_ALGORITHMS
    start_sparsity = 0.0 if oneshot_alg else sp.sparsity
    model = _sparsify(dense, sp, start_sparsity, seed)
    del dense
    mask_path, weight_path = net.mask_init_path, net.weight_init_path
    if dry_run:
        for name, path in (("network.mask_init_path", mask_path),
                           ("network.weight_init_path", weight_path)):
            if path:
                try:
                    resolve_checkpoint(path, name)
                except FileNotFoundError as e:
                    log(f"Dry run: {e} (a real run would fail here).")
                    mask_path = None if path == mask_path else mask_path
                    weight_path = None if path == weight_path else weight_path
    if mask_path:
        rigl_tf.set_masks(model, load_masks(model, mask_path))
        log(f"Masks loaded from {mask_path}.")
    if net.shuffle_mask:
        shuffle_masks(model, seed)
        log("Masks shuffled within each layer.")
    if weight_path:
        values = load_variables(model, weight_path)
        masks = {id(m) for m in checkpoint_masks(model)}
        for v, value in zip(model.variables, values):
            if id(v) not in masks:
                v.assign(value)
        rigl_tf.apply_masks(model)
        log(f"Weights loaded from {weight_path} (current masks applied).")
    elif net.weight_init_method:
        rigl_tf.initialize(model, net.weight_init_method, method=spec.unit_scaled_init.method,
                           scale=spec.unit_scaled_init.scale, seed=seed)
    if net.noise_stddev > 0:
        rng = np.random.default_rng(int(seed))
        for v in model.trainable_variables:
            v.assign(v.numpy() + rng.normal(0.0, net.noise_stddev, v.shape).astype(v.dtype))
        rigl_tf.apply_masks(model)
    if mask_path and not weight_path and not net.shuffle_mask and not net.allow_same_init:
        refuse_same_init(model, mask_path, seed, log=log)
    if oneshot_alg and dry_run:
        try:
            batch_fn()
        except FileNotFoundError as e:
            log(f"Dry run: one-shot {spec.mask_updater.update_alg} pruning skipped: {e}")
            oneshot_alg = False
    if oneshot_alg:
        x, y = batch_fn()
        oneshot.prune_at_init(model, x, y, spec.mask_updater.update_alg, spec.oneshot_sparsity,
                              sp.distribution, seed=seed,
                              min_active=sp.min_active)
        log(f"One-shot {spec.mask_updater.update_alg} pruning to sparsity "
            f"{spec.oneshot_sparsity}.")
    _check_sparsity_reached(model, spec, mask_path, oneshot_alg)
    if spec.training.use_metainit and dry_run:
        log("Dry run: MetaInit skipped.")
    elif spec.training.use_metainit:
        from rigl_tf.experiments.metainit import meta_init

        x, y = batch_fn()
        result = meta_init(model, x, y, steps=spec.training.metainit_steps)
        log(f"MetaInit: gradient quotient {result['gq'][0]:.4f} -> {result['best_gq']:.4f}.")
    return model


def refuse_same_init(model, mask_path: str, seed: int, log=print):
    """Refuses a fresh start that reproduces the mask source run's own initialization.

    With the source run's seed and initializer, "masks from run A + a fresh random
    initialization" gives exactly A's step-0 weights under A's final masks: the lottery
    ticket. The check compares the masked kernels with A's ``ckpt-0`` (skipped, with a
    log line, when A has no step-0 checkpoint).

    Raises:
      ValueError: if every masked kernel equals A's step-0 kernel under the current masks.
    """
    prefix = resolve_checkpoint(mask_path, "network.mask_init_path")
    try:
        source = load_variables(model, f"{prefix}:0", "network.mask_init_path")
    except (FileNotFoundError, ValueError):
        log(f"No step-0 checkpoint next to {prefix!r}; the same-initialization check "
            f"(network.allow_same_init) was skipped.")
        return
    by_id = {id(v): value for v, value in zip(model.variables, source)}
    same = []
    for _, weight, mask in rigl_tf.masked_weights(model):
        ours = np.asarray(weight.numpy())
        theirs = np.asarray(by_id[id(weight)]) * np.asarray(mask.numpy())
        same.append(bool(np.any(ours)) and np.array_equal(ours, theirs))
    if same and all(same):
        raise ValueError(
            f"`network.mask_init_path`={mask_path!r} with a fresh initialization gives this "
            f"run exactly that run's step-0 weights under its masks (same --seed={seed} and "
            f"initializer): the lottery ticket rather than a new initialization; use "
            f"another --seed, or set network.allow_same_init = True if that is intended."
        )


def _check_sparsity_reached(model, spec, mask_path, oneshot_alg):
    """Refuses a start model much denser than configured (dense masks, min_active...)."""
    sp = spec.sparsity
    target = spec.oneshot_sparsity if oneshot_alg else sp.sparsity
    if target <= 0.0:
        return
    total = active = 0
    dense_layers = []
    for key, _, mask in rigl_tf.masked_weights(model):
        m = np.asarray(mask.numpy())
        total += m.size
        active += int(np.count_nonzero(m))
        if m.size and np.count_nonzero(m) == m.size:
            dense_layers.append(key)
    reached = 1.0 - active / total if total else 0.0
    if reached >= 0.9 * target:
        return
    if mask_path:
        cause = (f"the masks loaded from `network.mask_init_path`={mask_path!r} are that "
                 f"dense (a dense run?)")
    else:
        cause = (f"`sparsity.min_active`={sp.min_active}, `sparsity.custom_sparsity` or "
                 f"`sparsity.keep_dense` keep {', '.join(dense_layers[:5]) or 'layers'} dense")
    raise ValueError(
        f"The model would start at sparsity {reached:.4f}, far below the configured "
        f"{target:g}: {cause}. Fix that, or configure the sparsity the masks really have.")


def _gradient_regularized_step(model, coefficient: float):
    """A train_step adding ``coefficient * 0.5 * ||masked data-loss gradient||^2``.

    Mirrors Keras' own ``train_step``; the penalty uses each replica's gradient of its
    (unscaled) loss, as the original code did per batch.
    """
    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = model.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                y_pred = model(x, training=True)
                # Under tf.distribute Keras scales this loss by 1 / replicas.
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=True)
            grads = inner.gradient(loss, variables)
            penalty = 0.0
            for g, v in zip(grads, variables):
                if g is None:
                    continue
                m = get_mask(v)
                g = g * float(replicas) if m is None else g * float(replicas) * tf.cast(
                    m, g.dtype)
                penalty += 0.5 * tf.reduce_sum(tf.square(g))
            loss = loss + coefficient * penalty / float(replicas)
        tracker = getattr(model, "_loss_tracker", None)  # Keras' own train_step does this
        if tracker is not None:
            tracker.update_state(loss * float(replicas), sample_weight=tf.shape(x)[0])
        gradients = tape.gradient(model.optimizer.scale_loss(loss), variables)
        model.optimizer.apply_gradients(zip(gradients, variables))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


# --------------------------------------------------------------------------- callbacks


class _StopAtStep(keras.callbacks.Callback):
    """Stops ``fit`` once the optimizer has done ``total_steps`` steps."""

    def __init__(self, total_steps):
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if callbacks_lib.read_step(self.model.optimizer.iterations) >= self.total_steps:
            self.model.stop_training = True


class _Checkpointer(keras.callbacks.Callback):
    """Saves every ``save_freq`` steps and around mask updates; never after a NaN."""

    def __init__(self, manager, save_freq, nan_guard, before=None, after=None, save_steps=()):
        super().__init__()
        self.manager = manager
        self.save_freq = save_freq
        self.save_steps = frozenset(int(s) for s in save_steps)
        self.nan_guard = nan_guard
        self.before = before
        self.after = after
        self._pending = None

    def _step(self):
        return callbacks_lib.read_step(self.model.optimizer.iterations)

    def on_train_batch_begin(self, batch, logs=None):
        self._pending = None
        if self.before is None:
            return
        step = self._step()
        opt = sparse_optimizer(self.model.optimizer)
        if opt.updates_masks_in_step(step):
            update_step = opt.update_step_of(step)  # named by the update's event step
            self.before.save(checkpoint_number=update_step)
            self._pending = update_step

    def on_train_batch_end(self, batch, logs=None):
        if self.nan_guard.failed_step is not None:
            return
        step = self._step()
        if self._pending is not None:
            self.after.save(checkpoint_number=self._pending)
            self._pending = None
        if (step % self.save_freq == 0 or step in self.save_steps) and _all_finite(
                self.model):
            self.manager.save(checkpoint_number=step)


def sparse_optimizer(optimizer):
    """The ``SparseOptimizer`` inside wrappers (``LossScaleOptimizer``, ``SkipNonFinite``)."""
    while not isinstance(optimizer, rigl_tf.SparseOptimizer):
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is None:
            raise TypeError(f"{type(optimizer).__name__} wraps no SparseOptimizer.")
        optimizer = inner
    return optimizer


def _all_finite(model) -> bool:
    """Whether every trainable weight is finite (a diverged state is never saved)."""
    return all(bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))
               for v in model.trainable_variables)


# --------------------------------------------------------------------------- helpers


def finite_results(results: Dict) -> Dict:
    """Replaces non-finite numbers by None (valid JSON) and says so in ``status``.

    ``status`` becomes ``'completed_nonfinite_metrics'`` and ``nonfinite_metrics`` lists
    the affected keys (dotted paths), e.g. a test loss that overflowed to inf.
    """
    bad = []

    def clean(value, path):
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            bad.append(path)
            return None
        return value

    out = clean(results, "")
    if bad:
        out["status"] = "completed_nonfinite_metrics"
        out["nonfinite_metrics"] = bad
    return out


def _warn(message: str):
    """Always shown (also with verbose=0): resume decisions the user must know about."""
    print(message, file=sys.stderr, flush=True)


def _atomic_write(path: str, text: str):
    from rigl_tf import files  # the one file layer (local paths and gs:// alike)

    files.write_text(path, text)


def _config_text(seed: int) -> str:
    return f"# rigl-train seed = {seed}\n" + config_lib.operative_config()


def check_logdir_path(logdir) -> str:
    """Refuses an empty, root or home-directory logdir (``--overwrite`` could empty it)."""
    if not isinstance(logdir, (str, os.PathLike)) or not os.fspath(logdir).strip():
        raise ValueError(f"`--logdir` must name a directory for this run, got {logdir!r}.")
    logdir = os.fspath(logdir)
    if not locking.is_remote(logdir):
        real = os.path.realpath(os.path.expanduser(logdir))
        forbidden = {os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.sep)}
        if real in forbidden or os.path.dirname(real) == real:
            raise ValueError(
                f"`--logdir`={logdir!r} is the file-system root or the home directory; give "
                f"a directory of its own for this run, e.g. {os.path.join(real, 'rigl_run')!r}.")
    return logdir


@contextlib.contextmanager
def _lock(logdir, dist, mode, dry_run):
    """Owns the directory this process writes (logdir, worker dir, or logdir/hessian)."""
    if dry_run:
        yield
        return
    directory = os.path.join(logdir, "hessian") if mode == "hessian" else \
        _worker_dir(logdir, dist)
    with locking.exclusive(directory, "`--logdir`"):
        fresh = mode == "train_eval" and not [
            p for p in owned_paths(directory)[0] if os.path.basename(p) != locking.LOCK_NAME]
        try:
            yield
        except TrainingDivergedError:
            raise  # its last good checkpoint is part of the report
        except BaseException:
            # A new run that fails before any training step leaves nothing behind, so
            # the corrected command starts cleanly (not refused as a different run).
            if fresh and set(checkpoint_steps(directory)) <= {0} and not tf.io.gfile.exists(
                    os.path.join(directory, RESULTS)):
                _delete_owned(directory, log=lambda *a: None)
            raise


# Files rigl-train writes in a logdir (relative paths; `*` stays within one path
# segment). --overwrite deletes these only; OWNED_DIRS are deleted as a whole.
OWNED_FILES = (OPERATIVE_CONFIG, RESULTS, "checkpoint", f"{CKPT_NAME}-*.index",
               f"{CKPT_NAME}-*.data-*", "*.tmp-*", "summaries/events.out.tfevents.*",
               "mask_updates/*/checkpoint", f"mask_updates/*/{CKPT_NAME}-*",
               "hessian/*.eigvals.npy", "hessian/*.tmp-*", locking.LOCK_NAME)
OWNED_DIRS = (f"{CKPT_NAME}-*_temp", f"mask_updates/*/{CKPT_NAME}-*_temp", "workertemp",
              ".tmp-*", "hessian/.tmp-*")  # the last two: files.atomic_output staging


def _matches(rel: str, patterns) -> bool:
    import fnmatch

    return any(rel.count("/") == p.count("/") and fnmatch.fnmatchcase(rel, p)
               for p in patterns)


def owned_paths(logdir: str) -> Tuple[List[str], List[str]]:
    """Splits everything under ``logdir`` into (paths rigl-train wrote, other files).

    Ours: files matching :data:`OWNED_FILES` and directories matching
    :data:`OWNED_DIRS` (relative to ``logdir``). Other files are everything else.
    """
    ours, others, owned_dirs = [], [], []
    for root, dirs, files in tf.io.gfile.walk(logdir):
        rel_root = os.path.relpath(root, logdir).replace(os.sep, "/")
        rel_root = "" if rel_root == "." else rel_root + "/"
        if any(rel_root.startswith(d + "/") for d in owned_dirs):
            continue
        for name in dirs:
            if _matches(rel_root + name.rstrip("/"), OWNED_DIRS):
                owned_dirs.append(rel_root + name.rstrip("/"))
                ours.append(os.path.join(root, name.rstrip("/")))
        for name in files:
            target = ours if _matches(rel_root + name, OWNED_FILES) else others
            target.append(os.path.join(root, name))
    return ours, others


def _delete_owned(logdir: str, log=print) -> List[str]:
    """--overwrite: deletes the files rigl-train wrote in ``logdir``; keeps all others."""
    ours, others = owned_paths(logdir)
    for path in ours:
        if os.path.basename(path) == locking.LOCK_NAME:
            continue  # held by this process
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    for sub in ("summaries", "mask_updates/before", "mask_updates/after", "mask_updates",
                "hessian"):
        d = os.path.join(logdir, sub)
        if tf.io.gfile.isdir(d) and not tf.io.gfile.listdir(d):
            tf.io.gfile.rmtree(d)
    log(f"--overwrite: deleted {len(ours)} files rigl-train wrote in {logdir}"
        + (f"; kept {len(others)} other files: {', '.join(sorted(others)[:10])}" if others
           else "") + ".")
    return others


def _check_logdir(logdir: str, text: str, overwrite: bool, log=print):
    """Refuses a logdir holding a different run; with ``overwrite`` deletes any run there.

    A logdir whose ``operative_config.gin`` equals ``text`` is the same run: it resumes.
    """
    path = os.path.join(logdir, OPERATIVE_CONFIG)
    has_config = tf.io.gfile.exists(path)
    has_ckpt = tf.io.gfile.exists(os.path.join(logdir, "checkpoint")) or bool(
        checkpoint_steps(logdir))
    if not (has_config or has_ckpt):
        return
    existing = ""
    if has_config:
        with tf.io.gfile.GFile(path) as f:
            existing = f.read()
    if overwrite:
        _delete_owned(logdir, log=_warn)
        return
    if existing == text:
        return
    import difflib

    reason = ("a run with a different operative config (or seed)" if has_config
              else "checkpoints but no operative_config.gin")
    diff = "\n".join(list(difflib.unified_diff(
        existing.splitlines(), text.splitlines(), "existing", "requested", lineterm="",
        n=0))[:40])
    raise LogdirConflictError(
        f"`--logdir`={logdir!r} holds {reason}. Use another logdir, or pass --overwrite to "
        f"delete it.\n{diff}"
    )


def _train_dataset(spec, seed, skip_steps):
    d = spec.data
    ds = datasets.get_dataset(
        d.dataset_name, "train", spec.training.batch_size, shuffle=True, seed=seed,
        data_dir=d.data_dir, repeat=True, drop_remainder=True, augment=d.augment,
        normalization=d.normalization, image_size=d.image_size,
        shuffle_buffer=d.shuffle_buffer)
    return ds.skip(skip_steps) if skip_steps else ds


def eval_dataset(spec, split, max_examples=None):
    d = spec.data
    ds = datasets.get_dataset(
        d.dataset_name, split, spec.training.val_batch_size, shuffle=False,
        data_dir=d.data_dir, augment=False, normalization=d.normalization,
        image_size=d.image_size)
    if max_examples:
        ds = ds.take(max(1, math.ceil(max_examples / spec.training.val_batch_size)))
    return ds


def fixed_batch(spec, split, size, seed, info):
    d = spec.data
    size = min(size, info.num_examples[split])
    kwargs = {"normalization": d.normalization, "image_size": d.image_size}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return datasets.get_fixed_batch(d.dataset_name, split, size, seed=seed,
                                    data_dir=d.data_dir, **kwargs)


def parameter_counts(model) -> str:
    """``params=P prunable=Q active=A (density D)`` of a (sparse) model.

    ``params`` counts every weight of the network (trainable or not, e.g. BatchNorm
    statistics) once, but not the masks; ``prunable`` the entries of the masked weights;
    ``active`` their mask ones.
    """
    triples = rigl_tf.masked_weights(model)
    mask_ids = {id(m) for _, _, m in triples}
    seen, params = set(), 0
    for w in model.weights:
        if id(w) not in mask_ids and id(w) not in seen:
            seen.add(id(w))
            params += int(np.prod(w.shape))
    prunable = sum(int(np.prod(w.shape)) for _, w, _ in triples)
    active = sum(int(np.sum(keras.ops.convert_to_numpy(m))) for _, _, m in triples)
    density = f" (density {active / prunable:.4f})" if prunable else ""
    return f"params={params} prunable={prunable} active={active}{density}"


def _summary(spec, info, model, optimizer, strategy) -> str:
    report = rigl_tf.sparsity_report(model)
    lines = [
        f"dataset: {info.name} input_shape={info.input_shape} classes={info.num_classes} "
        f"examples={info.num_examples}",
        f"network: {spec.network.network_name} {parameter_counts(model)} "
        f"kernel_params={models.count_params(model)}",
        f"optimizer: {spec.optimizer.name} lr={spec.optimizer.learning_rate} "
        f"schedule={spec.optimizer.schedule} warmup={spec.optimizer.warmup_steps}",
        f"updater: {optimizer.updater.get_config()}",
        f"training: total_steps={spec.training.total_steps} batch_size="
        f"{spec.training.batch_size} save_freq={spec.training.save_freq} log_freq="
        f"{spec.training.log_freq}",
        f"strategy: {type(strategy).__name__} replicas={strategy.num_replicas_in_sync}",
        str(report),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main entry


def run_experiment(gin_config: Sequence[str] = (), gin_bindings: Sequence[str] = (),
                   preload_gin_config: Optional[str] = None, logdir: str = "/tmp/rigl_tf",
                   seed: int = 0, mode: str = "train_eval", strategy: str = "default",
                   tpu: Optional[str] = None, overwrite: bool = False, dry_run: bool = False,
                   verbose="auto", extra_callbacks: Sequence = ()) -> Dict:
    """Runs one experiment (what ``rigl-train`` does, callable in-process).

    Args:
      gin_config: gin files.
      gin_bindings: gin bindings.
      preload_gin_config: a gin file read first (e.g. another run's operative config).
      logdir: the run directory.
      seed: the run's seed.
      mode: 'train_eval' or 'hessian'.
      strategy: 'default', 'mirrored', 'multi_worker' or 'tpu'.
      tpu: TPU address for 'tpu'.
      overwrite: delete a logdir holding a different run.
      dry_run: build everything, print a summary, and return without training or writing.
      verbose: ``model.fit`` verbosity.
      extra_callbacks: further Keras callbacks (appended; e.g. for tests).

    Returns:
      The results dict (also written to ``results.json``); for a dry run, the summary.

    Raises:
      ValueError: bad flags or gin values (message names the parameter).
      LogdirConflictError: the logdir holds a different run and ``overwrite`` is False.
      TrainingDivergedError: the loss became NaN/Inf (the last good checkpoint stays).
    """
    if mode not in MODES:
        raise ValueError(f"Unknown `--mode` {mode!r}; known modes: {', '.join(MODES)}.")
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown `--strategy` {strategy!r}; known strategies: "
                         f"{', '.join(STRATEGIES)}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`--seed` must be an integer >= 0, got {seed!r}.")
    check_logdir_path(logdir)
    start_time = time.time()
    config_lib.parse(gin_config, gin_bindings, preload_gin_config)
    spec = config_lib.resolve()
    text = _config_text(seed)
    analysis = config_lib.resolve_analysis()  # validated, but not part of the run's identity
    t = spec.training
    if strategy == "multi_worker" and t.gradient_regularization > 0:
        raise ValueError(
            f"`training.gradient_regularization`={t.gradient_regularization} is not supported "
            f"with `--strategy`='multi_worker' (its custom training loop has no gradient "
            f"penalty); use 0, or --strategy=default/mirrored.")
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    # MultiWorkerMirroredStrategy must exist before other TF ops run.
    dist = make_strategy(strategy, tpu)
    keras.backend.clear_session()  # deterministic layer names and initializers
    keras.utils.set_random_seed(int(seed))
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(t.mixed_precision)
    try:
        with _lock(logdir, dist, mode, dry_run):
            return _run(spec, text, analysis, t, dist, logdir, seed, mode, strategy, overwrite,
                        dry_run, verbose, extra_callbacks, start_time)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _run(spec, text, analysis, t, dist, logdir, seed, mode, strategy, overwrite, dry_run,
         verbose, extra_callbacks, start_time, start=None):
    """The body of :func:`run_experiment` once gin, seeds, strategy and dtype are set.

    ``start`` (a :class:`TrainStart`, from :func:`train_from_start`) replaces the
    gin-described initial model, first step and data order."""
    info = datasets.get_dataset_info(spec.data.dataset_name, spec.data.data_dir,
                                     spec.data.image_size)
    for split in ("train", "test"):
        if int(info.num_examples.get(split, 0)) <= 0:
            raise ValueError(
                f"`data.dataset_name`={spec.data.dataset_name!r} (data.data_dir="
                f"{spec.data.data_dir!r}) has no {split!r} examples; rigl-train needs "
                f"non-empty 'train' and 'test' splits.")
    log = print if verbose else (lambda *a, **k: None)
    chief = _is_chief(dist)
    custom_loop = strategy == "multi_worker"

    if not dry_run and mode == "train_eval" and (chief or not overwrite):
        _check_logdir(logdir, text, overwrite, log)
    write_dir = _worker_dir(logdir, dist)
    # Every worker resumes from the chief's checkpoints (the logdir), so all start equal;
    # a partially written checkpoint is never named in the `checkpoint` state file, which
    # tf.train.CheckpointManager rewrites atomically after the checkpoint's files.
    manager_probe = None if dry_run or (overwrite and not chief) else \
        find_resume_checkpoint(logdir, log=_warn, repair=chief)
    resuming = manager_probe is not None

    def batch_fn():
        return fixed_batch(spec, "train", t.batch_size, seed, info)

    first_step = 0 if start is None else start.start_step
    data_seed = seed if start is None or start.data_seed is None else start.data_seed
    with dist.scope():
        if start is not None:  # the caller's model; a checkpoint overrides its state
            model = start.model_fn()
        elif resuming:  # the state comes from the checkpoint: skip the costly init steps
            model = build_for_restore(spec, info, seed)
        else:
            model = build_model(spec, info, seed, batch_fn, log=log, dry_run=dry_run)
        inner = config_lib.build_optimizer(spec.optimizer, t.total_steps)
        updater = config_lib.build_updater(spec, seed)
        opt = rigl_tf.SparseOptimizer(inner, updater)
        base = model  # checkpointed and returned; `model` may be a training wrapper of it
        if start is not None and start.wrap is not None:
            model = start.wrap(base)
        outer = opt
        if t.nonfinite == "skip":
            outer = SkipNonFinite(outer)
        if t.mixed_precision == "mixed_float16":
            outer = keras.optimizers.LossScaleOptimizer(outer)
        model.compile(optimizer=outer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"] + list(start.metrics if start else ()),
                      jit_compile=t.jit_compile)
        outer.build(model.trainable_variables)
        if first_step:
            opt.iterations.assign(first_step)
    if t.gradient_regularization > 0:
        model.train_step = _gradient_regularized_step(model, t.gradient_regularization)

    summary = _summary(spec, info, base, opt, dist)
    if dry_run:
        log(summary)
        log("Dry run: nothing trained or written.")
        return {"dry_run": True, "summary": summary, "spec": spec, "analysis": analysis}
    if mode == "hessian":
        return run_hessian(spec, analysis["hessian"], model, logdir, info, seed, log=log)

    tf.io.gfile.makedirs(write_dir)
    _atomic_write(os.path.join(write_dir, OPERATIVE_CONFIG), text)
    ckpt = make_checkpoint(base, outer, **(start.track if start else {}))
    manager = tf.train.CheckpointManager(ckpt, write_dir, max_to_keep=None if chief else 2,
                                         checkpoint_name=CKPT_NAME)
    if resuming:
        status = ckpt.restore(manager_probe)
        status.assert_existing_objects_matched()
        log(f"Resumed from {manager_probe}.")
    else:
        manager.save(checkpoint_number=first_step)
    start_step = int(opt.iterations.numpy())
    initial = None
    if resuming:
        first = os.path.join(logdir, f"{CKPT_NAME}-{first_step}")
        if tf.io.gfile.exists(first + ".index"):
            values = _read_list(first, "variables", list(base.variables), "step-0", first)
            by_id = {id(v): val for v, val in zip(base.variables, values)}
            initial = [by_id[id(v)] for v in model.trainable_variables]
    log(summary)

    writer = tf.summary.create_file_writer(os.path.join(write_dir, "summaries"))
    nan_guard = callbacks_lib.NanGuard()
    before = after = None
    if t.checkpoint_mask_updates:
        before = tf.train.CheckpointManager(
            ckpt, os.path.join(write_dir, "mask_updates", "before"), max_to_keep=None,
            checkpoint_name=CKPT_NAME)
        after = tf.train.CheckpointManager(
            ckpt, os.path.join(write_dir, "mask_updates", "after"), max_to_keep=None,
            checkpoint_name=CKPT_NAME)
    held_x, held_y = fixed_batch(spec, "test", t.val_batch_size, seed, info)
    cbs = [
        nan_guard if t.nonfinite == "stop" else _SkipReporter(log),
        _StopAtStep(t.total_steps),
        *(start.callbacks if start else ()),  # before the checkpointer: their state is saved
        _Checkpointer(manager, t.save_freq, nan_guard, before, after,
                      save_steps=start.save_steps if start else ()),
        callbacks_lib.MetricsSummary(writer),
        callbacks_lib.SparsitySummary(writer, t.log_freq),
        callbacks_lib.GradientFlow(held_x, held_y, t.log_freq, writer),
        callbacks_lib.DistanceToInit(t.log_freq, writer, initial_weights=initial),
    ] + list(extra_callbacks)

    remaining = t.total_steps - start_step
    if remaining > 0:
        train_ds = _train_dataset(spec, data_seed, start_step)
        test_ds = eval_dataset(spec, "test")
        if custom_loop:
            distributed.custom_fit(model, dist, train_ds, t.batch_size, start_step,
                                   t.total_steps, t.log_freq, cbs, validation_data=test_ds,
                                   log=log if verbose else None)
        else:
            # Epochs end at multiples of log_freq (evaluation and epoch summaries). A run
            # resumed off that grid first trains up to the next multiple (then continues
            # on a fresh iterator of the same, deterministic, data order).
            at, left = start_step, remaining
            head = min(-at % t.log_freq, left)
            if head:
                model.fit(train_ds, epochs=at // t.log_freq + 1,
                          initial_epoch=at // t.log_freq, steps_per_epoch=head,
                          validation_data=test_ds, callbacks=cbs, verbose=verbose,
                          shuffle=False)
                at += head
                left -= head
                train_ds = _train_dataset(spec, data_seed, at)
            if left > 0 and not model.stop_training and nan_guard.failed_step is None:
                initial_epoch = at // t.log_freq
                model.fit(train_ds, epochs=initial_epoch + math.ceil(left / t.log_freq),
                          initial_epoch=initial_epoch, steps_per_epoch=t.log_freq,
                          validation_data=test_ds, callbacks=cbs, verbose=verbose,
                          shuffle=False)
    if nan_guard.failed_step is not None:
        last = manager.latest_checkpoint
        raise TrainingDivergedError(f"{nan_guard.message} Last good checkpoint: {last}.",
                                    nan_guard.reason, last)
    step = int(opt.iterations.numpy())
    if not _all_finite(model):
        raise TrainingDivergedError(
            f"Training diverged: non-finite weights at step {step}; stopped. Last good "
            f"checkpoint: {manager.latest_checkpoint}.",
            f"non-finite weights at step {step}", manager.latest_checkpoint)
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(
            f"-{step}"):
        manager.save(checkpoint_number=step)

    if custom_loop:
        test = distributed.evaluate(model, eval_dataset(spec, "test"))
        train = distributed.evaluate(
            model, eval_dataset(spec, "train", t.max_train_eval_examples))
    else:
        test = model.evaluate(eval_dataset(spec, "test"), return_dict=True, verbose=0)
        train = model.evaluate(eval_dataset(spec, "train", t.max_train_eval_examples),
                               return_dict=True, verbose=0)
    report = rigl_tf.sparsity_report(model)
    skipped = getattr(outer, "skipped", None) if t.nonfinite == "skip" else None
    if skipped is None and isinstance(outer, keras.optimizers.LossScaleOptimizer):
        skipped = getattr(outer.inner_optimizer, "skipped", None)
    results = {
        "status": "completed",
        "step": step,
        "total_steps": t.total_steps,
        "resumed_from_step": start_step if resuming else None,
        "seed": int(seed),
        "test_loss": float(test["loss"]),
        "test_accuracy": float(test["accuracy"]),
        "train_loss": float(train["loss"]),
        "train_accuracy": float(train["accuracy"]),
        "sparsity": report.as_dict(),
        "wall_time_s": time.time() - start_time,
        "strategy": strategy,
        "replicas": dist.num_replicas_in_sync,
        "dataset": info.name,
        "network": spec.network.network_name,
    }
    if skipped is not None:
        results["skipped_nonfinite_steps"] = int(skipped.numpy())
    if t.mixed_precision != "float32":
        results["mixed_precision"] = t.mixed_precision
    written = finite_results(results)
    if chief:
        _atomic_write(os.path.join(logdir, RESULTS), json.dumps(written, indent=2,
                                                                allow_nan=False))
    writer.close()
    if start is not None:
        start.model = base
    log(f"Final test accuracy: {results['test_accuracy']:.4f} (loss {results['test_loss']:.4f}) "
        f"at step {step}; sparsity {report.total['sparsity']:.4f}; wall time "
        f"{results['wall_time_s']:.1f}s.")
    return written


class _SkipReporter(keras.callbacks.Callback):
    """``training.nonfinite='skip'``: prints one line per skipped non-finite step."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        skipped = getattr(self.model.optimizer, "skipped", None)
        if skipped is None:
            skipped = getattr(getattr(self.model.optimizer, "inner_optimizer", None),
                              "skipped", None)
        if skipped is None:
            return
        count = int(skipped.numpy())
        if count > self._seen:
            self._seen = count
            self.log(f"Non-finite loss/gradients at step "
                     f"{int(self.model.optimizer.iterations.numpy())}: update skipped "
                     f"(training.nonfinite='skip'; {count} skipped so far).")


def build_for_restore(spec, info, seed):
    """The model structure of a run, without the (costly) initialization steps."""
    sp = spec.sparsity
    dense = build_dense_model(spec, info)
    start = 0.0 if spec.mask_updater.update_alg in config_lib.ONESHOT_ALGORITHMS else \
        sp.sparsity
    return _sparsify(dense, sp, start, seed)


def _sparsify(dense, sp, start_sparsity, seed):
    """Wraps the dense model as the `sparsity` spec says (masks random, weights kept)."""
    return rigl_tf.sparsify(
        dense, start_sparsity, sp.distribution, keep_dense=_keep_dense(dense, sp.keep_dense),
        custom_sparsity=sp.custom_sparsity or None, init="dense", seed=seed,
        min_active=sp.min_active, erk_power_scale=sp.erk_power_scale, pattern=sp.pattern)


def _hessian_module():
    """The Hessian module (the package attribute ``rigl_tf.analysis.hessian`` is the
    function of the same name, so the module is loaded by its full name)."""
    import importlib

    return importlib.import_module("rigl_tf.analysis.hessian")


def run_hessian(spec, cfg, model, logdir, info, seed, log=print) -> Dict:
    """``--mode=hessian``: eigenvalues of the loss Hessian at a run's checkpoints.

    For every id in ``hessian.ckpt_ids`` the checkpoint ``logdir/ckpt-<id>`` is restored
    and the Hessian of the mean training loss over a fixed batch of
    ``hessian.batch_size`` training examples is computed w.r.t. the active weights
    (``is_dense_spectrum``: all weights); the eigenvalues go to
    ``logdir/hessian/ckpt-<id>.eigvals.npy`` (existing files are kept unless
    ``hessian.overwrite``).

    Args:
      spec: the run's experiment spec.
      cfg: the ``hessian`` settings (``config.resolve_analysis()['hessian']``).
      model: the run's model (built, any weights).
      logdir: the run's logdir.
      info: the dataset info.
      seed: seed choosing the fixed batch.
      log: a print-like function.

    Returns:
      ``{ckpt id: path of its eigenvalues}``.
    """
    hessian = _hessian_module()
    if not cfg["ckpt_ids"]:
        raise ValueError("`hessian.ckpt_ids` is empty; list the checkpoint steps to analyse.")
    x, y = fixed_batch(spec, "train", cfg["batch_size"], seed, info)
    out_dir = os.path.join(logdir, "hessian")
    tf.io.gfile.makedirs(out_dir)
    ckpt = make_checkpoint(model)
    results = {}
    for ckpt_id in cfg["ckpt_ids"]:
        prefix = resolve_checkpoint(f"{logdir}:{ckpt_id}", "hessian.ckpt_ids")
        path = os.path.join(out_dir, f"{CKPT_NAME}-{ckpt_id}.eigvals.npy")
        results[ckpt_id] = path
        if tf.io.gfile.exists(path) and not cfg["overwrite"]:
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    np.load(f, allow_pickle=False)
                log(f"Hessian: {path} exists, skipped.")
                continue
            except Exception as e:  # noqa: BLE001 (truncated or foreign file)
                _warn(f"Hessian: {path} is damaged ({type(e).__name__}); recomputing it.")
        ckpt.restore(prefix).expect_partial().assert_existing_objects_matched()
        masks = [None if get_mask(v) is None else get_mask(v).numpy()
                 for v in model.trainable_variables]
        matrix, _ = hessian.hessian(
            model, (x, y), masks=masks,
            spectrum="dense" if cfg["is_dense_spectrum"] else "sparse",
            chunk_size=cfg["rows_at_once"])
        eigs = hessian.eigenvalues(matrix)
        tmp = f"{path}.tmp-{os.getpid()}"
        with tf.io.gfile.GFile(tmp, "wb") as f:
            np.save(f, eigs)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        log(f"Hessian at {prefix}: {matrix.shape[0]} parameters, max eigenvalue "
            f"{float(eigs[-1]):.4g}; saved {path}.")
    return results


# --------------------------------------------------------------------------- caller's start


@dataclasses.dataclass
class TrainStart:
    """Where a training starts when its caller decides (IMP levels, branches, one-shot runs).

    Everything else (optimizer, schedule, regularisation, mixed precision, checkpoints and
    resumption, summaries, evaluation, ``results.json``) comes from the experiment spec,
    exactly as in ``rigl-train``.

    Attributes:
      model_fn: builds the sparse model in its starting state (weights and masks); called
        once per process under the strategy's scope, also when a checkpoint is resumed
        (which then overrides the state).
      identity: text that identifies this training; it is written as the logdir's
        ``operative_config.gin`` and a logdir holding another identity is refused.
      start_step: the optimizer's first step (schedules see the absolute step); the first
        checkpoint is ``ckpt-<start_step>``.
      data_seed: seed of the training data order (None: the run's seed); the data stream
        starts at batch ``start_step`` of that order.
      save_steps: extra steps with a checkpoint (e.g. the IMP rewind point ``K``).
      wrap: ``model -> training model`` (e.g. a loss wrapper); checkpoints and the returned
        model hold the unwrapped model.
      metrics: extra compile metrics.
      callbacks: Keras callbacks run before the checkpointer at every step, so state they
        keep in :attr:`track` is saved consistently with the model.
      track: extra trackables saved in every checkpoint (and restored on resumption).
      model: set by the trainer: the trained (unwrapped) model.
    """

    model_fn: Callable[[], Any]
    identity: str
    start_step: int = 0
    data_seed: Optional[int] = None
    save_steps: Tuple[int, ...] = ()
    wrap: Optional[Callable[[Any], Any]] = None
    metrics: Sequence = ()
    callbacks: Sequence = ()
    track: Dict[str, Any] = dataclasses.field(default_factory=dict)
    model: Any = None


def train_from_start(spec: config_lib.ExperimentSpec, start: TrainStart, logdir: str, *,
                     seed: int = 0, strategy: str = "default", tpu: Optional[str] = None,
                     verbose=0, extra_callbacks: Sequence = ()) -> Dict:
    """The trainer of :func:`run_experiment`, started from ``start`` instead of gin's model.

    Trains steps ``start.start_step .. spec.training.total_steps`` in ``logdir`` with the
    same loop as ``rigl-train`` (checkpoints every ``training.save_freq`` steps, bitwise
    resumption from the latest checkpoint, summaries, evaluation, ``results.json``).

    Args:
      spec: the experiment spec (``config.resolve()`` or ``config.make_spec(...)``).
      start: the starting point.
      logdir: the training's directory.
      seed: seed of the updater, the held-out summary batch and (unless
        ``start.data_seed``) the data order.
      strategy: 'default', 'mirrored' or 'tpu' ('multi_worker' needs the strategy before
        any other TensorFlow op and is available through rigl-train only).
      tpu: TPU address for 'tpu'.
      verbose: ``model.fit`` verbosity (0: silent, no log lines).
      extra_callbacks: further Keras callbacks.

    Returns:
      The results dict (also ``logdir/results.json``); ``start.model`` is the trained model.
    """
    if strategy not in STRATEGIES or strategy == "multi_worker":
        raise ValueError(f"`strategy` must be one of 'default', 'mirrored', 'tpu' for a "
                         f"training with a given start, got {strategy!r}.")
    if not isinstance(start, TrainStart):
        raise TypeError(f"`start` must be a TrainStart, got {type(start).__name__}.")
    check_logdir_path(logdir)
    t = spec.training
    if not 0 <= int(start.start_step) < t.total_steps:
        raise ValueError(f"`start.start_step`={start.start_step!r} must be in [0, "
                         f"training.total_steps={t.total_steps}).")
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    dist = make_strategy(strategy, tpu)
    keras.utils.set_random_seed(int(seed))
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(t.mixed_precision)
    try:
        with _lock(logdir, dist, "train_eval", False):
            return _run(spec, start.identity, {}, t, dist, logdir, int(seed), "train_eval",
                        strategy, False, False, verbose, extra_callbacks, time.time(),
                        start=start)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def main(argv):
    """absl entry point: runs :func:`run_experiment` with the command-line flags."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # TF's INFO logs (checkpoint sharding...) are noise
        logging.set_verbosity(logging.WARNING)
    from rigl_tf.errors import report_errors

    code = report_errors("rigl-train", lambda: run_experiment(
        gin_config=FLAGS.gin_config, gin_bindings=FLAGS.gin_bindings,
        preload_gin_config=FLAGS.preload_gin_config, logdir=FLAGS.logdir, seed=FLAGS.seed,
        mode=FLAGS.mode, strategy=FLAGS.strategy, tpu=FLAGS.tpu, overwrite=FLAGS.overwrite,
        dry_run=FLAGS.dry_run, verbose=progress_verbosity(FLAGS.progress)),
        debug=FLAGS.debug)
    if code:
        sys.exit(code)


def run():
    """Console-script entry point (``rigl-train``; see rigl_tf/commands/train.py)."""
    from rigl_tf.commands import train as command

    command.run()


if __name__ == "__main__":
    run()
