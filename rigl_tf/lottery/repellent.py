"""Repellent / attractive loss towards previous IMP optima (Maene et al., "Towards
Understanding Iterative Magnitude Pruning: Why Lottery Tickets Win").

With the current mask ``m``, the current weights ``theta`` and the optima
``theta_1 .. theta_N`` of earlier IMP levels, the extra loss is::

    R(theta) = lambda_r * (1 / N) * sum_i cos^2(m * theta, m * theta_i)
    cos(a, b) = <a, b> / (||a|| ||b||)

where ``a`` and ``b`` are the masked weights flattened and concatenated over all masked
(prunable) weights; biases and layers kept dense do not enter. ``lambda_r > 0`` pushes the
new solution away from (orthogonal to) the previous ones, ``lambda_r < 0`` pulls it
towards them. Squaring makes the term sign-blind: a solution anti-parallel to an old one
counts as close. It is computed as ``<a, b>**2 / (||a||**2 ||b||**2)`` (no square roots),
which keeps the gradient finite when a weight vector is zero::

    d cos^2 / d a = 2 <a,b> b / (||a||^2 ||b||^2) - 2 <a,b>^2 a / (||a||^4 ||b||^2)

Use :func:`repellent_loss` in a custom training step, or wrap a model in
:class:`RepellentModel` to train with ``model.fit``.
"""

from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras import model_ops

_TINY = 1e-30  # guards 0/0 only; far below any realistic ||a||^2 ||b||^2


def _tensor(x):
    return tf.convert_to_tensor(x.value if isinstance(x, keras.Variable) else x)


def flatten_masked(weights: Sequence, masks: Optional[Sequence] = None) -> tf.Tensor:
    """Concatenates ``mask * weight`` over a list of weights into one float32 vector.

    Args:
      weights: tensors, variables or arrays.
      masks: 0/1 masks aligned with ``weights`` (None entries, or None overall: no mask).

    Returns:
      A rank-1 float32 tensor.
    """
    masks = [None] * len(weights) if masks is None else list(masks)
    if len(masks) != len(weights):
        raise ValueError(
            f"`masks` has {len(masks)} entries, expected one per weight ({len(weights)})."
        )
    parts = []
    for w, m in zip(weights, masks):
        w = tf.cast(_tensor(w), tf.float32)
        if m is not None:
            w = w * tf.cast(_tensor(m), tf.float32)
        parts.append(tf.reshape(w, [-1]))
    return tf.concat(parts, axis=0)


def cosine_squared(a, b) -> tf.Tensor:
    """``<a, b>^2 / (||a||^2 ||b||^2)`` of two vectors (0 if either is zero)."""
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    dot = tf.reduce_sum(a * b)
    denom = tf.reduce_sum(a * a) * tf.reduce_sum(b * b)
    return dot * dot / tf.maximum(denom, _TINY)


def repellent_loss(weights: Sequence, previous: Sequence[Sequence], masks=None,
                   strength: float = 1.0) -> tf.Tensor:
    """``strength * mean_i cos^2(m * weights, m * previous_i)`` (see the module docstring).

    Differentiable with respect to ``weights`` (inside a ``tf.GradientTape``).

    Args:
      weights: the current weights (tensors or variables).
      previous: the earlier optima, each a list of arrays aligned with ``weights``.
      masks: the current masks aligned with ``weights`` (or None: unmasked).
      strength: ``lambda_r``; > 0 repels, < 0 attracts.

    Returns:
      A float32 scalar; 0 when ``previous`` is empty.

    Raises:
      ValueError: if an optimum does not have one array per weight, or shapes differ.
    """
    weights = list(weights)
    if not previous:
        return tf.constant(0.0, tf.float32)
    current = flatten_masked(weights, masks)
    terms = []
    for i, opt in enumerate(previous):
        opt = list(opt)
        if len(opt) != len(weights):
            raise ValueError(
                f"`previous[{i}]` has {len(opt)} arrays, expected one per weight "
                f"({len(weights)})."
            )
        for j, (w, o) in enumerate(zip(weights, opt)):
            if tuple(np.shape(o)) != tuple(w.shape):
                raise ValueError(
                    f"`previous[{i}][{j}]` has shape {tuple(np.shape(o))}, expected "
                    f"{tuple(w.shape)}."
                )
        terms.append(cosine_squared(current, flatten_masked(opt, masks)))
    return tf.cast(strength, tf.float32) * tf.add_n(terms) / float(len(terms))


class RepellentModel(keras.Model):
    """Trains ``model`` with the repellent / attractive loss added (for ``model.fit``).

    The wrapper calls ``model`` and adds :func:`repellent_loss` over the model's masked
    weights (under their *current* masks, read every step) to the compiled loss during
    training only, so ``evaluate`` reports the plain loss. The wrapped model's weights are
    the trainable variables, so ``rigl_tf.SparseOptimizer`` works unchanged.

    Args:
      model: a sparse Keras model (with SparseWrappers).
      previous: earlier optima, each a mapping ``'layer/attr'`` key -> array covering every
        masked weight of ``model``.
      strength: ``lambda_r`` (> 0 repels, < 0 attracts, 0 disables).
      name: model name.

    Raises:
      ValueError: if an optimum misses a masked weight or has a wrong shape.
    """

    def __init__(self, model, previous: Sequence[Mapping[str, np.ndarray]],
                 strength: float, name: Optional[str] = None):
        super().__init__(name=name or f"repellent_{model.name}")
        self.inner = model
        self.strength = float(strength)
        items = model_ops.masked_weights(model)
        if not items:
            raise ValueError("RepellentModel: `model` has no masked (SparseWrapper) weights.")
        keys = [k for k, _, _ in items]
        optima = []
        for i, opt in enumerate(previous):
            missing = [k for k in keys if k not in opt]
            if missing:
                raise ValueError(
                    f"`previous[{i}]` misses masked weights {missing}; it must map every key "
                    f"of {keys} to an array."
                )
            optima.append(tuple(tf.constant(np.asarray(opt[k], np.float32)) for k in keys))
        self._optima = _Plain(optima)
        self._pairs = _Plain([(w, m) for _, w, m in items])

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def repellent_term(self) -> tf.Tensor:
        """The current value of the repellent loss (``strength`` included)."""
        weights = [w for w, _ in self._pairs.value]
        masks = [m for _, m in self._pairs.value]
        return repellent_loss(weights, self._optima.value, masks, self.strength)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training and self.strength != 0.0 and self._optima.value:
            loss = loss + self.repellent_term()
        return loss


class _Plain:
    """Holds a Python value out of Keras' attribute tracking."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


__all__ = ["RepellentModel", "cosine_squared", "flatten_masked", "repellent_loss"]
