"""Schedules as functions of the training step: when masks change, and by how much.

Steps follow the reference code (google-research/rigl ``rigl_tf2``) and tfmot:

* DST: the reference checks ``is_update_iter(optimizer.iterations)`` right after
  ``apply_gradients``, so an update at step ``t`` uses the weights after ``t`` updates and
  the new masks are first used by batch ``t`` (0-based): with ``update_freq = 100`` masks
  change after steps 100, 200, ...
* Pruning: tfmot increments ``pruning_step`` in the forward pass and then prunes, so its
  step ``t`` prunes the weights after ``t - 1`` updates and batch ``t - 1`` (0-based)
  already uses the new masks; rigl_tf does the same (right after update ``t - 1``, or
  before the first update for ``t = 1``).

See ``Updater.event_offset`` in ``rigl_tf.keras.updaters``.

* Update timing (:class:`UpdateSchedule`): ``update_freq``, ``start_step``,
  ``end_step`` with the original RigL convention for ``end_step`` (``last_update_step``):
  negative = never stop, 0 = never update.
* Drop fraction (DST): 'constant', 'cosine' (the paper's
  ``f(t) = f0 / 2 * (1 + cos(pi * min(t, T) / T))`` from step 0, ``T = end_step``),
  'lr' (``f0 * lr(t) / peak lr``).
* Pruning sparsity: 'polynomial' (Zhu & Gupta 2017, cubic by default), 'constant', and
  'oneshot' (prune once at ``begin_step``).
"""

import math

import tensorflow as tf

DROP_FRACTION_SCHEDULES = ("constant", "cosine", "lr")
PRUNING_SCHEDULES = ("polynomial", "constant", "oneshot")


def _check_int(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")
    return value


def check_fraction(value, name, low=0.0, high=1.0, low_open=False, high_open=False):
    """Validates a float in [low, high] (or open at either end); returns it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = not math.isnan(v) and (v > low if low_open else v >= low) and (
        v < high if high_open else v <= high
    )
    if not ok:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ValueError(f"`{name}` must be in {lb}{low}, {high}{rb}, got {value!r}.")
    return v


class UpdateSchedule:
    """Decides at which steps a topology update happens.

    Steps are event steps (``iterations`` after the update; see the module docstring), so
    the default grid ``update_freq, 2 * update_freq, ...`` is the reference's. An update
    happens at step ``t`` iff ``end_step != 0``, ``t >= start_step``,
    ``(t - start_step) % update_freq == 0`` and (``end_step < 0`` or ``t <= end_step``).

    Args:
      update_freq: steps between updates (> 0).
      start_step: first update step (>= 0). Defaults to ``update_freq``.
      end_step: last step at which an update may happen; < 0 never stops, 0 disables.
    """

    def __init__(self, update_freq=100, start_step=None, end_step=-1):
        self.update_freq = _check_int(update_freq, "update_freq", 1)
        self.start_step = (
            self.update_freq if start_step is None else _check_int(start_step, "start_step", 0)
        )
        self.end_step = _check_int(end_step, "end_step")
        if self.end_step > 0 and self.end_step < self.start_step:
            raise ValueError(
                f"`end_step` ({self.end_step}) must be >= `start_step` ({self.start_step}), "
                f"or < 0 for no end, or 0 to disable updates."
            )

    def is_update_step(self, step):
        """Boolean tensor: whether ``step`` is an update step."""
        if self.end_step == 0:
            return tf.constant(False)
        step = tf.cast(step, tf.int64)
        ok = tf.logical_and(
            step >= self.start_step,
            tf.equal(tf.math.floormod(step - self.start_step, self.update_freq), 0),
        )
        if self.end_step > 0:
            ok = tf.logical_and(ok, step <= self.end_step)
        return ok

    def get_config(self):
        return {
            "update_freq": self.update_freq,
            "start_step": self.start_step,
            "end_step": self.end_step,
        }


class DropFractionSchedule:
    """Fraction of active weights a DST update drops (and regrows).

    Args:
      schedule: 'constant', 'cosine' or 'lr'.
      init_drop_fraction: ``f0`` in [0, 1].
      start_step: kept for configuration round-trips; 'cosine' decays from step 0 (the
        paper's formula), whatever the first update step.
      end_step: ``T`` of 'cosine', the step where the fraction reaches 0 (> 0); 0 means
        updates are disabled. A negative ``end_step`` with 'cosine' is refused: the
        schedule could never finish.

    Raises:
      ValueError: for an unknown schedule, a fraction outside [0, 1], or 'cosine' with a
        negative ``end_step``.
    """

    def __init__(self, schedule="lr", init_drop_fraction=0.3, start_step=0, end_step=-1):
        if schedule not in DROP_FRACTION_SCHEDULES:
            raise ValueError(
                f"Unknown drop-fraction `schedule_alg` {schedule!r}; known schedules: "
                f"{', '.join(DROP_FRACTION_SCHEDULES)}."
            )
        self.schedule = schedule
        self.init_drop_fraction = check_fraction(init_drop_fraction, "init_drop_fraction")
        self.start_step = _check_int(start_step, "start_step", 0)
        self.end_step = _check_int(end_step, "end_step")
        if schedule == "cosine" and self.end_step < 0:
            raise ValueError(
                f"The 'cosine' drop-fraction schedule decays to 0 at `end_step` "
                f"(last_update_step), which must be > 0, got {self.end_step}; set it to the "
                f"last update step or use schedule_alg 'lr' or 'constant'."
            )

    def __call__(self, step, learning_rate=None, peak_learning_rate=None):
        """Returns the drop fraction at ``step`` as a float32 tensor.

        Args:
          step: the update step ``t``.
          learning_rate: 'lr' schedule: the learning rate at ``t``.
          peak_learning_rate: 'lr' schedule: the schedule's peak (warm-up included).
        """
        f0 = tf.constant(self.init_drop_fraction, tf.float32)
        if self.schedule == "constant" or (self.schedule == "cosine" and self.end_step == 0):
            return f0
        if self.schedule == "cosine":
            t = tf.minimum(tf.cast(step, tf.float32), float(self.end_step))
            return f0 * 0.5 * (1.0 + tf.cos(math.pi * t / float(self.end_step)))
        if learning_rate is None or peak_learning_rate is None:
            raise ValueError("The 'lr' drop-fraction schedule needs the learning rate.")
        ratio = tf.math.divide_no_nan(
            tf.cast(learning_rate, tf.float32), tf.cast(peak_learning_rate, tf.float32)
        )
        return tf.clip_by_value(f0 * ratio, 0.0, 1.0)

    def get_config(self):
        return {
            "schedule": self.schedule,
            "init_drop_fraction": self.init_drop_fraction,
            "start_step": self.start_step,
            "end_step": self.end_step,
        }


class PruningSchedule:
    """Target sparsity over time for magnitude/random pruning.

    'polynomial' is tfmot's ``PolynomialDecay``: events at ``begin_step + k * frequency``
    up to ``end_step`` with target ``s_f + (s_i - s_f) * (1 - (t - begin) / (end -
    begin)) ** power`` at event step ``t`` (see the module docstring for what ``t`` is).
    One deliberate addition: an event at ``end_step`` even when it is off the grid, so the
    final sparsity is always reached.

    Args:
      schedule: 'polynomial' (gradual, Zhu & Gupta), 'constant' (prune to
        ``final_sparsity`` at ``begin_step`` and keep it), or 'oneshot' (prune once, at
        ``begin_step``).
      initial_sparsity: sparsity at ``begin_step`` (polynomial).
      final_sparsity: sparsity reached at ``end_step``.
      begin_step: first pruning step.
      end_step: last pruning step (polynomial; >= begin_step). -1 = begin_step.
      frequency: steps between pruning events (> 0).
      power: exponent of the polynomial decay (3 in Zhu & Gupta).
    """

    def __init__(self, schedule="polynomial", initial_sparsity=0.0, final_sparsity=0.9,
                 begin_step=0, end_step=-1, frequency=100, power=3):
        if schedule not in PRUNING_SCHEDULES:
            raise ValueError(
                f"Unknown pruning `schedule` {schedule!r}; known schedules: "
                f"{', '.join(PRUNING_SCHEDULES)}."
            )
        self.schedule = schedule
        self.initial_sparsity = check_fraction(
            initial_sparsity, "initial_sparsity", high=1.0, high_open=True
        )
        self.final_sparsity = check_fraction(
            final_sparsity, "final_sparsity", high=1.0, high_open=True
        )
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        end_step = _check_int(end_step, "end_step")
        self.end_step = self.begin_step if end_step < 0 else end_step
        if self.end_step < self.begin_step:
            raise ValueError(
                f"`end_step` ({self.end_step}) must be >= `begin_step` ({self.begin_step})."
            )
        self.frequency = _check_int(frequency, "frequency", 1)
        self.power = float(power)
        if schedule == "oneshot" and self.begin_step < 1:
            raise ValueError(
                f"One-shot pruning `begin_step` must be >= 1 (pruning step t prunes the "
                f"weights after t - 1 updates, so 1 prunes the initial weights), got "
                f"{self.begin_step}."
            )
        if schedule == "polynomial" and self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"`initial_sparsity` ({self.initial_sparsity}) must be <= `final_sparsity` "
                f"({self.final_sparsity})."
            )

    def is_prune_step(self, step):
        """Boolean tensor: whether masks are recomputed at ``step``."""
        step = tf.cast(step, tf.int64)
        if self.schedule == "oneshot":
            return tf.equal(step, self.begin_step)
        on_grid = tf.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0)
        in_range = step >= self.begin_step
        if self.schedule == "polynomial":
            in_range = tf.logical_and(in_range, step <= self.end_step)
            on_grid = tf.logical_or(on_grid, tf.equal(step, self.end_step))
        return tf.logical_and(in_range, on_grid)

    def sparsity(self, step, final_sparsity=None):
        """Target sparsity at ``step`` (float32 tensor).

        Args:
          step: the step.
          final_sparsity: optional per-layer final sparsity (defaults to the schedule's);
            the initial sparsity is capped at it.
        """
        final = tf.constant(self.final_sparsity if final_sparsity is None else final_sparsity,
                            tf.float32)
        if self.schedule != "polynomial" or self.end_step == self.begin_step:
            return final
        initial = tf.minimum(tf.constant(self.initial_sparsity, tf.float32), final)
        progress = tf.clip_by_value(
            (tf.cast(step, tf.float32) - self.begin_step) / float(self.end_step - self.begin_step),
            0.0,
            1.0,
        )
        return final + (initial - final) * tf.pow(1.0 - progress, self.power)

    def get_config(self):
        return {
            "schedule": self.schedule,
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "power": self.power,
        }
