"""Benchmark: dense vs sparse inference latency of an MLP and a transformer feed-forward block.

Models (float32, CPU):

* ``mlp``: 784 - Dense(1024, relu) - Dense(1024, relu) - Dense(10);
* ``ffn``: a transformer feed-forward block, 512 - Dense(2048, gelu) - Dense(512).

For every sparsity (every kernel pruned uniformly with ``rigl_tf.sparsify``) and batch
size, the same weights are run four ways, each as a compiled ``tf.function`` with a fixed
input shape: ``dense`` (the stripped model: dense matmuls over the zeros) and the three
kernels of ``rigl_tf.inference.to_sparse_inference`` (``coo``, ``csr`` and the default
``auto``; ``sparse_ms`` is ``auto``). Latency is the median over single calls (each
includes fetching the output to numpy) after a warm-up; calls of the four paths are
interleaved in rounds so load from other processes hits all of them alike. Throughput is
batch / latency.

``crossover_sparsity[model]`` is the lowest measured sparsity from which on the sparse path
(``auto``) beats dense at batch 1, at that and every higher measured sparsity (null if it
does not win at the highest); ``crossover_sparsity_by_batch`` gives it for every batch.

Prints one JSON object on stdout (progress goes to stderr).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import rigl_tf  # noqa: E402
from rigl_tf import inference  # noqa: E402

SPARSE_KINDS = ("coo", "csr", "auto")


def build_models(quick):
    """Returns {name: (description, dense keras model)}."""
    if quick:
        mlp_sizes, d_model, d_ff = (32, 64, 64, 10), 32, 128
    else:
        mlp_sizes, d_model, d_ff = (784, 1024, 1024, 10), 512, 2048
    inputs = keras.Input((mlp_sizes[0],))
    x = inputs
    for width in mlp_sizes[1:-1]:
        x = keras.layers.Dense(width, activation="relu")(x)
    mlp = keras.Model(inputs, keras.layers.Dense(mlp_sizes[-1])(x), name="mlp")
    inputs = keras.Input((d_model,))
    x = keras.layers.Dense(d_ff, activation="gelu")(inputs)
    ffn = keras.Model(inputs, keras.layers.Dense(d_model)(x), name="ffn")
    return {
        "mlp": ("-".join(str(s) for s in mlp_sizes) + " (relu)", mlp),
        "ffn": (f"{d_model}-{d_ff} (gelu)-{d_model}", ffn),
    }


def compiled(model, shape):
    """A tf.function of the model's inference call, traced once for ``shape``."""
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))


def time_paths(fns, x, warmup, min_repeats, max_repeats, budget_s):
    """Median single-call latency (ms) of each function, interleaved in rounds."""
    per_call = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn(x).numpy()
        per_call[name] = (time.perf_counter() - start) / max(warmup, 1)
    estimate = sum(per_call.values())
    repeats = int(np.clip(budget_s / max(estimate, 1e-9), min_repeats, max_repeats))
    rounds = min(30, repeats)
    per_round = int(np.ceil(repeats / rounds))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn(x).numpy()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}, rounds * per_round


def crossover(cases, batch):
    """Lowest sparsity from which on sparse_ms < dense_ms at every higher sparsity."""
    rows = sorted((c["sparsity"], c["sparse_ms"] < c["dense_ms"])
                  for c in cases if c["batch"] == batch)
    best = None
    for sparsity, wins in reversed(rows):
        if not wins:
            break
        best = sparsity
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, two sparsities, few repeats (a smoke test)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=None,
                        help="sparsities to measure (default 0.8 0.9 0.95 0.98 0.99)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=None,
                        help="batch sizes (default 1 64)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per (model, sparsity, batch) case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sparsities = args.sparsities or ([0.9, 0.99] if args.quick else [0.8, 0.9, 0.95, 0.98, 0.99])
    for s in sparsities:
        if not 0.0 <= s < 1.0:
            parser.error(f"--sparsities must be in [0, 1), got {s}")
    batch_sizes = args.batch_sizes or [1, 64]
    if any(b < 1 for b in batch_sizes):
        parser.error(f"--batch_sizes must be positive, got {batch_sizes}")
    budget = args.budget if args.budget is not None else (0.05 if args.quick else 3.0)
    warmup, min_repeats, max_repeats = (3, 5, 20) if args.quick else (10, 30, 400)

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    result = {
        "quick": bool(args.quick),
        "device": "CPU",
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "auto_csr_min_rows": inference.AUTO_CSR_MIN_ROWS,
        "settings": {"sparsities": sparsities, "batch_sizes": batch_sizes, "warmup": warmup,
                     "min_repeats": min_repeats, "max_repeats": max_repeats,
                     "budget_seconds_per_case": budget},
        "models": {},
        "cases": [],
    }
    with tf.device("/CPU:0"):
        for name, (description, dense_model) in build_models(args.quick).items():
            result["models"][name] = {"layers": description,
                                      "params": int(dense_model.count_params())}
            input_dim = dense_model.input_shape[-1]
            for sparsity in sparsities:
                sparse = rigl_tf.sparsify(dense_model, sparsity, "uniform", seed=args.seed)
                plain = rigl_tf.strip(sparse)
                sparse_models = {
                    kind: inference.to_sparse_inference(sparse, min_sparsity=0.0, kind=kind)
                    for kind in SPARSE_KINDS
                }
                for batch in batch_sizes:
                    x = tf.constant(rng.standard_normal((batch, input_dim)).astype("float32"))
                    fns = {"dense": compiled(plain, x.shape)}
                    fns.update({k: compiled(m, x.shape) for k, m in sparse_models.items()})
                    reference = fns["dense"](x).numpy()
                    diff = max(float(np.max(np.abs(fns[k](x).numpy() - reference)))
                               for k in SPARSE_KINDS)
                    ms, repeats = time_paths(fns, x, warmup, min_repeats, max_repeats, budget)
                    case = {
                        "model": name,
                        "sparsity": sparsity,
                        "batch": batch,
                        "dense_ms": ms["dense"],
                        "sparse_ms": ms["auto"],
                        "coo_ms": ms["coo"],
                        "csr_ms": ms["csr"],
                        "speedup": ms["dense"] / ms["auto"],
                        "dense_examples_per_s": batch * 1e3 / ms["dense"],
                        "sparse_examples_per_s": batch * 1e3 / ms["auto"],
                        "repeats": repeats,
                        "max_abs_diff": diff,
                    }
                    result["cases"].append(case)
                    print(f"{name} sparsity={sparsity} batch={batch}: dense {ms['dense']:.3f} ms, "
                          f"coo {ms['coo']:.3f}, csr {ms['csr']:.3f}, auto {ms['auto']:.3f}",
                          file=sys.stderr, flush=True)
    names = list(result["models"])
    result["crossover_sparsity"] = {
        n: crossover([c for c in result["cases"] if c["model"] == n], 1)
        if 1 in batch_sizes else None
        for n in names
    }
    result["crossover_sparsity_by_batch"] = {
        n: {str(b): crossover([c for c in result["cases"] if c["model"] == n], b)
            for b in batch_sizes}
        for n in names
    }
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
