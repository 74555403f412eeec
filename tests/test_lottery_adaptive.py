"""Adaptive pruning ratio (Paul et al.): larger p on a flat path, the 0.2 minimum otherwise."""

import keras
import numpy as np
import pytest

import rigl_tf
from rigl_tf.lottery import adaptive
from rigl_tf.lottery import importance as imp_lib


def test_select_fraction_takes_largest_accepted_and_stops_at_first_failure():
    p, sweep = adaptive.select_fraction(lambda p: 1.0, threshold=1.5)
    assert p == 0.9 and len(sweep) == 9 and all(s["accepted"] for s in sweep)
    calls = []

    def steep(p):
        calls.append(p)
        return 1.0 + 10 * p

    p, sweep = adaptive.select_fraction(steep, threshold=1.0 + 10 * 0.35)
    assert p == 0.3 and calls == [0.1, 0.2, 0.3, 0.4]
    assert [s["accepted"] for s in sweep] == [True, True, True, False]
    p, _ = adaptive.select_fraction(steep, threshold=0.5)  # nothing accepted
    assert p == 0.2
    p, _ = adaptive.select_fraction(steep, threshold=1.15)  # only 0.1 accepted: minimum wins
    assert p == 0.2


def _model_and_data(tiny_fraction):
    """A linear sparse model whose kernel has a fraction of near-zero weights."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((20,))
    outputs = keras.layers.Dense(3, name="out")(inputs)
    model = rigl_tf.sparsify(keras.Model(inputs, outputs), 0.0, "uniform", init="dense")
    kernel = rng.normal(size=(20, 3)).astype(np.float32)
    tiny = rng.random((20, 3)) < tiny_fraction
    kernel[tiny] *= 1e-6
    model.layers[-1].layer.kernel.assign(kernel)
    x = rng.normal(size=(64, 20)).astype(np.float32)
    y = np.argmax(x @ kernel, axis=1)
    return model, x, y


def _prune_fn(model):
    items = rigl_tf.masked_weights(model)
    weights = {k: w.numpy() for k, w, _ in items}
    masks = {k: m.numpy() for k, _, m in items}
    return lambda p: imp_lib.prune_masks(weights, masks, 1.0 - p, scope="layerwise")


def test_flat_path_allows_a_large_fraction():
    model, x, y = _model_and_data(tiny_fraction=0.85)
    before = [w.numpy().copy() for w in model.weights]
    dense_loss = adaptive.mean_loss(model, x, y)
    p, sweep = adaptive.adaptive_fraction(model, _prune_fn(model), x, y, dense_loss + 1e-3)
    # Up to 80% of the weights are ~0: pruning them leaves the loss unchanged.
    assert p == 0.8
    assert sweep[-1] == {"p": 0.9, "max_loss": pytest.approx(sweep[-1]["max_loss"]),
                         "accepted": False}
    for w, b in zip(model.weights, before):  # weights restored
        np.testing.assert_array_equal(w.numpy(), b)


def test_steep_path_falls_back_to_the_minimum():
    model, x, y = _model_and_data(tiny_fraction=0.0)
    dense_loss = adaptive.mean_loss(model, x, y)
    p, sweep = adaptive.adaptive_fraction(model, _prune_fn(model), x, y, dense_loss + 1e-3)
    # Every weight matters: at most 10% can go at once, so the 0.2 minimum is pruned.
    assert p == 0.2
    assert len(sweep) <= 2 and not sweep[-1]["accepted"]


def test_path_losses_endpoints():
    model, x, y = _model_and_data(tiny_fraction=0.0)
    masks = {k: np.zeros(tuple(w.shape)) for k, w, _ in rigl_tf.masked_weights(model)}
    losses = adaptive.path_losses(model, masks, x, y, alphas=(0.5, 1.0))
    # At alpha = 1 every kernel weight is zero: logits = bias = 0, loss = log(3).
    assert losses[1] == pytest.approx(np.log(3.0), rel=1e-5)
    assert losses[0] < losses[1]


def test_loss_std_and_compute_savings():
    assert adaptive.loss_std([1.0, 3.0]) == 1.0
    with pytest.raises(ValueError, match="losses"):
        adaptive.loss_std([])
    s = adaptive.compute_savings([1.0, 0.5, 0.2, 0.08], 0.9, steps_per_level=100,
                                 first_level_steps=120)
    # 0.8^10 = 0.107 > 0.1 >= 0.8^11: the fixed ratio needs 11 levels.
    assert (s["adaptive_levels"], s["fixed_levels"]) == (3, 11)
    assert (s["adaptive_steps"], s["fixed_steps"]) == (420, 1220)
    assert s["saved_levels"] == 8 and s["saved_steps"] == 800
    assert s["saved_fraction"] == pytest.approx(800 / 1220)
    assert adaptive.compute_savings([1.0, 0.5], 0.9, 100)["adaptive_steps"] is None


def test_bad_candidates_and_alphas():
    with pytest.raises(ValueError, match=r"`candidates\[1\]`"):
        adaptive.check_candidates([0.1, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        adaptive.check_candidates([0.3, 0.2])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        adaptive.check_alphas([0.0, 0.5])
