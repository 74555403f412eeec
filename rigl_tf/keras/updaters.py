"""Mask updaters: the algorithms that change sparse topology during training.

An updater decides *when* masks change (a schedule) and *what* the new masks are (scores).
It never assigns variables itself: :class:`rigl_tf.SparseOptimizer` calls
``compute_masks`` in cross-replica context with all-reduced gradients and applies the
result in one shared routine (new masks, zero weights at newly grown connections, reset
optimizer slots), so every algorithm gets exact counts and identical replicas for free.

A new dynamic-sparse-training algorithm is a drop score and a grow score::

    @register_updater("my_alg")
    class MyAlg(DropGrowUpdater):
        def grow_score(self, ctx):
            return tf.abs(ctx.grad) * tf.abs(ctx.weight)

Registered names: ``static``, ``set``, ``rigl``, ``rigl_inverted``, ``snfs``,
``magnitude``, ``random`` (see :func:`list_updaters`).
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from rigl_tf.sparsity import distributions as dist_lib
from rigl_tf.sparsity import masks as masks_lib
from rigl_tf.sparsity import patterns as patterns_lib
from rigl_tf.sparsity.schedules import (
    DropFractionSchedule,
    PruningSchedule,
    UpdateSchedule,
    check_fraction,
)

_UPDATERS: Dict[str, type] = {}


def register_updater(name):
    """Class decorator registering an updater under ``name``."""

    def deco(cls):
        cls.name = name
        _UPDATERS[name] = cls
        return cls

    return deco


def list_updaters() -> List[str]:
    """Names of the registered updaters."""
    return sorted(_UPDATERS)


def get_updater(name, **kwargs):
    """Builds a registered updater by name.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).
    """
    if isinstance(name, Updater):
        return name
    if name not in _UPDATERS:
        raise ValueError(
            f"Unknown updater `update_alg` {name!r}; known updaters: "
            f"{', '.join(list_updaters())}."
        )
    return _UPDATERS[name](**kwargs)


def deserialize_updater(config):
    """Inverse of ``updater.get_config()`` (which stores the registered name)."""
    config = dict(config)
    return get_updater(config.pop("name"), **config)


@dataclasses.dataclass
class MaskedVar:
    """Everything an updater may need about one masked weight (built by the optimizer)."""

    index: int  # position among the masked weights (stable RNG stream id)
    key: str  # the variable's path
    var: object  # keras Variable
    mask: object  # keras Variable
    shape: tuple
    size: int
    pattern: object = patterns_lib.UNSTRUCTURED  # structured-sparsity constraint
    in_axis: int = -2  # axes the pattern groups along
    out_axis: int = -1


@dataclasses.dataclass
class ScoreContext:
    """Inputs to a score function for one weight at one update (all float32 tensors)."""

    step: tf.Tensor
    index: int
    weight: tf.Tensor
    mask: tf.Tensor
    grad: Optional[tf.Tensor]
    state: Optional[tf.Tensor]  # the updater's per-weight state (e.g. SNFS momentum)
    seed: int


class Updater:
    """Base class. Subclasses implement ``should_update`` and ``compute_masks``.

    Attributes:
      needs_gradients: whether ``compute_masks`` uses the (all-reduced) dense gradients.
      regrows: whether the updater may activate inactive connections (then the inner
        optimizer's slots must be resettable).
      needs_state: whether the updater keeps a per-weight state variable updated every
        step from the dense gradient (``observe``).
    """

    name = None
    needs_gradients = False
    regrows = False
    needs_state = False

    def __init__(self, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an integer, got {seed!r}.")
        self.seed = int(seed)

    def build(self, items: List[MaskedVar]):
        """Called once by the optimizer with the masked weights (in a fixed order)."""
        self.items = items

    #: The event step of an update made right after the optimizer step that starts at
    #: ``iterations = i`` is ``i + event_offset``; an update made at the first step, before
    #: its weight update, has event step ``event_offset - 1``. 1 for DST (the reference
    #: loop's ``is_update_iter(optimizer.iterations)`` after ``apply_gradients``); 2 for
    #: pruning (tfmot increments ``pruning_step`` before pruning in the forward pass, so
    #: its step ``t`` prunes the weights after ``t - 1`` updates, for batch ``t - 1`` on).
    event_offset = 1

    def should_update(self, step) -> tf.Tensor:
        """Boolean tensor: whether masks change at event step ``step`` (see
        ``event_offset`` and ``rigl_tf.sparsity.schedules``)."""
        raise NotImplementedError

    def compute_masks(self, step, weights, masks, grads, states, lr_info=None):
        """Returns the new masks (list of float32 tensors with exact counts)."""
        raise NotImplementedError

    def observe(self, state, grad):
        """Per-step state update from the dense gradient (default: none)."""
        return state

    def grow_values(self, step, item, new_mask):
        """Values for newly grown weights; None means zeros."""
        return None

    def drop_fraction(self, step, lr_info=None):
        """The fraction of active weights changed at ``step`` (0 for pruning)."""
        return tf.constant(0.0)

    def get_config(self):
        return {"name": self.name, "seed": self.seed}


@register_updater("static")
class Static(Updater):
    """A fixed mask (the 'scratch' and lottery-ticket runs): never updates."""

    def should_update(self, step):
        return tf.constant(False)

    def compute_masks(self, step, weights, masks, grads, states, lr_info=None):
        return list(masks)


GROW_INITS = ("zeros", "unit_scaled")


class DropGrowUpdater(Updater):
    """Dynamic sparse training: drop the lowest ``drop_score``, grow the highest
    ``grow_score`` among inactive connections, keeping every layer's count exact.

    Args:
      update_freq: steps between updates; masks change after updates ``update_freq``,
        ``2 * update_freq``, ... (the reference's steps).
      start_step: first update step (default: ``update_freq``).
      end_step: last update step (``last_update_step``): < 0 never stops, 0 disables.
      init_drop_fraction: the drop fraction ``f0``.
      schedule_alg: 'lr' (default, as in the reference: ``f0 * lr(t) / peak lr``, the
        learning rate read at the update step ``t`` and the peak including warm-up),
        'cosine' (``f0 / 2 * (1 + cos(pi * t / end_step))``; needs ``end_step`` > 0) or
        'constant'.
      grow_init: value of newly grown weights: 'zeros' (default, as in RigL) or
        'unit_scaled' (drawn like ``unit_scaled`` init's default: uniform with variance
        1 / the average of the sparse fan-in and fan-out under the new mask, stateless).
      regrow_dropped: whether a connection dropped in an update may be regrown in the same
        update (True in the original RigL/SET; it then keeps its value).
      seed: seed of the stateless randomness (SET growth), keyed by (seed, step, layer).
    """

    regrows = True
    regrow_dropped_default = True

    def __init__(self, update_freq=100, start_step=None, end_step=-1, init_drop_fraction=0.3,
                 schedule_alg="lr", regrow_dropped=None, grow_init="zeros", seed=0):
        super().__init__(seed)
        if grow_init not in GROW_INITS:
            raise ValueError(
                f"Unknown `grow_init` {grow_init!r}; known: {', '.join(GROW_INITS)}."
            )
        self.grow_init = grow_init
        self.schedule = UpdateSchedule(update_freq, start_step, end_step)
        self.fraction = DropFractionSchedule(
            schedule_alg, init_drop_fraction, self.schedule.start_step,
            self.schedule.end_step,
        )
        self.regrow_dropped = (
            self.regrow_dropped_default if regrow_dropped is None else bool(regrow_dropped)
        )

    def should_update(self, step):
        return self.schedule.is_update_step(step)

    def grow_values(self, step, item, new_mask):
        """Initial values of newly grown weights (only read where they were grown)."""
        if self.grow_init == "zeros":
            return None
        from rigl_tf.sparsity import init as init_lib
        from rigl_tf.keras.wrapper import get_unit_axes

        in_axes, out_axes = get_unit_axes(item.var)
        seed = masks_lib.stateless_seed(self.seed, step, 20_000 + item.index)
        fan_in, fan_out = init_lib.sparse_fans(new_mask, in_axes, out_axes)
        # U(-a, a) with a^2 / 3 = 1 / fan_avg (Glorot; paper Appendix A.2).
        limit = tf.sqrt(tf.math.divide_no_nan(6.0, fan_in + fan_out))
        noise = tf.random.stateless_uniform(tf.shape(new_mask), seed=seed, minval=-1.0,
                                            maxval=1.0)
        return noise * limit

    def drop_fraction(self, step, lr_info=None):
        lr, peak = lr_info if lr_info is not None else (None, None)
        return self.fraction(step, lr, peak)

    def drop_score(self, ctx: ScoreContext):
        """Higher = more important to keep. Default: weight magnitude."""
        return tf.abs(ctx.weight)

    def grow_score(self, ctx: ScoreContext):
        """Higher = grown first. Subclasses override."""
        raise NotImplementedError

    def compute_masks(self, step, weights, masks, grads, states, lr_info=None):
        fraction = self.drop_fraction(step, lr_info)
        new_masks = []
        for item, w, m, g, s in zip(self.items, weights, masks, grads, states):
            ctx = ScoreContext(step, item.index, w, m, g, s, self.seed)
            drop_score = tf.cast(self.drop_score(ctx), tf.float32)
            grow_score = tf.cast(self.grow_score(ctx), tf.float32)
            pattern = item.pattern
            if pattern.kind == "block":
                # Run the same algorithm on the block grid (scores summed per block).
                ax = (item.in_axis, item.out_axis)
                mb = tf.cast(pattern.pool(m, *ax) > 0, tf.float32)
                keep, grow = self._drop_grow(
                    mb, pattern.pool(drop_score, *ax), pattern.pool(grow_score, *ax), fraction)
                new_masks.append(pattern.unpool(keep + grow, item.shape, *ax))
            elif pattern.kind == "nm":
                keep, _ = self._drop_grow(m, drop_score, None, fraction)
                per_group = tf.cast(
                    tf.round(tf.reduce_sum(m) * pattern.m / float(item.size)), tf.int32)
                if not self.regrow_dropped:  # just-dropped rank below never-active ones
                    grow_score = tf.where(m > 0, tf.constant(-3.0e38, tf.float32), grow_score)
                grow = pattern.complete(keep, grow_score, per_group, item.in_axis)
                new_masks.append(keep + grow)
            else:
                keep, grow = self._drop_grow(m, drop_score, grow_score, fraction)
                new_masks.append(keep + grow)
        return new_masks

    def _drop_grow(self, m, drop_score, grow_score, fraction):
        """Unstructured exact drop-and-grow; returns (kept, grown) masks."""
        n_active = tf.cast(tf.reduce_sum(m), tf.int32)
        n_drop = tf.cast(tf.floor(fraction * tf.cast(n_active, tf.float32)), tf.int32)
        neg_inf = tf.constant(-np.inf, tf.float32)
        keep = masks_lib.topk_mask(tf.where(m > 0, drop_score, neg_inf), n_active - n_drop)
        if grow_score is None:
            return keep, None
        return keep, self._grow(m, keep, grow_score, n_drop)

    def _grow(self, m, keep, grow_score, n_grow):
        """The ``n_grow`` inactive connections with the highest grow score."""
        neg_inf = tf.constant(-np.inf, tf.float32)
        if self.regrow_dropped:
            candidates = tf.where(keep > 0, neg_inf, grow_score)
        else:
            # Just-dropped connections rank below every never-active one but stay
            # selectable, so a nearly dense layer still gets exactly n_drop grown.
            lowest = tf.constant(-3.0e38, tf.float32)
            candidates = tf.where(keep > 0, neg_inf, tf.where(m > 0, lowest, grow_score))
        return masks_lib.topk_mask(candidates, n_grow)

    def get_config(self):
        return {
            "name": self.name,
            "seed": self.seed,
            "update_freq": self.schedule.update_freq,
            "start_step": self.schedule.start_step,
            "end_step": self.schedule.end_step,
            "init_drop_fraction": self.fraction.init_drop_fraction,
            "schedule_alg": self.fraction.schedule,
            "regrow_dropped": self.regrow_dropped,
            "grow_init": self.grow_init,
        }


@register_updater("set")
class SET(DropGrowUpdater):
    """SET (Mocanu et al. 2018): drop smallest magnitudes, grow uniformly at random."""

    def grow_score(self, ctx):
        return masks_lib.random_scores(tf.shape(ctx.weight), self.seed, ctx.step, ctx.index)


@register_updater("rigl")
class RigL(DropGrowUpdater):
    """RigL (Evci et al. 2020): drop smallest magnitudes, grow largest |dense gradient|."""

    needs_gradients = True

    def grow_score(self, ctx):
        return tf.abs(ctx.grad)


@register_updater("rigl_inverted")
class RigLInverted(DropGrowUpdater):
    """The gradient-flow paper's control: grow the *smallest* |dense gradient|."""

    needs_gradients = True

    def grow_score(self, ctx):
        return -tf.abs(ctx.grad)


@register_updater("snfs")
class SNFS(DropGrowUpdater):
    """Sparse momentum (Dettmers & Zettlemoyer 2019, "Sparse Networks from Scratch").

    Keeps an exponential moving average ``v = momentum * v + (1 - momentum) * g`` of the
    dense gradient of every weight, active or not. At an update each layer drops the
    ``floor(f * n_active)`` smallest-magnitude active weights (``f``: the drop fraction);
    with ``redistribute`` (the paper's method) the ``K`` dropped weights of all layers are
    then regrown in proportion to each layer's mean ``|v|`` over its active weights
    (``K * M_l / sum M``, apportioned exactly: largest remainders, and a layer that would
    exceed its size is filled and the rest re-split), inside a layer at the largest
    ``|v|``. The total number of active weights is exact; per-layer counts move. Without
    ``redistribute`` every layer regrows what it dropped.

    Args:
      momentum: the moving average coefficient (0.9 by default).
      redistribute: move the budget across layers by momentum (True, the paper's method).
      **kwargs: see :class:`DropGrowUpdater`.
    """

    needs_gradients = True
    needs_state = True

    def __init__(self, momentum=0.9, redistribute=True, **kwargs):
        super().__init__(**kwargs)
        self.momentum = check_fraction(momentum, "momentum", high_open=True)
        if not isinstance(redistribute, (bool, np.bool_)):
            raise ValueError(f"`redistribute` must be True or False, got {redistribute!r}.")
        self.redistribute = bool(redistribute)

    def build(self, items):
        super().build(items)
        structured = [it.key for it in items if it.pattern.kind != "unstructured"]
        if self.redistribute and structured:
            raise ValueError(
                f"SNFS `redistribute`=True moves weights between layers and needs "
                f"unstructured masks, but {structured} have structured patterns; pass "
                f"redistribute=False."
            )

    def observe(self, state, grad):
        return self.momentum * state + (1.0 - self.momentum) * grad

    def grow_score(self, ctx):
        return tf.abs(ctx.state)

    def compute_masks(self, step, weights, masks, grads, states, lr_info=None):
        if not self.redistribute:
            return super().compute_masks(step, weights, masks, grads, states, lr_info)
        fraction = self.drop_fraction(step, lr_info)
        neg_inf = tf.constant(-np.inf, tf.float32)
        keeps, drops, caps, means, grow_scores = [], [], [], [], []
        for item, w, m, g, s in zip(self.items, weights, masks, grads, states):
            ctx = ScoreContext(step, item.index, w, m, g, s, self.seed)
            n_active = tf.cast(tf.reduce_sum(m), tf.int32)
            n_drop = tf.cast(tf.floor(fraction * tf.cast(n_active, tf.float32)), tf.int32)
            drop_score = tf.cast(self.drop_score(ctx), tf.float32)
            keeps.append(masks_lib.topk_mask(tf.where(m > 0, drop_score, neg_inf),
                                             n_active - n_drop))
            drops.append(n_drop)
            caps.append(item.size - (n_active - n_drop))
            magnitude = tf.abs(tf.cast(s, tf.float32))
            means.append(tf.math.divide_no_nan(tf.reduce_sum(magnitude * m), tf.reduce_sum(m)))
            grow_scores.append(tf.cast(self.grow_score(ctx), tf.float32))
        counts = masks_lib.apportion(tf.stack(means), tf.add_n(drops), tf.stack(caps))
        return [keep + self._grow(m, keep, score, counts[i])
                for i, (keep, m, score) in enumerate(zip(keeps, masks, grow_scores))]

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "redistribute": self.redistribute}


SCOPES = ("layerwise", "global")


@register_updater("magnitude")
class MagnitudePruning(Updater):
    """Gradual magnitude pruning (Zhu & Gupta 2017), constant or one-shot, per layer or
    global. Pruning only removes connections: a pruned weight never comes back.

    Args:
      schedule: 'polynomial', 'constant' or 'oneshot' (see ``PruningSchedule``).
      initial_sparsity, final_sparsity, begin_step, end_step, frequency, power: the
        schedule's parameters.
      scope: 'layerwise' (each weight reaches its own target) or 'global' (one magnitude
        threshold across all masked weights).
      distribution: per-layer final sparsities for the layerwise scope ('uniform', 'erk',
        'er'); ignored for 'global'.
      custom_sparsity: per-key final sparsity overrides (layerwise scope).
      min_active: minimum active weights per layer.
      seed: seed (used by random pruning).
    """

    def __init__(self, schedule="polynomial", initial_sparsity=0.0, final_sparsity=0.9,
                 begin_step=0, end_step=-1, frequency=100, power=3, scope="layerwise",
                 distribution="uniform", custom_sparsity=None, min_active=1, seed=0):
        super().__init__(seed)
        self.schedule = PruningSchedule(schedule, initial_sparsity, final_sparsity,
                                        begin_step, end_step, frequency, power)
        if scope not in SCOPES:
            raise ValueError(f"Unknown pruning `scope` {scope!r}; known scopes: {', '.join(SCOPES)}.")
        if distribution not in ("uniform", "er", "erk"):
            raise ValueError(
                f"Unknown pruning `distribution` {distribution!r}; known: uniform, er, erk."
            )
        self.scope = scope
        self.distribution = distribution
        self.custom_sparsity = dict(custom_sparsity or {})
        self.min_active = int(min_active)

    def build(self, items):
        super().build(items)
        shapes = {it.key: it.shape for it in items}
        unknown = sorted(set(self.custom_sparsity) - set(shapes))
        if unknown:
            raise ValueError(
                f"`custom_sparsity` names {unknown}, which are not masked weights; masked "
                f"weights are {list(shapes)}."
            )
        densities = dist_lib.get_densities(
            shapes, self.schedule.final_sparsity, self.distribution, self.custom_sparsity
        )
        structured = [it.key for it in items if it.pattern.kind != "unstructured"]
        if structured and self.scope == "global":
            raise ValueError(
                f"Pruning `scope` 'global' cannot be combined with structured patterns "
                f"(weights {structured}); use scope='layerwise'."
            )
        self.final_sparsities = [
            1.0 - patterns_lib.pattern_density(it.pattern, densities[it.key]) for it in items
        ]

    event_offset = 2  # tfmot's pruning_step: see Updater.event_offset

    def should_update(self, step):
        return self.schedule.is_prune_step(step)

    def score(self, step, item, weight):
        """Higher = kept. Magnitude by default."""
        return tf.abs(weight)

    def _count(self, density, size, n_active):
        k = tf.cast(tf.round(density * float(size)), tf.int32)
        k = tf.maximum(k, min(self.min_active, size))
        return tf.minimum(k, n_active)  # pruning never regrows

    def compute_masks(self, step, weights, masks, grads, states, lr_info=None):
        neg_inf = tf.constant(-np.inf, tf.float32)
        scores = [
            tf.where(m > 0, tf.cast(self.score(step, it, w), tf.float32), neg_inf)
            for it, w, m in zip(self.items, weights, masks)
        ]
        if self.scope == "global":
            total = sum(it.size for it in self.items)
            n_active = tf.cast(tf.add_n([tf.reduce_sum(m) for m in masks]), tf.int32)
            density = 1.0 - self.schedule.sparsity(step)
            k = self._count(density, total, n_active)
            return masks_lib.global_topk_masks(scores, k)
        out = []
        for it, m, s, final in zip(self.items, masks, scores, self.final_sparsities):
            density = 1.0 - self.schedule.sparsity(step, final)
            n_active = tf.cast(tf.reduce_sum(m), tf.int32)
            pattern = it.pattern
            if pattern.kind == "nm":  # N' per group, from M down to the pattern's N
                per_group = tf.clip_by_value(
                    tf.cast(tf.round(density * pattern.m), tf.int32), pattern.n, pattern.m)
                k = tf.minimum(per_group * (it.size // pattern.m), n_active)
                out.append(pattern.select(s, k, it.in_axis, it.out_axis))
            elif pattern.kind == "block":
                block = pattern.rows * pattern.cols
                kb = self._count(density, it.size // block, n_active // block)
                pooled = pattern.pool(tf.where(m > 0, tf.abs(s), 0.0), it.in_axis, it.out_axis)
                pooled = tf.where(pattern.pool(m, it.in_axis, it.out_axis) > 0, pooled,
                                  neg_inf)
                out.append(pattern.unpool(masks_lib.topk_mask(pooled, kb), it.shape,
                                          it.in_axis, it.out_axis))
            else:
                out.append(masks_lib.topk_mask(s, self._count(density, it.size, n_active)))
        return out

    def get_config(self):
        cfg = self.schedule.get_config()
        cfg.update(
            name=self.name,
            seed=self.seed,
            scope=self.scope,
            distribution=self.distribution,
            custom_sparsity=self.custom_sparsity,
            min_active=self.min_active,
        )
        return cfg


@register_updater("random")
class RandomPruning(MagnitudePruning):
    """Random pruning with the same schedules and scopes as magnitude pruning."""

    def score(self, step, item, weight):
        return masks_lib.random_scores(tf.shape(weight), self.seed, step, item.index)


def peak_learning_rate(learning_rate) -> float:
    """The largest value a learning rate takes (the 'lr' drop-fraction normaliser).

    Known Keras schedules are read from their parameters, so a linear warm-up from 0 has
    its peak at the warm-up target, not ``lr(0) = 0``. Any schedule may declare its own
    ``peak_learning_rate`` attribute; other schedules fall back to ``lr(0)`` (the
    reference's normaliser). Call it eagerly (Python floats).

    Args:
      learning_rate: a number, a variable, or a Keras ``LearningRateSchedule``.

    Returns:
      The peak as a Python float.
    """
    import keras

    S = keras.optimizers.schedules
    lr = learning_rate
    if hasattr(lr, "peak_learning_rate"):
        peak = lr.peak_learning_rate
        return float(peak() if callable(peak) else peak)
    if isinstance(lr, S.CosineDecay):
        peak = float(lr.initial_learning_rate)
        target = getattr(lr, "warmup_target", None)
        if target is not None and getattr(lr, "warmup_steps", 0):
            peak = max(peak, float(target))
        return peak
    if isinstance(lr, S.PiecewiseConstantDecay):
        return max(float(v) for v in lr.values)
    if isinstance(lr, S.PolynomialDecay):
        return max(float(lr.initial_learning_rate), float(lr.end_learning_rate))
    if isinstance(lr, (S.ExponentialDecay, S.InverseTimeDecay, S.CosineDecayRestarts)):
        if isinstance(lr, S.ExponentialDecay) and float(lr.decay_rate) > 1.0:
            raise ValueError(
                f"ExponentialDecay with decay_rate {lr.decay_rate} > 1 grows without a peak; "
                f"the 'lr' drop-fraction schedule needs a peak learning rate."
            )
        return float(lr.initial_learning_rate)
    if isinstance(lr, S.LearningRateSchedule):
        return float(lr(0))
    if callable(lr) and not hasattr(lr, "assign"):
        return float(lr())
    return float(keras.ops.convert_to_numpy(lr))


def describe_lr(optimizer, step, peak):
    """Returns (learning rate at ``step``, ``peak``) as float32 tensors ('lr' schedules).

    Args:
      optimizer: the Keras optimizer whose ``learning_rate`` drives the schedule.
      step: the update step ``t`` (the schedule is read there, as in the reference).
      peak: the peak learning rate (:func:`peak_learning_rate`).
    """
    import keras

    schedule = optimizer._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        lr = schedule(step)
    elif callable(schedule) and not hasattr(schedule, "assign"):
        lr = schedule()
    else:
        lr = tf.convert_to_tensor(optimizer.learning_rate)
    return tf.cast(lr, tf.float32), tf.constant(float(peak), tf.float32)


__all__ = [
    "Updater",
    "DropGrowUpdater",
    "Static",
    "SET",
    "RigL",
    "RigLInverted",
    "SNFS",
    "MagnitudePruning",
    "RandomPruning",
    "register_updater",
    "get_updater",
    "list_updaters",
]
