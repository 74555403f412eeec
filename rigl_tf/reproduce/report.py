"""Tables and claim verdicts of the reproduction report (pure Python, no TensorFlow).

Input is the measured-results dict built by `rigl_tf.reproduce.study` (one entry per
model, see `render_report`); output is Markdown. Every claim is a fixed rule written down
before any number was measured (the `CLAIMS` table): it compares our numbers and returns
HOLDS, DOES NOT HOLD, or NOT MEASURED when an input is missing. Nothing here is tuned.
"""

import math

HOLDS = "HOLDS"
FAILS = "DOES NOT HOLD"
MISSING = "NOT MEASURED"
# Caveats on a verdict: an accuracy margin within the seed noise (`_acc_claim`), and a
# claim that reads a run which never left chance accuracy (`CLAIM_RUNS`).
WITHIN_NOISE = "within seed noise"
AT_CHANCE = "a run at chance accuracy"
# Every dataset rigl-reproduce supports (MNIST, Fashion-MNIST) has 10 balanced test
# classes; a run whose test accuracy is within one point of 1/10 did not train.
CHANCE_ACCURACY = 0.10
CHANCE_MARGIN = 0.01

# Method names used as keys throughout the results dict and the tables.
PRUNING = "Pruning"
LOTTERY = "Lottery"
SCRATCH = "Scratch"
SCRATCH_PLUS = "Scratch+"
RESTART = "Prune restart"
DIFF_PRUNED = "Different pruned"
SET = "SET"
SET_PLUS = "SET+"
RIGL = "RigL"
RIGL_PLUS = "RigL+"
RIGL_INV = "RigL inverted"
RIGL_INV_PLUS = "RigL inverted+"
SMALL_DENSE = "Small dense"

ACCURACY_METHODS = (PRUNING, LOTTERY, SCRATCH, SCRATCH_PLUS, RESTART, SET, SET_PLUS, RIGL,
                    RIGL_PLUS, RIGL_INV, RIGL_INV_PLUS, SMALL_DENSE)
SPARSITIES = ("95", "98")
MODEL_TITLES = {"lenet5": "LeNet5", "mlp": "MLP (300-100)"}

# Published MNIST numbers of Evci et al., "Gradient Flow in Sparse Neural Networks and How
# Lottery Tickets Win" (AAAI 2022, arXiv 2010.03533), keyed like our tables. The search
# available while writing this (abstract pages and the first section of the paper's text
# only) did not reach the tables, so no value is filled in: a missing number is printed as
# "n/f" (not found) rather than guessed. Fill in a value together with its table number.
PAPER_SOURCE = ("Evci, Ioannou, Keskin, Dauphin: Gradient Flow in Sparse Neural Networks and "
                "How Lottery Tickets Win, AAAI 2022 (arXiv 2010.03533)")
PAPER_ACCURACY = {}    # {(model, sparsity, method): percent}
PAPER_SIMILARITY = {}  # {(model, method, column): value}


def _mean(values):
    values = [float(v) for v in values if v is not None and not _isnan(v)]
    return sum(values) / len(values) if values else None


def _std(values):
    values = [float(v) for v in values if v is not None and not _isnan(v)]
    if len(values) < 2:
        return 0.0 if values else None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _isnan(v):
    return isinstance(v, float) and math.isnan(v)


def fmt(value, digits=4, pct=False):
    """A number for a table cell ('-' for None, percent with `pct`)."""
    if value is None or _isnan(value):
        return "-"
    if pct:
        return f"{100.0 * value:.2f}"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 10 ** -digits):
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def fmt_mean_std(values, digits=4, pct=False):
    """`mean ± std (n)` of a list of numbers (one number: just it)."""
    values = [v for v in (values or []) if v is not None]
    if not values:
        return "-"
    mean = _mean(values)
    if len(values) == 1:
        return fmt(mean, digits, pct)
    scale = 100.0 if pct else 1.0
    std = _std(values) * scale
    return f"{fmt(mean, digits, pct)} ± {std:.{2 if pct else digits}f} (n={len(values)})"


def paper_cell(value):
    """A published number, or 'n/f' (not found) when we could not find it."""
    return "n/f" if value is None else str(value)


def markdown_table(header, rows):
    """A Markdown table from a header list and row lists (cells converted with str)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- measures


def _accuracies(model, sparsity):
    """{method: [test accuracy of each run]} at a sparsity ({} if not measured)."""
    return (model or {}).get("accuracy", {}).get(sparsity, {}) or {}


def accuracy_of(model, method, sparsity="95"):
    """Mean test accuracy of a method (None if not measured)."""
    return _mean(_accuracies(model, sparsity).get(method, []))


def at_chance(accuracy) -> bool:
    """True for a test accuracy within `CHANCE_MARGIN` of chance (the run did not train)."""
    return (accuracy is not None and not _isnan(accuracy)
            and float(accuracy) <= CHANCE_ACCURACY + CHANCE_MARGIN)


def chance_runs(model, method, sparsity="95"):
    """(runs at chance accuracy, runs) of a method at a sparsity."""
    values = [v for v in _accuracies(model, sparsity).get(method) or [] if v is not None]
    return sum(at_chance(v) for v in values), len(values)


def init_norm(model, method):
    """Gradient norm at step 0 of a method's run (None if not measured)."""
    curve = (model or {}).get("gradflow", {}).get(method)
    if not curve or not curve.get("steps") or curve["steps"][0] != 0:
        return None
    return float(curve["norm"][0])


def training_norm(model, method):
    """Mean gradient norm over the checkpoints after step 0."""
    curve = (model or {}).get("gradflow", {}).get(method)
    if not curve:
        return None
    values = [n for s, n in zip(curve["steps"], curve["norm"]) if s > 0]
    return _mean(values)


def update_stats(model, method):
    """(number of mask updates, fraction that increased the norm, mean change)."""
    updates = (model or {}).get("mask_updates", {}).get(method) or []
    if not updates:
        return None
    changes = [u["after"] - u["before"] for u in updates]
    return len(changes), sum(c > 0 for c in changes) / len(changes), _mean(changes)


def similarity_row(model, method, table="similarity"):
    for row in ((model or {}).get(table) or {}).get("rows", []):
        if row["method"] == method:
            return row
    return None


def similarity_value(model, method, column, table="similarity"):
    row = similarity_row(model, method, table)
    return None if row is None else float(row[column][0])


def ensemble_gain(model, method):
    """Ensemble accuracy with the reference minus the better of the two members."""
    row = similarity_row(model, method)
    ref = ((model or {}).get("similarity") or {}).get("reference_accuracy")
    if row is None or ref is None:
        return None
    return float(row["ensemble_accuracy"][0]) - max(float(ref), float(row["accuracy"][0]))


def distance_to_prune(model, group):
    return _mean(((model or {}).get("distances") or {}).get("to_prune", {}).get(group, []))


def barrier(model, group, key="error"):
    values = ((model or {}).get("barriers") or {}).get(group) or []
    return _mean([v[key] for v in values])


def hessian_summary(model, method, when):
    entry = ((model or {}).get("hessian") or {}).get(method)
    return None if not entry else entry.get(when)


# --------------------------------------------------------------------------- claims


def _cmp(a, b, name_a, name_b, op="<", digits=4):
    """Verdict of `a op b` with the numbers spelled out."""
    numbers = f"{name_a} = {fmt(a, digits)} vs {name_b} = {fmt(b, digits)}"
    if a is None or b is None:
        return MISSING, numbers
    ok = {"<": a < b, ">": a > b, ">=": a >= b, "<=": a <= b}[op]
    return (HOLDS if ok else FAILS), numbers


def seed_noise(model, sparsity="95"):
    """The largest seed standard deviation of test accuracy among the methods with two or
    more runs that trained (not `at_chance`) at `sparsity`; None when there is none."""
    runs = _accuracies(model, sparsity).values()
    trained = [[x for x in (v or []) if x is not None and not _isnan(x) and not at_chance(x)]
               for v in runs]
    stds = [_std(v) for v in trained if len(v) >= 2]
    return max(stds) if stds else None


def _acc_claim(m, method_a, method_b, sparsity, name_a, name_b):
    """Verdict of accuracy(a) > accuracy(b), with a caveat when the margin is not larger
    than the seed noise (`seed_noise`): the verdict stays, the reader is told."""
    a, b = accuracy_of(m, method_a, sparsity), accuracy_of(m, method_b, sparsity)
    verdict, numbers = _cmp(a, b, name_a, name_b, ">")
    if verdict == MISSING:
        return verdict, numbers
    caveats = []
    noise = seed_noise(m, sparsity)
    if noise is not None:
        margin = a - b
        numbers += f"; margin {100 * margin:+.2f} points, seed std {100 * noise:.2f} points"
        if abs(margin) <= noise:
            caveats.append(WITHIN_NOISE)
    return (verdict, numbers, "; ".join(caveats)) if caveats else (verdict, numbers)


def _claim_lt_gradflow(m):
    lt, s, sp = init_norm(m, LOTTERY), init_norm(m, SCRATCH), init_norm(m, SCRATCH_PLUS)
    if None in (lt, s, sp) or min(lt, s, sp) <= 0:
        return MISSING, f"‖g0‖ LT = {fmt(lt)}, Scratch = {fmt(s)}, Scratch+ = {fmt(sp)}"
    to_s, to_sp = abs(math.log(lt / s)), abs(math.log(lt / sp))
    verdict = HOLDS if to_s < to_sp else FAILS
    return verdict, (f"‖g0‖ LT = {fmt(lt)}, Scratch = {fmt(s)}, Scratch+ = {fmt(sp)}; "
                     f"|log ratio| to Scratch {to_s:.3f} vs to Scratch+ {to_sp:.3f}")


def _claim_updates_increase(m):
    stats = update_stats(m, RIGL)
    if stats is None:
        return MISSING, "no RigL mask-update checkpoints"
    n, frac, mean = stats
    ok = frac > 0.5 and mean > 0
    return (HOLDS if ok else FAILS), (f"{100 * frac:.0f}% of {n} RigL updates raise ‖g‖, mean "
                                      f"change {fmt(mean)} (rule: > 50% and mean > 0)")


def _claim_rigl_vs_set(m):
    r, s = update_stats(m, RIGL), update_stats(m, SET)
    return _cmp(None if r is None else r[2], None if s is None else s[2],
                "mean Δ‖g‖ RigL", "SET", ">")


def _claim_function(m):
    d_lt, d_s = (similarity_value(m, LOTTERY, "disagreement"),
                 similarity_value(m, SCRATCH, "disagreement"))
    k_lt, k_s = similarity_value(m, LOTTERY, "kl"), similarity_value(m, SCRATCH, "kl")
    v1, t1 = _cmp(d_lt, d_s, "disagreement LT", "Scratch")
    v2, t2 = _cmp(k_lt, k_s, "KL LT", "Scratch")
    verdict = MISSING if MISSING in (v1, v2) else (HOLDS if v1 == v2 == HOLDS else FAILS)
    return verdict, f"{t1}; {t2}"


def _claim_hessian(m):
    before, after = hessian_summary(m, RIGL, "before"), hessian_summary(m, RIGL, "after")
    if not before or not after:
        return MISSING, "no Hessian around a RigL update"
    return _cmp(after["min_eigenvalue"], before["min_eigenvalue"], "λmin after", "before", "<")


def _claim_ensemble(m):
    return _cmp(ensemble_gain(m, LOTTERY), ensemble_gain(m, DIFF_PRUNED),
                "ensemble gain LT+prune", "other pruned+prune")


# (id, paper's claim, our rule, function of one model's results -> (verdict, numbers)).
CLAIMS = (
    ("sparse_init_gradflow",
     "Sparse networks have poor gradient flow at initialization; sparsity-aware "
     "(unit-scaled) initialization improves it (Sec. 4.1, Fig. 2)",
     "‖g‖ at step 0: Scratch+ > Scratch",
     lambda m: _cmp(init_norm(m, SCRATCH_PLUS), init_norm(m, SCRATCH), "‖g0‖ Scratch+",
                    "Scratch", ">")),
    ("sparse_init_accuracy",
     "Sparsity-aware initialization improves training from scratch (Table 1)",
     "test accuracy at 95%: Scratch+ > Scratch",
     lambda m: _acc_claim(m, SCRATCH_PLUS, SCRATCH, "95", "acc Scratch+", "Scratch")),
    ("sparse_init_accuracy_98",
     "... and more so at higher sparsity (Table 2, 98%)",
     "test accuracy at 98%: Scratch+ > Scratch",
     lambda m: _acc_claim(m, SCRATCH_PLUS, SCRATCH, "98", "acc Scratch+ 98%",
                          "Scratch 98%")),
    ("dst_gradflow",
     "DST improves gradient flow during training over static sparse training (Fig. 2)",
     "mean ‖g‖ over checkpoints after step 0: RigL > Scratch",
     lambda m: _cmp(training_norm(m, RIGL), training_norm(m, SCRATCH), "mean ‖g‖ RigL",
                    "Scratch", ">")),
    ("rigl_updates_increase",
     "RigL mask updates increase the gradient norm (Fig. 3)",
     "more than half of RigL's updates raise ‖g‖ and the mean change is > 0",
     _claim_updates_increase),
    ("rigl_vs_set_updates",
     "RigL's updates raise the gradient norm more than SET's random growth (Fig. 3)",
     "mean change of ‖g‖ at updates: RigL > SET",
     _claim_rigl_vs_set),
    ("dst_accuracy",
     "DST (RigL) generalizes better than training a static sparse mask from scratch",
     "test accuracy at 95%: RigL > Scratch",
     lambda m: _acc_claim(m, RIGL, SCRATCH, "95", "acc RigL", "Scratch")),
    ("hessian_rigl",
     "(our reading of Fig. 10) a RigL update adds negative curvature",
     "most negative Hessian eigenvalue after the update < before",
     _claim_hessian),
    ("lt_no_gradflow",
     "Lottery tickets do not improve gradient flow at initialization (Sec. 4.3)",
     "‖g0‖ of the LT is closer (in log ratio) to Scratch's than to Scratch+'s",
     _claim_lt_gradflow),
    ("lt_accuracy",
     "Lottery tickets train better than the same mask from a new random init (Table 3)",
     "test accuracy at 95%: Lottery > Scratch",
     lambda m: _acc_claim(m, LOTTERY, SCRATCH, "95", "acc Lottery", "Scratch")),
    ("lt_close_l2",
     "LT solutions lie close to the pruning solution in weight space; scratch far (Fig. 5a/b)",
     "mean L2 to the pruning solution: Lottery < Scratch",
     lambda m: _cmp(distance_to_prune(m, LOTTERY), distance_to_prune(m, SCRATCH),
                    "L2 Lottery", "Scratch")),
    ("lt_low_barrier",
     "LT solutions are in the pruning solution's basin: low barrier on the linear path "
     "(Fig. 5c)",
     "error barrier from the pruning solution: Lottery < Scratch",
     lambda m: _cmp(barrier(m, LOTTERY), barrier(m, SCRATCH), "barrier Lottery", "Scratch")),
    ("lt_close_function",
     "LTs re-learn the pruning solution's function (Table 3)",
     "disagreement and KL with the pruning solution: Lottery < Scratch (both)",
     _claim_function),
    ("lt_not_novel",
     "LTs are less novel than another pruning run (Table 3)",
     "disagreement with the pruning solution: Lottery < different pruned models",
     lambda m: _cmp(similarity_value(m, LOTTERY, "disagreement"),
                    similarity_value(m, DIFF_PRUNED, "disagreement"),
                    "disagreement Lottery", "different pruned")),
    ("restart_close",
     "Restarting from the pruning solution (prune restart) stays with it (Table 3)",
     "disagreement with the pruning solution: Prune restart < Scratch",
     lambda m: _cmp(similarity_value(m, RESTART, "disagreement"),
                    similarity_value(m, SCRATCH, "disagreement"),
                    "disagreement restart", "Scratch")),
    ("lt_ensemble",
     "Ensembling an LT with its pruning solution gains little, unlike a different pruned "
     "model (Table 3)",
     "ensemble accuracy minus the better member: Lottery < different pruned",
     _claim_ensemble),
)


# The runs each claim reads, as (sparsity, methods): a claim that reads a run which never
# left chance accuracy gets the `AT_CHANCE` caveat. 'Different pruned' are Pruning seeds.
CLAIM_RUNS = {
    "sparse_init_gradflow": ("95", (SCRATCH_PLUS, SCRATCH)),
    "sparse_init_accuracy": ("95", (SCRATCH_PLUS, SCRATCH)),
    "sparse_init_accuracy_98": ("98", (SCRATCH_PLUS, SCRATCH)),
    "dst_gradflow": ("95", (RIGL, SCRATCH)),
    "rigl_updates_increase": ("95", (RIGL,)),
    "rigl_vs_set_updates": ("95", (RIGL, SET)),
    "dst_accuracy": ("95", (RIGL, SCRATCH)),
    "hessian_rigl": ("95", (RIGL,)),
    "lt_no_gradflow": ("95", (LOTTERY, SCRATCH, SCRATCH_PLUS)),
    "lt_accuracy": ("95", (LOTTERY, SCRATCH)),
    "lt_close_l2": ("95", (LOTTERY, SCRATCH)),
    "lt_low_barrier": ("95", (LOTTERY, SCRATCH)),
    "lt_close_function": ("95", (LOTTERY, SCRATCH)),
    "lt_not_novel": ("95", (LOTTERY, PRUNING)),
    "restart_close": ("95", (RESTART, SCRATCH)),
    "lt_ensemble": ("95", (LOTTERY, PRUNING)),
}


def evaluate_claims(model):
    """Verdicts for one model: list of dicts `id, claim, rule, verdict, numbers, caveat`
    (caveat: None, or `WITHIN_NOISE` and/or `AT_CHANCE` joined by '; ')."""
    out = []
    for cid, text, rule, fn in CLAIMS:
        try:
            verdict, numbers, *caveats = fn(model)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            verdict, numbers, caveats = MISSING, f"cannot evaluate: {type(e).__name__}: {e}", []
        sparsity, methods = CLAIM_RUNS[cid]
        dead = [f"{method} {k} of {n}" for method in methods
                for k, n in [chance_runs(model, method, sparsity)] if k]
        if dead and verdict != MISSING:
            numbers += "; runs at chance accuracy: " + ", ".join(dead)
            caveats.append(AT_CHANCE)
        out.append({"id": cid, "claim": text, "rule": rule, "verdict": verdict,
                    "numbers": numbers, "caveat": "; ".join(caveats) or None})
    return out


# --------------------------------------------------------------------------- tables


def accuracy_table(results):
    """Test accuracy (%) per method, model and sparsity, with the paper's numbers."""
    models = list(results["models"])
    header = ["Method"]
    for name in models:
        for sp in SPARSITIES:
            header += [f"{MODEL_TITLES.get(name, name)} {sp}% ours", "paper"]
    rows = []
    for method in ACCURACY_METHODS:
        row, any_value = [method], False
        for name in models:
            for sp in SPARSITIES:
                values = _accuracies(results["models"][name], sp).get(method)
                any_value |= bool(values)
                dead = chance_runs(results["models"][name], method, sp)[0]
                row += [fmt_mean_std(values, pct=True) + (f" †{dead}" if dead else ""),
                        paper_cell(PAPER_ACCURACY.get((name, sp, method)))]
        if any_value:
            rows.append(row)
    return markdown_table(header, rows)


def gradflow_table(model):
    rows = []
    for method, curve in (model.get("gradflow") or {}).items():
        rows.append([method, fmt(init_norm(model, method)), fmt(training_norm(model, method)),
                     fmt(curve["norm"][-1]), len(curve["steps"])])
    return markdown_table(["Run", "‖g‖ step 0", "mean ‖g‖ after step 0", "‖g‖ final",
                           "checkpoints"], rows)


def mask_update_table(model):
    rows = []
    for method in (model.get("mask_updates") or {}):
        stats = update_stats(model, method)
        if stats:
            n, frac, mean = stats
            rows.append([method, n, f"{100 * frac:.0f}%", fmt(mean)])
    return markdown_table(["Run", "mask updates", "updates raising ‖g‖", "mean Δ‖g‖"], rows)


def hessian_table(model):
    rows = []
    for method, e in (model.get("hessian") or {}).items():
        b, a = e["before"], e["after"]
        rows.append([method, e["step"], e["method"], e["num_params"], e["num_examples"],
                     f"{fmt(b['max_eigenvalue'])} → {fmt(a['max_eigenvalue'])}",
                     f"{fmt(b['min_eigenvalue'])} → {fmt(a['min_eigenvalue'])}",
                     f"{b.get('num_negative', '-')} → {a.get('num_negative', '-')}"])
    return markdown_table(["Run", "update step", "method", "coordinates", "examples",
                           "λmax before → after", "λmin before → after",
                           "#negative before → after"], rows)


def distance_table(model):
    d = model.get("distances") or {}
    rows = []
    for group, values in (d.get("to_prune") or {}).items():
        rows.append([group, fmt_mean_std(values, 3),
                     fmt_mean_std((d.get("init_to_prune") or {}).get(group), 3)])
    return markdown_table(["Solutions", "L2 to the pruning solution",
                           "L2 from their initialization to the pruning solution"], rows)


def barrier_table(model):
    rows = []
    for group, values in (model.get("barriers") or {}).items():
        rows.append([group, fmt_mean_std([v["error"] for v in values]),
                     fmt_mean_std([v["loss"] for v in values])])
    return markdown_table(["Path from the pruning solution to", "error barrier",
                           "loss barrier"], rows)


SIMILARITY_COLUMNS = (("accuracy", "Test acc."), ("ensemble_accuracy", "Ensemble acc."),
                      ("disagreement", "Disagreement"), ("kl", "KL"), ("jsd", "JSD"))


def similarity_md(model, name, table="similarity"):
    """Function-similarity rows (mean ± std), each next to the paper's value."""
    data = model.get(table) or {}
    header = ["Method", "models"]
    for _, title in SIMILARITY_COLUMNS:
        header += [title, "paper"]
    rows = []
    for row in data.get("rows", []):
        cells = [row["method"], row["num_models"]]
        for key, _ in SIMILARITY_COLUMNS:
            mean, std = row[key]
            cells += [f"{fmt(mean)} ± {fmt(std)}",
                      paper_cell(PAPER_SIMILARITY.get((name, row["method"], key)))]
        rows.append(cells)
    return markdown_table(header, rows)


def claims_md(results):
    """One line per claim and model: verdict, rule and numbers."""
    lines = []
    for name, model in results["models"].items():
        for c in evaluate_claims(model):
            caveat = f" ({c['caveat']})" if c["caveat"] else ""
            lines.append(f"- **{c['verdict']}**{caveat} [{MODEL_TITLES.get(name, name)}] "
                         f"`{c['id']}`: {c['claim']}. Rule: {c['rule']}. Measured: "
                         f"{c['numbers']}.")
    return "\n".join(lines)


TABLE_TITLES = (
    "Table 1/2: test accuracy",
    "Fig. 2: gradient flow",
    "Fig. 3: gradient norm at mask updates",
    "Fig. 10: Hessian spectrum around a mask update",
    "Fig. 5a/b: L2 distances",
    "Fig. 5c: linear paths",
    "Tables 3 and 7: function similarity to the pruning solution",
    "Ensembles within a method",
    "Claims",
)


def render_report(results, figures=()):
    """The whole REPORT.md text.

    Args:
      results: ``{"meta": {...}, "models": {model name: per-model dict}}``; per-model keys
        `accuracy` ({sparsity: {method: [acc]}}), `gradflow` ({run: {steps, norm}}),
        `mask_updates` ({run: [{step, before, after}]}), `hessian` ({run: {step, method,
        num_params, num_examples, before, after}}), `distances` ({to_prune, init_to_prune:
        {group: [l2]}}), `barriers` ({group: [{error, loss}]}), `similarity` and
        `ensembles` ({rows: similarity_table rows, reference_accuracy}).
      figures: file names of the PNG figures (relative to the report).

    Returns:
      Markdown text.
    """
    meta = results.get("meta", {})
    out = ["# Reproduction: gradient flow in sparse networks and how lottery tickets win", ""]
    out.append(f"Paper: {PAPER_SOURCE}. Published values we could not find are marked "
               "`n/f` (not found); none is guessed.")
    out.append("")
    for key in ("command", "dataset", "budget", "total_steps", "seeds", "wall_time",
                "started", "finished"):
        if key in meta:
            out.append(f"- {key}: `{meta[key]}`")
    if meta.get("notes"):
        for note in meta["notes"]:
            out.append(f"- note: {note}")
    out += ["", f"## {TABLE_TITLES[0]}", "",
            "Percent, mean ± std over seeds (n = number of runs). †k: k of the runs ended "
            f"at chance accuracy (at most {100 * (CHANCE_ACCURACY + CHANCE_MARGIN):.0f}%, "
            "1/10 of the classes): they did not train, and their numbers are in the mean.",
            "", accuracy_table(results), ""]
    sections = (
        (TABLE_TITLES[1], gradflow_table, "Norm of the masked gradient of the mean training "
         "loss on a fixed subset of training examples at every checkpoint."),
        (TABLE_TITLES[2], mask_update_table, "Norm just before and just after every mask "
         "update (checkpoints saved around each update)."),
        (TABLE_TITLES[3], hessian_table, "Exact eigenvalues (numpy eigh of the Hessian of "
         "the active weights and biases) when small enough, else stochastic Lanczos "
         "quadrature nodes."),
        (TABLE_TITLES[4], distance_table, "Final solutions (and their step-0 points) "
         "against the pruning solution; 'Different pruned' are pruning runs with other "
         "seeds."),
        (TABLE_TITLES[5], barrier_table, "Error and loss barriers on the straight line from "
         "the pruning solution to each solution (test subset)."),
    )
    for title, fn, note in sections:
        out += [f"## {title}", "", note, ""]
        for name, model in results["models"].items():
            out += [f"### {MODEL_TITLES.get(name, name)}", "", fn(model), ""]
    out += [f"## {TABLE_TITLES[6]}", "",
            "Each model against the pruning solution (reference): its test accuracy, the "
            "accuracy of the two-model ensemble, disagreement, KL(reference || model) and "
            "JSD on the test set.", ""]
    for name, model in results["models"].items():
        ref = (model.get("similarity") or {}).get("reference_accuracy")
        out += [f"### {MODEL_TITLES.get(name, name)} (pruning solution test accuracy "
                f"{fmt(ref)})", "", similarity_md(model, name), ""]
    out += [f"## {TABLE_TITLES[7]}", "",
            "Pairs of models of the same method (no reference): do two lottery tickets make a "
            "better ensemble than two scratch runs?", ""]
    for name, model in results["models"].items():
        out += [f"### {MODEL_TITLES.get(name, name)}", "",
                similarity_md(model, name, "ensembles"), ""]
    out += [f"## {TABLE_TITLES[8]}", "",
            "Each claim is checked by the fixed rule shown, on our numbers; "
            f"{HOLDS} / {FAILS} / {MISSING}. An accuracy verdict whose margin is not larger "
            "than the largest seed standard deviation among the methods with two or more "
            f"trained runs at that sparsity is marked ({WITHIN_NOISE}): read it as no measured "
            f"difference; one that compares a method with a run that did not train is marked "
            f"({AT_CHANCE}).", "", claims_md(results), ""]
    if figures:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)
