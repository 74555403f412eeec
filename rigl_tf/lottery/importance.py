"""Importance measures and exact-count pruning masks for iterative magnitude pruning.

Every measure scores the *active* weights of one layer (``mask == 1``) from their
magnitudes ``a = |w|``; inactive positions score ``-inf`` so that pruning never revives
them. Measures other than 'magnitude' normalise within the layer, so that a *global*
top-k compares layers on a common scale (Vandersmissen & Oramas, "Considering Layerwise
Importance in the Lottery Ticket Hypothesis"). With ``n`` active weights in the layer:

* ``'magnitude'``: ``s_i = a_i`` (the original LTH criterion).
* ``'l1'``: ``s_i = a_i / sum_j a_j``.
* ``'l2'``: ``s_i = a_i / sqrt(sum_j a_j**2)``.
* ``'softmax'``: ``s_i = exp(a_i) / sum_j exp(a_j)``, computed as
  ``exp(a_i - max a) / sum_j exp(a_j - max a)`` (identical value, no overflow). The
  temperature is 1: weights are used as they are, not rescaled.
* ``'minmax'``: ``s_i = (a_i - min a) / (max a - min a)``; a layer whose active
  magnitudes are all equal (including a single active weight) scores 1 everywhere.
* ``'random'``: uniform [0, 1) scores from a stateless RNG keyed by (seed, level, layer
  index): random pruning with the same counts.

sums, norms, minima and maxima run over the active weights of the layer only. A layer
whose active weights are all zero is treated as uniform: 'l1' gives ``1/n``, 'l2'
``1/sqrt(n)``. Within one layer every measure is a monotone function of ``|w|``, so with
``scope='layerwise'`` all measures but 'random' select the same masks as 'magnitude'; they
differ only under ``scope='global'``.

Counts are exact (``rigl_tf.sparsity.distributions.num_active``): at overall density
``d`` (relative to the full, unpruned size), a layerwise mask of a weight with ``size``
entries has ``num_active(d, size, min_active)`` ones; a global scope keeps
``num_active(d, total_size, 0)`` ones in total, at least ``min_active`` per layer.
"""

import warnings
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from rigl_tf.sparsity import distributions as dist_lib
from rigl_tf.sparsity import masks as masks_lib

SCOPES = ("global", "layerwise")


def _magnitude(a):
    return a


def _l1(a):
    total = a.sum()
    return a / total if total > 0 else np.full_like(a, 1.0 / a.size)


def _l2(a):
    norm = np.sqrt(np.sum(a * a))
    return a / norm if norm > 0 else np.full_like(a, 1.0 / np.sqrt(a.size))


def _softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def _minmax(a):
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.ones_like(a)


# name -> fn(active magnitudes as a 1-D float64 array) -> 1-D scores. 'random' is special:
# it needs the seed, not the magnitudes.
_MEASURES: Dict[str, Optional[Callable[[np.ndarray], np.ndarray]]] = {
    "magnitude": _magnitude,
    "l1": _l1,
    "l2": _l2,
    "softmax": _softmax,
    "minmax": _minmax,
    "random": None,
}


def register_importance(name: str, fn: Callable[[np.ndarray], np.ndarray]):
    """Registers a layer-normalised importance measure.

    Args:
      name: the measure's name (not already registered).
      fn: maps the active magnitudes of one layer (a non-empty 1-D float64 array) to
        scores of the same shape (higher = kept).

    Raises:
      ValueError: for an empty or already registered name.
    """
    if not isinstance(name, str) or not name or name in _MEASURES:
        raise ValueError(
            f"register_importance: `name` must be a new non-empty string, got {name!r} "
            f"(registered: {', '.join(list_measures())})."
        )
    _MEASURES[name] = fn


def list_measures() -> Tuple[str, ...]:
    """The names of the registered importance measures."""
    return tuple(_MEASURES)


def check_measure(measure: str) -> str:
    """Returns ``measure`` if registered; raises ValueError listing the known ones."""
    if measure not in _MEASURES:
        raise ValueError(
            f"Unknown importance `measure` {measure!r}; known measures: "
            f"{', '.join(list_measures())}."
        )
    return measure


def check_scope(scope: str) -> str:
    """Returns ``scope`` if it is 'global' or 'layerwise'; raises ValueError otherwise."""
    if scope not in SCOPES:
        raise ValueError(f"Unknown pruning `scope` {scope!r}; allowed: {', '.join(SCOPES)}.")
    return scope


def check_fraction(fraction, name: str = "prune_fraction") -> float:
    """Validates a pruning fraction in the open interval (0, 1).

    Args:
      fraction: the value to check.
      name: the parameter name for the message.

    Returns:
      The fraction as a float.

    Raises:
      ValueError: unless ``0 < fraction < 1``.
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(fraction, bool) or not 0.0 < value < 1.0:
        raise ValueError(
            f"`{name}` must be a number in the open interval (0, 1) (the fraction of the "
            f"remaining weights pruned per level), got {fraction!r}."
        )
    return value


def layer_scores(weight, mask, measure: str = "magnitude", *, seed: int = 0, level: int = 0,
                 index: int = 0) -> np.ndarray:
    """Importance scores of one layer; inactive positions get ``-inf``.

    Args:
      weight: the layer's weights (numpy array or tensor).
      mask: its 0/1 mask of the same shape.
      measure: a name from :func:`list_measures` (see the module docstring).
      seed: seed of the 'random' measure.
      level: pruning level, mixed into the 'random' stream.
      index: layer index, mixed into the 'random' stream.

    Returns:
      A float64 numpy array of the weight's shape.

    Raises:
      ValueError: for an unknown measure or mismatched shapes.
    """
    check_measure(measure)
    w = np.asarray(weight, np.float64)
    m = np.asarray(mask)
    if w.shape != m.shape:
        raise ValueError(
            f"`mask` has shape {m.shape}, expected the weight's shape {w.shape}."
        )
    active = m.reshape(-1) > 0
    out = np.full(w.size, -np.inf)
    if not active.any():
        return out.reshape(w.shape)
    if measure == "random":
        r = masks_lib.random_scores(w.shape, seed, level, index).numpy()
        out[active] = np.asarray(r, np.float64).reshape(-1)[active]
    else:
        out[active] = _MEASURES[measure](np.abs(w.reshape(-1)[active]))
    return out.reshape(w.shape)


def importance_scores(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                      measure: str = "magnitude", *, seed: int = 0,
                      level: int = 0) -> Dict[str, np.ndarray]:
    """Scores of every weight (in ``weights`` order; weight ``i`` uses random stream ``i``).

    Args:
      weights: key -> weight array.
      masks: key -> 0/1 mask (same keys).
      measure, seed, level: see :func:`layer_scores`.

    Returns:
      key -> float64 scores with ``-inf`` at inactive positions.
    """
    _check_keys(weights, masks)
    return {
        k: layer_scores(weights[k], masks[k], measure, seed=seed, level=level, index=i)
        for i, k in enumerate(weights)
    }


def target_counts(sizes: Mapping[str, int], density: float, scope: str = "global",
                  min_active: int = 1):
    """Exact number of weights kept at ``density`` (relative to the full sizes).

    Args:
      sizes: key -> number of entries of the weight.
      density: fraction kept, in [0, 1].
      scope: 'layerwise' (a count per weight) or 'global' (one total).
      min_active: minimum per layer (layerwise counts only; global scopes enforce it when
        building masks).

    Returns:
      For 'layerwise', key -> ``num_active(density, size, min_active)``; for 'global', the
      total ``num_active(density, sum(sizes), 0)``.
    """
    check_scope(scope)
    if scope == "layerwise":
        return {k: dist_lib.num_active(density, s, min_active) for k, s in sizes.items()}
    return dist_lib.num_active(density, sum(int(s) for s in sizes.values()), 0)


def prune_masks(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                density: float, *, measure: str = "magnitude", scope: str = "global",
                min_active: int = 1, seed: int = 0,
                level: int = 0) -> Dict[str, np.ndarray]:
    """Exact-count masks keeping the most important active weights at ``density``.

    Only currently active weights can be kept. ``density`` is relative to the full weight
    sizes (e.g. ``0.8 ** L`` at IMP level ``L`` with a fixed 20% pruning rate), so repeated
    pruning does not accumulate rounding error.

    Args:
      weights: key -> weight array (the trained weights to prune).
      masks: key -> current 0/1 mask.
      density: target fraction of weights kept, in (0, 1].
      measure: importance measure (see the module docstring).
      scope: 'global' (one top-k over all weights) or 'layerwise' (a top-k per weight).
      min_active: minimum number of active weights kept per layer; a layer that would be
        emptied keeps its ``min_active`` most important weights, with a warning (in the
        global scope they are taken from the least important weights elsewhere, so the
        total stays exact).
      seed: seed of the 'random' measure.
      level: pruning level (mixed into the 'random' stream).

    Returns:
      key -> float32 numpy masks; each is a subset of the current mask.

    Raises:
      ValueError: for an unknown measure or scope, a density outside (0, 1], a negative
        ``min_active`` or mismatched keys/shapes.
    """
    check_measure(measure)
    check_scope(scope)
    _check_keys(weights, masks)
    try:
        density = float(density)
    except (TypeError, ValueError):
        density = float("nan")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"`density` must be in (0, 1], got {density!r}.")
    if isinstance(min_active, bool) or not isinstance(min_active, (int, np.integer)) or (
            min_active < 0):
        raise ValueError(f"`min_active` must be an int >= 0, got {min_active!r}.")
    scores = importance_scores(weights, masks, measure, seed=seed, level=level)
    keys = list(weights)
    sizes = {k: int(np.size(weights[k])) for k in keys}
    active = {k: int(np.sum(np.asarray(masks[k]) > 0)) for k in keys}
    if scope == "layerwise":
        counts = target_counts(sizes, density, "layerwise", min_active)
        out = {}
        for k in keys:
            raw = int(np.round(density * sizes[k]))
            count = min(counts[k], active[k])
            if raw == 0:
                _warn_empty(k, weights[k], density, count)
            out[k] = masks_lib.topk_mask(tf.constant(scores[k], tf.float32), count).numpy()
        return out
    total = target_counts(sizes, density, "global")
    joint = masks_lib.global_topk_masks(
        [tf.constant(scores[k], tf.float32) for k in keys], total)
    out = {k: m.numpy() for k, m in zip(keys, joint)}
    forced = {}
    for k in keys:
        need = min(min_active, active[k])
        if need == 0 and active[k] and not out[k].any():
            _warn_empty(k, weights[k], density, 0)
        if int(out[k].sum()) < need:
            forced[k] = masks_lib.topk_mask(tf.constant(scores[k], tf.float32), need).numpy()
            _warn_empty(k, weights[k], density, need)
    if not forced:
        return out
    # Forced positions score +inf, so the global top-k takes them first and fills the rest
    # of the exact total with the most important other weights.
    ranked = [tf.constant(np.where(forced[k] > 0, np.inf, scores[k]) if k in forced
                          else scores[k], tf.float32) for k in keys]
    total = max(total, sum(int(f.sum()) for f in forced.values()))
    joint = masks_lib.global_topk_masks(ranked, total)
    return {k: m.numpy() for k, m in zip(keys, joint)}


def prune_by_fraction(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                      fraction: float, **kwargs) -> Dict[str, np.ndarray]:
    """Prunes ``fraction`` of the currently active weights (a convenience for one step).

    The target density is ``(1 - fraction) * current density`` over all given weights;
    see :func:`prune_masks` for ``kwargs``. For several IMP levels, track the density and
    call :func:`prune_masks` instead (exact counts without accumulated rounding).

    Raises:
      ValueError: unless ``0 < fraction < 1`` (and see :func:`prune_masks`).
    """
    fraction = check_fraction(fraction, "fraction")
    _check_keys(weights, masks)
    total = sum(int(np.size(m)) for m in masks.values())
    current = sum(float(np.sum(np.asarray(m) > 0)) for m in masks.values()) / total
    return prune_masks(weights, masks, current * (1.0 - fraction), **kwargs)


def _warn_empty(key, weight, density, kept):
    shape = tuple(np.shape(weight))
    if kept:
        message = (f"Pruning to density {density:.4g} would remove every weight of {key!r} "
                   f"(shape {shape}); keeping its {kept} most important weight(s) "
                   f"(min_active).")
    else:
        message = (f"Pruning to density {density:.4g} removes every weight of {key!r} "
                   f"(shape {shape}): the layer is disconnected (min_active=0).")
    warnings.warn(message, stacklevel=3)


def _check_keys(weights, masks):
    if list(weights) != list(masks) and set(weights) != set(masks):
        raise ValueError(
            f"`weights` and `masks` must have the same keys; got {sorted(weights)} and "
            f"{sorted(masks)}."
        )
    for k in weights:
        if np.shape(weights[k]) != np.shape(masks[k]):
            raise ValueError(
                f"`masks[{k!r}]` has shape {np.shape(masks[k])}, expected the weight's "
                f"shape {np.shape(weights[k])}."
            )


__all__ = [
    "SCOPES", "check_fraction", "check_measure", "check_scope", "importance_scores",
    "layer_scores", "list_measures", "prune_by_fraction", "prune_masks",
    "register_importance", "target_counts",
]
