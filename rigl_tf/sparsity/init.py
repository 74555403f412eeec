"""Sparsity-aware initialization (Evci et al., "Gradient Flow in Sparse Neural Networks").

Dense initializers (Glorot, He) assume every unit has the full fan-in. In a sparse layer
unit ``i`` only sees ``u_i`` active inputs, so its pre-activation variance is
``u_i * Var(w)``. The paper's fix (Eq. 1, Appendix B) draws each active weight of output
unit ``i`` with ``Var(w) = scale / u_i`` (``scale`` = 1 for Glorot-style, 2 for He-style
ReLU networks), where ``u_i`` is the unit's sparse fan-in; with the fan-out of input unit
``j``, or the average of the two, instead. For a convolution an output unit is an output
channel and its fan-in counts the whole receptive field (kernel height x width x active
input channels).

Everything is vectorised: the fans are sums of the mask over axes, no loop over weights.
Weights are described by ``in_axes`` / ``out_axes``: the kernel axes that index input and
output units (Dense ``[in, out]``: (0,), (1,); Conv2D ``[h, w, in, out]``: (2,), (3,);
Conv2DTranspose ``[h, w, out, in]``: (3,), (2,); DepthwiseConv2D ``[h, w, in, mult]``:
(2,), (2, 3)).
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from rigl_tf.sparsity import masks as masks_lib

INITIALIZERS = ("dense", "layer_scaled", "unit_scaled")
UNIT_SCALED_METHODS = (
    "fanin_normal",
    "fanin_uniform",
    "fanout_normal",
    "fanout_uniform",
    "fanavg_normal",
    "fanavg_uniform",
)


def check_initializer(name):
    """Raises ValueError unless ``name`` is a known sparse initializer."""
    if name not in INITIALIZERS:
        raise ValueError(
            f"Unknown `init` {name!r}; known sparse initializers: {', '.join(INITIALIZERS)}."
        )


def check_method(method):
    """Raises ValueError unless ``method`` is a known unit_scaled method."""
    if method not in UNIT_SCALED_METHODS:
        raise ValueError(
            f"Unknown unit_scaled `method` {method!r}; known methods: "
            f"{', '.join(UNIT_SCALED_METHODS)}."
        )


def _normalize_axes(axes: Sequence[int], rank: int):
    return tuple(sorted(a % rank for a in axes))


def sparse_fans(mask, in_axes, out_axes):
    """Per-weight sparse fan-in and fan-out, broadcast to the mask's shape.

    Args:
      mask: 0/1 tensor.
      in_axes: axes indexing input units.
      out_axes: axes indexing output units.

    Returns:
      ``(fan_in, fan_out)``: for each position, the number of active weights feeding the
      same output unit, and leaving the same input unit.
    """
    mask = tf.cast(mask, tf.float32)
    rank = len(mask.shape)
    out_axes = _normalize_axes(out_axes, rank)
    in_axes = _normalize_axes(in_axes, rank)
    not_out = [a for a in range(rank) if a not in out_axes]
    not_in = [a for a in range(rank) if a not in in_axes]
    fan_in = tf.reduce_sum(mask, axis=not_out, keepdims=True) if not_out else mask
    fan_out = tf.reduce_sum(mask, axis=not_in, keepdims=True) if not_in else mask
    return tf.broadcast_to(fan_in, tf.shape(mask)), tf.broadcast_to(fan_out, tf.shape(mask))


def unit_scaled(mask, in_axes, out_axes, method="fanavg_uniform", scale=1.0, seed=0, index=0):
    """Draws weights with variance ``scale / fan`` per unit, zero where the mask is zero.

    Args:
      mask: 0/1 tensor (the weight's mask).
      in_axes: axes indexing input units.
      out_axes: axes indexing output units.
      method: '{fanin,fanout,fanavg}_{normal,uniform}'.
      scale: variance numerator: 1.0 (Glorot-like) or 2.0 (He-like, ReLU).
      seed: experiment seed (stateless RNG).
      index: the weight's index, so every weight draws an independent stream.

    Returns:
      A float32 tensor of the mask's shape.

    Raises:
      ValueError: for an unknown method or a non-positive scale.
    """
    check_method(method)
    if not float(scale) > 0:
        raise ValueError(f"unit_scaled `scale` must be > 0, got {scale!r}.")
    fan_kind, dist = method.split("_")
    mask = tf.cast(mask, tf.float32)
    fan_in, fan_out = sparse_fans(mask, in_axes, out_axes)
    fan = {"fanin": fan_in, "fanout": fan_out, "fanavg": (fan_in + fan_out) / 2.0}[fan_kind]
    variance = tf.math.divide_no_nan(tf.constant(float(scale)), fan)
    rng_seed = masks_lib.stateless_seed(seed, 0, 10_000 + int(index))
    if dist == "normal":
        noise = tf.random.stateless_normal(tf.shape(mask), seed=rng_seed)
        values = noise * tf.sqrt(variance)
    else:
        # U(-a, a) has variance a^2 / 3.
        noise = tf.random.stateless_uniform(tf.shape(mask), seed=rng_seed, minval=-1.0, maxval=1.0)
        values = noise * tf.sqrt(3.0 * variance)
    return values * mask


def layer_scaled(dense_values, mask):
    """Liu et al.'s scaling: the dense initializer's draw divided by sqrt(layer density).

    Scaling by ``1/sqrt(density)`` multiplies the variance by ``1/density``, so the expected
    pre-activation variance matches the dense layer's on average over units.
    """
    mask = tf.cast(mask, tf.float32)
    density = tf.reduce_sum(mask) / tf.cast(tf.size(mask), tf.float32)
    values = tf.cast(dense_values, tf.float32) * tf.math.rsqrt(tf.maximum(density, 1e-12))
    return values * mask


def sparse_initialize(init, mask, dense_values, in_axes, out_axes, method="fanavg_uniform",
                      scale=1.0, seed=0, index=0):
    """Dispatches to the named initializer; returns masked float32 values.

    Args:
      init: 'dense', 'layer_scaled' or 'unit_scaled'.
      mask: the weight's mask.
      dense_values: the weight drawn by the layer's own (dense) initializer.
      in_axes, out_axes: unit axes of the weight (used by unit_scaled).
      method, scale: unit_scaled options.
      seed, index: stateless RNG keys (unit_scaled).

    Returns:
      The initial weight values, exactly zero where the mask is zero.
    """
    check_initializer(init)
    if init == "dense":
        return tf.cast(dense_values, tf.float32) * tf.cast(mask, tf.float32)
    if init == "layer_scaled":
        return layer_scaled(dense_values, mask)
    return unit_scaled(mask, in_axes, out_axes, method, scale, seed, index)


def expected_std(mask: np.ndarray, in_axes, out_axes, method="fanavg_uniform", scale=1.0):
    """The standard deviation unit_scaled targets at each position (numpy; for tests/plots)."""
    fan_in, fan_out = (t.numpy() for t in sparse_fans(mask, in_axes, out_axes))
    fan = {"fanin": fan_in, "fanout": fan_out, "fanavg": (fan_in + fan_out) / 2}[
        method.split("_")[0]
    ]
    with np.errstate(divide="ignore"):
        return np.where(fan > 0, np.sqrt(scale / np.maximum(fan, 1e-12)), 0.0)
