r"""Plot scalar summaries of several rigl-train logdirs against the training step.

Reads the event files under ``LOGDIR/summaries`` (core TensorFlow; TensorBoard is not
needed). ``--list_tags`` prints the scalar tags of every logdir (one per line, with the
number of points). Otherwise every ``--tag`` (repeatable) is drawn for all runs
(``--logdir [LABEL=]LOGDIR``, repeatable) on one figure per tag,
``OUT_DIR/<tag>.png``, and the plotted values go to ``OUT_DIR/<tag>.json`` (``tag``,
``runs``: {label: {``steps``, ``values``}}). Existing plots are kept unless ``--overwrite``.

Example::

    rigl-plot-runs --logdir Scratch=/tmp/fm/scratch_s1 --logdir RigL=/tmp/fm/rigl \
        --tag gradient_flow/norm --logy --out_dir /tmp/fm/plots
    rigl-plot-runs --logdir /tmp/fm/rigl --list_tags
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rigl_tf.experiments import runs  # noqa: E402


def _parse_runs(values):
    out = {}
    for value in values:
        label, path = (value.split("=", 1) if "=" in value and not os.path.isdir(value)
                       else (None, value))
        label = label or os.path.basename(os.path.normpath(path))
        if label in out:
            raise runs.ToolError(f"--logdir: label {label!r} is used twice; give LABEL=LOGDIR.")
        out[label] = path
    return out


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--logdir", action="append", required=True,
                        help="[LABEL=]LOGDIR (repeatable).")
    parser.add_argument("--tag", action="append", help="Scalar tag to plot (repeatable).")
    parser.add_argument("--list_tags", action="store_true", help="List the scalar tags.")
    parser.add_argument("--out_dir", default=None, help="Output directory (for --tag).")
    parser.add_argument("--logy", action="store_true", help="Logarithmic y axis.")
    parser.add_argument("--overwrite", action="store_true", help="Redraw existing plots.")
    args = parser.parse_args(argv)
    logdirs = _parse_runs(args.logdir)
    scalars = {label: runs.read_scalars(path, "--logdir") for label, path in logdirs.items()}
    if args.list_tags:
        for label, series in scalars.items():
            print(f"{label} ({logdirs[label]}):")
            for tag, (steps, _) in series.items():
                print(f"  {tag}  ({len(steps)} points)")
        return
    if not args.tag:
        raise runs.ToolError("--tag: give at least one tag to plot (see --list_tags).")
    if not args.out_dir:
        raise runs.ToolError("--out_dir: required with --tag.")
    from rigl_tf.analysis import plot_curves

    for tag in args.tag:
        missing = [label for label, series in scalars.items() if tag not in series]
        if missing:
            known = sorted(set().union(*[set(s) for s in scalars.values()]))
            raise runs.ToolError(f"--tag: {tag!r} is not in {missing}; available tags: "
                                 f"{', '.join(known[:30])}{' ...' if len(known) > 30 else ''}.")
    for tag in args.tag:
        stem = os.path.join(args.out_dir, runs.safe_name(tag.replace("/", "__")))
        if runs.existing([stem + ".png", stem + ".json"], args.overwrite,
                         runs.request_of(args, tag=tag)):
            print(f"{stem}.png exists, skipped (use --overwrite to redraw).")
            continue
        curves = {label: series[tag] for label, series in scalars.items()}
        runs.save_json(stem + ".json", {"tag": tag, "runs": {
            label: {"steps": s.tolist(), "values": v.tolist()} for label, (s, v) in
            curves.items()}})
        runs.save_plot(stem + ".png", plot_curves, curves, xlabel="step", ylabel=tag,
                       title=tag, logy=args.logy)
        print(f"Wrote {stem}.png")


if __name__ == "__main__":
    sys.exit(main())
