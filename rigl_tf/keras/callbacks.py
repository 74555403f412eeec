"""Small single-purpose Keras callbacks for sparse training runs.

* :class:`SparsitySummary`: per-weight and total sparsity, drop fraction and mask images.
* :class:`GradientFlow`: norm of the masked gradient on a fixed held-out batch, every N
  steps and just before / just after every mask update.
* :class:`DistanceToInit`: L2 and cosine distance of the trainable weights to their
  initial values.
* :class:`MetricsSummary`: the epoch logs (train and validation metrics) and the learning
  rate, written against the optimizer step.
* :class:`NanGuard`: stops training on the first NaN/Inf loss.

Every summary is written with ``step = optimizer.iterations`` (the number of completed
training steps), so curves line up across restarts. Writers are
``tf.summary.SummaryWriter`` objects or a directory (a writer is created there).
"""

import math
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_resource_variable_ops, resource_variable_ops

from rigl_tf.keras.wrapper import get_mask


def _metadata(plugin_name: str):
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin_name
    return meta


def write_scalar(tag: str, value, step=None):
    """Writes a scalar summary readable by TensorBoard's scalars plugin.

    Uses only core TensorFlow (``tf.summary.write``), so TensorBoard need not be installed
    to write logs.

    Args:
      tag: the summary tag.
      value: a number or scalar tensor.
      step: the step (default: the writer's default step).
    """
    tf.summary.write(tag, tf.cast(tf.convert_to_tensor(value), tf.float32), step=step,
                     metadata=_metadata("scalars"))


def write_image(tag: str, image, step=None):
    """Writes a 2-D array in [0, 1] as a grayscale PNG image summary (TensorBoard images).

    Args:
      tag: the summary tag.
      image: a 2-D tensor or array with values in [0, 1].
      step: the step (default: the writer's default step).
    """
    image = tf.convert_to_tensor(image, tf.float32)
    pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    png = tf.image.encode_png(pixels[:, :, None])
    shape = tf.shape(pixels)
    tensor = tf.stack([tf.strings.as_string(shape[1]), tf.strings.as_string(shape[0]), png])
    tf.summary.write(tag, tensor, step=step, metadata=_metadata("images"))


def write_histogram(tag: str, values, step=None, bins: int = 30):
    """Writes a histogram summary (TensorBoard's histograms plugin) of ``values``.

    Written with core TensorFlow only: the plugin's format is a float64 tensor of shape
    ``[bins, 3]`` holding (left edge, right edge, count) per bucket.

    Args:
      tag: the summary tag.
      values: an array of any shape (flattened); empty gives zero buckets.
      step: the step (default: the writer's default step).
      bins: number of equal-width buckets.
    """
    values = np.asarray(values, np.float64).ravel()
    if values.size:
        counts, edges = np.histogram(values, bins=bins)
        buckets = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    else:
        buckets = np.zeros((0, 3), np.float64)
    tf.summary.write(tag, tf.constant(buckets, tf.float64), step=step,
                     metadata=_metadata("histograms"))


def _check_every(every_n_steps, name="every_n_steps"):
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, (int, np.integer)) or (
        every_n_steps < 1
    ):
        raise ValueError(f"`{name}` must be an integer >= 1, got {every_n_steps!r}.")
    return int(every_n_steps)


def _as_writer(writer, name="writer"):
    """Returns a summary writer for a writer, a directory path, or None (no summaries)."""
    if writer is None:
        return None
    if isinstance(writer, (str, bytes)) or hasattr(writer, "__fspath__"):
        return tf.summary.create_file_writer(str(writer))
    if not hasattr(writer, "as_default"):
        raise TypeError(
            f"`{name}` must be a tf.summary.SummaryWriter, a directory path or None, got "
            f"{type(writer).__name__}."
        )
    return writer


def _step(model) -> int:
    return read_step(model.optimizer.iterations)


def read_step(iterations) -> int:
    """The value of an optimizer's step counter, read eagerly.

    Callbacks read it several times per batch; a plain ``ResourceVariable`` (no
    distribution strategy) is read with one ``ReadVariableOp``, about 4x cheaper than
    ``.numpy()`` (which adds an identity op and gradient recording). Anything else, e.g.
    a distributed variable, is read with ``.numpy()``.
    """
    var = getattr(iterations, "value", iterations)  # the tf.Variable behind a Keras one
    if type(var) is resource_variable_ops.ResourceVariable and tf.executing_eagerly():
        return int(gen_resource_variable_ops.read_variable_op(var.handle, var.dtype))
    return int(iterations.numpy())


def _sparse_optimizer(model):
    """The model's SparseOptimizer (looking through wrappers such as Keras's
    LossScaleOptimizer, which expose ``inner_optimizer``), else None."""
    opt = getattr(model, "optimizer", None)
    while opt is not None:
        if hasattr(opt, "updater") and hasattr(opt, "last_drop_fraction"):
            return opt
        opt = getattr(opt, "inner_optimizer", None)
    return None


def _tf_value(v):
    return v.value if isinstance(v, keras.Variable) else v


def mask_image(mask):
    """Reshapes a mask to a ``(1, H, W, 1)`` float image (2-D: rows x last axis).

    Args:
      mask: a mask tensor of any rank.

    Returns:
      A float32 tensor usable with ``tf.summary.image``.
    """
    mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
    if mask.shape.rank <= 1:
        image = tf.reshape(mask, [1, -1])
    elif mask.shape.rank == 2:
        image = mask
    else:
        image = tf.reshape(mask, [-1, mask.shape[-1]])
    return image[None, :, :, None]


def _masked_items(model):
    """(key, weight, mask) for every masked weight; [] for a model without wrappers."""
    from rigl_tf.keras.model_ops import masked_weights

    return masked_weights(model)


class SparsitySummary(keras.callbacks.Callback):
    """Writes per-weight and total sparsity, the last drop fraction and mask images.

    Scalars: ``sparsity/<key>``, ``sparsity/total``; with a ``SparseOptimizer`` also
    ``mask_update/drop_fraction``, ``mask_update/num_changed`` and
    ``mask_update/last_step``. Images: ``mask/<key>`` (the mask reshaped to 2-D).
    Histograms: ``weights/<key>``, the values of the active (unmasked) weights.

    Args:
      writer: a ``tf.summary.SummaryWriter`` or a directory.
      every_n_steps: write after every N-th training step (and at train begin).
      images: also write the mask images.
    """

    def __init__(self, writer, every_n_steps: int = 100, images: bool = True):
        super().__init__()
        self.writer = _as_writer(writer)
        self.every_n_steps = _check_every(every_n_steps)
        self.images = bool(images)

    def on_train_begin(self, logs=None):
        self.write(_step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every_n_steps == 0:
            self.write(step)

    def write(self, step: int):
        """Writes the summaries at ``step``."""
        items = _masked_items(self.model)
        if not items:
            return
        with self.writer.as_default(step=step):
            total, active = 0, 0.0
            for key, weight, mask in items:
                size = int(np.prod(mask.shape))
                ones = float(tf.reduce_sum(_tf_value(mask)))
                total += size
                active += ones
                write_scalar(f"sparsity/{key}", 1.0 - ones / size)
                if self.images:
                    write_image(f"mask/{key}", mask_image(_tf_value(mask))[0, :, :, 0])
                m = np.asarray(_tf_value(mask)) > 0
                write_histogram(f"weights/{key}", np.asarray(_tf_value(weight))[m])
            write_scalar("sparsity/total", 1.0 - active / total)
            opt = _sparse_optimizer(self.model)
            if opt is not None and opt.built:
                write_scalar("mask_update/drop_fraction", opt.last_drop_fraction)
                write_scalar("mask_update/num_changed", opt.last_num_changed)
                write_scalar("mask_update/last_step", opt.last_update_step)
        self.writer.flush()


class GradientFlow(keras.callbacks.Callback):
    """Measures the masked gradient of the loss on a fixed held-out batch.

    Every ``every_n_steps`` steps it writes ``gradient_flow/norm``,
    ``gradient_flow/squared_norm`` and ``gradient_flow/norm/<variable path>``. With a
    ``SparseOptimizer``, it also measures just before a step that updates the masks (at
    batch begin, when ``optimizer.updates_masks_in_step(iterations)`` is true) and just
    after it (at batch end; the difference includes that step's weight update), writing
    ``gradient_flow/mask_update/{before,after,change}`` (squared norms) at the update's
    event step (``iterations`` after that step, e.g. 100, 200, ... for update_freq 100).
    Gradients of masked weights are multiplied by their masks (inactive connections
    carry no gradient flow); regularization losses are not included.

    Args:
      x: the held-out inputs (one batch).
      y: the held-out labels.
      every_n_steps: write after every N-th training step (and at train begin).
      writer: a ``tf.summary.SummaryWriter``, a directory, or None (values are only kept
        in ``history``).
      loss_fn: ``loss_fn(y, predictions) -> scalar``; default: the compiled loss of the
        model (``model.loss``), else sparse categorical cross-entropy on logits.
      training: run the model in training mode (BatchNorm batch statistics; note that in
        Keras 3 this also updates the moving statistics).
      per_variable: also write one norm per trainable variable.

    Attributes:
      history: list of dicts ``{'step', 'kind', 'squared_norm'}`` with kind 'periodic',
        'before' or 'after'.
    """

    def __init__(self, x, y, every_n_steps: int = 100, writer=None, loss_fn=None,
                 training: bool = False, per_variable: bool = True):
        super().__init__()
        self.x = tf.convert_to_tensor(x)
        self.y = tf.convert_to_tensor(y)
        self.every_n_steps = _check_every(every_n_steps)
        self.writer = _as_writer(writer)
        self.loss_fn = loss_fn
        self.training = bool(training)
        self.per_variable = bool(per_variable)
        self.history: List[Dict] = []
        self._fn = None
        self._before = None

    def _loss_fn(self):
        if self.loss_fn is not None:
            return self.loss_fn
        loss = getattr(self.model, "loss", None)
        if loss is not None and not isinstance(loss, (str, dict, list, tuple)):
            return loss
        if isinstance(loss, str):
            return keras.losses.get(loss)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def _build(self):
        model = self.model
        variables = list(model.trainable_variables)
        masks = [get_mask(v) for v in variables]
        loss_fn = self._loss_fn()
        training = self.training

        @tf.function
        def grads(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=training))
            gs = tape.gradient(loss, variables)
            out = []
            for g, v, m in zip(gs, variables, masks):
                if g is None:
                    g = tf.zeros(v.shape, tf.float32)
                g = tf.convert_to_tensor(g)
                if m is not None:
                    g = g * tf.cast(_tf_value(m), g.dtype)
                out.append(tf.reduce_sum(tf.square(tf.cast(g, tf.float32))))
            return out

        self._variables = variables
        self._fn = grads

    def measure(self):
        """Returns (total squared norm, list of per-variable squared norms) now."""
        if self._fn is None:
            self._build()
        per_var = [float(v) for v in self._fn(self.x, self.y)]
        return float(sum(per_var)), per_var

    def on_train_begin(self, logs=None):
        self._fn = None
        self._write_periodic(_step(self.model))

    def on_train_batch_begin(self, batch, logs=None):
        opt = _sparse_optimizer(self.model)
        self._before = None
        if opt is None:
            return
        step = _step(self.model)
        if opt.updates_masks_in_step(step):
            self._before = (opt.update_step_of(step), self.measure()[0])

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if self._before is not None:
            update_step, before = self._before
            self._before = None
            after = self.measure()[0]
            self.history.append({"step": update_step, "kind": "before", "squared_norm": before})
            self.history.append({"step": update_step, "kind": "after", "squared_norm": after})
            if self.writer is not None:
                with self.writer.as_default(step=update_step):
                    write_scalar("gradient_flow/mask_update/before", before)
                    write_scalar("gradient_flow/mask_update/after", after)
                    write_scalar("gradient_flow/mask_update/change", after - before)
        if step % self.every_n_steps == 0:
            self._write_periodic(step)

    def _write_periodic(self, step):
        total, per_var = self.measure()
        self.history.append({"step": step, "kind": "periodic", "squared_norm": total})
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            write_scalar("gradient_flow/squared_norm", total)
            write_scalar("gradient_flow/norm", math.sqrt(total))
            if self.per_variable:
                for v, sq in zip(self._variables, per_var):
                    write_scalar(f"gradient_flow/norm/{v.path}", math.sqrt(sq))
        self.writer.flush()


def cosine_distance(a, b) -> float:
    """``1 - <a, b> / (|a| |b|)`` of two arrays (0 if either is all zeros)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(1.0 - np.dot(a, b) / denom) if denom > 0 else 0.0


class DistanceToInit(keras.callbacks.Callback):
    """Writes the L2 and cosine distance of the trainable weights to their initial values.

    Scalars ``distance_to_init/l2/<path>``, ``distance_to_init/cosine/<path>`` and the
    same over all trainable weights concatenated (``.../all``).

    Args:
      every_n_steps: write after every N-th training step.
      writer: a ``tf.summary.SummaryWriter``, a directory, or None (only ``history``).
      initial_weights: the reference point as a list of arrays aligned with
        ``model.trainable_variables``; default: their values at train begin. Pass the
        step-0 values when resuming a run, or distances restart from zero.

    Attributes:
      history: list of dicts ``{'step', 'l2', 'cosine'}`` (over all weights).
    """

    def __init__(self, every_n_steps: int = 100, writer=None,
                 initial_weights: Optional[Sequence[np.ndarray]] = None):
        super().__init__()
        self.every_n_steps = _check_every(every_n_steps)
        self.writer = _as_writer(writer)
        self.initial_weights = (
            None if initial_weights is None else [np.asarray(w) for w in initial_weights]
        )
        self.history: List[Dict] = []

    def on_train_begin(self, logs=None):
        variables = self.model.trainable_variables
        if self.initial_weights is None:
            self.initial_weights = [np.asarray(v.numpy()) for v in variables]
        shapes = [tuple(v.shape) for v in variables]
        given = [tuple(w.shape) for w in self.initial_weights]
        if shapes != given:
            raise ValueError(
                f"`initial_weights` shapes {given} do not match the model's trainable "
                f"variables {shapes}."
            )

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every_n_steps == 0:
            self.write(step)

    def distances(self):
        """Returns ({path: (l2, cosine)}, (l2, cosine) over all weights) now."""
        per_var = {}
        now_all, init_all = [], []
        for v, w0 in zip(self.model.trainable_variables, self.initial_weights):
            w = np.asarray(v.numpy())
            per_var[v.path] = (float(np.linalg.norm((w - w0).ravel())), cosine_distance(w, w0))
            now_all.append(w.ravel())
            init_all.append(w0.ravel())
        now_all = np.concatenate(now_all) if now_all else np.zeros(0)
        init_all = np.concatenate(init_all) if init_all else np.zeros(0)
        total = (float(np.linalg.norm(now_all - init_all)), cosine_distance(now_all, init_all))
        return per_var, total

    def write(self, step: int):
        """Writes the summaries at ``step``."""
        per_var, (l2, cos) = self.distances()
        self.history.append({"step": step, "l2": l2, "cosine": cos})
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for path, (vl2, vcos) in per_var.items():
                write_scalar(f"distance_to_init/l2/{path}", vl2)
                write_scalar(f"distance_to_init/cosine/{path}", vcos)
            write_scalar("distance_to_init/l2/all", l2)
            write_scalar("distance_to_init/cosine/all", cos)
        self.writer.flush()


class MetricsSummary(keras.callbacks.Callback):
    """Writes the epoch logs and the learning rate against the optimizer step.

    Keys ``val_<name>`` are written as ``<val_prefix>/<name>``, the others as
    ``<train_prefix>/<name>``; the learning rate as ``learning_rate``.

    Args:
      writer: a ``tf.summary.SummaryWriter`` or a directory.
      train_prefix: tag prefix of training metrics.
      val_prefix: tag prefix of validation metrics.
    """

    def __init__(self, writer, train_prefix: str = "train", val_prefix: str = "test"):
        super().__init__()
        self.writer = _as_writer(writer)
        self.train_prefix = train_prefix
        self.val_prefix = val_prefix

    def on_epoch_end(self, epoch, logs=None):
        step = _step(self.model)
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                try:
                    value = float(np.asarray(value))
                except (TypeError, ValueError):
                    continue
                if name.startswith("val_"):
                    write_scalar(f"{self.val_prefix}/{name[4:]}", value)
                else:
                    write_scalar(f"{self.train_prefix}/{name}", value)
            lr = getattr(self.model.optimizer, "learning_rate", None)
            if lr is not None:
                write_scalar("learning_rate", float(np.asarray(lr)))
        self.writer.flush()


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records where it stopped, so callers can
    skip saving the diverged state and report it.

    Args:
      monitor: the batch log to check.

    Attributes:
      failed_step: the optimizer step after the bad batch (None if none was seen).
      message: a human-readable explanation (None if none was seen).
      reason: what was seen, e.g. "`loss` is nan at step 3" (None if none was seen).
    """

    def __init__(self, monitor: str = "loss"):
        super().__init__()
        self.monitor = monitor
        self.failed_step = None
        self.message = None
        self.reason = None

    def on_train_begin(self, logs=None):
        self.failed_step = None
        self.message = None
        self.reason = None

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(np.asarray(value))
        if math.isfinite(value):
            return
        self.failed_step = _step(self.model)
        self.reason = f"`{self.monitor}` is {value} at step {self.failed_step}"
        self.message = (
            f"Training diverged: {self.reason}; "
            f"stopped (lower the learning rate, add gradient clipping, or check the data)."
        )
        print(self.message)
        self.model.stop_training = True


__all__ = [
    "SparsitySummary",
    "GradientFlow",
    "DistanceToInit",
    "MetricsSummary",
    "NanGuard",
    "mask_image",
    "write_scalar",
    "write_image",
    "cosine_distance",
]
