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
    if not out:
        raise runs.ToolError("--checkpoint: give at least one --checkpoint or --mask_update.")
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


def compute(run, prefix, data, args):
    """Spectrum of one checkpoint: ``(array to save, summary dict)``."""
    from rigl_tf.analysis.hessian import (
        eigenvalues,
        hessian,
        select_coordinates,
        slq_density,
        spectrum_summary,
    )

    model = run.restore(prefix)
    masks = run.masks()
    if args.method == "exact":
        matrix, _ = hessian(model, data, masks=masks, spectrum=args.spectrum,
                            chunk_size=args.chunk_size, max_params=args.max_params)
        eigs = eigenvalues(matrix)
        return eigs, spectrum_summary(eigs, tol=args.tol)
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
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--method", default="exact", choices=("exact", "slq"))
    parser.add_argument("--spectrum", default="sparse", choices=("sparse", "dense"))
    parser.add_argument("--num_examples", type=int, default=500,
                        help="Training examples (a fixed seeded subset; default 500).")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--chunk_size", type=int, default=32, help="Hessian columns per call.")
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
    for name in ("num_examples", "chunk_size", "max_params", "num_probes", "num_steps"):
        if getattr(args, name) < 1:
            raise runs.ToolError(f"--{name}: must be a positive integer; got "
                                 f"{getattr(args, name)}.")
    if args.tol < 0:
        raise runs.ToolError(f"--tol: must be >= 0; got {args.tol}.")
    if args.sigma is not None and not args.sigma > 0:
        raise runs.ToolError(f"--sigma: must be > 0; got {args.sigma}.")
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
        array, stats = compute(run, prefix, data_cache[key], args)
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
    _plot({label: spectra[label] for label, _, _ in targets}, args)


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
