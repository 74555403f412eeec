"""Shared plumbing for the analysis functions: data batches, losses, masks and weights.

Conventions used by every module in `rigl_tf.analysis`:

* models output logits; the default loss is sparse categorical cross-entropy from logits,
  and callers may pass `loss_fn(y_true, logits)` returning per-example losses (a scalar is
  taken as the batch mean);
* `data` is a tuple of numpy arrays `(x, y)` or a batched `tf.data.Dataset` of `(x, y)`;
* `masks` is a list aligned with `model.trainable_variables`, each entry `None` (a dense
  variable) or a 0/1 array of the variable's shape;
* weight lists are lists of numpy arrays aligned with `model.trainable_variables`, or, where
  a function says so, with `model.weights` (trainable and non-trainable, e.g. batch-norm
  moving statistics).
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from rigl_tf import progress

DEFAULT_BATCH_SIZE = 256


def iterate_batches(data, batch_size=DEFAULT_BATCH_SIZE):
    """Yields `(x, y)` tensor batches from an `(x, y)` tuple or a batched `tf.data.Dataset`.

    Args:
      data: a tuple/list `(x, y)` of arrays with the same first dimension, or a
        `tf.data.Dataset` whose elements are batches `(x, y, ...)` (extra elements such as
        sample weights are ignored).
      batch_size: batch size used to split an `(x, y)` tuple; a dataset keeps its own
        batching.

    Yields:
      `(x, y)` pairs of tensors.

    Raises:
      TypeError: if `data` is neither a dataset nor an `(x, y)` pair.
      ValueError: if `batch_size` is not a positive integer or `x` and `y` differ in length.
    """
    if isinstance(data, tf.data.Dataset):
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise TypeError(
                    "data: a tf.data.Dataset must yield (x, y) batches; got an element of "
                    f"type {type(element).__name__}."
                )
            yield element[0], element[1]
        return
    x, y = _check_pair(data)
    batch_size = check_positive_int(batch_size, "batch_size")
    for start in range(0, len(x), batch_size):
        yield (
            tf.convert_to_tensor(x[start : start + batch_size]),
            tf.convert_to_tensor(y[start : start + batch_size]),
        )


def materialize_batches(data, batch_size=DEFAULT_BATCH_SIZE):
    """Returns the list of `(x, y)` batches of `data` (see `iterate_batches`) and the count.

    Used by functions that sweep the data many times (Hessian rows, Lanczos steps).

    Returns:
      `(batches, num_examples)`.

    Raises:
      ValueError: if the data holds no examples.
    """
    batches = list(iterate_batches(data, batch_size))
    num_examples = int(sum(int(tf.shape(x)[0]) for x, _ in batches))
    if num_examples == 0:
        raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
    return batches, num_examples


def _check_pair(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "data: expected a tuple (x, y) of arrays or a batched tf.data.Dataset; got "
            f"{type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            + "."
        )
    x, y = data
    if len(x) != len(y):
        raise ValueError(
            f"data: x has {len(x)} examples but y has {len(y)}; they must have the same " "length."
        )
    return x, y


def check_positive_int(value, name):
    """Returns `value` as an int if it is a positive integer, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer; got {value!r}.")
    return int(value)


def check_choice(value, name, allowed):
    """Raises ValueError naming `name` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(
            f"{name}: got {value!r}; allowed values are {', '.join(map(repr, allowed))}."
        )
    return value


def loss_sum(y, logits, loss_fn=None):
    """Sum over the batch of the per-example losses.

    Args:
      y: labels (integer class ids for the default loss).
      logits: model outputs.
      loss_fn: optional `loss_fn(y_true, logits)` returning per-example losses of shape
        `[batch]`; a scalar result is taken as the batch mean. Defaults to sparse
        categorical cross-entropy from logits.

    Returns:
      A scalar tensor.
    """
    if loss_fn is None:
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    else:
        losses = tf.convert_to_tensor(loss_fn(y, logits))
    if losses.shape.rank == 0:
        return losses * tf.cast(tf.shape(logits)[0], losses.dtype)
    return tf.reduce_sum(losses)


def tf_variable(variable):
    """The `tf.Variable` behind a Keras 3 variable (what tapes and accumulators watch)."""
    return (
        getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable
    )


def normalize_masks(model, masks, name="masks"):
    """Validates `masks` against `model.trainable_variables` and returns boolean arrays.

    Args:
      model: a Keras model.
      masks: `None`, or a list aligned with `model.trainable_variables` whose entries are
        `None` (dense variable) or 0/1 arrays/tensors of the variable's shape.
      name: parameter name used in error messages.

    Returns:
      A list with one entry per trainable variable: `None` or a numpy bool array.

    Raises:
      ValueError: if the list length, a shape or a value is wrong.
    """
    variables = model.trainable_variables
    if masks is None:
        return [None] * len(variables)
    masks = list(masks)
    if len(masks) != len(variables):
        raise ValueError(
            f"{name}: has {len(masks)} entries but the model has {len(variables)} trainable "
            "variables; pass one entry (None or a 0/1 array) per trainable variable."
        )
    out = []
    for i, (mask, variable) in enumerate(zip(masks, variables)):
        if mask is None:
            out.append(None)
            continue
        mask = np.asarray(mask)
        if tuple(mask.shape) != tuple(variable.shape):
            raise ValueError(
                f"{name}[{i}]: has shape {tuple(mask.shape)} but variable {variable.path} has "
                f"shape {tuple(variable.shape)}; masks must match their variable's shape."
            )
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(
                f"{name}[{i}]: contains values other than 0 and 1 (e.g. "
                f"{mask[(mask != 0) & (mask != 1)].flat[0]!r}); masks must be binary."
            )
        out.append(mask.astype(bool))
    return out


def _variables(model, which):
    check_choice(which, "which", ("trainable", "all"))
    return list(model.trainable_variables if which == "trainable" else model.weights)


def get_weights(model, which="trainable"):
    """Copies the model's weights into a list of numpy arrays.

    Args:
      model: a Keras model.
      which: `"trainable"` for `model.trainable_variables` (the default for comparing
        solutions) or `"all"` for `model.weights` (adds non-trainable state such as
        batch-norm moving statistics).

    Returns:
      A list of numpy arrays.
    """
    return [np.array(v.numpy()) for v in _variables(model, which)]


def resolve_variables(model, weights, name="weights"):
    """Returns the model variables `weights` is aligned with (trainable or all).

    A list with one array per trainable variable is matched to `model.trainable_variables`,
    one with an array per weight to `model.weights`.

    Raises:
      ValueError: if `weights` matches neither list (length or shapes).
    """
    weights = list(weights)
    candidates = [("trainable", model.trainable_variables), ("all", model.weights)]
    for _, variables in candidates:
        if len(variables) == len(weights) and all(
            tuple(np.shape(w)) == tuple(v.shape) for w, v in zip(weights, variables)
        ):
            return list(variables)
    raise ValueError(
        f"{name}: {len(weights)} arrays with shapes {[tuple(np.shape(w)) for w in weights]} "
        f"match neither model.trainable_variables ({len(model.trainable_variables)} "
        f"variables) nor model.weights ({len(model.weights)} variables)."
    )


def assign_weights(variables, weights):
    """Assigns numpy arrays to variables (casting to each variable's dtype)."""
    for variable, value in zip(variables, weights):
        variable.assign(np.asarray(value).astype(variable.dtype))


@contextlib.contextmanager
def temporary_weights(model, weights=None):
    """Context manager: set `weights` on `model`, restore every model weight on exit.

    Args:
      model: a Keras model.
      weights: optional list aligned with `model.trainable_variables` or `model.weights`
        (see `resolve_variables`); `None` only saves and restores.

    Yields:
      The list of variables `weights` was assigned to (or `model.weights`).
    """
    saved = [v.numpy() for v in model.weights]
    try:
        if weights is None:
            yield list(model.weights)
        else:
            variables = resolve_variables(model, weights)
            assign_weights(variables, weights)
            yield variables
    finally:
        assign_weights(model.weights, saved)


def masks_for_variables(model, masks, variables):
    """Maps masks aligned with the trainable variables onto another variable list."""
    by_id = {id(v): m for v, m in zip(model.trainable_variables, masks)}
    return [by_id.get(id(v)) for v in variables]


def make_evaluator(model, loss_fn=None):
    """Returns `evaluate(batches) -> {'loss', 'accuracy', 'error'}` for the model's current weights.

    The returned callable reuses one compiled step, so it stays cheap when the weights are
    reassigned between calls (interpolation paths, planes). Accuracy compares the argmax of
    the logits with integer labels.
    """

    @tf.function(reduce_retracing=True)
    def step(x, y):
        logits = model(x, training=False)
        total = loss_sum(y, logits, loss_fn)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int64)
        labels = tf.cast(tf.reshape(y, tf.shape(predictions)), tf.int64)
        correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float64))
        return tf.cast(total, tf.float64), correct, tf.shape(logits)[0]

    def evaluate(batches):
        total_loss, total_correct, count = 0.0, 0.0, 0
        for x, y in batches:
            loss, correct, n = step(x, y)
            total_loss += float(loss)
            total_correct += float(correct)
            count += int(n)
        if count == 0:
            raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
        progress.advance()  # one evaluated point (shown only inside a command's Progress)
        accuracy = total_correct / count
        return {"loss": total_loss / count, "accuracy": accuracy, "error": 1.0 - accuracy}

    return evaluate


def evaluate(model, data, batch_size=DEFAULT_BATCH_SIZE, loss_fn=None):
    """Mean loss, accuracy and error (1 - accuracy) of `model` on `data`.

    Args:
      model: a Keras model producing logits.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss `loss_fn(y_true, logits)`.

    Returns:
      `{'loss': float, 'accuracy': float, 'error': float}`.
    """
    batches, _ = materialize_batches(data, batch_size)
    return make_evaluator(model, loss_fn)(batches)


def flatten(weights):
    """Concatenates a list of arrays into one float64 vector."""
    if len(weights) == 0:
        return np.zeros(0)
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten(vector, like):
    """Splits a vector into arrays shaped like the arrays in `like`."""
    out, start = [], 0
    for w in like:
        size = int(np.prod(np.shape(w), dtype=np.int64))
        out.append(np.asarray(vector[start : start + size]).reshape(np.shape(w)))
        start += size
    return out


def check_weight_lists(a, b, name_a, name_b):
    """Validates that two weight lists have the same length and shapes; returns numpy lists."""
    a = [np.asarray(w) for w in a]
    b = [np.asarray(w) for w in b]
    if len(a) != len(b):
        raise ValueError(
            f"{name_b}: has {len(b)} arrays but {name_a} has {len(a)}; weight lists must be "
            "aligned (same variables in the same order)."
        )
    for i, (wa, wb) in enumerate(zip(a, b)):
        if wa.shape != wb.shape:
            raise ValueError(
                f"{name_b}[{i}]: has shape {wb.shape} but {name_a}[{i}] has shape "
                f"{wa.shape}; weight lists must be aligned."
            )
    return a, b
