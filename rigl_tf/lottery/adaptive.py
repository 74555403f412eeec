"""Adaptive pruning ratio for IMP (Paul et al., "Unmasking the Lottery Ticket Hypothesis").

IMP with a fixed ratio prunes 20% of the remaining weights per level. Paul et al. show
that a level's solution ``theta_L`` and its pruned projection ``theta_L * m`` are
linearly connected (low loss along the segment) as long as not too much is pruned, and
that the largest such fraction can be pruned at once. Here:

* ``epsilon`` is the standard deviation (population, ``ddof=0``) of the per-batch training
  loss over the last epoch of the dense (level 0) run: the loss noise of SGD near its end;
* at each level, candidate fractions ``p = 0.1, 0.2, ... 0.9`` are tried in increasing
  order; for each, ``m(p)`` prunes ``p`` of the remaining weights and the loss of
  ``(1 - alpha) * theta_L + alpha * theta_L * m(p)`` is evaluated on a fixed training
  subset at a few ``alpha`` (default 0.25, 0.5, 0.75, 1.0);
* ``p`` is accepted while the maximum of those losses stays at or below
  ``dense loss + epsilon`` (the dense solution's loss on the same subset); the sweep stops
  at the first rejected ``p`` (masks are nested in ``p``, so the path only gets longer);
* the level prunes ``max(largest accepted p, minimum)``, the minimum being the fixed ratio
  (0.2).

:func:`compute_savings` reports the levels and training steps needed to reach a target
sparsity against the fixed ratio.
"""

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from rigl_tf.keras import model_ops
from rigl_tf.lottery import importance as importance_lib

DEFAULT_CANDIDATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_ALPHAS = (0.25, 0.5, 0.75, 1.0)


def loss_std(losses: Sequence[float]) -> float:
    """``epsilon``: the population standard deviation of per-batch training losses.

    Raises:
      ValueError: if ``losses`` is empty or not finite.
    """
    values = np.asarray(list(losses), np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"`losses` must be a non-empty list of finite numbers, got {losses!r}.")
    return float(np.std(values))


def check_candidates(candidates, name="candidates") -> Tuple[float, ...]:
    """Validates increasing pruning fractions, each in (0, 1)."""
    values = tuple(importance_lib.check_fraction(c, f"{name}[{i}]")
                   for i, c in enumerate(candidates))
    if not values or list(values) != sorted(set(values)):
        raise ValueError(
            f"`{name}` must be a non-empty, strictly increasing list of fractions in (0, 1), "
            f"got {tuple(candidates)!r}."
        )
    return values


def check_alphas(alphas, name="alphas") -> Tuple[float, ...]:
    """Validates interpolation points in (0, 1]."""
    values = tuple(float(a) for a in alphas)
    if not values or not all(0.0 < a <= 1.0 for a in values):
        raise ValueError(
            f"`{name}` must be a non-empty list of numbers in (0, 1], got {tuple(alphas)!r}."
        )
    return values


def select_fraction(path_loss: Callable[[float], float], threshold: float,
                    candidates: Sequence[float] = DEFAULT_CANDIDATES,
                    minimum: float = 0.2) -> Tuple[float, List[Dict]]:
    """Chooses the pruning fraction from a path-loss function (the rule of the module doc).

    Args:
      path_loss: ``p -> maximum loss along the path to the pruned projection``.
      threshold: the accepted maximum (dense loss + epsilon).
      candidates: increasing fractions in (0, 1).
      minimum: the fraction pruned when no larger candidate is accepted.

    Returns:
      ``(fraction, sweep)``: ``max(largest accepted candidate, minimum)`` and one dict per
      evaluated candidate ``{"p", "max_loss", "accepted"}``.
    """
    candidates = check_candidates(candidates)
    minimum = importance_lib.check_fraction(minimum, "minimum")
    best = None
    sweep = []
    for p in candidates:
        value = float(path_loss(p))
        accepted = bool(np.isfinite(value) and value <= threshold)
        sweep.append({"p": p, "max_loss": value, "accepted": accepted})
        if not accepted:
            break
        best = p
    return (minimum if best is None else max(best, minimum)), sweep


def _mean_loss(model, x, y, batch_size):
    total = 0.0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size], training=False)
        loss = keras.losses.sparse_categorical_crossentropy(
            y[i:i + batch_size], logits, from_logits=True)
        total += float(tf.reduce_sum(loss))
    return total / len(x)


def mean_loss(model, x, y, batch_size: int = 500) -> float:
    """Mean cross-entropy of a logits model on arrays ``(x, y)`` (inference mode)."""
    return _mean_loss(model, np.asarray(x), np.asarray(y), batch_size)


def path_losses(model, new_masks: Mapping[str, np.ndarray], x, y,
                alphas: Sequence[float] = DEFAULT_ALPHAS, batch_size: int = 500) -> np.ndarray:
    """Losses along ``(1 - alpha) * theta + alpha * theta * m_new`` from the model's weights.

    Only the masked weights move (biases and dense layers keep their values); the model's
    weights are restored afterwards.

    Args:
      model: a sparse model at ``theta``.
      new_masks: key -> the pruned mask ``m_new`` for every masked weight.
      x, y: a fixed training subset.
      alphas: interpolation points.
      batch_size: evaluation batch size.

    Returns:
      The mean loss at each alpha.
    """
    alphas = check_alphas(alphas)
    items = model_ops.masked_weights(model)
    theta = {k: w.numpy() for k, w, _ in items}
    x, y = np.asarray(x), np.asarray(y)
    out = []
    try:
        for a in alphas:
            for k, w, _ in items:
                m = np.asarray(new_masks[k], theta[k].dtype)
                w.assign((1.0 - a) * theta[k] + a * theta[k] * m)
            out.append(_mean_loss(model, x, y, batch_size))
    finally:
        for k, w, _ in items:
            w.assign(theta[k])
    return np.asarray(out)


def adaptive_fraction(model, prune_fn: Callable[[float], Mapping[str, np.ndarray]], x, y,
                      threshold: float, *, candidates: Sequence[float] = DEFAULT_CANDIDATES,
                      alphas: Sequence[float] = DEFAULT_ALPHAS, minimum: float = 0.2,
                      batch_size: int = 500) -> Tuple[float, List[Dict]]:
    """The adaptive pruning fraction at the model's current (trained) weights.

    Args:
      model: a sparse model at the level's solution ``theta_L`` (current masks ``m_L``).
      prune_fn: ``p -> masks`` pruning ``p`` of the remaining weights of ``theta_L``.
      x, y: the fixed training subset.
      threshold: dense loss + epsilon.
      candidates, alphas, minimum, batch_size: see :func:`select_fraction` and
        :func:`path_losses`.

    Returns:
      ``(fraction, sweep)`` as :func:`select_fraction`.
    """
    def path_loss(p):
        return float(np.max(path_losses(model, prune_fn(p), x, y, alphas, batch_size)))

    return select_fraction(path_loss, threshold, candidates, minimum)


def levels_to_reach(densities: Sequence[float], target_sparsity: float) -> Optional[int]:
    """First level whose density is at most ``1 - target_sparsity`` (None if none is)."""
    goal = 1.0 - float(target_sparsity)
    for level, d in enumerate(densities):
        if d <= goal + 1e-9:
            return level
    return None


def compute_savings(densities: Sequence[float], target_sparsity: float,
                    steps_per_level: int, first_level_steps: Optional[int] = None,
                    fixed_fraction: float = 0.2) -> Dict:
    """Levels and training steps to reach ``target_sparsity``: adaptive vs fixed ratio.

    Args:
      densities: the density after each level of the adaptive run (level 0 = 1.0).
      target_sparsity: sparsity to reach, in (0, 1).
      steps_per_level: training steps of a level >= 1.
      first_level_steps: training steps of level 0 (default ``steps_per_level``).
      fixed_fraction: the fixed ratio compared against.

    Returns:
      A dict with ``target_sparsity``, ``adaptive_levels``, ``adaptive_steps`` (None if
      the run did not reach the target), ``fixed_levels``, ``fixed_steps``,
      ``saved_levels``, ``saved_steps`` and ``saved_fraction`` (of the fixed run's steps).
    """
    target = importance_lib.check_fraction(target_sparsity, "target_sparsity")
    fixed_fraction = importance_lib.check_fraction(fixed_fraction, "fixed_fraction")
    first = steps_per_level if first_level_steps is None else first_level_steps
    fixed_levels = math.ceil(math.log(1.0 - target) / math.log(1.0 - fixed_fraction) - 1e-9)
    fixed_steps = first + fixed_levels * steps_per_level
    adaptive_levels = levels_to_reach(densities, target)
    out = {
        "target_sparsity": target,
        "fixed_fraction": fixed_fraction,
        "fixed_levels": fixed_levels,
        "fixed_steps": fixed_steps,
        "adaptive_levels": adaptive_levels,
        "adaptive_steps": None,
        "saved_levels": None,
        "saved_steps": None,
        "saved_fraction": None,
    }
    if adaptive_levels is not None:
        steps = first + adaptive_levels * steps_per_level
        out.update(adaptive_steps=steps, saved_levels=fixed_levels - adaptive_levels,
                   saved_steps=fixed_steps - steps,
                   saved_fraction=(fixed_steps - steps) / fixed_steps)
    return out


__all__ = ["DEFAULT_ALPHAS", "DEFAULT_CANDIDATES", "adaptive_fraction", "check_alphas",
           "check_candidates", "compute_savings", "levels_to_reach", "loss_std", "mean_loss",
           "path_losses", "select_fraction"]
