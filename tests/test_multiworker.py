"""MultiWorkerMirroredStrategy: two worker processes on loopback end with identical masks and
weights, equal (within float tolerance) to a single-worker run with the same global batch."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _cluster import free_ports  # tests/_cluster.py

_WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    out = sys.argv[1]
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    import rigl_tf
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(4)])
        model = rigl_tf.sparsify(model, 0.75, "uniform", init="unit_scaled", seed=0)
        opt = rigl_tf.SparseOptimizer(
            keras.optimizers.SGD(0.1, momentum=0.9),
            rigl_tf.updaters.RigL(update_freq=3, init_drop_fraction=0.3))
        opt.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    rng = np.random.RandomState(0)
    x = rng.rand(96, 12).astype("float32")
    y = rng.randint(0, 4, 96).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))

    # Keras 3's model.fit does not run under MultiWorkerMirroredStrategy (keras-team/keras
    # issue 20585), so multi-worker training uses a custom loop, as documented.
    @tf.function
    def train_step(batch):
        def replica_fn(xb, yb):
            with tf.GradientTape() as tape:
                per_example = loss_fn(yb, model(xb, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=16)
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        strategy.run(replica_fn, args=batch)

    for _ in range(12):
        train_step(next(dist))
    result = {
        "iterations": int(opt.iterations.numpy()),
        "last_update_step": int(opt.last_update_step.numpy()),
        "masks": {k: v.tolist() for k, v in rigl_tf.get_masks(model).items()},
        "weights": [v.numpy().tolist() for v in model.trainable_variables],
    }
    with open(out, "w") as f:
        json.dump(result, f)
""")


@pytest.mark.slow
def test_two_workers_identical_and_match_single_worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": i}}))
        env.pop("TF_USE_LEGACY_KERAS", None)
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"w{i}.json")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single.json")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    w0, w1, s = (json.loads((tmp_path / f).read_text())
                 for f in ("w0.json", "w1.json", "single.json"))
    assert w0["iterations"] == w1["iterations"] == s["iterations"] == 12
    # RigL(update_freq=3) over 12 steps updates right after steps 3, 6, 9 and 12 (the
    # reference's convention), so the last update is at step 12.
    assert w0["last_update_step"] == s["last_update_step"] == 12
    assert w0["masks"] == w1["masks"]  # workers never disagree about a mask
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert w0["masks"] == s["masks"]  # same global batch: same topology as one worker
    for a, b in zip(w0["weights"], s["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)
