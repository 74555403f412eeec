r"""Function similarity of trained rigl-train models (Table 3/7 of the gradient-flow paper).

Every method is ``--method NAME=SPEC[,SPEC...]`` (repeatable; SPEC is a checkpoint as in
the other tools, usually a logdir = its final checkpoint, one per seed). With
``--reference SPEC`` (e.g. the pruning run a lottery ticket came from), each model is
compared with the reference: test accuracy, accuracy of the two-model ensemble with the
reference, disagreement, KL(reference || model) and JSD, as mean ± std over the method's
models; without a reference the same columns are taken over all pairs of each method's
models (needs >= 2 models per method). Prints the table and writes ``--out`` (JSON:
``rows`` with ``method``, ``num_models``, ``accuracy``, ``ensemble_accuracy``,
``disagreement``, ``kl``, ``jsd`` as [mean, std]; ``reference``; ``reference_accuracy``;
``models``; ``table``), skipped when it exists unless ``--overwrite``.

Example::

    rigl-similarity --reference /tmp/fm/prune \
        --method "Lottery=/tmp/fm/lottery_s1,/tmp/fm/lottery_s2" \
        --method "Scratch=/tmp/fm/scratch_s1,/tmp/fm/scratch_s2" --out /tmp/fm/similarity.json
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rigl_tf.experiments import runs  # noqa: E402


def _methods(values):
    out = {}
    for value in values:
        if "=" not in value:
            raise runs.ToolError(f"--method: got {value!r}; expected NAME=SPEC[,SPEC...].")
        name, specs = value.split("=", 1)
        specs = [s for s in specs.split(",") if s]
        if not name or not specs:
            raise runs.ToolError(f"--method: got {value!r}; expected NAME=SPEC[,SPEC...].")
        if name in out:
            raise runs.ToolError(f"--method: method name {name!r} is given twice.")
        out[name] = specs
    return out


def _predict(spec, name, data, labels_ref, batch_size):
    from rigl_tf.analysis import predict_probs

    run, prefix, label = runs.parse_checkpoint(spec, name)
    run.restore(prefix, name)
    probs, labels = predict_probs(run.model, data, batch_size=batch_size, return_labels=True)
    if labels_ref is not None and not np.array_equal(labels, labels_ref):
        raise runs.ToolError(f"{name}: {spec!r} was evaluated on other examples (another "
                             "dataset?); all models must share the dataset.")
    return probs, labels, prefix


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--method", action="append", required=True,
                        help="NAME=SPEC[,SPEC...] (repeatable).")
    parser.add_argument("--reference", default=None, help="Reference checkpoint (optional).")
    parser.add_argument("--out", required=True, help="Output JSON path.")
    runs.add_data_args(parser, "test", 0)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--digits", type=int, default=4, help="Decimals in the printed table.")
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)
    methods = _methods(args.method)
    if args.reference is None and any(len(v) < 2 for v in methods.values()):
        short = [k for k, v in methods.items() if len(v) < 2]
        raise runs.ToolError(f"--method: {short} have one model; without --reference every "
                             "method needs at least 2.")
    if runs.existing([args.out], args.overwrite, args, name="--out"):
        data = runs.load_json(args.out, "--out", ("rows", "table"))
        print(data["table"])
        print(f"{args.out} exists, skipped (use --overwrite to recompute).")
        return
    from rigl_tf.analysis import accuracy, format_similarity_table, similarity_table

    # Resolve every checkpoint first, so a bad one fails before any computation.
    for name, specs in methods.items():
        for spec in specs:
            runs.parse_checkpoint(spec, f"--method {name}")
    first = runs.parse_checkpoint(args.reference or next(iter(methods.values()))[0],
                                  "--reference")[0]
    data = first.data(args.split, args.num_examples, args.data_seed)
    labels, reference, ref_prefix = None, None, None
    if args.reference:
        reference, labels, ref_prefix = _predict(args.reference, "--reference", data, None,
                                                 args.batch_size)
    probs, models = {}, {}
    for name, specs in methods.items():
        probs[name], models[name] = [], []
        for spec in specs:
            p, labels, prefix = _predict(spec, f"--method {name}", data, labels, args.batch_size)
            probs[name].append(p)
            models[name].append(prefix)
    rows = similarity_table(probs, labels, reference)
    table = format_similarity_table(rows, args.digits)
    out = {"rows": [{k: list(v) if isinstance(v, tuple) else v for k, v in r.items()}
                    for r in rows],
           "reference": ref_prefix,
           "reference_accuracy": None if reference is None else accuracy(reference, labels),
           "models": models, "split": args.split, "num_examples": int(len(labels)),
           "table": table}
    runs.save_json(args.out, out)
    if reference is not None:
        print(f"Reference {ref_prefix}: test accuracy {out['reference_accuracy']:.4f}")
    print(table)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
