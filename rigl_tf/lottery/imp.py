"""Iterative magnitude pruning (IMP): the lottery-ticket driver, resumable inside a level.

IMP decides *what* to train; ``rigl-train``'s trainer
(:func:`rigl_tf.experiments.train.train_from_start`) decides *how*. A run is an
:class:`IMPConfig` (the IMP-only hyperparameters) plus the
:class:`rigl_tf.experiments.config.ExperimentSpec` of ``rigl-train`` (data, network,
optimizer, schedule, training loop: the same vocabulary, ``data.*``, ``network.*``,
``optimizer.*``, ``training.*``, ``sparsity.keep_dense`` / ``sparsity.min_active``).

Level 0 trains the dense network from ``theta_0`` for ``T = training.total_steps`` steps;
its checkpoint at step ``K`` is the rewind point ``theta_K`` (the weights after exactly
``K`` steps). Level ``L >= 1``:

1. prunes a fraction ``p`` of the weights still active after level ``L-1``, ranked by the
   importance measure at level ``L-1``'s solution (globally or per layer; layers in
   ``sparsity.keep_dense`` are never pruned). Densities are tracked exactly:
   ``d_L = d_{L-1} * (1 - p_L)`` and the mask has ``num_active(d_L, size)`` ones (see
   :mod:`rigl_tf.lottery.importance`), so with ``p = 0.2`` level ``L`` has density
   ``0.8 ** L`` up to rounding of the count;
2. sets the level's starting weights by the rewinding mode, masked by ``m_L``:

   =========  =======================================  ===================================
   rewinding  starting weights                         training
   =========  =======================================  ===================================
   'init'     ``theta_0 * m_L`` (original LTH)         steps ``0 .. T``, schedule restarts
   'step'     ``theta_K * m_L`` (late rewinding)       steps ``K .. T`` (schedule and data
                                                       order as level 0 from step ``K``)
   'lr'       ``theta_{L-1} * m_L`` (keep weights)     steps ``K .. T``: the learning-rate
                                                       schedule is rewound to ``K``
                                                       (``K = 0`` by default: full restart)
   'none'     ``theta_{L-1} * m_L`` (fine-tuning)      ``T - K`` steps at the constant
                                                       ``finetune_learning_rate``
   =========  =======================================  ===================================

3. hands the start (model with weights and masks, first step, data order) to the trainer
   with a static mask updater: fresh optimizer state every level, ``iterations`` starting
   at the level's first step (schedules see the absolute step), checkpoints every
   ``training.save_freq`` steps in ``level_XX/train/``, summaries, strategies, mixed
   precision, regularisation as in ``rigl-train``; then evaluates on the test split.

Every level writes ``level_XX/`` (see :mod:`rigl_tf.lottery.layout`); a level counts as
finished only when its ``metrics.json`` exists. Re-running the same configuration after a
crash continues with the first unfinished level, from that level's latest checkpoint
(bitwise the same result as an uninterrupted run with ``training.deterministic``). Model
layers get canonical names (lower-cased class name plus ``_i`` in layer order, e.g.
``dense``, ``dense_1``, ``conv2d``), so mask keys such as ``'dense_1/kernel'`` and weight
files are stable across processes.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

import rigl_tf
from rigl_tf import locking
from rigl_tf import progress as progress_lib
from rigl_tf.experiments import config as config_lib
from rigl_tf.experiments import datasets as datasets_lib
from rigl_tf.experiments import models as models_lib
from rigl_tf.experiments import train as train_lib
from rigl_tf.keras import model_ops
from rigl_tf.lottery import adaptive as adaptive_lib
from rigl_tf.lottery import branches as branches_lib
from rigl_tf.lottery import importance as importance_lib
from rigl_tf.lottery import layout
from rigl_tf.lottery import repellent as repellent_lib
from rigl_tf.lottery.start import Start, _fail, check_choice, check_float, check_int

log = logging.getLogger(__name__)

REWINDINGS = ("init", "step", "lr", "none")
TRAIN_DIR = "train"  # the trainer's logdir inside a level / branch / one-shot directory

# Spec entries that do not change what is trained (not part of a run's identity).
_NOT_IDENTITY = ("data.data_dir", "training.save_freq", "training.log_freq",
                 "training.val_batch_size", "training.max_train_eval_examples")


@dataclasses.dataclass(frozen=True)
class IMPConfig:
    """The IMP-only hyperparameters of a run (gin scope ``imp``).

    Data, network, optimizer and training loop are the
    :class:`~rigl_tf.experiments.config.ExperimentSpec` given to :class:`IMPRun`.

    Attributes:
      prune_fraction: fraction ``p`` of the remaining weights pruned per level, in (0, 1);
        with ``adaptive`` the minimum fraction.
      importance: importance measure ('magnitude', 'l1', 'l2', 'softmax', 'minmax',
        'random'); see :mod:`rigl_tf.lottery.importance`.
      scope: 'global' (one ranking over all prunable weights) or 'layerwise'.
      rewinding: 'init', 'step', 'lr' or 'none' (see the module docstring).
      rewind_step: the rewind step ``K`` ('step'; the schedule rewind point for 'lr' and
        the fine-tuning length ``T - K`` for 'none'); must be 0 for 'init' and < ``T``.
      rewind_epochs: if set, ``K = round(rewind_epochs * steps_per_epoch)`` instead
        (``steps_per_epoch = train examples // training.batch_size``).
      finetune_learning_rate: constant learning rate of rewinding 'none' (default:
        ``optimizer.learning_rate`` for a constant schedule, a tenth of it otherwise).
      adaptive: choose the pruning fraction per level (:mod:`rigl_tf.lottery.adaptive`).
      adaptive_candidates: fractions tried by the adaptive rule.
      adaptive_alphas: interpolation points of the adaptive rule.
      adaptive_examples: size of the fixed training subset for path losses (also used for
        the ``train_subset_loss`` metric).
      repellent: ``lambda_r`` of the repellent (> 0) / attractive (< 0) loss towards the
        solutions of all earlier levels (:mod:`rigl_tf.lottery.repellent`); 0 disables.
      seed: seed of the initial weights, of the trainer and of random importance scores.
      data_seed: seed of the data order (default: ``seed``).
    """

    prune_fraction: float = 0.2
    importance: str = "magnitude"
    scope: str = "global"
    rewinding: str = "init"
    rewind_step: int = 0
    rewind_epochs: Optional[float] = None
    finetune_learning_rate: Optional[float] = None
    adaptive: bool = False
    adaptive_candidates: Tuple[float, ...] = adaptive_lib.DEFAULT_CANDIDATES
    adaptive_alphas: Tuple[float, ...] = adaptive_lib.DEFAULT_ALPHAS
    adaptive_examples: int = 1000
    repellent: float = 0.0
    seed: int = 0
    data_seed: Optional[int] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("prune_fraction", importance_lib.check_fraction(self.prune_fraction))
        importance_lib.check_measure(self.importance)
        importance_lib.check_scope(self.scope)
        check_choice("rewinding", self.rewinding, REWINDINGS)
        check_int("rewind_step", self.rewind_step, 0)
        check_float("rewind_epochs", self.rewind_epochs, 0.0, allow_none=True)
        if self.rewinding == "init" and (self.rewind_step or self.rewind_epochs):
            raise ValueError(
                f"`rewind_step`={self.rewind_step!r} / `rewind_epochs`="
                f"{self.rewind_epochs!r} need rewinding='step', 'lr' or 'none'; "
                f"rewinding='init' always rewinds to step 0."
            )
        check_float("finetune_learning_rate", self.finetune_learning_rate, 0.0,
                    low_open=True, allow_none=True)
        if not isinstance(self.adaptive, bool):
            _fail("adaptive", self.adaptive, "True or False")
        set_("adaptive_candidates",
             adaptive_lib.check_candidates(self.adaptive_candidates, "adaptive_candidates"))
        set_("adaptive_alphas", adaptive_lib.check_alphas(self.adaptive_alphas,
                                                          "adaptive_alphas"))
        check_int("adaptive_examples", self.adaptive_examples, 1)
        check_float("repellent", self.repellent)
        check_int("seed", self.seed, 0)
        check_int("data_seed", self.data_seed, 0, allow_none=True)

    def to_dict(self) -> Dict[str, Any]:
        """The hyperparameters as a JSON-compatible dict (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IMPConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown IMPConfig keys {unknown}; known: {sorted(names)}.")
        kwargs = dict(data)
        for key in ("adaptive_candidates", "adaptive_alphas"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def run_name(self, spec: config_lib.ExperimentSpec) -> str:
        """The run directory name, e.g. ``imp_lenet5_fashion_mnist_idx_p0.2_rewind-step100_global``.

        Network, dataset, pruning fraction, rewinding and scope always appear; every other
        IMP or training hyperparameter appears as ``<name><value>`` when it differs from
        its default (a name shared by two spec sections is written ``<section>-<name>``).
        """
        if self.rewind_epochs is not None:
            point = f"{self.rewind_epochs:g}ep"
        else:
            point = str(self.rewind_step) if self.rewind_step else ""
        rewind = f"rewind-{self.rewinding}{point}"
        fraction = f"p{'adaptive' if self.adaptive else ''}{self.prune_fraction:g}"
        head = (spec.network.network_name, spec.data.dataset_name, fraction, rewind,
                self.scope)
        skip = {"prune_fraction", "adaptive", "rewinding", "rewind_step", "rewind_epochs",
                "scope", "network.network_name", "data.dataset_name"}
        cfg = _short_names(identity(self, spec))
        defaults = _short_names(identity(IMPConfig(), config_lib.make_spec()))
        return layout.run_name(cfg, defaults, head=head, skip={_short(k, cfg) for k in skip})


def identity(config: IMPConfig, spec: config_lib.ExperimentSpec) -> Dict[str, Any]:
    """A run's identity (``config.json``): IMP hyperparameters and ``'section.name'`` spec
    entries (paths and checkpoint / logging frequencies excluded)."""
    out = config.to_dict()
    out.update({k: v for k, v in config_lib.spec_to_dict(spec).items()
                if k not in _NOT_IDENTITY})
    return out


def _short(key, names):
    """``'section.name'`` -> ``'name'`` unless another section has that name too."""
    if "." not in key:
        return key
    section, name = key.split(".", 1)
    clash = sum(1 for k in names if k.split(".", 1)[-1] == name) > 1
    return f"{section}-{name}" if clash else name


def _short_names(cfg):
    return {_short(k, cfg): v for k, v in cfg.items()}


def check_spec(spec: config_lib.ExperimentSpec) -> config_lib.ExperimentSpec:
    """Refuses training settings that contradict IMP (levels start dense from theta_0 and
    keep their masks fixed); returns ``spec``.

    Raises:
      ValueError: naming the parameter, its value and what IMP allows.
    """
    if not isinstance(spec, config_lib.ExperimentSpec):
        raise TypeError(f"`spec` must be an ExperimentSpec, got {type(spec).__name__}.")
    why = ("IMP levels start dense from the run's own theta_0 and prune with "
           "imp.prune_fraction")
    net, sp, t = spec.network, spec.sparsity, spec.training
    checks = [
        ("sparsity.sparsity", sp.sparsity, 0.0),
        ("mask_updater.update_alg", spec.mask_updater.update_alg, ""),
        ("pruning.final_sparsity", spec.pruning.final_sparsity if spec.pruning_active
         else 0.0, 0.0),
        ("network.mask_init_path", net.mask_init_path, None),
        ("network.weight_init_path", net.weight_init_path, None),
        ("network.weight_init_method", net.weight_init_method, None),
        ("network.shuffle_mask", net.shuffle_mask, False),
        ("network.noise_stddev", net.noise_stddev, 0.0),
        ("network.small_dense_density", net.small_dense_density, None),
        ("training.use_metainit", t.use_metainit, False),
        ("training.oneshot_prune_fraction", t.oneshot_prune_fraction, 0.0),
        ("training.checkpoint_mask_updates", t.checkpoint_mask_updates, False),
    ]
    for name, value, allowed in checks:
        if value != allowed:
            raise ValueError(f"`{name}`={value!r} is not used by IMP ({why}); leave it at "
                             f"{allowed!r}.")
    return spec


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- models


def canonical_names(model):
    """Returns a copy of ``model`` whose layers are named by class and position.

    Names are the lower-cased class name, then ``_1``, ``_2``, ... for later layers of the
    same class (``dense``, ``dense_1``, ``conv2d``, ...), independent of how many models
    the process built before, so mask keys and weight files are stable.
    """
    counts: Dict[str, int] = {}
    pairs = []

    def clone_fn(layer):
        base = type(layer).__name__.lower()
        i = counts.get(base, 0)
        counts[base] = i + 1
        config = layer.get_config()
        config["name"] = base if i == 0 else f"{base}_{i}"
        new = layer.__class__.from_config(config)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_fn)
    for old, new in pairs:
        if old.weights:
            new.set_weights(old.get_weights())
    return clone


class _BatchLoss(keras.metrics.Metric):
    """The cross-entropy of the latest batch (not an average): per-step training loss."""

    def __init__(self, name="batch_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        self.value.assign(keras.ops.mean(loss))

    def result(self):
        return self.value

    def reset_state(self):
        self.value.assign(0.0)


class _LossRecord(tf.Module):
    """The last ``keep`` per-batch losses; checkpointed with the level (resumable)."""

    def __init__(self, keep):
        super().__init__(name="loss_record")
        self.values = tf.Variable(tf.zeros([keep], tf.float32), trainable=False)
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)


class _LossRecorder(keras.callbacks.Callback):
    def __init__(self, keep):
        super().__init__()
        self.keep = keep
        self.state = _LossRecord(keep)

    def on_train_batch_end(self, batch, logs=None):
        values = np.roll(self.state.values.numpy(), -1)
        values[-1] = float(logs["batch_loss"])
        self.state.values.assign(values)
        self.state.count.assign_add(1)

    @property
    def losses(self) -> List[float]:
        n = min(int(self.state.count.numpy()), self.keep)
        return [float(v) for v in self.state.values.numpy()[self.keep - n:]]


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str((value.dtype.str, value.shape)).encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _owns_run_dir(method):
    """Runs an :class:`IMPRun` method that writes while this process holds the run
    directory's lock (re-entrant: nested writers and ``rigl-lottery`` share it)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with locking.exclusive(self.run_dir, "IMP run directory"):
            return method(self, *args, **kwargs)

    return locked


class IMPRun:
    """An IMP run in its run directory: levels, one-shot pruning and branches.

    Args:
      config: the :class:`IMPConfig`.
      spec: the training spec (``rigl_tf.experiments.config.make_spec(...)`` or, with gin,
        ``config.resolve()``); default: ``make_spec()``.
      root_dir: parent directory; the run lives in ``root_dir/config.run_name(spec)``.
      run_dir: explicit run directory (overrides ``root_dir``).
      data_dir: data directory for IDX / tfds datasets (overrides ``data.data_dir``; not
        part of the identity).
      strategy: the trainer's strategy: 'default', 'mirrored' or 'tpu'.
      tpu: TPU address for 'tpu'.
      callbacks: extra Keras callbacks passed to every training (``self.stage`` names
        what is being trained, e.g. ``'level_02'``).
      verbose: trainer verbosity (``model.fit`` progress and log lines).

    Raises:
      ValueError: if neither ``root_dir`` nor ``run_dir`` is given, the spec contradicts
        IMP (:func:`check_spec`), or the training / rewind lengths are inconsistent
        (``rewind_step`` past the end of training).
      layout.RunDirConflictError: if the run directory belongs to another configuration.
      rigl_tf.locking.DirectoryLockedError: if another process is writing the run directory
        (every method that writes holds its lock, as ``rigl-lottery`` does; reading a run
        needs no lock).
    """

    def __init__(self, config: IMPConfig, spec: Optional[config_lib.ExperimentSpec] = None,
                 root_dir: Optional[str] = None, *, run_dir: Optional[str] = None,
                 data_dir: Optional[str] = None, strategy: str = "default",
                 tpu: Optional[str] = None, callbacks: Sequence = (), verbose: int = 0):
        if not isinstance(config, IMPConfig):
            raise TypeError(f"`config` must be an IMPConfig, got {type(config).__name__}.")
        spec = check_spec(config_lib.make_spec() if spec is None else spec)
        if data_dir is not None:
            spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data,
                                                                      data_dir=data_dir))
        if run_dir is None and root_dir is None:
            raise ValueError("IMPRun needs `root_dir` (runs are named by their "
                             "hyperparameters below it) or an explicit `run_dir`.")
        check_choice("strategy", strategy, ("default", "mirrored", "tpu"))
        self.config = config
        self.spec = spec
        self.run_dir = run_dir or os.path.join(root_dir, config.run_name(spec))
        self.data_dir = spec.data.data_dir
        self.strategy, self.tpu = strategy, tpu
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.stage = None
        d = spec.data
        self.info = datasets_lib.get_dataset_info(d.dataset_name, d.data_dir, d.image_size)
        n_train = self.info.num_examples["train"]
        batch = spec.training.batch_size
        self.steps_per_epoch = n_train // batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"`training.batch_size` ({batch}) exceeds the {n_train} training examples "
                f"of {d.dataset_name!r}."
            )
        self.total_steps = spec.training.total_steps
        self.rewind_step = (config.rewind_step if config.rewind_epochs is None else
                            round(config.rewind_epochs * self.steps_per_epoch))
        if self.rewind_step >= self.total_steps:
            what = ("rewind_step" if config.rewind_epochs is None else "rewind_epochs")
            value = config.rewind_step if config.rewind_epochs is None else config.rewind_epochs
            raise ValueError(
                f"`{what}`={value!r} (step {self.rewind_step}) is past the end of training: "
                f"it must be < the {self.total_steps} training steps "
                f"(training.total_steps)."
            )
        self.data_seed = config.seed if config.data_seed is None else config.data_seed
        self.identity = identity(config, spec)
        if os.path.exists(os.path.join(self.run_dir, layout.CONFIG)):
            layout.claim(self.run_dir, self.identity)  # only reads: no lock needed
        else:
            with locking.exclusive(self.run_dir, "IMP run directory"):
                layout.claim(self.run_dir, self.identity)
        self._model = None
        self._subset = None

    # ------------------------------------------------------------------ models and data
    def build_model(self, seed: Optional[int] = None, width_multiplier: Optional[float] = None):
        """A fresh sparse (all-ones masks) model with canonical layer names.

        Args:
          seed: initialization seed (default: the run's seed).
          width_multiplier: overrides the model's width multiplier (small-dense networks).
        """
        spec = self.spec
        keras.utils.set_random_seed(self.config.seed if seed is None else seed)
        if width_multiplier is not None:
            net = spec.network
            kwargs = dict(net.model_kwargs, width_multiplier=width_multiplier)
            spec = dataclasses.replace(spec, network=dataclasses.replace(
                net, model_kwargs=kwargs))
        base = canonical_names(train_lib.build_dense_model(spec, self.info))
        sp = spec.sparsity
        return rigl_tf.sparsify(base, 0.0, "uniform",
                                keep_dense=train_lib._keep_dense(base, sp.keep_dense),
                                init="dense", min_active=sp.min_active)

    @property
    def model(self):
        """The run's reference model (built once per process, initialised with ``seed``);
        each training builds its own model from a start."""
        if self._model is None:
            self._model = self.build_model()
        return self._model

    def mask_paths(self, model=None) -> set:
        """Keras paths of the mask variables (excluded from start-weight dicts)."""
        return {m.path for _, _, m in model_ops.masked_weights(model or self.model)}

    def weights_of(self, model=None) -> Dict[str, np.ndarray]:
        """Every non-mask variable of the model, keyed by Keras path."""
        model = model or self.model
        skip = self.mask_paths(model)
        return {v.path: v.numpy() for v in model.weights if v.path not in skip}

    def train_subset(self) -> Tuple[np.ndarray, np.ndarray]:
        """The fixed training subset of the adaptive rule and the subset-loss metric."""
        if self._subset is None:
            d = self.spec.data
            n = min(self.config.adaptive_examples, self.info.num_examples["train"])
            kwargs = {"normalization": d.normalization, "image_size": d.image_size}
            self._subset = datasets_lib.get_fixed_batch(
                d.dataset_name, "train", n, seed=self.data_seed, data_dir=d.data_dir,
                **{k: v for k, v in kwargs.items() if v is not None})
        return self._subset

    def finetune_learning_rate(self) -> float:
        """The constant learning rate of rewinding 'none'."""
        cfg, opt = self.config, self.spec.optimizer
        if cfg.finetune_learning_rate is not None:
            return cfg.finetune_learning_rate
        return opt.learning_rate if opt.schedule == "constant" else 0.1 * opt.learning_rate

    # ------------------------------------------------------------------ one training run
    def _apply_start(self, model, start: Start):
        missing = [p for p in self.weights_of(model) if p not in start.weights]
        if missing:
            raise ValueError(f"Start weights miss variables {missing}.")
        for v in model.weights:
            if v.path in start.weights:
                v.assign(start.weights[v.path])
        rigl_tf.set_masks(model, start.masks)

    def _level_spec(self, start: Start):
        spec = self.spec
        if start.constant_lr is not None:  # fine-tuning: a constant rate, no warm-up
            spec = dataclasses.replace(spec, optimizer=dataclasses.replace(
                spec.optimizer, schedule="constant", learning_rate=start.constant_lr,
                warmup_steps=0))
        return spec

    @_owns_run_dir
    def train(self, directory: str, start: Start, *, previous=(),
              capture_step: Optional[int] = None, record_last: int = 0,
              info: Optional[Dict] = None) -> Dict:
        """Trains from ``start`` with the trainer and writes mask, weights and metrics.

        The trainer's logdir is ``directory/train`` (checkpoints every
        ``training.save_freq`` steps, summaries, ``results.json``); a killed training
        resumes there from its latest checkpoint.

        Args:
          directory: the level / branch directory (``metrics.json`` is written last).
          start: the starting point (``start.width_multiplier`` selects a small-dense
            model).
          previous: earlier optima (key -> array) for the repellent loss.
          capture_step: also save the weights after exactly this step (a checkpoint of
            the trainer) as ``rewind.weights.npz``.
          record_last: record this many per-batch training losses (the last ones).
          info: extra entries for ``metrics.json``.

        Returns:
          The metrics dict.
        """
        cfg = self.config
        if start.end_step != self.total_steps:
            raise ValueError(f"`start.end_step`={start.end_step} must be the run's "
                             f"{self.total_steps} training steps.")
        t0 = time.time()
        os.makedirs(directory, exist_ok=True)
        layout.write_arrays(os.path.join(directory, layout.MASK), start.masks)
        logdir = os.path.join(directory, TRAIN_DIR)

        def model_fn():
            model = self.build_model(width_multiplier=start.width_multiplier)
            self._apply_start(model, start)
            layout.save_weights(model, os.path.join(directory, layout.START))
            return model

        wrap = None
        if cfg.repellent and previous:
            def wrap(model):
                return repellent_lib.RepellentModel(model, list(previous), cfg.repellent)
        recorder = _LossRecorder(record_last) if record_last else None
        ident = {"run": self.identity, "train": os.path.relpath(logdir, self.run_dir),
                 "start_step": start.start_step, "end_step": start.end_step,
                 "data_seed": start.data_seed, "constant_lr": start.constant_lr,
                 "width_multiplier": start.width_multiplier, "record_last": record_last,
                 "capture_step": capture_step, "repellent_optima": len(previous),
                 "masks": _digest(start.masks), "weights": _digest(start.weights)}
        trainer_start = train_lib.TrainStart(
            model_fn=model_fn, identity="# rigl-lottery training\n# " + json.dumps(
                ident, sort_keys=True) + "\n",
            start_step=start.start_step, data_seed=start.data_seed,
            save_steps=() if capture_step is None else (capture_step,), wrap=wrap,
            metrics=[_BatchLoss()] if recorder else [],
            callbacks=[recorder] if recorder else [],
            track={"loss_record": recorder.state} if recorder else {})
        label = self._label(directory, {**start.info, **(info or {})})
        try:
            results = train_lib.train_from_start(
                self._level_spec(start), trainer_start, logdir, seed=cfg.seed,
                strategy=self.strategy, tpu=self.tpu, verbose=self.verbose,
                extra_callbacks=self.callbacks)
        except train_lib.TrainingDivergedError as e:
            raise self._diverged(label, e.reason or str(e), e.last_checkpoint, logdir) from e
        model = trainer_start.model
        x, y = self.train_subset()
        subset_loss = adaptive_lib.mean_loss(model, x, y)
        losses = recorder.losses if recorder is not None else []
        finite = [v for v in losses if np.isfinite(v)]
        bad = [k for k in ("train_loss", "test_loss") if results.get(k) is None]
        if not np.isfinite(subset_loss):
            bad.append(f"train_subset_loss ({subset_loss})")
        if losses and not finite:
            bad.append(f"all {len(losses)} per-batch losses of the last epoch")
        if bad:  # checked before anything of the level's result is written
            raise self._diverged(label, f"non-finite after training: {', '.join(bad)}",
                                 results.get("step"), logdir, finished=True)
        if capture_step is not None:
            values = train_lib.load_variables(model, f"{logdir}:{capture_step}",
                                              "capture_step")
            weights = {w.path for w in model.weights}
            layout.write_arrays(os.path.join(directory, layout.REWIND),
                                {v.path: x for v, x in zip(model.variables, values)
                                 if v.path in weights})
        report = rigl_tf.sparsity_report(model)
        total = report.total
        metrics = {
            "test_accuracy": results["test_accuracy"],
            "test_loss": results["test_loss"],
            "train_loss": results["train_loss"],
            "train_accuracy": results["train_accuracy"],
            "train_subset_loss": subset_loss,
            "density": total["active"] / total["size"],
            "sparsity": total["sparsity"],
            "active_weights": total["active"],
            "prunable_weights": total["size"],
            "kernel_params": models_lib.count_params(model) - (total["size"] - total["active"]),
            "start_step": start.start_step,
            "end_step": start.end_step,
            "steps": start.end_step - start.start_step,
            "resumed_from_step": results["resumed_from_step"],
            "train_time": results["wall_time_s"],
            "wall_time": time.time() - t0,
            "constant_lr": start.constant_lr,
            **start.info,
            **(info or {}),
            "sparsity_report": report.as_dict(),
        }
        if recorder is not None:
            # Steps skipped as non-finite (training.nonfinite='skip') logged a NaN loss;
            # epsilon is the spread of the steps that trained.
            metrics["last_epoch_losses"] = [v if np.isfinite(v) else None for v in losses]
            metrics["loss_std_last_epoch"] = adaptive_lib.loss_std(finite)
            metrics["nonfinite_losses_last_epoch"] = len(losses) - len(finite)
        layout.save_weights(model, os.path.join(directory, layout.SOLUTION))
        layout.write_json(os.path.join(directory, layout.METRICS), metrics)
        return metrics

    def _label(self, directory: str, info: Mapping) -> str:
        """How messages name a training: 'IMP level 2 (level_02)' or its directory."""
        rel = os.path.relpath(directory, self.run_dir)
        if info.get("kind") == "level" and info.get("level") is not None:
            return f"IMP level {info['level']} ({rel}/)"
        return f"IMP training {rel}/"

    @staticmethod
    def _diverged(label: str, reason: str, where, logdir: str,
                  finished: bool = False) -> "train_lib.TrainingDivergedError":
        """The one-sentence error of a diverged level (nothing of its result written)."""
        kept = (f"its checkpoints up to step {where} stay in {logdir!r}" if finished else
                f"its last good checkpoint {where!r} is kept" if where else
                "no checkpoint of it was kept")
        return train_lib.TrainingDivergedError(
            f"{label} diverged ({reason}); nothing of it is marked finished (no solution or "
            f"metrics.json written; {kept}): lower optimizer.learning_rate or set "
            f"optimizer.clipnorm.", reason, None if finished else where)

    # ------------------------------------------------------------------ reading a run
    def level_dir(self, level: int) -> str:
        return layout.level_dir(self.run_dir, level)

    def is_finished(self, level: int) -> bool:
        """Whether ``level`` has its ``metrics.json``."""
        return layout.is_finished(self.level_dir(level))

    def metrics(self, level: int) -> Dict:
        """The ``metrics.json`` of a finished level."""
        path = os.path.join(self.level_dir(level), layout.METRICS)
        if not os.path.exists(path):
            raise ValueError(f"`level` {level} of {self.run_dir!r} is not finished yet.")
        return layout.read_json(path)

    def masks(self, level: int) -> Dict[str, np.ndarray]:
        """The masks of a (started) level."""
        return layout.read_arrays(os.path.join(self.level_dir(level), layout.MASK))

    def read_weights(self, level: int, which: str = "solution") -> Dict[str, np.ndarray]:
        """Weights of a level: 'solution', 'start' or 'rewind' (level 0 only)."""
        name = {"solution": layout.SOLUTION, "start": layout.START,
                "rewind": layout.REWIND}.get(which)
        if name is None:
            raise ValueError(f"`which` must be 'solution', 'start' or 'rewind', got {which!r}.")
        skip = self.mask_paths()
        arrays = layout.read_arrays(os.path.join(self.level_dir(level), name))
        return {k: v for k, v in arrays.items() if k not in skip}

    def masked_values(self, weights: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """'layer/attr' -> value of the prunable weights in a path-keyed weight dict."""
        return {k: weights[w.path] for k, w, _ in model_ops.masked_weights(self.model)}

    def finished_levels(self) -> List[int]:
        """Levels with a ``metrics.json``, in order (stops at the first gap)."""
        out = []
        while self.is_finished(len(out)):
            out.append(len(out))
        return out

    # ------------------------------------------------------------------ IMP
    def _dense_start(self) -> Start:
        masks = {k: np.ones(tuple(w.shape), np.float32)
                 for k, w, _ in model_ops.masked_weights(self.model)}
        # theta_0: reuse the file of an interrupted attempt, else a fresh seeded init (the
        # run's model may already have been trained in this process).
        path = os.path.join(self.level_dir(0), layout.START)
        if os.path.exists(path):
            weights = self.read_weights(0, "start")
        else:
            weights = self.weights_of(self.build_model())
        return Start(masks, weights, 0, self.total_steps, self.data_seed)

    def rewound_start(self, masks: Mapping[str, np.ndarray], previous_level: Optional[int],
                      info=None) -> Start:
        """The starting point of a pruned network under the run's rewinding mode.

        Args:
          masks: the new masks.
          previous_level: the level whose solution was pruned (used by 'lr' / 'none').
          info: extra metrics entries.
        """
        cfg = self.config
        K, T = self.rewind_step, self.total_steps
        constant_lr = None
        if cfg.rewinding == "init":
            weights, first = self.read_weights(0, "start"), 0
        elif cfg.rewinding == "step":
            weights, first = self.read_weights(0, "rewind"), K
        else:
            weights, first = self.read_weights(previous_level, "solution"), K
            if cfg.rewinding == "none":
                constant_lr = self.finetune_learning_rate()
        weights = self._mask_weights(weights, masks)
        return Start(dict(masks), weights, first, T, self.data_seed, constant_lr,
                     info=dict(info or {}))

    def _mask_weights(self, weights, masks):
        out = dict(weights)
        for k, w, _ in model_ops.masked_weights(self.model):
            out[w.path] = weights[w.path] * np.asarray(masks[k], weights[w.path].dtype)
        return out

    def _prune(self, level: int, density: float, masks, weights) -> Dict[str, np.ndarray]:
        cfg = self.config
        return importance_lib.prune_masks(
            self.masked_values(weights), masks, density, measure=cfg.importance,
            scope=cfg.scope, min_active=self.spec.sparsity.min_active, seed=cfg.seed, level=level)

    def _choose_fraction(self, level: int, density: float, masks, weights) -> Tuple[float, Dict]:
        cfg = self.config
        if not cfg.adaptive:
            return cfg.prune_fraction, {}
        dense = self.metrics(0)
        threshold = dense["train_subset_loss"] + dense["loss_std_last_epoch"]
        model = self.model
        self._apply_start(model, Start(masks, weights, 0, 0, 0))
        x, y = self.train_subset()
        p, sweep = adaptive_lib.adaptive_fraction(
            model, lambda f: self._prune(level, density * (1.0 - f), masks, weights), x, y,
            threshold, candidates=cfg.adaptive_candidates, alphas=cfg.adaptive_alphas,
            minimum=cfg.prune_fraction)
        return p, {"adaptive": {"threshold": threshold, "epsilon": dense["loss_std_last_epoch"],
                                "dense_loss": dense["train_subset_loss"], "sweep": sweep}}

    @_owns_run_dir
    def run_level(self, level: int) -> Dict:
        """Runs one level (the previous level must be finished); returns its metrics."""
        check_int("level", level, 0)
        if self.is_finished(level):
            return self.metrics(level)
        directory = self.level_dir(level)
        self.stage = os.path.basename(directory)
        cfg = self.config
        if level == 0:
            start = self._dense_start()
            log.info("IMP level 0: dense training for %d steps", self.total_steps)
            return self.train(directory, start, capture_step=self.rewind_step,
                              record_last=self.steps_per_epoch,
                              info={"level": 0, "kind": "level", "prune_fraction": None,
                                    "target_density": 1.0, "rewinding": cfg.rewinding})
        if not self.is_finished(level - 1):
            raise ValueError(
                f"`level` {level} needs level {level - 1} to be finished first (run levels "
                f"in order, e.g. IMPRun.run({level}))."
            )
        prev = self.metrics(level - 1)
        prev_masks = self.masks(level - 1)
        prev_weights = self.read_weights(level - 1, "solution")
        fraction, extra = self._choose_fraction(level, prev["target_density"], prev_masks,
                                                prev_weights)
        density = prev["target_density"] * (1.0 - fraction)
        masks = self._prune(level, density, prev_masks, prev_weights)
        previous = []
        if cfg.repellent:
            previous = [self.masked_values(self.read_weights(i, "solution"))
                        for i in range(level)]
        start = self.rewound_start(masks, level - 1)
        log.info("IMP level %d: prune %.3f -> density %.5f", level, fraction, density)
        return self.train(directory, start, previous=previous,
                          info={"level": level, "kind": "level", "prune_fraction": fraction,
                                "target_density": density, "rewinding": cfg.rewinding,
                                **extra})

    @_owns_run_dir
    def run(self, levels: int, target_sparsity: Optional[float] = None,
            progress: Optional[str] = None) -> List[Dict]:
        """Runs (or resumes) levels ``0 .. levels``; finished levels are skipped.

        Args:
          levels: the last level ``L_max`` (>= 0).
          target_sparsity: stop after the first level whose sparsity reaches it.
          progress: a `rigl_tf.progress` mode for one status line per level trained
            (levels done / to do, time per level, ETA); default ``$RIGL_TF_PROGRESS`` or
            a bar on a terminal.

        Returns:
          The metrics of every level run or found, in order.
        """
        check_int("levels", levels, 0)
        if target_sparsity is not None:
            importance_lib.check_fraction(target_sparsity, "target_sparsity")
        out = []
        to_train = sum(not self.is_finished(level) for level in range(levels + 1))
        # Not entered as the current Progress: the adaptive ratio's interpolation inside a
        # level advances its own (inner) progress, not this one.
        status = progress_lib.Progress(total=to_train, desc="IMP levels trained", mode=progress)
        for level in range(levels + 1):
            skipped = self.is_finished(level)
            metrics = self.run_level(level)
            out.append(metrics)
            if not skipped:
                self.write_summary()
                status.update()
            if target_sparsity is not None and metrics["sparsity"] >= target_sparsity - 1e-9:
                break
        status.close()
        return out

    # ------------------------------------------------------------------ one-shot pruning
    @_owns_run_dir
    def run_oneshot(self, sparsity: float) -> Dict:
        """One-shot magnitude pruning (OMP): prune the dense solution once to ``sparsity``.

        Uses level 0 (run first if needed), the run's importance measure, scope and
        rewinding mode, and trains like an IMP level; results go to ``omp_s<sparsity>/``.
        """
        sparsity = check_float("sparsity", sparsity, 0.0, 1.0, low_open=True, high_open=True)
        directory = layout.oneshot_dir(self.run_dir, sparsity)
        if layout.is_finished(directory):
            return layout.read_json(os.path.join(directory, layout.METRICS))
        self.run_level(0)
        self.stage = os.path.basename(directory)
        ones = self.masks(0)
        masks = self._prune(1, 1.0 - sparsity, ones, self.read_weights(0, "solution"))
        start = self.rewound_start(masks, 0)
        return self.train(directory, start, info={"kind": "oneshot", "level": None,
                                                  "target_density": 1.0 - sparsity,
                                                  "rewinding": self.config.rewinding})

    # ------------------------------------------------------------------ branches
    @_owns_run_dir
    def run_branch(self, level: int, name: str, seed: int = 1) -> Dict:
        """Runs a branch from a finished level (see :mod:`rigl_tf.lottery.branches`)."""
        return branches_lib.run_branch(self, level, name, seed)

    # ------------------------------------------------------------------ summary
    def summary(self) -> List[Dict]:
        """One row per finished level: level, prune fraction, densities, accuracy, steps."""
        rows = []
        for level in self.finished_levels():
            m = self.metrics(level)
            rows.append({k: m.get(k) for k in (
                "level", "prune_fraction", "target_density", "density", "sparsity",
                "test_accuracy", "test_loss", "train_subset_loss", "steps", "wall_time")})
            rows[-1]["per_layer_sparsity"] = {
                r["name"]: r["sparsity"] for r in m["sparsity_report"]["layers"]}
        return rows

    def compute_savings(self, target_sparsity: float) -> Dict:
        """Levels / steps to reach ``target_sparsity`` vs a fixed ``prune_fraction`` ratio."""
        rows = self.summary()
        densities = [r["density"] for r in rows]
        steps = rows[1]["steps"] if len(rows) > 1 else self.total_steps - (
            0 if self.config.rewinding == "init" else self.rewind_step)
        return adaptive_lib.compute_savings(
            densities, target_sparsity, steps, self.total_steps,
            fixed_fraction=self.config.prune_fraction)

    @_owns_run_dir
    def write_summary(self) -> List[Dict]:
        """Writes ``summary.json`` (the rows of :meth:`summary`) and returns the rows."""
        rows = self.summary()
        layout.write_json(os.path.join(self.run_dir, layout.SUMMARY),
                          {"run_dir": self.run_dir, "levels": rows})
        return rows


def format_summary(rows: Sequence[Mapping]) -> str:
    """A text table of :meth:`IMPRun.summary` rows."""
    head = (f"{'level':>5} {'p':>6} {'density':>9} {'sparsity':>9} {'test acc':>9} "
            f"{'test loss':>9} {'steps':>7} {'time s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p = "-" if r["prune_fraction"] is None else f"{r['prune_fraction']:.3f}"
        lines.append(
            f"{r['level']:>5} {p:>6} {r['density']:>9.5f} {r['sparsity']:>9.5f} "
            f"{r['test_accuracy']:>9.4f} {r['test_loss']:>9.4f} {r['steps']:>7} "
            f"{r['wall_time']:>7.1f}")
    return "\n".join(lines)


__all__ = ["IMPConfig", "IMPRun", "REWINDINGS", "Start", "TRAIN_DIR", "canonical_names",
           "check_spec", "format_summary", "identity"]
