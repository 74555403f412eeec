"""MetaInit (Dauphin & Schoenholz, NeurIPS 2019), compact: learn only the weight norms.

MetaInit looks for an initialization from which one gradient step makes good progress.
It minimizes the *gradient quotient*

    GQ(w) = mean_i | (g_i - (H g)_i) / (g_i + eps_i) - 1 |,    eps_i = eps * sign(g_i),

where ``g`` is the gradient of the loss and ``H g`` a Hessian-vector product: since
``g(w - g) ~ g - H g``, ``GQ = 0`` means the gradient does not change after a step. Only
the norm of each weight tensor (rank >= 2: kernels) is learned, by signSGD with
momentum on ``d GQ / d norm``; directions stay fixed, so masked entries stay exactly zero
and the masks are unchanged. The mean runs over active (unmasked) entries only.

This version uses one fixed batch and a few steps (the paper uses ~1000 steps on random
data); it is meant to be cheap for small models.
"""

from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras.wrapper import get_mask


def _default_loss(y, logits):
    return tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    )


def gradient_quotient(grads, hgs, masks, eps: float = 1e-5):
    """The gradient quotient over the active entries (see module docstring).

    Args:
      grads: list of gradient tensors.
      hgs: list of Hessian-vector products ``H g`` (same shapes).
      masks: list of 0/1 masks or None (all active).
      eps: the sign-matched stabilizer.

    Returns:
      A scalar float32 tensor.
    """
    total, count = 0.0, 0.0
    for g, hg, m in zip(grads, hgs, masks):
        g = tf.cast(g, tf.float32)
        hg = tf.cast(hg, tf.float32)
        m = tf.ones_like(g) if m is None else tf.cast(m, tf.float32)
        sign = tf.where(g >= 0, 1.0, -1.0)
        q = tf.abs((g - hg) / (g + eps * sign) - 1.0) * m
        total += tf.reduce_sum(q)
        count += tf.reduce_sum(m)
    return total / tf.maximum(count, 1.0)


def meta_init(model, x, y, steps: int = 10, learning_rate: float = 0.1,
              momentum: float = 0.9, eps: float = 1e-5,
              loss_fn: Optional[Callable] = None, min_norm: float = 1e-3) -> Dict[str, List]:
    """Rescales each kernel of ``model`` in place to reduce the gradient quotient.

    Args:
      model: a Keras 3 model (sparse or dense); trainable variables of rank >= 2 are tuned.
      x: one batch of inputs.
      y: the labels of that batch.
      steps: number of signSGD steps on the norms.
      learning_rate: signSGD step size (relative change of a norm per step is about
        ``learning_rate / norm``).
      momentum: signSGD momentum.
      eps: the gradient-quotient stabilizer.
      loss_fn: ``loss_fn(y, logits) -> scalar``; default: mean sparse categorical
        cross-entropy on logits.
      min_norm: norms are kept at or above this value.

    Returns:
      ``{'gq': [GQ at the start and after each step], 'best_gq': the lowest GQ,
      'norms': [chosen norm per tuned variable], 'initial_norms': [...]}``. The norms of
      the iterate with the lowest GQ are applied (signSGD with momentum may overshoot).

    Raises:
      ValueError: for bad ``steps`` or a model without a tunable variable.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
    loss_fn = loss_fn or _default_loss
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    tuned = [i for i, v in enumerate(trainable) if len(v.shape) >= 2]
    if not tuned:
        raise ValueError("meta_init: the model has no trainable variable of rank >= 2.")
    masks = [get_mask(v) for v in trainable]
    mask_values = [None if m is None else tf.convert_to_tensor(m) for m in masks]
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    values = [tf.convert_to_tensor(v) for v in trainable]
    init_norms = [float(tf.norm(values[i])) for i in tuned]
    directions = {i: values[i] / max(n, 1e-12) for i, n in zip(tuned, init_norms)}
    norms = tf.Variable(np.asarray(init_norms, np.float32))
    velocity = tf.Variable(tf.zeros_like(norms))
    nt_values = [tf.convert_to_tensor(v) for v in non_trainable]

    @tf.function
    def gq_and_grad():
        with tf.GradientTape() as meta_tape:
            current = list(values)
            for j, i in enumerate(tuned):
                current[i] = norms[j] * directions[i]
            with tf.GradientTape() as hv_tape:
                hv_tape.watch(current)
                with tf.GradientTape() as tape:
                    tape.watch(current)
                    logits, _ = model.stateless_call(current, nt_values, x, training=False)
                    loss = loss_fn(y, logits)
                grads = tape.gradient(loss, current)
                grads = [
                    tf.zeros_like(c) if g is None else g * (1.0 if m is None else m)
                    for g, c, m in zip(grads, current, mask_values)
                ]
                dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(g)) for g in grads])
            hgs = hv_tape.gradient(dot, current)
            hgs = [tf.zeros_like(c) if h is None else h for h, c in zip(hgs, current)]
            gq = gradient_quotient(grads, hgs, mask_values, eps)
        return gq, meta_tape.gradient(gq, norms)

    # signSGD with momentum can overshoot in few steps: keep the best iterate seen.
    history, best = [], (np.inf, norms.numpy())
    for step in range(int(steps) + 1):
        gq, grad = gq_and_grad()
        history.append(float(gq))
        if history[-1] < best[0]:
            best = (history[-1], norms.numpy())
        if step == steps:
            break
        velocity.assign(momentum * velocity - learning_rate * tf.sign(grad))
        norms.assign(tf.maximum(norms + velocity, min_norm))
    final = best[1]
    for j, i in enumerate(tuned):
        trainable[i].assign(tf.cast(final[j] * directions[i], trainable[i].dtype))
    return {"gq": history, "best_gq": float(best[0]), "norms": [float(n) for n in final],
            "initial_norms": init_norms}


__all__ = ["meta_init", "gradient_quotient"]
