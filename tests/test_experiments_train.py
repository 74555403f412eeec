"""End-to-end tests of rigl-train on the offline digits dataset (tiny runs, in-process)."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from rigl_tf.experiments import train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
CONFIGS = os.path.join(ROOT, "configs")
LENET = sorted(glob.glob(os.path.join(CONFIGS, "mnist_lenet5", "*.gin")))

# Tiny schedules: every mechanism (pruning events, mask updates, checkpoints) still fires.
SMALL = [
    "data.dataset_name = 'digits'",
    "data.image_size = 16",  # the paper's LeNet5 needs 16x16 (digits are 8x8)
    "training.total_steps = 24",
    "training.batch_size = 32",
    "training.val_batch_size = 64",
    "training.save_freq = 8",
    "training.log_freq = 8",
    "pruning.begin_step = 4",
    "pruning.end_step = 16",
    "pruning.frequency = 4",
    "mask_updater.update_freq = 6",
]
MLP = [
    "data.dataset_name = 'digits'",
    "network.network_name = 'mlp'",
    "network.hidden_sizes = (16,)",
    "training.batch_size = 32",
    "training.val_batch_size = 64",
    "optimizer.learning_rate = 0.1",
]


def _cfg(name):
    return [os.path.join(CONFIGS, name)]


def _ckpt(logdir, step, sub=""):
    return tf.train.load_checkpoint(os.path.join(logdir, sub, f"ckpt-{step}"))


def _list(reader, attr):
    """Tensors of the checkpoint list ``attr`` in order, found via the object graph."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    node = next(graph.nodes[c.node_id] for c in graph.nodes[0].children if c.local_name == attr)
    out = []
    for child in node.children:
        var = graph.nodes[child.node_id]
        out.append(reader.get_tensor(var.attributes[0].checkpoint_key))
    return out


def _results(logdir):
    with open(os.path.join(logdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory):
    """One tiny LeNet5 pruning run (dense -> 95%) reused by lottery/scratch tests."""
    logdir = str(tmp_path_factory.mktemp("prune"))
    keras.backend.clear_session()
    results = train.run_experiment(_cfg("mnist_lenet5/prune.gin"), SMALL, logdir=logdir,
                                   verbose=0)
    return logdir, results


def _prune_bindings(prune_run):
    logdir, _ = prune_run
    return [f"PRUNE_LOGDIR = '{logdir}'", f"PRUNE_INIT = '{logdir}:0'"]


# --------------------------------------------------------------------------- every config


def _check_run(path, results, logdir, prune_logdir):
    name = os.path.basename(path)[:-4]
    assert results["step"] == 24 and results["status"] == "completed"
    assert os.path.exists(os.path.join(logdir, "operative_config.gin"))
    for step in (0, 8, 16, 24):
        assert os.path.exists(os.path.join(logdir, f"ckpt-{step}.index"))
    total = results["sparsity"]["total"]
    if name in ("dense", "small_dense", "base"):
        assert total["sparsity"] == 0.0
    elif name in ("prune", "set", "rigl", "rigl_inverted", "snip", "grasp", "dst_base"):
        assert total["sparsity"] == pytest.approx(0.95, abs=2e-3)
    masks = _list(_ckpt(logdir, 24), "masks")
    for m in masks:
        assert set(np.unique(m)) <= {0.0, 1.0}
    if name in ("lottery", "scratch"):
        source = _list(_ckpt(prune_logdir, 24), "masks")
        for a, b in zip(masks, source):
            np.testing.assert_array_equal(a, b)
    if name in ("set", "rigl", "rigl_inverted", "snip", "grasp"):
        counts = [int(m.sum()) for m in _list(_ckpt(logdir, 0), "masks")]
        assert counts == [int(m.sum()) for m in masks]  # exact counts kept


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=() if os.path.basename(p) == "rigl.gin" else pytest.mark.slow)
    for p in LENET
], ids=lambda p: os.path.basename(p))
def test_mnist_lenet5_configs_run_end_to_end(path, tmp_path, prune_run):
    logdir = str(tmp_path / "run")
    # Seed 1: runs with the pruning run's masks need a seed other than its 0.
    results = train.run_experiment([path], SMALL + _prune_bindings(prune_run), logdir=logdir,
                                   seed=1, verbose=0)
    assert results == _results(logdir)
    _check_run(path, results, logdir, prune_run[0])


def test_small_dense_has_about_the_sparse_parameter_count(tmp_path):
    from rigl_tf.experiments import config as config_lib

    digits16 = ["data.dataset_name = 'digits'", "data.image_size = 16"]
    out = train.run_experiment(_cfg("mnist_lenet5/small_dense.gin"), digits16, dry_run=True,
                               verbose=0)
    full = train.run_experiment(_cfg("mnist_lenet5/dense.gin"), digits16, dry_run=True,
                                verbose=0)
    assert isinstance(out["spec"], config_lib.ExperimentSpec)

    def kernels(summary):
        return int(summary.split("kernel_params=")[1].split()[0])

    ratio = kernels(out["summary"]) / kernels(full["summary"])
    assert 0.03 < ratio < 0.07


# --------------------------------------------------------------------------- lottery


def test_lottery_workflow_masks_and_initial_weights(tmp_path, prune_run):
    prune_logdir, prune_results = prune_run
    assert prune_results["sparsity"]["total"]["sparsity"] == pytest.approx(0.95, abs=2e-3)
    logdir = str(tmp_path / "lottery")
    train.run_experiment(_cfg("mnist_lenet5/lottery.gin"),
                         SMALL + _prune_bindings(prune_run), logdir=logdir, verbose=0)
    final_masks = _list(_ckpt(prune_logdir, 24), "masks")
    start = _ckpt(logdir, 0)
    for a, b in zip(_list(start, "masks"), final_masks):
        np.testing.assert_array_equal(a, b)
    # Initial weights = the pruning run's step-0 weights under the final masks.
    prune_vars = _list(_ckpt(prune_logdir, 0), "variables")
    lottery_vars = _list(start, "variables")
    kernels = [i for i, v in enumerate(prune_vars) if v.ndim >= 2 and
               not set(np.unique(v)) <= {0.0, 1.0}]
    assert len(kernels) == len(final_masks)
    for i, mask in zip(kernels, final_masks):
        np.testing.assert_array_equal(lottery_vars[i], prune_vars[i] * mask)
    for i, v in enumerate(prune_vars):
        if v.ndim == 1:  # biases are loaded as they were
            np.testing.assert_array_equal(lottery_vars[i], v)


def test_mask_init_path_forms_and_shuffle(tmp_path, prune_run):
    prune_logdir, _ = prune_run
    final = _list(_ckpt(prune_logdir, 24), "masks")
    for form in (prune_logdir, os.path.join(prune_logdir, "ckpt-24"), f"{prune_logdir}:24"):
        assert train.resolve_checkpoint(form, "x").endswith("ckpt-24")
    assert train.resolve_checkpoint(f"{prune_logdir}:8", "x").endswith("ckpt-8")
    with pytest.raises(FileNotFoundError, match="network.mask_init_path"):
        train.resolve_checkpoint(f"{prune_logdir}:7", "network.mask_init_path")
    out = train.run_experiment(
        _cfg("mnist_lenet5/scratch.gin"),
        SMALL + _prune_bindings(prune_run) + ["network.shuffle_mask = True",
                                              "training.total_steps = 8"],
        logdir=str(tmp_path / "s"), verbose=0)
    masks = _list(_ckpt(str(tmp_path / "s"), 0), "masks")
    assert out["step"] == 8
    for a, b in zip(masks, final):
        assert a.sum() == b.sum()
    assert any(not np.array_equal(a, b) for a, b in zip(masks, final))


def test_mismatched_mask_checkpoint_is_refused(tmp_path, prune_run):
    with pytest.raises(ValueError, match="network.mask_init_path") as e:
        train.run_experiment(_cfg("mnist_lenet5/scratch.gin"),
                             SMALL + _prune_bindings(prune_run)
                             + ["network.hidden_sizes = (10, 20, 100, 50)"],
                             logdir=str(tmp_path / "a"), verbose=0)
    assert "do not match" in str(e.value)
    with pytest.raises(ValueError, match="network.weight_init_path"):
        train.run_experiment(_cfg("mnist_lenet5/lottery.gin"),
                             SMALL + _prune_bindings(prune_run)
                             + ["network.network_name = 'mlp'",
                                "network.mask_init_path = None"],
                             logdir=str(tmp_path / "b"), verbose=0)


# --------------------------------------------------------------------------- resume


class _Crash(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt("simulated crash")


# quickstart's RigL updates end at step 1500; these runs end earlier, so they bind their
# own last update step (a schedule past the end is refused).
RESUME = MLP + ["mask_updater.update_alg = 'rigl'", "sparsity.sparsity = 0.8",
                "mask_updater.update_freq = 5", "training.total_steps = 40",
                "mask_updater.last_update_step = 40",
                "training.save_freq = 10", "training.log_freq = 10"]


@pytest.mark.slow
def test_crash_and_resume_continues_exactly(tmp_path):
    full = str(tmp_path / "full")
    crashed = str(tmp_path / "crashed")
    ref = train.run_experiment(_cfg("quickstart.gin"), RESUME, logdir=full, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train.run_experiment(_cfg("quickstart.gin"), RESUME, logdir=crashed, verbose=0,
                             extra_callbacks=[_Crash(27)])
    assert os.path.exists(os.path.join(crashed, "ckpt-20.index"))
    assert not os.path.exists(os.path.join(crashed, "ckpt-30.index"))
    out = train.run_experiment(_cfg("quickstart.gin"), RESUME, logdir=crashed, verbose=0)
    assert out["resumed_from_step"] == 20 and out["step"] == 40
    a, b = _ckpt(full, 40), _ckpt(crashed, 40)
    for x, y in zip(_list(a, "masks") + _list(a, "variables"),
                    _list(b, "masks") + _list(b, "variables")):
        np.testing.assert_array_equal(x, y)
    assert out["test_accuracy"] == ref["test_accuracy"]
    # A finished run resumes to nothing and reports the same.
    again = train.run_experiment(_cfg("quickstart.gin"), RESUME, logdir=full, verbose=0)
    assert again["step"] == 40 and again["test_accuracy"] == ref["test_accuracy"]


@pytest.mark.slow
def test_killed_subprocess_resumes_from_checkpoint(tmp_path):
    logdir = str(tmp_path / "killed")
    bindings = RESUME + ["training.total_steps = 1000", "training.save_freq = 50",
                         "training.log_freq = 50", "mask_updater.last_update_step = 1000"]
    cmd = [sys.executable, "-m", "rigl_tf.experiments.train",
           f"--gin_config={os.path.join(CONFIGS, 'quickstart.gin')}", f"--logdir={logdir}"]
    cmd += [f"--gin_bindings={b}" for b in bindings]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not os.path.exists(os.path.join(logdir, "ckpt-100.index")):
            assert proc.poll() is None, "training exited before it could be killed"
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.exists(os.path.join(logdir, "results.json"))
    last = tf.train.latest_checkpoint(logdir)
    killed_at = int(last.rsplit("-", 1)[1])
    assert 50 <= killed_at < 1000
    out = train.run_experiment(_cfg("quickstart.gin"), bindings, logdir=logdir, verbose=0)
    assert out["resumed_from_step"] == killed_at and out["step"] == 1000
    ref = train.run_experiment(_cfg("quickstart.gin"), bindings, logdir=str(tmp_path / "ref"),
                               verbose=0)
    for x, y in zip(_list(_ckpt(logdir, 1000), "masks"),
                    _list(_ckpt(str(tmp_path / "ref"), 1000), "masks")):
        np.testing.assert_array_equal(x, y)
    assert out["test_accuracy"] == ref["test_accuracy"]


# --------------------------------------------------------------------------- logdir


def test_logdir_conflict_and_overwrite(tmp_path):
    logdir = str(tmp_path / "run")
    base = MLP + ["training.total_steps = 4", "training.log_freq = 2", "training.save_freq = 2",
                  "mask_updater.update_freq = 2", "mask_updater.last_update_step = 4"]
    train.run_experiment(_cfg("quickstart.gin"), base, logdir=logdir, verbose=0)
    with pytest.raises(train.LogdirConflictError, match="--overwrite") as e:
        train.run_experiment(_cfg("quickstart.gin"), base + ["optimizer.learning_rate = 0.05"],
                             logdir=logdir, verbose=0)
    assert "optimizer.learning_rate" in str(e.value)
    with pytest.raises(train.LogdirConflictError):
        train.run_experiment(_cfg("quickstart.gin"), base, logdir=logdir, seed=1, verbose=0)
    out = train.run_experiment(_cfg("quickstart.gin"), base + ["optimizer.learning_rate = 0.05"],
                               logdir=logdir, overwrite=True, verbose=0)
    assert out["step"] == 4 and out["resumed_from_step"] is None
    with open(os.path.join(logdir, "operative_config.gin")) as f:
        assert "optimizer.learning_rate = 0.05" in f.read()


def test_preload_gin_config_then_override(tmp_path):
    first = str(tmp_path / "first")
    train.run_experiment(_cfg("quickstart.gin"), MLP + ["training.total_steps = 2",
                                                        "training.log_freq = 2",
                                                        "mask_updater.update_freq = 1",
                                                        "mask_updater.last_update_step = 2"],
                         logdir=first, verbose=0)
    out = train.run_experiment(
        (), ["training.total_steps = 3"], dry_run=True, verbose=0,
        preload_gin_config=os.path.join(first, "operative_config.gin"))
    spec = out["spec"]
    assert spec.training.total_steps == 3
    assert spec.network.model_kwargs["hidden_sizes"] == (16,)
    assert spec.mask_updater.update_alg == "rigl"


# --------------------------------------------------------------------------- errors


def test_unknown_strategy_and_mode():
    with pytest.raises(ValueError, match="known strategies: default, mirrored, multi_worker, tpu"):
        train.run_experiment(_cfg("quickstart.gin"), strategy="horovod", dry_run=True)
    with pytest.raises(ValueError, match="known modes"):
        train.run_experiment(_cfg("quickstart.gin"), mode="eval", dry_run=True)
    with pytest.raises(ValueError, match="Unknown `--strategy`"):
        train.make_strategy("gpu")


def test_unknown_gin_parameter_in_the_binary():
    with pytest.raises(ValueError, match="did you mean mask_updater.update_freq"):
        train.run_experiment(_cfg("quickstart.gin"), ["mask_updater.update_frq = 3"],
                             dry_run=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    logdir = str(tmp_path / "nan")
    with pytest.raises(train.TrainingDivergedError, match="diverged") as e:
        train.run_experiment(_cfg("quickstart.gin"),
                             MLP + ["optimizer.learning_rate = 1e30",
                                    "optimizer.schedule = 'constant'",
                                    "training.total_steps = 50", "training.save_freq = 1",
                                    "mask_updater.update_freq = 10",
                                    "mask_updater.last_update_step = 50",
                                    "training.log_freq = 5"],
                             logdir=logdir, verbose=0)
    assert "Last good checkpoint" in str(e.value)
    assert "Training diverged" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(logdir, "results.json"))
    last = tf.train.latest_checkpoint(logdir)
    assert last is not None
    for v in _list(tf.train.load_checkpoint(last), "variables"):
        assert np.all(np.isfinite(v))


# --------------------------------------------------------------------------- features


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus(tmp_path):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py)")
    logdir = str(tmp_path / "mirrored")
    out = train.run_experiment(
        _cfg("quickstart.gin"),
        MLP + ["training.total_steps = 20", "training.log_freq = 10", "training.save_freq = 10",
               "mask_updater.update_freq = 5", "mask_updater.last_update_step = 20",
               "sparsity.sparsity = 0.8"],
        logdir=logdir, strategy="mirrored", verbose=0)
    assert out["replicas"] == 2 and out["step"] == 20
    masks0 = [int(m.sum()) for m in _list(_ckpt(logdir, 0), "masks")]
    masks20 = _list(_ckpt(logdir, 20), "masks")
    assert masks0 == [int(m.sum()) for m in masks20]
    assert out["sparsity"]["total"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_mask_update_checkpoints_and_summaries(tmp_path):
    logdir = str(tmp_path / "mu")
    train.run_experiment(
        _cfg("quickstart.gin"),
        MLP + ["training.total_steps = 12", "training.log_freq = 6", "training.save_freq = 6",
               "mask_updater.update_freq = 5", "mask_updater.schedule_alg = 'constant'",
               "mask_updater.last_update_step = -1",
               "sparsity.sparsity = 0.8", "training.checkpoint_mask_updates = True"],
        logdir=logdir, verbose=0)
    for sub in ("before", "after"):
        names = sorted(os.path.basename(p) for p in
                       glob.glob(os.path.join(logdir, "mask_updates", sub, "*.index")))
        assert names == ["ckpt-10.index", "ckpt-5.index"]
    before = _list(_ckpt(logdir, 5, "mask_updates/before"), "masks")
    after = _list(_ckpt(logdir, 5, "mask_updates/after"), "masks")
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert [a.sum() for a in before] == [b.sum() for b in after]
    tags = set()
    for f in glob.glob(os.path.join(logdir, "summaries", "*")):
        for event in tf.compat.v1.train.summary_iterator(f):
            tags.update(v.tag for v in event.summary.value)
    for tag in ("train/loss", "train/accuracy", "test/loss", "test/accuracy", "learning_rate",
                "sparsity/total", "gradient_flow/norm", "gradient_flow/mask_update/change",
                "mask_update/drop_fraction", "distance_to_init/l2/all", "mask/dense/kernel"):
        assert tag in tags, tag


def test_oneshot_metainit_and_gradient_regularization_run(tmp_path):
    out = train.run_experiment(
        _cfg("quickstart.gin"),
        MLP + ["training.total_steps = 6", "training.log_freq = 3", "training.save_freq = 3",
               "mask_updater.update_alg = 'grasp'", "sparsity.distribution = 'global'",
               "training.oneshot_prune_fraction = 0.9", "training.use_metainit = True",
               "training.metainit_steps = 2", "training.gradient_regularization = 0.01"],
        logdir=str(tmp_path / "g"), verbose=0)
    assert out["sparsity"]["total"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert np.isfinite(out["train_loss"])


def test_hessian_mode(tmp_path):
    logdir = str(tmp_path / "h")
    bindings = MLP + ["network.hidden_sizes = (4,)", "training.total_steps = 4",
                      "training.log_freq = 2", "training.save_freq = 2",
                      "mask_updater.update_freq = 2", "mask_updater.last_update_step = 4",
                      "sparsity.sparsity = 0.5"]
    train.run_experiment(_cfg("quickstart.gin"), bindings, logdir=logdir, verbose=0)
    out = train.run_experiment(
        (), ["hessian.ckpt_ids = [0, 4]", "hessian.batch_size = 64"],
        preload_gin_config=os.path.join(logdir, "operative_config.gin"), logdir=logdir,
        mode="hessian", verbose=0)
    assert sorted(out) == [0, 4]
    eigs = np.load(out[4])
    active = sum(int(m.sum()) for m in _list(_ckpt(logdir, 4), "masks"))
    assert eigs.shape == (active + 4 + 10,)  # active kernel entries + biases
    assert np.all(np.diff(eigs) >= 0)


@pytest.mark.slow
def test_quickstart_reaches_90_percent(tmp_path):
    out = train.run_experiment(_cfg("quickstart.gin"), logdir=str(tmp_path / "qs"), verbose=0)
    assert out["test_accuracy"] > 0.9
    assert out["sparsity"]["total"]["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_gradient_regularization_adds_the_masked_gradient_penalty():
    import rigl_tf

    inputs = keras.Input((4,))
    out = keras.layers.Dense(3)(keras.layers.Dense(5, activation="tanh")(inputs))
    model = rigl_tf.sparsify(keras.Model(inputs, out), 0.5, "uniform", seed=1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1)), loss=loss_fn)
    model.train_step = train._gradient_regularized_step(model, 0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.integers(0, 3, 8).astype("int32")
    with tf.GradientTape() as tape:
        plain = loss_fn(y, model(x))
    grads = tape.gradient(plain, model.trainable_variables)
    penalty = 0.0
    for g, v in zip(grads, model.trainable_variables):
        m = rigl_tf.keras.wrapper.get_mask(v)
        g = g.numpy() * (1.0 if m is None else m.numpy())
        penalty += 0.5 * float(np.sum(g ** 2))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(float(plain) + 0.5 * penalty, rel=1e-5)


def test_structured_pattern_from_gin(tmp_path):
    """`sparsity.pattern = '2:4'` gives RigL runs whose masks keep exactly 2 of every 4."""
    logdir = str(tmp_path / "nm")
    train.run_experiment(
        _cfg("quickstart.gin"),
        ["training.total_steps = 12", "training.save_freq = 12", "training.log_freq = 6",
         "mask_updater.update_freq = 4", "mask_updater.last_update_step = -1",
         "mask_updater.schedule_alg = 'constant'",  # cosine needs an end step
         "sparsity.sparsity = 0.5", "sparsity.distribution = 'uniform'",
         "sparsity.pattern = '2:4'"],
        logdir=logdir)
    reader = _ckpt(logdir, 12)
    masks = _list(reader, "masks")
    assert masks, "no masks in the checkpoint"
    for mask in masks:
        groups = mask.reshape(-1, 4, mask.shape[-1]) if mask.ndim == 2 else None
        assert groups is not None and np.all(groups.sum(axis=1) == 2)


# --------------------------------------------------------------------------- README workflow


def _readme_workflow():
    """The ``rigl-train`` commands of the README's paper workflow, as (flags, line) pairs."""
    import shlex

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("### The gradient-flow paper's workflow", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    env, commands = {}, []
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line.split()[0] and not line.startswith("rigl-train"):
            key, value = line.split("=", 1)
            env[key] = value
            continue
        for key, value in env.items():
            line = line.replace(f"${key}", value)
        args = shlex.split(line, comments=True)
        assert args[0] == "rigl-train", line
        flags = {"gin_config": [], "gin_bindings": []}
        for arg in args[1:]:
            name, value = arg[2:].split("=", 1)
            if name in ("gin_config", "gin_bindings"):
                flags[name].append(value)
            else:
                flags[name] = value
        commands.append(flags)
    return commands


@pytest.mark.slow
def test_readme_workflow_in_miniature_gives_scratch_a_new_initialization(tmp_path):
    """Runs the README's workflow as written (tiny schedule, digits) and compares step 0s."""
    runs = {}
    commands = [c for c in _readme_workflow() if c.get("mode", "train_eval") == "train_eval"]
    assert len(commands) == 8
    for flags in commands:
        logdir = flags["logdir"].replace("/tmp/fm", str(tmp_path))
        bindings = [b.replace("/tmp/fm", str(tmp_path)) for b in flags["gin_bindings"]]
        assert "seed" in flags, flags  # every run of the workflow states its seed
        keras.backend.clear_session()
        train.run_experiment([os.path.join(ROOT, c) for c in flags["gin_config"]],
                             bindings + SMALL, logdir=logdir, seed=int(flags["seed"]),
                             verbose=0)
        runs[os.path.basename(logdir)] = logdir

    def kernels(logdir, step):
        # model.variables holds kernels, biases and masks; kernels are the non-binary >= 2-D.
        return [v for v in _list(_ckpt(logdir, step), "variables")
                if v.ndim >= 2 and not set(np.unique(v)) <= {0.0, 1.0}]

    final_masks = _list(_ckpt(runs["prune"], 24), "masks")
    ticket = kernels(runs["lottery_s1"], 0)
    # The second lottery run starts from the same ticket (its seed sets the data order).
    for a, b in zip(kernels(runs["lottery_s2"], 0), ticket):
        np.testing.assert_array_equal(a, b)
    prune0 = kernels(runs["prune"], 0)
    for t, p, m in zip(ticket, prune0, final_masks):
        np.testing.assert_array_equal(t, p * m)  # the ticket is the pruning init, masked
    for name in ("scratch_s1", "scratch_s2", "scratch_plus", "set", "rigl"):
        start = kernels(runs[name], 0)
        for s, m in zip(start, final_masks):
            np.testing.assert_array_equal(s != 0, m != 0)  # same masks as the ticket
        distance = math.sqrt(sum(float(np.sum((s - t) ** 2)) for s, t in zip(start, ticket)))
        assert distance > 0.1, (name, distance)


def test_scratch_with_the_pruning_runs_seed_is_refused(tmp_path, prune_run):
    with pytest.raises(ValueError, match="network.allow_same_init = True") as e:
        train.run_experiment(_cfg("mnist_lenet5/scratch.gin"),
                             SMALL + _prune_bindings(prune_run), logdir=str(tmp_path / "s"),
                             seed=0, verbose=0)
    assert "same --seed=0" in str(e.value)
    assert not os.path.exists(tmp_path / "s" / "ckpt-0.index")  # refused before writing
    # Asked for explicitly: allowed, and the start is the ticket (pruning init, masked).
    train.run_experiment(_cfg("mnist_lenet5/scratch.gin"),
                         SMALL + _prune_bindings(prune_run)
                         + ["network.allow_same_init = True", "training.total_steps = 8"],
                         logdir=str(tmp_path / "ok"), seed=0, verbose=0)
    # A different seed gives a different start without asking.
    train.run_experiment(_cfg("mnist_lenet5/scratch.gin"),
                         SMALL + _prune_bindings(prune_run) + ["training.total_steps = 8"],
                         logdir=str(tmp_path / "new"), seed=1, verbose=0)
