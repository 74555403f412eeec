"""Lottery-ticket statistics: R_p, mask overlap, sign flips, std across levels, sparsity."""

import numpy as np
import pytest

from rigl_tf import analysis


def test_correlation_indicator_random_identical_and_by_hand():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(200, 250)), rng.normal(size=(100,)), rng.normal(size=(50, 40))]
    b = [rng.normal(size=w.shape) for w in a]
    for p in (0.1, 0.2, 0.5):
        assert analysis.correlation_indicator(a, b, p) == pytest.approx(p, abs=0.015)
    assert analysis.correlation_indicator(a, [3 * w for w in a], 0.2) == 1.0
    # Hand example: top-2 of |a| are positions {0, 1}; of |b| {1, 2} -> overlap 1/2.
    x = [np.array([[5.0, -4.0, 1.0, 0.0]])]
    y = [np.array([[0.0, 9.0, -8.0, 1.0]])]
    out = analysis.correlation_indicator(x, y, p=0.5, per_layer=True)
    assert out["total"] == 0.5 and out["per_layer"] == [0.5]
    # Biases (1-D) are skipped by default; the total is weighted by layer size.
    per = analysis.correlation_indicator(a, b, 0.2, per_layer=True)["per_layer"]
    assert per[1] is None
    with pytest.raises(ValueError, match="p"):
        analysis.correlation_indicator(a, b, p=0.0)


def test_mask_overlap_by_hand():
    a = [np.array([1, 1, 0, 0]), None, np.array([[1, 0], [1, 1]])]
    b = [np.array([1, 0, 1, 0]), None, np.array([[1, 0], [0, 1]])]
    out = analysis.mask_overlap(a, b)
    assert out["per_layer"][1] is None
    assert out["per_layer"][0] == {
        "shared": 1,
        "active_a": 2,
        "active_b": 2,
        "fraction_of_a": 0.5,
        "jaccard": 1 / 3,
    }
    assert out["total"] == {
        "shared": 3,
        "active_a": 5,
        "active_b": 4,
        "fraction_of_a": 0.6,
        "jaccard": 0.5,
    }
    with pytest.raises(ValueError, match=r"masks_b\[1\]"):
        analysis.mask_overlap(a, [b[0], np.ones(3), b[2]])


def test_sign_flips_by_hand():
    a = [np.array([1.0, -2.0, 3.0, 0.0]), np.array([1.0, 1.0])]
    b = [np.array([1.0, 2.0, -3.0, 5.0]), np.array([-1.0, 1.0])]
    out = analysis.sign_flips(a, b)  # active = non-zero in both: 3 + 2 entries
    assert out["flipped"] == 3 and out["active"] == 5 and out["total"] == 0.6
    assert out["per_layer"] == [2 / 3, 0.5]
    masked = analysis.sign_flips(a, b, masks=[np.array([1, 0, 0, 1]), None])
    # layer 0: entries 0 (same) and 3 (0 vs +5: sign differs); layer 1: 1 of 2.
    assert masked["flipped"] == 2 and masked["active"] == 4


def test_per_connection_std_and_sparsity_evolution():
    sets = [[np.array([0.0, 1.0]), np.array([2.0])], [np.array([2.0, 1.0]), np.array([2.0])]]
    out = analysis.per_connection_std(sets)
    np.testing.assert_allclose(out["std"][0], [1.0, 0.0])
    assert out["mean_std_per_layer"] == [0.5, 0.0] and out["mean_std"] == pytest.approx(1 / 3)
    masked = analysis.per_connection_std(sets, masks=[np.array([1, 0]), None])
    assert masked["mean_std"] == pytest.approx(0.5)

    levels = [
        [np.ones((2, 2)), None, np.ones(4)],
        [np.array([[1, 0], [1, 1]]), None, np.array([1, 1, 0, 0])],
        [np.array([[0, 0], [1, 0]]), None, np.array([1, 0, 0, 0])],
    ]
    evo = analysis.sparsity_evolution(levels, names=["k1", "b1", "k2"])
    assert evo["layers"] == ["k1", "k2"]
    np.testing.assert_allclose(evo["per_layer"], [[0, 0], [0.25, 0.5], [0.75, 0.75]])
    np.testing.assert_allclose(evo["total"], [0, 3 / 8, 6 / 8])
    with pytest.raises(ValueError, match=r"mask_sequence\[1\]"):
        analysis.sparsity_evolution([levels[0], [np.ones((2, 2)), np.ones(1), np.ones(4)]])


def test_correlation_indicator_with_masks_ignores_masked_zeros():
    from rigl_tf.analysis.tickets import correlation_indicator

    rng = np.random.RandomState(0)
    mask = (rng.rand(200, 100) < 0.1).astype(np.float32)
    a = rng.normal(size=(200, 100)) * mask
    b = rng.normal(size=(200, 100)) * mask
    # Without masks, half of each top-20% set is masked zeros chosen by index: inflated.
    assert correlation_indicator([a], [b], p=0.2) > 0.5
    # Restricted to the active entries, independent weights give about p.
    assert abs(correlation_indicator([a], [b], p=0.2, masks=[mask]) - 0.2) < 0.06
    assert correlation_indicator([a], [a], p=0.2, masks=[mask]) == 1.0
