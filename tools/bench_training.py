"""Benchmark: model.fit step time of dense vs static-masked vs RigL training on CPU.

For LeNet5 (28x28x1), the 300-100 MLP and a CIFAR ResNet-20 at batch 128, the three
variants are timed in the same process, interleaved in chunks (so machine noise hits all
of them alike), and reported as medians and ratios to dense. RigL uses update_freq=100, so
the window contains mask updates; its mean step time is reported too. If
tensorflow-model-optimization is importable, the same ratio for its prune_low_magnitude
on the tf_keras twin is measured in a subprocess (importing tfmot switches tf.keras).

    python tools/bench_training.py                 # full run, one JSON object
    python tools/bench_training.py --quick         # tiny smoke run (used by the tests)
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

MODELS = {
    "lenet5": ("lenet5", (28, 28, 1)),
    "mlp": ("mlp", (28, 28, 1)),
    "resnet20": ("resnet20", (32, 32, 3)),
}


class _Timer:
    """Collects per-batch wall times (a Keras callback built lazily)."""

    def __new__(cls):
        import keras

        class T(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return T()


def _data(shape, batch):
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.rand(batch * 4, *shape).astype("float32")
    y = rng.randint(0, 10, batch * 4).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(2)


def bench_keras3(names, batch, chunk, rounds, sparsity):
    import keras

    import rigl_tf
    from rigl_tf.experiments.models import get_model

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for key in names:
        name, shape = MODELS[key]
        base = get_model(name, shape, 10)
        variants = {}
        dense = keras.models.clone_model(base)
        dense.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss)
        variants["dense"] = dense
        static = rigl_tf.sparsify(base, sparsity, "erk")
        static.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.01, momentum=0.9)), loss)
        variants["static"] = static
        rigl = rigl_tf.sparsify(base, sparsity, "erk")
        rigl.compile(rigl_tf.SparseOptimizer(
            keras.optimizers.SGD(0.01, momentum=0.9),
            rigl_tf.updaters.RigL(update_freq=100, init_drop_fraction=0.3)), loss)
        variants["rigl"] = rigl
        ds = _data(shape, batch)
        times = {v: [] for v in variants}
        for r in range(rounds + 1):
            for v, model in variants.items():
                timer = _Timer()
                model.fit(ds, steps_per_epoch=chunk, epochs=1, verbose=0, callbacks=[timer],
                          shuffle=False)
                if r > 0:  # round 0 compiles and warms up
                    times[v].extend(timer.times)
        med = {v: float(np.median(t)) for v, t in times.items()}
        mean = {v: float(np.mean(t)) for v, t in times.items()}
        results[key] = {
            "median_step_seconds": {v: round(t, 5) for v, t in med.items()},
            "mean_step_seconds": {v: round(t, 5) for v, t in mean.items()},
            "steps_timed": len(times["dense"]),
            "rigl_updates_in_window": int(rigl.optimizer.iterations.numpy()) // 100,
            "static_over_dense": round(med["static"] / med["dense"], 4),
            "rigl_over_dense": round(med["rigl"] / med["dense"], 4),
            "rigl_mean_over_dense_mean": round(mean["rigl"] / mean["dense"], 4),
        }
    return results


def bench_tfmot(names, batch, chunk, rounds, sparsity):
    from rigl_tf.interop.tfmot import import_tfmot

    tfmot, tfk = import_tfmot()
    results = {}
    for key in names:
        name, shape = MODELS[key]
        if key == "resnet20":
            continue  # no tf_keras twin of the functional ResNet here
        L = tfk.layers

        def build():
            if name == "mlp":
                return tfk.Sequential([L.Flatten(input_shape=shape), L.Dense(300, activation="relu"),
                                       L.Dense(100, activation="relu"), L.Dense(10)])
            return tfk.Sequential([
                L.Conv2D(20, 5, padding="same", activation="relu", input_shape=shape),
                L.MaxPool2D(), L.Conv2D(50, 5, padding="same", activation="relu"), L.MaxPool2D(),
                L.Flatten(), L.Dense(500, activation="relu"), L.Dense(10)])

        loss = tfk.losses.SparseCategoricalCrossentropy(from_logits=True)
        dense = build()
        dense.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(
            build(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(sparsity, 0, frequency=100))
        pruned.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
        ds = _data(shape, batch)
        times = {"dense": [], "tfmot": []}

        class T(tfk.callbacks.Callback):
            def __init__(self, sink):
                super().__init__()
                self.sink = sink

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.sink.append(time.perf_counter() - self._t)

        for r in range(rounds + 1):
            for v, model in (("dense", dense), ("tfmot", pruned)):
                sink = [] if r == 0 else times[v]
                cbs = [T(sink)]
                if v == "tfmot":
                    cbs.append(tfmot.sparsity.keras.UpdatePruningStep())
                model.fit(ds, steps_per_epoch=chunk, epochs=1, verbose=0, callbacks=cbs,
                          shuffle=False)
        med = {v: float(np.median(t)) for v, t in times.items()}
        results[key] = {"tfmot_over_dense": round(med["tfmot"] / med["dense"], 4),
                        "median_step_seconds": {v: round(t, 5) for v, t in med.items()}}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--models", default="lenet5,mlp,resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=50, help="steps per interleaved chunk")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per variant")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--tfmot_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.chunk, args.rounds = "mlp", 16, 3, 1
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            parser.error(f"--models: unknown model {n!r}; known: {', '.join(MODELS)}")
    if args.tfmot_only:
        print(json.dumps(bench_tfmot(names, args.batch, args.chunk, args.rounds, args.sparsity)))
        return
    results = bench_keras3(names, args.batch, args.chunk, args.rounds, args.sparsity)
    out = {
        "config": {"batch": args.batch, "chunk": args.chunk, "rounds": args.rounds,
                   "sparsity": args.sparsity, "distribution": "erk", "rigl_update_freq": 100},
        "ratios": {k: {"static_over_dense": v["static_over_dense"],
                       "rigl_over_dense": v["rigl_over_dense"]} for k, v in results.items()},
        "details": results,
        "targets": {"static_over_dense": 1.10, "rigl_over_dense": 1.15},
    }
    import importlib.util

    if importlib.util.find_spec("tensorflow_model_optimization") is not None:
        cmd = [sys.executable, __file__, "--tfmot_only", "--models", ",".join(names),
               "--batch", str(args.batch), "--chunk", str(args.chunk),
               "--rounds", str(args.rounds), "--sparsity", str(args.sparsity)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            out["tfmot"] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            out["tfmot"] = {"error": proc.stderr.strip().splitlines()[-1:]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
