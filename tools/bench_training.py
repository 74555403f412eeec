"""Benchmark: training step time of dense vs static-masked vs RigL training on CPU.

For the paper's LeNet5 (28x28x1, 44,426 parameters), the 300-100 MLP and a CIFAR ResNet-20
at batch 128 and 90% ERK sparsity, the compiled train step that ``model.fit`` runs
(``model.train_function``, built by a warm-up ``fit``) is timed for the variants in the
same process. Steps run in cycles: a cycle runs one step of every variant, in a shuffled
order, so a variant's step and the dense step of its cycle saw the same machine state.
Each ratio is the median over all cycles of (variant step / dense step of the cycle);
cycles are grouped into rounds, and the spread (min, max, interquartile range) is over
the rounds' medians. Both wall-clock time and the process's CPU time are measured. A
second, identical dense model is timed alongside as an A/A control: its ratio to dense,
``null_over_dense``, is the measurement's own error (1.0 if the timing were exact); the
other ratios are over the mean of both dense copies' steps in the cycle.

RigL updates every 100 steps. To time update steps without running hundreds of steps, the
RigL model's step counter is moved before each round so that its middle step is an update
step; ``rigl_over_dense`` is the median over ordinary steps, ``rigl_amortised_over_dense``
is (99 x ordinary ratio + update-step ratio) / 100.

If tensorflow-model-optimization is importable, its ``prune_low_magnitude`` on a tf_keras
twin of LeNet5 and of the MLP (same schedule frequency), and the dense tf_keras twin, run
in the same cycles: ``tfmot_over_dense`` is its step over the dense twin's. ``checks``
says which targets (``TARGETS``, below tfmot, ``MAX_SECONDS``) the run met.

    python tools/bench_training.py                 # default run (1-4.5 min on 2 cores), one JSON
    python tools/bench_training.py --quick         # tiny smoke run, no tfmot (tests)
"""

import argparse
import gc
import json
import os
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
MAX_SECONDS = 300  # the default run, on 2 cores
_KEEP = []
DENSE = ("dense", "dense_twin")  # the baseline of our ratios: both dense copies


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
    """Four fixed batches, cached: a step's input is ready in memory, and no prefetching
    thread refills a buffer while the next variant's step is timed. (With ``prefetch`` and
    the garbage collector on, the A/A control read 0.950-0.998 on the MLP in four runs;
    cached and with the collector off in the timed cycles, 1.000-1.006 in three.)"""
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.rand(batch * 4, *shape).astype("float32")
    y = rng.randint(0, 10, batch * 4).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()


def _spread(values):
    q1, q3 = np.percentile(values, [25, 75])
    return {"min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4),
            "iqr": round(float(q3 - q1), 4)}


def _interleave(variants, iterators, rounds, steps, seed, before_round=None, after_step=None,
                warmup=None):
    """Runs ``rounds`` + 1 rounds of ``steps`` cycles; a cycle runs one step of every
    variant, in a shuffled order. Round 0 warms up (``warmup`` cycles if given).

    Returns {variant: [(round, wall seconds, cpu seconds, tag, cycle), ...]} for the timed
    rounds.
    """
    rng = np.random.RandomState(seed)
    names = list(variants)
    out = {v: [] for v in names}
    cycle = 0
    gc.collect()
    gc.disable()  # as timeit does: no collection pause lands in one variant's step
    try:
        for r in range(rounds + 1):
            n = warmup if r == 0 and warmup is not None else steps
            if before_round is not None:
                before_round(n)
            for _ in range(n):
                for v in rng.permutation(names):
                    fn = variants[v].train_function
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn(iterators[v])
                    t1, c1 = time.perf_counter(), time.process_time()
                    tag = after_step(v) if after_step is not None else None
                    if r > 0:
                        out[v].append((r, t1 - t0, c1 - c0, tag, cycle))
                cycle += 1
    finally:
        gc.enable()
    return out


def _ratios(samples, base="dense", select=None):
    """Step-time ratios of the steps in ``select`` to the baseline's step in the same cycle
    (which ran next to it in time, so both saw the same machine state), for wall and CPU
    time: {kind: {"median": median over all cycles, "rounds": median of each round}}.
    ``base`` is a variant or a tuple of variants (then the mean of their steps in the
    cycle: two identical dense models differ by up to 4% on ResNet-20, see the A/A).

    Per-cycle pairs follow the machine's speed from step to step; on 2 cores it changes in
    phases of several steps (ResNet-20's step time moves between 0.53 and 0.62 s), which a
    per-round ratio of medians over a few steps mixes up.
    """
    bases = (base,) if isinstance(base, str) else tuple(base)
    res = {}
    for kind, col in (("wall", 1), ("cpu", 2)):
        by_cycle = {}
        for b in bases:
            for s in samples[b]:
                by_cycle.setdefault(s[4], []).append(s[col])
        base_of = {c: float(np.mean(v)) for c, v in by_cycle.items() if len(v) == len(bases)}
        pairs = [(s[0], s[col] / base_of[s[4]]) for s in select if base_of.get(s[4], 0) > 0]
        rounds = sorted({r for r, _ in pairs})
        res[kind] = {
            "median": float(np.median([q for _, q in pairs])),
            "rounds": [float(np.median([q for r2, q in pairs if r2 == r])) for r in rounds],
        }
    return res


def bench_keras3(names, batch, rounds, steps, sparsity, seed, warmup=None, tfmot=False):
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
        start = time.time()
        for v, model in variants.items():
            model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # builds train_function
        if tfmot:
            # In the same cycles as ours, so both overheads are measured at the same times.
            variants.update(_tfmot_variants(key, batch, sparsity))
        for v, model in variants.items():
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

        samples = _interleave(variants, iterators, rounds, steps, seed, before_round, after_step,
                              warmup=warmup)
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
        per_cycle = {}
        for label, sel in (("static_over_dense", samples["static"]),
                           ("rigl_over_dense", ordinary),
                           ("null_over_dense", samples["dense_twin"]),
                           ("update_step_over_dense", updates)):
            if not sel:
                continue
            base = "dense" if label == "null_over_dense" else DENSE
            per_cycle[label] = _ratios(samples, base=base, select=sel)
            for kind in ("wall", "cpu"):
                entry.setdefault(kind, {})[label] = round(per_cycle[label][kind]["median"], 4)
                if label != "update_step_over_dense":  # one update step per round
                    entry.setdefault(f"{kind}_spread", {})[label] = _spread(
                        per_cycle[label][kind]["rounds"])
        if "tfmot" in samples:
            tf_ratio = _ratios(samples, base="tfmot_dense", select=samples["tfmot"])
            for kind in ("wall", "cpu"):
                entry[kind]["tfmot_over_dense"] = round(tf_ratio[kind]["median"], 4)
                entry[f"{kind}_spread"]["tfmot_over_dense"] = _spread(tf_ratio[kind]["rounds"])
        if updates:
            for kind in ("wall", "cpu"):
                # (F - 1) ordinary steps and one update step per F steps.
                o = per_cycle["rigl_over_dense"][kind]["median"]
                u = per_cycle["update_step_over_dense"][kind]["median"]
                entry[kind]["rigl_amortised_over_dense"] = round(
                    ((UPDATE_FREQ - 1) * o + u) / UPDATE_FREQ, 4)
                entry[kind]["update_step_over_dense"] = round(u, 2)
        entry["seconds"] = round(time.time() - start, 1)
        results[key] = entry
        # Tearing down models, their compiled steps and prefetching iterators takes seconds
        # to a minute (ResNet-20); they live until the process exits without tearing down.
        _KEEP.append((variants, iterators))
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


def _tfmot_variants(key, batch, sparsity):
    """tfmot's ``prune_low_magnitude`` on a tf_keras twin of the model, and the twin dense,
    warmed up; {} for ResNet-20 (no tf_keras twin of the functional ResNet here)."""
    if key == "resnet20":
        return {}
    from rigl_tf.interop.tfmot import import_tfmot

    tfmot, tfk = import_tfmot()
    loss = tfk.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense = _tfk_model(tfk, key)
    dense.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, 0, frequency=UPDATE_FREQ)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(_tfk_model(tfk, key),
                                                      pruning_schedule=schedule)
    pruned.compile(tfk.optimizers.SGD(0.01, momentum=0.9), loss)
    ds = _data(MODELS[key][1], batch)
    dense.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    # Its pruning step ends at 1 and stays there (the timed steps run no callbacks): every
    # timed step is an ordinary one, with its per-step mask ops and no mask update.
    pruned.fit(ds, steps_per_epoch=2, epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return {"tfmot_dense": dense, "tfmot": pruned}


def _plan(args):
    """Per-model (rounds, cycles per round, warm-up cycles): ResNet-20 steps are ~100x
    longer, and its warm-up ``fit`` already ran two steps of each variant."""
    return {k: (args.rounds, args.steps, None) if k != "resnet20" else
            (args.resnet_rounds, args.resnet_steps, 1) for k in MODELS}


def _checks(results, seconds):
    """Each target of the benchmark, per model: {name: bool}."""
    out = {}
    for key, entry in results.items():
        wall = entry["wall"]
        for name, limit in TARGETS.items():
            if name in wall:
                out[f"{key}:{name}<={limit}"] = wall[name] <= limit
        if "tfmot_over_dense" in wall:
            for name in ("static_over_dense", "rigl_over_dense"):
                out[f"{key}:{name}<tfmot"] = wall[name] < wall["tfmot_over_dense"]
    out[f"seconds<={MAX_SECONDS}"] = seconds <= MAX_SECONDS
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--models", default="lenet5,mlp,resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=16, help="timed rounds (small models)")
    parser.add_argument("--steps", type=int, default=20,
                        help="cycles (one step of each variant) per round (small models)")
    parser.add_argument("--resnet_rounds", type=int, default=8)
    parser.add_argument("--resnet_steps", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0, help="seed of the step order")
    parser.add_argument("--no_tfmot", action="store_true", help="skip tfmot's variants")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch, args.rounds, args.steps = "mlp", 16, 2, 3
        args.no_tfmot = True
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            parser.error(f"--models: unknown model {n!r}; known: {', '.join(MODELS)}")
    plan = _plan(args)
    start = time.time()
    load_before = os.getloadavg()
    import importlib.util

    tfmot = (not args.no_tfmot
             and importlib.util.find_spec("tensorflow_model_optimization") is not None)
    results = {}
    for n in names:
        rounds, steps, warmup = plan[n]
        results.update(bench_keras3([n], args.batch, rounds, steps, args.sparsity, args.seed,
                                    warmup=warmup, tfmot=tfmot))
    seconds = round(time.time() - start, 1)
    out = {
        "config": {"batch": args.batch, "sparsity": args.sparsity, "distribution": "erk",
                   "rigl_update_freq": UPDATE_FREQ, "optimizer": "SGD(0.01, momentum=0.9)",
                   "rounds_cycles_warmup": {n: plan[n] for n in names}, "seed": args.seed,
                   "tfmot": tfmot},
        "ratios": {k: v["wall"] for k, v in results.items()},
        "cpu_ratios": {k: v["cpu"] for k, v in results.items()},
        "details": results,
        "targets": TARGETS,
        "checks": _checks(results, seconds),
        "seconds": seconds,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skips tearing down TensorFlow's objects (see _KEEP)
