"""Central claims of rigl_tf.analysis checked against hand-worked numbers.

Each test guards a mutant in tools/mutation_check.py; the expected values are worked out
by hand in the comments, never read back from the code under test.
"""

import numpy as np
import pytest

from rigl_tf import analysis


def test_ensemble_averages_probabilities_not_log_probabilities():
    # Three classes; the label of both examples is 0.
    #   example 0: p1 = [.8, .2, 0], p2 = [0, .5, .5]
    #     mean of probabilities = [.4, .35, .25] -> argmax 0 (correct).
    #     mean of log-probabilities (geometric ensemble) would pick class 1:
    #     class 0 has log 0 = -inf (or log eps), class 1 (log .2 + log .5) / 2 = -1.15.
    #   example 1: p1 = [.3, .7, 0], p2 = [.6, 0, .4]
    #     mean = [.45, .35, .2] -> argmax 0 (correct); geometric: class 0 is the only one
    #     that both models give non-zero mass -> also 0 (a control that both agree on).
    p1 = np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]])
    p2 = np.array([[0.0, 0.5, 0.5], [0.6, 0.0, 0.4]])
    labels = np.array([0, 0])
    assert analysis.ensemble_accuracy([p1, p2], labels) == 1.0
    # Each model alone: p1 argmax [0, 1] -> 1/2; p2 argmax [1 (tie .5/.5 -> first), 0] -> 1/2.
    assert analysis.accuracy(p1, labels) == 0.5
    assert analysis.accuracy(p2, labels) == 0.5
    # The same ensemble in the reference-table layout (model p2 ensembled with reference p1).
    stats = analysis.similarity_to_reference([p2], p1, labels)
    assert stats["ensemble_accuracy"].tolist() == [1.0]


def test_correlation_indicator_total_is_weighted_by_layer_size():
    # Layer A (1 x 4, 4 entries), p = 0.5 -> k = 2: top-2 of |a| = {0, 1}, of |b| = {1, 2}
    # -> overlap 1 / 2.
    # Layer B (2 x 5, 10 entries), k = 5: identical magnitudes (b = -3 a) -> overlap 1.
    # Weighted by size: (0.5 * 4 + 1.0 * 10) / (4 + 10) = 12 / 14 = 6 / 7
    # (an unweighted mean over layers would give (0.5 + 1) / 2 = 0.75).
    layer_b = np.arange(1.0, 11.0).reshape(2, 5)
    a = [np.array([[5.0, -4.0, 1.0, 0.5]]), layer_b]
    b = [np.array([[0.0, 9.0, -8.0, 1.0]]), -3.0 * layer_b]
    out = analysis.correlation_indicator(a, b, p=0.5, per_layer=True)
    assert out["per_layer"] == [0.5, 1.0]
    assert out["total"] == pytest.approx(6.0 / 7.0, rel=1e-12)


def test_error_barrier_subtracts_the_linear_interpolation_of_unequal_endpoints():
    # Endpoint values 0 (alpha 0) and 1 (alpha 1); the path is
    #   alpha:  0    0.25  0.5   0.75  1
    #   value:  0    0.5   0.6   0.8   1
    # gap = value - alpha * 1:  0, 0.25, 0.1, 0.05, 0 -> barrier 0.25 at alpha 0.25.
    # (Measured from the mean of the endpoints (0.5) the maximum would be 1 - 0.5 = 0.5
    # at alpha 1; measured from the larger endpoint it would be 0.)
    alphas = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    values = np.array([0.0, 0.5, 0.6, 0.8, 1.0])
    barrier = analysis.error_barrier({"alphas": alphas, "loss": values, "error": values / 2})
    assert barrier["loss"] == pytest.approx(0.25, abs=1e-12)
    assert barrier["loss_alpha"] == 0.25
    assert barrier["error"] == pytest.approx(0.125, abs=1e-12)
    # Points outside [0, 1] do not count, however high: alpha 1.2 with value 10 is ignored.
    barrier = analysis.error_barrier({
        "alphas": np.append(alphas, 1.2),
        "loss": np.append(values, 10.0),
        "error": np.append(values, 10.0),
    })
    assert barrier["loss"] == pytest.approx(0.25, abs=1e-12)
    assert barrier["error_alpha"] == 0.25
