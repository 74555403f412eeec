"""One-shot pruning at initialization: SNIP, GraSP, magnitude and random, on one batch.

Scores (higher = kept), computed at the current weights ``w`` with the dense gradient
``g`` of the loss on one batch:

* SNIP (Lee et al. 2019): ``|w * g|``, the connection sensitivity.
* GraSP (Wang et al. 2020): the paper removes the weights with the largest
  ``S = -w * (H g)``, i.e. keeps the largest ``w * (H g)``; ``H g`` is a Hessian-vector
  product, the gradient of ``g . stop_gradient(g)``.
* magnitude: ``|w|``; random: uniform scores from a stateless RNG keyed by the seed.

Connections that are already inactive are never selected (unless a layer's target count
exceeds its active count). The new masks have exact counts: per weight from the
distribution's densities (``'uniform'``, ``'er'``, ``'erk'``), or one global top-k
(``'global'``).
"""

from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras import model_ops
from rigl_tf.sparsity import distributions as dist_lib
from rigl_tf.sparsity import masks as masks_lib

METHODS = ("snip", "grasp", "magnitude", "random")


def _default_loss(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _mean_loss(loss_fn, y, logits):
    return tf.reduce_mean(loss_fn(y, logits))


def _tf(v):
    return v.value if isinstance(v, keras.Variable) else v


def oneshot_scores(model, x, y, method: str, loss_fn: Optional[Callable] = None,
                   training: bool = False, seed: int = 0) -> Dict[str, tf.Tensor]:
    """Computes keep-scores (higher = kept) for every masked weight of ``model``.

    Args:
      model: a model with SparseWrappers.
      x: one batch of inputs.
      y: the labels of that batch.
      method: 'snip', 'grasp', 'magnitude' or 'random'.
      loss_fn: ``loss_fn(y, logits)`` (per-example or scalar); default: sparse
        categorical cross-entropy on logits.
      training: run the model in training mode.
      seed: seed of the 'random' scores.

    Returns:
      A dict from 'layer/attr' key to a float32 score tensor of the weight's shape.

    Raises:
      ValueError: for an unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown one-shot pruning `method` {method!r}; known methods: {', '.join(METHODS)}."
        )
    items = model_ops._require_sparse(model)
    loss_fn = loss_fn or _default_loss
    weights = [w for _, w, _ in items]
    if method == "magnitude":
        return {k: tf.abs(tf.cast(_tf(w), tf.float32)) for k, w, _ in items}
    if method == "random":
        return {
            k: masks_lib.random_scores(tuple(w.shape), seed, 0, i)
            for i, (k, w, _) in enumerate(items)
        }
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    if method == "snip":
        with tf.GradientTape() as tape:
            loss = _mean_loss(loss_fn, y, model(x, training=training))
        grads = tape.gradient(loss, [_tf(w) for w in weights])
        return {
            k: tf.abs(tf.cast(_tf(w), tf.float32) * tf.cast(g, tf.float32))
            for (k, w, _), g in zip(items, grads)
        }
    # GraSP: Hessian-vector product H g by double backprop.
    variables = [_tf(w) for w in weights]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = _mean_loss(loss_fn, y, model(x, training=training))
        grads = inner.gradient(loss, variables)
        dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(g)) for g in grads])
    hg = outer.gradient(dot, variables)
    return {
        k: tf.cast(_tf(w), tf.float32) * tf.cast(h, tf.float32)
        for (k, w, _), h in zip(items, hg)
    }


def masks_from_scores(scores: Dict[str, tf.Tensor], current: Dict[str, np.ndarray],
                      sparsity: float, distribution: str = "erk",
                      min_active: int = 1) -> Dict[str, np.ndarray]:
    """Turns scores into exact-count masks (inactive positions are chosen last).

    Args:
      scores: key -> score tensor (higher = kept).
      current: key -> current 0/1 mask.
      sparsity: target overall sparsity in [0, 1).
      distribution: 'uniform', 'er', 'erk' (per-weight counts) or 'global' (one top-k).
      min_active: minimum active weights per layer (per-weight distributions).

    Returns:
      key -> float32 numpy mask.
    """
    sparsity = dist_lib.check_sparsity(sparsity)
    shapes = {k: tuple(np.shape(current[k])) for k in scores}
    neg_inf = tf.constant(-np.inf, tf.float32)
    ranked = {
        k: tf.where(tf.constant(current[k]) > 0, tf.cast(scores[k], tf.float32), neg_inf)
        for k in scores
    }
    if distribution == "global":
        total = sum(int(np.prod(s)) for s in shapes.values())
        k_total = dist_lib.num_active(1.0 - sparsity, total, min_active)
        keys = list(ranked)
        out = masks_lib.global_topk_masks([ranked[k] for k in keys], k_total)
        return {k: m.numpy() for k, m in zip(keys, out)}
    densities = dist_lib.get_densities(shapes, sparsity, distribution)
    counts = dist_lib.get_counts(shapes, densities, min_active)
    return {k: masks_lib.topk_mask(ranked[k], counts[k]).numpy() for k in ranked}


def prune_at_init(model, x, y, method: str = "snip", sparsity: float = 0.9,
                  distribution: str = "erk", loss_fn: Optional[Callable] = None,
                  training: bool = False, seed: int = 0,
                  min_active: int = 1) -> Dict[str, np.ndarray]:
    """Prunes a sparse (e.g. freshly sparsified, all-ones) model once, in place.

    Args:
      model: a model with SparseWrappers.
      x: one batch of inputs (for 'snip' and 'grasp').
      y: the labels of that batch.
      method: 'snip', 'grasp', 'magnitude' or 'random'.
      sparsity: target overall sparsity of the masked weights, in [0, 1).
      distribution: 'uniform', 'er', 'erk' or 'global'.
      loss_fn: ``loss_fn(y, logits)``; default: sparse categorical cross-entropy on logits.
      training: run the model in training mode for the scores.
      seed: seed of the 'random' scores.
      min_active: minimum active weights per layer.

    Returns:
      The new masks (key -> numpy array); they are also set on the model (pruned weights
      become exact zeros).

    Raises:
      ValueError: for an unknown method or distribution, or a bad sparsity.
    """
    if distribution not in dist_lib.DISTRIBUTIONS:
        raise ValueError(
            f"Unknown `distribution` {distribution!r}; known distributions: "
            f"{', '.join(dist_lib.DISTRIBUTIONS)}."
        )
    dist_lib.check_sparsity(sparsity)
    scores = oneshot_scores(model, x, y, method, loss_fn, training, seed)
    masks = masks_from_scores(scores, model_ops.get_masks(model), sparsity, distribution,
                              min_active)
    model_ops.set_masks(model, masks)
    return masks


__all__ = ["METHODS", "oneshot_scores", "masks_from_scores", "prune_at_init"]
