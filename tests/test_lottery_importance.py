"""Importance measures and exact-count IMP pruning masks (rigl_tf.lottery.importance)."""

import numpy as np
import pytest

from rigl_tf.lottery import importance as imp_lib
from rigl_tf.sparsity.distributions import num_active

W = np.array([[1.0, -2.0], [3.0, 0.5]])
M = np.array([[1.0, 1.0], [1.0, 0.0]])  # 0.5 is inactive
A = np.array([1.0, 2.0, 3.0])  # active magnitudes in flat order


def _active(scores):
    flat = scores.reshape(-1)
    assert np.isneginf(flat[3])  # inactive position
    return flat[:3]


def test_magnitude_is_abs_weight():
    np.testing.assert_allclose(_active(imp_lib.layer_scores(W, M, "magnitude")), A)


def test_l1_divides_by_sum_of_active_magnitudes():
    np.testing.assert_allclose(_active(imp_lib.layer_scores(W, M, "l1")), A / 6.0)


def test_l2_divides_by_norm_of_active_magnitudes():
    np.testing.assert_allclose(_active(imp_lib.layer_scores(W, M, "l2")), A / np.sqrt(14.0))


def test_softmax_of_active_magnitudes():
    expected = np.exp(A) / np.exp(A).sum()
    got = _active(imp_lib.layer_scores(W, M, "softmax"))
    np.testing.assert_allclose(got, expected)
    assert got.sum() == pytest.approx(1.0)
    # Large magnitudes do not overflow (shift by the maximum).
    big = imp_lib.layer_scores(np.array([1000.0, 1001.0]), np.ones(2), "softmax")
    np.testing.assert_allclose(big, np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum())


def test_minmax_maps_active_range_to_unit_interval():
    np.testing.assert_allclose(_active(imp_lib.layer_scores(W, M, "minmax")), [0.0, 0.5, 1.0])
    const = imp_lib.layer_scores(np.array([0.3, -0.3, 0.3]), np.ones(3), "minmax")
    np.testing.assert_array_equal(const, np.ones(3))


def test_degenerate_layers():
    zeros = np.zeros(4)
    np.testing.assert_allclose(imp_lib.layer_scores(zeros, np.ones(4), "l1"), 0.25)
    np.testing.assert_allclose(imp_lib.layer_scores(zeros, np.ones(4), "l2"), 0.5)
    assert np.all(np.isneginf(imp_lib.layer_scores(W, np.zeros((2, 2)), "l2")))


def test_random_scores_are_seeded_and_keyed_by_level():
    a = imp_lib.layer_scores(W, M, "random", seed=3, level=1)
    b = imp_lib.layer_scores(W, M, "random", seed=3, level=1)
    c = imp_lib.layer_scores(W, M, "random", seed=3, level=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all((_active(a) >= 0) & (_active(a) < 1))


def test_unknown_measure_lists_known_ones():
    with pytest.raises(ValueError, match=r"'snip'.*magnitude, l1, l2, softmax, minmax, random"):
        imp_lib.layer_scores(W, M, "snip")
    with pytest.raises(ValueError, match="measure"):
        imp_lib.prune_masks({"a": W}, {"a": M}, 0.5, measure="taylor")


def _two_layers():
    weights = {"big/kernel": np.array([10.0, 20.0, 30.0, 40.0]),
               "small/kernel": np.array([0.1, 0.2, 0.3, 0.4])}
    masks = {k: np.ones(4) for k in weights}
    return weights, masks


def test_global_magnitude_vs_layer_normalized_measures():
    weights, masks = _two_layers()
    with pytest.warns(UserWarning, match=r"'small/kernel'.*disconnected"):
        mag = imp_lib.prune_masks(weights, masks, 0.5, measure="magnitude", scope="global",
                                  min_active=0)
    np.testing.assert_array_equal(mag["big/kernel"], [1, 1, 1, 1])
    np.testing.assert_array_equal(mag["small/kernel"], [0, 0, 0, 0])
    l1 = imp_lib.prune_masks(weights, masks, 0.5, measure="l1", scope="global", min_active=0)
    # Same relative profile in both layers: ties broken by position (first layer first).
    assert l1["big/kernel"].sum() + l1["small/kernel"].sum() == 4
    np.testing.assert_array_equal(l1["big/kernel"], [0, 0, 1, 1])
    np.testing.assert_array_equal(l1["small/kernel"], [0, 0, 1, 1])


def test_layerwise_counts_follow_num_active_for_every_measure():
    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(size=(7, 5)), "b": rng.normal(size=(13,)) * 50}
    masks = {k: np.ones(np.shape(w)) for k, w in weights.items()}
    for measure in imp_lib.list_measures():
        for density in (0.8, 0.64, 0.3):
            out = imp_lib.prune_masks(weights, masks, density, measure=measure,
                                      scope="layerwise")
            for k in weights:
                assert int(out[k].sum()) == num_active(density, np.size(weights[k])), measure
                keep = out[k].reshape(-1) > 0
                if measure != "random":  # the kept weights are the largest in the layer
                    mags = np.abs(weights[k]).reshape(-1)
                    assert mags[keep].min() >= mags[~keep].max()


def test_global_total_is_exact_and_subset_of_current_mask():
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(size=(6, 6)), "b": rng.normal(size=(10,))}
    masks = {"a": (rng.random((6, 6)) < 0.7).astype(np.float32), "b": np.ones(10)}
    for measure in imp_lib.list_measures():
        out = imp_lib.prune_masks(weights, masks, 0.4, measure=measure, scope="global")
        assert sum(int(m.sum()) for m in out.values()) == num_active(0.4, 46, 0)
        for k in weights:
            assert np.all(out[k] <= masks[k])  # never revives a pruned weight
    assert imp_lib.target_counts({"a": 36, "b": 10}, 0.4, "global") == num_active(0.4, 46, 0)


def test_layer_that_would_be_emptied_keeps_min_active_with_warning():
    weights = {"big": np.arange(1.0, 101.0), "tiny": np.full(3, 1e-6)}
    masks = {k: np.ones(np.shape(w)) for k, w in weights.items()}
    with pytest.warns(UserWarning, match=r"'tiny'.*keeping its 1"):
        out = imp_lib.prune_masks(weights, masks, 0.5, scope="global", min_active=1)
    assert out["tiny"].sum() == 1
    assert out["big"].sum() + out["tiny"].sum() == num_active(0.5, 103, 0)
    with pytest.warns(UserWarning, match=r"'tiny'.*keeping its 1"):
        out = imp_lib.prune_masks(weights, masks, 0.1, scope="layerwise", min_active=1)
    assert out["tiny"].sum() == 1 and out["big"].sum() == 10
    with pytest.warns(UserWarning, match="disconnected"):
        out = imp_lib.prune_masks(weights, masks, 0.1, scope="layerwise", min_active=0)
    assert out["tiny"].sum() == 0


@pytest.mark.parametrize("bad", [0, 1, 1.0, -0.1, 1.5, "x", None, True])
def test_prune_fraction_outside_open_unit_interval(bad):
    with pytest.raises(ValueError, match=r"`prune_fraction` must be .*\(0, 1\).*got"):
        imp_lib.check_fraction(bad)


def test_prune_by_fraction_and_bad_arguments():
    weights, masks = _two_layers()
    out = imp_lib.prune_by_fraction(weights, masks, 0.25, scope="layerwise")
    assert [int(m.sum()) for m in out.values()] == [3, 3]
    with pytest.raises(ValueError, match="`fraction`"):
        imp_lib.prune_by_fraction(weights, masks, 1.0)
    with pytest.raises(ValueError, match="scope"):
        imp_lib.prune_masks(weights, masks, 0.5, scope="per_neuron")
    with pytest.raises(ValueError, match="density"):
        imp_lib.prune_masks(weights, masks, 0.0)
    with pytest.raises(ValueError, match="shape"):
        imp_lib.prune_masks(weights, {"big/kernel": np.ones(3), "small/kernel": np.ones(4)},
                            0.5)
