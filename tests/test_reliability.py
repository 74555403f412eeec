"""Reliability of rigl-train: several workers, kill-anywhere resumption, partial files,
non-finite steps, mixed precision and untrusted inputs."""

import ast
import glob
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from _cluster import free_ports  # tests/_cluster.py
import tensorflow as tf

import rigl_tf
from rigl_tf.experiments import train
from rigl_tf.experiments.nonfinite import SkipNonFinite

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.gin")
TINY = [
    "network.hidden_sizes = (16,)",
    "training.batch_size = 32",
    "training.val_batch_size = 120",
    "sparsity.sparsity = 0.8",
    "mask_updater.update_freq = 5",
    # quickstart's cosine drop fraction ends at step 1500, past these short runs (refused):
    # a constant fraction with updates until the end of each run instead.
    "mask_updater.schedule_alg = 'constant'",
    "mask_updater.last_update_step = -1",
]


def _list(reader, attr):
    """Tensors of the checkpoint list ``attr`` in order (via the object graph)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    node = next(graph.nodes[c.node_id] for c in graph.nodes[0].children if c.local_name == attr)
    return [reader.get_tensor(graph.nodes[c.node_id].attributes[0].checkpoint_key)
            for c in node.children]


def _state(prefix):
    reader = tf.train.load_checkpoint(prefix)
    iterations = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                  if k.startswith("optimizer/") and "iteration" in k]
    return _list(reader, "masks"), _list(reader, "variables"), iterations


def _assert_same_state(a, b, exact=True):
    (ma, va, ia), (mb, vb, ib) = _state(a), _state(b)
    assert len(ma) == len(mb) and len(va) == len(vb)
    for x, y in zip(ma, mb):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(va, vb):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert [int(i) for i in ia] == [int(i) for i in ib]


def _cli(logdir, bindings, *flags):
    cmd = [sys.executable, "-m", "rigl_tf.experiments.train", f"--gin_config={QUICKSTART}",
           f"--logdir={logdir}"] + [f"--gin_bindings={b}" for b in bindings] + list(flags)
    return cmd


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TF_USE_LEGACY_KERAS")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


# --------------------------------------------------------------------------- several workers


@pytest.mark.slow
def test_multi_worker_rigl_train_matches_single_worker(tmp_path):
    """Two `rigl-train --strategy=multi_worker` processes (custom loop: model.fit fails
    under MultiWorkerMirroredStrategy in Keras 3) end identical, and equal to one worker
    with the same global batch."""
    bindings = TINY + ["training.total_steps = 12", "training.log_freq = 6",
                       "training.save_freq = 6"]
    logdir = str(tmp_path / "mw")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(_cli(logdir, bindings, "--strategy=multi_worker"),
                                      cwd=ROOT, env=_env(TF_CONFIG=tf_config),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
    single = str(tmp_path / "single")
    out = subprocess.run(_cli(single, bindings), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]

    worker1 = os.path.join(logdir, "workertemp", "worker_1")
    _assert_same_state(os.path.join(logdir, "ckpt-12"), os.path.join(worker1, "ckpt-12"))
    _assert_same_state(os.path.join(logdir, "ckpt-12"), os.path.join(single, "ckpt-12"),
                       exact=False)
    # Only the chief writes results and the logdir's summaries.
    assert not os.path.exists(os.path.join(worker1, "results.json"))
    with open(os.path.join(logdir, "results.json")) as f:
        mw = json.load(f)
    with open(os.path.join(single, "results.json")) as f:
        one = json.load(f)
    assert mw["replicas"] == 2 and mw["step"] == one["step"] == 12
    assert mw["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1e-6)
    assert mw["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)
    assert glob.glob(os.path.join(logdir, "summaries", "*"))


# --------------------------------------------------------------------------- kill anywhere

# rigl-train with slow checkpoint bookkeeping: the checkpoint files are complete but the
# `checkpoint` state file is not yet updated for a while (the window a SIGKILL must survive).
_SLOW_LAUNCHER = textwrap.dedent("""
    import sys, time
    from tensorflow.python.checkpoint import checkpoint_management as cm
    _record = cm.CheckpointManager._record_state
    def _slow(self):
        time.sleep(0.4)
        _record(self)
    cm.CheckpointManager._record_state = _slow
    from rigl_tf.experiments import train
    sys.argv[0] = "rigl-train"
    train.run()
""")

KILL = TINY + ["training.total_steps = 120", "training.save_freq = 10",
               "training.log_freq = 20", "mask_updater.update_freq = 15",
               "training.checkpoint_mask_updates = True", "training.deterministic = True"]


def _referenced(logdir):
    state = tf.train.get_checkpoint_state(logdir)
    return set() if state is None else {os.path.basename(p)
                                        for p in state.all_model_checkpoint_paths}


def _unreferenced_checkpoint(logdir):
    on_disk = {os.path.basename(p)[:-len(".index")]
               for p in glob.glob(os.path.join(logdir, "ckpt-*.index"))}
    return bool(on_disk - _referenced(logdir)) or bool(
        glob.glob(os.path.join(logdir, "ckpt-*_temp*")))


def _after_mask_update(seen):
    def check(logdir):
        found = set(glob.glob(os.path.join(logdir, "mask_updates", "after", "*.index")))
        return bool(found - seen)
    return check


@pytest.mark.slow
def test_sigkill_anywhere_then_restart_matches_uninterrupted_run(tmp_path):
    launcher = tmp_path / "slow_rigl_train.py"
    launcher.write_text(_SLOW_LAUNCHER)
    ref = str(tmp_path / "ref")
    done = subprocess.run([sys.executable, str(launcher)] + _cli(ref, KILL)[3:], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    logdir = str(tmp_path / "killed")
    cmd = [sys.executable, str(launcher)] + _cli(logdir, KILL)[3:]
    rng = random.Random(0)
    seen = set()
    plan = ["checkpoint_write", "mask_update", "random", "checkpoint_write", "random"]
    kinds = []
    for attempt in range(12):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        kind = plan[attempt] if attempt < len(plan) else None
        if kind == "checkpoint_write":
            when = _unreferenced_checkpoint
        elif kind == "mask_update":
            seen = set(glob.glob(os.path.join(logdir, "mask_updates", "after", "*.index")))
            when = _after_mask_update(seen)
        elif kind == "random":
            deadline_kill = time.time() + rng.uniform(3.0, 9.0)
            when = lambda _: time.time() > deadline_kill  # noqa: E731
        else:
            when = None
        killed = False
        deadline = time.time() + 400
        while proc.poll() is None and when is not None:
            if when(logdir):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            assert time.time() < deadline
            time.sleep(0.005)
        _, err = proc.communicate(timeout=400)
        if killed:
            kinds.append(kind)
            assert not os.path.exists(os.path.join(logdir, "results.json"))
            continue
        assert proc.returncode == 0, err[-3000:]
        break
    else:
        pytest.fail("the run never finished")
    assert "checkpoint_write" in kinds and "mask_update" in kinds, kinds

    _assert_same_state(os.path.join(logdir, "ckpt-120"), os.path.join(ref, "ckpt-120"))
    with open(os.path.join(logdir, "results.json")) as f:
        got = json.load(f)
    with open(os.path.join(ref, "results.json")) as f:
        want = json.load(f)
    assert got["resumed_from_step"] is not None
    for key in ("step", "test_loss", "test_accuracy", "train_loss", "train_accuracy",
                "sparsity"):
        assert got[key] == want[key], key


RESUME = TINY + ["training.total_steps = 6", "training.save_freq = 2",
                 "training.log_freq = 2"]


@pytest.mark.slow
def test_unreferenced_partial_checkpoint_is_ignored(tmp_path):
    ref = str(tmp_path / "ref")
    train.run_experiment([QUICKSTART], RESUME, logdir=ref, verbose=0)
    logdir = str(tmp_path / "run")
    train.run_experiment([QUICKSTART], RESUME, logdir=logdir, verbose=0)
    # Simulate a kill while ckpt-6 was being written: the state file still names ckpt-4
    # and ckpt-6's shard is truncated; a leftover temp directory holds junk.
    tf.compat.v1.train.update_checkpoint_state(
        logdir, os.path.join(logdir, "ckpt-4"),
        all_model_checkpoint_paths=[os.path.join(logdir, f"ckpt-{s}") for s in (0, 2, 4)])
    for data in glob.glob(os.path.join(logdir, "ckpt-6.data-*")):
        with open(data, "r+b") as f:
            f.truncate(max(1, os.path.getsize(data) // 3))
    os.makedirs(os.path.join(logdir, "ckpt-8_temp"))
    with open(os.path.join(logdir, "ckpt-8_temp", "part-00000-of-00001.data-00000-of-00001"),
              "wb") as f:
        f.write(b"\x00garbage")
    os.remove(os.path.join(logdir, "results.json"))
    out = train.run_experiment([QUICKSTART], RESUME, logdir=logdir, verbose=0)
    assert out["resumed_from_step"] == 4 and out["step"] == 6
    _assert_same_state(os.path.join(logdir, "ckpt-6"), os.path.join(ref, "ckpt-6"))


def _failing_renames(monkeypatch, names):
    """Every rename/replace onto a file called one of ``names`` raises OSError, whichever
    API the package uses (tf.io.gfile, os)."""
    failures = []

    def wrap(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.basename(os.fspath(dst)) in names:
                failures.append(os.path.basename(os.fspath(dst)))
                raise OSError(f"injected failure writing {dst}")
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(tf.io.gfile, "rename", wrap(tf.io.gfile.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    monkeypatch.setattr(os, "rename", wrap(os.rename))
    return failures


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.slow
def test_results_and_operative_config_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails while rigl-train finishes leaves results.json and
    operative_config.gin exactly as they were (or absent), never half-written."""
    bindings = TINY + ["training.total_steps = 4", "training.save_freq = 2",
                       "mask_updater.update_freq = 2"]  # TINY's 5 would never come
    fresh = str(tmp_path / "fresh")
    with monkeypatch.context() as m:
        failures = _failing_renames(m, {"operative_config.gin"})
        with pytest.raises(OSError, match="injected failure"):
            train.run_experiment([QUICKSTART], bindings, logdir=fresh, verbose=0)
        assert failures == ["operative_config.gin"]
    assert not os.path.exists(os.path.join(fresh, "operative_config.gin"))
    assert not os.path.exists(os.path.join(fresh, "results.json"))

    logdir = str(tmp_path / "run")
    train.run_experiment([QUICKSTART], bindings, logdir=logdir, verbose=0)
    before = {name: _read(os.path.join(logdir, name))
              for name in ("results.json", "operative_config.gin")}
    json.loads(before["results.json"])
    with monkeypatch.context() as m:
        failures = _failing_renames(m, {"results.json"})
        with pytest.raises(OSError, match="injected failure"):
            # The same run again: it resumes at its last step and rewrites its results.
            train.run_experiment([QUICKSTART], bindings, logdir=logdir, verbose=0)
        assert failures == ["results.json"]
    for name, content in before.items():
        assert _read(os.path.join(logdir, name)) == content, name
    leftovers = [f for f in os.listdir(logdir) if f.startswith("results.json")]
    assert leftovers == ["results.json"], leftovers


def test_resumed_data_pipeline_sees_the_same_batches():
    spec_bindings = TINY + ["training.total_steps = 10"]
    from rigl_tf.experiments import config as config_lib

    config_lib.parse([QUICKSTART], spec_bindings)
    spec = config_lib.resolve()
    full = [x.numpy() for x, _ in train._train_dataset(spec, 3, 0).take(9)]
    resumed = [x.numpy() for x, _ in train._train_dataset(spec, 3, 5).take(4)]
    for a, b in zip(full[5:], resumed):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- non-finite


def _sparse_setup():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    model = rigl_tf.sparsify(model, 0.5, "uniform", seed=0)
    opt = SkipNonFinite(rigl_tf.SparseOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.9),
        rigl_tf.updaters.RigL(update_freq=1, start_step=1, init_drop_fraction=0.5)))
    opt.build(model.trainable_variables)
    return model, opt


def _snapshot(model, opt):
    return [v.numpy().copy() for v in model.variables] + [
        v.numpy().copy() for v in opt.variables if "iteration" not in v.path
        and "skipped" not in v.path]


@pytest.mark.parametrize("compiled", [False, True])
def test_skip_nonfinite_changes_no_weight_mask_or_slot(compiled):
    model, opt = _sparse_setup()
    variables = model.trainable_variables
    good = [tf.ones_like(v) for v in variables]
    bad = [g for g in good]
    bad[0] = tf.tensor_scatter_nd_update(good[0], [[0, 0]], [np.nan])
    apply = tf.function(lambda g: opt.apply(g, variables)) if compiled else (
        lambda g: opt.apply(g, variables))
    apply(good)  # step 0 -> 1: slots become non-zero
    before = _snapshot(model, opt)
    apply(bad)  # step 1 would be a mask update: skipped entirely
    after = _snapshot(model, opt)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert int(opt.iterations.numpy()) == 2 and int(opt.skipped.numpy()) == 1
    apply(good)
    assert any(not np.array_equal(a, b) for a, b in zip(after, _snapshot(model, opt)))
    assert int(opt.skipped.numpy()) == 1


@pytest.mark.slow
def test_skip_nonfinite_under_mirrored_when_one_replica_is_bad():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")[:2]],
        cross_device_ops=tf.distribute.ReductionToOneDevice())  # no collective-key clashes
    with strategy.scope():
        model, opt = _sparse_setup()
    variables = model.trainable_variables

    @tf.function
    def step(poison):
        def replica_fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            scale = tf.where(tf.logical_and(poison, tf.equal(rid, 1)), np.nan, 1.0)
            opt.apply([tf.ones_like(v) * scale for v in variables], variables)
        strategy.run(replica_fn)

    step(tf.constant(False))
    before = _snapshot(model, opt)
    step(tf.constant(True))
    for a, b in zip(before, _snapshot(model, opt)):
        np.testing.assert_array_equal(a, b)
    assert int(opt.skipped.numpy()) == 1 and int(opt.iterations.numpy()) == 2


def test_skip_nonfinite_round_trips_in_a_checkpoint(tmp_path):
    model, opt = _sparse_setup()
    opt.skipped.assign(3)
    path = tf.train.Checkpoint(optimizer=opt).save(str(tmp_path / "c"))
    model2, opt2 = _sparse_setup()
    tf.train.Checkpoint(optimizer=opt2).restore(path).assert_existing_objects_matched()
    assert int(opt2.skipped.numpy()) == 3
    config = keras.optimizers.serialize(opt)
    assert isinstance(keras.optimizers.deserialize(config), SkipNonFinite)


def test_nonfinite_option_is_validated():
    from rigl_tf.experiments import config as config_lib

    with pytest.raises(ValueError, match=r"`training.nonfinite` must be one of 'stop', 'skip'"):
        config_lib.parse([QUICKSTART], ["training.nonfinite = 'ignore'"])
        config_lib.resolve()


# --------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_end_to_end(tmp_path, policy):
    logdir = str(tmp_path / policy)
    out = train.run_experiment(
        [QUICKSTART], TINY + ["training.total_steps = 6", "training.save_freq = 3",
                              "training.log_freq = 3", f"training.mixed_precision = '{policy}'"],
        logdir=logdir, verbose=0)
    assert out["step"] == 6 and out["mixed_precision"] == policy
    assert np.isfinite(out["test_loss"])
    assert keras.config.dtype_policy().name == "float32"  # global policy restored
    reader = tf.train.load_checkpoint(os.path.join(logdir, "ckpt-6"))
    dtypes = reader.get_variable_to_dtype_map()
    masks = [k for k in dtypes if k.startswith("masks/")]
    assert masks and all(dtypes[k] == tf.float32 for k in masks)
    for m in _list(reader, "masks"):
        assert set(np.unique(m)) <= {0.0, 1.0}
    scale = [k for k in dtypes if "dynamic_scale" in k]
    assert bool(scale) == (policy == "mixed_float16")  # LossScaleOptimizer outermost


# --------------------------------------------------------------------------- untrusted input


def _calls(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_no_unsafe_loading_anywhere():
    """Keras safe_mode is never turned off; np.load never allows pickles (tools say so)."""
    library = glob.glob(os.path.join(ROOT, "rigl_tf", "**", "*.py"), recursive=True)
    tools = glob.glob(os.path.join(ROOT, "tools", "*.py"))
    commands = glob.glob(os.path.join(ROOT, "rigl_tf", "commands", "*.py"))
    bad = []
    for path in library + tools:
        for call in _calls(path):
            where = f"{os.path.relpath(path, ROOT)}:{call.lineno}"
            for kw in call.keywords:
                value = kw.value
                if kw.arg in ("safe_mode", "allow_pickle") and not (
                        isinstance(value, ast.Constant) and value.value is (
                            kw.arg == "safe_mode")):
                    bad.append(f"{where} {kw.arg}")
            func = call.func
            is_np_load = (isinstance(func, ast.Attribute) and func.attr == "load"
                          and isinstance(func.value, ast.Name)
                          and func.value.id in ("np", "numpy"))
            if is_np_load and path in tools + commands and not any(
                    kw.arg == "allow_pickle" for kw in call.keywords):
                bad.append(f"{where} np.load without allow_pickle=False")
    assert not bad, bad
