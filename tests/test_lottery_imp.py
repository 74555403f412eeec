"""IMP driver: exact densities, rewinding, resumption, run directories, bad input, and
the trainer it shares with rigl-train (checkpoints inside a level, shared vocabulary)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import rigl_tf
from rigl_tf.experiments.config import make_spec
from rigl_tf.lottery import IMPConfig, IMPRun, RunDirConflictError, check_spec, layout
from rigl_tf.sparsity.distributions import num_active

T = 6  # training steps per level: tiny


def _spec(training=None, optimizer=None, network=None):
    return make_spec(
        training={"total_steps": T, "batch_size": 32, **(training or {})},
        optimizer={"learning_rate": 0.05, **(optimizer or {})},
        network={"network_name": "mlp", "hidden_sizes": (16,), **(network or {})},
        data={"dataset_name": "digits"})


def _config(**kwargs):
    return IMPConfig(**kwargs)


class _StartRecorder(keras.callbacks.Callback):
    """Records the run model's weights when each stage's first fit begins."""

    def __init__(self):
        super().__init__()
        self.run = None
        self.starts = {}
        self.fits = []

    def on_train_begin(self, logs=None):
        self.fits.append(self.run.stage)
        if self.run.stage not in self.starts:
            self.starts[self.run.stage] = {v.path: v.numpy() for v in self.model.weights}


def _run(config, directory, recorder=None, spec=None):
    recorder = recorder or _StartRecorder()
    run = IMPRun(config, spec or _spec(), run_dir=str(directory), callbacks=[recorder])
    recorder.run = run
    return run, recorder


@pytest.mark.parametrize("scope,rewinding,rewind_step", [
    ("global", "init", 0), ("layerwise", "step", 2)])
def test_two_level_imp_density_and_rewinding(tmp_path, scope, rewinding, rewind_step):
    run, rec = _run(_config(scope=scope, rewinding=rewinding, rewind_step=rewind_step),
                    tmp_path)
    metrics = run.run(2)
    assert [m["level"] for m in metrics] == [0, 1, 2]
    theta0 = run.read_weights(0, "start")
    theta_k = run.read_weights(0, "rewind")
    kernel = "sparse_dense/dense/kernel"
    assert np.array_equal(theta0[kernel], theta_k[kernel]) == (rewind_step == 0)
    rewind_point = theta_k if rewinding == "step" else theta0
    for level in range(3):
        masks = run.masks(level)
        sizes = {k: m.size for k, m in masks.items()}
        density = 0.8 ** level
        if scope == "global":
            assert sum(int(m.sum()) for m in masks.values()) == num_active(
                density, sum(sizes.values()), 0)
        else:
            for k, m in masks.items():
                assert int(m.sum()) == num_active(density, sizes[k], 1), (level, k)
        if level:
            prev = run.masks(level - 1)
            assert all(np.all(masks[k] <= prev[k]) for k in masks)  # nested
        # The level trained from the masked rewind point: rewind weights * mask.
        start = rec.starts[f"level_{level:02d}"]
        items = {w.path: (k, m.path) for k, w, m in rigl_tf.masked_weights(run.model)}
        reference = rewind_point if level else theta0  # level 0 starts at theta_0
        for path, value in reference.items():
            if path in items:
                key, mask_path = items[path]
                np.testing.assert_array_equal(start[path], value * masks[key])
                np.testing.assert_array_equal(start[mask_path], masks[key])
            elif level:
                np.testing.assert_array_equal(start[path], value)  # biases rewound too
        m = run.metrics(level)
        first = 0 if level == 0 else rewind_step
        assert (m["start_step"], m["end_step"], m["steps"]) == (first, T, T - first)
        assert m["target_density"] == pytest.approx(density)
        assert 0.0 <= m["test_accuracy"] <= 1.0
        assert os.path.exists(os.path.join(run.level_dir(level), layout.SOLUTION))
    # Level 0 recorded the loss noise of its last epoch (all T < one epoch of steps).
    assert len(run.metrics(0)["last_epoch_losses"]) == T
    summary = json.loads((tmp_path / layout.SUMMARY).read_text())["levels"]
    assert [r["level"] for r in summary] == [0, 1, 2]


def test_resume_trains_only_unfinished_levels(tmp_path):
    config = _config()
    run, rec = _run(config, tmp_path)
    run.run(1)
    assert rec.fits == ["level_00", "level_01"]
    stamp = os.stat(os.path.join(run.level_dir(0), layout.METRICS)).st_mtime_ns
    # A killed level 2: files started, no metrics.json -> it is retrained.
    os.makedirs(run.level_dir(2))
    layout.write_arrays(os.path.join(run.level_dir(2), layout.MASK), run.masks(1))
    keras.backend.clear_session()
    run2, rec2 = _run(config, tmp_path)  # "re-running the same command"
    assert run2.finished_levels() == [0, 1]
    run2.run(2)
    assert rec2.fits == ["level_02"]
    assert os.stat(os.path.join(run.level_dir(0), layout.METRICS)).st_mtime_ns == stamp
    assert sum(int(m.sum()) for m in run2.masks(2).values()) == num_active(
        0.64, sum(m.size for m in run2.masks(2).values()), 0)
    run3, rec3 = _run(config, tmp_path)
    run3.run(2)
    assert rec3.fits == []


@pytest.mark.slow
def test_lr_rewinding_and_fine_tuning_keep_the_trained_weights(tmp_path):
    for rewinding in ("lr", "none"):
        run, rec = _run(_config(rewinding=rewinding, rewind_step=2), tmp_path / rewinding)
        run.run(1)
        solution = run.read_weights(0, "solution")
        masks = run.masks(1)
        start = rec.starts["level_01"]
        for key, w, _ in rigl_tf.masked_weights(run.model):
            np.testing.assert_array_equal(start[w.path], solution[w.path] * masks[key])
        m = run.metrics(1)
        assert (m["start_step"], m["steps"]) == (2, T - 2)
        assert m["constant_lr"] == (None if rewinding == "lr" else pytest.approx(0.005))


def test_oneshot_pruning_reuses_the_dense_level(tmp_path):
    run, rec = _run(_config(scope="layerwise"), tmp_path)
    m = run.run_oneshot(0.5)
    assert rec.fits == ["level_00", "omp_s0.5"]
    masks = layout.read_arrays(os.path.join(layout.oneshot_dir(run.run_dir, 0.5), layout.MASK))
    for k, mask in masks.items():
        assert int(mask.sum()) == num_active(0.5, mask.size, 1)
    assert m["kind"] == "oneshot"
    assert run.run_oneshot(0.5)["test_accuracy"] == m["test_accuracy"]
    assert rec.fits == ["level_00", "omp_s0.5"]  # finished: skipped


def test_adaptive_ratio_and_repellent_loss_in_a_run(tmp_path):
    run, _ = _run(_config(adaptive=True, adaptive_examples=64, repellent=0.5,
                          adaptive_candidates=(0.1, 0.3, 0.6)), tmp_path)
    run.run(1)
    m = run.metrics(1)
    assert m["prune_fraction"] >= 0.2
    assert m["target_density"] == pytest.approx(1.0 - m["prune_fraction"])
    info = m["adaptive"]
    assert info["threshold"] == pytest.approx(info["dense_loss"] + info["epsilon"])
    assert info["epsilon"] == pytest.approx(np.std(run.metrics(0)["last_epoch_losses"]))
    assert 1 <= len(info["sweep"]) <= 3
    savings = run.compute_savings(0.5)
    assert savings["fixed_levels"] == 4


def test_run_name_and_directory_conflict(tmp_path):
    config = IMPConfig(rewinding="step", rewind_step=100)
    lenet = make_spec(network={"network_name": "lenet5"},
                      data={"dataset_name": "fashion_mnist_idx", "data_dir": "/somewhere"})
    assert config.run_name(lenet) == "imp_lenet5_fashion_mnist_idx_p0.2_rewind-step100_global"
    assert _config(scope="layerwise").run_name(_spec()) == (
        "imp_mlp_digits_p0.2_rewind-init_layerwise_total_steps6_batch_size32_"
        "learning_rate0.05_hidden_sizes16")
    # A parameter name two sections share is qualified by its section.
    assert "_network-weight_decay0.001_" in _config().run_name(
        _spec(network={"weight_decay": 0.001}))
    assert IMPConfig.from_dict(config.to_dict()) == config
    run = IMPRun(_config(), _spec(), root_dir=str(tmp_path))
    assert run.run_dir == str(tmp_path / _config().run_name(_spec()))
    with pytest.raises(RunDirConflictError,
                       match=r"different configuration \(prune_fraction: run dir has 0.2, "
                             r"this run has 0.5\)"):
        IMPRun(_config(prune_fraction=0.5), _spec(), run_dir=run.run_dir)
    with pytest.raises(RunDirConflictError,
                       match=r"optimizer.learning_rate: run dir has 0.05, this run has 0.1"):
        IMPRun(_config(), _spec(optimizer={"learning_rate": 0.1}), run_dir=run.run_dir)
    # Checkpoint / logging frequencies do not change what is trained: same run.
    IMPRun(_config(), _spec(training={"save_freq": 3, "log_freq": 2}), run_dir=run.run_dir)
    foreign = tmp_path / "foreign"
    os.makedirs(foreign / "level_00")
    with pytest.raises(RunDirConflictError, match="no config.json"):
        IMPRun(_config(), _spec(), run_dir=str(foreign))


@pytest.mark.parametrize("kwargs,match", [
    ({"prune_fraction": 1.0}, r"`prune_fraction` must be a number in the open interval"),
    ({"prune_fraction": 0}, r"`prune_fraction`.*got 0"),
    ({"importance": "hessian"}, r"Unknown importance `measure` 'hessian'; known measures: "
                                r"magnitude"),
    ({"rewinding": "late"}, r"`rewinding` must be one of 'init', 'step', 'lr', 'none', got"),
    ({"rewinding": "init", "rewind_step": 3}, r"`rewind_step`=3.*rewinding='init'"),
    ({"scope": "neuron"}, r"Unknown pruning `scope` 'neuron'"),
    ({"finetune_learning_rate": 0}, r"`finetune_learning_rate` must be a finite number > 0"),
])
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _config(**kwargs)


@pytest.mark.parametrize("sections,match", [
    ({"sparsity": {"sparsity": 0.5}}, r"`sparsity.sparsity`=0.5 is not used by IMP"),
    ({"mask_updater": {"update_alg": "rigl"}}, r"`mask_updater.update_alg`='rigl' is not "
                                               r"used by IMP"),
    ({"network": {"mask_init_path": "/x"}}, r"`network.mask_init_path`='/x' is not used"),
])
def test_training_settings_that_contradict_imp(sections, match):
    with pytest.raises(ValueError, match=match):
        check_spec(make_spec(**sections))
    with pytest.raises(ValueError, match=r"`network.network_name` must be one of .*'mlp'"):
        make_spec(network={"network_name": "alexnet"})


def test_rewind_step_past_the_end_of_training(tmp_path):
    with pytest.raises(ValueError, match=r"`rewind_step`=6 \(step 6\) is past the end of "
                                         r"training: it must be < the 6 training steps"):
        IMPRun(_config(rewinding="step", rewind_step=T), _spec(), run_dir=str(tmp_path / "a"))
    # digits: 1437 training examples // 32 = 44 steps per epoch; 1 epoch = step 44.
    with pytest.raises(ValueError, match=r"`rewind_epochs`=1.0 \(step 44\).*past the end"):
        IMPRun(_config(rewinding="step", rewind_epochs=1.0), _spec(training={"total_steps": 44}),
               run_dir=str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a")  # nothing written for a refused config


def test_levels_out_of_order_and_unfinished_reads(tmp_path):
    run = IMPRun(_config(), _spec(), run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs level 1 to be finished"):
        run.run_level(2)
    with pytest.raises(ValueError, match="not finished"):
        run.metrics(0)
    with pytest.raises(ValueError, match="`levels` must be an int >= 0"):
        run.run(-1)


def _ckpt_steps(logdir):
    return sorted(int(p.rsplit("-", 1)[1][:-len(".index")])
                  for p in os.listdir(logdir) if p.startswith("ckpt-") and p.endswith(".index"))


def test_levels_are_trained_by_the_trainer_with_checkpoints_inside(tmp_path):
    constant = {"schedule": "constant"}
    spec = _spec(training={"save_freq": 2, "log_freq": 2}, optimizer=constant)
    run, _ = _run(_config(rewinding="step", rewind_step=3), tmp_path / "a", spec=spec)
    run.run(1)
    # Level 0: step 0, every 2 steps, the rewind point K = 3 and the end T = 6.
    train0 = os.path.join(run.level_dir(0), "train")
    assert _ckpt_steps(train0) == [0, 2, 3, 4, 6]
    # Level 1 starts at K = 3: its first checkpoint is step 3.
    train1 = os.path.join(run.level_dir(1), "train")
    assert _ckpt_steps(train1) == [3, 4, 6]
    for d in (train0, train1):
        assert os.path.exists(os.path.join(d, "results.json"))
        assert os.listdir(os.path.join(d, "summaries"))
        assert "rigl-lottery training" in open(os.path.join(d, "operative_config.gin")).read()
    assert run.metrics(1)["resumed_from_step"] is None
    # theta_K is the weights after exactly K steps: the solution of a 3-step dense run with
    # the same (constant) learning rate, init and data order.
    short, _ = _run(_config(), tmp_path / "b",
                    spec=_spec(training={"total_steps": 3}, optimizer=constant))
    short.run_level(0)
    theta_k = run.read_weights(0, "rewind")
    after_3 = short.read_weights(0, "solution")
    np.testing.assert_array_equal(run.read_weights(0, "start")["sparse_dense/dense/kernel"],
                                  short.read_weights(0, "start")["sparse_dense/dense/kernel"])
    assert set(after_3) <= set(theta_k)
    for path, value in after_3.items():
        np.testing.assert_array_equal(theta_k[path], value, err_msg=path)
    assert not np.array_equal(theta_k["sparse_dense/dense/kernel"],
                              run.read_weights(0, "start")["sparse_dense/dense/kernel"])


def test_weight_decay_from_the_shared_vocabulary_changes_a_level_as_predicted(tmp_path):
    # One plain-SGD step at a constant rate lr: the L2 penalty wd * sum(w**2) on kernels
    # adds -lr * 2 * wd * w0 to each kernel and nothing to the biases.
    lr, wd = 0.05, 0.01
    sgd = {"name": "sgd", "schedule": "constant", "learning_rate": lr}
    solutions, starts = [], []
    for decay in (0.0, wd):
        spec = _spec(training={"total_steps": 1}, optimizer=sgd,
                     network={"weight_decay": decay})
        run, _ = _run(_config(), tmp_path / f"wd{decay}", spec=spec)
        run.run_level(0)
        solutions.append(run.read_weights(0, "solution"))
        starts.append(run.read_weights(0, "start"))
    kernels = [w.path for _, w, _ in rigl_tf.masked_weights(run.model)]
    assert len(kernels) == 2
    for path, w0 in starts[0].items():
        np.testing.assert_array_equal(starts[1][path], w0)  # same theta_0
        change = solutions[1][path] - solutions[0][path]
        if path in kernels:
            expected = -lr * 2.0 * wd * w0
            assert np.abs(expected).max() > 1e-5
            np.testing.assert_allclose(change, expected, rtol=0, atol=1e-7, err_msg=path)
        else:
            np.testing.assert_array_equal(change, 0.0 * change, err_msg=path)


class _AfterStep(keras.callbacks.Callback):
    """Records the model's weights after exactly ``k`` optimizer steps of the first fit."""

    def __init__(self, k):
        super().__init__()
        self.k, self.seen, self.weights = k, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.k and self.weights is None:
            self.weights = {v.path: v.numpy().copy() for v in self.model.weights}


def test_pruned_weights_are_lowest_magnitudes_at_every_level(tmp_path):
    """Global magnitude IMP: level L keeps the round(0.8^L * 1184) largest |w| of level
    L-1's solution (numpy top-k here), and theta_K is the weights after exactly K steps
    as seen by a callback."""
    K = 2
    recorder = _AfterStep(K)
    run = IMPRun(_config(scope="global", rewinding="step", rewind_step=K), _spec(),
                 run_dir=str(tmp_path), callbacks=[recorder])
    run.run(2)
    theta_k = run.read_weights(0, "rewind")
    assert recorder.weights is not None
    for path, value in theta_k.items():
        np.testing.assert_array_equal(value, recorder.weights[path], err_msg=path)
    # mlp [16] on digits: kernels 64 x 16 and 16 x 10 = 1184 prunable weights.
    expected_total = {0: 1184, 1: 947, 2: 758}  # round(1184 * 0.8 ** L)
    for level in (1, 2):
        prev_w = run.read_weights(level - 1, "solution")
        prev, new = run.masks(level - 1), run.masks(level)
        paths = {k: w.path for k, w, _ in rigl_tf.masked_weights(run.model)}
        assert sum(int(m.sum()) for m in new.values()) == expected_total[level]
        keys = sorted(new)
        scores = np.concatenate([np.where(prev[k] > 0, np.abs(prev_w[paths[k]]), -np.inf)
                                 .reshape(-1) for k in keys])
        order = np.argsort(-scores, kind="stable")
        want = np.zeros(scores.size, bool)
        want[order[:expected_total[level]]] = True
        got = np.concatenate([new[k].reshape(-1) for k in keys]) > 0
        np.testing.assert_array_equal(got, want, err_msg=f"level {level}")


@pytest.mark.slow
def test_a_level_under_a_strategy_and_mixed_precision(tmp_path):
    # The trainer's strategy and dtype policy reach IMP levels: the mirrored level trains
    # on every logical CPU (2 in tests/conftest.py) and bfloat16 compute changes the result;
    # the trainer records both.
    runs = {}
    for name, strategy, policy in (("default", "default", "float32"),
                                   ("mirrored", "mirrored", "float32"),
                                   ("bf16", "default", "mixed_bfloat16")):
        spec = _spec(training={"mixed_precision": policy})
        run = IMPRun(_config(), spec, run_dir=str(tmp_path / name), strategy=strategy)
        run.run_level(0)
        runs[name] = run
    kernel = "sparse_dense/dense/kernel"
    solution = {k: r.read_weights(0, "solution")[kernel] for k, r in runs.items()}
    start = runs["default"].read_weights(0, "start")[kernel]
    assert not np.array_equal(solution["default"], start)
    assert not np.array_equal(solution["mirrored"], start)
    assert np.abs(solution["bf16"] - solution["default"]).max() > 1e-6

    def results(name):
        with open(os.path.join(runs[name].level_dir(0), "train", "results.json")) as f:
            return json.load(f)

    devices = len(tf.config.list_logical_devices("CPU"))
    assert (results("mirrored")["strategy"], results("mirrored")["replicas"]) == (
        "mirrored", devices)
    assert results("default")["replicas"] == 1
    assert results("bf16")["mixed_precision"] == "mixed_bfloat16"
    assert "mixed_precision" not in results("default")
    with pytest.raises(ValueError, match=r"`strategy` must be one of 'default', 'mirrored', "
                                         r"'tpu', got 'multi_worker'"):
        IMPRun(_config(), _spec(), run_dir=str(tmp_path / "mw"), strategy="multi_worker")


class _Interrupt(keras.callbacks.Callback):
    """Stops the process's work (like a kill) once the optimizer reaches ``step``."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt(f"interrupted at step {self.step}")


def test_interrupted_dense_level_resumes_with_its_loss_record(tmp_path):
    # The adaptive rule's noise estimate (the per-batch losses of level 0's last epoch) is
    # checkpointed with the level, so a level interrupted at step 4 and resumed records
    # the same 6 losses as an uninterrupted one.
    spec = _spec(training={"save_freq": 2, "log_freq": 3, "deterministic": True})
    ref, _ = _run(_config(), tmp_path / "ref", spec=spec)
    ref.run_level(0)
    run = IMPRun(_config(), spec, run_dir=str(tmp_path / "cut"), callbacks=[_Interrupt(4)])
    with pytest.raises(KeyboardInterrupt):
        run.run_level(0)
    assert not run.is_finished(0)
    resumed, _ = _run(_config(), tmp_path / "cut", spec=spec)
    metrics = resumed.run_level(0)
    assert metrics["resumed_from_step"] == 4
    want = ref.metrics(0)["last_epoch_losses"]
    assert len(want) == T and metrics["last_epoch_losses"] == want
    for path, value in ref.read_weights(0, "solution").items():
        np.testing.assert_array_equal(resumed.read_weights(0, "solution")[path], value)
