r"""Hessian spectra of rigl-train checkpoints (exact, or stochastic Lanczos quadrature).

For every checkpoint (``--checkpoint [LABEL=]SPEC``, repeatable; SPEC is ``LOGDIR``,
``LOGDIR:STEP``, ``LOGDIR/ckpt-STEP`` or ``LOGDIR/mask_updates/before/ckpt-STEP``) and for
``--mask_update LOGDIR[:STEP]`` (the checkpoints just before and just after that mask
update; default the first one), computes the Hessian of the mean training loss over a fixed
subset of ``--num_examples`` training examples w.r.t. the active weights (``--spectrum
sparse``) or all weights (``dense``):

* ``--method exact``: the full matrix (``rigl_tf.analysis.hessian``) and all eigenvalues
  (``numpy.linalg.eigh``), saved to ``OUT_DIR/<label>.eigvals.npy``;
* ``--method slq``: a stochastic Lanczos quadrature density for models too big for the
  matrix, saved to ``OUT_DIR/<label>.slq.npy`` (rows: grid, density).

Each checkpoint also gets ``OUT_DIR/<label>.json`` (``checkpoint``, ``method``,
``spectrum``, ``num_examples``, ``num_params``, ``max_eigenvalue``, ``min_eigenvalue``,
``num_negative``, ``fraction_negative``, ``negative_ratio`` = |min| / max; for SLQ the
extremes are Ritz values, ``num_negative`` is null, ``fraction_negative`` is the quadrature
mass below ``-negative_threshold`` and ``quadrature`` holds the nodes and weights) and all
checkpoints share one plot, ``OUT_DIR/spectral_density.png``. Existing results are read back unless
``--overwrite``.

Example (before/after the RigL update at step 500, 500 examples)::

    rigl-hessian --mask_update /tmp/fm/rigl:500 --num_examples 500 \
        --out_dir /tmp/fm/hessian
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rigl_tf.experiments import runs  # noqa: E402

SUMMARY_KEYS = ("checkpoint", "method", "spectrum", "num_examples", "max_eigenvalue",
                "min_eigenvalue", "num_negative")


def _targets(args):
    """``[(label, run, prefix)]`` from --checkpoint and --mask_update, validated."""
    out = []
    for spec in args.checkpoint or []:
        run, prefix, label = runs.parse_checkpoint(spec, "--checkpoint")
        out.append((label, run, prefix))
    for spec in args.mask_update or []:
        base, step = spec, None
        if ":" in spec and spec.rsplit(":", 1)[1].isdigit():
            base, step = spec.rsplit(":", 1)[0], int(spec.rsplit(":", 1)[1])
        run = runs.load_run(base, "--mask_update")
        available = run.mask_update_steps()
        if not available:
            raise runs.ToolError(
                f"--mask_update: {base!r} has no mask_updates/{{before,after}} checkpoints; "
                "train with training.checkpoint_mask_updates = True.")
        step = available[0] if step is None else step
        if step not in available:
            raise runs.ToolError(
                f"--mask_update: no mask update at step {step} in {base!r}; available: "
                f"{runs._short(available)}.")
        name = os.path.basename(os.path.normpath(base))
        for kind in runs.MASK_UPDATE_KINDS:
            out.append((f"{name} {kind} {step}", run, run.prefix(step, kind, "--mask_update")))
    for spec in args.trajectory or []:
        name, base = spec.split("=", 1) if "=" in spec else (None, spec)
        run = runs.load_run(base, "--trajectory")
        name = name or os.path.basename(os.path.normpath(base))
        steps = run.steps if not args.steps else [s for s in args.steps if s in run.steps]
        if not steps:
            raise runs.ToolError(
                f"--trajectory: {base!r} has no checkpoint at the requested steps; available: "
                f"{runs._short(run.steps)}.")
        for step in steps:
            out.append((f"{name} step {step}", run, run.prefix(step, None, "--trajectory")))
            args.curves.setdefault(name, []).append((step, f"{name} step {step}"))
    if not out:
        raise runs.ToolError("--checkpoint: give at least one --checkpoint, --mask_update or "
                             "--trajectory.")
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise runs.ToolError(f"--checkpoint: labels must be unique; got {labels}.")
    return out


def _summary_slq(nodes, weights, tol):
    """Summary of an SLQ quadrature (``nodes``, ``weights`` summing to one).

    Lanczos smears the large bulk of near-zero eigenvalues over a few Ritz values just
    either side of zero, so the negative mass counts only nodes below
    ``-max(tol, 1e-3 * max |node|)``.
    """
    largest, smallest = float(nodes.max()), float(nodes.min())
    threshold = max(tol, 1e-3 * float(np.abs(nodes).max()))
    return {
        "max_eigenvalue": largest,
        "min_eigenvalue": smallest,
        "num_negative": None,
        "fraction_negative": float(weights[nodes < -threshold].sum()),
        "negative_threshold": threshold,
        "negative_ratio": abs(smallest) / largest if largest > 0 > smallest else float("nan"),
    }


def _arrays(data):
    """``(x, y)`` numpy arrays from arrays or a batched dataset (the whole split)."""
    if isinstance(data, (tuple, list)):
        return np.asarray(data[0]), np.asarray(data[1])
    xs, ys = [], []
    for element in data:
        xs.append(np.asarray(element[0]))
        ys.append(np.asarray(element[1]))
    return np.concatenate(xs), np.concatenate(ys)


def compute(run, prefix, data, args, label="hessian"):
    """Spectrum of one checkpoint: ``(array to save, summary dict)``.

    The exact spectrum is a resumable job (``rigl_tf.analysis.hessian_job``) whose partial
    sums, matrix and density plot live in ``OUT_DIR/jobs/``: a killed run continues there.
    """
    from rigl_tf.analysis.hessian import select_coordinates, slq_density, spectrum_summary

    model = run.restore(prefix)
    masks = run.masks()
    if args.method == "exact":
        from rigl_tf.analysis.hessian_job import run_hessian_job

        result = run_hessian_job(
            model, _arrays(data), os.path.join(args.out_dir, "jobs"), label=runs.safe_name(label),
            masks=masks, spectrum=args.spectrum, batch_size=args.batch_size,
            chunk_size=args.chunk_size, max_params=args.max_params,
            checkpoint_seconds=args.checkpoint_seconds)
        eigs = result["eigenvalues"]
        summary = spectrum_summary(eigs, tol=args.tol)
        summary["hessian_seconds"] = result["summary"]["hessian_seconds"]
        summary["method_used"] = result["summary"]["method"]
        return eigs, summary
    num_params = select_coordinates(model, masks, args.spectrum).num_params
    result = slq_density(model, data, num_probes=args.num_probes, num_steps=args.num_steps,
                         masks=masks, spectrum=args.spectrum, seed=args.data_seed)
    nodes = np.concatenate(result["nodes"])
    weights = np.concatenate(result["weights"]) / len(result["nodes"])
    summary = {"num_params": num_params}
    summary.update(_summary_slq(nodes, weights, args.tol))
    summary["quadrature"] = {"nodes": nodes.tolist(), "weights": weights.tolist()}
    return np.stack([result["grid"], result["density"]]), summary


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append",
                        help="[LABEL=]LOGDIR[:STEP] or a checkpoint prefix (repeatable).")
    parser.add_argument("--mask_update", action="append",
                        help="LOGDIR[:STEP]: the checkpoints before and after that mask update.")
    parser.add_argument("--trajectory", action="append",
                        help="[LABEL=]LOGDIR: every checkpoint of a run (or --steps); plots "
                             "|most negative eigenvalue| against the step (the paper's Fig. 11a).")
    parser.add_argument("--steps", type=lambda v: [int(t) for t in v.split(",") if t],
                        default=None, help="Comma-separated steps for --trajectory.")
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--method", default="exact", choices=("exact", "slq"))
    parser.add_argument("--spectrum", default="sparse", choices=("sparse", "dense"))
    parser.add_argument("--num_examples", type=int, default=500,
                        help="Training examples (a fixed seeded subset; default 500; 0 = the "
                             "whole training set).")
    parser.add_argument("--batch_size", type=int, default=256,
                        help="Examples per step of the exact Hessian job.")
    parser.add_argument("--checkpoint_seconds", type=float, default=60.0,
                        help="Save the exact job's partial sums at most this often.")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--chunk_size", type=int, default=64, help="Tangents per call.")
    parser.add_argument("--max_params", type=int, default=30000,
                        help="Refuse exact spectra with more coordinates (use --method slq).")
    parser.add_argument("--num_probes", type=int, default=8, help="SLQ probe vectors.")
    parser.add_argument("--num_steps", type=int, default=60, help="SLQ Lanczos steps.")
    parser.add_argument("--tol", type=float, default=0.0,
                        help="Eigenvalues below -tol count as negative.")
    parser.add_argument("--sigma", type=float, default=None,
                        help="Kernel width of the plotted density (default 1%% of the span).")
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)
    if args.num_examples < 0:
        raise runs.ToolError(f"--num_examples: must be >= 0 (0 = the whole training set); got "
                             f"{args.num_examples}.")
    if not args.checkpoint_seconds >= 0:
        raise runs.ToolError(f"--checkpoint_seconds: must be >= 0; got {args.checkpoint_seconds}.")
    for name in ("batch_size", "chunk_size", "max_params", "num_probes", "num_steps"):
        if getattr(args, name) < 1:
            raise runs.ToolError(f"--{name}: must be a positive integer; got "
                                 f"{getattr(args, name)}.")
    if args.tol < 0:
        raise runs.ToolError(f"--tol: must be >= 0; got {args.tol}.")
    if args.sigma is not None and not args.sigma > 0:
        raise runs.ToolError(f"--sigma: must be > 0; got {args.sigma}.")
    args.curves = {}
    targets = _targets(args)
    suffix = ".eigvals.npy" if args.method == "exact" else ".slq.npy"
    spectra, data_cache, todo = {}, {}, []
    for label, run, prefix in targets:  # read existing results first: bad ones fail early
        base = os.path.join(args.out_dir, runs.safe_name(label))
        npy, js = base + suffix, base + ".json"
        if runs.existing([npy, js], args.overwrite,
                         runs.request_of(args, label=label, prefix=prefix)):
            runs.load_json(js, "--out_dir", SUMMARY_KEYS)
            spectra[label] = runs.load_npy(npy, "--out_dir")
            print(f"{label}: {npy} exists, skipped (use --overwrite to recompute).")
        else:
            todo.append((label, run, prefix, npy, js))
    if args.method == "exact":  # refuse oversized problems before computing anything
        from rigl_tf.analysis.hessian import select_coordinates

        for label, run, prefix, _, _ in todo:
            run.restore(prefix)
            count = select_coordinates(run.model, run.masks(), args.spectrum).num_params
            if count > args.max_params:
                raise runs.ToolError(
                    f"--max_params: {label!r} has {count} {args.spectrum} coordinates, more "
                    f"than --max_params={args.max_params} (the matrix needs "
                    f"{8 * count ** 2 / 1e9:.1f} GB); use --method slq or raise --max_params.")
    for label, run, prefix, npy, js in todo:
        key = id(run)
        if key not in data_cache:
            data_cache[key] = run.data("train", args.num_examples, args.data_seed)
        array, stats = compute(run, prefix, data_cache[key], args, label)
        summary = {"checkpoint": prefix, "label": label, "method": args.method,
                   "spectrum": args.spectrum, "num_examples": args.num_examples,
                   "data_seed": args.data_seed}
        summary.update(stats)
        runs.save_npy(npy, array)
        runs.save_json(js, summary)
        spectra[label] = array
        print(f"{label}: {summary['num_params']} parameters, max eigenvalue "
              f"{summary['max_eigenvalue']:.4g}, min {summary['min_eigenvalue']:.4g}, "
              f"negative {summary['num_negative']} ({summary['fraction_negative']:.3%}); "
              f"wrote {npy}")
    in_curves = {label for points in args.curves.values() for _, label in points}
    densities = {label: spectra[label] for label, _, _ in targets if label not in in_curves}
    if densities:
        _plot(densities, args)
    if args.curves:
        _plot_trajectory(spectra, args)


def _plot_trajectory(spectra, args):
    """|most negative eigenvalue| against the training step, one curve per run (Fig. 11a)."""
    from rigl_tf.analysis import plot_curves

    curves, table = {}, {}
    for name, points in args.curves.items():
        steps = [step for step, _ in points]
        lowest = [float(np.min(spectra[label])) if args.method == "exact"
                  else float(np.min(spectra[label][0][spectra[label][1] > 0]))
                  for _, label in points]
        magnitude = [abs(min(v, 0.0)) for v in lowest]
        curves[name] = (steps, magnitude)
        table[name] = {"steps": steps, "min_eigenvalue": lowest,
                       "abs_min_negative_eigenvalue": magnitude}
    runs.save_json(os.path.join(args.out_dir, "trajectory.json"), table)
    png = os.path.join(args.out_dir, "negative_eigenvalue.png")
    runs.save_plot(png, plot_curves, curves, xlabel="training step",
                   ylabel="|most negative eigenvalue|",
                   title=f"Most negative Hessian eigenvalue ({args.spectrum}, {args.method})")
    print(f"Wrote {png}")


def _plot(spectra, args):
    from rigl_tf.analysis import plot_spectral_density
    from rigl_tf.analysis.hessian import spectral_density

    densities = {}
    if args.method == "exact":
        for label, eigs in spectra.items():
            if eigs.ndim != 1 or eigs.size == 0:
                raise runs.ToolError(f"--out_dir: eigenvalues of {label!r} have shape "
                                     f"{eigs.shape}; expected a non-empty 1-D array.")
        lo = min(float(e.min()) for e in spectra.values())
        hi = max(float(e.max()) for e in spectra.values())
        span = hi - lo if hi > lo else 1.0
        sigma = args.sigma or 0.01 * span
        grid = np.linspace(lo - 0.05 * span - 3 * sigma, hi + 0.05 * span + 3 * sigma, 1000)
        for label, eigs in spectra.items():
            densities[label] = (grid, spectral_density(eigs, grid, sigma))
    else:
        for label, array in spectra.items():
            if array.ndim != 2 or array.shape[0] != 2:
                raise runs.ToolError(f"--out_dir: SLQ density of {label!r} has shape "
                                     f"{array.shape}; expected (2, grid size).")
            densities[label] = (array[0], array[1])
    png = os.path.join(args.out_dir, "spectral_density.png")
    runs.save_plot(png, plot_spectral_density, densities,
                   title=f"Hessian spectral density ({args.spectrum}, {args.method})")
    print(f"Wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
