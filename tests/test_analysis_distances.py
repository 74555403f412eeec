"""Weight-space distances and classical MDS."""

import numpy as np
import pytest

from rigl_tf import analysis


def test_l2_and_cosine_by_hand():
    a = [np.array([3.0, 0.0]), np.array([[0.0]])]
    b = [np.array([0.0, 4.0]), np.array([[0.0]])]
    assert analysis.l2_distance(a, b) == pytest.approx(5.0)
    assert analysis.cosine_distance(a, b) == pytest.approx(1.0)
    per = analysis.l2_distance(a, b, per_variable=True)
    assert per["total"] == pytest.approx(5.0) and per["per_variable"] == [pytest.approx(5.0), 0.0]
    c = [np.array([1.0, 1.0]), np.array([[1.0]])]
    # cos = (3 + 0 + 0) / (3 * sqrt(3))
    assert analysis.cosine_distance(a, c) == pytest.approx(1 - 1 / np.sqrt(3))
    assert np.isnan(analysis.cosine_distance(a, b, per_variable=True)["per_variable"][1])
    with pytest.raises(ValueError, match="weights_b"):
        analysis.l2_distance(a, b[:1])


def test_angular_distance_identical_random_opposite_and_masked():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(300, 200)), rng.normal(size=(500,))]
    b = [rng.normal(size=(300, 200)), rng.normal(size=(500,))]
    assert analysis.angular_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert analysis.angular_distance(a, b) == pytest.approx(1.0, abs=0.01)
    assert analysis.angular_distance(a, [-w for w in a]) == pytest.approx(2.0, abs=1e-6)
    # Two vectors that agree on the shared support but not elsewhere: distance 0 there.
    mask_a = [rng.random((300, 200)) < 0.5, None]
    mask_b = [rng.random((300, 200)) < 0.5, None]
    shared = mask_a[0] & mask_b[0]
    c = [np.where(shared, a[0], b[0]), a[1]]
    assert analysis.angular_distance(a, c, mask_a, mask_b) == pytest.approx(0.0, abs=1e-6)
    per = analysis.angular_distance(a, c, mask_a, mask_b, per_variable=True)["per_variable"]
    assert per == [pytest.approx(0.0, abs=1e-6), pytest.approx(0.0, abs=1e-6)]
    assert analysis.angular_distance(a, c) > 0.3


def test_distance_matrix_and_mds_recover_points_on_a_line():
    positions = np.array([0.0, 1.0, 3.0, 7.0, 7.5])
    weights = [[np.array([p, 2 * p]), np.array([[-p]])] for p in positions]
    d = analysis.distance_matrix(weights, "l2")
    expected = np.abs(positions[:, None] - positions[None, :]) * np.sqrt(6)
    np.testing.assert_allclose(d, expected, atol=1e-12)
    coords, eigs = analysis.mds_embedding(d, dims=2, return_eigenvalues=True)
    np.testing.assert_allclose(
        np.abs(coords[:, 0][:, None] - coords[:, 0][None, :]), expected, atol=1e-9
    )
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-6)
    assert eigs[1] == pytest.approx(0.0, abs=1e-9)
    cos = analysis.distance_matrix(weights[1:], "cosine")
    np.testing.assert_allclose(cos, 0.0, atol=1e-12)  # same direction
    with pytest.raises(ValueError, match="metric"):
        analysis.distance_matrix(weights, "manhattan")
    with pytest.raises(ValueError, match="dims"):
        analysis.mds_embedding(d, dims=6)


def test_mds_reproduces_euclidean_distances_in_2d():
    points = np.random.default_rng(1).normal(size=(6, 2))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = analysis.mds_embedding(d)
    np.testing.assert_allclose(
        np.linalg.norm(coords[:, None] - coords[None], axis=-1), d, atol=1e-9
    )
