"""Exact-count masks from scores, with static shapes (XLA friendly) and stateless seeds.

Every mask produced here has exactly ``k`` ones. Selection finds the k-th largest score
without sorting and breaks ties by position (lower flat index wins), so the result is
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


def _sortable_int(scores):
    """Maps float32 scores to int32 keys with the same order (-inf lowest).

    -0.0 and +0.0 get the same key (they compare equal, so a stable sort, ``tf.math.top_k``
    and :func:`topk_mask_np` break their ties by index); bit patterns alone would order
    -0.0 below +0.0.
    """
    bits = tf.bitcast(tf.cast(scores, tf.float32), tf.int32)
    bits = tf.where(tf.equal(bits, tf.int32.min), tf.zeros_like(bits), bits)  # -0.0 -> +0.0
    # Negative floats order backwards as integers: flip their magnitude bits.
    return tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(bits, 31), tf.constant(0x7FFFFFFF, tf.int32)))


def topk_mask(scores, k, dtype=tf.float32):
    """Returns a mask with ones at the ``k`` largest scores (exactly ``k`` ones).

    Selection finds the k-th largest of the scores' order-preserving integer keys by radix
    selection (two 16-bit histogram passes), then ties at the threshold are taken in
    flat-index order: O(n) work, no sort. Under XLA a 33-step bisection and a cumulative
    sum do the same with static shapes only. The result equals a stable descending sort's
    first ``k`` positions.

    Args:
      scores: a float tensor of any shape (no NaN); ``-inf`` marks positions that must not
        be chosen unless ``k`` exceeds the number of finite scores.
      k: number of ones, a Python int or scalar integer tensor in [0, size].
      dtype: dtype of the returned mask.

    Returns:
      A tensor of ``scores``' shape with exactly ``k`` ones and zeros elsewhere.
    """
    scores = tf.convert_to_tensor(scores)
    shape = tf.shape(scores)
    flat = tf.reshape(tf.cast(scores, tf.float32), [-1])
    # XLA turns the 65,536-bin histograms into a very slow compilation: under XLA (TPU,
    # `jit_compile=True`) the threshold comes from a bisection instead (same result).
    select = _select_topk_bisect if _in_xla() else _select_topk
    chosen = select(flat, tf.cast(k, tf.int64))
    return tf.reshape(tf.cast(chosen, dtype), shape)


def _in_xla():
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@tf.function(reduce_retracing=True)
def _select_topk(flat_scores, k):
    """Boolean vector marking the k largest entries (ties by index); see topk_mask."""
    above, ties, need = _split_at_kth(flat_scores, k, _kth_largest_key)
    n_ties = tf.reduce_sum(tf.cast(ties, tf.int64))

    def first_ties():
        # The first `need` ties in index order: those up to the need-th tie's position.
        positions = tf.where(ties)[:, 0]
        last = tf.gather(positions, need - 1)
        index = tf.range(tf.size(ties, out_type=tf.int64), dtype=tf.int64)
        return tf.logical_or(above, tf.logical_and(ties, index <= last))

    return tf.cond(
        need >= n_ties, lambda: tf.logical_or(above, ties),  # every tie is taken
        lambda: tf.cond(need <= 0, lambda: above, first_ties))


@tf.function(reduce_retracing=True)
def _select_topk_bisect(flat_scores, k):
    """As _select_topk with static shapes only (for XLA): bisection, cumulative sum."""
    above, ties, need = _split_at_kth(flat_scores, k, _kth_largest_key_bisect)
    tie_rank = tf.cumsum(tf.cast(ties, tf.int64))  # 1-based rank among ties
    return tf.logical_or(above, tf.logical_and(ties, tie_rank <= need))


def _split_at_kth(flat_scores, k, kth_largest_key):
    """(scores above the k-th largest, scores equal to it, how many of those to take)."""
    keys = _sortable_int(flat_scores)
    threshold = kth_largest_key(keys, k)
    above = keys > threshold
    ties = tf.equal(keys, threshold)
    return above, ties, k - tf.reduce_sum(tf.cast(above, tf.int64))


_DIGIT = 1 << 16
_SIDE = 1 << 8  # _DIGIT = _SIDE ** 2


def _histogram(digits):
    """Counts of each value in [0, _DIGIT) (values >= _DIGIT are skipped)."""
    return tf.raw_ops.DenseBincount(input=digits, size=tf.constant(_DIGIT, tf.int32),
                                    weights=tf.constant([], tf.int32), binary_output=False)


def _kth_largest_key(keys, k):
    """The k-th largest of the int32 ``keys`` (2**31 - 1 when k = 0).

    Radix selection on two 16-bit digits of the keys' unsigned order: a histogram of the
    high digits finds the bin holding the k-th largest key, a histogram of the low digits
    within that bin finds the key. Two counting passes over the tensor instead of the 32
    compare-and-count passes of a bisection; the result is the largest t with
    count(keys >= t) >= k, exactly as a bisection would find.
    """
    k = tf.cast(k, tf.int32)
    # Digits of the keys' unsigned order (key + 2**31): the arithmetic shift of the signed
    # key plus 2**15, and the low 16 bits.
    high = tf.bitwise.right_shift(keys, 16) + _DIGIT // 2
    low = tf.bitwise.bitwise_and(keys, _DIGIT - 1)
    side = tf.range(_SIDE, dtype=tf.int32)

    def last_bin_with(counts, need):
        # counts[b] = number of keys with digit == b; the largest b with #(digit >= b) >=
        # need, and the number of keys in bins above it. The bins are scanned as a
        # 256 x 256 grid, rows first (a cumulative sum over 65,536 bins costs more than
        # the histogram itself).
        grid = tf.reshape(counts, [_SIDE, _SIDE])
        per_row = tf.reduce_sum(grid, axis=1)
        row_at_least = tf.cumsum(per_row, reverse=True)
        r = tf.reduce_max(tf.where(row_at_least >= need, side, 0))
        row = grid[r]
        at_least = tf.cumsum(row, reverse=True) + (row_at_least[r] - per_row[r])
        c = tf.reduce_max(tf.where(at_least >= need, side, 0))
        return r * _SIDE + c, at_least[c] - row[c]

    h_high = _histogram(high)
    b_high, n_above = last_bin_with(h_high, k)
    # Keys outside the bin get digit _DIGIT, which the histogram skips.
    in_bin = tf.where(tf.equal(high, b_high), low, _DIGIT)
    h_low = _histogram(in_bin)
    b_low, _ = last_bin_with(h_low, k - n_above)
    return tf.cast(tf.cast(b_high, tf.int64) * _DIGIT + tf.cast(b_low, tf.int64) - 2**31,
                   tf.int32)


def _kth_largest_key_bisect(keys, k):
    """As _kth_largest_key: 33 bisection steps, each one compare-and-count."""
    keys = tf.cast(keys, tf.int64)

    def body(i, lo, hi):
        mid = lo + (hi - lo + 1) // 2
        ok = tf.reduce_sum(tf.cast(keys >= mid, tf.int64)) >= k
        return i + 1, tf.where(ok, mid, lo), tf.where(ok, hi, mid - 1)

    lo = tf.constant(-(2**31), tf.int64)
    hi = tf.constant(2**31 - 1, tf.int64)
    _, threshold, _ = tf.while_loop(
        lambda i, lo, hi: i < 33, body, (tf.constant(0), lo, hi), maximum_iterations=33)
    return tf.cast(threshold, tf.int32)


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


def apportion(shares, total, caps):
    """Splits ``total`` units into integer parts proportional to ``shares``, under caps.

    Water-filling with largest remainders: a part whose proportional share reaches its cap
    gets exactly the cap, the rest is re-split among the others by their shares; the final
    shares are floored and the leftover units go to the largest fractional parts (ties by
    index). If every uncapped share is 0, the rest is split by remaining capacity.

    Args:
      shares: ``[n]`` non-negative floats.
      total: integer scalar, at most ``sum(caps)``.
      caps: ``[n]`` non-negative integers.

    Returns:
      ``[n]`` int32 counts with ``0 <= count <= cap`` summing exactly to ``total``.
    """
    shares = tf.cast(tf.convert_to_tensor(shares), tf.float64)
    caps = tf.cast(tf.convert_to_tensor(caps), tf.int64)
    total = tf.cast(total, tf.int64)
    n = int(shares.shape[0])
    counts = tf.zeros([n], tf.int64)
    open_ = caps > 0

    def ideal(counts, open_):
        rest = tf.cast(total - tf.reduce_sum(counts), tf.float64)
        room = tf.cast(caps - counts, tf.float64)
        w = tf.where(open_, shares, 0.0)
        w = tf.cond(tf.reduce_sum(w) > 0, lambda: w, lambda: tf.where(open_, room, 0.0))
        return tf.math.divide_no_nan(w, tf.reduce_sum(w)) * rest, room

    for _ in range(n):  # each round caps at least one part, or changes nothing
        want, room = ideal(counts, open_)
        full = tf.logical_and(open_, want >= room)
        counts = tf.where(full, caps, counts)
        open_ = tf.logical_and(open_, tf.logical_not(full))
    want, _ = ideal(counts, open_)
    base = tf.floor(want)
    counts = counts + tf.cast(base, tf.int64)
    left = total - tf.reduce_sum(counts)
    frac = tf.where(open_, want - base, -1.0)
    extra = topk_mask(tf.cast(frac, tf.float32), left, tf.int64)
    return tf.cast(counts + extra, tf.int32)


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
