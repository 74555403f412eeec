"""Gradient flow: the norm of the (masked) gradient of the mean loss over a data set.

Evci et al. measure gradient flow as the L2 norm of the gradient restricted to the active
connections; the gradient is that of the mean loss over the whole data set, so batches are
summed (per-example losses) and divided by the total number of examples once, rather than
averaging per-batch norms.
"""

import numpy as np
import tensorflow as tf

from rigl_tf.analysis import _common


def mean_gradients(
    model,
    data,
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
    training=False,
):
    """Gradient of the mean loss over `data` w.r.t. `model.trainable_variables`, masked.

    Args:
      model: a Keras model producing logits.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      masks: optional list aligned with `model.trainable_variables` (`None` or 0/1 array per
        variable); masked-out entries of the gradient are set to zero.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss `loss_fn(y_true, logits)`; defaults to sparse
        categorical cross-entropy from logits.
      training: passed to the model call. With `training=True` layers such as batch norm
        use batch statistics; any state they update (moving averages) is restored afterwards.

    Returns:
      `(gradients, num_examples)`: a list of float64 numpy arrays aligned with
      `model.trainable_variables`, and the number of examples seen.
    """
    masks = _common.normalize_masks(model, masks)
    variables = model.trainable_variables
    accumulators = [tf.Variable(tf.zeros(v.shape, tf.float64), trainable=False) for v in variables]

    @tf.function(reduce_retracing=True)
    def accumulate(x, y):
        with tf.GradientTape() as tape:
            total = _common.loss_sum(y, model(x, training=training), loss_fn)
        grads = tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for acc, g in zip(accumulators, grads):
            acc.assign_add(tf.cast(g, tf.float64))
        return tf.shape(x)[0]

    num_examples = 0
    with _common.temporary_weights(model):  # undoes moving-statistics updates in training mode
        for x, y in _common.iterate_batches(data, batch_size):
            num_examples += int(accumulate(x, y))
    if num_examples == 0:
        raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
    grads = []
    for acc, mask in zip(accumulators, masks):
        g = acc.numpy() / num_examples
        grads.append(g if mask is None else g * mask)
    return grads, num_examples


def gradient_norm(
    model,
    data,
    masks=None,
    per_variable=False,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
    training=False,
):
    """L2 norm of the masked gradient of the mean loss over `data` (gradient flow).

    Args:
      model: a Keras model producing logits.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      masks: optional list aligned with `model.trainable_variables` (`None` or 0/1 array per
        variable); only active entries contribute to the norm.
      per_variable: also report the norm of each variable's gradient, keyed by `v.path`.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss `loss_fn(y_true, logits)`.
      training: passed to the model call (see `mean_gradients`).

    Returns:
      A dict with `norm` (||g||_2), `squared_norm` (||g||_2^2), `num_examples` and, when
      `per_variable` is true, `per_variable`: `{path: {'norm', 'squared_norm'}}`.
    """
    grads, num_examples = mean_gradients(model, data, masks, batch_size, loss_fn, training)
    squared = [float(np.sum(np.square(g))) for g in grads]
    total = float(sum(squared))
    result = {"norm": float(np.sqrt(total)), "squared_norm": total, "num_examples": num_examples}
    if per_variable:
        result["per_variable"] = {
            v.path: {"norm": float(np.sqrt(s)), "squared_norm": s}
            for v, s in zip(model.trainable_variables, squared)
        }
    return result
