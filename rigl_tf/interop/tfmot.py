"""Bridges to tensorflow-model-optimization (tfmot), whose pruning API is tf_keras only.

Two directions:

* :func:`mask_update_callback` runs a rigl_tf updater (RigL, SET, ...) on a tf_keras model
  wrapped with ``tfmot.sparsity.keras.prune_low_magnitude``: the tfmot masks
  (``pruning_vars``) are rewritten in place with exact counts; tfmot keeps applying them.
  Use :func:`prune_low_magnitude_static` to wrap a model so that tfmot itself prunes only
  once, at step 0, and leaves topology changes to the updater.
* :func:`from_tfmot` converts a tfmot-pruned tf_keras model into an equivalent Keras 3
  sparse model (SparseWrapper layers with the same masks and weights).

Importing tensorflow_model_optimization sets ``TF_USE_LEGACY_KERAS=1`` in the process
environment, which would make a later first use of ``tf.keras`` resolve to tf_keras; this
module restores the variable after the import. It is never imported by ``import rigl_tf``.
"""

import os

import numpy as np
import tensorflow as tf

_INSTALL_HINT = (
    "rigl_tf.interop.tfmot needs tensorflow-model-optimization and tf_keras: "
    "pip install 'rigl_tf[tfmot]'"
)


def import_tfmot():
    """Imports (tfmot, tf_keras) without leaving TF_USE_LEGACY_KERAS set.

    Raises:
      ImportError: with the install hint if either package is missing.
    """
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot  # noqa: F401
        import tf_keras
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot, tf_keras


def _pruned_layers(model):
    tfmot, _ = import_tfmot()
    wrapper_cls = tfmot.sparsity.keras.PruneLowMagnitude if hasattr(
        tfmot.sparsity.keras, "PruneLowMagnitude") else None
    if wrapper_cls is None:
        from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
            PruneLowMagnitude as wrapper_cls,
        )
    out = []

    def visit(m):
        for layer in m.layers:
            if isinstance(layer, wrapper_cls):
                out.append(layer)
            elif hasattr(layer, "layers"):
                visit(layer)

    visit(model)
    return out


def _check_tfmot_model(model, name="model"):
    layers = _pruned_layers(model)
    if not layers:
        raise ValueError(
            f"`{name}` has no tfmot PruneLowMagnitude layers; wrap it with "
            f"tfmot.sparsity.keras.prune_low_magnitude (or prune_low_magnitude_static) first."
        )
    return layers


def prune_low_magnitude_static(model, sparsity):
    """Wraps a tf_keras model for tfmot with exact magnitude masks set now, and a tfmot
    schedule that never prunes again, so topology changes come only from
    :func:`mask_update_callback` (tfmot keeps applying the masks every step).

    Args:
      model: a built tf_keras model.
      sparsity: sparsity of every prunable weight, in [0, 1); each mask gets exactly
        ``round((1 - sparsity) * size)`` ones (the largest magnitudes).

    Returns:
      The tfmot-wrapped model.
    """
    from rigl_tf.sparsity.distributions import check_sparsity, num_active
    from rigl_tf.sparsity.masks import topk_mask_np

    tfmot, _ = import_tfmot()
    sparsity = check_sparsity(sparsity)
    # tfmot would prune at begin_step; put it beyond any run so only our masks are used.
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=2**30)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    for _, weight, mask in masked_variables(wrapped):
        w = weight.numpy()
        m = topk_mask_np(np.abs(w), num_active(1.0 - sparsity, w.size))
        mask.assign(m.astype(mask.dtype.as_numpy_dtype))
        weight.assign(w * m)
    return wrapped


def masked_variables(model):
    """(key, weight, mask) triples of a tfmot-pruned model; key is 'layer/weight-name'."""
    out = []
    for layer in _check_tfmot_model(model):
        for weight, mask, _ in layer.pruning_vars:
            attr = weight.name.split("/")[-1].split(":")[0]
            out.append((f"{layer.layer.name}/{attr}", weight, mask))
    return out


def mask_update_callback(model, updater, data=None, loss_fn=None, seed=0):
    """A tf_keras callback that runs a rigl_tf updater on a tfmot-pruned model.

    After each training batch whose event step (``iterations`` after the batch) is an
    update step of ``updater`` (the reference's convention), new
    masks are computed with the same routine SparseOptimizer uses and written into the
    tfmot mask variables; weights at newly grown positions are zeroed and the optimizer's
    slots are reset where a connection is not kept.

    Args:
      model: a tf_keras model wrapped with ``prune_low_magnitude``.
      updater: a rigl_tf updater or its registered name (e.g. ``'rigl'``).
      data: ``(x, y)`` batch used for the dense gradient (required by gradient-based
        updaters such as RigL and rigl_inverted).
      loss_fn: loss ``fn(y_true, y_pred)``; defaults to the compiled loss.
      seed: unused placeholder for API symmetry (the updater carries its seed).

    Returns:
      A ``tf_keras.callbacks.Callback`` (add it next to tfmot's ``UpdatePruningStep``).

    Raises:
      ValueError: for a model without tfmot wrappers, a gradient-based updater without
        ``data``, or an updater keeping per-weight state (SNFS), which is unsupported here.
    """
    from rigl_tf.keras import updaters as updaters_lib

    _, tf_keras = import_tfmot()
    updater = updaters_lib.get_updater(updater)
    triples = masked_variables(model)
    if updater.needs_gradients and data is None:
        raise ValueError(
            f"Updater {updater.name!r} needs gradients: pass `data=(x, y)` to "
            f"mask_update_callback."
        )
    if updater.needs_state:
        raise ValueError(
            f"Updater {updater.name!r} keeps per-weight state and is not supported on tfmot "
            f"models; use rigl_tf.SparseOptimizer on a Keras 3 model."
        )
    items = [
        updaters_lib.MaskedVar(i, key, w, m, tuple(w.shape), int(np.prod(w.shape)))
        for i, (key, w, m) in enumerate(triples)
    ]
    updater.build(items)

    class _MaskUpdate(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # The event step of an update right after this batch (Updater.event_offset).
            step = int(self.model.optimizer.iterations.numpy()) - 1 + updater.event_offset
            if not bool(updater.should_update(step)):
                return
            weights = [tf.cast(it.var, tf.float32) for it in items]
            masks = [tf.cast(it.mask, tf.float32) for it in items]
            grads = [None] * len(items)
            if updater.needs_gradients:
                x, y = data
                fn = loss_fn or tf_keras.losses.get(self.model.loss)
                with tf.GradientTape() as tape:
                    loss = fn(tf.convert_to_tensor(y), self.model(tf.convert_to_tensor(x),
                                                                  training=False))
                grads = [tf.cast(g, tf.float32) for g in
                         tape.gradient(loss, [it.var for it in items])]
            new_masks = updater.compute_masks(
                tf.constant(step, tf.int64), weights, masks, grads, [None] * len(items),
                _lr_info(self.model.optimizer, step))
            optimizer = self.model.optimizer
            slot_names = optimizer.get_slot_names() if hasattr(optimizer, "get_slot_names") else []
            for it, w, old, new in zip(items, weights, masks, new_masks):
                keep = new - new * (1.0 - old)
                it.mask.assign(tf.cast(new, it.mask.dtype))
                it.var.assign(tf.cast(w * keep, it.var.dtype))
                for name in slot_names:
                    try:
                        slot = optimizer.get_slot(it.var, name)
                    except (KeyError, ValueError):
                        continue
                    slot.assign(slot * tf.cast(keep, slot.dtype))
            self.last_update_step = step

    return _MaskUpdate()


def _lr_info(optimizer, step):
    """(lr at ``step``, peak lr) of a tf_keras optimizer, for the 'lr' drop fraction."""
    lr = optimizer.learning_rate
    if callable(lr) and not hasattr(lr, "assign"):
        peak = getattr(lr, "peak_learning_rate", None)
        return float(lr(step)), float(peak if peak is not None else lr(0))
    value = float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
    return value, value  # a constant learning rate: the fraction stays f0


def _sequential_to_keras3(model):
    """Rebuilds a tf_keras Sequential model layer by layer as a Keras 3 Sequential model."""
    import keras

    if type(model).__name__ != "Sequential":
        raise ValueError(
            f"Only tf_keras Sequential models are rebuilt automatically (got "
            f"{type(model).__name__}); pass `keras3_model`, a Keras 3 twin of the unpruned "
            f"architecture with the same layer names."
        )
    layers = [keras.Input(tuple(model.input_shape[1:]))]
    for layer in model.layers:
        config = dict(layer.get_config())
        for legacy in ("batch_input_shape", "input_shape"):
            config.pop(legacy, None)
        try:
            layers.append(keras.layers.deserialize(
                {"module": "keras.layers", "class_name": type(layer).__name__, "config": config}))
        except Exception as e:
            raise ValueError(
                f"Could not rebuild tf_keras layer {layer.name!r} ({type(layer).__name__}) in "
                f"Keras 3 ({e}); pass `keras3_model`."
            ) from e
    return keras.Sequential(layers, name=model.name)


def from_tfmot(model, keras3_model=None):
    """Converts a tfmot-pruned tf_keras model to an equivalent Keras 3 sparse model.

    Args:
      model: a tf_keras model wrapped with ``prune_low_magnitude`` (trained or not).
      keras3_model: optional Keras 3 twin of the *unpruned* architecture with the same
        layer names; by default it is rebuilt from the stripped model's JSON config.

    Returns:
      A Keras 3 model with SparseWrappers whose masks equal tfmot's masks and whose weights
      equal tfmot's (masked) weights; its predictions match the tfmot model's.

    Raises:
      ValueError: if the model has no tfmot wrappers, the config cannot be converted, or
        shapes differ.
    """
    import keras

    import rigl_tf

    tfmot, _ = import_tfmot()
    triples = masked_variables(model)
    masks = {key: m.numpy() for key, _, m in triples}
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    if keras3_model is None:
        keras3_model = _sequential_to_keras3(stripped)
    names3 = {layer.name for layer in rigl_tf.keras.model_ops.iter_layers(keras3_model)}
    for layer in stripped.layers:
        if not layer.weights:
            continue
        if layer.name not in names3:
            raise ValueError(
                f"`keras3_model` has no layer named {layer.name!r}; layer names must match "
                f"the tf_keras model's."
            )
        target = keras3_model.get_layer(layer.name)
        values = layer.get_weights()
        shapes = [tuple(w.shape) for w in target.weights]
        if shapes != [tuple(v.shape) for v in values]:
            raise ValueError(
                f"Layer {layer.name!r}: weight shapes {shapes} of `keras3_model` differ from "
                f"the tf_keras model's {[tuple(v.shape) for v in values]}."
            )
        target.set_weights(values)
    pruned_names = {key.split("/")[0] for key in masks}
    sparse = rigl_tf.sparsify(
        keras3_model, 0.0, "uniform",
        keep_dense=lambda layer: layer.name not in pruned_names,
        masks=masks, min_active=0,
    )
    return sparse
