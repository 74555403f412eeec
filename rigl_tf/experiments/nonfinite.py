"""``training.nonfinite='skip'``: an optimizer wrapper that skips non-finite steps.

Built like ``keras.optimizers.LossScaleOptimizer`` (whose non-finite handling it mirrors),
so ``SparseOptimizer`` itself stays unchanged: when any gradient of any replica is NaN or
infinite, the wrapped optimizer is not called at all (no weight, mask, slot or updater
state changes) and only ``iterations`` advances, so the step count keeps equal to the
number of batches consumed (resumption fast-forwards the data by ``iterations``).
"""

import keras
import tensorflow as tf

from rigl_tf.keras.optimizer import WrappingOptimizer


def _all_finite(grads):
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(g)))
              for g in grads if g is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def _inside(grads):
    return [None if g is None else tf.identity(g) for g in grads]


@keras.saving.register_keras_serializable(package="rigl_tf")
class SkipNonFinite(WrappingOptimizer):
    """Applies ``inner_optimizer`` only when every gradient (on every replica) is finite.

    Args:
      inner_optimizer: a Keras 3 optimizer (typically a ``rigl_tf.SparseOptimizer``).
      name: optimizer name.

    Attributes:
      skipped: int64 variable counting skipped steps (checkpointed).
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        if kwargs:
            raise ValueError(f"SkipNonFinite does not accept {sorted(kwargs)}.")
        super().__init__(inner_optimizer, name=name or "skip_nonfinite")

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.skipped = self.add_variable(shape=(), dtype="int64", initializer="zeros",
                                         name="skipped", aggregation="only_first_replica")

    def _skip(self):
        self.iterations.assign_add(1)
        self.skipped.assign_add(1)
        return tf.no_op()

    def apply(self, grads, trainable_variables=None):
        grads, trainable_variables = self._prepare_apply(grads, trainable_variables)
        if not tf.distribute.has_strategy():
            def apply_fn():
                # Gradients re-created inside the branch (as LossScaleOptimizer's unscaling
                # does): captured outer tensors trip tf.custom_gradient in the inner step.
                self.inner_optimizer.apply(_inside(grads), trainable_variables)
                return tf.no_op()

            tf.cond(_all_finite(grads), apply_fn, self._skip)
            return
        if tf.distribute.in_cross_replica_context():
            raise ValueError("SkipNonFinite.apply() must be called in a replica context.")
        tf.distribute.get_replica_context().merge_call(
            self._cross_replica_apply, args=(grads, trainable_variables))

    def _cross_replica_apply(self, distribution, grads, variables):
        # Gradients are per replica here: all replicas must agree, so count bad ones.
        bad = distribution.extended.call_for_each_replica(
            lambda g: tf.cast(tf.logical_not(_all_finite(g)), tf.int32), args=(grads,))
        bad = distribution.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)

        def apply_fn():
            # The cond must be in cross-replica context: the inner apply uses merge_call.
            distribution.extended.call_for_each_replica(
                lambda g, v: self.inner_optimizer.apply(_inside(g), v), args=(grads, variables))
            return tf.no_op()

        tf.cond(tf.equal(bad, 0), apply_fn, self._skip)

