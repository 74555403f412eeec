"""Loss and error along paths between solutions: linear interpolation, barriers, planes.

Weight lists may be aligned with `model.trainable_variables` or with `model.weights`:

* aligned with `model.weights` (get them with `get_weights(model, "all")`), every weight
  is interpolated, non-trainable ones included; for batch norm this interpolates the
  moving mean and variance along with the affine parameters, which is the choice made
  here for comparing two trained networks (each endpoint then reproduces its own network
  exactly). Far outside [0, 1] an interpolated variance can become negative; keep
  `alphas` near [0, 1] for such models.
* aligned with `model.trainable_variables`, only trainable weights move; non-trainable
  weights keep the values the model has when the function is called.

Every function restores all of the model's weights before returning.
"""

import numpy as np

from rigl_tf.analysis import _common

DEFAULT_ALPHAS = np.linspace(-0.2, 1.2, 29)


def _mask_list(model, masks, variables):
    masks = _common.normalize_masks(model, masks)
    return _common.masks_for_variables(model, masks, variables)


def _apply(weights, masks):
    return [w if m is None else w * m for w, m in zip(weights, masks)]


def _check_alphas(alphas, name="alphas"):
    alphas = np.asarray(alphas, np.float64).ravel()
    if alphas.size == 0 or not np.all(np.isfinite(alphas)):
        raise ValueError(f"{name}: must be a non-empty sequence of finite numbers; got {alphas!r}.")
    return alphas


def interpolate(
    model,
    weights_start,
    weights_end,
    data,
    alphas=DEFAULT_ALPHAS,
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
):
    """Evaluates the model at (1 - alpha) * weights_start + alpha * weights_end.

    Args:
      model: a Keras model producing logits (evaluated with `training=False`).
      weights_start: list of arrays aligned with `model.trainable_variables` or
        `model.weights` (see the module docstring).
      weights_end: list aligned like `weights_start`.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      alphas: interpolation coefficients.
      masks: optional masks aligned with `model.trainable_variables`, applied to the
        interpolated weights (e.g. to stay on a sparse subnetwork).
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss `loss_fn(y_true, logits)`.

    Returns:
      A dict of numpy arrays `alphas`, `loss`, `accuracy`, `error`.

    Raises:
      ValueError: if the weight lists do not match the model or each other, or `alphas`
        is empty.
    """
    alphas = _check_alphas(alphas)
    start, end = _common.check_weight_lists(
        weights_start, weights_end, "weights_start", "weights_end"
    )
    variables = _common.resolve_variables(model, start, "weights_start")
    mask_list = _mask_list(model, masks, variables)
    batches, _ = _common.materialize_batches(data, batch_size)
    evaluate = _common.make_evaluator(model, loss_fn)
    out = {"loss": [], "accuracy": [], "error": []}
    with _common.temporary_weights(model):
        for alpha in alphas:
            point = [(1.0 - alpha) * a + alpha * b for a, b in zip(start, end)]
            _common.assign_weights(variables, _apply(point, mask_list))
            metrics = evaluate(batches)
            for key in out:
                out[key].append(metrics[key])
    result = {key: np.array(value) for key, value in out.items()}
    result["alphas"] = alphas
    return result


def _value_at(alphas, values, target):
    hits = np.flatnonzero(np.isclose(alphas, target, rtol=0.0, atol=1e-9))
    if hits.size == 0:
        raise ValueError(
            f"result: its alphas must include {target} to define the endpoint value; got "
            f"alphas from {alphas.min()} to {alphas.max()}."
        )
    return values[hits[0]]


def error_barrier(result):
    """Barrier heights of an interpolation path.

    barrier = max over alpha in [0, 1] of value(alpha) - ((1 - alpha) value(0) + alpha
    value(1)), for the loss and for the error (1 - accuracy): the rise above the straight
    line between the endpoint values (the form of Entezari et al. 2022). Frankle et al.
    (2020) measure the rise above the mean of the two endpoint values; both agree when the
    endpoint values are equal. Points outside [0, 1] are ignored; the endpoints contribute
    0, so a barrier is never negative.

    Args:
      result: a dict from `interpolate` (needs `alphas`, `loss`, `error`; alphas must
        contain 0 and 1).

    Returns:
      `{'loss': float, 'error': float, 'loss_alpha': float, 'error_alpha': float}`, the
      heights and the alphas where they occur.

    Raises:
      ValueError: if `result` lacks a key or the alphas lack 0 or 1.
    """
    for key in ("alphas", "loss", "error"):
        if key not in result:
            raise ValueError(f"result: lacks key {key!r}; pass the dict returned by interpolate().")
    alphas = np.asarray(result["alphas"], np.float64)
    inside = (alphas >= -1e-9) & (alphas <= 1 + 1e-9)
    out = {}
    for key in ("loss", "error"):
        values = np.asarray(result[key], np.float64)
        v0, v1 = _value_at(alphas, values, 0.0), _value_at(alphas, values, 1.0)
        gaps = values[inside] - ((1.0 - alphas[inside]) * v0 + alphas[inside] * v1)
        best = int(np.argmax(gaps))
        out[key] = max(float(gaps[best]), 0.0)
        out[f"{key}_alpha"] = float(alphas[inside][best])
    return out


def linear_mode_connectivity(
    model,
    weights_a,
    weights_b,
    data,
    alphas=np.linspace(0.0, 1.0, 11),
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
):
    """Barrier on the straight line between two trained solutions.

    Two solutions are linearly mode connected when the error barrier is (close to) zero.

    Args:
      model: a Keras model producing logits.
      weights_a: first solution (list aligned with `model.trainable_variables` or
        `model.weights`).
      weights_b: second solution, aligned like `weights_a`.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      alphas: points on the path; must contain 0 and 1.
      masks: optional masks applied to the interpolated weights.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss.

    Returns:
      The `error_barrier` dict plus `path`: the `interpolate` result.
    """
    path = interpolate(model, weights_a, weights_b, data, alphas, masks, batch_size, loss_fn)
    out = error_barrier(path)
    out["path"] = path
    return out


def pairwise_barriers(
    model,
    weight_lists,
    data,
    alphas=np.linspace(0.0, 1.0, 11),
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
):
    """Loss and error barriers between every pair of solutions.

    Args:
      model: a Keras model producing logits.
      weight_lists: K weight lists, all aligned the same way.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      alphas: points on each path; must contain 0 and 1 (a grid symmetric around 0.5 makes
        the barrier symmetric in the pair, so each pair is evaluated once).
      masks: optional masks applied to the interpolated weights.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss.

    Returns:
      `{'loss': (K, K) array, 'error': (K, K) array}`, symmetric with zero diagonal.

    Raises:
      ValueError: if fewer than two weight lists are given.
    """
    k = len(weight_lists)
    if k < 2:
        raise ValueError(f"weight_lists: needs at least 2 solutions; got {k}.")
    loss = np.zeros((k, k))
    error = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            b = linear_mode_connectivity(
                model, weight_lists[i], weight_lists[j], data, alphas, masks, batch_size, loss_fn
            )
            loss[i, j] = loss[j, i] = b["loss"]
            error[i, j] = error[j, i] = b["error"]
    return {"loss": loss, "error": error}


def piecewise_path(
    model,
    weight_lists,
    data,
    points_per_segment=11,
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
):
    """Evaluates the piecewise-linear path through successive solutions (e.g. IMP levels).

    Args:
      model: a Keras model producing logits.
      weight_lists: K >= 2 weight lists, all aligned the same way.
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      points_per_segment: points per segment, endpoints included (>= 2).
      masks: optional masks applied to the interpolated weights.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss.

    Returns:
      A dict with `t` (position along the path: segment s covers [s, s+1]), `loss`,
      `accuracy`, `error` arrays and `segment_barriers`: a list of `error_barrier` dicts,
      one per segment.

    Raises:
      ValueError: for fewer than two weight lists or fewer than two points per segment.
    """
    k = len(weight_lists)
    if k < 2:
        raise ValueError(f"weight_lists: needs at least 2 solutions; got {k}.")
    points_per_segment = _common.check_positive_int(points_per_segment, "points_per_segment")
    if points_per_segment < 2:
        raise ValueError(f"points_per_segment: must be >= 2; got {points_per_segment}.")
    alphas = np.linspace(0.0, 1.0, points_per_segment)
    ts, metrics, barriers = [], {"loss": [], "accuracy": [], "error": []}, []
    for s in range(k - 1):
        seg = interpolate(
            model, weight_lists[s], weight_lists[s + 1], data, alphas, masks, batch_size, loss_fn
        )
        barriers.append(error_barrier(seg))
        keep = slice(0 if s == 0 else 1, None)  # shared endpoints appear once
        ts.append(s + alphas[keep])
        for key in metrics:
            metrics[key].append(seg[key][keep])
    out = {key: np.concatenate(value) for key, value in metrics.items()}
    out["t"] = np.concatenate(ts)
    out["segment_barriers"] = barriers
    return out


def plane(
    model,
    w0,
    w1,
    w2,
    data,
    grid=21,
    margin=0.25,
    masks=None,
    batch_size=_common.DEFAULT_BATCH_SIZE,
    loss_fn=None,
):
    """Loss and error on the 2-D plane through three solutions (Garipov et al. 2018).

    The plane is w0 + a * u + b * v with the orthonormal basis u = (w1 - w0) / |w1 - w0|
    and v = the part of (w2 - w0) orthogonal to u, normalised; (a, b) are Euclidean
    coordinates in weight space.

    Args:
      model: a Keras model producing logits.
      w0, w1, w2: three weight lists aligned the same way (distinct, not collinear).
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      grid: an int n (an n x n grid spanning the three points plus `margin` of the span on
        every side) or a pair `(a_values, b_values)` of 1-D coordinate arrays.
      margin: relative margin for an int `grid`.
      masks: optional masks applied to every evaluated point.
      batch_size: batch size for `(x, y)` arrays.
      loss_fn: optional per-example loss.

    Returns:
      A dict with `a` (n_a,), `b` (n_b,), `loss`, `accuracy`, `error` of shape (n_b, n_a)
      (row = b value, column = a value, as `matplotlib.contour` expects) and `points`:
      the (3, 2) coordinates of w0, w1, w2.

    Raises:
      ValueError: if the points are collinear or coincide, or `grid` is malformed.
    """
    p0, p1 = _common.check_weight_lists(w0, w1, "w0", "w1")
    _, p2 = _common.check_weight_lists(w0, w2, "w0", "w2")
    variables = _common.resolve_variables(model, p0, "w0")
    mask_list = _mask_list(model, masks, variables)
    x0, x1, x2 = (_common.flatten(p) for p in (p0, p1, p2))
    d1, d2 = x1 - x0, x2 - x0
    n1 = np.linalg.norm(d1)
    if n1 == 0:
        raise ValueError("w1: equals w0; the plane needs three distinct, non-collinear points.")
    u = d1 / n1
    r = d2 - (d2 @ u) * u
    n2 = np.linalg.norm(r)
    if n2 <= 1e-6 * np.linalg.norm(d2):  # float32 weights: relative rounding ~1e-7
        raise ValueError("w2: lies on the line through w0 and w1; the plane is undefined.")
    v = r / n2
    points = np.array([[0.0, 0.0], [n1, 0.0], [d2 @ u, d2 @ v]])
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        n = _common.check_positive_int(grid, "grid")
        lo, hi = points.min(axis=0), points.max(axis=0)
        pad = margin * (hi - lo).max()
        a_values = np.linspace(lo[0] - pad, hi[0] + pad, n)
        b_values = np.linspace(lo[1] - pad, hi[1] + pad, n)
    elif isinstance(grid, (tuple, list)) and len(grid) == 2:
        a_values = _check_alphas(grid[0], "grid[0]")
        b_values = _check_alphas(grid[1], "grid[1]")
    else:
        raise ValueError(f"grid: must be an int or a pair (a_values, b_values); got {grid!r}.")
    batches, _ = _common.materialize_batches(data, batch_size)
    evaluate = _common.make_evaluator(model, loss_fn)
    shape = (len(b_values), len(a_values))
    out = {key: np.zeros(shape) for key in ("loss", "accuracy", "error")}
    with _common.temporary_weights(model):
        for i, b in enumerate(b_values):
            for j, a in enumerate(a_values):
                point = _common.unflatten(x0 + a * u + b * v, p0)
                _common.assign_weights(variables, _apply(point, mask_list))
                metrics = evaluate(batches)
                for key in out:
                    out[key][i, j] = metrics[key]
    out.update({"a": a_values, "b": b_values, "points": points})
    return out
