"""Benchmark: topology-update cost and mask memory at ImageNet scale (ResNet-50, 90% ERK).

Times one RigL mask update (drop + grow with exact counts over all 54 masked weights,
weights zeroed and optimizer slots reset) and one gradual-magnitude-pruning step, each as
a compiled function on the model's real variables with random dense gradients, so the
number is the update itself, not a ResNet-50 forward/backward pass. Reports the memory
that masks and rewind snapshots add. Prints one JSON object.

    python tools/bench_scale.py            # ResNet-50 at 224x224x3, 1000 classes
    python tools/bench_scale.py --quick    # ResNet-20 smoke run (used by the tests)
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import rigl_tf  # noqa: E402
from rigl_tf.experiments.models import get_model  # noqa: E402


def _time_update(model, updater, repeats, rewind_step=None):
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), updater,
                                  rewind_step=rewind_step)
    opt.build(model.trainable_variables)
    items = opt.masked_items
    rng = np.random.RandomState(0)
    grads = [tf.constant(rng.standard_normal(it.shape).astype("float32")) for it in items]
    strategy = tf.distribute.get_strategy()

    @tf.function
    def update(step):
        opt._update_masks(strategy, step, grads)
        return tf.constant(0)

    before = [it.mask.numpy().sum() for it in items]
    update(tf.constant(1, tf.int64))  # trace + first run
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        update(tf.constant(2 + r, tf.int64)).numpy()
        times.append(time.perf_counter() - t0)
    after = [it.mask.numpy().sum() for it in items]
    return opt, times, before, after


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        name, shape, classes = "resnet20", (32, 32, 3), 10
    else:
        name, shape, classes = "resnet50", (224, 224, 3), 1000
    model = rigl_tf.sparsify(get_model(name, shape, classes), 0.9, "erk")
    sparsity = rigl_tf.sparsity_report(model).total["sparsity"]

    rigl = rigl_tf.updaters.RigL(update_freq=1, start_step=0, init_drop_fraction=0.3,
                                 schedule_alg="constant")
    opt, rigl_times, before, after = _time_update(model, rigl, args.repeats, rewind_step=0)
    assert before == after, "RigL changed a layer's non-zero count"

    gmp = rigl_tf.updaters.MagnitudePruning(
        "polynomial", initial_sparsity=0.9, final_sparsity=0.95, begin_step=0, end_step=100,
        frequency=1, distribution="erk")
    _, gmp_times, _, _ = _time_update(model, gmp, args.repeats)

    weight_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                       for v in model.trainable_variables)
    mask_bytes = sum(int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize
                     for _, _, m in rigl_tf.masked_weights(model))
    rewind_bytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
                       for s in opt._snapshots)
    print(json.dumps({
        "model": name,
        "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        "masked_weights": len(opt.masked_items),
        "sparsity": round(sparsity, 6),
        "rigl_update_seconds": round(float(np.median(rigl_times)), 4),
        "rigl_update_seconds_all": [round(t, 4) for t in rigl_times],
        "gmp_step_seconds": round(float(np.median(gmp_times)), 4),
        "weight_bytes": weight_bytes,
        "mask_bytes": mask_bytes,
        "rewind_snapshot_bytes": rewind_bytes,
        "mask_bytes_over_weight_bytes": round(mask_bytes / weight_bytes, 4),
        "rewind_bytes_over_weight_bytes": round(rewind_bytes / weight_bytes, 4),
        "targets": {"rigl_update_seconds": 2.0, "mask_bytes_over_weight_bytes": 1.0},
    }))


if __name__ == "__main__":
    main()
