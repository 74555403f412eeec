"""Central claims of the lottery tools, with expectations worked out by hand.

Each test guards a mutant of ``tools/mutation_check.py`` (see its MUTANTS list): the
expected values come from the papers' rules / the documented formulas, computed in the
comments or by a small numpy model here, never from the code under test.
"""

import numpy as np
import pytest
import tensorflow as tf

from rigl_tf.lottery import adaptive
from rigl_tf.lottery import branches
from rigl_tf.lottery import importance as imp_lib
from rigl_tf.lottery import repellent
from rigl_tf.lottery import verdict


# ------------------------------------------------------------------ importance
def test_prune_by_fraction_prunes_a_fraction_of_the_remaining_weights():
    # 8 weights, 4 still active (positions 4..7): current density 4/8 = 0.5.
    # Pruning 50% of the *remaining* weights -> density 0.5 * (1 - 0.5) = 0.25 of the full
    # size -> 0.25 * 8 = 2 weights kept: the two largest active ones (7.0, 8.0).
    weights = {"w": np.arange(1.0, 9.0)}
    masks = {"w": np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)}
    for scope in ("global", "layerwise"):
        out = imp_lib.prune_by_fraction(weights, masks, 0.5, scope=scope)
        np.testing.assert_array_equal(out["w"], [0, 0, 0, 0, 0, 0, 1, 1])


def test_layerwise_pruning_never_revives_a_pruned_weight():
    # Only the smallest weight (1.0) is still active. Density 0.5 of 4 entries asks for
    # 2 weights, but only 1 is active: the mask must stay a subset of the current one
    # (the larger, already pruned weights 4, 3, 2 must not come back).
    weights = {"w": np.array([4.0, 3.0, 2.0, 1.0])}
    masks = {"w": np.array([0.0, 0.0, 0.0, 1.0])}
    for measure in ("magnitude", "l1", "l2", "softmax", "minmax"):
        out = imp_lib.prune_masks(weights, masks, 0.5, measure=measure, scope="layerwise")
        np.testing.assert_array_equal(out["w"], [0, 0, 0, 1], err_msg=measure)


# ------------------------------------------------------------------ adaptive (Paul et al.)
def test_adaptive_fraction_accepted_at_exactly_the_threshold():
    # "accepted while the maximum loss stays at or below dense loss + epsilon":
    # a path loss equal to the threshold (2.0) for p <= 0.5 accepts 0.1 .. 0.5; 0.6 (3.0)
    # is the first rejection -> fraction 0.5, sweep of 6 candidates.
    p, sweep = adaptive.select_fraction(lambda p: 2.0 if p <= 0.5 else 3.0, threshold=2.0)
    assert p == 0.5
    assert [s["accepted"] for s in sweep] == [True] * 5 + [False]


def test_levels_to_reach_counts_a_density_exactly_at_the_target():
    # "first level whose density is at most 1 - target": 1 - 0.75 = 0.25 exactly, reached
    # at level 2 (densities 1, 0.5, 0.25, 0.125).
    assert adaptive.levels_to_reach([1.0, 0.5, 0.25, 0.125], 0.75) == 2
    # 1 - 0.9 = 0.09999999999999998 in floating point: a density of 0.1 is at the target.
    assert adaptive.levels_to_reach([1.0, 0.1], 0.9) == 1
    # compute_savings: fixed 20% needs ceil(log 0.25 / log 0.8) = ceil(6.21) = 7 levels;
    # adaptive 2 levels; steps 100 + 7 * 100 = 800 vs 100 + 2 * 100 = 300.
    s = adaptive.compute_savings([1.0, 0.5, 0.25], 0.75, steps_per_level=100)
    assert (s["adaptive_levels"], s["fixed_levels"]) == (2, 7)
    assert (s["adaptive_steps"], s["fixed_steps"], s["saved_steps"]) == (300, 800, 500)


# ------------------------------------------------------------------ verdict (Ma et al.)
def test_jackpot_uses_the_similar_threshold_against_dense():
    # similar = 0.5, gap = 1.0, D = 92: LT - RR = 1.25 > gap (a real ticket).
    # LT = 91.25 < D - similar = 91.5 -> secondary prize (it would be a jackpot if LT were
    # compared with D - gap = 91.0).
    assert verdict.classify(92.0, 91.25, 90.0, similar=0.5, gap=1.0) == "secondary prize"
    # LT = 91.5 == D - similar (LT - RR = 1.5 > gap): "LT >= D - similar" -> jackpot.
    assert verdict.classify(92.0, 91.5, 90.0, similar=0.5, gap=1.0) == "jackpot"


def test_inconclusive_band_is_closed_at_gap():
    # similar < LT - RR <= gap is inconclusive: LT - RR = 91 - 90 = 1.0 == gap.
    assert verdict.classify(92.0, 91.0, 90.0, similar=0.5, gap=1.0) == "inconclusive"
    # Just above the gap it is a ticket: 91.125 - 90 = 1.125 > 1.0, 91.125 < 91.5.
    assert verdict.classify(92.0, 91.125, 90.0, similar=0.5, gap=1.0) == "secondary prize"


# ------------------------------------------------------------------ repellent (Maene et al.)
def test_repellent_ignores_pruned_entries_of_the_current_weights():
    # m = (1, 1, 0): a = m * (3, 4, 100) = (3, 4, 0), b = m * (3, 4, 7) = (3, 4, 0):
    # cos^2 = 25^2 / (25 * 25) = 1, times lambda_r = 0.5. (With the pruned 100 left in a,
    # cos^2 would be 625 / (10025 * 25) ~ 0.0025.)
    w = [tf.constant([3.0, 4.0, 100.0])]
    value = repellent.repellent_loss(w, [[np.array([3.0, 4.0, 7.0])]],
                                     [np.array([1.0, 1.0, 0.0])], strength=0.5)
    assert float(value) == pytest.approx(0.5, rel=1e-6)


# ------------------------------------------------------------------ branches
def test_shuffle_masks_permutes_each_layer_with_its_own_stream():
    # Documented: weight i (map order) is permuted by numpy.random.default_rng([seed, i]).
    m = np.array([1.0] * 10 + [0.0] * 10, np.float32).reshape(4, 5)
    masks = {"a/kernel": m, "b/kernel": m.copy()}
    out = branches.shuffle_masks(masks, seed=7)
    for i, key in enumerate(masks):
        expected = np.random.default_rng([7, i]).permutation(m.reshape(-1)).reshape(4, 5)
        np.testing.assert_array_equal(out[key], expected)
        assert out[key].sum() == 10  # same count per layer
    # Identical input masks, independent streams: the layers get different positions.
    assert not np.array_equal(out["a/kernel"], out["b/kernel"])
