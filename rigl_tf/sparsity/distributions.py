"""Per-layer sparsity distributions: uniform, Erdos-Renyi (ER), ER-kernel (ERK), custom.

All functions here are pure Python/numpy: they map weight shapes to densities and exact
non-zero counts. The budget is over the prunable weights that are passed in; layers kept
dense by the caller are simply not passed.

ERK (Evci et al. 2020, "Rigging the Lottery", Sec. 3): the density of layer l is
``eps * (sum(shape_l) / prod(shape_l)) ** power``, with one ``eps`` chosen so that the
total number of non-zeros equals ``(1 - sparsity) * sum(size_l)``. ER uses only the last two
dimensions (fan-in + fan-out over fan-in * fan-out). A layer whose density would exceed 1 is
made dense and ``eps`` is recomputed over the remaining layers (capping), so the budget holds.
"""

import math
import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]

DISTRIBUTIONS = ("uniform", "er", "erk", "global")


def check_sparsity(sparsity, name="sparsity"):
    """Validates a sparsity value in [0, 1).

    Args:
      sparsity: the value to check.
      name: the parameter name used in the error message.

    Returns:
      The sparsity as a float.

    Raises:
      ValueError: if the value is not a number in [0, 1).
    """
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a number in [0, 1), got {sparsity!r}."
        ) from None
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise ValueError(f"`{name}` must be in [0, 1), got {sparsity!r}.")
    return value


def num_active(density, size, min_active=1):
    """Returns the exact number of ones a mask of ``size`` entries has at ``density``.

    The count is ``round(density * size)`` (round half to even, like ``np.round`` and
    ``tf.round``), raised to ``min_active`` (but never above ``size``).

    Args:
      density: fraction of active weights in [0, 1].
      size: number of entries of the weight.
      min_active: lower bound on the count (1 keeps every layer connected; 0 allows empty).

    Returns:
      The number of active weights as an int.
    """
    count = int(np.round(float(density) * int(size)))
    return int(min(size, max(count, min_active)))


def _raw_erdos_renyi(shape: Shape, kernel: bool, power: float) -> float:
    if kernel:
        # ERK only: the reference applies erk_power_scale to ERK, never to ER.
        return (float(sum(shape)) / float(np.prod(shape))) ** power
    dims = shape if len(shape) < 2 else shape[-2:]
    return float(sum(dims)) / float(np.prod(dims))


def get_densities(
    shapes: Mapping[str, Shape],
    sparsity: float,
    distribution: str = "erk",
    custom_sparsity: Optional[Mapping[str, float]] = None,
    erk_power_scale: float = 1.0,
) -> Dict[str, float]:
    """Computes the density of every prunable weight.

    Args:
      shapes: map from a weight's key to its shape, in a fixed order.
      sparsity: overall target sparsity in [0, 1) over the weights not in
        ``custom_sparsity``.
      distribution: 'uniform', 'er', 'erk' or 'global'. For 'global' every layer gets the
        overall density here; the actual per-layer split is decided by a global top-k
        (see ``masks.global_topk_masks``).
      custom_sparsity: optional map from key to a fixed sparsity for that weight; those
        weights are excluded from the budget of the others.
      erk_power_scale: exponent applied to the ERK raw probability (1.0 is standard);
        ignored by 'er', as in the reference.

    Returns:
      A dict from key to density in (0, 1].

    Raises:
      ValueError: for an unknown distribution, bad sparsity or unknown custom keys.
    """
    sparsity = check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Unknown `distribution` {distribution!r}; known distributions: "
            f"{', '.join(DISTRIBUTIONS)} (or pass a per-layer `custom_sparsity` map)."
        )
    custom_sparsity = dict(custom_sparsity or {})
    unknown = sorted(set(custom_sparsity) - set(shapes))
    if unknown:
        raise ValueError(
            f"`custom_sparsity` names weights that are not prunable in this model: "
            f"{unknown}; prunable weights are: {list(shapes)}."
        )
    densities = {}
    for key, value in custom_sparsity.items():
        densities[key] = 1.0 - check_sparsity(value, f"custom_sparsity[{key!r}]")
    rest = [k for k in shapes if k not in custom_sparsity]
    if distribution in ("uniform", "global"):
        for key in rest:
            densities[key] = 1.0 - sparsity
        return {k: densities[k] for k in shapes}

    kernel = distribution == "erk"
    sizes = {k: int(np.prod(shapes[k])) for k in rest}
    dense = set()
    while True:
        budget = 0.0  # non-zeros available to the non-dense layers
        divisor = 0.0
        raw = {}
        for key in rest:
            if key in dense:
                budget -= sizes[key] * sparsity
            else:
                budget += sizes[key] * (1.0 - sparsity)
                raw[key] = _raw_erdos_renyi(tuple(shapes[key]), kernel, erk_power_scale)
                divisor += raw[key] * sizes[key]
        if not raw:
            break
        eps = budget / divisor
        max_raw = max(raw.values())
        if max_raw * eps > 1.0:
            dense.update(k for k, r in raw.items() if r == max_raw)
            continue
        break
    for key in rest:
        densities[key] = 1.0 if key in dense else eps * raw[key]
    return {k: densities[k] for k in shapes}


def get_counts(
    shapes: Mapping[str, Shape],
    densities: Mapping[str, float],
    min_active: int = 1,
) -> Dict[str, int]:
    """Converts densities to exact non-zero counts, warning when a layer would disconnect.

    Args:
      shapes: map from key to shape.
      densities: map from key to density.
      min_active: minimum active weights per layer (1 keeps layers connected; 0 allows a
        layer to be emptied, which is then warned about).

    Returns:
      A dict from key to the exact number of active weights.
    """
    counts = {}
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        raw = int(np.round(densities[key] * size))
        counts[key] = num_active(densities[key], size, min_active)
        if raw == 0 and densities[key] < 1.0:
            if min_active > 0:
                warnings.warn(
                    f"Weight {key!r} (shape {tuple(shape)}) would have no active weights at "
                    f"density {densities[key]:.3g}; keeping {counts[key]} active so the "
                    f"layer stays connected.",
                    stacklevel=2,
                )
            else:
                warnings.warn(
                    f"Weight {key!r} (shape {tuple(shape)}) has no active weights at "
                    f"density {densities[key]:.3g}: the layer is disconnected.",
                    stacklevel=2,
                )
    return counts


def total_density(shapes: Mapping[str, Shape], counts: Mapping[str, int]) -> float:
    """Returns the fraction of active weights over all given shapes."""
    total = sum(int(np.prod(s)) for s in shapes.values())
    return float(sum(counts.values())) / float(total) if total else 1.0


def describe(shapes: Mapping[str, Shape], densities: Mapping[str, float]) -> Sequence[str]:
    """Formats one line per weight: key, shape and density (for logs)."""
    return [f"{k}: {tuple(shapes[k])} density={densities[k]:.4f}" for k in shapes]
