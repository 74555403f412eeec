"""Statistics of lottery tickets and IMP runs: weight-ranking overlap, masks, signs.

Weight and mask lists are aligned lists (usually with `model.trainable_variables`). Mask
entries may be `None` (a dense variable), which the mask statistics skip.
"""

import numpy as np

from rigl_tf.analysis import _common


def _top_set(w, k):
    """Flat indices of the k largest-magnitude entries (ties broken by position)."""
    flat = np.abs(np.ravel(w))
    if k == 0:
        return np.zeros(0, np.int64)
    return np.argpartition(-flat, k - 1, kind="introselect")[:k]


def correlation_indicator(weights_a, weights_b, p=0.2, min_ndim=2, per_layer=False,
                          masks=None):
    """Correlation indicator R_p of Ma et al. ("Sanity checks for lottery tickets").

    For each layer, R_p is the fraction of the top-p fraction (k = round(p n) entries) of
    largest-magnitude weights of `weights_a` that are also among the top-p fraction of
    `weights_b`: |T_p(a) ∩ T_p(b)| / k. Two independent random weight tensors give R_p ≈ p;
    1 means the two rank the same weights highest (e.g. initial and final weights of a
    winning ticket). The total is the average over layers weighted by layer size.

    Args:
      weights_a: list of arrays (e.g. initial weights).
      weights_b: list aligned with `weights_a` (e.g. trained weights).
      p: fraction in (0, 1].
      min_ndim: arrays with fewer dimensions (biases, normalisation parameters when 2) are
        skipped.
      per_layer: also return the per-layer values (None for skipped arrays).
      masks: optional list aligned with the weights (None or 0/1 arrays): only entries
        active in the mask are ranked (k = round(p * active)). Use it for sparse
        solutions, whose masked zeros would otherwise fill the top-p sets.

    Returns:
      A float, or `{'total': float, 'per_layer': [...]}`.

    Raises:
      ValueError: for p outside (0, 1] or when no array is eligible.
    """
    if not 0 < p <= 1:
        raise ValueError(f"p: must be in (0, 1]; got {p!r}.")
    a, b = _common.check_weight_lists(weights_a, weights_b, "weights_a", "weights_b")
    if masks is not None and len(masks) != len(a):
        raise ValueError(f"masks: expected {len(a)} entries aligned with the weights, got "
                         f"{len(masks)}.")
    per, num, den = [], 0.0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        if x.ndim < min_ndim or x.size == 0:
            per.append(None)
            continue
        m = None if masks is None or masks[i] is None else np.asarray(masks[i]).astype(bool)
        if m is not None:
            if m.shape != x.shape:
                raise ValueError(f"masks[{i}]: shape {m.shape} differs from the weight's "
                                 f"{x.shape}.")
            x, y = x[m], y[m]
            if x.size == 0:
                per.append(None)
                continue
        k = max(1, int(round(p * x.size)))
        overlap = np.intersect1d(_top_set(x, k), _top_set(y, k), assume_unique=True).size / k
        per.append(float(overlap))
        num += overlap * x.size
        den += x.size
    if den == 0:
        raise ValueError(f"weights_a: no array has at least min_ndim={min_ndim} dimensions.")
    total = num / den
    return {"total": total, "per_layer": per} if per_layer else total


def _masks(masks, name):
    return [None if m is None else np.asarray(m).astype(bool) for m in masks]


def mask_overlap(masks_a, masks_b):
    """Overlap of two sets of masks, per layer and in total.

    Args:
      masks_a: list of 0/1 arrays (or `None` for dense variables, skipped).
      masks_b: list aligned with `masks_a`.

    Returns:
      `{'per_layer': [...], 'total': {...}}`; each entry (None for skipped layers) holds
      `shared` (active in both), `active_a`, `active_b`, `fraction_of_a` (shared /
      active_a) and `jaccard` (shared / active in either).

    Raises:
      ValueError: for mismatched lists, shapes, or a None in only one list.
    """
    if len(masks_a) != len(masks_b):
        raise ValueError(f"masks_b: has {len(masks_b)} entries but masks_a has {len(masks_a)}.")
    a, b = _masks(masks_a, "masks_a"), _masks(masks_b, "masks_b")

    def stats(shared, na, nb, union):
        return {
            "shared": int(shared),
            "active_a": int(na),
            "active_b": int(nb),
            "fraction_of_a": shared / na if na else float("nan"),
            "jaccard": shared / union if union else float("nan"),
        }

    per, totals = [], np.zeros(4, np.int64)
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None and y is None:
            per.append(None)
            continue
        if x is None or y is None or x.shape != y.shape:
            raise ValueError(
                f"masks_b[{i}]: does not match masks_a[{i}] (shapes "
                f"{None if x is None else x.shape} vs {None if y is None else y.shape})."
            )
        counts = np.array([np.sum(x & y), x.sum(), y.sum(), np.sum(x | y)], np.int64)
        totals += counts
        per.append(stats(*counts))
    return {"per_layer": per, "total": stats(*totals)}


def sign_flips(weights_a, weights_b, masks=None):
    """Fraction of active weights whose sign differs between two weight sets.

    Args:
      weights_a: list of arrays (e.g. the rewind point of a ticket).
      weights_b: list aligned with `weights_a` (e.g. the trained ticket).
      masks: optional list of 0/1 arrays (`None` = all entries) selecting the active
        weights; without masks, the entries non-zero in both sets count as active.

    Returns:
      `{'total': float, 'per_layer': [float, ...], 'flipped': int, 'active': int}`
      (NaN for layers without active weights).
    """
    a, b = _common.check_weight_lists(weights_a, weights_b, "weights_a", "weights_b")
    if masks is not None and len(masks) != len(a):
        raise ValueError(f"masks: has {len(masks)} entries; expected {len(a)}, one per array.")
    per, flipped, active = [], 0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        if masks is None:
            sel = (x != 0) & (y != 0)
        elif masks[i] is None:
            sel = np.ones(x.shape, bool)
        else:
            sel = np.asarray(masks[i]).astype(bool)
        f = int(np.sum(np.sign(x[sel]) != np.sign(y[sel])))
        n = int(sel.sum())
        per.append(f / n if n else float("nan"))
        flipped += f
        active += n
    total = flipped / active if active else float("nan")
    return {"total": total, "per_layer": per, "flipped": flipped, "active": active}


def per_connection_std(weight_sets, masks=None):
    """Standard deviation of every connection across a sequence of weight sets.

    Useful for IMP: how much each surviving weight moves across levels.

    Args:
      weight_sets: sequence of S >= 2 aligned weight lists.
      masks: optional mask list (`None` = all entries) restricting the summary statistics
        to active connections (e.g. the final ticket's mask).

    Returns:
      `{'std': [arrays], 'mean_std_per_layer': [float], 'mean_std': float}`; `std` has
      one array per variable (population std over the S sets).
    """
    if len(weight_sets) < 2:
        raise ValueError(f"weight_sets: needs at least 2 weight lists; got {len(weight_sets)}.")
    first = weight_sets[0]
    for i, ws in enumerate(weight_sets[1:], 1):
        _common.check_weight_lists(first, ws, "weight_sets[0]", f"weight_sets[{i}]")
    stds = [
        np.std(np.stack([np.asarray(ws[v], np.float64) for ws in weight_sets]), axis=0)
        for v in range(len(first))
    ]
    per, total, count = [], 0.0, 0
    for v, s in enumerate(stds):
        sel = (
            np.ones(s.shape, bool)
            if masks is None or masks[v] is None
            else np.asarray(masks[v]).astype(bool)
        )
        per.append(float(s[sel].mean()) if sel.any() else float("nan"))
        total += float(s[sel].sum())
        count += int(sel.sum())
    return {
        "std": stds,
        "mean_std_per_layer": per,
        "mean_std": total / count if count else float("nan"),
    }


def sparsity_evolution(mask_sequence, names=None):
    """Per-layer and total sparsity (fraction of zeros) across a sequence of mask lists.

    Args:
      mask_sequence: S mask lists (e.g. one per IMP level), aligned; `None` entries (dense
        variables) are skipped.
      names: optional names of the variables (length of a mask list); defaults to indices.

    Returns:
      `{'layers': [names of masked variables], 'per_layer': (S, L) array, 'total': (S,)
      array}`; the total counts zeros over all masked variables.

    Raises:
      ValueError: for an empty sequence or mask lists of different structure.
    """
    if len(mask_sequence) == 0:
        raise ValueError("mask_sequence: is empty; pass at least one mask list.")
    first = mask_sequence[0]
    if names is not None and len(names) != len(first):
        raise ValueError(f"names: has {len(names)} entries; expected {len(first)}.")
    layers = [i for i, m in enumerate(first) if m is not None]
    per = np.zeros((len(mask_sequence), len(layers)))
    total = np.zeros(len(mask_sequence))
    for s, masks in enumerate(mask_sequence):
        if len(masks) != len(first) or [i for i, m in enumerate(masks) if m is not None] != layers:
            raise ValueError(
                f"mask_sequence[{s}]: has a different structure from mask_sequence[0]; all "
                "mask lists must have None in the same places."
            )
        zeros, size = 0, 0
        for col, i in enumerate(layers):
            m = np.asarray(masks[i])
            per[s, col] = 1.0 - np.count_nonzero(m) / m.size
            zeros += m.size - np.count_nonzero(m)
            size += m.size
        total[s] = zeros / size if size else float("nan")
    labels = [names[i] if names is not None else i for i in layers]
    return {"layers": labels, "per_layer": per, "total": total}
