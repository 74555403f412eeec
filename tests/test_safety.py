"""Nothing lost, nothing silent (issue 15): locks, resume from damaged state, deleting only
what the package wrote, input-keyed caches, validation before writes, one-line errors."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from rigl_tf import locking
from rigl_tf.experiments import train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.gin")
# quickstart's RigL schedule (updates every 100 steps until 1500) does not fit 6 steps:
# these runs update every 3 steps until the end (a schedule past the end is refused).
# The last three entries are replaced by tests that need other lengths.
TINY = ["data.dataset_name = 'digits'", "network.network_name = 'mlp'",
        "network.hidden_sizes = (16,)", "training.batch_size = 16",
        "training.val_batch_size = 60", "mask_updater.update_freq = 3",
        "mask_updater.last_update_step = 6", "training.total_steps = 6",
        "training.save_freq = 2", "training.log_freq = 2"]


def _tree(directory):
    """{relative path: bytes} of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def _cli(logdir, bindings, *flags):
    cmd = [sys.executable, "-m", "rigl_tf.experiments.train", f"--gin_config={QUICKSTART}",
           f"--logdir={logdir}"] + list(flags)
    return cmd + [f"--gin_bindings={b}" for b in bindings]


_HOLDER = """
import sys, time
from rigl_tf import locking
with locking.exclusive(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold(directory):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, directory], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# --------------------------------------------------------------------------- 1. locks


@pytest.mark.slow
def test_second_process_on_a_locked_logdir_fails_at_once_and_changes_nothing(tmp_path):
    logdir = str(tmp_path / "run")
    train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    holder = _hold(logdir)
    try:
        before = _tree(logdir)
        t0 = time.time()
        # A second rigl-train (another seed and sparsity) on the same logdir.
        done = subprocess.run(_cli(logdir, TINY + ["sparsity.sparsity = 0.5"], "--seed=3",
                                   "--overwrite"),
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        err = [line for line in done.stderr.splitlines() if "rigl-train" in line]
        assert len(err) == 1, done.stderr  # one sentence, no traceback
        assert f"process {holder.pid}" in err[0] and "is in use" in err[0], err
        assert "Traceback" not in done.stderr
        assert _tree(logdir) == before  # nothing changed, --overwrite included
        assert time.time() - t0 < 120
    finally:
        holder.kill()
        holder.wait()
    # The holder died (SIGKILL): its lock is gone with it and the next run may proceed.
    out = train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    assert out["step"] == 6
    assert not os.path.exists(os.path.join(logdir, locking.LOCK_NAME))


@pytest.mark.slow
def test_two_rigl_train_processes_on_one_logdir(tmp_path):
    """Two real rigl-train runs: exactly one trains, the other is refused at once."""
    logdir = str(tmp_path / "run")
    long = TINY + ["training.total_steps = 100000", "training.save_freq = 1000"]
    first = subprocess.Popen(_cli(logdir, long), cwd=ROOT, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(logdir, "ckpt-0.index")):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.1)
        second = subprocess.run(_cli(logdir, long + ["sparsity.sparsity = 0.5"], "--seed=1"),
                                cwd=ROOT, env=_env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode != 0
        assert f"process {first.pid}" in second.stderr, second.stderr
        assert first.poll() is None  # the first run is untouched and still training
        with open(os.path.join(logdir, "operative_config.gin")) as f:
            assert f.read().startswith("# rigl-train seed = 0\n")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_lock_is_reentrant_in_one_process_and_removes_a_directory_it_created(tmp_path):
    d = str(tmp_path / "new")
    with locking.exclusive(d) as path:
        assert os.path.exists(path)
        with locking.exclusive(d):  # the trainer inside an IMP run of the same process
            pass
        assert os.path.exists(path)
    assert not os.path.exists(d)  # created, nothing written: removed again


def test_remote_paths_are_not_locked_but_work(caplog):
    with locking.exclusive("gs://bucket/run") as path:
        assert path is None


# --------------------------------------------------------------------------- 2. resume


def _steps_written(logdir):
    return sorted(int(p.rsplit("-", 1)[1][:-len(".index")])
                  for p in glob.glob(os.path.join(logdir, "ckpt-*.index")))


def _read_all(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "garbage", "dangling"])
def test_damaged_state_file_resumes_from_the_newest_intact_checkpoint(tmp_path, capsys,
                                                                      damage):
    full = str(tmp_path / "full")
    ref = train.run_experiment([QUICKSTART], TINY, logdir=full, verbose=0)
    logdir = str(tmp_path / "run")
    bindings = TINY
    with pytest.raises(KeyboardInterrupt):
        train.run_experiment([QUICKSTART], bindings, logdir=logdir, verbose=0,
                             extra_callbacks=[_Crash(5)])
    assert _steps_written(logdir) == [0, 2, 4]
    kept = {s: _read_all(os.path.join(logdir, f"ckpt-{s}")) for s in (0, 2, 4)}
    state = os.path.join(logdir, "checkpoint")
    if damage == "missing":
        os.remove(state)
    elif damage == "garbage":
        with open(state, "wb") as f:
            f.write(b"\x00\xffnot a checkpoint state {{{")
    else:
        with open(state, "w") as f:
            f.write('model_checkpoint_path: "ckpt-99"\nall_model_checkpoint_paths: "ckpt-99"\n')
    capsys.readouterr()
    out = train.run_experiment([QUICKSTART], bindings, logdir=logdir, verbose=0)
    err = capsys.readouterr().err
    assert f"Resuming from {os.path.join(logdir, 'ckpt-4')}" in err, err
    assert out["resumed_from_step"] == 4 and out["step"] == 6
    for s in (0, 2):  # earlier checkpoints were not overwritten by a silent restart
        for key, value in kept[s].items():
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH":
                np.testing.assert_array_equal(_read_all(os.path.join(logdir, f"ckpt-{s}"))[key],
                                              value)
    assert out["test_accuracy"] == ref["test_accuracy"]
    assert tf.train.latest_checkpoint(logdir).endswith("ckpt-6")


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_reported_and_skipped(tmp_path, capsys):
    full = str(tmp_path / "full")
    ref = train.run_experiment([QUICKSTART], TINY, logdir=full, verbose=0)
    logdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0,
                             extra_callbacks=[_Crash(5)])
    data = glob.glob(os.path.join(logdir, "ckpt-4.data-*"))
    assert data
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    capsys.readouterr()
    out = train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    err = capsys.readouterr().err
    assert f"Checkpoint {os.path.join(logdir, 'ckpt-4')} is damaged" in err, err
    assert out["resumed_from_step"] == 2 and out["step"] == 6
    assert out["test_accuracy"] == ref["test_accuracy"]


@pytest.mark.slow
def test_all_checkpoints_damaged_is_refused_not_restarted(tmp_path):
    logdir = str(tmp_path / "run")
    train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    os.remove(os.path.join(logdir, "checkpoint"))
    for path in glob.glob(os.path.join(logdir, "ckpt-*.data-*")):
        with open(path, "r+b") as f:
            f.truncate(3)
    before = _tree(logdir)
    with pytest.raises(ValueError, match=r"no checkpoint reads back intact .*ckpt-6"):
        train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    assert _tree(logdir) == before


class _Crash(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt("simulated crash")


# --------------------------------------------------------------------------- 3. deleting


@pytest.mark.slow
def test_overwrite_deletes_only_files_rigl_train_wrote(tmp_path):
    logdir = str(tmp_path / "run")
    train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    with open(os.path.join(logdir, "notes.txt"), "w") as f:
        f.write("my notes")
    os.makedirs(os.path.join(logdir, "analysis", "plots"))
    with open(os.path.join(logdir, "analysis", "plots", "fig.png"), "wb") as f:
        f.write(b"png")
    with open(os.path.join(logdir, "summaries", "my_events.csv"), "w") as f:
        f.write("x")
    written = set(_tree(logdir))
    ours, others = train.owned_paths(logdir)
    assert sorted(os.path.relpath(p, logdir) for p in others) == [
        os.path.join("analysis", "plots", "fig.png"), "notes.txt",
        os.path.join("summaries", "my_events.csv")]
    assert {os.path.relpath(p, logdir) for p in ours} == written - {
        "notes.txt", os.path.join("analysis", "plots", "fig.png"),
        os.path.join("summaries", "my_events.csv")}
    out = train.run_experiment([QUICKSTART], TINY + ["optimizer.learning_rate = 0.05"],
                               logdir=logdir, overwrite=True, verbose=0)
    assert out["resumed_from_step"] is None and out["step"] == 6
    after = _tree(logdir)
    assert after["notes.txt"] == b"my notes"
    assert after[os.path.join("analysis", "plots", "fig.png")] == b"png"
    assert after[os.path.join("summaries", "my_events.csv")] == b"x"


@pytest.mark.parametrize("logdir", ["", "   ", "/", "~", os.path.expanduser("~")])
def test_empty_or_root_like_logdir_is_refused(logdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`--logdir`"):
        train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- 7. steps


def _event_steps(logdir, tag):
    steps = []
    for path in sorted(glob.glob(os.path.join(logdir, "summaries", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    steps.append(event.step)
    return steps


@pytest.mark.slow
def test_summary_steps_after_resume_match_an_uninterrupted_run(tmp_path):
    # save_freq=3 is not a multiple of log_freq=4: the crash at step 8 resumes from 6.
    b = TINY[:-3] + ["training.total_steps = 16", "training.save_freq = 3",
                     "training.log_freq = 4"]
    full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
    train.run_experiment([QUICKSTART], b, logdir=full, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train.run_experiment([QUICKSTART], b, logdir=crashed, verbose=0,
                             extra_callbacks=[_Crash(8)])
    out = train.run_experiment([QUICKSTART], b, logdir=crashed, verbose=0)
    assert out["resumed_from_step"] == 6
    assert _event_steps(full, "test/loss") == [4, 8, 12, 16]
    # Evaluations logged before the crash (4), then on the same grid (8, 12, 16), not 10/14.
    assert _event_steps(crashed, "test/loss") == [4, 8, 12, 16]
    assert sorted(set(_event_steps(crashed, "sparsity/total"))) == [0, 4, 6, 8, 12, 16]


def _sparse_mlp():
    import rigl_tf

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="h"),
                              keras.layers.Dense(3, name="o")])
    return rigl_tf.sparsify(model, 0.5, "uniform", seed=0)


def _user_files(directory):
    os.makedirs(directory, exist_ok=True)
    files = {"model.keras": b"keras bytes", "model.tflite": b"tflite", "notes.txt": b"notes"}
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return files


def test_export_saved_model_into_a_directory_with_other_files_removes_nothing(tmp_path):
    import rigl_tf

    target = str(tmp_path / "exports")
    files = _user_files(target)
    with pytest.raises(FileExistsError, match=r"`path`=.*exports.* holding other files "
                                              r"\(model.keras, model.tflite, notes.txt\)"):
        rigl_tf.export(_sparse_mlp(), target, "saved_model")
    assert _tree(target) == files
    assert sorted(os.listdir(tmp_path)) == ["exports"]  # no staging directory left
    # Its own subdirectory works, and exporting again replaces only that SavedModel.
    sub = os.path.join(target, "saved_model")
    rigl_tf.export(_sparse_mlp(), sub, "saved_model")
    rigl_tf.export(_sparse_mlp(), sub, "saved_model")
    assert os.path.exists(os.path.join(sub, "saved_model.pb"))
    assert {k: v for k, v in _tree(target).items() if k in files} == files
    for fmt, name in (("keras", "m.keras"), ("tflite", "m.tflite")):
        with pytest.raises(FileExistsError):  # a file format aimed at a directory
            os.makedirs(os.path.join(target, name))
            _user_files(os.path.join(target, name))
            rigl_tf.export(_sparse_mlp(), os.path.join(target, name), fmt)
        assert _tree(os.path.join(target, name)) == files


def test_save_compressed_into_a_directory_removes_nothing(tmp_path):
    from rigl_tf import compressed

    target = str(tmp_path / "weights")
    files = _user_files(target)
    with pytest.raises(FileExistsError, match=r"weights"):
        compressed.save_compressed(_sparse_mlp(), target)
    assert _tree(target) == files
    path = compressed.save_compressed(_sparse_mlp(), os.path.join(target, "w.npz"))
    assert os.path.isfile(path) and _tree(target)["notes.txt"] == b"notes"


# --------------------------------------------------------------------------- 5. validation


def _first_mask_dataset(h5):
    """Path of the first SparseWrapper's own variable (its mask) in a .keras weights file."""
    names = []
    h5.visit(names.append)
    return next(n for n in names if "sparse_wrapper" in n and "/layer/" not in n
                and n.endswith("/vars/0"))


def _keras_file_with_mask_value(tmp_path, value):
    """A .keras file of a sparse model whose first mask holds ``value`` everywhere."""
    import zipfile

    import h5py

    path = str(tmp_path / "model.keras")
    _sparse_mlp().save(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    weights = str(tmp_path / "w.h5")
    with open(weights, "wb") as f:
        f.write(parts["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        mask = f[_first_mask_dataset(f)]
        mask[...] = np.full(mask.shape, value, mask.dtype)
    with open(weights, "rb") as f:
        parts["model.weights.h5"] = f.read()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def test_keras_file_with_half_masks_is_refused_on_load(tmp_path):
    import rigl_tf  # noqa: F401  (registers SparseWrapper)

    ok = keras.models.load_model(_keras_file_with_mask_value(tmp_path, 1.0))
    assert ok.layers[0].masks[0].numpy().min() == 1.0  # the file surgery itself is sound
    with pytest.raises(ValueError, match=r"saved mask .* of layer 'h' must contain only 0 "
                                         r"and 1, got 24 other values \(e.g. 0.5\)"):
        keras.models.load_model(_keras_file_with_mask_value(tmp_path, 0.5))


@pytest.mark.parametrize("binding, pattern", [
    ("network.hidden_sizes = (-3, 16)", r"`network.hidden_sizes` must be a tuple of positive"),
    ("network.hidden_sizes = (0, 16)", r"`network.hidden_sizes` must be a tuple of positive"),
    ("network.use_batch_norm = 'no'", r"`network.use_batch_norm` must be True or False, "
                                      r"got 'no'"),
    ("data.augment = 'no'", r"`data.augment` must be True or False, got 'no'"),
    ("data.normalization = 'bogus'", r"`data.normalization` must be one of 'unit', "
                                     r"'standardize'; got 'bogus'"),
    ("network.noise_stddev = 1e999", r"`network.noise_stddev` must be a finite number"),
    ("unit_scaled_init.scale = 1e999", r"`unit_scaled_init.scale` must be a finite number"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_values_fail_before_any_write_and_in_dry_runs(tmp_path, binding, pattern,
                                                          dry_run):
    logdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=pattern):
        train.run_experiment([QUICKSTART], TINY + [binding], logdir=logdir, verbose=0,
                             dry_run=dry_run)
    assert not os.path.exists(logdir)


@pytest.mark.slow
def test_masks_denser_than_configured_are_refused(tmp_path):
    dense = str(tmp_path / "dense")
    train.run_experiment([QUICKSTART], TINY + ["sparsity.sparsity = 0.0",
                                               "mask_updater.update_alg = ''"],
                         logdir=dense, verbose=0)
    logdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"start at sparsity 0.0000, far below the configured "
                                         r"0.9: the masks loaded from "
                                         r"`network.mask_init_path`="):
        # seed=1: not the dense run's seed, so the same-initialization guard stays quiet.
        train.run_experiment([QUICKSTART], TINY + [f"network.mask_init_path = '{dense}'"],
                             logdir=logdir, verbose=0, seed=1)
    assert not os.path.exists(logdir)
    with pytest.raises(ValueError, match=r"far below the configured 0.9: "
                                         r"`sparsity.min_active`=100000"):
        train.run_experiment([QUICKSTART], TINY + ["sparsity.min_active = 100000"],
                             logdir=logdir, verbose=0, dry_run=True)


@pytest.mark.parametrize("bindings, pattern", [
    (["pruning.final_sparsity = 0.9", "pruning.begin_step = 3000", "pruning.end_step = 7000"],
     r"`pruning.begin_step`=3000 is at or past `training.total_steps`=6: .* never start"),
    (["pruning.final_sparsity = 0.9", "pruning.mode = 'prune'", "pruning.begin_step = 2",
      "pruning.end_step = 7000"],
     r"`pruning.end_step`=7000 is past `training.total_steps`=6"),
])
def test_pruning_that_cannot_reach_its_target_is_refused(tmp_path, bindings, pattern):
    logdir = str(tmp_path / "run")
    base = TINY + ["mask_updater.update_alg = ''", "sparsity.sparsity = 0.0"]
    for dry_run in (True, False):
        with pytest.raises(ValueError, match=pattern):
            train.run_experiment([QUICKSTART], base + bindings, logdir=logdir, verbose=0,
                                 dry_run=dry_run)
    assert not os.path.exists(logdir)


@pytest.mark.parametrize("bindings, pattern", [
    # quickstart's own RigL schedule (every 100 steps until 1500) in a 6-step run.
    (["mask_updater.update_freq = 100", "mask_updater.last_update_step = 1500"],
     r"^`mask_updater.update_freq`=100 puts the first rigl mask update past "
     r"`training.total_steps`=6, so the topology would never change: use a first update "
     r"step in \[1, 6\]"),
    (["mask_updater.last_update_step = 1500"],
     r"^`mask_updater.last_update_step`=1500 is past `training.total_steps`=6, so the rigl "
     r"updates \('cosine' drop-fraction schedule\) would be cut off"),
    (["pruning.final_sparsity = 0.9", "pruning.begin_step = 100000000"],
     r"^`pruning.begin_step`=100000000 is at or past `training.total_steps`=6, so pruning "
     r"to `pruning.final_sparsity`=0.9 would be silently ignored next to "
     r"`mask_updater.update_alg`='rigl'"),
])
def test_dst_schedules_past_the_end_are_refused_before_any_write(tmp_path, bindings, pattern):
    logdir = str(tmp_path / "run")
    for dry_run in (True, False):
        with pytest.raises(ValueError, match=pattern):
            train.run_experiment([QUICKSTART], TINY + bindings, logdir=logdir, verbose=0,
                                 dry_run=dry_run)
    assert not os.path.exists(logdir)


class _Overflow(keras.callbacks.Callback):
    """Finite but huge last-layer weights: the test loss overflows to inf/NaN."""

    def on_train_end(self, logs=None):
        kernel = self.model.layers[-1].layer.kernel
        kernel.assign(np.full(kernel.shape, 3e38, "float32"))


@pytest.mark.slow
def test_nonfinite_metrics_are_written_as_valid_json(tmp_path):
    logdir = str(tmp_path / "run")
    out = train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0,
                               extra_callbacks=[_Overflow()])
    with open(os.path.join(logdir, "results.json")) as f:
        text = f.read()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["status"] == "completed_nonfinite_metrics"
    assert "test_loss" in data["nonfinite_metrics"] and data["test_loss"] is None
    assert out == data


class _FailAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("simulated failure before the first step")


@pytest.mark.slow
def test_new_run_failing_before_its_first_step_leaves_nothing_behind(tmp_path):
    logdir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated"):
        train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0,
                             extra_callbacks=[_FailAtStart()])
    assert not os.path.exists(logdir)
    # The corrected command then runs without --overwrite.
    assert train.run_experiment([QUICKSTART], TINY, logdir=logdir, verbose=0)["step"] == 6
    # A user's directory with own files keeps them (and only loses what the run wrote).
    mine = str(tmp_path / "mine")
    os.makedirs(mine)
    with open(os.path.join(mine, "notes.txt"), "w") as f:
        f.write("x")
    with pytest.raises(RuntimeError):
        train.run_experiment([QUICKSTART], TINY, logdir=mine, verbose=0,
                             extra_callbacks=[_FailAtStart()])
    assert os.listdir(mine) == ["notes.txt"]


@pytest.mark.slow
def test_hessian_mode_recomputes_a_truncated_eigenvalue_file(tmp_path):
    logdir = str(tmp_path / "run")
    small = TINY + ["network.hidden_sizes = (4,)", "hessian.ckpt_ids = (2,)",
                    "hessian.batch_size = 20"]
    train.run_experiment([QUICKSTART], small, logdir=logdir, verbose=0)
    train.run_experiment([QUICKSTART], small, logdir=logdir, verbose=0, mode="hessian")
    path = os.path.join(logdir, "hessian", "ckpt-2.eigvals.npy")
    good = np.load(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    train.run_experiment([QUICKSTART], small, logdir=logdir, verbose=0, mode="hessian")
    np.testing.assert_array_equal(np.load(path), good)
    assert sorted(os.listdir(os.path.join(logdir, "hessian"))) == ["ckpt-2.eigvals.npy"]
