"""Benchmark: exact sparse-spectrum Hessian of a sparse LeNet5, ours vs. a row-pair baseline.

Ours is `rigl_tf.analysis.hessian` (chunks of basis vectors through vectorised
forward-over-reverse products, rows limited by symmetry). The baseline does what the
original RigL analysis code did: for each pair of coordinates, one call computes the
Jacobian of those two gradient entries w.r.t. all trainable variables (reverse over
reverse) and keeps the selected columns. Both run compiled (`tf.function`), in the same
process, on the same batches. The baseline can be timed on a subset of row pairs and
extrapolated to all rows (reported as `baseline_extrapolated`); eigenvalues are compared on
the principal submatrix of the rows both computed (all rows when not extrapolated).

Prints one JSON object.
"""

import argparse
import gzip
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rigl_tf.analysis import _common  # noqa: E402
from rigl_tf.analysis.hessian import (  # noqa: E402
    METHODS,
    eigenvalues,
    hessian,
    select_coordinates,
    spectrum_summary,
)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def lenet5(filters=(20, 50), hidden=500, num_classes=10):
    """LeNet5 as in the RigL/gradient-flow experiments (28x28x1 input, logits output)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(filters[0], 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(filters[1], 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def random_masks(model, active_weights, rng):
    """Masks for every kernel with active counts proportional to kernel size (>= 1 each)."""
    kernels = [v for v in model.trainable_variables if len(v.shape) > 1]
    total = sum(int(np.prod(v.shape)) for v in kernels)
    masks = []
    for v in model.trainable_variables:
        if len(v.shape) <= 1:
            masks.append(None)
            continue
        size = int(np.prod(v.shape))
        count = max(1, int(round(active_weights * size / total)))
        flat = np.zeros(size, np.float32)
        flat[rng.choice(size, count, replace=False)] = 1.0
        masks.append(flat.reshape(v.shape))
    return masks


def sparse_init(model, masks, rng):
    """He-normal weights scaled to the active fan-in, small positive biases.

    With ~0.2% density a dense initialisation leaves almost every unit dead (zero biases,
    inputs that are nearly all zero), and the Hessian degenerates to the last bias's
    softmax block; scaling by the active fan-in and positive biases keep signals alive.
    """
    for v, m in zip(model.trainable_variables, masks):
        if m is None:
            v.assign(rng.uniform(0.0, 0.1, v.shape).astype(np.float32))
            continue
        fan_in = int(np.prod(v.shape[:-1]))
        density = float(m.mean())
        std = np.sqrt(2.0 / (fan_in * density))
        v.assign((rng.normal(0.0, std, v.shape) * m).astype(np.float32))


def stratified_rows(coords, count, rng):
    """`count` distinct coordinates: two from every variable (when it has them), rest random."""
    chosen = set()
    for i in range(len(coords.paths)):
        lo, hi = int(coords.offsets[i]), int(coords.offsets[i + 1])
        chosen.update(rng.choice(np.arange(lo, hi), min(2, hi - lo), replace=False).tolist())
    rest = np.setdiff1d(np.arange(coords.num_params), sorted(chosen))
    extra = max(0, count - len(chosen))
    chosen.update(rng.choice(rest, min(extra, len(rest)), replace=False).tolist())
    return np.array(sorted(chosen))


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(source, examples, rng):
    """Fashion-MNIST test examples if available (and asked for), else random images."""
    images = os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz")
    if source in ("auto", "fashion_mnist") and os.path.exists(images):
        x = _read_idx(images)[:examples].astype(np.float32)[..., None] / 255.0
        y = _read_idx(labels)[:examples].astype(np.int32)
        return x, y, "fashion_mnist"
    if source == "fashion_mnist":
        raise SystemExit(f"--data=fashion_mnist but {images} does not exist.")
    x = rng.random((examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, examples).astype(np.int32)
    return x, y, "random"


class Baseline:
    """The row-pair baseline: one compiled call per pair of Hessian rows."""

    def __init__(self, model, batches, num_examples, coords):
        self.batches, self.num_examples, self.coords = batches, num_examples, coords
        variables = [_common.tf_variable(v) for v in model.trainable_variables]
        sizes = [int(np.prod(s)) for s in coords.shapes]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        selected = tf.constant(
            np.concatenate([s + idx for s, idx in zip(starts, coords.flat_indices)]).astype(
                np.int64
            )
        )

        @tf.function
        def pair(x, y, two):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    total = _common.loss_sum(y, model(x, training=False))
                grads = inner.gradient(total, variables)
                flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
                entries = tf.gather(flat, tf.gather(selected, two))
            jac = outer.jacobian(entries, variables, experimental_use_pfor=True)
            full = tf.concat([tf.reshape(j, [2, -1]) for j in jac], axis=1)
            return tf.gather(full, selected, axis=1)

        self._pair = pair
        t0 = time.perf_counter()
        for x, y in batches:  # trace (once per batch shape) and warm up
            pair(x, y, tf.constant(np.zeros(2, np.int64)))
        self.trace_seconds = time.perf_counter() - t0

    def rows(self, rows):
        """H[rows, :] two rows per call; returns (matrix, wall seconds, cpu seconds, calls)."""
        out = np.zeros((len(rows), self.coords.num_params))
        wall, cpu = time.perf_counter(), time.process_time()
        calls = 0
        for k in range(0, len(rows), 2):
            two = rows[k : k + 2] if k + 1 < len(rows) else [rows[k], rows[k]]
            block = 0.0
            for x, y in self.batches:
                block = block + self._pair(x, y, tf.constant(np.asarray(two, np.int64))).numpy()
            out[k : k + 2] = block[: len(rows[k : k + 2])] / self.num_examples
            calls += 1
        return out, time.perf_counter() - wall, time.process_time() - cpu, calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--chunk_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument(
        "--active_weights",
        type=int,
        default=2400,
        help="active kernel weights in total (biases are all active)",
    )
    parser.add_argument(
        "--baseline_rows",
        type=int,
        default=40,
        help="rows timed for the baseline; <= 0 computes all rows",
    )
    parser.add_argument("--method", default="forward_over_reverse", choices=METHODS)
    parser.add_argument("--data", default="auto", choices=("auto", "fashion_mnist", "random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny LeNet5 (2/3 filters, 8 hidden), 32 examples, all rows",
    )
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.quick:
        model = lenet5(filters=(2, 3), hidden=8)
        args.examples, args.active_weights, args.baseline_rows = 32, 60, 0
        args.batch_size = min(args.batch_size, 32)
    else:
        model = lenet5()
    masks = random_masks(model, args.active_weights, rng)
    sparse_init(model, masks, rng)
    x, y, source = load_data(args.data, args.examples, rng)
    data = (x, y)

    # The baseline's timed rows are split into one half before and one half after our
    # method, so a change of load on a shared machine affects both measurements alike.
    coords = select_coordinates(model, masks, "sparse")
    num_params = coords.num_params
    batches, num_examples = _common.materialize_batches(data, args.batch_size)
    if args.baseline_rows <= 0 or args.baseline_rows >= num_params:
        rows = np.arange(num_params)
    else:
        rows = stratified_rows(coords, args.baseline_rows, rng)
    baseline = Baseline(model, batches, num_examples, coords)
    half = 2 * ((len(rows) // 2 + 1) // 2)  # an even split keeps pairs intact
    base_a, wall_a, cpu_a, calls_a = baseline.rows(rows[:half])

    t0, c0 = time.perf_counter(), time.process_time()
    matrix, coords = hessian(
        model,
        data,
        masks,
        "sparse",
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        method=args.method,
    )
    ours_seconds = time.perf_counter() - t0
    ours_cpu = time.process_time() - c0

    base_b, wall_b, cpu_b, calls_b = baseline.rows(rows[half:])
    base = np.concatenate([base_a, base_b])
    calls = calls_a + calls_b
    per_pair, per_pair_cpu = (wall_a + wall_b) / calls, (cpu_a + cpu_b) / calls
    num_pairs_total = (num_params + 1) // 2
    baseline_seconds = baseline.trace_seconds + per_pair * num_pairs_total
    baseline_cpu = per_pair_cpu * num_pairs_total  # tracing excluded: a lower bound
    extrapolated = len(rows) < num_params

    sub_ours = matrix[np.ix_(rows, rows)]
    sub_base = base[:, rows]
    sub_base = (sub_base + sub_base.T) / 2
    eig_ours = np.linalg.eigvalsh(sub_ours)
    eig_base = np.linalg.eigvalsh(sub_base)
    full_eigs = eigenvalues(matrix)
    summary = spectrum_summary(full_eigs)
    result = {
        "ours_seconds": round(ours_seconds, 3),
        "baseline_seconds": round(baseline_seconds, 3),
        "speedup": round(baseline_seconds / ours_seconds, 2),
        "ours_cpu_seconds": round(ours_cpu, 3),
        "baseline_cpu_seconds_without_trace": round(baseline_cpu, 3),
        "speedup_cpu": round(baseline_cpu / ours_cpu, 2),
        "max_abs_eig_diff": float(np.max(np.abs(eig_ours - eig_base))),
        "max_rel_eig_diff": float(
            np.max(np.abs(eig_ours - eig_base)) / max(np.max(np.abs(eig_base)), 1e-30)
        ),
        "max_abs_row_diff": float(np.max(np.abs(matrix[rows] - base))),
        "max_abs_hessian_entry": float(np.max(np.abs(matrix))),
        "eig_check": (
            "all rows"
            if not extrapolated
            else f"principal {len(rows)}x{len(rows)} submatrix of the baseline rows"
        ),
        "num_params": num_params,
        "num_active_weights": int(sum(int(m.sum()) for m in masks if m is not None)),
        "num_weights_total": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        "examples": num_examples,
        "data": source,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "method": args.method,
        "baseline_rows_timed": int(len(rows)),
        "baseline_extrapolated": bool(extrapolated),
        "baseline_trace_seconds": round(baseline.trace_seconds, 3),
        "baseline_seconds_per_pair": round(per_pair, 4),
        "max_eigenvalue": summary["max_eigenvalue"],
        "min_eigenvalue": summary["min_eigenvalue"],
        "fraction_negative": summary["fraction_negative"],
        "quick": bool(args.quick),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
