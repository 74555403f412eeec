"""SparseOptimizer: wraps any Keras 3 optimizer and keeps a sparse model sparse.

Each step, inside ``model.fit``'s compiled train step (or a user's ``tf.function``):

1. at ``rewind_step``, snapshot every trainable variable (before the weight update);
2. mask the gradients of masked weights, so the inner optimizer's slots never accumulate
   at inactive positions, and run the inner optimizer's step;
3. if the updater says so, compute new masks from the all-reduced dense gradients and
   apply them: exact counts, zero weights at newly grown connections, optimizer slots
   reset wherever a connection is not kept;
4. re-apply masks to the weights (exact zeros whatever the inner optimizer did) -- when
   the inner optimizer *keeps zeros* (see :func:`keeps_zeros`) only once, eagerly, when
   the step is traced (in eager mode: at step 0), so the compiled step has no extra op.

Why step 4 can be skipped: a masked weight is zero, its gradient is masked to zero and
its slots are zero (reset when the connection was dropped), and the built-in Keras
optimizers map (weight, gradient, slots) = (0, 0, 0) to exactly 0 (momentum, Adam-type
moments, weight decay ``w - w * wd * lr``, RMSprop, Adagrad, Ftrl, Lion's ``sign(0)``,
Lamb). So after step 2 masked weights are still exact zeros, and step 3 writes weights
only as ``w * keep`` (+ values at grown positions). Step 4 is a full extra pass over every
masked weight, which on small models is several percent of a training step. Inner
optimizers outside that list, subclasses (which may override ``update_step``), EMA and
gradient accumulation keep step 4 on every step. Masks set from outside the step
(``rigl_tf.set_masks``, ``rigl_tf.apply_masks``) also reset the slots of every built
``SparseOptimizer`` at the now inactive positions, so the invariant still holds; step
4 at tracing covers weights assigned before training (the first ``fit`` traces its step
after they were assigned).

Steps 1, 3 and 4 run in cross-replica context (``merge_call``), so under
``tf.distribute`` every replica ends with identical masks, weights and slots. Without a
strategy, the conds of steps 1 and 3 stay single ``If`` nodes that call the taken branch
(not lowered to switch/merge nodes, which every step would run for each input), so an
ordinary step pays for the predicate and one node.

The only clock is ``optimizer.iterations`` (the inner optimizer's).

Custom training loop::

    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                  rigl_tf.updaters.RigL(update_freq=100))
    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
"""

from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf
from keras.src.saving import serialization_lib
from tensorflow.core.framework import attr_value_pb2

from rigl_tf.keras import updaters as updaters_lib
from rigl_tf.keras.built import _BUILT, masks_changed  # noqa: F401 (masks_changed: public)
from rigl_tf.keras.wrapper import get_key, get_mask, get_pattern, pattern_axes
from rigl_tf.sparsity import masks as masks_lib

_SUM = tf.distribute.ReduceOp.SUM

# Optimizer state that must be reset where a connection is (re)activated or dropped:
# (attribute holding a list of per-variable slots, reset value or name of the attribute
# holding it). Looked up along the inner optimizer's MRO.
_SLOTS: Dict[type, list] = {}
# Optimizer classes (exact types) whose update leaves a weight exactly zero where the
# weight, its gradient and its slots are zero; see keeps_zeros().
_KEEPS_ZEROS = set()


def register_optimizer_slots(optimizer_class, slots, keeps_zeros=False):
    """Declares how to reset the per-variable state of an optimizer class.

    Args:
      optimizer_class: a ``keras.optimizers.Optimizer`` subclass.
      slots: list of ``(attribute, reset)``: ``attribute`` holds a list of per-variable
        slot variables (indexed like the optimizer's variables); ``reset`` is the value a
        fresh slot has (a number, or the name of an optimizer attribute holding it).
      keeps_zeros: True only if the class's update maps a weight, gradient and slots that
        are all zero (slots at their reset values) to a weight of exactly zero, so
        ``SparseOptimizer`` need not re-apply masks after every step. Applies to this
        exact class, not its subclasses.
    """
    _SLOTS[optimizer_class] = list(slots)
    if keeps_zeros:
        _KEEPS_ZEROS.add(optimizer_class)
    else:
        _KEEPS_ZEROS.discard(optimizer_class)


_O = keras.optimizers
register_optimizer_slots(_O.SGD, [("momentums", 0.0)])
register_optimizer_slots(
    _O.Adam, [("_momentums", 0.0), ("_velocities", 0.0), ("_velocity_hats", 0.0)]
)
register_optimizer_slots(
    _O.RMSprop, [("_velocities", 0.0), ("_momentums", 0.0), ("_average_gradients", 0.0)]
)
register_optimizer_slots(_O.Adagrad, [("_accumulators", "initial_accumulator_value")])
register_optimizer_slots(_O.Nadam, [("_momentums", 0.0), ("_velocities", 0.0)])
register_optimizer_slots(_O.Adamax, [("_m", 0.0), ("_u", 0.0)])
register_optimizer_slots(_O.Lion, [("_momentums", 0.0)])
register_optimizer_slots(
    _O.Adadelta, [("_accumulated_grads", 0.0), ("_accumulated_delta_vars", 0.0)]
)
register_optimizer_slots(
    _O.Ftrl, [("_accumulators", "initial_accumulator_value"), ("_linears", 0.0)]
)
register_optimizer_slots(_O.Lamb, [("_momentums", 0.0), ("_velocities", 0.0)])
# Checked against each class's update_step (Keras 3.15): with w = g = 0 and slots at their
# reset values every update term is a product with g, w or a zero slot, or sign(0) (Lion),
# or (clip(0) - 0) / q (Ftrl). AdamW's decoupled decay is w - w * wd * lr. Tested by
# tests/test_optimizer_fastpath.py for each class.
_KEEPS_ZEROS.update({_O.SGD, _O.Adam, _O.AdamW, _O.RMSprop, _O.Adagrad, _O.Nadam, _O.Adamax,
                     _O.Lion, _O.Adadelta, _O.Ftrl, _O.Lamb})


def _base_optimizer(optimizer):
    while isinstance(optimizer, _O.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def slot_spec(optimizer):
    """The registered slot spec of an optimizer (via its MRO), or None if unknown."""
    for cls in type(_base_optimizer(optimizer)).__mro__:
        if cls in _SLOTS:
            return _SLOTS[cls]
    return None


def keeps_zeros(optimizer) -> bool:
    """Whether ``optimizer``'s step leaves weights that are zero, with zero gradients and
    zero slots, exactly zero (so masks need not be re-applied after every step).

    True for the exact classes declared with ``register_optimizer_slots(...,
    keeps_zeros=True)`` (all built-in Keras optimizers), also inside a
    ``LossScaleOptimizer``; False with ``use_ema`` (the moving average overwrites weights)
    or ``gradient_accumulation_steps`` (accumulators are state that is never reset).
    """
    base = _base_optimizer(optimizer)
    return (type(base) in _KEEPS_ZEROS and not getattr(base, "use_ema", False)
            and not getattr(base, "gradient_accumulation_steps", None))


def _tf_var(v):
    return v.value if isinstance(v, keras.Variable) else v


class WrappingOptimizer(keras.optimizers.Optimizer):
    """Base of optimizers that wrap another, built like Keras's ``LossScaleOptimizer``.

    Owns few variables of its own; forwards ``iterations`` and ``learning_rate`` to
    ``inner_optimizer``, builds it, and serialises it in a symmetric
    ``get_config``/``from_config``. Subclasses implement ``apply``.
    """

    def __init__(self, inner_optimizer, name=None):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"`inner_optimizer` must be a Keras 3 optimizer, got "
                f"{type(inner_optimizer).__name__}."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def _prepare_apply(self, grads, trainable_variables):
        """Lists the arguments of ``apply`` and builds on first use."""
        grads = list(grads)
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        return grads, trainable_variables

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": serialization_lib.serialize_keras_object(self.inner_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = serialization_lib.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


@keras.saving.register_keras_serializable(package="rigl_tf")
class SparseOptimizer(WrappingOptimizer):
    """Optimizer wrapper that masks gradients, runs an updater and captures rewind points.

    Args:
      inner_optimizer: any Keras 3 optimizer (SGD with or without (Nesterov) momentum,
        Adam, AdamW, RMSprop, ... ). Its ``iterations`` is the only step counter.
      updater: a ``rigl_tf.updaters.Updater`` or a registered name ('static', 'set',
        'rigl', 'rigl_inverted', 'snfs', 'magnitude', 'random'); default 'static'.
      rewind_step: if set (>= 0), the trainable weights after that many steps are saved in
        checkpointed variables; :meth:`rewind` restores them under the current masks.
      gradient_fn: optional function returning the dense gradients (one per masked weight,
        in ``masked_items`` order) that gradient-based updaters score instead of the
        current batch's, e.g. ``heldout_gradient_fn(model, x, y)`` for a held-out batch.
        Runtime-only: not serialised.
      name: optimizer name.

    Raises:
      TypeError: if ``inner_optimizer`` is not a Keras 3 optimizer.
      ValueError: for an unknown updater, a bad ``rewind_step``, or a DST updater with an
        inner optimizer whose state cannot be reset at regrown connections.
    """

    def __init__(self, inner_optimizer, updater="static", rewind_step=None, gradient_fn=None,
                 name=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"SparseOptimizer does not accept {sorted(kwargs)}; set those on the "
                f"inner optimizer."
            )
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"`inner_optimizer` must be a Keras 3 optimizer, got "
                f"{type(inner_optimizer).__name__}."
            )
        if isinstance(inner_optimizer, SparseOptimizer):
            raise TypeError("`inner_optimizer` is already a SparseOptimizer.")
        updater = updaters_lib.get_updater(updater)
        if updater.regrows and slot_spec(inner_optimizer) is None:
            known = sorted(c.__name__ for c in _SLOTS)
            raise ValueError(
                f"`inner_optimizer` {type(inner_optimizer).__name__} has optimizer state "
                f"that rigl_tf does not know how to reset at regrown connections (needed by "
                f"updater {updater.name!r}). Supported: {', '.join(known)}; declare others "
                f"with rigl_tf.register_optimizer_slots."
            )
        if rewind_step is not None and (
            isinstance(rewind_step, bool) or not isinstance(rewind_step, (int, np.integer))
            or rewind_step < 0
        ):
            raise ValueError(f"`rewind_step` must be None or an integer >= 0, got {rewind_step!r}.")
        super().__init__(inner_optimizer, name=name or "sparse_optimizer")
        self._updater = _Untracked(updater)
        self.rewind_step = None if rewind_step is None else int(rewind_step)
        if gradient_fn is not None and not callable(gradient_fn):
            raise TypeError(f"`gradient_fn` must be callable, got {type(gradient_fn).__name__}.")
        self._gradient_fn = _Untracked(gradient_fn)
        self._items = _Untracked([])
        self._first_event = _Untracked(None)

    # ------------------------------------------------------------------ properties
    @property
    def updater(self) -> updaters_lib.Updater:
        """The mask updater (not tracked: it holds no variables of its own)."""
        return self._updater.value

    @property
    def masked_items(self) -> List[updaters_lib.MaskedVar]:
        return self._items.value

    # ------------------------------------------------------------------ build
    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        items = []
        for v in var_list:
            mask = get_mask(v)
            if mask is not None:
                shape = tuple(int(d) for d in v.shape)
                in_axis, out_axis = pattern_axes(v)
                items.append(updaters_lib.MaskedVar(
                    len(items), get_key(v), v, mask, shape, int(np.prod(shape)),
                    get_pattern(v), in_axis, out_axis))
        if not items:
            raise ValueError(
                "SparseOptimizer found no masked weights among the trainable variables; "
                "the model has no SparseWrapper layers (call rigl_tf.sparsify first)."
            )
        self._items = _Untracked(items)
        self._peak_lr = _Untracked(self._find_peak_lr(self.updater))
        self._first_event = _Untracked(self._first_step_event(self.updater))
        self._var_index = _Untracked({id(it.var): it for it in items})
        self._slot_lists = _Untracked(self._find_slots(items))
        _BUILT.add(self)
        updater = self.updater
        updater.build(items)
        self._states = []
        if updater.needs_state:
            self._states = [
                self.add_variable_from_reference(it.var, name="updater_state") for it in items
            ]
        self._snapshots = []
        if self.rewind_step is not None:
            self._snapshots = [
                self.add_variable_from_reference(v, name="rewind") for v in var_list
            ]
        self.last_update_step = self.add_variable(
            shape=(), dtype="int64", initializer=keras.initializers.Constant(-1),
            name="last_update_step", aggregation="only_first_replica")
        self.last_drop_fraction = self.add_variable(
            shape=(), dtype="float32", initializer="zeros", name="last_drop_fraction",
            aggregation="only_first_replica")
        self.last_num_changed = self.add_variable(
            shape=(), dtype="int64", initializer="zeros", name="last_num_changed",
            aggregation="only_first_replica")

    def _find_peak_lr(self, updater):
        """The peak learning rate, read once (eagerly) for the 'lr' drop fraction."""
        fraction = getattr(updater, "fraction", None)
        uses_lr = getattr(fraction, "schedule", None) == "lr"
        base = _base_optimizer(self.inner_optimizer)
        with tf.init_scope():
            try:
                peak = updaters_lib.peak_learning_rate(base._learning_rate)
            except (TypeError, ValueError) as e:
                if uses_lr:
                    raise ValueError(str(e)) from None
                return None
        if uses_lr and not (np.isfinite(peak) and peak > 0):
            raise ValueError(
                f"The 'lr' drop-fraction schedule divides by the peak learning rate, which "
                f"is {peak!r} for learning rate {type(base._learning_rate).__name__}; give the "
                f"schedule a "
                f"`peak_learning_rate` attribute, or use schedule_alg 'cosine' or 'constant'."
            )
        return peak

    def _first_step_event(self, updater):
        """The event step of an update at the first step, before its weight update (the
        schedule decides it eagerly, once), or None."""
        if updater.name == "static":
            return None
        event = updater.event_offset - 1
        with tf.init_scope():
            return event if bool(updater.should_update(event)) else None

    def updates_masks_in_step(self, iterations) -> bool:
        """Whether the optimizer step that starts at ``iterations`` changes the masks
        (Python; for callbacks that act around mask updates)."""
        return self.update_step_of(iterations) is not None

    def update_step_of(self, iterations):
        """The event step of the mask update made in the optimizer step that starts at
        ``iterations`` (the later one if there are two), or None."""
        updater = self.updater
        if updater.name == "static":
            return None
        event = int(iterations) + updater.event_offset
        if bool(updater.should_update(event)):
            return event
        first = self._first_event.value if self.built else self._first_step_event(updater)
        if int(iterations) == 0 and first is not None:
            return first
        return None

    def _find_slots(self, items):
        spec = slot_spec(self.inner_optimizer) or []
        base = _base_optimizer(self.inner_optimizer)
        out = []
        for it in items:
            slots = []
            index = base._get_variable_index(it.var)
            for attr, reset in spec:
                slot_list = getattr(base, attr, None) or []
                if index < len(slot_list) and slot_list[index] is not None:
                    value = getattr(base, reset) if isinstance(reset, str) else reset
                    slots.append((slot_list[index], float(value)))
            out.append(slots)
        return out

    # ------------------------------------------------------------------ apply
    def apply(self, grads, trainable_variables=None):
        grads, trainable_variables = self._prepare_apply(grads, trainable_variables)
        if tf.distribute.in_cross_replica_context() and tf.distribute.has_strategy():
            raise ValueError("SparseOptimizer.apply() must be called in a replica context.")
        tf.distribute.get_replica_context().merge_call(
            self._cross_replica_apply, args=(grads, trainable_variables)
        )

    def _replica_step(self, grads, variables):
        masked = []
        for g, v in zip(grads, variables):
            item = self._var_index.value.get(id(v))
            if g is None or item is None:
                masked.append(g)
            elif isinstance(g, tf.IndexedSlices):
                rows = tf.gather(tf.cast(item.mask, g.values.dtype), g.indices)
                masked.append(tf.IndexedSlices(g.values * rows, g.indices, g.dense_shape))
            else:
                masked.append(g * tf.cast(item.mask, g.dtype))
        self.inner_optimizer.apply(masked, variables)

    def _cross_replica_apply(self, distribution, grads, variables):
        step = tf.convert_to_tensor(self.iterations)
        step = tf.cast(step, tf.int64)
        if self._snapshots:
            _cond_call(
                tf.equal(step, self.rewind_step),
                lambda: self._take_snapshot(distribution, variables),
                lambda: tf.no_op(),
            )
        updater = self.updater
        by_id = {id(v): g for g, v in zip(grads, variables)}
        item_grads = [by_id.get(id(it.var)) for it in self.masked_items]
        first = self._first_event.value
        if first is not None:
            # An event due before the first update acts on the initial weights.
            _cond_call(
                tf.equal(step, 0),
                lambda: self._update_masks(distribution, tf.constant(first, tf.int64),
                                           item_grads),
                lambda: tf.no_op(),
            )
        distribution.extended.call_for_each_replica(self._replica_step, args=(grads, variables))
        if updater.needs_state:
            reduced = self._reduce(distribution, item_grads)
            for state, g in zip(self._states, reduced):
                if g is not None:
                    state.assign(updater.observe(state, tf.cast(g, state.dtype)))
        if updater.name != "static":
            # The event step of an update right after this step (Updater.event_offset).
            event = step + updater.event_offset
            _cond_call(updater.should_update(event),
                       lambda: self._update_masks(distribution, event, item_grads),
                       lambda: tf.no_op())
        if keeps_zeros(self.inner_optimizer):
            # Masked weights stayed exact zeros in the inner step and the update wrote
            # w * keep: only weights assigned before training need the masks. They are
            # applied once, eagerly, when the step is traced (before its first run), so
            # the compiled step holds no extra branch.
            if tf.inside_function():
                with tf.init_scope():
                    self._apply_masks(distribution)
            else:
                tf.cond(tf.equal(step, 0), lambda: self._apply_masks(distribution), tf.no_op)
        else:
            self._apply_masks(distribution)

    def _apply_masks(self, distribution):
        for item in self.masked_items:
            distribution.extended.update(
                _tf_var(item.var), _mask_assign, args=(_tf_var(item.mask),), group=False
            )
        return tf.no_op()

    def _reset_inactive_slots(self, mask_ids):
        """Resets the slots of the masked weights whose mask is in ``mask_ids`` wherever
        the mask is zero (eagerly; after masks were set from outside the train step)."""
        for item, slots in zip(self.masked_items, self._slot_lists.value):
            if id(item.mask) not in mask_ids:
                continue
            for slot, reset in slots:
                value = tf.convert_to_tensor(slot)
                keep = tf.cast(tf.convert_to_tensor(item.mask), value.dtype)
                slot.assign(value * keep + reset * (1.0 - keep))

    def _reduce(self, distribution, grads):
        out = []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            r = distribution.reduce(_SUM, g, axis=None)
            if isinstance(r, tf.IndexedSlices):
                r = tf.convert_to_tensor(r)
            out.append(tf.cast(r, tf.float32))
        return out

    def _take_snapshot(self, distribution, variables):
        for snap, v in zip(self._snapshots, variables):
            snap.assign(tf.convert_to_tensor(v))
        return tf.no_op()

    def _update_masks(self, distribution, step, item_grads):
        updater = self.updater
        items = self.masked_items
        if not updater.needs_gradients:
            grads = [None] * len(items)
        elif self._gradient_fn.value is not None:
            grads = [tf.cast(g, tf.float32) for g in self._gradient_fn.value()]
            if len(grads) != len(items):
                raise ValueError(
                    f"`gradient_fn` returned {len(grads)} gradients; expected one per masked "
                    f"weight ({len(items)}: {[it.key for it in items]})."
                )
        else:
            grads = self._reduce(distribution, item_grads)
        if updater.needs_gradients:
            missing = [it.key for it, g in zip(items, grads) if g is None]
            if missing:
                raise ValueError(
                    f"Updater {updater.name!r} needs gradients, but none were given for "
                    f"{missing}."
                )
        weights = [tf.cast(tf.convert_to_tensor(it.var), tf.float32) for it in items]
        masks = [tf.cast(tf.convert_to_tensor(it.mask), tf.float32) for it in items]
        states = [tf.convert_to_tensor(s) for s in self._states] or [None] * len(items)
        lr_info = None
        if self._peak_lr.value is not None:
            lr_info = updaters_lib.describe_lr(_base_optimizer(self.inner_optimizer), step,
                                               self._peak_lr.value)
        # One call node also under a strategy, where the whole branch cannot be one.
        new_masks = _one_call(updater.compute_masks)(step, weights, masks, grads, states,
                                                     lr_info)
        changed = []
        for item, w, old, new, slots in zip(items, weights, masks, new_masks,
                                            self._slot_lists.value):
            grown = new * (1.0 - old)
            keep = new - grown  # active before and after
            changed.append(tf.reduce_sum(grown))
            item.mask.assign(tf.cast(new, item.mask.dtype))
            value = w * keep
            init = updater.grow_values(step, item, new)
            if init is not None:
                value += tf.cast(init, tf.float32) * grown
            item.var.assign(tf.cast(value, item.var.dtype))
            for slot, reset in slots:
                value = tf.convert_to_tensor(slot)
                keep_s = tf.cast(keep, value.dtype)
                slot.assign(value * keep_s + reset * (1.0 - keep_s))
        self.last_update_step.assign(step)
        self.last_drop_fraction.assign(tf.cast(updater.drop_fraction(step, lr_info), tf.float32))
        self.last_num_changed.assign(tf.cast(tf.add_n(changed), tf.int64))
        return tf.no_op()

    def finalize_variable_values(self, var_list):
        # The inner optimizer may overwrite weights here (EMA): keep masked ones zero.
        super().finalize_variable_values(var_list)
        for item in self.masked_items:
            item.var.assign(item.var * tf.cast(item.mask, item.var.dtype))

    # ------------------------------------------------------------------ rewinding
    def rewind(self, restore_step: bool = True, reset_slots: bool = True):
        """Restores the weights captured at ``rewind_step`` under the current masks.

        Args:
          restore_step: also set ``iterations`` back to ``rewind_step`` (so learning-rate
            schedules restart from there).
          reset_slots: reset the inner optimizer's state (momentum etc.) to its initial
            values.

        Raises:
          ValueError: if no ``rewind_step`` was set, or training has not reached it yet.
        """
        if self.rewind_step is None:
            raise ValueError("rewind() needs SparseOptimizer(rewind_step=K).")
        if not self.built or int(self.iterations.numpy()) <= self.rewind_step:
            raise ValueError(
                f"rewind(): no snapshot yet; training must pass step {self.rewind_step} "
                f"(now at step {int(self.iterations.numpy()) if self.built else 0})."
            )
        for snap, v in zip(self._snapshots, self._trainable_variables):
            mask = get_mask(v)
            value = snap if mask is None else snap * mask
            v.assign(value)
        if reset_slots:
            base = _base_optimizer(self.inner_optimizer)
            for attr, reset in slot_spec(base) or []:
                value = getattr(base, reset) if isinstance(reset, str) else reset
                for slot in getattr(base, attr, None) or []:
                    if slot is not None:
                        slot.assign(tf.fill(slot.shape, tf.cast(value, slot.dtype)))
        if restore_step:
            self.iterations.assign(self.rewind_step)

    def rewind_weights(self):
        """The captured rewind-point weights as numpy arrays (aligned with the variables)."""
        return [s.numpy() for s in self._snapshots]

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        return {
            **super().get_config(),
            "updater": self.updater.get_config(),
            "rewind_step": self.rewind_step,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["updater"] = updaters_lib.deserialize_updater(config.pop("updater"))
        return super().from_config(config, custom_objects)


def heldout_gradient_fn(model, x, y, loss_fn=None):
    """Returns a ``gradient_fn`` for :class:`SparseOptimizer`: dense gradients of the mean
    loss on a fixed held-out batch ``(x, y)``, one per masked weight.

    Args:
      model: the sparse model being trained.
      x, y: the held-out batch (arrays or tensors).
      loss_fn: ``fn(y_true, logits)``; default sparse categorical cross-entropy from logits.
    """
    from rigl_tf.keras.model_ops import masked_weights

    loss_fn = loss_fn or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = tf.constant(x)
    y = tf.constant(y)
    weights = [w for _, w, _ in masked_weights(model)]

    def fn():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, weights)

    return fn


def _one_call(fn):
    """``fn`` as one function call that graph optimisation does not inline (inside a
    ``tf.function`` and outside XLA; elsewhere ``fn`` itself).

    For the branches of a lowered ``tf.cond`` (under a strategy, see :func:`_cond_call`):
    on steps where a branch is not taken, the graph executor still visits each of its nodes
    (propagating "dead" tensors); a mask update is a few hundred nodes, several percent of
    every ordinary step of a small model (MLP 300-100 on CPU). Behind a non-inlined call
    the untaken branch is one node. An Operation returned by ``fn`` becomes
    ``tf.no_op()``.
    """
    if not tf.inside_function() or masks_lib._in_xla():
        return fn

    def body(*args):
        out = fn(*args)
        return None if isinstance(out, tf.Operation) else out

    call = tf.function(body, autograph=False, experimental_attributes={"_noinline": True})

    def run(*args):
        out = call(*args)
        return tf.no_op() if out is None else out

    return run


def _cond_call(pred, true_fn, false_fn):
    """``tf.cond`` whose ``If`` op stays one node that calls the taken branch's function
    (not lowered to switch/merge nodes), inside a ``tf.function`` with no strategy and
    outside XLA; elsewhere ``tf.cond`` itself.

    Lowered, every input of a cond (each gradient, variable and slot a branch reads) gets a
    Switch node, and the untaken branch's nodes still run as dead ones, on every step: on
    the MLP 300-100 (1.3 ms a CPU step) that was 4-7% of an ordinary RigL step. Unlowered,
    an ordinary step runs the predicate, one If node and an empty branch.
    """
    if not tf.inside_function() or masks_lib._in_xla() or tf.distribute.has_strategy():
        return tf.cond(pred, true_fn, false_fn)
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    out = tf.cond(pred, true_fn, false_fn)
    for op in graph.get_operations()[before:]:
        if op.type in ("If", "StatelessIf"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return out


def _mask_assign(var, mask):
    return var.assign(var * tf.cast(mask, var.dtype))


class _Untracked:
    """Holds a Python value without Keras/TF tracking (so masks are not saved twice)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
