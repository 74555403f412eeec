"""Pure sparsity math: distributions, exact masks, sparse initializers, schedules."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from rigl_tf.sparsity import distributions as D
from rigl_tf.sparsity import init as I
from rigl_tf.sparsity import masks as M
from rigl_tf.sparsity import schedules as S

LENET_SHAPES = {
    "conv1": (5, 5, 1, 20),
    "conv2": (5, 5, 20, 50),
    "fc1": (2450, 500),
    "fc2": (500, 10),
}


# ----------------------------------------------------------------- distributions
@pytest.mark.parametrize("dist", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95, 0.99])
def test_budget_holds(dist, sparsity):
    dens = D.get_densities(LENET_SHAPES, sparsity, dist)
    total = sum(np.prod(s) for s in LENET_SHAPES.values())
    active = sum(dens[k] * np.prod(s) for k, s in LENET_SHAPES.items())
    assert active == pytest.approx((1 - sparsity) * total, rel=1e-9)
    assert all(0 < d <= 1 for d in dens.values())


def test_erk_formula_and_capping():
    dens = D.get_densities(LENET_SHAPES, 0.95, "erk")
    # conv1 is tiny: its raw ERK probability is the largest, it is capped at density 1.
    assert dens["conv1"] == 1.0
    # The uncapped layers keep the ERK proportionality: density / raw probability is eps.
    raw = {k: sum(s) / np.prod(s) for k, s in LENET_SHAPES.items()}
    eps = {k: dens[k] / raw[k] for k in LENET_SHAPES if dens[k] < 1}
    assert len(set(np.round(list(eps.values()), 12))) == 1


def test_er_ignores_kernel_dims():
    shapes = {"a": (3, 3, 16, 32), "b": (1, 1, 16, 32)}
    dens = D.get_densities(shapes, 0.8, "er")
    assert dens["a"] == pytest.approx(dens["b"])
    dens_k = D.get_densities(shapes, 0.8, "erk")
    assert dens_k["b"] > dens_k["a"]


def test_capping_multiple_rounds():
    shapes = {"tiny": (2, 2), "small": (10, 10), "big": (1000, 1000)}
    dens = D.get_densities(shapes, 0.5, "erk")
    assert dens["tiny"] == 1.0 and dens["small"] == 1.0
    total = sum(np.prod(s) for s in shapes.values())
    assert sum(dens[k] * np.prod(s) for k, s in shapes.items()) == pytest.approx(0.5 * total)


def test_custom_sparsity_excluded_from_budget():
    dens = D.get_densities(LENET_SHAPES, 0.9, "uniform", {"fc2": 0.0})
    assert dens["fc2"] == 1.0 and dens["fc1"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), r"`sparsity` must be in \[0, 1\), got 1.0"),
        (dict(sparsity=-0.1), "`sparsity` must be in"),
        (dict(sparsity="a"), "`sparsity` must be a number"),
        (dict(sparsity=0.5, distribution="erx"), "Unknown `distribution` 'erx'.*erk"),
        (dict(sparsity=0.5, custom_sparsity={"nope": 0.1}), "`custom_sparsity` names.*nope"),
    ],
)
def test_distribution_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.get_densities(LENET_SHAPES, **kwargs)


def test_counts_exact_and_min_active_warning():
    shapes = {"a": (10, 10), "b": (3, 1)}
    with pytest.warns(UserWarning, match="'b'.*keeping 1 active"):
        counts = D.get_counts(shapes, {"a": 0.25, "b": 0.1})
    assert counts == {"a": 25, "b": 1}
    with pytest.warns(UserWarning, match="disconnected"):
        assert D.get_counts(shapes, {"a": 0.25, "b": 0.1}, min_active=0)["b"] == 0


def test_num_active_rounds_half_to_even():
    assert D.num_active(0.5, 5) == 2  # 2.5 -> 2
    assert D.num_active(0.7, 5) == 4  # 3.5 -> 4
    assert D.num_active(0.0, 5) == 1
    assert D.num_active(0.0, 5, min_active=0) == 0


# ----------------------------------------------------------------- masks
@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    frac=st.floats(0, 1),
    data=st.data(),
)
def test_topk_mask_exact_count_and_selection(shape, frac, data):
    n = int(np.prod(shape))
    k = int(round(frac * n))
    values = data.draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))  # many ties
    scores = np.array(values, np.float32).reshape(shape)
    mask = M.topk_mask(scores, k).numpy()
    assert mask.sum() == k
    assert set(np.unique(mask)) <= {0.0, 1.0}
    if 0 < k < n:  # every chosen score >= every unchosen score
        assert scores[mask == 1].min() >= scores[mask == 0].max()
    np.testing.assert_array_equal(mask, M.topk_mask_np(scores, k))


def test_topk_mask_tensor_k_in_function_and_xla():
    scores = tf.random.stateless_uniform([6, 5], seed=[1, 2])

    @tf.function(jit_compile=True)
    def f(k):
        return M.topk_mask(scores, k)

    for k in [0, 1, 7, 30]:
        assert f(tf.constant(k)).numpy().sum() == k


@pytest.mark.parametrize("case", ["same_high_digit", "spread", "neg_inf", "signed_zeros",
                                  "large"])
def test_topk_radix_selection_matches_stable_sort(case):
    # The radix selection finds the k-th largest key from its high 16 bits, then its low
    # 16 bits: scores that share the high bits (1.0 + i ulp), that span many bins, half
    # -inf, signed zeros, and more scores than histogram bins. Expected: numpy's stable argsort (written
    # out here), and the XLA path (bisection) must agree.
    rng = np.random.RandomState(7)
    if case == "same_high_digit":
        scores = (np.float32(1.0).view(np.int32) + rng.randint(0, 600, 3000)).view(np.float32)
    elif case == "spread":
        scores = (rng.randn(3000) * 10.0 ** rng.randint(-30, 30, 3000)).astype(np.float32)
    elif case == "neg_inf":
        scores = rng.randn(3000).astype(np.float32)
        scores[rng.rand(3000) < 0.5] = -np.inf
    elif case == "signed_zeros":
        # -0.0 and +0.0 compare equal: ties, taken in index order (a score such as
        # w * g is -0.0 wherever w = 0 and g < 0).
        scores = rng.choice(np.array([-0.0, 0.0, 1.0, -1.0], np.float32), 3000)
    else:
        scores = rng.randint(-50, 50, 70_000).astype(np.float32) * np.float32(0.25)
    n = scores.size

    @tf.function(jit_compile=True)
    def xla(s, k):
        return M.topk_mask(s, k)

    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        expected = np.zeros(n, np.float32)
        expected[np.argsort(-scores, kind="stable")[:k]] = 1.0
        np.testing.assert_array_equal(M.topk_mask(scores, k).numpy(), expected, err_msg=f"k={k}")
        if n <= 3000:
            np.testing.assert_array_equal(xla(scores, tf.constant(k)).numpy(), expected)


def test_topk_excludes_neg_inf_when_possible():
    scores = np.array([-np.inf, 1.0, -np.inf, 0.5], np.float32)
    np.testing.assert_array_equal(M.topk_mask(scores, 2).numpy(), [0, 1, 0, 1])


def test_global_topk():
    a = np.array([[5.0, 1.0], [0.0, 3.0]], np.float32)
    b = np.array([4.0, 2.0, 6.0], np.float32)
    ma, mb = (m.numpy() for m in M.global_topk_masks([a, b], 3))
    np.testing.assert_array_equal(ma, [[1, 0], [0, 0]])
    np.testing.assert_array_equal(mb, [1, 0, 1])


def test_random_mask_deterministic_and_independent():
    m1 = M.random_mask((20, 30), 100, seed=3, index=0).numpy()
    m2 = M.random_mask((20, 30), 100, seed=3, index=0).numpy()
    m3 = M.random_mask((20, 30), 100, seed=3, index=1).numpy()
    m4 = M.random_mask((20, 30), 100, seed=4, index=0).numpy()
    np.testing.assert_array_equal(m1, m2)
    assert m1.sum() == m3.sum() == m4.sum() == 100
    assert not np.array_equal(m1, m3) and not np.array_equal(m1, m4)


# ----------------------------------------------------------------- initializers
def _fans_by_hand(mask, in_axes, out_axes):
    """Sparse fan-in / fan-out of every position from mask sums (independent of I)."""
    rank = mask.ndim
    not_out = tuple(a for a in range(rank) if a not in out_axes)
    not_in = tuple(a for a in range(rank) if a not in in_axes)
    fan_in = np.broadcast_to(mask.sum(axis=not_out, keepdims=True), mask.shape)
    fan_out = np.broadcast_to(mask.sum(axis=not_in, keepdims=True), mask.shape)
    return fan_in, fan_out


def _target_std(mask, in_axes, out_axes, method, scale):
    fan_in, fan_out = _fans_by_hand(mask, in_axes, out_axes)
    fan = {"fanin": fan_in, "fanout": fan_out, "fanavg": (fan_in + fan_out) / 2.0}[
        method.split("_")[0]]
    return np.sqrt(scale / np.maximum(fan, 1))


def _check_unit_variance(shape, in_axes, out_axes, density, method, scale):
    n = int(np.prod(shape))
    mask = M.random_mask(shape, int(round(density * n)), seed=7).numpy()
    w = I.unit_scaled(mask, in_axes, out_axes, method, scale, seed=11).numpy()
    assert np.all(w[mask == 0] == 0)
    target = _target_std(mask, in_axes, out_axes, method, scale)
    z = w[mask == 1] / target[mask == 1]  # standardised: should be ~ unit variance
    # Standard error of a variance estimate from m samples is about sqrt(2/m).
    tol = 5 * math.sqrt(2.0 / z.size) + (0.05 if "uniform" in method else 0.0)
    assert np.var(z) == pytest.approx(1.0, abs=tol)
    return mask, w


@pytest.mark.parametrize("density", [0.5, 0.1, 0.02])
@pytest.mark.parametrize("method", ["fanin_normal", "fanout_uniform", "fanavg_normal"])
def test_unit_scaled_dense_kernel_variance(density, method):
    _check_unit_variance((400, 300), (0,), (1,), density, method, 2.0)


@pytest.mark.parametrize("density", [0.5, 0.05])
def test_unit_scaled_conv_per_neuron_variance(density):
    # Per output channel: variance over its active weights equals scale / fan_in.
    shape = (3, 3, 64, 128)
    mask, w = _check_unit_variance(shape, (2,), (3,), density, "fanin_normal", 1.0)
    fan_in = mask.reshape(-1, 128).sum(0)
    second_moment = (w.reshape(-1, 128) ** 2).sum(0) / np.maximum(fan_in, 1)
    ratio = second_moment * fan_in  # ~ scale = 1 for every neuron
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)


def test_unit_scaled_defaults_are_glorot_fan_average_uniform():
    """Paper Appendix A.2 / the reference: scale 1, average of sparse fan-in and fan-out."""
    mask = M.random_mask((400, 300), 12000, seed=3).numpy()
    w = I.unit_scaled(mask, (0,), (1,), seed=5).numpy()  # defaults
    fan_in = mask.sum(0, keepdims=True)  # per output unit (column)
    fan_out = mask.sum(1, keepdims=True)  # per input unit (row)
    limit = np.sqrt(3.0 * 1.0 / ((fan_in + fan_out) / 2.0))  # U(-a, a): a^2 / 3 = 1 / fan
    active = mask == 1
    u = (w / limit)[active]
    assert np.all(np.abs(u) <= 1.0 + 1e-6) and np.max(np.abs(u)) > 0.99
    assert np.var(u) == pytest.approx(1.0 / 3.0, abs=0.01)  # Var U(-1, 1) = 1/3
    import inspect

    import rigl_tf
    from rigl_tf.experiments import config as C

    for fn, names in ((C.unit_scaled_init, ("method", "scale")),
                      (rigl_tf.initialize, ("method", "scale")),
                      (rigl_tf.sparsify, ("init_method", "init_scale"))):
        params = inspect.signature(inspect.unwrap(fn)).parameters
        assert tuple(params[n].default for n in names) == ("fanavg_uniform", 1.0), fn


def _uneven_mask(n_in, n_out, seed):
    """A mask whose density varies strongly from unit to unit: P(active) = r_i * c_j with
    the output units' c_j from 0.03 to 1 (fan-in ~ 40 .. 1500 for 1500 inputs)."""
    rng = np.random.RandomState(seed)
    r = rng.uniform(0.5, 1.0, n_in)[:, None]
    c = np.exp(np.linspace(np.log(0.03), 0.0, n_out))[None, :]
    rng.shuffle(c[0])
    return (rng.uniform(size=(n_in, n_out)) < r * c).astype(np.float32)


@pytest.mark.parametrize("method", ["fanin_normal", "fanin_uniform", "fanout_normal",
                                    "fanout_uniform", "fanavg_normal", "fanavg_uniform"])
def test_unit_scaled_per_unit_fan(method):
    """Every unit gets variance scale / its own sparse fan (not the layer's average fan):
    per-unit bound, and no correlation between a unit's fan and its variance ratio."""
    kind, dist = method.split("_")
    scale = 1.5
    mask = _uneven_mask(1500, 48, seed=0)
    unit_axis = 0 if kind == "fanout" else 1  # fan-out belongs to input units (rows)
    if kind == "fanout":
        mask = np.ascontiguousarray(mask.T)  # (48, 1500): 48 input units, varied fan-out
    w = I.unit_scaled(mask, (0,), (1,), method, scale, seed=3).numpy()
    assert np.all(w[mask == 0] == 0)
    fan_in = mask.sum(axis=0)[None, :]  # per output unit (column)
    fan_out = mask.sum(axis=1)[:, None]  # per input unit (row)
    fan = {"fanin": fan_in + 0 * mask, "fanout": fan_out + 0 * mask,
           "fanavg": (fan_in + fan_out) / 2.0}[kind]
    expected_var = scale / fan
    if dist == "uniform":  # U(-a, a) with a = sqrt(3 * scale / fan): a hard bound
        assert np.all(np.abs(w) <= np.sqrt(3.0 * expected_var) * (1 + 1e-6))
    active = mask > 0
    n = active.sum(axis=1 - unit_axis)  # active weights of each unit
    assert n.min() >= 25 and n.max() / n.min() > 15  # the fans really vary a lot
    ratio = (np.where(active, w**2 / expected_var, 0.0).sum(axis=1 - unit_axis)) / n
    # Relative standard deviation of a mean of n squared draws: sqrt(2/n) for normal,
    # sqrt(4/5)/sqrt(n) for uniform; 5 of them as the per-unit bound.
    rel_sd = (math.sqrt(2.0) if dist == "normal" else math.sqrt(0.8)) / np.sqrt(n)
    assert np.all(np.abs(ratio - 1.0) < 5 * rel_sd), (ratio.min(), ratio.max())
    unit_fan = fan_in[0] if kind != "fanout" else fan_out[:, 0]
    corr = np.corrcoef(np.log(unit_fan), np.log(ratio))[0, 1]
    assert abs(corr) < 0.45, corr


def test_unit_scaled_defaults_by_hand():
    """Defaults as in the reference (fanavg_uniform, scale 1): a regular mask with fan-in
    a = 100 per output unit and fan-out b = 50 per input unit has Var(w) = 1 / 75, i.e.
    U(-a, a) with a = sqrt(3 / 75) = 0.2 and std 0.11547."""
    n_in, n_out, a = 400, 200, 100
    mask = np.zeros((n_in, n_out), np.float32)
    for j in range(n_out):  # column j covers rows 2j .. 2j+99 (mod 400)
        mask[(2 * j + np.arange(a)) % n_in, j] = 1.0
    assert set(mask.sum(0)) == {100.0} and set(mask.sum(1)) == {50.0}
    w = I.unit_scaled(mask, (0,), (1,), seed=0).numpy()
    active = w[mask == 1]
    assert np.abs(active).max() <= 0.2 * (1 + 1e-6)
    assert np.abs(active).max() > 0.199
    assert np.std(active) == pytest.approx(0.11547, rel=0.03)


def test_fans_depthwise_and_transpose():
    mask = np.ones((3, 3, 4, 2), np.float32)
    fi, fo = (t.numpy() for t in I.sparse_fans(mask, (2,), (2, 3)))
    assert np.all(fi == 9) and np.all(fo == 18)  # each (in, mult) unit sees 3x3 inputs
    fi_t, fo_t = (t.numpy() for t in I.sparse_fans(np.ones((3, 3, 5, 4)), (3,), (2,)))
    assert np.all(fi_t == 36) and np.all(fo_t == 45)


def test_layer_scaled_variance():
    dense = np.random.RandomState(0).normal(0, 0.1, (300, 300)).astype(np.float32)
    mask = M.random_mask((300, 300), 9000, seed=1).numpy()
    w = I.layer_scaled(dense, mask).numpy()
    assert np.all(w[mask == 0] == 0)
    assert np.std(w[mask == 1]) == pytest.approx(0.1 / math.sqrt(0.1), rel=0.05)


def test_initializer_errors():
    with pytest.raises(ValueError, match="Unknown unit_scaled `method` 'fan_normal'"):
        I.unit_scaled(np.ones((2, 2)), (0,), (1,), method="fan_normal")
    with pytest.raises(ValueError, match="`scale` must be > 0"):
        I.unit_scaled(np.ones((2, 2)), (0,), (1,), scale=0)
    with pytest.raises(ValueError, match="Unknown `init` 'he'.*unit_scaled"):
        I.check_initializer("he")


# ----------------------------------------------------------------- schedules
def test_update_schedule_semantics():
    s = S.UpdateSchedule(update_freq=10, start_step=20, end_step=50)
    got = [t for t in range(80) if bool(s.is_update_step(t))]
    assert got == [20, 30, 40, 50]
    never = S.UpdateSchedule(update_freq=10, end_step=0)
    assert not any(bool(never.is_update_step(t)) for t in range(50))
    forever = S.UpdateSchedule(update_freq=10, end_step=-1)
    assert bool(forever.is_update_step(10**6))
    assert not bool(forever.is_update_step(0))  # default start_step = update_freq


def test_cosine_drop_fraction_is_the_papers_formula_from_step_0():
    # f(t) = f0 / 2 * (1 + cos(pi * min(t, T) / T)), T = end_step, counted from step 0
    # whatever the first update step (start_step = 40 here).
    f = S.DropFractionSchedule("cosine", 0.3, start_step=40, end_step=100)
    assert float(f(0)) == pytest.approx(0.3)
    assert float(f(25)) == pytest.approx(0.15 * (1 + 0.7071067811865476))  # cos(pi/4)
    assert float(f(50)) == pytest.approx(0.15)  # cos(pi/2) = 0
    assert float(f(75)) == pytest.approx(0.15 * (1 - 0.7071067811865476))
    assert float(f(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(f(200)) == pytest.approx(0.0, abs=1e-7)


def test_cosine_drop_fraction_that_can_never_finish_is_refused():
    with pytest.raises(ValueError, match=r"'cosine' drop-fraction .* must be > 0, got -1"):
        S.DropFractionSchedule("cosine", 0.3, end_step=-1)
    assert float(S.DropFractionSchedule("cosine", 0.3, end_step=0)(5)) == pytest.approx(0.3)


def test_lr_drop_fraction_is_normalised_by_the_peak():
    lr = S.DropFractionSchedule("lr", 0.3)
    assert float(lr(5, learning_rate=0.05, peak_learning_rate=0.1)) == pytest.approx(0.15)
    assert float(lr(5, learning_rate=0.0, peak_learning_rate=0.1)) == 0.0


def test_er_ignores_erk_power_scale_like_the_reference():
    shapes = {"a": (5, 5, 16, 32), "b": (200, 100), "c": (100, 10)}
    # ER: raw = (n_in + n_out) / (n_in * n_out) of the last two dims, no power.
    er = D.get_densities(shapes, 0.9, "er", erk_power_scale=0.5)
    raw = {"a": 48 / 512, "b": 300 / 20000, "c": 110 / 1000}
    sizes = {"a": 12800, "b": 20000, "c": 1000}
    eps = 0.1 * sum(sizes.values()) / sum(raw[k] * sizes[k] for k in shapes)
    assert max(eps * r for r in raw.values()) <= 1.0  # no capping in this example
    for k in shapes:
        assert er[k] == pytest.approx(eps * raw[k])
    # ERK: raw = (sum(shape) / prod(shape)) ** power.
    erk = D.get_densities(shapes, 0.9, "erk", erk_power_scale=0.5)
    rawk = {"a": (58 / 12800) ** 0.5, "b": (300 / 20000) ** 0.5, "c": (110 / 1000) ** 0.5}
    epsk = 0.1 * sum(sizes.values()) / sum(rawk[k] * sizes[k] for k in shapes)
    assert max(epsk * r for r in rawk.values()) <= 1.0
    for k in shapes:
        assert erk[k] == pytest.approx(epsk * rawk[k])


def test_polynomial_pruning_schedule():
    s = S.PruningSchedule("polynomial", 0.0, 0.9, begin_step=100, end_step=200, frequency=30)
    steps = [t for t in range(300) if bool(s.is_prune_step(t))]
    assert steps == [100, 130, 160, 190, 200]
    assert float(s.sparsity(100)) == pytest.approx(0.0)
    assert float(s.sparsity(150)) == pytest.approx(0.9 * (1 - 0.5**3))
    assert float(s.sparsity(250)) == pytest.approx(0.9)
    one = S.PruningSchedule("oneshot", final_sparsity=0.5, begin_step=7)
    assert [t for t in range(20) if bool(one.is_prune_step(t))] == [7]


@pytest.mark.parametrize(
    "ctor, match",
    [
        (lambda: S.UpdateSchedule(update_freq=0), "`update_freq` must be >= 1, got 0"),
        (lambda: S.UpdateSchedule(10, start_step=50, end_step=20), "`end_step` \\(20\\) must be >= `start_step` \\(50\\)"),
        (lambda: S.DropFractionSchedule("cosine", 1.5), r"`init_drop_fraction` must be in \[0.0, 1.0\], got 1.5"),
        (lambda: S.DropFractionSchedule("exp", 0.3), "Unknown drop-fraction `schedule_alg` 'exp'"),
        (lambda: S.PruningSchedule("poly"), "Unknown pruning `schedule` 'poly'"),
        (lambda: S.PruningSchedule(final_sparsity=1.0), "`final_sparsity` must be in"),
        (lambda: S.PruningSchedule(begin_step=10, end_step=5), "`end_step` \\(5\\) must be >= `begin_step` \\(10\\)"),
        (lambda: S.PruningSchedule(frequency=0), "`frequency` must be >= 1"),
    ],
)
def test_schedule_errors(ctor, match):
    with pytest.raises(ValueError, match=match):
        ctor()
