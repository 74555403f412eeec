r"""Loss and error along paths between rigl-train checkpoints; error barriers; planes.

Checkpoints are ``[LABEL=]SPEC`` with SPEC ``LOGDIR`` (latest), ``LOGDIR:STEP``,
``LOGDIR/ckpt-STEP`` or a mask-update checkpoint; all must share one architecture (the
model is rebuilt from the first checkpoint's logdir). Every weight of the model is
interpolated (non-trainable state such as batch-norm statistics included). Modes:

* default (``--start A --end B``): (1 - a) A + a B for ``--num_alphas`` points a in
  [``--alpha_min``, ``--alpha_max``] (default 29 points in [-0.2, 1.2]); ``--masks
  start|end|none`` keeps the interpolated weights on one end's sparse support. Writes
  ``OUT_DIR/<name>.json`` (``alphas``, ``loss``, ``accuracy``, ``error``, ``barrier``,
  ``start``, ``end``, ``masks``) and ``OUT_DIR/<name>.png``.
* ``--instability LOGDIR_A LOGDIR_B``: two runs trained from the same checkpoint with
  different data orders; the barrier between their final checkpoints (Frankle et al.'s
  instability). Writes ``OUT_DIR/<name>.json`` (also ``instability`` = error barrier).
* ``--pairwise SPEC SPEC ...``: the loss and error barrier between every pair (e.g.
  successive IMP levels); ``OUT_DIR/<name>.json`` (``labels``, ``loss``, ``error``
  matrices) and a heat map ``OUT_DIR/<name>.png``.
* ``--plane SPEC SPEC SPEC``: loss/error on the plane through three checkpoints
  (``--grid`` points per side); ``OUT_DIR/<name>.json`` (``a``, ``b``, ``loss``,
  ``accuracy``, ``error``, ``points``, ``labels``) and a contour plot ``OUT_DIR/<name>.png``.

A result whose JSON exists is not recomputed unless ``--overwrite``.

Example::

    rigl-interpolate --start /tmp/fm/rigl:0 --end /tmp/fm/rigl \
        --split test --out_dir /tmp/fm/interp
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rigl_tf.experiments import runs  # noqa: E402

MASK_CHOICES = ("none", "start", "end")


def _load(specs, name):
    """``(run of the first spec, [(label, weights, masks)])`` for checkpoint specs."""
    from rigl_tf.analysis import get_weights

    parsed = [runs.parse_checkpoint(s, name) for s in specs]
    run = parsed[0][0]
    out = []
    for _, prefix, label in parsed:
        # One model (the first run's) holds every checkpoint; restore() refuses another
        # architecture.
        run.restore(prefix, name)
        out.append((label, get_weights(run.model, "all"), run.masks()))
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise runs.ToolError(f"{name}: labels must be unique; got {labels} (use LABEL=SPEC).")
    return run, out


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--start", help="Start checkpoint (default mode).")
    parser.add_argument("--end", help="End checkpoint (default mode).")
    parser.add_argument("--instability", nargs=2, metavar="LOGDIR",
                        help="Two runs from the same checkpoint with different data orders.")
    parser.add_argument("--pairwise", nargs="+", metavar="SPEC",
                        help="Barrier matrix over these checkpoints.")
    parser.add_argument("--plane", nargs=3, metavar="SPEC",
                        help="Plane through three checkpoints.")
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--name", default=None,
                        help="Output file stem (default: interpolation, instability, "
                        "pairwise or plane).")
    parser.add_argument("--alpha_min", type=float, default=-0.2)
    parser.add_argument("--alpha_max", type=float, default=1.2)
    parser.add_argument("--num_alphas", type=int, default=29)
    parser.add_argument("--masks", default="none", choices=MASK_CHOICES,
                        help="Apply the masks of the start or end checkpoint along the path.")
    parser.add_argument("--grid", type=int, default=11, help="Plane grid points per side.")
    runs.add_data_args(parser, "test", 0)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)

    modes = [m for m in ("instability", "pairwise", "plane") if getattr(args, m)]
    if len(modes) > 1:
        raise runs.ToolError(f"--{modes[1]}: cannot be combined with --{modes[0]}; pick one mode.")
    mode = modes[0] if modes else "interpolation"
    if mode == "interpolation" and not (args.start and args.end):
        raise runs.ToolError("--start/--end: both are required unless --instability, "
                             "--pairwise or --plane is given.")
    if mode != "interpolation" and (args.start or args.end):
        raise runs.ToolError(f"--start/--end: not used with --{mode}; remove them.")
    if args.num_alphas < 2:
        raise runs.ToolError(f"--num_alphas: must be >= 2; got {args.num_alphas}.")
    if not args.alpha_min <= 0.0 < 1.0 <= args.alpha_max:
        raise runs.ToolError(f"--alpha_min/--alpha_max: the range [{args.alpha_min}, "
                             f"{args.alpha_max}] must contain [0, 1].")
    if args.grid < 2:
        raise runs.ToolError(f"--grid: must be >= 2; got {args.grid}.")
    if args.pairwise is not None and len(args.pairwise) < 2:
        raise runs.ToolError(f"--pairwise: needs at least 2 checkpoints; got {args.pairwise}.")
    name = args.name or mode
    js = os.path.join(args.out_dir, runs.safe_name(name) + ".json")
    png = os.path.join(args.out_dir, runs.safe_name(name) + ".png")
    if runs.existing([js, png], args.overwrite, args):
        runs.load_json(js, "--out_dir")
        print(f"{js} exists, skipped (use --overwrite to recompute).")
        return
    if mode == "interpolation":
        _line(args, [args.start, args.end], js, png, "--start/--end")
    elif mode == "instability":
        _line(args, list(args.instability), js, png, "--instability")
    elif mode == "pairwise":
        _pairwise(args, js, png)
    else:
        _plane(args, js, png)


def _alphas(args):
    alphas = np.linspace(args.alpha_min, args.alpha_max, args.num_alphas)
    # Keep 0 and 1 exactly on the grid (the barrier needs the endpoints).
    return np.unique(np.concatenate([alphas, [0.0, 1.0]]).round(12))


def _line(args, specs, js, png, name):
    from rigl_tf.analysis import error_barrier, interpolate, plot_interpolation

    run, points = _load(specs, name)
    (la, wa, ma), (lb, wb, mb) = points
    masks = {"none": None, "start": ma, "end": mb}[args.masks]
    data = run.data(args.split, args.num_examples, args.data_seed)
    alphas = _alphas(args)
    with runs.progress(args, len(alphas), "interpolate"):
        result = interpolate(run.model, wa, wb, data, alphas, masks=masks,
                             batch_size=args.batch_size)
    barrier = error_barrier(result)
    out = {k: np.asarray(v).tolist() for k, v in result.items()}
    out.update({"start": la, "end": lb, "masks": args.masks, "split": args.split,
                "num_examples": args.num_examples, "barrier": barrier})
    if name == "--instability":
        out["instability"] = barrier["error"]
    runs.save_json(js, out)
    runs.save_plot(png, plot_interpolation, {f"{la} -> {lb}": result},
                   title=f"Linear interpolation ({args.split})")
    print(f"{la} -> {lb}: error barrier {barrier['error']:.4f} (alpha {barrier['error_alpha']:.2f})"
          f", loss barrier {barrier['loss']:.4f}; wrote {js}, {png}")


def _pairwise(args, js, png):
    from rigl_tf.analysis import pairwise_barriers, plot_barrier_matrix

    run, points = _load(args.pairwise, "--pairwise")
    masks = {"none": None, "start": points[0][2], "end": points[-1][2]}[args.masks]
    data = run.data(args.split, args.num_examples, args.data_seed)
    k = len(points)
    with runs.progress(args, k * (k - 1) // 2 * 11, "pairwise barriers"):
        result = pairwise_barriers(run.model, [w for _, w, _ in points], data,
                                   alphas=np.linspace(0.0, 1.0, 11), masks=masks,
                                   batch_size=args.batch_size)
    labels = [label for label, _, _ in points]
    out = {"labels": labels, "loss": result["loss"].tolist(), "error": result["error"].tolist(),
           "masks": args.masks, "split": args.split, "num_examples": args.num_examples}
    runs.save_json(js, out)
    runs.save_plot(png, plot_barrier_matrix, result["error"], labels=labels,
                   title="Error barrier")
    print(f"Pairwise error barriers:\n{np.array2string(result['error'], precision=4)}\n"
          f"wrote {js}, {png}")


def _plane(args, js, png):
    from rigl_tf.analysis import plane, plot_plane

    run, points = _load(args.plane, "--plane")
    masks = {"none": None, "start": points[0][2], "end": points[-1][2]}[args.masks]
    data = run.data(args.split, args.num_examples, args.data_seed)
    try:
        with runs.progress(args, args.grid * args.grid, "plane"):
            result = plane(run.model, *[w for _, w, _ in points], data, grid=args.grid,
                           masks=masks, batch_size=args.batch_size)
    except ValueError as e:  # coincident or collinear points
        raise runs.ToolError(f"--plane: {e}") from None
    labels = [label for label, _, _ in points]
    out = {k: np.asarray(v).tolist() for k, v in result.items()}
    out.update({"labels": labels, "masks": args.masks, "split": args.split,
                "num_examples": args.num_examples})
    runs.save_json(js, out)
    runs.save_plot(png, plot_plane, result, point_labels=labels)
    print(f"Plane through {labels}: error range {np.min(result['error']):.4f} - "
          f"{np.max(result['error']):.4f}; wrote {js}, {png}")


if __name__ == "__main__":
    sys.exit(main())
