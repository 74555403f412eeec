"""Distances between solutions in weight space, and a 2-D embedding of many solutions.

Weight lists are lists of arrays aligned with each other (usually with
`model.trainable_variables`). "Overall" distances treat each list as one concatenated
vector; per-variable distances are reported in a list aligned with the weights.
"""

import numpy as np

from rigl_tf.analysis import _common

METRICS = ("l2", "cosine", "angular")


def _cosine_similarity(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.clip((a @ b) / (na * nb), -1.0, 1.0))


def _result(total, per, per_variable):
    return {"total": total, "per_variable": per} if per_variable else total


def l2_distance(weights_a, weights_b, per_variable=False):
    """Euclidean distance ||a - b||_2 between two weight lists.

    Args:
      weights_a: list of arrays.
      weights_b: list of arrays aligned with `weights_a`.
      per_variable: also return the distance of every array pair.

    Returns:
      A float, or `{'total': float, 'per_variable': [float, ...]}`.
    """
    a, b = _common.check_weight_lists(weights_a, weights_b, "weights_a", "weights_b")
    total = float(np.linalg.norm(_common.flatten(a) - _common.flatten(b)))
    per = [float(np.linalg.norm(np.ravel(x - y))) for x, y in zip(a, b)] if per_variable else None
    return _result(total, per, per_variable)


def cosine_distance(weights_a, weights_b, per_variable=False):
    """Cosine distance 1 - <a, b> / (|a| |b|) between two weight lists.

    A zero vector has no direction: its distance is NaN.

    Args:
      weights_a: list of arrays.
      weights_b: list of arrays aligned with `weights_a`.
      per_variable: also return the distance of every array pair.

    Returns:
      A float, or `{'total': float, 'per_variable': [float, ...]}`.
    """
    a, b = _common.check_weight_lists(weights_a, weights_b, "weights_a", "weights_b")
    total = 1.0 - _cosine_similarity(_common.flatten(a), _common.flatten(b))
    per = None
    if per_variable:
        per = [
            1.0 - _cosine_similarity(np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64))
            for x, y in zip(a, b)
        ]
    return _result(total, per, per_variable)


def _support(weights, masks, name):
    if masks is None:
        return [np.ones(np.shape(w), bool) for w in weights]
    masks = list(masks)
    if len(masks) != len(weights):
        raise ValueError(
            f"{name}: has {len(masks)} entries; expected {len(weights)}, one per array."
        )
    out = []
    for i, (w, m) in enumerate(zip(weights, masks)):
        if m is None:
            out.append(np.ones(np.shape(w), bool))
            continue
        m = np.asarray(m)
        if m.shape != np.shape(w):
            raise ValueError(f"{name}[{i}]: has shape {m.shape}; expected {np.shape(w)}.")
        out.append(m.astype(bool))
    return out


def angular_distance(weights_a, weights_b, masks_a=None, masks_b=None, per_variable=False):
    """Angular distance 2 arccos(cos_sim) / pi on the shared support (Maene et al.).

    The cosine similarity is computed only over the coordinates active in both masks
    (their intersection), so two sparse solutions are compared where both have weights.
    The value is 0 for parallel vectors, 1 for orthogonal ones (random high-dimensional
    vectors) and 2 for opposite ones.

    Args:
      weights_a: list of arrays.
      weights_b: list of arrays aligned with `weights_a`.
      masks_a: optional masks of `weights_a` (`None` entries = all active).
      masks_b: optional masks of `weights_b`.
      per_variable: also return the distance of every array pair (NaN where the shared
        support is empty or a restricted vector is zero).

    Returns:
      A float, or `{'total': float, 'per_variable': [float, ...]}`.
    """
    a, b = _common.check_weight_lists(weights_a, weights_b, "weights_a", "weights_b")
    shared = [
        x & y for x, y in zip(_support(a, masks_a, "masks_a"), _support(b, masks_b, "masks_b"))
    ]

    def angle(x, y):
        cos = _cosine_similarity(x, y)
        return 2.0 * float(np.arccos(cos)) / np.pi if np.isfinite(cos) else float("nan")

    xa = (
        np.concatenate([np.asarray(x, np.float64)[s] for x, s in zip(a, shared)])
        if a
        else np.zeros(0)
    )
    xb = (
        np.concatenate([np.asarray(y, np.float64)[s] for y, s in zip(b, shared)])
        if b
        else np.zeros(0)
    )
    total = angle(xa, xb)
    per = None
    if per_variable:
        per = [
            angle(np.asarray(x, np.float64)[s], np.asarray(y, np.float64)[s])
            for x, y, s in zip(a, b, shared)
        ]
    return _result(total, per, per_variable)


def distance_matrix(weight_lists, metric="l2", masks_list=None):
    """(K, K) matrix of pairwise distances between solutions.

    Args:
      weight_lists: K aligned weight lists.
      metric: `"l2"`, `"cosine"` or `"angular"`.
      masks_list: for `"angular"`, optional K mask lists (one per solution).

    Returns:
      A symmetric float64 (K, K) array with zero diagonal.

    Raises:
      ValueError: for an unknown metric or mismatched lists.
    """
    _common.check_choice(metric, "metric", METRICS)
    k = len(weight_lists)
    if masks_list is not None and len(masks_list) != k:
        raise ValueError(
            f"masks_list: has {len(masks_list)} entries; expected {k}, one per solution."
        )
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            if metric == "l2":
                d = l2_distance(weight_lists[i], weight_lists[j])
            elif metric == "cosine":
                d = cosine_distance(weight_lists[i], weight_lists[j])
            else:
                ma = masks_list[i] if masks_list is not None else None
                mb = masks_list[j] if masks_list is not None else None
                d = angular_distance(weight_lists[i], weight_lists[j], ma, mb)
            out[i, j] = out[j, i] = d
    return out


def mds_embedding(distances, dims=2, return_eigenvalues=False):
    """Classical (Torgerson) multidimensional scaling of a distance matrix.

    B = -1/2 J D^2 J with the centring matrix J = I - 11^T/K; the coordinates are the top
    `dims` eigenvectors of B scaled by the square roots of their (clipped at 0) eigenvalues.
    For Euclidean distances the embedding reproduces them exactly when `dims` is large
    enough.

    Args:
      distances: symmetric (K, K) distance matrix.
      dims: embedding dimension (1 <= dims <= K).
      return_eigenvalues: also return all eigenvalues of B (descending).

    Returns:
      A (K, dims) array, or `(coordinates, eigenvalues)`.

    Raises:
      ValueError: for a non-square matrix or a bad `dims`.
    """
    d = np.asarray(distances, np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances: must be a square matrix; got shape {d.shape}.")
    k = d.shape[0]
    dims = _common.check_positive_int(dims, "dims")
    if dims > k:
        raise ValueError(f"dims: must be at most the number of points {k}; got {dims}.")
    j = np.eye(k) - np.full((k, k), 1.0 / k)
    b = -0.5 * j @ (d**2) @ j
    values, vectors = np.linalg.eigh((b + b.T) / 2)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    coords = vectors[:, :dims] * np.sqrt(np.maximum(values[:dims], 0.0))
    return (coords, values) if return_eigenvalues else coords
