"""Ticket verdicts (Ma et al.): jackpot / secondary prize / no ticket on hand-made tables."""

import json

import pytest

from rigl_tf.lottery import verdict

LRS = (0.01, 0.1)
DENSE = {0.01: 91.0, 0.1: 92.0}  # best: 92.0
# sparsity -> accuracies over the learning rates (percent)
LOTTERY = {
    0.5: {0.01: 91.9, 0.1: 91.0},   # best 91.9: matches dense (>= 91.5)
    0.8: {0.01: 89.0, 0.1: 90.0},   # best 90.0: below dense - 0.5
    0.9: {0.01: 85.0, 0.1: 86.2},   # best 86.2
    0.95: {0.01: 80.0, 0.1: 80.4},  # best 80.4
}
REINIT = {
    0.5: {0.01: 90.0, 0.1: 91.0},   # best 91.0: LT - RR = 0.9 > 0.5 -> jackpot
    0.8: {0.01: 88.0, 0.1: 89.2},   # best 89.2: gap 0.8 -> secondary prize
    0.9: {0.01: 86.0, 0.1: 85.9},   # best 86.0: gap 0.2 -> no ticket
    0.95: {0.01: 81.5, 0.1: 81.0},  # best 81.5: RR better -> no ticket
}
SMALL = {0.5: {0.01: 90.5}, 0.8: {0.1: 88.0}}


def test_all_three_outcomes_from_best_over_learning_rates():
    rows = verdict.ticket_verdicts(DENSE, LOTTERY, REINIT, SMALL, percent=True)
    assert [r["verdict"] for r in rows] == [
        "jackpot", "secondary prize", "no ticket", "no ticket"]
    first = rows[0]
    assert (first["dense"], first["lottery"], first["reinit"]) == (92.0, 91.9, 91.0)
    assert first["lt_minus_rr"] == pytest.approx(0.9)
    assert first["lt_minus_small_dense"] == pytest.approx(1.4)
    assert rows[2]["small_dense"] is None


def test_fractions_are_converted_to_percentage_points():
    def frac(table):
        return {k: {lr: v / 100 for lr, v in t.items()} for k, t in table.items()}

    rows = verdict.ticket_verdicts({lr: v / 100 for lr, v in DENSE.items()}, frac(LOTTERY),
                                   frac(REINIT))
    assert [r["verdict"] for r in rows] == [
        "jackpot", "secondary prize", "no ticket", "no ticket"]
    assert rows[0]["lottery"] == pytest.approx(91.9)


def test_thresholds_are_configurable_and_boundaries_exact():
    assert verdict.classify(92.0, 91.5, 91.0) == "no ticket"  # LT - RR == similar
    assert verdict.classify(92.0, 91.51, 91.0) == "jackpot"
    assert verdict.classify(92.0, 91.49, 90.0) == "secondary prize"
    # A wider "clear gap" leaves an inconclusive band between the thresholds.
    assert verdict.classify(92.0, 91.9, 91.0, similar=0.5, gap=1.0) == "inconclusive"
    assert verdict.classify(92.0, 91.9, 91.0, similar=0.1, gap=0.2) == "jackpot"
    assert verdict.classify(92.0, 91.0, 90.0, similar=1.5, gap=1.5) == "no ticket"


def test_bad_input():
    with pytest.raises(ValueError, match=r"`gap` \(0.2\) must be >= `similar` \(0.5\)"):
        verdict.classify(1, 1, 1, similar=0.5, gap=0.2)
    with pytest.raises(ValueError, match="`similar` must be a number >= 0"):
        verdict.classify(1, 1, 1, similar=-1)
    with pytest.raises(ValueError, match="percent=True"):
        verdict.ticket_verdicts(DENSE, LOTTERY, REINIT)  # percent tables read as fractions
    with pytest.raises(ValueError, match="same sparsities"):
        verdict.ticket_verdicts(DENSE, LOTTERY, {0.5: REINIT[0.5]}, percent=True)
    with pytest.raises(ValueError, match="non-empty mapping"):
        verdict.ticket_verdicts({}, LOTTERY, REINIT, percent=True)


def test_verdict_table_prints_and_writes_json(tmp_path, capsys):
    path = tmp_path / "verdict.json"
    rows = verdict.verdict_table(DENSE, LOTTERY, REINIT, SMALL, percent=True,
                                 r_p={0.5: 0.8}, path=str(path))
    out = capsys.readouterr().out
    assert "jackpot" in out and "secondary prize" in out and "no ticket" in out
    data = json.loads(path.read_text())
    assert data["similar"] == 0.5 and data["gap"] == 0.5
    assert [r["verdict"] for r in data["rows"]] == [r["verdict"] for r in rows]
    assert data["rows"][0]["r_p"] == 0.8
