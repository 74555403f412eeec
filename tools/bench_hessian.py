"""Benchmark: exact sparse Hessian, ours vs. the reference's row-by-row procedure, all rows.

For each model (the paper's LeNet5 at 95% and the MLP 300-100 at 99%, ERK masks, unit-scaled
sparse init, the first `--examples` Fashion-MNIST training images):

* ours: `rigl_tf.analysis.hessian(model, data, method=--method)` called fresh (tracing
  included), timed once before and once after the reference; the slower run is reported;
* reference: the procedure of google-research/rigl `rigl_tf2/train.py` (`get_rows` and
  `sparse_hessian_calculator`) as the paper describes it: all examples in one batch; for each
  variable (kernels and biases in layer order) and each pair of its active coordinates
  (`np.array_split` into pairs, `rows_at_once=2`), one compiled call with a persistent tape
  takes the gradient of the mean loss w.r.t. that variable, multiplies it by the variable's
  mask, gathers the two entries and computes their non-vectorised `tape.jacobian`
  (`experimental_use_pfor=False`) w.r.t. all variables, keeping the active columns. Every row
  is computed; nothing is extrapolated.

Both matrices are symmetrised and their full spectra compared with `numpy.linalg.eigh`.
Prints one JSON object (per model: wall and CPU seconds, ratios, coordinates, examples, max
eigenvalue difference relative to the largest |eigenvalue|, load averages).
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
from rigl_tf.analysis.hessian import hessian, wrapper_masks  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def paper_lenet5(filters=(6, 16), hidden=(120, 84), num_classes=10):
    """The paper's LeNet5: conv 6 5x5 valid - pool - conv 16 5x5 valid - pool - 120 - 84 - 10."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(filters[0], 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(filters[1], 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden[0], activation="relu"),
            keras.layers.Dense(hidden[1], activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def mlp(hidden=(300, 100), num_classes=10):
    """The MLP 300-100 on 28x28x1 inputs."""
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten()]
        + [keras.layers.Dense(h, activation="relu") for h in hidden]
        + [keras.layers.Dense(num_classes)]
    )


def load_data(examples, rng):
    """The first `examples` Fashion-MNIST training images (random images if absent)."""
    x, y = _read_fashion(examples)
    if x is None:
        x = rng.random((examples, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, examples).astype(np.int32)
        return x, y, "random"
    return x, y, "fashion_mnist"


def _read_fashion(examples):
    import gzip

    images = os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None, None

    def read(path):
        with gzip.open(path, "rb") as f:
            data = f.read()
        ndim = data[3]
        shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)

    x = read(images)[:examples].astype(np.float32)[..., None] / 255.0
    y = read(labels)[:examples].astype(np.int32)
    return x, y


def reference_hessian(model, x, y):
    """The reference's row-by-row procedure; returns (rows matrix, wall s, cpu s)."""
    variables = list(model.trainable_variables)
    masks = [m if m is not None else np.ones(v.shape, np.float32)
             for v, m in zip(variables, wrapper_masks(model))]
    masks = [tf.constant(m, v.dtype) for v, m in zip(variables, masks)]
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def get_rows(ind_l, indices, x_batch, y_batch):
        with tf.GradientTape(persistent=True) as tape:
            predictions = model(x_batch, training=True)
            loss = loss_object(y_batch, predictions)
            (grads,) = tape.gradient(loss, [variables[ind_l]])
            sparse_grads = grads * masks[ind_l]
            s_grads = tf.gather(tf.reshape(sparse_grads, [-1]), indices)
        jac = tape.jacobian(s_grads, variables, experimental_use_pfor=False)
        parts = []
        for h, m in zip(jac, masks):
            keep = tf.broadcast_to(tf.equal(m, 1), h.shape)
            parts.append(tf.reshape(h[keep], (h.shape[0], -1)))
        return tf.concat(parts, 1)

    x_batch, y_batch = tf.constant(x), tf.constant(y)
    rows = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i, m in enumerate(masks):
        inds = np.flatnonzero(m.numpy().reshape(-1))
        if len(inds) == 0:
            continue
        for c_slice in np.array_split(inds, int(np.ceil(len(inds) / 2))):
            rows.append(get_rows(i, tf.constant(c_slice), x_batch, y_batch).numpy())
    matrix = np.concatenate(rows, 0).astype(np.float64)
    return matrix, time.perf_counter() - wall, time.process_time() - cpu


def ours(model, x, y, args):
    wall, cpu = time.perf_counter(), time.process_time()
    matrix, coords = hessian(model, (x, y), method=args.method, batch_size=args.batch_size,
                             chunk_size=args.chunk_size)
    return matrix, coords, time.perf_counter() - wall, time.process_time() - cpu


def run_case(name, builder, sparsity, args, rng):
    keras.utils.set_random_seed(args.seed)
    model = rigl_tf.sparsify(builder(), sparsity=sparsity, distribution="erk",
                             init="unit_scaled", seed=args.seed)
    x, y, source = load_data(args.examples, rng)
    load_before = os.getloadavg()
    first, coords, wall_1, cpu_1 = ours(model, x, y, args)
    ref, ref_wall, ref_cpu = reference_hessian(model, x, y)
    second, _, wall_2, cpu_2 = ours(model, x, y, args)
    load_after = os.getloadavg()
    ref_sym = (ref + ref.T) / 2.0
    t0 = time.perf_counter()
    eig_ours = np.linalg.eigh(first)[0]
    eigh_seconds = time.perf_counter() - t0
    eig_ref = np.linalg.eigh(ref_sym)[0]
    scale = float(np.max(np.abs(eig_ref)))
    ours_wall, ours_cpu = max(wall_1, wall_2), max(cpu_1, cpu_2)
    return {
        "model": name,
        "sparsity": sparsity,
        "distribution": "erk",
        "coordinates": int(coords.num_params),
        "active_weights": int(sum(int(np.sum(m)) for m in wrapper_masks(model) if m is not None)),
        "total_parameters": int(model.count_params() - sum(
            int(np.prod(m.shape)) for m in wrapper_masks(model) if m is not None)),
        "examples": int(len(x)),
        "data": source,
        "method": args.method,
        "ours_wall_seconds": round(ours_wall, 3),
        "ours_cpu_seconds": round(ours_cpu, 3),
        "ours_runs_wall_seconds": [round(wall_1, 3), round(wall_2, 3)],
        "reference_wall_seconds": round(ref_wall, 3),
        "reference_cpu_seconds": round(ref_cpu, 3),
        "speedup_wall": round(ref_wall / ours_wall, 2),
        "speedup_cpu": round(ref_cpu / ours_cpu, 2),
        "reference_calls": int(np.ceil(coords.num_params / 2)),
        "eigh_seconds": round(eigh_seconds, 3),
        "max_eig_diff_relative": float(np.max(np.abs(eig_ours - eig_ref)) / scale),
        "max_abs_entry_diff": float(np.max(np.abs(first - ref_sym))),
        "max_abs_entry": float(np.max(np.abs(ref_sym))),
        "reference_asymmetry": float(np.max(np.abs(ref - ref.T))),
        "runs_agree": float(np.max(np.abs(first - second))),
        "max_eigenvalue": float(eig_ref[-1]),
        "min_eigenvalue": float(eig_ref[0]),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--method", default="split")
    parser.add_argument("--models", default="lenet5,mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="tiny LeNet5 (2/3 filters, 8/6 hidden) and MLP 20-10, 16 examples")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.quick:
        cases = {"lenet5": ("lenet5 (2, 3, 8, 6) quick", lambda: paper_lenet5((2, 3), (8, 6)), 0.9),
                 "mlp": ("mlp 20-10 quick", lambda: mlp((20, 10)), 0.95)}
        args.examples = 16
    else:
        cases = {"lenet5": ("lenet5 (paper: 6, 16, 120, 84)", paper_lenet5, 0.95),
                 "mlp": ("mlp 300-100", mlp, 0.99)}
    result = {"quick": bool(args.quick), "results": []}
    for key in args.models.split(","):
        name, builder, sparsity = cases[key]
        result["results"].append(run_case(name, builder, sparsity, args, rng))
    result["min_speedup_wall"] = min(r["speedup_wall"] for r in result["results"])
    result["max_eig_diff_relative"] = max(r["max_eig_diff_relative"] for r in result["results"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
