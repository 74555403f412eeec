r"""Distances between rigl-train checkpoints in weight space, and their MDS embedding.

For the checkpoints ``--checkpoint [LABEL=]SPEC`` (repeatable, >= 2; one architecture)
computes the L2, cosine and angular (on the shared support of the masks, Maene et al.)
distance between every pair of trainable weight sets, writes ``OUT_DIR/distances.json``
(``labels``, ``checkpoints``, and a (K, K) matrix per metric), one ``.npy`` matrix per
metric (``OUT_DIR/distances_<metric>.npy``) and, per metric, a heat map
``OUT_DIR/distances_<metric>.png`` and a 2-D classical MDS plot ``OUT_DIR/mds_<metric>.png``
(``--groups`` colours the points). Skipped when the JSON exists unless ``--overwrite``.

Example::

    rigl-distances --checkpoint /tmp/fm/rigl:0 --checkpoint /tmp/fm/rigl:1000 \
        --checkpoint /tmp/fm/rigl --out_dir /tmp/fm/distances
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rigl_tf.experiments import runs  # noqa: E402

METRICS = ("l2", "cosine", "angular")


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="[LABEL=]SPEC (repeatable, at least 2).")
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"Comma-separated subset of {', '.join(METRICS)}.")
    parser.add_argument("--groups", default=None,
                        help="Comma-separated group name per checkpoint (MDS colours).")
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)
    metrics = [m for m in args.metrics.split(",") if m]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise runs.ToolError(f"--metrics: got {args.metrics!r}; allowed: {', '.join(METRICS)}.")
    if len(args.checkpoint) < 2:
        raise runs.ToolError(f"--checkpoint: needs at least 2 checkpoints; got "
                             f"{len(args.checkpoint)}.")
    groups = args.groups.split(",") if args.groups else None
    if groups is not None and len(groups) != len(args.checkpoint):
        raise runs.ToolError(f"--groups: has {len(groups)} names; expected "
                             f"{len(args.checkpoint)}, one per --checkpoint.")
    js = os.path.join(args.out_dir, "distances.json")
    if runs.existing([js], args.overwrite, args):
        runs.load_json(js, "--out_dir", ("labels",) + tuple(metrics))
        print(f"{js} exists, skipped (use --overwrite to recompute).")
        return
    from rigl_tf.analysis import distance_matrix, mds_embedding, plot_barrier_matrix, plot_mds

    parsed = [runs.parse_checkpoint(s, "--checkpoint") for s in args.checkpoint]
    run = parsed[0][0]
    labels, weights, masks = [], [], []
    for _, prefix, label in parsed:
        run.restore(prefix, "--checkpoint")
        labels.append(label)
        weights.append(run.weights())
        masks.append(run.masks())
    if len(set(labels)) != len(labels):
        raise runs.ToolError(f"--checkpoint: labels must be unique; got {labels}.")
    out = {"labels": labels, "checkpoints": [p for _, p, _ in parsed]}
    for metric in metrics:
        matrix = distance_matrix(weights, metric, masks if metric == "angular" else None)
        out[metric] = matrix.tolist()
        runs.save_npy(os.path.join(args.out_dir, f"distances_{metric}.npy"), matrix)
        runs.save_plot(os.path.join(args.out_dir, f"distances_{metric}.png"),
                       plot_barrier_matrix, matrix, labels=labels,
                       title=f"{metric} distance")
        finite = np.nan_to_num(matrix, nan=0.0)
        coords = mds_embedding(finite, dims=2) if len(labels) >= 2 else None
        runs.save_plot(os.path.join(args.out_dir, f"mds_{metric}.png"), plot_mds, coords,
                       labels=labels, groups=groups, title=f"MDS of {metric} distances")
        print(f"{metric}:\n{np.array2string(matrix, precision=4)}")
    runs.save_json(js, out)
    print(f"Wrote {js}")


if __name__ == "__main__":
    sys.exit(main())
