r"""Gradient flow of rigl-train runs: masked-gradient norm at every checkpoint.

For each run (``--logdir [LABEL=]LOGDIR``, repeatable) and each checkpoint ``ckpt-<step>``,
computes the L2 norm of the gradient of the mean loss over a fixed data set (a seeded
subset of ``--num_examples`` examples, or the whole split with 0), restricted to the active
connections, overall and per variable. When the run saved mask-update checkpoints
(``training.checkpoint_mask_updates``) the norm just before and just after every update
and its change are added. Writes ``OUT_DIR/<label>.json`` per run and one plot of all runs,
``OUT_DIR/gradient_flow.png``. A run whose JSON exists is read back, not recomputed,
unless ``--overwrite``.

Example::

    rigl-gradient-flow --logdir Scratch=/tmp/fm/scratch_s1 \
        --logdir RigL=/tmp/fm/rigl --num_examples 1000 --out_dir /tmp/fm/gradflow

Per-run JSON keys: ``label``, ``logdir``, ``split``, ``num_examples``, ``data_seed``,
``steps``, ``norm``, ``per_variable`` ({name: [norm per step]}), ``mask_updates`` (list of
``{step, before, after, change}``).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rigl_tf.experiments import runs  # noqa: E402

KEYS = ("label", "logdir", "steps", "norm", "per_variable", "mask_updates")


def _parse_runs(values):
    out = []
    for value in values:
        label, path = value.split("=", 1) if "=" in value and not os.path.isdir(value) else (
            None, value)
        label = label or os.path.basename(os.path.normpath(path))
        if label in [lbl for lbl, _ in out]:
            raise runs.ToolError(f"--logdir: label {label!r} is used twice; give LABEL=LOGDIR.")
        out.append((label, path))
    return out


def _steps_arg(text):
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise runs.ToolError(
            f"--steps: got {text!r}; expected comma-separated integers, e.g. 0,100,200."
        ) from None


def measure(run, data, steps, batch_size=256):
    """Gradient norms of one run at ``steps`` and around its mask updates.

    Args:
      run: a `runs.Run`.
      data: evaluation data (``(x, y)`` arrays or a batched dataset).
      steps: checkpoint steps (None: all).
      batch_size: batch size for array data.

    Returns:
      The per-run result dict (see the module docstring).
    """
    from rigl_tf.analysis import gradient_norm
    from rigl_tf.progress import advance

    names = None
    steps = run.steps if steps is None else steps
    result = {"steps": [], "norm": [], "per_variable": {}, "mask_updates": []}

    def norm_at(prefix):
        nonlocal names
        run.restore(prefix)
        names = names or run.names()
        out = gradient_norm(run.model, data, masks=run.masks(), per_variable=True,
                            batch_size=batch_size)
        per = [out["per_variable"][v.path]["norm"] for v in run.model.trainable_variables]
        advance()
        return out["norm"], per

    for step in steps:
        norm, per = norm_at(run.prefix(step, name="--steps"))
        result["steps"].append(int(step))
        result["norm"].append(norm)
        for name, value in zip(names, per):
            result["per_variable"].setdefault(name, []).append(value)
    for step in run.mask_update_steps():
        before, _ = norm_at(run.prefix(step, "before"))
        after, _ = norm_at(run.prefix(step, "after"))
        result["mask_updates"].append(
            {"step": step, "before": before, "after": after, "change": after - before})
    return result


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--logdir", action="append", required=True,
                        help="[LABEL=]LOGDIR of a rigl-train run (repeatable).")
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--steps", default=None,
                        help="Comma-separated checkpoint steps (default: every checkpoint).")
    runs.add_data_args(parser, "train", 1000)
    parser.add_argument("--logy", action="store_true", help="Logarithmic y axis.")
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)
    steps = _steps_arg(args.steps)
    if args.num_examples < 0:
        raise runs.ToolError(f"--num_examples: must be >= 0; got {args.num_examples}.")
    results = {}
    pending = []
    for label, logdir in _parse_runs(args.logdir):
        run = runs.load_run(logdir, "--logdir")
        path = os.path.join(args.out_dir, runs.safe_name(label) + ".json")
        if runs.existing([path], args.overwrite,
                         runs.request_of(args, logdir=logdir, label=label)):
            results[label] = runs.load_json(path, "--out_dir", KEYS)
            print(f"{label}: {path} exists, skipped (use --overwrite to recompute).")
            continue
        if not run.steps:
            raise runs.ToolError(f"--logdir: {logdir!r} holds no ckpt-<step> checkpoint.")
        for step in steps or []:
            run.prefix(step, name="--steps")  # fail before any computation
        pending.append((label, logdir, run, path))
    for label, logdir, run, path in pending:
        data = run.data(args.split, args.num_examples, args.data_seed)
        result = {"label": label, "logdir": os.path.abspath(logdir), "split": args.split,
                  "num_examples": args.num_examples, "data_seed": args.data_seed}
        total = len(run.steps if steps is None else steps) + 2 * len(run.mask_update_steps())
        with runs.progress(args, total, f"gradient flow {label}"):
            result.update(measure(run, data, steps))
        runs.save_json(path, result)
        results[label] = result
        print(f"{label}: gradient norm {result['norm'][0]:.4g} (step {result['steps'][0]}) -> "
              f"{result['norm'][-1]:.4g} (step {result['steps'][-1]}); wrote {path}")
    from rigl_tf.analysis import plot_curves

    curves = {label: (r["steps"], r["norm"]) for label, r in results.items()}
    png = os.path.join(args.out_dir, "gradient_flow.png")
    runs.save_plot(png, plot_curves, curves, xlabel="step", ylabel="masked gradient norm",
                   title=f"Gradient flow ({args.split})", logy=args.logy)
    print(f"Wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
