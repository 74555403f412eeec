"""Branches: controlled experiments run from a finished IMP level's mask ``m_L``.

Notation: ``theta_0`` the run's initial weights, ``theta_K`` its rewind point (``K = 0``
for rewinding 'init', so ``theta_K = theta_0``), ``theta'_0`` a fresh initialisation from
the derived seed ``branch_init_seed(seed, branch seed)``, ``theta_{L-1}`` the solution of
level ``L-1``, ``T`` the training steps. Every branch is trained by the trainer like an IMP
level and writes ``level_XX/branch_<name>_s<seed>/`` (mask, start and solution weights,
metrics):

================  ==========================================  ==========================
branch            mask, starting weights                      training
================  ==========================================  ==========================
'lottery'         ``m_L``, ``theta_K * m_L``                  steps ``K .. T``
'data_order'      ``m_L``, ``theta_K * m_L``                  steps ``K .. T``, data order
                                                              seed ``data_seed + seed``
'shuffle_mask'    ``m'``: each layer's mask randomly           steps ``K .. T``
                  permuted (same count per layer, new
                  positions), ``theta_K * m'``
'reinit'          ``m_L``, ``theta'_0 * m_L``                 steps ``0 .. T``
'random_prune'    ``m'``: an independent uniformly random     steps ``0 .. T``
                  mask with ``m_L``'s count per layer,
                  ``theta'_0 * m'`` (random pruning at init)
'small_dense'     all ones on a dense network whose width     steps ``0 .. T``
                  multiplier gives as many kernel weights as
                  the ticket has non-zero kernel weights,
                  fresh weights
'prune_restart'   ``m_L``, ``theta_{L-1} * m_L`` (the pruned  steps ``0 .. T``: a fresh
                  solution, before rewinding); level >= 1     schedule
================  ==========================================  ==========================

Branches that start from fresh weights or restart the schedule train the full schedule;
branches that start from the rewind point continue it from ``K`` like the IMP levels.
"""

import os
from typing import Dict, Mapping, Tuple

import numpy as np

from rigl_tf.experiments import models as models_lib
from rigl_tf.keras import model_ops
from rigl_tf.lottery import layout
from rigl_tf.lottery.start import Start, check_int
from rigl_tf.sparsity import masks as masks_lib

BRANCHES = ("lottery", "reinit", "data_order", "shuffle_mask", "random_prune",
            "small_dense", "prune_restart")


def check_branch(name: str) -> str:
    """Returns ``name`` if it is a known branch; raises ValueError listing them."""
    if name not in BRANCHES:
        raise ValueError(f"Unknown branch `name` {name!r}; known branches: {', '.join(BRANCHES)}.")
    return name


def branch_init_seed(seed: int, branch_seed: int) -> int:
    """The initialisation seed of fresh-weight branches: ``(seed * 1000003 + b) % 2**31``.

    Distinct from the run's own ``seed`` whenever ``branch_seed`` is not a multiple of
    ``2**31`` (it must be >= 1).
    """
    return (int(seed) * 1_000_003 + int(branch_seed)) % (2**31)


def shuffle_masks(masks: Mapping[str, np.ndarray], seed: int) -> Dict[str, np.ndarray]:
    """Randomly permutes every mask within its layer (same count, new positions).

    Weight ``i`` (in map order) uses ``numpy.random.default_rng([seed, i])``, so the result
    is the same in every process.
    """
    out = {}
    for i, (key, mask) in enumerate(masks.items()):
        flat = np.asarray(mask, np.float32).reshape(-1)
        out[key] = np.random.default_rng([int(seed), i]).permutation(flat).reshape(
            np.shape(mask))
    return out


def random_masks_like(masks: Mapping[str, np.ndarray], seed: int) -> Dict[str, np.ndarray]:
    """Independent uniformly random masks with the same number of ones per weight."""
    return {
        key: masks_lib.random_mask(np.shape(m), int(np.sum(np.asarray(m) > 0)), seed, i)
        .numpy()
        for i, (key, m) in enumerate(masks.items())
    }


def ticket_kernel_params(model, masks: Mapping[str, np.ndarray]) -> int:
    """Non-zero kernel weights of a ticket: ``count_params(model)`` minus pruned entries."""
    pruned = sum(int(np.size(m)) - int(np.sum(np.asarray(m) > 0)) for m in masks.values())
    return models_lib.count_params(model, kernels_only=True) - pruned


def branch_start(run, level: int, name: str, seed: int = 1) -> Tuple[object, Start]:
    """The model and starting point of a branch (without training; see the module doc).

    Args:
      run: an :class:`rigl_tf.lottery.imp.IMPRun` whose ``level`` is finished.
      level: the IMP level providing ``m_L``.
      name: a branch from :data:`BRANCHES`.
      seed: branch seed (>= 1): fresh initialisation, data order and mask randomness.

    Returns:
      ``(model, start)``: the model to train (the run's model, or a small-dense one) and
      its :class:`rigl_tf.lottery.imp.Start`.

    Raises:
      ValueError: for an unknown branch, a bad seed, an unfinished level, or
        'prune_restart' at level 0.
    """
    check_branch(name)
    check_int("seed", seed, 1)
    check_int("level", level, 0)
    if not run.is_finished(level):
        raise ValueError(f"`level` {level} of {run.run_dir!r} is not finished; run it first.")
    cfg = run.config
    masks = run.masks(level)
    K = run.rewind_step  # 0 for rewinding 'init'
    T = run.total_steps
    init_seed = branch_init_seed(cfg.seed, seed)
    info = {"kind": "branch", "branch": name, "branch_seed": seed, "level": level,
            "ticket_density": run.metrics(level)["density"]}
    model = run.model

    def masked(weights, m):
        return run._mask_weights(weights, m)

    def rewind_point():
        return run.read_weights(0, "rewind")

    if name in ("lottery", "data_order"):
        data_seed = run.data_seed + (seed if name == "data_order" else 0)
        start = Start(masks, masked(rewind_point(), masks), K, T, data_seed)
    elif name == "shuffle_mask":
        new = shuffle_masks(masks, seed)
        start = Start(new, masked(rewind_point(), new), K, T, run.data_seed)
    elif name in ("reinit", "random_prune"):
        new = masks if name == "reinit" else random_masks_like(masks, init_seed)
        fresh = run.weights_of(run.build_model(init_seed))
        start = Start(new, masked(fresh, new), 0, T, run.data_seed)
        info["init_seed"] = init_seed
    elif name == "prune_restart":
        if level == 0:
            raise ValueError(
                "Branch 'prune_restart' needs `level` >= 1 (level 0 is dense: nothing was "
                "pruned)."
            )
        start = Start(masks, masked(run.read_weights(level - 1, "solution"), masks), 0, T,
                      run.data_seed)
    else:  # small_dense
        target = ticket_kernel_params(model, masks)
        net = run.spec.network
        kwargs = dict(net.model_kwargs, activation=net.activation,
                      weight_decay=net.weight_decay)
        base = kwargs.pop("width_multiplier", 1.0)
        multiplier = models_lib.small_dense_width_multiplier(
            net.network_name, run.info.input_shape, run.info.num_classes, target, **kwargs)
        model = run.build_model(init_seed, width_multiplier=multiplier)
        ones = {k: np.ones(tuple(w.shape), np.float32)
                for k, w, _ in model_ops.masked_weights(model)}
        start = Start(ones, run.weights_of(model), 0, T, run.data_seed,
                      width_multiplier=multiplier)
        info.update(init_seed=init_seed, width_multiplier=multiplier,
                    ticket_kernel_params=target, base_width_multiplier=base)
    start.info.update(info)
    return model, start


def run_branch(run, level: int, name: str, seed: int = 1) -> Dict:
    """Trains a branch (skipped if its ``metrics.json`` exists); returns its metrics."""
    check_branch(name)
    directory = layout.branch_dir(run.run_dir, level, name, seed)
    if layout.is_finished(directory):
        return layout.read_json(os.path.join(directory, layout.METRICS))
    model, start = branch_start(run, level, name, seed)
    run.stage = f"level_{level:02d}/branch_{name}_s{seed}"
    del model  # the trainer builds it from the start (its width multiplier)
    return run.train(directory, start)


__all__ = ["BRANCHES", "branch_init_seed", "branch_start", "check_branch", "random_masks_like",
           "run_branch", "shuffle_masks", "ticket_kernel_params"]
