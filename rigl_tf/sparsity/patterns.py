"""Structured sparsity patterns: N:M groups and rectangular blocks.

A pattern constrains which masks are allowed; every mask routine (random initial masks,
magnitude pruning, RigL/SET drop-and-grow) asks the weight's pattern to select positions,
so the constraint holds after every update.

* ``'unstructured'`` (default): any positions.
* ``'N:M'`` (e.g. ``'2:4'``): along the input axis, each run of M consecutive weights
  (for one output unit and kernel position) has exactly N active; density is N/M. DST
  drops the lowest-scored active weights of the layer, then every group regrows its
  deficit from its own inactive positions, highest grow score first.
* ``'block:RxC'`` (e.g. ``'block:4x4'``, ``'block:8x1'``): blocks of R input units by C
  output units are all active or all inactive. Every algorithm runs unchanged on the
  block grid: scores are summed over each block (so weight magnitude becomes the block's
  L1 norm), exact counts are counts of blocks.

Weights are addressed by their input axis and output axis (see ``rigl_tf.PrunableWeight``).
"""

import re
from typing import Optional

import numpy as np
import tensorflow as tf

from rigl_tf.sparsity import masks as masks_lib

PATTERN_FORMS = ("unstructured", "N:M (e.g. '2:4')", "block:RxC (e.g. 'block:4x4')")


class Unstructured:
    """No constraint."""

    kind = "unstructured"
    spec = "unstructured"

    def validate(self, shape, in_axis, out_axis, key):
        return

    def count(self, shape, density, min_active=1):
        size = int(np.prod(shape))
        return int(min(size, max(int(np.round(density * size)), min_active)))

    def select(self, scores, k, in_axis, out_axis):
        return masks_lib.topk_mask(scores, k)

    def __eq__(self, other):
        return type(self) is type(other) and self.spec == other.spec

    def __hash__(self):
        return hash(self.spec)

    def __repr__(self):
        return f"Pattern({self.spec!r})"


def _to_last(x, axis):
    """Moves ``axis`` to the end; returns (tensor, permutation)."""
    rank = len(x.shape)
    axis %= rank
    perm = [a for a in range(rank) if a != axis] + [axis]
    return tf.transpose(x, perm), perm


def _from_last(x, perm):
    inverse = np.argsort(perm).tolist()
    return tf.transpose(x, inverse)


class NM(Unstructured):
    """N active out of every M consecutive weights along the input axis."""

    kind = "nm"

    def __init__(self, n: int, m: int):
        if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
            raise ValueError(
                f"N:M `pattern` needs integers 0 < N <= M, got N={n!r}, M={m!r}."
            )
        self.n, self.m = n, m
        self.spec = f"{n}:{m}"

    @property
    def density(self):
        return self.n / self.m

    def validate(self, shape, in_axis, out_axis, key):
        dim = int(shape[in_axis])
        if dim % self.m:
            raise ValueError(
                f"`pattern` {self.spec!r} does not divide weight {key!r}: its input "
                f"dimension (axis {in_axis} of shape {tuple(shape)}) is {dim}, not a "
                f"multiple of M={self.m}."
            )

    def count(self, shape, density=None, min_active=1):
        """Active count at ``density`` (None: the pattern's N/M): N' per group, N <= N' <= M."""
        size = int(np.prod(shape))
        density = self.density if density is None else density
        per_group = int(min(self.m, max(self.n, int(np.round(density * self.m)))))
        return size // self.m * per_group

    def _grouped(self, x, in_axis):
        moved, perm = _to_last(x, in_axis)
        shape = tf.shape(moved)
        grouped = tf.reshape(moved, tf.concat([shape[:-1], [-1, self.m]], 0))
        return grouped, perm, shape

    def _ungroup(self, grouped, perm, shape):
        return _from_last(tf.reshape(grouped, shape), perm)

    @staticmethod
    def _rank_in_group(scores):
        """0-based descending rank of each entry within its group (ties by position)."""
        order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
        return tf.argsort(order, axis=-1, stable=True)

    def select(self, scores, k, in_axis, out_axis):
        """Top ``k / (size / M)`` per group; ``k`` must be a multiple of size / M."""
        scores = tf.cast(scores, tf.float32)
        grouped, perm, shape = self._grouped(scores, in_axis)
        groups = tf.cast(tf.size(scores) // self.m, tf.int32)
        per_group = tf.cast(k, tf.int32) // groups
        mask = tf.cast(self._rank_in_group(grouped) < per_group, tf.float32)
        return self._ungroup(mask, perm, shape)

    def complete(self, keep, grow_scores, per_group, in_axis):
        """Grows, in every group, the positions that bring it back to ``per_group``."""
        neg_inf = tf.constant(-np.inf, tf.float32)
        candidates = tf.where(keep > 0, neg_inf, tf.cast(grow_scores, tf.float32))
        g_keep, perm, shape = self._grouped(keep, in_axis)
        g_cand, _, _ = self._grouped(candidates, in_axis)
        deficit = tf.cast(per_group, tf.int32) - tf.cast(
            tf.reduce_sum(g_keep, axis=-1, keepdims=True), tf.int32)
        grow = tf.cast(self._rank_in_group(g_cand) < deficit, tf.float32)
        return self._ungroup(grow, perm, shape)


class Block(Unstructured):
    """All-or-nothing blocks of ``rows`` input units x ``cols`` output units."""

    kind = "block"

    def __init__(self, rows: int, cols: int):
        if not (isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0):
            raise ValueError(f"block `pattern` needs positive sizes, got {rows!r}x{cols!r}.")
        self.rows, self.cols = rows, cols
        self.spec = f"block:{rows}x{cols}"

    def validate(self, shape, in_axis, out_axis, key):
        rank = len(shape)
        if in_axis % rank == out_axis % rank:
            raise ValueError(f"block `pattern` needs distinct input and output axes for {key!r}.")
        for axis, size, what in ((in_axis, self.rows, "input"), (out_axis, self.cols, "output")):
            if int(shape[axis]) % size:
                raise ValueError(
                    f"`pattern` {self.spec!r} does not divide weight {key!r}: its {what} "
                    f"dimension (axis {axis} of shape {tuple(shape)}) is {int(shape[axis])}, "
                    f"not a multiple of {size}."
                )

    def _perm(self, rank, in_axis, out_axis):
        in_axis, out_axis = in_axis % rank, out_axis % rank
        return [a for a in range(rank) if a not in (in_axis, out_axis)] + [in_axis, out_axis]

    def pool(self, x, in_axis, out_axis):
        """Sums ``x`` over every block: shape [..., in/rows, out/cols]."""
        perm = self._perm(len(x.shape), in_axis, out_axis)
        moved = tf.transpose(tf.cast(x, tf.float32), perm)
        shape = moved.shape
        lead = list(shape[:-2])
        blocks = tf.reshape(
            moved, lead + [shape[-2] // self.rows, self.rows, shape[-1] // self.cols, self.cols])
        return tf.reduce_sum(blocks, axis=[len(lead) + 1, len(lead) + 3])

    def unpool(self, xb, shape, in_axis, out_axis):
        """Expands a block grid back to the weight's ``shape`` (each block repeated)."""
        perm = self._perm(len(shape), in_axis, out_axis)
        x = tf.repeat(tf.repeat(xb, self.rows, axis=-2), self.cols, axis=-1)
        return tf.transpose(x, np.argsort(perm).tolist())

    def count(self, shape, density, min_active=1):
        size = int(np.prod(shape))
        block = self.rows * self.cols
        n_blocks = size // block
        kb = int(min(n_blocks, max(int(np.round(density * n_blocks)), 1 if min_active else 0)))
        return kb * block

    def select(self, scores, k, in_axis, out_axis):
        pooled = self.pool(scores, in_axis, out_axis)
        kb = tf.cast(k, tf.int32) // (self.rows * self.cols)
        return self.unpool(masks_lib.topk_mask(pooled, kb), scores.shape, in_axis, out_axis)


UNSTRUCTURED = Unstructured()


def get_pattern(spec) -> Unstructured:
    """Parses a pattern spec ('unstructured', 'N:M', 'block:RxC', or a pattern object).

    Raises:
      ValueError: naming the bad spec and the accepted forms.
    """
    if spec is None:
        return UNSTRUCTURED
    if isinstance(spec, Unstructured):
        return spec
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "unstructured":
            return UNSTRUCTURED
        match = re.fullmatch(r"(\d+):(\d+)", text)
        if match:
            n, m = int(match.group(1)), int(match.group(2))
            if not 0 < n <= m:
                raise ValueError(f"`pattern` {spec!r}: N:M needs 0 < N <= M.")
            return NM(n, m)
        match = re.fullmatch(r"block:(\d+)x(\d+)", text)
        if match:
            return Block(int(match.group(1)), int(match.group(2)))
    raise ValueError(
        f"Unknown sparsity `pattern` {spec!r}; accepted forms: {', '.join(PATTERN_FORMS)}."
    )


def pattern_density(pattern, density: Optional[float]):
    """The density a pattern imposes (N:M fixes N/M), else ``density``."""
    return pattern.density if isinstance(pattern, NM) else density
