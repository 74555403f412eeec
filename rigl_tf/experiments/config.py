"""Gin vocabulary of ``rigl-train``, compatible with the original RigL TF2 configs.

Configurables are named by role, as in google-research/rigl ``rigl_tf2``::

    training.total_steps = 11719         network.network_name = 'lenet5'
    optimizer.name = 'momentum'          pruning.mode = 'prune'
    mask_updater.update_alg = 'rigl'     sparsity.sparsity = 0.95
    unit_scaled_init.method = 'fanavg_uniform'
    data.dataset_name = 'mnist'

Each configurable validates its arguments and returns a frozen dataclass (a *spec*);
``resolve()`` calls them all, so every parameter lands in gin's operative config.
Builders at the bottom turn specs into Keras objects. Gin lives only in
``rigl_tf.experiments``; the library (``rigl_tf.keras``, ``rigl_tf.sparsity``) never
imports it.

Semantics that differ from the original code are noted at the parameter.
"""

import dataclasses
import difflib
import json
import logging
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin
import keras
import numpy as np

from rigl_tf.keras import updaters as updaters_lib
from rigl_tf.sparsity import distributions as dist_lib
from rigl_tf.sparsity import init as init_lib

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop", "adamw")
LR_SCHEDULES = ("cosine", "step", "constant")
PRUNING_MODES = ("prune", "constant")
PRUNING_METHODS = ("magnitude", "random")
DST_ALGORITHMS = ("set", "rigl", "rigl_inverted", "snfs")
ONESHOT_ALGORITHMS = ("snip", "grasp", "random")
UPDATE_ALGORITHMS = ("",) + DST_ALGORITHMS + ONESHOT_ALGORITHMS
WEIGHT_INIT_METHODS = (None, "unit_scaled", "layer_scaled")
NONFINITE_POLICIES = ("stop", "skip")
PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

def _configs_dir() -> str:
    """The shipped gin configs: ``rigl_tf/configs`` when installed (setup.py packages the
    repository's ``configs/`` there), else ``<checkout>/configs`` (checkout, editable)."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.abspath(os.path.join(here, os.pardir, "configs"))
    checkout = os.path.abspath(os.path.join(here, os.pardir, os.pardir, "configs"))
    return installed if os.path.isdir(installed) else checkout


CONFIGS_DIR = _configs_dir()


def resolve_config(path: str) -> str:
    """The gin file ``path`` names: a user's path if it exists, else a shipped config.

    A shipped config is named relative to the configs directory, from any working
    directory: ``mnist_lenet5/rigl.gin``, or ``configs/mnist_lenet5/rigl.gin`` as in a
    checkout.

    Raises:
      FileNotFoundError: naming ``path`` and where shipped configs are looked up.
    """
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    name = path.replace(os.sep, "/")
    for candidate in (name, name[len("configs/"):] if name.startswith("configs/") else None):
        if candidate and not os.path.isabs(candidate):
            shipped = os.path.join(CONFIGS_DIR, *candidate.split("/"))
            if os.path.isfile(shipped):
                return shipped
    raise FileNotFoundError(
        f"gin config file {path!r} does not exist (neither as a path nor as a shipped "
        f"config under {CONFIGS_DIR!r}, e.g. 'mnist_lenet5/rigl.gin').")


# --------------------------------------------------------------------------- validation


def _fail(name, value, allowed):
    raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def _int(name, value, minimum=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        _fail(name, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    value = int(value)
    if minimum is not None and value < minimum:
        _fail(name, value, f"an integer >= {minimum}")
    return value


def _float(name, value, low=None, high=None, low_open=False, high_open=False,
           allow_none=False):
    if value is None and allow_none:
        return None
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    rng = f"in {lb}{'-inf' if low is None else low}, {'inf' if high is None else high}{rb}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        _fail(name, value, f"a number {rng}")
    value = float(value)
    if math.isinf(value):  # never a usable scale, rate or step: it reaches the weights
        _fail(name, value, f"a finite number {rng}")
    ok = not math.isnan(value)
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        _fail(name, value, f"a number {rng}")
    return value


def _choice(name, value, allowed):
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {shown}; got {value!r}.")
    return value


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, value, "True or False")
    return bool(value)


def _path(name, value):
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        _fail(name, value, "a path string or None")
    return value


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """See :func:`training`."""

    total_steps: int
    batch_size: int
    val_batch_size: int
    save_freq: int
    log_freq: int
    use_metainit: bool
    metainit_steps: int
    oneshot_prune_fraction: float
    gradient_regularization: float
    checkpoint_mask_updates: bool
    max_train_eval_examples: int
    jit_compile: bool
    deterministic: bool
    nonfinite: str
    mixed_precision: str


@gin.configurable("training")
def training(total_steps=5000, batch_size=128, val_batch_size=1000, save_freq=500,
             log_freq=250, use_metainit=False, metainit_steps=10,
             oneshot_prune_fraction=0.0, gradient_regularization=0.0,
             checkpoint_mask_updates=False, max_train_eval_examples=10000,
             jit_compile=False, deterministic=False, nonfinite="stop",
             mixed_precision="float32"):
    """The training loop.

    Args:
      total_steps: number of optimizer steps.
      batch_size: global training batch size (split across replicas).
      val_batch_size: batch size of evaluation, and size of the fixed held-out batch used
        for gradient-norm summaries (capped at the test split size).
      save_freq: a checkpoint every ``save_freq`` steps (plus step 0 and the last step).
      log_freq: evaluation and summaries every ``log_freq`` steps; ``model.fit`` runs in
        chunks (Keras epochs) of this many steps.
      use_metainit: rescale the initial weight norms with MetaInit on one training batch.
      metainit_steps: MetaInit steps.
      oneshot_prune_fraction: target sparsity of one-shot pruning at initialization
        (``mask_updater.update_alg`` in 'snip', 'grasp', 'random'); 0 means use
        ``sparsity.sparsity``.
      gradient_regularization: coefficient of ``0.5 * ||masked gradient||^2`` added to
        the training loss (0 disables).
      checkpoint_mask_updates: also save checkpoints just before and just after every
        mask update, under ``logdir/mask_updates/{before,after}/ckpt-<update step>``.
      max_train_eval_examples: the final training-set evaluation uses at most this many
        examples.
      jit_compile: compile the training step with XLA.
      deterministic: ``tf.config.experimental.enable_op_determinism()`` (bitwise
        reproducible runs and resumption; slower on GPU). The seed is always fixed.
      nonfinite: what a NaN/Inf loss or gradient does: 'stop' (stop with one message;
        the last good checkpoint stays the latest) or 'skip' (that step changes no weight,
        mask or optimizer slot; ``iterations`` still advances so the step count equals the
        batches consumed, and a mask update due at that step does not happen).
      mixed_precision: Keras dtype policy: 'float32', 'mixed_float16' (with Keras's
        dynamic ``LossScaleOptimizer`` around the ``SparseOptimizer``) or
        'mixed_bfloat16'. Variables and masks stay float32.

    Returns:
      A :class:`TrainingSpec`.
    """
    spec = TrainingSpec(
        total_steps=_int("training.total_steps", total_steps, 1),
        batch_size=_int("training.batch_size", batch_size, 1),
        val_batch_size=_int("training.val_batch_size", val_batch_size, 1),
        save_freq=_int("training.save_freq", save_freq, 1),
        log_freq=_int("training.log_freq", log_freq, 1),
        use_metainit=_bool("training.use_metainit", use_metainit),
        metainit_steps=_int("training.metainit_steps", metainit_steps, 1),
        oneshot_prune_fraction=_float("training.oneshot_prune_fraction",
                                      oneshot_prune_fraction, 0.0, 1.0, high_open=True),
        gradient_regularization=_float("training.gradient_regularization",
                                       gradient_regularization, 0.0),
        checkpoint_mask_updates=_bool("training.checkpoint_mask_updates",
                                      checkpoint_mask_updates),
        max_train_eval_examples=_int("training.max_train_eval_examples",
                                     max_train_eval_examples, 1),
        jit_compile=_bool("training.jit_compile", jit_compile),
        deterministic=_bool("training.deterministic", deterministic),
        nonfinite=_choice("training.nonfinite", nonfinite, NONFINITE_POLICIES),
        mixed_precision=_choice("training.mixed_precision", mixed_precision,
                                PRECISION_POLICIES),
    )
    return spec


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """See :func:`optimizer`."""

    name: str
    learning_rate: float
    schedule: str
    warmup_steps: int
    boundaries: Optional[Tuple[int, ...]]
    values: Optional[Tuple[float, ...]]
    decay_factor: float
    alpha: float
    momentum: float
    nesterov: bool
    clipnorm: Optional[float]
    clipvalue: Optional[float]
    weight_decay: float


@gin.configurable("optimizer")
def optimizer(name="momentum", learning_rate=0.1, schedule="cosine", warmup_steps=0,
              boundaries=None, values=None, decay_factor=0.1, alpha=0.0, momentum=0.9,
              nesterov=False, clipnorm=None, clipvalue=None, weight_decay=0.0):
    """The inner optimizer and its learning-rate schedule.

    Args:
      name: 'sgd' (no momentum), 'momentum' (SGD with ``momentum``), 'adam', 'rmsprop'
        (with ``momentum``) or 'adamw' (with decoupled ``weight_decay``).
      learning_rate: peak learning rate.
      schedule: 'cosine' (decays to ``alpha * learning_rate`` over the total steps, as in
        the original code), 'step' (piecewise constant) or 'constant'.
      warmup_steps: linear warm-up from 0 to ``learning_rate`` over this many steps;
        the schedule then runs over the remaining steps (step boundaries stay absolute).
      boundaries: 'step' schedule: the steps at which the next rate starts.
      values: 'step' schedule: ``len(boundaries) + 1`` rates; default
        ``learning_rate * decay_factor ** i``.
      decay_factor: 'step' schedule factor when ``values`` is not given.
      alpha: 'cosine' final fraction of the learning rate.
      momentum: momentum of 'momentum' and 'rmsprop' (None means 0.9 for 'momentum').
      nesterov: Nesterov momentum ('momentum' only).
      clipnorm: clip each gradient to this norm (None disables).
      clipvalue: clip gradient values to [-clipvalue, clipvalue] (None disables).
      weight_decay: decoupled weight decay of 'adamw'.

    Returns:
      An :class:`OptimizerSpec`.
    """
    if isinstance(name, str):
        name = name.lower()
    _choice("optimizer.name", name, OPTIMIZERS)
    _choice("optimizer.schedule", schedule, LR_SCHEDULES)
    if boundaries is not None:
        boundaries = tuple(_int(f"optimizer.boundaries[{i}]", b, 1)
                           for i, b in enumerate(boundaries))
        if list(boundaries) != sorted(set(boundaries)):
            _fail("optimizer.boundaries", boundaries, "strictly increasing steps")
    if values is not None:
        values = tuple(_float(f"optimizer.values[{i}]", v, 0.0) for i, v in enumerate(values))
    if schedule == "step":
        if not boundaries:
            _fail("optimizer.boundaries", boundaries,
                  "a non-empty list of steps when optimizer.schedule='step'")
        if values is not None and len(values) != len(boundaries) + 1:
            _fail("optimizer.values", values,
                  f"a list of len(optimizer.boundaries) + 1 = {len(boundaries) + 1} rates")
    if momentum is None:
        momentum = 0.9 if name == "momentum" else 0.0
    if weight_decay and name != "adamw":
        raise ValueError(
            f"`optimizer.weight_decay` ({weight_decay!r}) is decoupled weight decay and only "
            f"applies to optimizer.name='adamw' (got {name!r}); use network.weight_decay "
            f"for an L2 penalty."
        )
    return OptimizerSpec(
        name=name,
        learning_rate=_float("optimizer.learning_rate", learning_rate, 0.0, low_open=True),
        schedule=schedule,
        warmup_steps=_int("optimizer.warmup_steps", warmup_steps, 0),
        boundaries=boundaries,
        values=values,
        decay_factor=_float("optimizer.decay_factor", decay_factor, 0.0, low_open=True),
        alpha=_float("optimizer.alpha", alpha, 0.0, 1.0),
        momentum=_float("optimizer.momentum", momentum, 0.0, 1.0, high_open=True),
        nesterov=_bool("optimizer.nesterov", nesterov),
        clipnorm=_float("optimizer.clipnorm", clipnorm, 0.0, low_open=True, allow_none=True),
        clipvalue=_float("optimizer.clipvalue", clipvalue, 0.0, low_open=True,
                         allow_none=True),
        weight_decay=_float("optimizer.weight_decay", weight_decay, 0.0),
    )


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """See :func:`network`."""

    network_name: str
    activation: str
    weight_decay: float
    weight_init_method: Optional[str]
    mask_init_path: Optional[str]
    weight_init_path: Optional[str]
    shuffle_mask: bool
    noise_stddev: float
    model_kwargs: Dict[str, Any]
    small_dense_density: Optional[float]
    allow_same_init: bool = False


@gin.configurable("network")
def network(network_name="lenet5", activation="relu", weight_decay=0.0,
            weight_init_method=None, mask_init_path=None, weight_init_path=None,
            shuffle_mask=False, noise_stddev=0.0, hidden_sizes=None, use_batch_norm=None,
            width_multiplier=None, kernel_initializer=None, small_dense_density=None,
            model_kwargs=None, allow_same_init=False):
    """The network and how its masks and weights start.

    Args:
      network_name: a model of ``rigl_tf.experiments.models.list_models()``.
      activation: hidden activation.
      weight_decay: L2 penalty ``weight_decay * sum(w**2)`` on every kernel.
      weight_init_method: None (the model's Keras initializers, masked), 'unit_scaled'
        (per-unit variance from the active fan, see ``unit_scaled_init``) or
        'layer_scaled' (divided by sqrt(layer density)). Ignored with ``weight_init_path``.
      mask_init_path: start from the masks of another run: its logdir (latest
        checkpoint), a checkpoint prefix (``.../ckpt-11719``) or ``path:step``.
      weight_init_path: start from the weights of another run (same forms), e.g. the
        pruning run's step 0 for lottery tickets; the current masks are applied.
      shuffle_mask: randomly permute every mask within its layer (counts unchanged).
      noise_stddev: add N(0, noise_stddev^2) noise to every trainable weight at start.
      hidden_sizes: model keyword argument (None: the model's default).
      use_batch_norm: model keyword argument (None: the model's default).
      width_multiplier: model keyword argument (None: the model's default).
      kernel_initializer: model keyword argument (None: the model's default).
      small_dense_density: if set, the width multiplier is searched so that the dense
        model has about this fraction of the full model's kernel weights (small-dense
        baselines); excludes ``width_multiplier``.
      model_kwargs: further keyword arguments of the model builder, e.g.
        ``{'variant': 'imagenet'}`` for vgg16 (see ``models.get_model``).
      allow_same_init: a run with ``mask_init_path`` and a fresh initialization whose
        initial weights equal the source run's own step-0 weights under the loaded masks
        (same seed and initializer: the lottery ticket, not a new initialization) is
        refused unless this is True.

    Returns:
      A :class:`NetworkSpec`.
    """
    if not isinstance(network_name, str):
        _fail("network.network_name", network_name, "a model name string")
    from rigl_tf.experiments import models

    _choice("network.network_name", network_name, models.list_models())
    _choice("network.weight_init_method", weight_init_method, WEIGHT_INIT_METHODS)
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        _fail("network.model_kwargs", model_kwargs, "a dict of model keyword arguments or None")
    kwargs = dict(model_kwargs or {})
    for key in ("activation", "weight_decay"):
        if key in kwargs:
            raise ValueError(f"`network.model_kwargs` must not set {key!r}; use network.{key}.")
    if use_batch_norm is not None:
        _bool("network.use_batch_norm", use_batch_norm)
    if hidden_sizes is not None and (
            not isinstance(hidden_sizes, (list, tuple)) or not all(
                isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w > 0
                for w in hidden_sizes)):
        _fail("network.hidden_sizes", hidden_sizes, "a tuple of positive integer widths")
    for key, value in (("hidden_sizes", hidden_sizes), ("use_batch_norm", use_batch_norm),
                       ("width_multiplier", width_multiplier),
                       ("kernel_initializer", kernel_initializer)):
        if value is not None:
            kwargs[key] = tuple(value) if key == "hidden_sizes" else value
    if small_dense_density is not None:
        small_dense_density = _float("network.small_dense_density", small_dense_density,
                                     0.0, 1.0, low_open=True)
        if width_multiplier is not None:
            raise ValueError(
                "`network.small_dense_density` searches the width multiplier; do not also "
                f"set `network.width_multiplier` (got {width_multiplier!r})."
            )
    return NetworkSpec(
        network_name=network_name,
        activation=activation,
        weight_decay=_float("network.weight_decay", weight_decay, 0.0),
        weight_init_method=weight_init_method,
        mask_init_path=_path("network.mask_init_path", mask_init_path),
        weight_init_path=_path("network.weight_init_path", weight_init_path),
        shuffle_mask=_bool("network.shuffle_mask", shuffle_mask),
        noise_stddev=_float("network.noise_stddev", noise_stddev, 0.0),
        model_kwargs=kwargs,
        small_dense_density=small_dense_density,
        allow_same_init=_bool("network.allow_same_init", allow_same_init),
    )


@dataclasses.dataclass(frozen=True)
class UnitScaledSpec:
    """See :func:`unit_scaled_init`."""

    method: str
    scale: float


@gin.configurable("unit_scaled_init")
def unit_scaled_init(method="fanavg_uniform", scale=1.0):
    """Parameters of the sparsity-aware 'unit_scaled' initialization.

    The defaults are the paper's (Appendix A.2) and the reference's: Glorot-style,
    variance 1 / the average of each unit's sparse fan-in and fan-out, uniform.

    Args:
      method: fan and distribution, one of ``rigl_tf.sparsity.UNIT_SCALED_METHODS``.
      scale: variance numerator (1: Glorot-like, 2: He-like).

    Returns:
      A :class:`UnitScaledSpec`.
    """
    _choice("unit_scaled_init.method", method, tuple(init_lib.UNIT_SCALED_METHODS))
    return UnitScaledSpec(method, _float("unit_scaled_init.scale", scale, 0.0, low_open=True))


@dataclasses.dataclass(frozen=True)
class PruningSpec:
    """See :func:`pruning`."""

    mode: str
    method: str
    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    power: float
    scope: str
    distribution: str


@gin.configurable("pruning")
def pruning(mode="constant", method="magnitude", initial_sparsity=0.0, final_sparsity=0.0,
            begin_step=0, end_step=-1, frequency=100, power=3, scope="layerwise",
            distribution="uniform"):
    """Gradual (or constant) pruning during training.

    Pruning is on iff ``final_sparsity > 0``; it must then start before
    ``training.total_steps`` (and, gradual, end by it), and no ``mask_updater.update_alg``
    may be set. The original configs switch it off with ``final_sparsity = 0`` (their huge
    ``begin_step`` is harmless then).

    Args:
      mode: 'prune' (polynomial decay of Zhu & Gupta from ``initial_sparsity`` at
        ``begin_step`` to ``final_sparsity`` at ``end_step``) or 'constant' (prune to
        ``final_sparsity`` at ``begin_step``, then keep it).
      method: 'magnitude' or 'random'.
      initial_sparsity: sparsity at ``begin_step`` ('prune').
      final_sparsity: final sparsity.
      begin_step: first pruning step.
      end_step: last pruning step ('prune'); -1 means ``begin_step``.
      frequency: steps between pruning events.
      power: exponent of the polynomial decay.
      scope: 'layerwise' (each layer reaches its own target) or 'global' (one threshold).
      distribution: per-layer targets of the layerwise scope: 'uniform', 'er' or 'erk'.

    Returns:
      A :class:`PruningSpec`.
    """
    _choice("pruning.mode", mode, PRUNING_MODES)
    _choice("pruning.method", method, PRUNING_METHODS)
    _choice("pruning.scope", scope, updaters_lib.SCOPES)
    _choice("pruning.distribution", distribution, ("uniform", "er", "erk"))
    return PruningSpec(
        mode=mode,
        method=method,
        initial_sparsity=_float("pruning.initial_sparsity", initial_sparsity, 0.0, 1.0,
                                high_open=True),
        final_sparsity=_float("pruning.final_sparsity", final_sparsity, 0.0, 1.0,
                              high_open=True),
        begin_step=_int("pruning.begin_step", begin_step, 0),
        end_step=_int("pruning.end_step", end_step),
        frequency=_int("pruning.frequency", frequency, 1),
        power=_float("pruning.power", power, 0.0, low_open=True),
        scope=scope,
        distribution=distribution,
    )


@dataclasses.dataclass(frozen=True)
class MaskUpdaterSpec:
    """See :func:`mask_updater`."""

    update_alg: str
    schedule_alg: str
    update_freq: int
    start_step: Optional[int]
    init_drop_fraction: float
    last_update_step: int
    momentum: float


@gin.configurable("mask_updater")
def mask_updater(update_alg="", schedule_alg="lr", update_freq=100, start_step=None,
                 init_drop_fraction=0.3, last_update_step=-1, use_stateless=True,
                 momentum=0.9):
    """Topology updates during training, or one-shot pruning at initialization.

    Args:
      update_alg: '' (static mask), 'set', 'rigl', 'rigl_inverted', 'snfs' (dynamic
        sparse training), or 'snip', 'grasp', 'random' (one-shot pruning at
        initialization on one training batch, then a static mask).
      schedule_alg: drop-fraction schedule: 'lr' (``f0 * lr(t) / peak lr``: the learning
        rate at the update step over its peak, warm-up included), 'cosine'
        (``f0 / 2 * (1 + cos(pi * t / last_update_step))``) or 'constant'.
      update_freq: steps between mask updates: masks change after updates
        ``update_freq``, ``2 * update_freq``, ... (the reference's steps).
      start_step: first update step (None: ``update_freq``); the first update must
        happen by ``training.total_steps``.
      init_drop_fraction: fraction of active weights changed at the first update.
      last_update_step: last update step (at most ``training.total_steps``); < 0 never
        stops, 0 never updates.
      use_stateless: kept for compatibility; randomness is always stateless (keyed by
        seed, step and layer), so only True is accepted.
      momentum: SNFS gradient-momentum coefficient.

    Returns:
      A :class:`MaskUpdaterSpec`.
    """
    _choice("mask_updater.update_alg", update_alg, UPDATE_ALGORITHMS)
    _choice("mask_updater.schedule_alg", schedule_alg, ("lr", "cosine", "constant"))
    if schedule_alg == "cosine" and isinstance(last_update_step, int) and last_update_step < 0:
        raise ValueError(
            f"`mask_updater.last_update_step` must be > 0 with mask_updater.schedule_alg = "
            f"'cosine' (the drop fraction decays to 0 there), got {last_update_step}; the "
            f"schedule could never finish."
        )
    if use_stateless is not True:
        raise ValueError(
            f"`mask_updater.use_stateless` must be True (rigl_tf always uses stateless RNG "
            f"keyed by seed, step and layer), got {use_stateless!r}."
        )
    return MaskUpdaterSpec(
        update_alg=update_alg,
        schedule_alg=schedule_alg,
        update_freq=_int("mask_updater.update_freq", update_freq, 1),
        start_step=_int("mask_updater.start_step", start_step, 0, allow_none=True),
        init_drop_fraction=_float("mask_updater.init_drop_fraction", init_drop_fraction,
                                  0.0, 1.0),
        last_update_step=_int("mask_updater.last_update_step", last_update_step),
        momentum=_float("mask_updater.momentum", momentum, 0.0, 1.0, high_open=True),
    )


@dataclasses.dataclass(frozen=True)
class SparsitySpec:
    """See :func:`sparsity`."""

    sparsity: float
    distribution: str
    keep_dense: Tuple[str, ...]
    custom_sparsity: Dict[str, float]
    min_active: int
    erk_power_scale: float
    pattern: Any = None


@gin.configurable("sparsity")
def sparsity(sparsity=0.0, distribution="erk", keep_dense=(), custom_sparsity=None,
             min_active=1, erk_power_scale=1.0, pattern=None):
    """The initial sparse topology (and the target of one-shot pruning).

    Args:
      sparsity: overall sparsity of the prunable weights at initialization, in [0, 1).
      distribution: 'erk', 'er', 'uniform' or 'global'.
      keep_dense: layer names not to sparsify; the tokens 'first' and 'last' stand for
        the first and last prunable layer of the model (e.g. ``('first',)``).
      custom_sparsity: map from layer name (or 'layer/attr') to a fixed sparsity.
      min_active: minimum active weights per layer.
      erk_power_scale: exponent of the ERK raw probabilities (ERK only, as in the reference).
      pattern: structured sparsity of the sparsified layers: None / 'unstructured', 'N:M'
        (e.g. '2:4'), 'block:RxC', or a map from layer name to one of those.

    Returns:
      A :class:`SparsitySpec`.
    """
    from rigl_tf.sparsity import patterns as patterns_lib

    if isinstance(pattern, dict):
        for value in pattern.values():
            patterns_lib.get_pattern(value)
    else:
        patterns_lib.get_pattern(pattern)
    if isinstance(keep_dense, str):
        keep_dense = (keep_dense,)
    keep_dense = tuple(keep_dense or ())
    for item in keep_dense:
        if not isinstance(item, str):
            _fail("sparsity.keep_dense", keep_dense, "a layer name or a list of layer names")
    _choice("sparsity.distribution", distribution, dist_lib.DISTRIBUTIONS)
    return SparsitySpec(
        sparsity=_float("sparsity.sparsity", sparsity, 0.0, 1.0, high_open=True),
        distribution=distribution,
        keep_dense=keep_dense,
        custom_sparsity=dict(custom_sparsity or {}),
        min_active=_int("sparsity.min_active", min_active, 0),
        erk_power_scale=_float("sparsity.erk_power_scale", erk_power_scale, 0.0),
        pattern=dict(pattern) if isinstance(pattern, dict) else pattern,
    )


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """See :func:`data`."""

    dataset_name: str
    data_dir: Optional[str]
    normalization: Optional[str]
    image_size: Any
    augment: Optional[bool]
    shuffle_buffer: Optional[int]


@gin.configurable("data")
def data(dataset_name="mnist", data_dir=None, normalization=None, image_size=None,
         augment=None, shuffle_buffer=None):
    """The dataset (see ``rigl_tf.experiments.datasets``).

    Args:
      dataset_name: a name of ``datasets.list_datasets()``: 'digits' (offline),
        'fashion_mnist_idx' / 'mnist_idx' (local IDX files), or a TFDS dataset ('mnist',
        'fashion_mnist', 'cifar10', 'cifar100', 'imagenet2012').
      data_dir: the IDX directory or the TFDS data directory.
      normalization: 'unit' or 'standardize' (None: the dataset's default).
      image_size: resize images (ImageNet: crop size); None: the dataset's default.
      augment: training augmentation (None: the dataset's default).
      shuffle_buffer: shuffle buffer (None: the dataset's default).

    Returns:
      A :class:`DataSpec`.
    """
    from rigl_tf.experiments import datasets

    _choice("data.dataset_name", dataset_name, datasets.list_datasets())
    if normalization is not None:
        _choice("data.normalization", normalization, datasets.NORMALIZATIONS)
    if augment is not None:
        _bool("data.augment", augment)
    return DataSpec(
        dataset_name=dataset_name,
        data_dir=_path("data.data_dir", data_dir),
        normalization=normalization,
        image_size=tuple(image_size) if isinstance(image_size, (list, tuple)) else image_size,
        augment=augment,
        shuffle_buffer=_int("data.shuffle_buffer", shuffle_buffer, 1, allow_none=True),
    )


@gin.configurable("hessian")
def hessian(ckpt_ids=(), batch_size=1000, rows_at_once=10, overwrite=False,
            is_dense_spectrum=False):
    """Placeholder read by ``--mode=hessian`` and the Hessian analysis tools.

    Args:
      ckpt_ids: checkpoint steps to analyse.
      batch_size: examples used for the Hessian.
      rows_at_once: Hessian rows computed per call.
      overwrite: recompute existing results.
      is_dense_spectrum: include inactive (masked) coordinates.

    Returns:
      A dict of the arguments.
    """
    return {
        "ckpt_ids": [_int(f"hessian.ckpt_ids[{i}]", c) for i, c in enumerate(ckpt_ids)],
        "batch_size": _int("hessian.batch_size", batch_size, 1),
        "rows_at_once": _int("hessian.rows_at_once", rows_at_once, 1),
        "overwrite": _bool("hessian.overwrite", overwrite),
        "is_dense_spectrum": _bool("hessian.is_dense_spectrum", is_dense_spectrum),
    }


@gin.configurable("interpolate")
def interpolate(i_start=-0.2, i_end=1.2, n_interpolation=29, start_path=None,
                end_path=None):
    """Placeholder read by the linear-interpolation analysis tools.

    Args:
      i_start: first interpolation coefficient (0 = start point).
      i_end: last coefficient (1 = end point).
      n_interpolation: number of points.
      start_path: checkpoint of the start point (None: the run's step 0).
      end_path: checkpoint of the end point (None: the run's last checkpoint).

    Returns:
      A dict of the arguments.
    """
    return {
        "i_start": _float("interpolate.i_start", i_start),
        "i_end": _float("interpolate.i_end", i_end),
        "n_interpolation": _int("interpolate.n_interpolation", n_interpolation, 2),
        "start_path": _path("interpolate.start_path", start_path),
        "end_path": _path("interpolate.end_path", end_path),
    }


# --------------------------------------------------------------------------- whole config


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Every spec of one run (the result of :func:`resolve`)."""

    training: TrainingSpec
    optimizer: OptimizerSpec
    network: NetworkSpec
    unit_scaled_init: UnitScaledSpec
    pruning: PruningSpec
    mask_updater: MaskUpdaterSpec
    sparsity: SparsitySpec
    data: DataSpec

    @property
    def pruning_active(self) -> bool:
        """Whether gradual/constant pruning changes masks during training."""
        return (self.pruning.final_sparsity > 0.0
                and self.pruning.begin_step < self.training.total_steps)

    @property
    def oneshot_sparsity(self) -> float:
        """Target sparsity of one-shot pruning at initialization."""
        return self.training.oneshot_prune_fraction or self.sparsity.sparsity


def resolve() -> ExperimentSpec:
    """Calls every training configurable (with the parsed gin bindings); checks combinations.

    Returns:
      An :class:`ExperimentSpec`.

    Raises:
      ValueError: for invalid values or incompatible combinations.
    """
    spec = ExperimentSpec(
        training=training(),
        optimizer=optimizer(),
        network=network(),
        unit_scaled_init=unit_scaled_init(),
        pruning=pruning(),
        mask_updater=mask_updater(),
        sparsity=sparsity(),
        data=data(),
    )
    return _check_combinations(spec)


_SECTIONS = ("training", "optimizer", "network", "unit_scaled_init", "pruning",
             "mask_updater", "sparsity", "data")


def make_spec(**sections) -> ExperimentSpec:
    """An :class:`ExperimentSpec` without gin, e.g. ``make_spec(training={'total_steps': 6})``.

    Each keyword is a section of the rigl-train vocabulary (training, optimizer, network,
    unit_scaled_init, pruning, mask_updater, sparsity, data) given as a dict of its
    parameters; omitted sections and parameters take their defaults (gin bindings are
    ignored). The values are validated exactly as in gin configs.

    Raises:
      ValueError: for an unknown section or parameter, a bad value, or an incompatible
        combination.
    """
    import inspect

    unknown = sorted(set(sections) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"Unknown spec sections {unknown}; known: {', '.join(_SECTIONS)}.")
    built = {}
    for name in _SECTIONS:
        fn = inspect.unwrap(globals()[name])
        kwargs = dict(sections.get(name) or {})
        params = set(inspect.signature(fn).parameters)
        bad = sorted(set(kwargs) - params)
        if bad:
            raise ValueError(f"Unknown parameter {name}.{bad[0]}; {name} accepts: "
                             f"{', '.join(sorted(params))}.")
        built[name] = fn(**kwargs)
    return _check_combinations(ExperimentSpec(**built))


def spec_to_dict(spec: ExperimentSpec) -> Dict[str, Any]:
    """``{'section.parameter': value}`` of a spec, JSON-compatible (tuples become lists)."""
    out = {}
    for name in _SECTIONS:
        for key, value in dataclasses.asdict(getattr(spec, name)).items():
            out[f"{name}.{key}"] = json.loads(json.dumps(value))
    return out


def _check_combinations(spec: ExperimentSpec) -> ExperimentSpec:
    """Checks the combinations of sections that no single section can check."""
    alg = spec.mask_updater.update_alg
    if spec.pruning_active and alg:
        raise ValueError(
            f"`pruning` (final_sparsity={spec.pruning.final_sparsity}, begin_step="
            f"{spec.pruning.begin_step}) cannot be combined with `mask_updater.update_alg`="
            f"{alg!r}: one run has one mask updater. Set pruning.final_sparsity = 0 or "
            f"mask_updater.update_alg = ''."
        )
    if spec.training.oneshot_prune_fraction > 0 and alg not in ONESHOT_ALGORITHMS:
        raise ValueError(
            f"`training.oneshot_prune_fraction`={spec.training.oneshot_prune_fraction} needs "
            f"a one-shot `mask_updater.update_alg` (one of {ONESHOT_ALGORITHMS}), got {alg!r}."
        )
    _check_schedules_fit(spec)
    if alg in ONESHOT_ALGORITHMS and spec.oneshot_sparsity <= 0.0:
        raise ValueError(
            f"`mask_updater.update_alg`={alg!r} prunes at initialization and needs a target: "
            f"set sparsity.sparsity or training.oneshot_prune_fraction > 0."
        )
    return spec


def _check_schedules_fit(spec: ExperimentSpec):
    """Refuses schedules that cannot reach their target within ``training.total_steps``.

    * Pruning (``pruning.final_sparsity`` > 0) whose ``begin_step`` is at or past the end
      would never prune. Without a ``mask_updater.update_alg`` the model would stay dense;
      with one, the pruning settings would be silently ignored (the original configs
      switch pruning off with ``final_sparsity = 0``, which stays allowed whatever
      ``begin_step`` is).
    * Gradual pruning whose ``end_step`` is past the end stops short of its target.
    * A DST ``update_alg`` whose first update (``start_step``, default ``update_freq``) is
      past the end never changes the topology, and a ``last_update_step`` past the end
      cuts the updates (and the cosine drop-fraction decay) short; a ``last_update_step``
      before the first update leaves no update at all. An update at step
      ``total_steps`` itself happens (after the last step); ``last_update_step`` = -1
      ('until the end') and 0 ('never') are explicit choices and stay allowed.
    """
    t, p, mu = spec.training, spec.pruning, spec.mask_updater
    total = t.total_steps
    if p.final_sparsity > 0.0 and p.begin_step >= total:
        if mu.update_alg:
            raise ValueError(
                f"`pruning.begin_step`={p.begin_step} is at or past `training.total_steps`="
                f"{total}, so pruning to `pruning.final_sparsity`={p.final_sparsity} would be "
                f"silently ignored next to `mask_updater.update_alg`={mu.update_alg!r} (one "
                f"run has one mask updater): set pruning.final_sparsity = 0 to switch pruning "
                f"off, or mask_updater.update_alg = '' and a pruning.begin_step < {total} for "
                f"a pruning run.")
        raise ValueError(
            f"`pruning.begin_step`={p.begin_step} is at or past `training.total_steps`="
            f"{total}: pruning to `pruning.final_sparsity`={p.final_sparsity} would never "
            f"start and the model would stay dense. Lower pruning.begin_step (and "
            f"end_step), raise training.total_steps, or set pruning.final_sparsity = 0.")
    if p.final_sparsity > 0.0 and not mu.update_alg:
        end = p.begin_step if p.end_step < 0 else p.end_step
        if p.mode == "prune" and end > total:
            raise ValueError(
                f"`pruning.end_step`={p.end_step} is past `training.total_steps`={total}: "
                f"the schedule would stop short of `pruning.final_sparsity`="
                f"{p.final_sparsity}. Use pruning.end_step <= {total}.")
    if mu.update_alg in DST_ALGORITHMS:
        first = mu.update_freq if mu.start_step is None else mu.start_step
        name = ("mask_updater.update_freq" if mu.start_step is None
                else "mask_updater.start_step")
        if first > total and mu.last_update_step != 0:
            raise ValueError(
                f"`{name}`={first} puts the first {mu.update_alg} mask update past "
                f"`training.total_steps`={total}, so the topology would never change: use "
                f"a first update step in [1, {total}] (mask_updater.update_freq, or "
                f"mask_updater.start_step), raise training.total_steps, or set "
                f"mask_updater.update_alg = '' for a static sparse mask.")
        until = "" if mu.schedule_alg == "cosine" else " or -1 for updates until the end"
        if 0 < mu.last_update_step < first:
            raise ValueError(
                f"`mask_updater.last_update_step`={mu.last_update_step} is before the first "
                f"{mu.update_alg} mask update (`{name}`={first}), so the topology would never "
                f"change: use a last_update_step in [{first}, {total}]{until}, or 0 to "
                f"switch the updates off explicitly.")
        if mu.last_update_step > total:
            raise ValueError(
                f"`mask_updater.last_update_step`={mu.last_update_step} is past "
                f"`training.total_steps`={total}, so the {mu.update_alg} updates "
                f"({mu.schedule_alg!r} drop-fraction schedule) would be cut off before "
                f"their configured end: use a last_update_step in [1, {total}]{until} "
                f"(the reference configs stop at about 3/4 of training), or raise "
                f"training.total_steps.")


def resolve_analysis() -> Dict[str, Dict[str, Any]]:
    """Calls the analysis placeholders (``hessian``, ``interpolate``) and returns them.

    Kept apart from :func:`resolve` so that analysis settings never enter a training run's
    operative config (changing them must not make a logdir look like another run): call
    this after the operative config has been taken.

    Returns:
      ``{'hessian': {...}, 'interpolate': {...}}``.
    """
    return {"hessian": hessian(), "interpolate": interpolate()}


# --------------------------------------------------------------------------- parsing


_search_paths: List[str] = []


def add_search_path(path: str):
    """Registers a directory where gin ``include`` statements are resolved (once)."""
    path = os.path.abspath(path)
    if path not in _search_paths:
        _search_paths.append(path)
        gin.add_config_file_search_path(path)


def known_parameters() -> List[str]:
    """All 'configurable.parameter' names of the rigl-train vocabulary."""
    import inspect

    names = []
    for fn in (training, optimizer, network, unit_scaled_init, pruning, mask_updater,
               sparsity, data, hessian, interpolate):
        scope = fn.__name__
        target = inspect.unwrap(fn)
        for param in inspect.signature(target).parameters:
            names.append(f"{scope}.{param}")
    return sorted(names)


_ALIASES = {
    # Original configs bound model arguments on the model function itself.
    name: "network" for name in ("lenet5", "mlp", "conv4", "conv6", "vgg16", "resnet20",
                                 "resnet32", "resnet56", "resnet18", "resnet50",
                                 "mobilenet_v1")
}


def _hint(message: str) -> Optional[str]:
    """A 'did you mean' hint for gin's unknown-name errors, or None."""
    known = known_parameters()
    scopes = sorted({k.split(".")[0] for k in known})
    m = re.search(r"Configurable '([\w./]+)' doesn't have a parameter named '(\w+)'", message)
    if m:
        scope, param = m.group(1), m.group(2)
        params = [k.split(".", 1)[1] for k in known if k.startswith(scope + ".")]
        close = difflib.get_close_matches(param, params, n=3, cutoff=0.5)
        allowed = ", ".join(params)
        if close:
            return (f"Unknown parameter {scope}.{param}; did you mean "
                    f"{', '.join(scope + '.' + c for c in close)}? {scope} accepts: {allowed}.")
        return f"Unknown parameter {scope}.{param}; {scope} accepts: {allowed}."
    m = re.search(r"No configurable matching '([\w./]+)'", message)
    if m:
        scope = m.group(1).split("/")[-1]
        if scope in _ALIASES:
            return (f"Unknown configurable {scope!r}: model arguments are set on "
                    f"`network` (e.g. network.hidden_sizes, network.use_batch_norm, "
                    f"network.width_multiplier).")
        close = difflib.get_close_matches(scope, scopes, n=3, cutoff=0.5)
        tail = f"; did you mean {', '.join(close)}?" if close else "."
        return f"Unknown configurable {scope!r}{tail} Known configurables: {', '.join(scopes)}."
    return None


def parse(config_files: Sequence[str] = (), bindings: Sequence[str] = (),
          preload: Optional[str] = None):
    """Clears gin and parses (preload, then config files, then bindings).

    Config files are paths or names of shipped configs (:func:`resolve_config`).
    ``include`` paths are resolved against the shipped configs directory, the
    directory of each config file and its parent, and the working directory.

    Args:
      config_files: gin files.
      bindings: gin binding strings (each may hold several lines).
      preload: a gin file read first (e.g. a previous run's ``operative_config.gin``).

    Raises:
      ValueError: for unknown configurables or parameters (with a 'did you mean' hint)
        and for malformed files.
      FileNotFoundError: for a missing config file.
    """
    gin.clear_config()
    if os.path.isdir(CONFIGS_DIR):
        add_search_path(CONFIGS_DIR)
    if preload and not os.path.exists(preload):
        raise FileNotFoundError(f"gin config file {preload!r} does not exist.")
    files = ([preload] if preload else []) + [resolve_config(f) for f in config_files]
    for f in files:
        here = os.path.dirname(os.path.abspath(f))
        add_search_path(here)
        add_search_path(os.path.dirname(here))
    root = logging.getLogger()
    root.addFilter(_quiet_gin_lookup)
    try:
        gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
    except (ValueError, KeyError) as e:
        hint = _hint(str(e))
        if hint:
            raise ValueError(f"{e}\n{hint}") from None
        raise
    except Exception as e:  # tokenizer / syntax errors
        if type(e).__name__ in ("TokenError", "SyntaxError"):
            raise ValueError(f"Malformed gin config or binding: {e}") from None
        raise
    finally:
        root.removeFilter(_quiet_gin_lookup)


def _quiet_gin_lookup(record) -> bool:
    """Drops gin's 'Path not found' errors, logged while it tries each search path."""
    return not str(record.msg).startswith("Path not found")


def operative_config() -> str:
    """The operative gin config of the resolved specs (what was actually used)."""
    return gin.operative_config_str()


# --------------------------------------------------------------------------- builders


@keras.saving.register_keras_serializable(package="rigl_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``target`` over ``warmup_steps``, then ``after(step)``.

    Args:
      after: the schedule used after warm-up (called with the absolute step).
      warmup_steps: number of warm-up steps (> 0).
      target: learning rate reached at the end of warm-up.
    """

    def __init__(self, after, warmup_steps, target):
        self.after = after
        self.warmup_steps = int(warmup_steps)
        self.target = float(target)

    def __call__(self, step):
        import tensorflow as tf

        step = tf.cast(step, tf.float32)
        warm = self.target * step / float(self.warmup_steps)
        return tf.where(step < self.warmup_steps, warm,
                        tf.cast(self.after(step), tf.float32))

    @property
    def peak_learning_rate(self):
        """The warm-up target or the later schedule's peak, whichever is larger."""
        return max(self.target, updaters_lib.peak_learning_rate(self.after))

    def get_config(self):
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps,
            "target": self.target,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="rigl_tf")
class ShiftedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``inner(step - shift)``: runs a schedule after a warm-up of ``shift`` steps."""

    def __init__(self, inner, shift):
        self.inner = inner
        self.shift = int(shift)

    def __call__(self, step):
        import tensorflow as tf

        return self.inner(tf.maximum(tf.cast(step, tf.float32) - self.shift, 0.0))

    @property
    def peak_learning_rate(self):
        return updaters_lib.peak_learning_rate(self.inner)

    def get_config(self):
        return {"inner": keras.saving.serialize_keras_object(self.inner), "shift": self.shift}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"])
        return cls(**config)


def build_learning_rate(spec: OptimizerSpec, total_steps: int):
    """The learning rate (a float or a Keras schedule) of an optimizer spec."""
    lr = spec.learning_rate
    warm = spec.warmup_steps
    if warm >= total_steps and warm > 0:
        raise ValueError(
            f"`optimizer.warmup_steps` ({warm}) must be < training.total_steps ({total_steps})."
        )
    S = keras.optimizers.schedules
    if spec.schedule == "constant":
        after = S.PiecewiseConstantDecay([total_steps], [lr, lr])
    elif spec.schedule == "cosine":
        after = ShiftedSchedule(S.CosineDecay(lr, total_steps - warm, alpha=spec.alpha), warm)
    else:
        values = spec.values or tuple(
            lr * spec.decay_factor ** i for i in range(len(spec.boundaries) + 1)
        )
        # Keras switches after a boundary (step > b); here values[i + 1] starts at b.
        after = S.PiecewiseConstantDecay([b - 1 for b in spec.boundaries], list(values))
    if warm > 0:
        return WarmupSchedule(after, warm, lr)
    if spec.schedule == "constant":
        return lr
    return after


def build_optimizer(spec: OptimizerSpec, total_steps: int):
    """The inner Keras optimizer of an optimizer spec."""
    lr = build_learning_rate(spec, total_steps)
    kwargs = {}
    if spec.clipnorm:
        kwargs["clipnorm"] = spec.clipnorm
    if spec.clipvalue:
        kwargs["clipvalue"] = spec.clipvalue
    O = keras.optimizers
    if spec.name == "sgd":
        return O.SGD(lr, **kwargs)
    if spec.name == "momentum":
        return O.SGD(lr, momentum=spec.momentum, nesterov=spec.nesterov, **kwargs)
    if spec.name == "adam":
        return O.Adam(lr, **kwargs)
    if spec.name == "rmsprop":
        return O.RMSprop(lr, momentum=spec.momentum, **kwargs)
    return O.AdamW(lr, weight_decay=spec.weight_decay, **kwargs)


def build_updater(spec: ExperimentSpec, seed: int):
    """The mask updater of a run: 'static', a DST updater, or a pruning updater."""
    mu = spec.mask_updater
    if mu.update_alg in DST_ALGORITHMS:
        kwargs = dict(update_freq=mu.update_freq, start_step=mu.start_step,
                      end_step=mu.last_update_step, init_drop_fraction=mu.init_drop_fraction,
                      schedule_alg=mu.schedule_alg, seed=seed)
        if mu.update_alg == "snfs":
            kwargs["momentum"] = mu.momentum
        return updaters_lib.get_updater(mu.update_alg, **kwargs)
    if spec.pruning_active:
        p = spec.pruning
        return updaters_lib.get_updater(
            p.method,
            schedule="polynomial" if p.mode == "prune" else "constant",
            initial_sparsity=p.initial_sparsity,
            final_sparsity=p.final_sparsity,
            begin_step=p.begin_step,
            end_step=p.end_step,
            frequency=p.frequency,
            power=p.power,
            scope=p.scope,
            distribution=p.distribution,
            seed=seed,
        )
    return updaters_lib.get_updater("static", seed=seed)


__all__ = [
    "training", "optimizer", "network", "unit_scaled_init", "pruning", "mask_updater",
    "sparsity", "data", "hessian", "interpolate", "resolve", "resolve_analysis", "parse",
    "operative_config",
    "build_optimizer", "build_learning_rate", "build_updater", "ExperimentSpec",
]
