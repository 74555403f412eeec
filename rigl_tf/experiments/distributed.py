"""A custom training loop for strategies under which Keras 3's ``model.fit`` fails.

Keras 3's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras
issue 20585: ``Trainer._maybe_symbolic_build`` reduces a PerReplica data batch), so
``rigl-train --strategy=multi_worker`` trains with :func:`custom_fit`: the same Keras
callbacks (checkpoints, summaries, NaN guard, stop-at-step), driven by hand, around a
``strategy.run`` step that averages the per-example loss over the *global* batch
(``tf.nn.compute_average_loss``) and adds the model's regularization losses scaled by
``1 / num_replicas`` -- the same loss ``model.fit`` minimises on one worker.
"""

from typing import Dict, Sequence

import keras
import tensorflow as tf

_SUM = tf.distribute.ReduceOp.SUM


def _loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _correct(logits, y):
    pred = tf.argmax(logits, axis=-1, output_type=tf.int64)
    y = tf.reshape(tf.cast(y, tf.int64), tf.shape(pred))
    return tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32))


def make_train_step(model, strategy, global_batch_size: int):
    """A ``tf.function`` ``step(iterator) -> (loss, correct)`` over all replicas.

    Args:
      model: the compiled model (its ``optimizer`` is applied).
      strategy: the ``tf.distribute`` strategy.
      global_batch_size: the batch size summed over all replicas.

    Returns:
      The step function; ``loss`` is the global-batch mean plus regularization, ``correct``
      the number of correctly classified examples of the global batch.
    """
    optimizer = model.optimizer
    loss_fn = _loss_fn()
    replicas = float(strategy.num_replicas_in_sync)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = loss_fn(y, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.add_n([tf.cast(v, loss.dtype) for v in model.losses]) / replicas
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss, _correct(logits, y)

    @tf.function
    def step(iterator):
        x, y = next(iterator)[:2]
        loss, correct = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(_SUM, loss, axis=None), strategy.reduce(_SUM, correct, axis=None)

    return step


def evaluate(model, dataset) -> Dict[str, float]:
    """Mean loss (plus regularization, as ``model.evaluate``) and accuracy over ``dataset``.

    Runs on the calling worker alone (every worker computes the same numbers).
    """
    loss_fn = _loss_fn()

    @tf.function
    def batch(x, y):
        logits = model(x, training=False)
        per_example = tf.cast(loss_fn(y, logits), tf.float32)
        return tf.reduce_sum(per_example), _correct(logits, y), tf.cast(tf.size(per_example),
                                                                         tf.float32)

    total = correct = count = 0.0
    for data in dataset:
        s, c, n = batch(data[0], data[1])
        total, correct, count = total + float(s), correct + float(c), count + float(n)
    if count == 0:
        raise ValueError("evaluation dataset is empty.")
    reg = sum(float(tf.cast(v, tf.float32)) for v in model.losses)
    return {"loss": total / count + reg, "accuracy": correct / count}


def custom_fit(model, strategy, train_dataset, global_batch_size: int, start_step: int,
               total_steps: int, steps_per_epoch: int, callbacks: Sequence = (),
               validation_data=None, log=None):
    """Trains ``model`` from ``start_step`` to ``total_steps`` optimizer steps.

    Callbacks see what ``model.fit`` gives them: ``on_train_begin``, per batch
    ``on_train_batch_begin/end`` with running-mean ``loss``/``accuracy`` logs, per epoch of
    ``steps_per_epoch`` steps ``on_epoch_end`` with ``val_loss``/``val_accuracy``; training
    stops when a callback sets ``model.stop_training``.

    Args:
      model: the compiled model.
      strategy: the ``tf.distribute`` strategy whose scope built the model.
      train_dataset: a repeated dataset of global batches, already fast-forwarded.
      global_batch_size: its batch size.
      start_step: ``optimizer.iterations`` now.
      total_steps: stop at this many optimizer steps.
      steps_per_epoch: steps between ``on_epoch_end`` calls (evaluation and summaries).
      callbacks: Keras callbacks.
      validation_data: dataset evaluated at every epoch end (None: no validation).
      log: a print-like function for one line per epoch (None: quiet).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    iterator = iter(strategy.experimental_distribute_dataset(
        train_dataset.with_options(options)))
    step_fn = make_train_step(model, strategy, global_batch_size)
    cbs = keras.callbacks.CallbackList(list(callbacks), model=model)
    iterations = model.optimizer.iterations
    model.stop_training = False
    epoch = start_step // steps_per_epoch
    step = start_step
    logs = {}
    cbs.on_train_begin()
    while step < total_steps and not model.stop_training:
        cbs.on_epoch_begin(epoch)
        loss_sum = correct_sum = 0.0
        for batch in range(steps_per_epoch):
            cbs.on_train_batch_begin(batch)
            loss, correct = step_fn(iterator)
            loss_sum += float(loss)
            correct_sum += float(correct)
            logs = {"loss": loss_sum / (batch + 1),
                    "accuracy": correct_sum / ((batch + 1) * global_batch_size)}
            cbs.on_train_batch_end(batch, logs)
            step = int(iterations.numpy())
            if model.stop_training or step >= total_steps:
                break
        logs = dict(logs)
        if validation_data is not None:
            logs.update({f"val_{k}": v for k, v in evaluate(model, validation_data).items()})
        cbs.on_epoch_end(epoch, logs)
        if log is not None:
            log(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()))
        epoch += 1
    cbs.on_train_end(logs)
    return logs
