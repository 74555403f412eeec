"""Exact-count masks from scores, with static shapes (XLA friendly) and stateless seeds.

Every mask produced here has exactly ``k`` ones. Selection sorts the scores once with a
stable sort, so ties are broken by position (lower flat index wins) and the result is
deterministic on every device. ``k`` may be a Python int or a scalar tensor: the output
shape never depends on it, so the same code runs inside ``tf.function`` and under XLA.
"""

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

# Seeds for stateless RNG are (seed, salt) pairs; the salt mixes the step and layer index
# so that every (step, layer) pair draws an independent stream, identically on all replicas.
_STEP_MULT = 1_000_003


def stateless_seed(seed, step=0, index=0):
    """Returns a shape-[2] int32 stateless-RNG seed keyed by (seed, step, layer index).

    Args:
      seed: the experiment seed (Python int or scalar tensor).
      step: the training step (Python int or scalar tensor).
      index: the layer/weight index (Python int).

    Returns:
      An int32 tensor of shape [2] usable as ``seed`` for ``tf.random.stateless_*``.
    """
    step = tf.cast(step, tf.int64)
    salt = (step * _STEP_MULT + int(index)) % (2**31 - 1)
    return tf.stack([tf.cast(seed, tf.int32), tf.cast(salt, tf.int32)])


def topk_mask(scores, k, dtype=tf.float32):
    """Returns a mask with ones at the ``k`` largest scores (exactly ``k`` ones).

    Args:
      scores: a tensor of any shape; ``-inf`` marks positions that must not be chosen
        unless ``k`` exceeds the number of finite scores.
      k: number of ones, a Python int or scalar integer tensor in [0, size].
      dtype: dtype of the returned mask.

    Returns:
      A tensor of ``scores``' shape with exactly ``k`` ones and zeros elsewhere.
    """
    scores = tf.convert_to_tensor(scores)
    shape = tf.shape(scores)
    flat = tf.reshape(scores, [-1])
    n = tf.size(flat)
    order = tf.argsort(flat, direction="DESCENDING", stable=True)
    k = tf.cast(k, tf.int32)
    chosen = tf.cast(tf.range(n) < k, dtype)
    mask = tf.scatter_nd(order[:, None], chosen, tf.expand_dims(n, 0))
    return tf.reshape(mask, shape)


def topk_mask_np(scores: np.ndarray, k: int) -> np.ndarray:
    """Numpy twin of :func:`topk_mask` (same stable tie-breaking); float32 result."""
    flat = np.asarray(scores).reshape(-1)
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.shape, np.float32)
    mask[order[: int(k)]] = 1.0
    return mask.reshape(np.shape(scores))


def global_topk_masks(scores: Sequence, k, dtype=tf.float32) -> List[tf.Tensor]:
    """Exact global top-k over several tensors: ``k`` ones in total across all of them.

    Args:
      scores: a list of score tensors (any shapes).
      k: total number of ones across all masks.
      dtype: dtype of the masks.

    Returns:
      A list of masks with the shapes of ``scores``.
    """
    flats = [tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores]
    sizes = [int(np.prod(s.shape)) for s in scores]
    joint = topk_mask(tf.concat(flats, axis=0), k, dtype)
    parts = tf.split(joint, sizes)
    return [tf.reshape(p, s.shape) for p, s in zip(parts, scores)]


def random_scores(shape, seed, step=0, index=0):
    """Uniform [0, 1) scores from a stateless RNG keyed by (seed, step, index)."""
    return tf.random.stateless_uniform(shape, seed=stateless_seed(seed, step, index))


def random_mask(shape, k, seed, index=0, dtype=tf.float32):
    """A uniformly random mask of ``shape`` with exactly ``k`` ones (stateless, seeded)."""
    return topk_mask(random_scores(shape, seed, 0, index), k, dtype)


def random_masks(
    shapes: Mapping[str, Tuple[int, ...]], counts: Mapping[str, int], seed: int
) -> Dict[str, np.ndarray]:
    """Random masks for several weights; weight ``i`` (in map order) uses stream ``i``."""
    out = {}
    for index, (key, shape) in enumerate(shapes.items()):
        out[key] = random_mask(shape, counts[key], seed, index).numpy()
    return out
