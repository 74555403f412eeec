"""Ticket verdicts (Ma et al., "Sanity Checks for Lottery Tickets: Does Your Winning
Ticket Really Win the Jackpot?", NeurIPS 2021).

Every method is trained with several learning rates; each is judged by its *best*
accuracy over those learning rates (the paper's point: a ticket is only meaningful if
it beats random reinitialisation when both are properly tuned). At each sparsity, with

* ``D``  = best accuracy of the pretrained dense network,
* ``LT`` = best accuracy of the lottery ticket (IMP mask, original / rewound weights),
* ``RR`` = best accuracy of random reinitialisation (same mask, fresh weights),

and the thresholds ``similar`` (default 0.5 percentage points: "similar accuracy") and
``gap`` (default 0.5 points: "a clear gap"), the verdict is:

* ``'jackpot'``: ``LT - RR > gap`` and ``LT >= D - similar`` (the ticket matches the
  dense network and clearly beats random reinitialisation);
* ``'secondary prize'``: ``LT - RR > gap`` and ``LT < D - similar`` (a real ticket, but
  below the dense accuracy);
* ``'no ticket'``: ``LT - RR <= similar`` (random reinitialisation does as well, or
  better: the mask, not the initialisation, carries the performance);
* ``'inconclusive'``: ``similar < LT - RR <= gap``, possible only when ``gap > similar``.

A small-dense network with the same number of parameters is reported alongside (its
difference to LT) but does not enter the verdict. ``gap >= similar`` is required so that
the cases never overlap.
"""

import math
from typing import Dict, List, Mapping, Optional

from rigl_tf.lottery import layout

VERDICTS = ("jackpot", "secondary prize", "no ticket", "inconclusive")


def best_over_lrs(accuracies: Mapping, name: str) -> float:
    """The best accuracy over learning rates.

    Args:
      accuracies: learning rate -> accuracy (a single number is accepted too).
      name: the argument name for messages.

    Returns:
      The maximum accuracy.

    Raises:
      ValueError: if empty or not finite.
    """
    if isinstance(accuracies, (int, float)) and not isinstance(accuracies, bool):
        values = [float(accuracies)]
    else:
        if not isinstance(accuracies, Mapping) or not accuracies:
            raise ValueError(
                f"`{name}` must be a non-empty mapping learning rate -> accuracy, got "
                f"{accuracies!r}."
            )
        values = [float(v) for v in accuracies.values()]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"`{name}` has non-finite accuracies: {accuracies!r}.")
    return max(values)


def classify(dense: float, lottery: float, reinit: float, similar: float = 0.5,
             gap: float = 0.5) -> str:
    """The verdict for one sparsity from best accuracies (see the module docstring).

    Args:
      dense: best dense accuracy ``D``, in the same unit as the thresholds.
      lottery: best lottery-ticket accuracy ``LT``.
      reinit: best random-reinitialisation accuracy ``RR``.
      similar: "similar accuracy" threshold (>= 0).
      gap: "clear gap" threshold (>= similar).

    Returns:
      One of :data:`VERDICTS`.
    """
    _check_thresholds(similar, gap)
    diff = lottery - reinit
    if diff <= similar:
        return "no ticket"
    if diff <= gap:
        return "inconclusive"
    return "jackpot" if lottery >= dense - similar else "secondary prize"


def ticket_verdicts(dense: Mapping, lottery: Mapping, reinit: Mapping,
                    small_dense: Optional[Mapping] = None, *, similar: float = 0.5,
                    gap: float = 0.5, percent: bool = False,
                    r_p: Optional[Mapping] = None) -> List[Dict]:
    """Classifies every sparsity of accuracy tables over learning rates.

    Args:
      dense: learning rate -> accuracy of the pretrained dense network.
      lottery: sparsity -> {learning rate -> accuracy} of the lottery ticket.
      reinit: sparsity -> {learning rate -> accuracy} of random reinitialisation (the
        same sparsities as ``lottery``).
      small_dense: optional sparsity -> {learning rate -> accuracy} of the small-dense
        network with the ticket's parameter count (reported, not judged).
      similar: "similar accuracy" threshold in percentage points.
      gap: "clear gap" threshold in percentage points (>= ``similar``).
      percent: accuracies are in percent (0-100); default: fractions (0-1), converted to
        percent before comparing.
      r_p: optional sparsity -> correlation indicator R_p (reported).

    Returns:
      One dict per sparsity (ascending) with keys sparsity, dense, lottery, reinit,
      small_dense, lt_minus_rr, lt_minus_dense, verdict (accuracies in percent, best over
      learning rates) and r_p.

    Raises:
      ValueError: for mismatched sparsities, bad thresholds or accuracies out of range.
    """
    _check_thresholds(similar, gap)
    scale = 1.0 if percent else 100.0
    top = 100.0 if percent else 1.0

    def best(table, name):
        value = best_over_lrs(table, name)
        if not 0.0 <= value <= top:
            hint = "" if percent else "; pass percent=True for accuracies in percent"
            raise ValueError(
                f"`{name}` has accuracy {value!r} outside [0, {top:g}]{hint}."
            )
        return value * scale

    if set(lottery) != set(reinit):
        raise ValueError(
            f"`lottery` and `reinit` must cover the same sparsities; got "
            f"{sorted(lottery)} and {sorted(reinit)}."
        )
    if small_dense is not None and not set(small_dense) <= set(lottery):
        raise ValueError(
            f"`small_dense` has sparsities {sorted(set(small_dense) - set(lottery))} that "
            f"`lottery` does not have."
        )
    d = best(dense, "dense")
    rows = []
    for s in sorted(lottery, key=float):
        lt = best(lottery[s], f"lottery[{s!r}]")
        rr = best(reinit[s], f"reinit[{s!r}]")
        sd = (best(small_dense[s], f"small_dense[{s!r}]")
              if small_dense is not None and s in small_dense else None)
        rows.append({
            "sparsity": float(s),
            "dense": d,
            "lottery": lt,
            "reinit": rr,
            "small_dense": sd,
            "lt_minus_rr": lt - rr,
            "lt_minus_dense": lt - d,
            "lt_minus_small_dense": None if sd is None else lt - sd,
            "verdict": classify(d, lt, rr, similar, gap),
            "r_p": None if r_p is None or s not in r_p else float(r_p[s]),
        })
    return rows


def format_verdict_table(rows: List[Dict]) -> str:
    """Formats :func:`ticket_verdicts` rows as a text table (accuracies in percent)."""
    head = (f"{'sparsity':>9} {'dense':>7} {'LT':>7} {'RR':>7} {'small':>7} "
            f"{'LT-RR':>7} {'LT-D':>7} {'R_p':>6}  verdict")
    lines = [head, "-" * len(head)]

    def fmt(v, width=7, digits=2):
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for r in rows:
        lines.append(
            f"{r['sparsity']:>9.4f} {fmt(r['dense'])} {fmt(r['lottery'])} {fmt(r['reinit'])} "
            f"{fmt(r['small_dense'])} {fmt(r['lt_minus_rr'])} {fmt(r['lt_minus_dense'])} "
            f"{fmt(r['r_p'], 6, 3)}  {r['verdict']}"
        )
    return "\n".join(lines)


def verdict_table(dense: Mapping, lottery: Mapping, reinit: Mapping,
                  small_dense: Optional[Mapping] = None, *, similar: float = 0.5,
                  gap: float = 0.5, percent: bool = False, r_p: Optional[Mapping] = None,
                  path: Optional[str] = None, print_fn=print) -> List[Dict]:
    """Classifies every sparsity, prints the table and optionally writes JSON.

    Args:
      dense, lottery, reinit, small_dense, similar, gap, percent, r_p: see
        :func:`ticket_verdicts`.
      path: if given, a JSON file ``{"similar", "gap", "rows"}`` is written there
        (atomically).
      print_fn: where the table goes (None: not printed).

    Returns:
      The rows of :func:`ticket_verdicts`.
    """
    rows = ticket_verdicts(dense, lottery, reinit, small_dense, similar=similar, gap=gap,
                           percent=percent, r_p=r_p)
    if print_fn is not None:
        print_fn(format_verdict_table(rows))
    if path:
        layout.write_json(path, {"similar": similar, "gap": gap, "unit": "percent",
                                 "rows": rows})
    return rows


def _check_thresholds(similar, gap):
    for name, value in (("similar", similar), ("gap", gap)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"`{name}` must be a number >= 0 (percentage points), got {value!r}.")
    if gap < similar:
        raise ValueError(
            f"`gap` ({gap!r}) must be >= `similar` ({similar!r}), or the 'no ticket' and "
            f"ticket cases would overlap."
        )


__all__ = ["VERDICTS", "best_over_lrs", "classify", "format_verdict_table",
           "ticket_verdicts", "verdict_table"]
