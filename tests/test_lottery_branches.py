"""Branches from an IMP level: each start has the documented mask / weight relationship."""

import os

import keras
import numpy as np
import pytest

import rigl_tf
from rigl_tf.experiments import models as models_lib
from rigl_tf.experiments.config import make_spec
from rigl_tf.lottery import IMPConfig, IMPRun, branches, layout

CONFIG = IMPConfig(rewinding="step", rewind_step=2)
SPEC = make_spec(network={"network_name": "mlp", "hidden_sizes": (24,)},
                 data={"dataset_name": "digits"}, training={"total_steps": 6, "batch_size": 32},
                 optimizer={"learning_rate": 0.05})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("imp") / "run")
    IMPRun(CONFIG, SPEC, run_dir=directory).run(2)
    keras.backend.clear_session()
    return directory


@pytest.fixture
def run(run_dir):
    return IMPRun(CONFIG, SPEC, run_dir=run_dir)  # resumes: no training


def test_lottery_is_rewind_point_times_mask(run):
    model, start = branches.branch_start(run, 2, "lottery")
    assert model is run.model
    theta_k = run.read_weights(0, "rewind")
    masks = run.masks(2)
    for k, w, _ in rigl_tf.masked_weights(run.model):
        np.testing.assert_array_equal(start.masks[k], masks[k])
        np.testing.assert_array_equal(start.weights[w.path], theta_k[w.path] * masks[k])
    assert (start.start_step, start.end_step, start.data_seed) == (2, 6, 0)
    _, data_order = branches.branch_start(run, 2, "data_order", seed=3)
    assert data_order.data_seed == 3
    np.testing.assert_array_equal(data_order.weights["sparse_dense/dense/kernel"],
                                  start.weights["sparse_dense/dense/kernel"])


def test_shuffle_mask_keeps_counts_and_moves_positions(run):
    _, start = branches.branch_start(run, 2, "shuffle_mask", seed=1)
    theta_k = run.read_weights(0, "rewind")
    masks = run.masks(2)
    for k, w, _ in rigl_tf.masked_weights(run.model):
        assert start.masks[k].sum() == masks[k].sum()
        assert not np.array_equal(start.masks[k], masks[k])
        np.testing.assert_array_equal(start.weights[w.path], theta_k[w.path] * start.masks[k])
    _, again = branches.branch_start(run, 2, "shuffle_mask", seed=1)
    _, other = branches.branch_start(run, 2, "shuffle_mask", seed=2)
    key = next(iter(masks))
    np.testing.assert_array_equal(again.masks[key], start.masks[key])  # seeded
    assert not np.array_equal(other.masks[key], start.masks[key])


def test_reinit_keeps_the_mask_and_changes_the_weights(run):
    _, start = branches.branch_start(run, 2, "reinit", seed=1)
    theta0 = run.read_weights(0, "start")
    masks = run.masks(2)
    assert start.start_step == 0 and start.info["init_seed"] != CONFIG.seed
    for k, w, _ in rigl_tf.masked_weights(run.model):
        np.testing.assert_array_equal(start.masks[k], masks[k])
        new = start.weights[w.path]
        assert np.all(new[masks[k] == 0] == 0)
        assert not np.allclose(new[masks[k] > 0], theta0[w.path][masks[k] > 0])


def test_random_prune_draws_a_new_mask_with_the_same_layer_counts(run):
    _, start = branches.branch_start(run, 2, "random_prune", seed=1)
    masks = run.masks(2)
    for k, w, _ in rigl_tf.masked_weights(run.model):
        assert start.masks[k].sum() == masks[k].sum()
        assert not np.array_equal(start.masks[k], masks[k])
        assert np.all(start.weights[w.path][start.masks[k] == 0] == 0)


def test_small_dense_matches_the_ticket_parameter_count(run):
    model, start = branches.branch_start(run, 2, "small_dense", seed=1)
    nonzero = branches.ticket_kernel_params(run.model, run.masks(2))
    params = models_lib.count_params(model)
    assert abs(params - nonzero) / nonzero < 0.05
    assert start.width_multiplier < 1.0
    assert all(np.all(m == 1) for m in start.masks.values())
    assert start.info["ticket_kernel_params"] == nonzero


def test_prune_restart_starts_from_the_pruned_previous_solution(run):
    _, start = branches.branch_start(run, 2, "prune_restart")
    solution = run.read_weights(1, "solution")
    masks = run.masks(2)
    for k, w, _ in rigl_tf.masked_weights(run.model):
        np.testing.assert_array_equal(start.weights[w.path], solution[w.path] * masks[k])
    assert (start.start_step, start.end_step) == (0, 6)
    with pytest.raises(ValueError, match="'prune_restart' needs `level` >= 1"):
        branches.branch_start(run, 0, "prune_restart")


def test_bad_branch_arguments(run):
    with pytest.raises(ValueError, match=r"Unknown branch `name` 'rewind'; known branches: "
                                         r"lottery, reinit"):
        branches.branch_start(run, 1, "rewind")
    with pytest.raises(ValueError, match="`seed` must be an int >= 1"):
        branches.branch_start(run, 1, "reinit", seed=0)
    with pytest.raises(ValueError, match="`level` 5 .* is not finished"):
        branches.branch_start(run, 5, "lottery")


def test_run_branch_trains_once_and_reproduces_the_level(run):
    m = run.run_branch(2, "lottery")
    directory = layout.branch_dir(run.run_dir, 2, "lottery", 1)
    stamp = os.stat(os.path.join(directory, layout.METRICS)).st_mtime_ns
    assert m["branch"] == "lottery" and m["density"] == run.metrics(2)["density"]
    # Same start, schedule and data order as level 2 itself: the same result (up to
    # floating-point noise flipping a test example or two).
    assert m["test_accuracy"] == pytest.approx(run.metrics(2)["test_accuracy"], abs=0.01)
    assert run.run_branch(2, "lottery") == m
    assert os.stat(os.path.join(directory, layout.METRICS)).st_mtime_ns == stamp
