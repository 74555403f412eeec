r"""rigl-reproduce: the gradient-flow paper's MNIST study end to end, into REPORT.md.

For LeNet5 and the MLP on one dataset it trains pruning (several seeds), lottery tickets
and scratch runs (several seeds), Scratch+ (unit-scaled init), prune restart, SET / RigL /
RigL inverted with and without sparse init, a small dense net, and the 98% variants; then
computes gradient flow (Fig. 2), the gradient-norm change at mask updates (Fig. 3), the
Hessian spectrum around a SET and a RigL update (Fig. 10), L2 distances + MDS (Fig. 5a/b),
linear paths (Fig. 5c) and function similarity (Tables 3/7), and writes ``REPORT.md``,
``results.json`` and PNG figures into ``--out_dir``. Re-running the same command continues
where a killed one stopped (finished runs and analyses are skipped).

Example::

    rigl-reproduce --out_dir /tmp/repro --budget quick       # Fashion-MNIST IDX, offline
"""

import os
import sys

from rigl_tf.experiments import runs

BUDGETS = ("quick", "full")
DATASETS = ("fashion_mnist_idx", "fashion_mnist", "mnist")
MODELS = ("lenet5", "mlp")


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _models(text):
    models = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if not models or bad or len(set(models)) != len(models):
        raise runs.ToolError(f"--models: got {text!r}; expected a comma-separated subset of "
                             f"{', '.join(MODELS)} without repeats.")
    return [m for m in MODELS if m in models]


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True,
                        help="Directory of REPORT.md, figures, runs/ and cache/.")
    parser.add_argument("--dataset", default="fashion_mnist_idx",
                        help=f"One of {', '.join(DATASETS)} (default fashion_mnist_idx, the "
                        "offline IDX files; mnist and fashion_mnist need tfds data).")
    parser.add_argument("--budget", default="quick",
                        help="quick (short runs, 2 seeds, small Hessian; minutes) or full "
                        "(the paper's settings; hours).")
    parser.add_argument("--models", default="lenet5,mlp",
                        help="Comma-separated subset of lenet5,mlp (default both).")
    parser.add_argument("--jobs", type=int, default=2,
                        help="Runs trained in parallel processes (default 2; 1 = in this "
                        "process). The analyses run one after the other.")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise runs.ToolError(f"--jobs: got {args.jobs}; must be an integer >= 1.")
    if args.budget not in BUDGETS:
        raise runs.ToolError(f"--budget: got {args.budget!r}; allowed: {', '.join(BUDGETS)}.")
    if args.dataset not in DATASETS:
        raise runs.ToolError(f"--dataset: got {args.dataset!r}; allowed: "
                             f"{', '.join(DATASETS)}.")
    models = _models(args.models)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise runs.ToolError(f"--out_dir: {args.out_dir!r} exists and is not a directory.")
    from rigl_tf.commands import _cli

    _cli.quiet_tensorflow()
    from rigl_tf.reproduce.study import Study

    study = Study(args.out_dir, args.dataset, args.budget, models, args.jobs)
    try:
        study.check()
        study.check_data()
    except ValueError as e:
        raise runs.ToolError(str(e)) from None
    command = "rigl-reproduce " + " ".join(
        f"--{k}={v}" for k, v in (("out_dir", args.out_dir), ("dataset", args.dataset),
                                  ("budget", args.budget), ("models", ",".join(models))))
    path = study.run(command)
    print(f"Wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
