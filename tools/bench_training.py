"""Benchmark: training step time of dense vs static-masked vs RigL training on CPU.

For the paper's LeNet5 (28x28x1, 44,426 parameters), the 300-100 MLP and a CIFAR ResNet-20
at batch 128 and 90% ERK sparsity, the compiled train step that ``model.fit`` runs
(``model.train_function``, built by a warm-up ``fit``) is timed for the three variants in
the same process. Steps are interleaved one by one in a shuffled order, so machine noise
hits all variants alike; the steps are grouped into rounds, each round gives one ratio per
variant (median step / median dense step), and the report gives the median over rounds
and their spread (min, max, interquartile range). Both wall-clock time and the process's
CPU time are measured: on a loaded machine the CPU-time ratios are the stable ones. A
second, identical dense model is timed alongside as an A/A control: its ratio to dense,
``null_over_dense``, is the measurement's own error (1.0 if the timing were exact).

RigL updates every 100 steps. To time update steps without running hundreds of steps, the
RigL model's step counter is moved before each round so that its middle step is an update
step; ``rigl_over_dense`` is the median over ordinary steps, ``rigl_amortised_over_dense``
is (99 x median ordinary step + median update step) / 100 over the median dense step.

If tensorflow-model-optimization is importable, the same ratio for its
``prune_low_magnitude`` on tf_keras twins of LeNet5 and the MLP is measured in a
subprocess (importing tfmot switches tf.keras) with the same schedule.

    python tools/bench_training.py                 # default run (about 5 min on 2 cores), one JSON
    python tools/bench_training.py --quick         # tiny smoke run, no tfmot (tests)
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

# key -> (registry name, input shape)
MODELS = {
    "lenet5": ("lenet5", (28, 28, 1)),
    "mlp": ("mlp", (28, 28, 1)),
    "resnet20": ("resnet20", (32, 32, 3)),
}
LENET5_PARAMS = 44_426  # the paper's LeNet5 at 28x28x1, 10 classes
UPDATE_FREQ = 100
TARGETS = {"static_over_dense": 1.02, "rigl_over_dense": 1.05,
           "rigl_amortised_over_dense": 1.10}


def _paper_lenet5(layers, shape):
    """Conv 6@5x5 - pool - Conv 16@5x5 - pool - Dense 120 - Dense 84 - Dense 10 (valid)."""
    L = layers
    return [L.Conv2D(6, 5, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(16, 5, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
            L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10)]


def _keras3_model(key):
    from rigl_tf.experiments.models import count_params, get_model

    name, shape = MODELS[key]
    model = get_model(name, shape, 10)
    if key == "lenet5" and count_params(model, kernels_only=False) != LENET5_PARAMS:
        raise RuntimeError(f"The registry's lenet5 is not the paper's ({LENET5_PARAMS} "
                           f"parameters), so the tfmot twin would differ.")
    return model


def _data(shape, batch):
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.rand(batch * 4, *shape).astype("float32")
    y = rng.randint(0, 10, batch * 4).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(2)


def _spread(values):
    q1, q3 = np.percentile(values, [25, 75])
    return {"min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4),
            "iqr": round(float(q3 - q1), 4)}


def _interleave(variants, iterators, rounds, steps, seed, before_round=None, after_step=None):
    """Runs ``rounds`` + 1 rounds (round 0 warms up) of ``steps`` steps per variant.

    Returns {variant: [(round, wall seconds, cpu seconds, tag), ...]} for the timed rounds.
    """
    rng = np.random.RandomState(seed)
    names = list(variants)
    out = {v: [] for v in names}
    for r in range(rounds + 1):
        if before_round is not None:
            before_round(steps)
        for _ in range(steps):
            for v in rng.permutation(names):
                fn = variants[v].train_function
                c0, t0 = time.process_time(), time.perf_counter()
                fn(iterators[v])
                t1, c1 = time.perf_counter(), time.process_time()
                tag = after_step(v) if after_step is not None else None
                if r > 0:
                    out[v].append((r, t1 - t0, c1 - c0, tag))
    return out


def _ratios(samples, base="dense", select=None):
    """Per-round ratio of median step times to the baseline's, for wall and CPU time."""
    res = {}
    for kind, col in (("wall", 1), ("cpu", 2)):
        per_round = []
        for r in sorted({s[0] for s in samples[base]}):
            b = np.median([s[col] for s in samples[base] if s[0] == r])
            mine = [s[col] for s in select if s[0] == r]
            if mine:
                per_round.append(float(np.median(mine) / b))
        res[kind] = per_round
    return res


def bench_keras3(names, batch, rounds, steps, sparsity, seed):
    import keras

    import rigl_tf

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for key in names:
        _, shape = MODELS[key]
        base = _keras3_model(key)
        variants = {}
        dense = keras.models.clone_model(base)
        dense.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss)
        variants["dense"] = dense
        # A/A control: a second, identical dense model timed like the others. Its ratio to
        # dense (null_over_dense) is what the measurement reads when nothing differs.
        twin = keras.models.clone_model(base)
        twin.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss)
        variants["dense_twin"] = twin
        static = rigl_tf.sparsify(base, sparsity, "erk")
        static.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.01, momentum=0.9)), loss)
        variants["static"] = static
        rigl = rigl_tf.sparsify(base, sparsity, "erk")
        rigl_opt = rigl_tf.SparseOptimizer(
            keras.optimizers.SGD(0.01, momentum=0.9),
            rigl_tf.updaters.RigL(update_freq=UPDATE_FREQ, init_drop_fraction=0.3))
        rigl.compile(rigl_opt, loss)
        variants["rigl"] = rigl
        ds = _data(shape, batch)
        iterators = {}
        for v, model in variants.items():
            model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # builds train_function
            iterators[v] = iter(model.distribute_strategy.experimental_distribute_dataset(ds))

        def before_round(n):
            # The round's middle RigL step becomes an update step.
            it = int(rigl_opt.iterations.numpy())
            target = (it // UPDATE_FREQ + 1) * UPDATE_FREQ - n // 2
            rigl_opt.iterations.assign(max(target, it))

        last = {"update": int(rigl_opt.last_update_step.numpy())}

        def after_step(v):
            if v != "rigl":
                return None
            now = int(rigl_opt.last_update_step.numpy())
            updated, last["update"] = now != last["update"], now
            return "update" if updated else "ordinary"

        samples = _interleave(variants, iterators, rounds, steps, seed, before_round, after_step)
        ordinary = [s for s in samples["rigl"] if s[3] == "ordinary"]
        updates = [s for s in samples["rigl"] if s[3] == "update"]
        entry = {"steps_timed_per_variant": len(samples["dense"]),
                 "rigl_update_steps_timed": len(updates),
                 "median_step_ms": {}, "median_cpu_step_ms": {}}
        for v in variants:
            rows = ordinary if v == "rigl" else samples[v]
            entry["median_step_ms"][v] = round(1e3 * float(np.median([s[1] for s in rows])), 3)
            entry["median_cpu_step_ms"][v] = round(1e3 * float(np.median([s[2] for s in rows])), 3)
        for kind, col in (("wall", 1), ("cpu", 2)):
            if updates:
                entry[f"median_{kind}_update_step_ms"] = round(
                    1e3 * float(np.median([s[col] for s in updates])), 3)
        for label, sel in (("static_over_dense", samples["static"]),
                           ("rigl_over_dense", ordinary),
                           ("null_over_dense", samples["dense_twin"])):
            per_round = _ratios(samples, select=sel)
            for kind in ("wall", "cpu"):
                entry.setdefault(kind, {})[label] = round(float(np.median(per_round[kind])), 4)
                entry.setdefault(f"{kind}_spread", {})[label] = _spread(per_round[kind])
        if updates:
            for kind, col in (("wall", 1), ("cpu", 2)):
                d = np.median([s[col] for s in samples["dense"]])
                o = np.median([s[col] for s in ordinary])
                u = np.median([s[col] for s in updates])
                amortised = ((UPDATE_FREQ - 1) * o + u) / UPDATE_FREQ / d
                entry[kind]["rigl_amortised_over_dense"] = round(float(amortised), 4)
                entry[kind]["update_step_over_dense"] = round(float(u / d), 2)
        results[key] = entry
    return results


def _tfk_model(tfk, key):
    name, shape = MODELS[key]
    L = tfk.layers
    if key == "mlp":
        layers = [L.Flatten(), L.Dense(300, activation="relu"), L.Dense(100, activation="relu"),
                  L.Dense(10)]
    else:
        layers = _paper_lenet5(L, shape)
    return tfk.Sequential([L.InputLayer(input_shape=shape)] + layers)


def bench_tfmot(names, batch, rounds, steps, sparsity, seed):
    from rigl_tf.interop.tfmot import import_tfmot

    tfmot, tfk = import_tfmot()
    results = {}
    for key in names:
        if key == "resnet20":
            continue  # no tf_keras twin of the functional ResNet here
        _, shape = MODELS[key]
        loss = tfk.losses.SparseCategoricalCrossentropy(from_logits=True)
        dense = _tfk_model(tfk, key)
        dense.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
        schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, 0, frequency=UPDATE_FREQ)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(_tfk_model(tfk, key),
                                                          pruning_schedule=schedule)
        pruned.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
        ds = _data(shape, batch)
        variants = {"dense": dense, "tfmot": pruned}
        iterators = {}
        for v, model in variants.items():
            cbs = [tfmot.sparsity.keras.UpdatePruningStep()] if v == "tfmot" else []
            model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, callbacks=cbs)
            iterators[v] = iter(model.distribute_strategy.experimental_distribute_dataset(ds))
        samples = _interleave(variants, iterators, rounds, steps, seed)
        per_round = _ratios(samples, select=samples["tfmot"])
        results[key] = {
            "wall": {"tfmot_over_dense": round(float(np.median(per_round["wall"])), 4)},
            "cpu": {"tfmot_over_dense": round(float(np.median(per_round["cpu"])), 4)},
            "wall_spread": {"tfmot_over_dense": _spread(per_round["wall"])},
            "cpu_spread": {"tfmot_over_dense": _spread(per_round["cpu"])},
            "median_step_ms": {v: round(1e3 * float(np.median([s[1] for s in samples[v]])), 3)
                               for v in variants},
        }
    return results


def _plan(args):
    """Per-model (rounds, steps per round): ResNet-20 steps are ~100x longer."""
    return {k: (args.rounds, args.steps) if k != "resnet20" else
            (args.resnet_rounds, args.resnet_steps) for k in MODELS}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--models", default="lenet5,mlp,resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (small models)")
    parser.add_argument("--steps", type=int, default=20,
                        help="steps per variant per round (small models)")
    parser.add_argument("--resnet_rounds", type=int, default=10)
    parser.add_argument("--resnet_steps", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0, help="seed of the step order")
    parser.add_argument("--tfmot_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.rounds, args.steps = "mlp", 16, 2, 3
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            parser.error(f"--models: unknown model {n!r}; known: {', '.join(MODELS)}")
    plan = _plan(args)
    start = time.time()
    if args.tfmot_only:
        out = {}
        for n in names:
            out.update(bench_tfmot([n], args.batch, *plan[n], args.sparsity, args.seed))
        print(json.dumps(out))
        return
    load_before = os.getloadavg()
    tfmot = None
    import importlib.util

    if not args.quick and importlib.util.find_spec("tensorflow_model_optimization") is not None:
        cmd = [sys.executable, os.path.abspath(__file__), "--tfmot_only", "--models",
               ",".join(n for n in names if n != "resnet20") or "none",
               "--batch", str(args.batch), "--rounds", str(args.rounds),
               "--steps", str(args.steps), "--sparsity", str(args.sparsity),
               "--seed", str(args.seed)]
        if any(n != "resnet20" for n in names):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                tfmot = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                tfmot = {"error": proc.stderr.strip().splitlines()[-1:]}
    results = {}
    for n in names:
        results.update(bench_keras3([n], args.batch, *plan[n], args.sparsity, args.seed))
    out = {
        "config": {"batch": args.batch, "sparsity": args.sparsity, "distribution": "erk",
                   "rigl_update_freq": UPDATE_FREQ, "optimizer": "SGD(0.01, momentum=0.9)",
                   "rounds_and_steps": {n: plan[n] for n in names}, "seed": args.seed},
        "ratios": {k: v["wall"] for k, v in results.items()},
        "cpu_ratios": {k: v["cpu"] for k, v in results.items()},
        "details": results,
        "targets": TARGETS,
        "seconds": round(time.time() - start, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    if tfmot is not None:
        out["tfmot"] = tfmot
    print(json.dumps(out))


if __name__ == "__main__":
    main()
