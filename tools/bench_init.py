"""Benchmark: masks + sparsity-aware init for ResNet-50 (ImageNet shapes) at 90% ERK.

Prints one JSON object. Compares with a naive per-weight Python loop (the way the original
TF2 code initialised sparse weights) on a single 100x100 layer at 50% density.

    python tools/bench_init.py            # full
    python tools/bench_init.py --quick    # tiny smoke run (used by the tests)
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import rigl_tf  # noqa: E402
from rigl_tf.experiments.models import get_model  # noqa: E402


def naive_loop_init(mask, scale=2.0, seed=0):
    """Per-weight loop: for every active weight, count its unit's fan-in and draw it."""
    rng = np.random.RandomState(seed)
    out = np.zeros_like(mask, dtype=np.float32)
    n_in, n_out = mask.shape
    for i in range(n_in):
        for j in range(n_out):
            if mask[i, j]:
                fan_in = sum(mask[k, j] for k in range(n_in))
                out[i, j] = rng.normal() * np.sqrt(scale / fan_in)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny shapes for a smoke test")
    args = parser.parse_args()
    if args.quick:
        model = get_model("resnet20", (32, 32, 3), 10)
        name = "resnet20"
    else:
        model = get_model("resnet50", (224, 224, 3), 1000)
        name = "resnet50"
    t0 = time.perf_counter()
    sparse = rigl_tf.sparsify(model, 0.9, "erk", init="dense")
    t_wrap = time.perf_counter() - t0
    t0 = time.perf_counter()
    rigl_tf.init_masks(sparse, 0.9, "erk", seed=0)
    t_masks = time.perf_counter() - t0
    t0 = time.perf_counter()
    rigl_tf.initialize(sparse, "unit_scaled", method="fanin_normal", scale=2.0, seed=0)
    t_init = time.perf_counter() - t0
    report = rigl_tf.sparsity_report(sparse)

    mask = (np.random.RandomState(0).rand(100, 100) < 0.5).astype(np.float32)
    t0 = time.perf_counter()
    naive_loop_init(mask)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    rigl_tf.sparsity.unit_scaled(mask, (0,), (1,), "fanin_normal", 2.0).numpy()
    t_vec = time.perf_counter() - t0

    masks_and_init = t_masks + t_init
    print(json.dumps({
        "model": name,
        "prunable_params": report.total["size"],
        "active_params": report.total["active"],
        "sparsity": round(report.total["sparsity"], 6),
        f"{name}_erk90_unit_scaled_seconds": round(masks_and_init, 4),
        "resnet50_erk90_unit_scaled_seconds": round(masks_and_init, 4) if name == "resnet50" else None,
        "masks_seconds": round(t_masks, 4),
        "unit_scaled_init_seconds": round(t_init, 4),
        "clone_and_wrap_seconds": round(t_wrap, 4),
        "naive_loop_100x100_seconds": round(t_naive, 4),
        "vectorised_100x100_seconds": round(t_vec, 5),
        "target_seconds": 5.0,
        "meets_target": masks_and_init < 5.0,
    }))


if __name__ == "__main__":
    main()
