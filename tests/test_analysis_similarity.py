"""Function-similarity metrics on hand-made probability tables."""

import math

import keras
import numpy as np
import pytest

from rigl_tf import analysis

P1 = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
P2 = np.array([[0.4, 0.6], [0.3, 0.7], [0.9, 0.1], [0.2, 0.8]])
LABELS = np.array([0, 1, 1, 1])


def _h(*p):
    return -sum(q * math.log(q) for q in p if q > 0)


def test_accuracy_ensemble_and_disagreement_by_hand():
    assert analysis.accuracy(P1, LABELS) == 0.75  # argmax 0,1,0,1
    assert analysis.accuracy(P2, LABELS) == 0.5  # argmax 1,1,0,1
    # mean: [.55,.45], [.25,.75], [.75,.25], [.15,.85] -> 0,1,0,1
    assert analysis.ensemble_accuracy([P1, P2], LABELS) == 0.75
    assert analysis.disagreement(P1, P2) == 0.25  # only example 0 differs


def test_kl_and_jsd_by_hand():
    kl = (
        (0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6))
        + (0.2 * math.log(0.2 / 0.3) + 0.8 * math.log(0.8 / 0.7))
        + (0.6 * math.log(0.6 / 0.9) + 0.4 * math.log(0.4 / 0.1))
        + (0.1 * math.log(0.1 / 0.2) + 0.9 * math.log(0.9 / 0.8))
    ) / 4
    assert analysis.kl_divergence(P1, P2) == pytest.approx(kl, rel=1e-12)
    assert analysis.kl_divergence(P1, P1) == 0.0
    jsd = (
        (_h(0.55, 0.45) - (_h(0.7, 0.3) + _h(0.4, 0.6)) / 2)
        + (_h(0.25, 0.75) - (_h(0.2, 0.8) + _h(0.3, 0.7)) / 2)
        + (_h(0.75, 0.25) - (_h(0.6, 0.4) + _h(0.9, 0.1)) / 2)
        + (_h(0.15, 0.85) - (_h(0.1, 0.9) + _h(0.2, 0.8)) / 2)
    ) / 4
    assert analysis.jensen_shannon([P1, P2]) == pytest.approx(jsd, rel=1e-12)
    one_hot = np.eye(3)[[0, 1, 2]]
    assert analysis.jensen_shannon([one_hot, one_hot[[1, 2, 0]]]) == pytest.approx(math.log(2))
    assert analysis.jensen_shannon(
        [one_hot, one_hot[[1, 2, 0]], one_hot[[2, 0, 1]]]
    ) == pytest.approx(math.log(3))
    # Zero probabilities: 0 log 0 = 0, and q = 0 where p > 0 is clipped, not infinite.
    assert np.isfinite(analysis.kl_divergence(one_hot, one_hot[[1, 2, 0]]))


def test_pairwise_matrices_and_mean_std():
    p3 = P1[[1, 0, 3, 2]]
    dis = analysis.pairwise_matrix([P1, P2, p3], "disagreement")
    np.testing.assert_allclose(dis, dis.T)
    assert dis[0, 1] == 0.25 and dis[0, 2] == 1.0 and np.all(np.diag(dis) == 0)
    mean, std = analysis.mean_std_over_pairs(dis)
    pairs = [0.25, 1.0, dis[1, 2]]
    assert mean == pytest.approx(np.mean(pairs)) and std == pytest.approx(np.std(pairs))
    kl = analysis.pairwise_matrix([P1, P2], "kl")
    assert kl[0, 1] == pytest.approx(analysis.kl_divergence(P1, P2))
    assert kl[1, 0] == pytest.approx(analysis.kl_divergence(P2, P1))
    assert analysis.mean_std_over_pairs(kl, symmetric=False)[0] == pytest.approx(
        (kl[0, 1] + kl[1, 0]) / 2
    )
    with pytest.raises(ValueError, match="metric"):
        analysis.pairwise_matrix([P1, P2], "cosine")


def test_similarity_table_with_reference_and_text():
    ref = P1
    rows = analysis.similarity_table({"LT": [P1, P2], "Scratch": [P2, P2]}, LABELS, reference=ref)
    assert [r["method"] for r in rows] == ["LT", "Scratch"]
    lt = rows[0]
    assert lt["accuracy"] == pytest.approx((0.625, 0.125))
    assert lt["disagreement"] == pytest.approx((0.125, 0.125))  # 0 and 0.25
    assert lt["kl"][0] == pytest.approx(analysis.kl_divergence(P1, P2) / 2)
    assert lt["jsd"][0] == pytest.approx(analysis.jensen_shannon([P1, P2]) / 2)
    assert rows[1]["ensemble_accuracy"] == pytest.approx((0.75, 0.0))
    text = analysis.format_similarity_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[0] == "Method" and "Disagreement" in lines[0] and "JSD" in lines[0]
    assert lines[2].startswith("LT") and "0.1250 ± 0.1250" in lines[2]
    # Without a reference: over pairs of the method's models.
    rows = analysis.similarity_table({"seeds": [P1, P2, P1]}, LABELS)
    assert rows[0]["disagreement"][0] == pytest.approx((0.25 + 0.0 + 0.25) / 3)
    with pytest.raises(ValueError, match="probs_by_method"):
        analysis.similarity_table({"one": [P1]}, LABELS)


def test_predict_probs_is_softmax_of_logits():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(size=(11, 3)).astype(np.float32)
    y = np.arange(11) % 4
    probs, labels = analysis.predict_probs(model, (x, y), batch_size=4, return_labels=True)
    logits = model.predict(x, verbose=0).astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    np.testing.assert_array_equal(labels, y)
