"""Iterative magnitude pruning (IMP): the lottery-ticket driver, resumable level by level.

Level 0 trains the dense network from ``theta_0`` for ``T`` steps and records the rewind
point ``theta_K`` (the weights after ``K`` steps). Level ``L >= 1``:

1. prunes a fraction ``p`` of the weights still active after level ``L-1``, ranked by the
   importance measure at level ``L-1``'s solution (globally or per layer; layers in
   ``keep_dense`` are never pruned). Densities are tracked exactly:
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

3. trains with ``model.fit`` and a ``rigl_tf.SparseOptimizer(..., updater='static')``
   (fresh optimizer state every level; its ``iterations`` starts at the level's first
   step, so schedules see the absolute step), and evaluates on the test split.

Every level writes ``level_XX/`` (see :mod:`rigl_tf.lottery.layout`); a level counts as
finished only when its ``metrics.json`` exists, so re-running the same configuration after
a crash continues with the first unfinished level (a partly trained level is retrained
from its start). Model layers get canonical names (lower-cased class name plus ``_i``
in layer order, e.g. ``dense``, ``dense_1``, ``conv2d``), so mask keys such as
``'dense_1/kernel'`` and weight files are stable across processes.
"""

import dataclasses
import logging
import math
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

import rigl_tf
from rigl_tf.experiments import datasets as datasets_lib
from rigl_tf.experiments import models as models_lib
from rigl_tf.keras import model_ops
from rigl_tf.lottery import adaptive as adaptive_lib
from rigl_tf.lottery import importance as importance_lib
from rigl_tf.lottery import layout
from rigl_tf.lottery import repellent as repellent_lib

log = logging.getLogger(__name__)

REWINDINGS = ("init", "step", "lr", "none")
OPTIMIZERS = ("sgd", "momentum", "adam")
LR_SCHEDULES = ("cosine", "constant")


def _fail(name, value, allowed):
    raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def _check_int(name, value, minimum=0, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        _fail(name, value, f"an int >= {minimum}")
    return int(value)


def _check_float(name, value, low=None, high=None, low_open=False, high_open=False,
                 allow_none=False):
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = not isinstance(value, bool) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        _fail(name, value, "a finite number " + " and ".join(s for s in (lo, hi) if s))
    return v


def _check_choice(name, value, allowed):
    if value not in allowed:
        _fail(name, value, f"one of {', '.join(repr(a) for a in allowed)}")
    return value


@dataclasses.dataclass(frozen=True)
class IMPConfig:
    """Hyperparameters of an IMP run: its identity (``config.json``) and directory name.

    Attributes:
      network: registered model name (``rigl_tf.experiments.models.list_models()``).
      dataset: registered dataset name (``rigl_tf.experiments.datasets``).
      model_kwargs: extra model-builder arguments (e.g. ``{'hidden_sizes': [300, 100]}``).
      normalization: dataset normalization ('unit' / 'standardize'; None: its default).
      image_size: resize images to this size (None: native).
      keep_dense: canonical layer names never pruned (e.g. ``('dense_2',)`` for the
        output layer of a 2-hidden-layer MLP).
      train_steps: training steps ``T`` of a dense / level-0 run.
      train_epochs: if set, ``T = round(train_epochs * steps_per_epoch)`` instead
        (``steps_per_epoch = train examples // batch_size``).
      batch_size: training batch size (the last partial batch of an epoch is dropped).
      optimizer: 'sgd', 'momentum' (SGD with ``momentum``) or 'adam'.
      learning_rate: peak learning rate.
      momentum: momentum of 'momentum'.
      lr_schedule: 'cosine' (decay to 0 over ``T``) or 'constant'.
      finetune_learning_rate: constant learning rate of rewinding 'none' (default:
        ``learning_rate`` for a constant schedule, ``0.1 * learning_rate`` for cosine).
      weight_decay: L2 coefficient on kernels (passed to the model builder).
      prune_fraction: fraction ``p`` of the remaining weights pruned per level, in (0, 1);
        with ``adaptive`` the minimum fraction.
      importance: importance measure ('magnitude', 'l1', 'l2', 'softmax', 'minmax',
        'random'); see :mod:`rigl_tf.lottery.importance`.
      scope: 'global' (one ranking over all prunable weights) or 'layerwise'.
      rewinding: 'init', 'step', 'lr' or 'none' (see the module docstring).
      rewind_step: the rewind step ``K`` ('step'; the schedule rewind point for 'lr' and
        the fine-tuning length ``T - K`` for 'none'); must be 0 for 'init' and < ``T``.
      rewind_epochs: if set, ``K = round(rewind_epochs * steps_per_epoch)`` instead.
      min_active: minimum active weights per layer (a level that would empty a layer
        warns and keeps this many).
      adaptive: choose the pruning fraction per level (:mod:`rigl_tf.lottery.adaptive`).
      adaptive_candidates: fractions tried by the adaptive rule.
      adaptive_alphas: interpolation points of the adaptive rule.
      adaptive_examples: size of the fixed training subset for path losses (also used for
        the ``train_subset_loss`` metric).
      repellent: ``lambda_r`` of the repellent (> 0) / attractive (< 0) loss towards the
        solutions of all earlier levels (:mod:`rigl_tf.lottery.repellent`); 0 disables.
      seed: seed of the initial weights and of random importance scores.
      data_seed: seed of the data order (default: ``seed``).
    """

    network: str = "mlp"
    dataset: str = "digits"
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    normalization: Optional[str] = None
    image_size: Optional[int] = None
    keep_dense: Tuple[str, ...] = ()
    train_steps: int = 1000
    train_epochs: Optional[float] = None
    batch_size: int = 128
    optimizer: str = "momentum"
    learning_rate: float = 0.1
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    finetune_learning_rate: Optional[float] = None
    weight_decay: float = 0.0
    prune_fraction: float = 0.2
    importance: str = "magnitude"
    scope: str = "global"
    rewinding: str = "init"
    rewind_step: int = 0
    rewind_epochs: Optional[float] = None
    min_active: int = 1
    adaptive: bool = False
    adaptive_candidates: Tuple[float, ...] = adaptive_lib.DEFAULT_CANDIDATES
    adaptive_alphas: Tuple[float, ...] = adaptive_lib.DEFAULT_ALPHAS
    adaptive_examples: int = 1000
    repellent: float = 0.0
    seed: int = 0
    data_seed: Optional[int] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        _check_choice("network", self.network, models_lib.list_models())
        _check_choice("dataset", self.dataset, datasets_lib.list_datasets())
        if not isinstance(self.model_kwargs, Mapping):
            _fail("model_kwargs", self.model_kwargs, "a mapping of model-builder arguments")
        set_("model_kwargs", {str(k): _jsonable(v) for k, v in self.model_kwargs.items()})
        if self.normalization is not None:
            _check_choice("normalization", self.normalization, datasets_lib.NORMALIZATIONS)
        _check_int("image_size", self.image_size, 1, allow_none=True)
        keep = self.keep_dense
        if isinstance(keep, str):
            keep = (keep,)
        if not all(isinstance(k, str) and k for k in keep):
            _fail("keep_dense", self.keep_dense, "a list of layer names")
        set_("keep_dense", tuple(keep))
        _check_int("train_steps", self.train_steps, 1)
        _check_float("train_epochs", self.train_epochs, 0.0, low_open=True, allow_none=True)
        _check_int("batch_size", self.batch_size, 1)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_float("finetune_learning_rate", self.finetune_learning_rate, 0.0,
                     low_open=True, allow_none=True)
        _check_float("weight_decay", self.weight_decay, 0.0)
        set_("prune_fraction", importance_lib.check_fraction(self.prune_fraction))
        importance_lib.check_measure(self.importance)
        importance_lib.check_scope(self.scope)
        _check_choice("rewinding", self.rewinding, REWINDINGS)
        _check_int("rewind_step", self.rewind_step, 0)
        _check_float("rewind_epochs", self.rewind_epochs, 0.0, allow_none=True)
        if self.rewinding == "init" and (self.rewind_step or self.rewind_epochs):
            raise ValueError(
                f"`rewind_step`={self.rewind_step!r} / `rewind_epochs`="
                f"{self.rewind_epochs!r} need rewinding='step', 'lr' or 'none'; "
                f"rewinding='init' always rewinds to step 0."
            )
        _check_int("min_active", self.min_active, 0)
        if not isinstance(self.adaptive, bool):
            _fail("adaptive", self.adaptive, "True or False")
        set_("adaptive_candidates",
             adaptive_lib.check_candidates(self.adaptive_candidates, "adaptive_candidates"))
        set_("adaptive_alphas", adaptive_lib.check_alphas(self.adaptive_alphas,
                                                          "adaptive_alphas"))
        _check_int("adaptive_examples", self.adaptive_examples, 1)
        _check_float("repellent", self.repellent)
        _check_int("seed", self.seed, 0)
        _check_int("data_seed", self.data_seed, 0, allow_none=True)

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
        for key in ("keep_dense", "adaptive_candidates", "adaptive_alphas"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def run_name(self) -> str:
        """The run directory name, e.g. ``imp_lenet5_fashion_mnist_idx_p0.2_rewind-step100_global``.

        Network, dataset, pruning fraction, rewinding and scope always appear; every other
        hyperparameter appears as ``<name><value>`` when it differs from its default.
        """
        cfg = self.to_dict()
        if self.rewind_epochs is not None:
            point = f"{self.rewind_epochs:g}ep"
        else:
            point = str(self.rewind_step) if self.rewind_step else ""
        rewind = f"rewind-{self.rewinding}{point}"
        fraction = f"p{'adaptive' if self.adaptive else ''}{self.prune_fraction:g}"
        defaults = IMPConfig(network=self.network, dataset=self.dataset).to_dict()
        head = (self.network, self.dataset, fraction, rewind, self.scope)
        skip = {"network", "dataset", "prune_fraction", "adaptive", "rewinding",
                "rewind_step", "rewind_epochs", "scope"}
        return layout.run_name(cfg, defaults, head=head, skip=skip)


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


class _LossRecorder(keras.callbacks.Callback):
    def __init__(self, keep):
        super().__init__()
        self.keep = keep
        self.losses: List[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["batch_loss"]))
        if len(self.losses) > self.keep:
            del self.losses[: len(self.losses) - self.keep]


@dataclasses.dataclass
class Start:
    """Where a level, branch or one-shot run starts.

    Attributes:
      masks: 'layer/attr' -> 0/1 mask of every prunable weight.
      weights: Keras variable path -> starting value (masked weights already masked);
        masks are not included.
      start_step: the optimizer's first step (the schedule position).
      end_step: the step training stops at (``end_step - start_step`` steps are run).
      data_seed: seed of the data order.
      constant_lr: a constant learning rate overriding the schedule (fine-tuning).
      width_multiplier: for small-dense models, the width multiplier of the network.
      info: extra facts recorded in ``metrics.json``.
    """

    masks: Dict[str, np.ndarray]
    weights: Dict[str, np.ndarray]
    start_step: int
    end_step: int
    data_seed: int
    constant_lr: Optional[float] = None
    width_multiplier: Optional[float] = None
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)


class IMPRun:
    """An IMP run in its run directory: levels, one-shot pruning and branches.

    Args:
      config: the :class:`IMPConfig`.
      root_dir: parent directory; the run lives in ``root_dir/config.run_name()``.
      run_dir: explicit run directory (overrides ``root_dir``).
      data_dir: data directory for IDX / tfds datasets (not part of the identity).
      eval_batch_size: test batch size.
      callbacks: extra Keras callbacks passed to every ``fit`` call (``self.stage`` names
        what is being trained, e.g. ``'level_02'``).
      verbose: ``fit`` verbosity.

    Raises:
      ValueError: if neither ``root_dir`` nor ``run_dir`` is given, or the training /
        rewind lengths are inconsistent (``rewind_step`` past the end of training).
      layout.RunDirConflictError: if the run directory belongs to another configuration.
    """

    def __init__(self, config: IMPConfig, root_dir: Optional[str] = None, *,
                 run_dir: Optional[str] = None, data_dir: Optional[str] = None,
                 eval_batch_size: int = 1000, callbacks: Sequence = (), verbose: int = 0):
        if not isinstance(config, IMPConfig):
            raise TypeError(f"`config` must be an IMPConfig, got {type(config).__name__}.")
        if run_dir is None and root_dir is None:
            raise ValueError("IMPRun needs `root_dir` (runs are named by their "
                             "hyperparameters below it) or an explicit `run_dir`.")
        self.config = config
        self.run_dir = run_dir or os.path.join(root_dir, config.run_name())
        self.data_dir = data_dir
        self.eval_batch_size = _check_int("eval_batch_size", eval_batch_size, 1)
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.stage = None
        self.info = datasets_lib.get_dataset_info(config.dataset, data_dir, config.image_size)
        n_train = self.info.num_examples["train"]
        self.steps_per_epoch = n_train // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"`batch_size` ({config.batch_size}) exceeds the {n_train} training examples "
                f"of {config.dataset!r}."
            )
        self.total_steps = (config.train_steps if config.train_epochs is None else
                            max(1, round(config.train_epochs * self.steps_per_epoch)))
        self.rewind_step = (config.rewind_step if config.rewind_epochs is None else
                            round(config.rewind_epochs * self.steps_per_epoch))
        if self.rewind_step >= self.total_steps:
            what = ("rewind_step" if config.rewind_epochs is None else "rewind_epochs")
            value = config.rewind_step if config.rewind_epochs is None else config.rewind_epochs
            raise ValueError(
                f"`{what}`={value!r} (step {self.rewind_step}) is past the end of training: "
                f"it must be < the {self.total_steps} training steps (train_steps / "
                f"train_epochs)."
            )
        self.data_seed = config.seed if config.data_seed is None else config.data_seed
        layout.claim(self.run_dir, config.to_dict())
        self._model = None
        self._test = None
        self._subset = None

    # ------------------------------------------------------------------ models and data
    def build_model(self, seed: Optional[int] = None, width_multiplier: Optional[float] = None):
        """A fresh sparse (all-ones masks) model with canonical layer names.

        Args:
          seed: initialization seed (default: the run's seed).
          width_multiplier: overrides the model's width multiplier (small-dense networks).
        """
        cfg = self.config
        keras.utils.set_random_seed(cfg.seed if seed is None else seed)
        kwargs = dict(cfg.model_kwargs)
        if cfg.weight_decay:
            kwargs["weight_decay"] = cfg.weight_decay
        if width_multiplier is not None:
            kwargs["width_multiplier"] = width_multiplier
        base = models_lib.get_model(cfg.network, self.info.input_shape,
                                    self.info.num_classes, **kwargs)
        base = canonical_names(base)
        return rigl_tf.sparsify(base, 0.0, "uniform", keep_dense=list(cfg.keep_dense) or None,
                                init="dense", min_active=cfg.min_active)

    @property
    def model(self):
        """The run's model (built once per process, initialised with ``seed``)."""
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

    def _train_data(self, data_seed, start):
        cfg = self.config
        ds = datasets_lib.get_dataset(
            cfg.dataset, "train", cfg.batch_size, shuffle=True, seed=data_seed,
            data_dir=self.data_dir, repeat=True, drop_remainder=True,
            normalization=cfg.normalization, image_size=cfg.image_size)
        return ds.skip(start) if start else ds

    def _test_data(self):
        if self._test is None:
            cfg = self.config
            self._test = datasets_lib.get_dataset(
                cfg.dataset, "test", self.eval_batch_size, data_dir=self.data_dir,
                normalization=cfg.normalization, image_size=cfg.image_size)
        return self._test

    def train_subset(self) -> Tuple[np.ndarray, np.ndarray]:
        """The fixed training subset of the adaptive rule and the subset-loss metric."""
        if self._subset is None:
            cfg = self.config
            n = min(cfg.adaptive_examples, self.info.num_examples["train"])
            kwargs = {"normalization": cfg.normalization, "image_size": cfg.image_size}
            self._subset = datasets_lib.get_fixed_batch(
                cfg.dataset, "train", n, seed=self.data_seed, data_dir=self.data_dir,
                **{k: v for k, v in kwargs.items() if v is not None})
        return self._subset

    def _optimizer(self, constant_lr=None):
        cfg = self.config
        if constant_lr is not None:
            lr = constant_lr
        elif cfg.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, self.total_steps)
        else:
            lr = cfg.learning_rate
        if cfg.optimizer == "sgd":
            inner = keras.optimizers.SGD(lr)
        elif cfg.optimizer == "momentum":
            inner = keras.optimizers.SGD(lr, momentum=cfg.momentum)
        else:
            inner = keras.optimizers.Adam(lr)
        return rigl_tf.SparseOptimizer(inner, "static")

    def finetune_learning_rate(self) -> float:
        """The constant learning rate of rewinding 'none'."""
        cfg = self.config
        if cfg.finetune_learning_rate is not None:
            return cfg.finetune_learning_rate
        return cfg.learning_rate if cfg.lr_schedule == "constant" else 0.1 * cfg.learning_rate

    # ------------------------------------------------------------------ one training run
    def _apply_start(self, model, start: Start):
        missing = [p for p in self.weights_of(model) if p not in start.weights]
        if missing:
            raise ValueError(f"Start weights miss variables {missing}.")
        for v in model.weights:
            if v.path in start.weights:
                v.assign(start.weights[v.path])
        rigl_tf.set_masks(model, start.masks)

    def train(self, directory: str, start: Start, *, model=None, previous=(),
              capture_step: Optional[int] = None, record_last: int = 0,
              info: Optional[Dict] = None) -> Dict:
        """Trains from ``start`` and writes mask, start / solution weights and metrics.

        Args:
          directory: the level / branch directory (``metrics.json`` is written last).
          start: the starting point.
          model: the model to train (default: the run's model).
          previous: earlier optima (key -> array) for the repellent loss.
          capture_step: also save the weights after this step as ``rewind.weights.npz``.
          record_last: record this many per-batch training losses (the last ones).
          info: extra entries for ``metrics.json``.

        Returns:
          The metrics dict.
        """
        cfg = self.config
        model = model or self.model
        t0 = time.time()
        self._apply_start(model, start)
        layout.write_arrays(os.path.join(directory, layout.MASK), start.masks)
        layout.save_weights(model, os.path.join(directory, layout.START))
        train_model = model
        if cfg.repellent and previous:
            train_model = repellent_lib.RepellentModel(model, list(previous), cfg.repellent)
        opt = self._optimizer(start.constant_lr)
        opt.build(train_model.trainable_variables)
        opt.iterations.assign(start.start_step)
        train_model.compile(
            optimizer=opt,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), _BatchLoss()],
            jit_compile=False,
        )
        bounds = [start.start_step, start.end_step]
        if capture_step is not None and start.start_step < capture_step < start.end_step:
            bounds.insert(1, capture_step)
        if capture_step is not None and capture_step == start.start_step:
            layout.save_weights(model, os.path.join(directory, layout.REWIND))
        recorder = _LossRecorder(record_last) if record_last else None
        history = {}
        for a, b in zip(bounds[:-1], bounds[1:]):
            cbs = self.callbacks + ([recorder] if recorder else [])
            h = train_model.fit(self._train_data(start.data_seed, a), epochs=1,
                                steps_per_epoch=b - a, verbose=self.verbose, callbacks=cbs,
                                shuffle=False)
            history = {k: float(v[-1]) for k, v in h.history.items()}
            if b == capture_step:
                layout.save_weights(model, os.path.join(directory, layout.REWIND))
        if int(opt.iterations.numpy()) != start.end_step:
            raise RuntimeError(
                f"Training stopped at step {int(opt.iterations.numpy())}, expected "
                f"{start.end_step} (the training data ran out?)."
            )
        train_time = time.time() - t0
        test = train_model.evaluate(self._test_data(), verbose=0, return_dict=True)
        x, y = self.train_subset()
        report = rigl_tf.sparsity_report(model)
        total = report.total
        metrics = {
            "test_accuracy": float(test["accuracy"]),
            "test_loss": float(test["loss"]),
            "train_loss": history.get("loss"),
            "train_accuracy": history.get("accuracy"),
            "train_subset_loss": adaptive_lib.mean_loss(model, x, y),
            "density": total["active"] / total["size"],
            "sparsity": total["sparsity"],
            "active_weights": total["active"],
            "prunable_weights": total["size"],
            "kernel_params": models_lib.count_params(model) - (total["size"] - total["active"]),
            "start_step": start.start_step,
            "end_step": start.end_step,
            "steps": start.end_step - start.start_step,
            "train_time": train_time,
            "wall_time": time.time() - t0,
            "constant_lr": start.constant_lr,
            **start.info,
            **(info or {}),
            "sparsity_report": report.as_dict(),
        }
        if recorder is not None:
            metrics["last_epoch_losses"] = recorder.losses
            metrics["loss_std_last_epoch"] = adaptive_lib.loss_std(recorder.losses)
        layout.save_weights(model, os.path.join(directory, layout.SOLUTION))
        layout.write_json(os.path.join(directory, layout.METRICS), metrics)
        return metrics

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
            scope=cfg.scope, min_active=cfg.min_active, seed=cfg.seed, level=level)

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

    def run_level(self, level: int) -> Dict:
        """Runs one level (the previous level must be finished); returns its metrics."""
        _check_int("level", level, 0)
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

    def run(self, levels: int, target_sparsity: Optional[float] = None) -> List[Dict]:
        """Runs (or resumes) levels ``0 .. levels``; finished levels are skipped.

        Args:
          levels: the last level ``L_max`` (>= 0).
          target_sparsity: stop after the first level whose sparsity reaches it.

        Returns:
          The metrics of every level run or found, in order.
        """
        _check_int("levels", levels, 0)
        if target_sparsity is not None:
            importance_lib.check_fraction(target_sparsity, "target_sparsity")
        out = []
        for level in range(levels + 1):
            skipped = self.is_finished(level)
            metrics = self.run_level(level)
            out.append(metrics)
            if not skipped:
                self.write_summary()
            if target_sparsity is not None and metrics["sparsity"] >= target_sparsity - 1e-9:
                break
        return out

    # ------------------------------------------------------------------ one-shot pruning
    def run_oneshot(self, sparsity: float) -> Dict:
        """One-shot magnitude pruning (OMP): prune the dense solution once to ``sparsity``.

        Uses level 0 (run first if needed), the run's importance measure, scope and
        rewinding mode, and trains like an IMP level; results go to ``omp_s<sparsity>/``.
        """
        sparsity = _check_float("sparsity", sparsity, 0.0, 1.0, low_open=True, high_open=True)
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
    def run_branch(self, level: int, name: str, seed: int = 1) -> Dict:
        """Runs a branch from a finished level (see :mod:`rigl_tf.lottery.branches`)."""
        from rigl_tf.lottery import branches

        return branches.run_branch(self, level, name, seed)

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


__all__ = ["IMPConfig", "IMPRun", "LR_SCHEDULES", "OPTIMIZERS", "REWINDINGS", "Start",
           "canonical_names", "format_summary"]
