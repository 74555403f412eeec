"""Central claims of the analysis tools, checked against independent numpy / hand values.

Each test's expectation comes from a small numpy model or arithmetic in a comment, never
from the function under test.
"""

import math

import keras
import numpy as np
import pytest

from rigl_tf import analysis
from rigl_tf.analysis.hessian import eigenvalues
from rigl_tf.sparsity import masks as M


def _softmax_regression(d=3, c=2, n=3, seed=0):
    """Dense(c, no bias) logits x W: a model whose Hessian numpy can write down."""
    model = keras.Sequential(
        [keras.Input((d,), dtype="float64"), keras.layers.Dense(c, use_bias=False, dtype="float64")]
    )
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, c))
    model.trainable_variables[0].assign(w)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, c, n).astype(np.int32)
    return model, w, x, y


def _numpy_hessian_of_mean_ce(w, x):
    """H of mean_n CE(softmax(x_n W), y_n) w.r.t. W flattened row-major (index i*C + c).

    d f_c / d W_ic = x_i, and the CE Hessian in the logits is A = diag(p) - p p^T
    (independent of y), so H = 1/N sum_n kron(x_n x_n^T, A_n).
    """
    total = 0.0
    for xn in x:
        f = xn @ w
        p = np.exp(f - f.max())
        p /= p.sum()
        a = np.diag(p) - np.outer(p, p)
        total = total + np.kron(np.outer(xn, xn), a)
    return total / len(x)


def test_hvp_is_the_mean_over_examples_not_over_batches():
    # 3 examples in batches of 2: two batches, so a per-batch mean would divide by 2, not 3.
    model, w, x, y = _softmax_regression(n=3)
    expected_h = _numpy_hessian_of_mean_ce(w, x)
    v = np.random.default_rng(1).normal(size=expected_h.shape[0])
    got = analysis.hvp(model, (x, y), v, batch_size=2)
    np.testing.assert_allclose(got, expected_h @ v, rtol=1e-9, atol=1e-12)
    op = analysis.HessianOperator(model, (x, y), batch_size=2)
    np.testing.assert_allclose(op.matvec(v), expected_h @ v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["auto", "forward_over_reverse"])
def test_sparse_hessian_is_the_active_sub_block_of_the_mean_loss_hessian(method):
    model, w, x, y = _softmax_regression(n=3)
    mask = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    model.trainable_variables[0].assign(w * mask)
    full = _numpy_hessian_of_mean_ce(w * mask, x)
    active = np.flatnonzero(mask.ravel())  # [0, 2, 3, 5]
    expected = full[np.ix_(active, active)]
    matrix, coords = analysis.hessian(model, (x, y), [mask], batch_size=2, method=method)
    assert coords.num_params == 4
    np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(eigenvalues(matrix), np.linalg.eigvalsh(expected), atol=1e-12)


def test_eigenvalues_of_a_symmetric_matrix_ascending_with_orthonormal_vectors():
    # [[2, 1], [1, 2]]: eigenvalues 2 -+ 1 = 1, 3 with vectors (1, -1)/sqrt2, (1, 1)/sqrt2.
    matrix = np.array([[2.0, 1.0], [1.0, 2.0]])
    values, vectors = eigenvalues(matrix, return_vectors=True)
    np.testing.assert_allclose(values, [1.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(np.abs(vectors[:, 1]), [1 / math.sqrt(2)] * 2, atol=1e-12)
    # diag(5, -1, 2) permuted: ascending -1, 2, 5.
    np.testing.assert_allclose(eigenvalues(np.diag([5.0, -1.0, 2.0])), [-1.0, 2.0, 5.0])


def test_spectral_density_normalises_given_weights():
    # eigs 0 and 1 with weights 1 : 3 -> 0.25, 0.75. At t = 0 with sigma = 0.5:
    # (0.25 * 1 + 0.75 * exp(-0.5 * (1 / 0.5)^2)) / (0.5 sqrt(2 pi)).
    expected = (0.25 + 0.75 * math.exp(-2.0)) / (0.5 * math.sqrt(2 * math.pi))
    for weights in ([1.0, 3.0], [2.0, 6.0]):
        got = analysis.spectral_density([0.0, 1.0], [0.0], sigma=0.5, weights=weights)
        np.testing.assert_allclose(got, [expected], rtol=1e-12)


def test_similarity_to_reference_uses_kl_reference_to_model():
    ref = np.array([[0.5, 0.5]])
    model = np.array([[0.9, 0.1]])
    stats = analysis.similarity_to_reference([model], ref, np.array([0]))
    # KL(ref || model) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5 ln(25/9) = ln(5/3)
    # (the reverse, KL(model || ref) = 0.9 ln 1.8 + 0.1 ln 0.2 ~ 0.368, differs).
    assert stats["kl"][0] == pytest.approx(math.log(5 / 3), rel=1e-12)
    # JSD through the mixture m = (0.7, 0.3): 1/2 KL(ref || m) + 1/2 KL(model || m).
    jsd = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) + 0.5 * (
        0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    )
    assert stats["jsd"][0] == pytest.approx(jsd, rel=1e-12)
    assert stats["disagreement"][0] == 0.0  # both argmax 0 (tie -> first index)


def test_jsd_is_half_kl_to_the_mixture_averaged_over_examples():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.9, 0.1], [0.0, 1.0]])
    # Example 0 as in the test above; example 1: disjoint supports -> ln 2.
    ex0 = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) + 0.5 * (
        0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    )
    assert analysis.jensen_shannon([p, q]) == pytest.approx((ex0 + math.log(2)) / 2, rel=1e-12)


def test_l2_distance_spans_every_variable():
    a = [np.array([1.0, 2.0]), np.array([[3.0]]), np.array([0.5])]
    b = [np.array([1.0, 0.0]), np.array([[0.0]]), np.array([-0.5])]
    # sqrt(0 + 2^2 + 3^2 + 1^2) = sqrt(14)
    assert analysis.l2_distance(a, b) == pytest.approx(math.sqrt(14.0), rel=1e-12)
    # cos over the concatenation: <a, b> = 1 - 0.25 = 0.75, |a|^2 = 14.25, |b|^2 = 1.25.
    cos = 0.75 / math.sqrt(14.25 * 1.25)
    assert analysis.cosine_distance(a, b) == pytest.approx(1.0 - cos, rel=1e-12)


def test_global_topk_counts_across_tensors_of_different_sizes():
    a = np.array([10.0, 9.0, 8.0, 7.0], np.float32)
    b = np.array([[1.0, 2.0]], np.float32)
    # The 3 largest of {10, 9, 8, 7, 1, 2} are all in a.
    ma, mb = (m.numpy() for m in M.global_topk_masks([a, b], 3))
    np.testing.assert_array_equal(ma, [1, 1, 1, 0])
    np.testing.assert_array_equal(mb, [[0, 0]])
    # k = 5: the four of a and the larger (2.0) of b.
    ma, mb = (m.numpy() for m in M.global_topk_masks([a, b], 5))
    np.testing.assert_array_equal(ma, [1, 1, 1, 1])
    np.testing.assert_array_equal(mb, [[0, 1]])
