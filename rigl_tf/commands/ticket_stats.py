r"""Lottery-ticket statistics between weight sets: R_p, mask overlap, signs, sparsity.

A weight set (``[LABEL=]SPEC``) is any of:

* a rigl-train checkpoint: ``LOGDIR``, ``LOGDIR:STEP``, ``LOGDIR/ckpt-STEP`` (weights and
  masks);
* an IMP level or branch directory of the lottery helper (``level_XX/``, holding
  ``mask.npz`` and ``solution.weights.npz``; ``--level_weights start`` reads
  ``start.weights.npz`` instead);
* a ``.npz`` file: a mask file (``mask.npz``: ``'layer/attr'`` -> 0/1) or a weights file
  (``*.weights.npz``: variable path -> array).

Arrays are matched by their last two name components (``dense/kernel``), so checkpoints
and ``.npz`` files of one architecture can be mixed. Modes (one per call):

* ``--rp A B``: the correlation indicator R_p of Ma et al. (``--p``, default 0.2) between
  two weight sets, ranking only the entries active in both masks when both sets have
  masks -> ``OUT_DIR/<name>.json`` (``total``, ``per_layer``, ``p``,
  ``restricted_to_masks``);
* ``--overlap A B``: overlap of two masks -> ``OUT_DIR/<name>.json`` (``total`` and
  ``per_layer`` with ``shared``, ``active_a``, ``active_b``, ``fraction_of_a``,
  ``jaccard``);
* ``--evolution S1 S2 ...``: across a sequence (checkpoints or IMP levels): sign flips
  between successive sets and from the first, per-connection std (on the last set's
  mask), sparsity per layer -> ``OUT_DIR/<name>.json`` (``labels``, ``sign_flips``,
  ``sign_flips_from_first``, ``mean_std``, ``mean_std_per_layer``, ``sparsity``) and
  ``OUT_DIR/<name>.png`` (sparsity per layer).

A result whose JSON exists is not recomputed unless ``--overwrite``.

Example::

    rigl-ticket-stats --rp /tmp/fm/prune:0 /tmp/fm/prune --out_dir /tmp/fm/tickets
    rigl-ticket-stats --evolution /tmp/lottery/imp_X/level_00 /tmp/lottery/imp_X/level_01 \
        /tmp/lottery/imp_X/level_02 --out_dir /tmp/fm/tickets   # imp_X: a rigl-lottery run
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rigl_tf.experiments import runs  # noqa: E402

MASK_FILE = "mask.npz"
LEVEL_WEIGHTS = ("solution", "start")


def _key(path):
    return "/".join(str(path).split("/")[-2:])


class WeightSet:
    """Named weights and/or masks of one solution, keyed by ``layer/attr``."""

    def __init__(self, label, weights=None, masks=None):
        self.label = label
        self.weights = weights
        self.masks = masks


def _npz_set(label, path, name):
    arrays = runs.load_npz(path, name)
    if os.path.basename(path) == MASK_FILE or all(
            a.size and np.all((a == 0) | (a == 1)) for a in arrays.values()):
        return WeightSet(label, masks={_key(k): v for k, v in arrays.items()})
    weights = {_key(k): v for k, v in arrays.items() if not k.endswith("_mask")}
    return WeightSet(label, weights=weights)


def load_set(spec, name, level_weights="solution"):
    """Reads one weight set (see the module docstring).

    Raises:
      runs.ToolError: for a missing or unreadable input.
    """
    label = None
    if "=" in spec and not os.path.exists(spec):
        label, spec = spec.split("=", 1)
    if spec.endswith(".npz"):
        return _npz_set(label or os.path.basename(spec), spec, name)
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, MASK_FILE)):
        masks = _npz_set(label, os.path.join(spec, MASK_FILE), name).masks
        weights_path = os.path.join(spec, f"{level_weights}.weights.npz")
        weights = None
        if os.path.exists(weights_path):
            weights = _npz_set(label, weights_path, name).weights
        return WeightSet(label or os.path.basename(os.path.normpath(spec)), weights, masks)
    run, prefix, default = runs.parse_checkpoint(spec, name)
    run.restore(prefix, name)
    keys = [_key(k) for k in run.names()]
    weights = dict(zip(keys, run.weights()))
    masks = {k: m for k, m in zip(keys, run.masks()) if m is not None}
    return WeightSet(label or default, weights, masks)


def _need(sets, attr, name):
    for s in sets:
        if getattr(s, attr) is None:
            raise runs.ToolError(f"{name}: {s.label!r} has no {attr} (a mask-only .npz?); "
                                 f"this statistic needs {attr}.")


def _common_keys(dicts, name, min_ndim=0):
    keys = [k for k in dicts[0] if all(k in d for d in dicts[1:])]
    keys = [k for k in keys if np.ndim(dicts[0][k]) >= min_ndim]
    if not keys:
        raise runs.ToolError(f"{name}: the inputs share no array names (first has "
                             f"{sorted(dicts[0])[:6]}); they must come from one architecture.")
    for k in keys:
        shapes = {np.shape(d[k]) for d in dicts}
        if len(shapes) > 1:
            raise runs.ToolError(f"{name}: array {k!r} has different shapes {sorted(shapes)}.")
    return keys


def main(argv=None):
    """Command-line entry point; returns the exit code (2 for bad input)."""
    return runs.tool_main(_main, argv)


def _main(argv):
    parser = runs.make_parser(__doc__.split("\n")[0])
    parser.add_argument("--rp", nargs=2, metavar="SET", help="R_p between two weight sets.")
    parser.add_argument("--overlap", nargs=2, metavar="SET", help="Overlap of two masks.")
    parser.add_argument("--evolution", nargs="+", metavar="SET",
                        help="Sign flips, per-connection std, sparsity across sets.")
    parser.add_argument("--p", type=float, default=0.2, help="Top fraction for R_p.")
    parser.add_argument("--level_weights", default="solution", choices=LEVEL_WEIGHTS,
                        help="Which weights of an IMP level directory to read.")
    parser.add_argument("--out_dir", required=True, help="Output directory.")
    parser.add_argument("--name", default=None, help="Output file stem (default: the mode).")
    parser.add_argument("--overwrite", action="store_true", help="Recompute existing results.")
    args = parser.parse_args(argv)
    modes = [m for m in ("rp", "overlap", "evolution") if getattr(args, m)]
    if len(modes) != 1:
        raise runs.ToolError(f"--rp/--overlap/--evolution: give exactly one mode; got "
                             f"{['--' + m for m in modes] or 'none'}.")
    mode = modes[0]
    if not 0 < args.p <= 1:
        raise runs.ToolError(f"--p: must be in (0, 1]; got {args.p}.")
    name = args.name or mode
    js = os.path.join(args.out_dir, runs.safe_name(name) + ".json")
    if runs.existing([js], args.overwrite, args):
        runs.load_json(js, "--out_dir")
        print(f"{js} exists, skipped (use --overwrite to recompute).")
        return
    flag = f"--{mode}"
    sets = [load_set(s, flag, args.level_weights) for s in getattr(args, mode)]
    if mode == "evolution" and len(sets) < 2:
        raise runs.ToolError(f"--evolution: needs at least 2 weight sets; got {len(sets)}.")
    out = {"labels": [s.label for s in sets]}
    if mode == "rp":
        out.update(_rp(sets, args.p))
        print(f"R_{args.p:g}({sets[0].label}, {sets[1].label}) = {out['total']:.4f}")
    elif mode == "overlap":
        out.update(_overlap(sets))
        print(f"Mask overlap: {out['total']['shared']} shared of {out['total']['active_a']} / "
              f"{out['total']['active_b']} (jaccard {out['total']['jaccard']:.4f})")
    else:
        out.update(_evolution(sets, os.path.join(args.out_dir, runs.safe_name(name) + ".png")))
        print(f"Sign flips between successive sets: "
              f"{[round(f, 4) for f in out['sign_flips']]}; mean per-connection std "
              f"{out['mean_std']:.4g}; sparsity {[round(t, 4) for t in out['sparsity']['total']]}")
    runs.save_json(js, out)
    print(f"Wrote {js}")


def _rp(sets, p):
    from rigl_tf.analysis import correlation_indicator

    _need(sets, "weights", "--rp")
    keys = _common_keys([s.weights for s in sets], "--rp", min_ndim=2)
    a = [sets[0].weights[k] for k in keys]
    b = [sets[1].weights[k] for k in keys]
    restricted = all(s.masks is not None and all(k in s.masks for k in keys) for s in sets)
    if restricted:
        # Zeros of masked-out entries would fill the top-p set by position and make R_p
        # trivially 1 for sparse solutions: rank only the entries active in both sets.
        sel = [np.logical_and(sets[0].masks[k], sets[1].masks[k]) for k in keys]
        a = [w[m].reshape(-1, 1) for w, m in zip(a, sel)]
        b = [w[m].reshape(-1, 1) for w, m in zip(b, sel)]
    result = correlation_indicator(a, b, p=p, per_layer=True)
    return {"p": p, "total": result["total"], "restricted_to_masks": restricted,
            "per_layer": dict(zip(keys, result["per_layer"]))}


def _masks_or_support(s):
    if s.masks is not None:
        return s.masks
    return {k: (w != 0).astype(np.float32) for k, w in s.weights.items() if np.ndim(w) >= 2}


def _overlap(sets):
    from rigl_tf.analysis import mask_overlap

    masks = [_masks_or_support(s) for s in sets]
    keys = _common_keys(masks, "--overlap")
    result = mask_overlap([masks[0][k] for k in keys], [masks[1][k] for k in keys])
    return {"total": result["total"], "per_layer": dict(zip(keys, result["per_layer"]))}


def _evolution(sets, png):
    from rigl_tf.analysis import (
        per_connection_std,
        plot_sparsity_evolution,
        sign_flips,
        sparsity_evolution,
    )

    _need(sets, "weights", "--evolution")
    keys = _common_keys([s.weights for s in sets], "--evolution", min_ndim=2)
    masks = [_masks_or_support(s) for s in sets]
    mkeys = [k for k in keys if all(k in m for m in masks)]
    weights = [[s.weights[k] for k in keys] for s in sets]

    def both(i, j):
        return [np.logical_and(masks[i][k], masks[j][k]) if k in mkeys else None for k in keys]

    flips = [sign_flips(weights[i], weights[i + 1], both(i, i + 1))["total"]
             for i in range(len(sets) - 1)]
    from_first = [sign_flips(weights[0], weights[i], both(0, i))["total"]
                  for i in range(1, len(sets))]
    last = [masks[-1][k] if k in mkeys else None for k in keys]
    std = per_connection_std(weights, last)
    evolution = sparsity_evolution([[m[k] for k in mkeys] for m in masks], names=mkeys)
    runs.save_plot(png, plot_sparsity_evolution, evolution)
    return {
        "keys": keys,
        "sign_flips": flips,
        "sign_flips_from_first": from_first,
        "mean_std": std["mean_std"],
        "mean_std_per_layer": dict(zip(keys, std["mean_std_per_layer"])),
        "sparsity": {"layers": evolution["layers"],
                     "per_layer": evolution["per_layer"].tolist(),
                     "total": evolution["total"].tolist()},
    }


if __name__ == "__main__":
    sys.exit(main())
