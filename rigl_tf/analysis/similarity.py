"""Function-space similarity of models: accuracy, ensembles, disagreement, KL and JSD.

All functions take predicted class probabilities, one (N, C) array per model, and integer
labels (N,). Divergences use natural logarithms; probabilities are clipped at `eps`
inside logarithms so that zeros do not produce infinities.

`similarity_table` lays results out like Table 3 of Evci et al. (gradient flow): per
method, the mean +- std over models of test accuracy, and, against a reference solution
(e.g. the pruning solution a lottery ticket came from), of the two-model ensemble
accuracy, the disagreement, KL(reference || model) and the two-model JSD. Without a
reference the same quantities are taken over all pairs of the method's models.
"""

import itertools

import numpy as np
import tensorflow as tf

from rigl_tf.analysis import _common

EPS = 1e-12


def predict_probs(model, data, batch_size=_common.DEFAULT_BATCH_SIZE, return_labels=False):
    """Softmax probabilities of a logits model over `data`.

    Args:
      model: a Keras model producing logits (called with `training=False`).
      data: `(x, y)` arrays or a batched `tf.data.Dataset`.
      batch_size: batch size for `(x, y)` arrays.
      return_labels: also return the labels, in the same order.

    Returns:
      A float64 (N, C) array, or `(probs, labels)`.
    """

    @tf.function(reduce_retracing=True)
    def step(x):
        return tf.nn.softmax(tf.cast(model(x, training=False), tf.float64), axis=-1)

    probs, labels = [], []
    for x, y in _common.iterate_batches(data, batch_size):
        probs.append(step(x).numpy())
        labels.append(np.asarray(y))
    if not probs:
        raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
    probs = np.concatenate(probs)
    return (probs, np.concatenate(labels)) if return_labels else probs


def _probs(p, name):
    p = np.asarray(p, np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name}: must be an (N, C) probability array; got shape {p.shape}.")
    return p


def _pair(p, q, name_p="p", name_q="q"):
    p, q = _probs(p, name_p), _probs(q, name_q)
    if p.shape != q.shape:
        raise ValueError(
            f"{name_q}: has shape {q.shape} but {name_p} has {p.shape}; they must match."
        )
    return p, q


def _labels(labels, n):
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"labels: has {labels.shape[0]} entries; expected {n} (one per example).")
    return labels


def _list(probs_list, name="probs_list", minimum=1):
    probs_list = [_probs(p, f"{name}[{i}]") for i, p in enumerate(probs_list)]
    if len(probs_list) < minimum:
        raise ValueError(
            f"{name}: needs at least {minimum} probability arrays; got {len(probs_list)}."
        )
    for i, p in enumerate(probs_list[1:], 1):
        if p.shape != probs_list[0].shape:
            raise ValueError(
                f"{name}[{i}]: has shape {p.shape} but {name}[0] has {probs_list[0].shape}."
            )
    return probs_list


def accuracy(probs, labels):
    """Top-1 accuracy: fraction of examples whose argmax equals the label."""
    probs = _probs(probs, "probs")
    return float(np.mean(np.argmax(probs, axis=1) == _labels(labels, probs.shape[0])))


def ensemble_accuracy(probs_list, labels):
    """Top-1 accuracy of the ensemble that averages the models' probabilities."""
    probs_list = _list(probs_list)
    return accuracy(np.mean(probs_list, axis=0), labels)


def disagreement(p, q):
    """Fraction of examples on which the two models' argmax predictions differ."""
    p, q = _pair(p, q)
    return float(np.mean(np.argmax(p, axis=1) != np.argmax(q, axis=1)))


def kl_divergence(p, q, eps=EPS):
    """Mean over examples of KL(p || q) = sum_c p_c log(p_c / q_c) (0 log 0 = 0)."""
    p, q = _pair(p, q)
    terms = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(q, eps))), 0.0)
    return float(np.mean(np.sum(terms, axis=1)))


def entropy(p, eps=EPS):
    """Per-example entropy -sum_c p_c log p_c of an (N, C) array."""
    p = _probs(p, "p")
    return -np.sum(np.where(p > 0, p * np.log(np.maximum(p, eps)), 0.0), axis=1)


def jensen_shannon(probs_list, eps=EPS):
    """n-model Jensen-Shannon divergence, averaged over examples.

    JSD = H(mean_i p_i) - mean_i H(p_i); for two models this is the usual JSD
    (with natural logarithms, bounded by log 2).
    """
    probs_list = _list(probs_list, minimum=2)
    mean = np.mean(probs_list, axis=0)
    return float(
        np.mean(entropy(mean, eps) - np.mean([entropy(p, eps) for p in probs_list], axis=0))
    )


def pairwise_matrix(probs_list, metric):
    """(K, K) matrix of `metric(probs_list[i], probs_list[j])`, zero on the diagonal.

    Args:
      probs_list: K probability arrays.
      metric: `"disagreement"`, `"kl"` (row i, column j = KL(p_i || p_j); not symmetric)
        or `"jsd"` (two-model JSD), or a callable `metric(p, q)`.

    Returns:
      A float64 (K, K) array.
    """
    functions = {
        "disagreement": disagreement,
        "kl": kl_divergence,
        "jsd": lambda p, q: jensen_shannon([p, q]),
    }
    if not callable(metric):
        _common.check_choice(metric, "metric", tuple(functions))
        metric = functions[metric]
    probs_list = _list(probs_list)
    k = len(probs_list)
    out = np.zeros((k, k))
    for i, j in itertools.product(range(k), repeat=2):
        if i != j:
            out[i, j] = metric(probs_list[i], probs_list[j])
    return out


def mean_std_over_pairs(matrix, symmetric=True):
    """Mean and std of the off-diagonal entries of a pairwise matrix.

    Args:
      matrix: (K, K) array.
      symmetric: use the pairs i < j once (symmetric metrics); otherwise all ordered
        pairs i != j (e.g. KL).

    Returns:
      `(mean, std)` (population std); `(nan, nan)` for K < 2.
    """
    matrix = np.asarray(matrix, np.float64)
    k = matrix.shape[0]
    if k < 2:
        return float("nan"), float("nan")
    if symmetric:
        values = matrix[np.triu_indices(k, 1)]
    else:
        values = matrix[~np.eye(k, dtype=bool)]
    return float(np.mean(values)), float(np.std(values))


def _mean_std(values):
    values = np.asarray(values, np.float64)
    return float(np.mean(values)), float(np.std(values))


def similarity_to_reference(probs_list, reference, labels):
    """Per-model similarity to one reference model.

    Returns:
      A dict of arrays (one entry per model): `accuracy`, `ensemble_accuracy` (the model
      ensembled with the reference), `disagreement`, `kl` (KL(reference || model)),
      `jsd` (two-model JSD).
    """
    probs_list = _list(probs_list)
    reference = _pair(probs_list[0], reference, "probs_list[0]", "reference")[1]
    return {
        "accuracy": np.array([accuracy(p, labels) for p in probs_list]),
        "ensemble_accuracy": np.array(
            [ensemble_accuracy([reference, p], labels) for p in probs_list]
        ),
        "disagreement": np.array([disagreement(reference, p) for p in probs_list]),
        "kl": np.array([kl_divergence(reference, p) for p in probs_list]),
        "jsd": np.array([jensen_shannon([reference, p]) for p in probs_list]),
    }


def similarity_table(probs_by_method, labels, reference=None):
    """Rows in the layout of Table 3 of Evci et al. (gradient flow in sparse networks).

    Args:
      probs_by_method: dict (ordered) from a method name (e.g. "Lottery ticket", "Scratch")
        to a list of probability arrays, one per model (seed).
      labels: (N,) integer labels.
      reference: optional (N, C) probabilities of the reference solution (e.g. the pruning
        solution). With it, every column compares each model with the reference; without
        it, columns are over all pairs of the method's models.

    Returns:
      A list of dicts, one per method, with `method`, `num_models` and `(mean, std)` tuples
      for `accuracy`, `ensemble_accuracy`, `disagreement`, `kl`, `jsd`.

    Raises:
      ValueError: if a method has no models, or (without a reference) fewer than two.
    """
    if not isinstance(probs_by_method, dict) or not probs_by_method:
        raise ValueError(
            "probs_by_method: must be a non-empty dict {method name: [probability arrays]}; "
            f"got {type(probs_by_method).__name__}."
        )
    rows = []
    for method, probs_list in probs_by_method.items():
        probs_list = _list(
            probs_list, f"probs_by_method[{method!r}]", 1 if reference is not None else 2
        )
        row = {"method": method, "num_models": len(probs_list)}
        if reference is not None:
            stats = similarity_to_reference(probs_list, reference, labels)
            for key, values in stats.items():
                row[key] = _mean_std(values)
        else:
            row["accuracy"] = _mean_std([accuracy(p, labels) for p in probs_list])
            pairs = list(itertools.combinations(range(len(probs_list)), 2))
            row["ensemble_accuracy"] = _mean_std(
                [ensemble_accuracy([probs_list[i], probs_list[j]], labels) for i, j in pairs]
            )
            row["disagreement"] = mean_std_over_pairs(pairwise_matrix(probs_list, "disagreement"))
            row["kl"] = mean_std_over_pairs(pairwise_matrix(probs_list, "kl"), symmetric=False)
            row["jsd"] = mean_std_over_pairs(pairwise_matrix(probs_list, "jsd"))
        rows.append(row)
    return rows


TABLE_COLUMNS = (
    ("accuracy", "Test acc."),
    ("ensemble_accuracy", "Ensemble acc."),
    ("disagreement", "Disagreement"),
    ("kl", "KL"),
    ("jsd", "JSD"),
)


def format_similarity_table(rows, digits=4):
    """Plain-text table of `similarity_table` rows, each cell `mean ± std`.

    Args:
      rows: list of dicts from `similarity_table`.
      digits: decimals per number.

    Returns:
      A multi-line string.
    """
    header = ["Method"] + [title for _, title in TABLE_COLUMNS]
    lines = []
    for row in rows:
        cells = [str(row["method"])]
        for key, _ in TABLE_COLUMNS:
            mean, std = row[key]
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(c) for c in lines]
    return "\n".join(out)
