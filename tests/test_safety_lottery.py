"""rigl-lottery and IMPRun (issue 15): one process per IMP run directory (also when IMPRun
is used as a library), damaged run files named, one-line command-line errors, diverging
levels named with nothing of them taken as finished."""

import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from rigl_tf.lottery import layout
from rigl_tf.lottery import main as lottery_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QS = os.path.join(ROOT, "configs", "lottery", "quickstart_imp.gin")
TINY = ["network.hidden_sizes = (8,)", "training.total_steps = 3",
        "lottery_run.levels = 1"]
ENV = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")


def _tree(directory):
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
    return out


def _cli(run_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "rigl_tf.lottery.main", f"--gin_config={QS}",
         f"--run_dir={run_dir}"] + [f"--gin_bindings={b}" for b in TINY] + list(extra),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = lottery_main.run_lottery([QS], TINY, root_dir=str(tmp_path_factory.mktemp("imp")),
                                   print_fn=lambda *a: None)
    return out["run_dir"]


def _copy(run_dir, tmp_path):
    import shutil

    target = str(tmp_path / "run")
    shutil.copytree(run_dir, target)
    return target


@pytest.mark.parametrize("name", ["config.json", os.path.join("level_01", "mask.npz")])
def test_damaged_run_file_is_named(finished, tmp_path, name):
    run_dir = _copy(finished, tmp_path)
    path = os.path.join(run_dir, name)
    assert os.path.exists(path), sorted(_tree(run_dir))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(layout.CorruptRunFileError, match=f"{path!r} is damaged"):
        lottery_main.run_lottery([QS], TINY + ["lottery_run.branches = ['lottery']",
                                               "lottery_run.branch_seeds = (7,)"],
                                 run_dir=run_dir, print_fn=lambda *a: None)
    done = _cli(run_dir, "--gin_bindings=lottery_run.branches = ['lottery']",
                "--gin_bindings=lottery_run.branch_seeds = (7,)")
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("rigl-lottery")]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert name.split(os.sep)[-1] in lines[0] and "Traceback" not in done.stderr
    assert "--debug" in lines[0]
    debug = _cli(run_dir, "--gin_bindings=lottery_run.branches = ['lottery']",
                 "--gin_bindings=lottery_run.branch_seeds = (7,)", "--debug")
    assert "Traceback" in debug.stderr


_HOLDER = """
import sys, time
from rigl_tf import locking
with locking.exclusive(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_rigl_lottery_on_a_busy_run_directory_fails_at_once(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, run_dir], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(run_dir)
        done = _cli(run_dir, "--gin_bindings=lottery_run.levels = 2")
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("rigl-lottery")]
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert f"IMP run directory {run_dir!r} is in use by process {holder.pid}" in lines[0]
        assert _tree(run_dir) == before
    finally:
        holder.kill()
        holder.wait()


def test_rewind_step_past_the_end_is_refused_before_any_write(tmp_path):
    run_dir = str(tmp_path / "run")
    for step in (3, 7):  # == and > training.total_steps (3)
        with pytest.raises(ValueError, match=(
                rf"^`rewind_step`={step} \(step {step}\) is past the end of training: it must "
                rf"be < the 3 training steps \(training.total_steps\)\.$")):
            lottery_main.run_lottery([QS], TINY + ["imp.rewinding = 'step'",
                                                   f"imp.rewind_step = {step}"],
                                     run_dir=run_dir, print_fn=lambda *a: None)
        assert not os.path.exists(run_dir)


# --------------------------------------------------------------------------- IMPRun as a library

_LIB_HOLDER = """
import sys
from rigl_tf.experiments.config import make_spec
from rigl_tf.lottery import IMPConfig, IMPRun
spec = make_spec(training={"total_steps": 100000, "batch_size": 32, "save_freq": 100000,
                           "log_freq": 1000},
                 network={"network_name": "mlp", "hidden_sizes": (8,)},
                 data={"dataset_name": "digits"})
IMPRun(IMPConfig(), spec, run_dir=sys.argv[1]).run(0)
"""


def _lib_spec(total_steps):
    from rigl_tf.experiments.config import make_spec

    return make_spec(training={"total_steps": total_steps, "batch_size": 32,
                               "save_freq": 100000, "log_freq": 1000},
                     network={"network_name": "mlp", "hidden_sizes": (8,)},
                     data={"dataset_name": "digits"})


class _MustNotTrain(keras.callbacks.Callback):
    """Fails the test if a training starts (in a run directory another process holds)."""

    def on_train_begin(self, logs=None):
        raise AssertionError("trained in a run directory another process holds")


def test_imprun_refuses_a_run_directory_another_process_holds(finished, tmp_path):
    """The library path (no rigl-lottery) takes the run directory's lock: a held directory
    is refused at once, naming the holder, and nothing in it changes."""
    from rigl_tf import locking
    from rigl_tf.lottery import IMPRun

    lottery_main.parse([QS], TINY)
    config, spec, _ = lottery_main.resolve()
    run_dir = _copy(finished, tmp_path)
    fresh = str(tmp_path / "fresh")
    os.makedirs(fresh)
    holders = [subprocess.Popen([sys.executable, "-c", _HOLDER, d], env=ENV,
                                stdout=subprocess.PIPE, text=True) for d in (run_dir, fresh)]
    try:
        for holder in holders:
            assert holder.stdout.readline().strip() == "locked"
        before = _tree(run_dir)
        # Reading a run needs no lock; running its next level does.
        run = IMPRun(config, spec, run_dir=run_dir, callbacks=[_MustNotTrain()])
        assert run.finished_levels() == [0, 1]
        for call in (lambda: run.run(2), run.write_summary, lambda: run.run_level(2)):
            with pytest.raises(locking.DirectoryLockedError,
                               match=f"^IMP run directory {run_dir!r} is in use by process "
                                     f"{holders[0].pid} on host "):
                call()
        assert _tree(run_dir) == before
        # A new run directory: claiming it (config.json) is a write too.
        with pytest.raises(locking.DirectoryLockedError,
                           match=f"is in use by process {holders[1].pid}"):
            IMPRun(config, spec, run_dir=fresh)
        assert sorted(os.listdir(fresh)) == [locking.LOCK_NAME]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


@pytest.mark.slow
def test_two_processes_running_imp_as_a_library(tmp_path):
    """Process A runs IMPRun.run(0) (library, long training); while it trains, its run
    directory is locked by A: a second IMPRun in this process is refused at once."""
    from rigl_tf import locking
    from rigl_tf.lottery import IMPConfig, IMPRun

    run_dir = str(tmp_path / "imp")
    first = subprocess.Popen([sys.executable, "-c", _LIB_HOLDER, run_dir], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        marker = os.path.join(run_dir, "level_00", "train", "ckpt-0.index")
        deadline = time.time() + 300
        while not os.path.exists(marker):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.1)
        with pytest.raises(locking.DirectoryLockedError,
                           match=f"is in use by process {first.pid} "):
            with locking.exclusive(run_dir, "IMP run directory"):
                pass
        run = IMPRun(IMPConfig(), _lib_spec(100000), run_dir=run_dir,
                     callbacks=[_MustNotTrain()])
        with pytest.raises(locking.DirectoryLockedError,
                           match=f"^IMP run directory {run_dir!r} is in use by process "
                                 f"{first.pid}"):
            run.run(0)
        assert first.poll() is None  # A is still training, undisturbed
    finally:
        first.kill()
        first.wait()


# --------------------------------------------------------------------------- diverging levels


class _Poison(keras.callbacks.Callback):
    """Sets the last kernel of the model trained in ``stage`` to ``value`` after step
    ``step``; with ``restore`` the old kernel is put back after the next step."""

    def __init__(self, stage, step, value, restore=False):
        super().__init__()
        self.stage, self.step, self.value, self.restore = stage, step, value, restore
        self.run = None
        self.saved = None

    def on_train_batch_end(self, batch, logs=None):
        if self.run.stage != self.stage:
            return
        kernel = [v for v in self.model.trainable_variables if len(v.shape) == 2][-1]
        step = int(self.model.optimizer.iterations.numpy())
        if step == self.step:
            self.saved = kernel.numpy()
            kernel.assign(np.full(kernel.shape, self.value, "float32"))
        elif self.restore and self.saved is not None:
            kernel.assign(self.saved)
            self.saved = None


def _imp(tmp_path, poison, nonfinite="stop"):
    from rigl_tf.experiments.config import make_spec
    from rigl_tf.lottery import IMPConfig, IMPRun

    spec = make_spec(training={"total_steps": 6, "batch_size": 32, "nonfinite": nonfinite},
                     network={"network_name": "mlp", "hidden_sizes": (8,)},
                     data={"dataset_name": "digits"})
    run = IMPRun(IMPConfig(), spec, run_dir=str(tmp_path / "imp"), callbacks=[poison])
    poison.run = run
    return run


def _level_files(run, level):
    d = run.level_dir(level)
    return sorted(os.path.relpath(os.path.join(r, f), d)
                  for r, _, fs in os.walk(d) for f in fs if "/summaries/" not in r + "/")


@pytest.mark.slow
def test_level_whose_loss_becomes_nan_names_the_level_and_finishes_nothing(tmp_path):
    # A NaN kernel after step 3 of level 1: the loss of step 4 is NaN, the trainer stops.
    run = _imp(tmp_path, _Poison("level_01", 3, np.nan))
    with pytest.raises(FloatingPointError) as e:
        run.run(2)
    msg = str(e.value)
    for part in ("IMP level 1 (level_01/) diverged (`loss` is nan at step 4)",
                 "nothing of it is marked finished (no solution or metrics.json written",
                 f"its last good checkpoint '{run.level_dir(1)}/train/ckpt-0' is kept",
                 "lower optimizer.learning_rate or set optimizer.clipnorm."):
        assert part in msg, (part, msg)
    assert msg.count(". ") == 0  # one sentence
    assert run.finished_levels() == [0]
    files = _level_files(run, 1)
    assert not [f for f in files if f in ("metrics.json", "solution.weights.npz")], files
    summary = layout.read_json(os.path.join(run.run_dir, layout.SUMMARY))
    assert [row["level"] for row in summary["levels"]] == [0]


@pytest.mark.slow
def test_level_diverging_under_nonfinite_skip_fails_before_the_adaptive_statistics(tmp_path):
    # training.nonfinite='skip': a kernel of 3e38 after step 2 of level 0 overflows every
    # later loss (the steps are skipped, the kernel stays): the trainer finishes, the
    # level's losses are NaN. It used to fail inside adaptive.loss_std.
    run = _imp(tmp_path, _Poison("level_00", 2, 3e38), nonfinite="skip")
    with pytest.raises(FloatingPointError) as e:
        run.run(1)
    msg = str(e.value)
    for part in ("IMP level 0 (level_00/) diverged (non-finite after training: train_loss, "
                 "test_loss, train_subset_loss (",
                 f"its checkpoints up to step 6 stay in '{run.level_dir(0)}/train'"):
        assert part in msg, (part, msg)
    assert "losses" not in msg.split("(")[1]  # not the per-batch record (2 steps were fine)
    assert run.finished_levels() == []
    files = _level_files(run, 0)
    assert not [f for f in files if f in ("metrics.json", "solution.weights.npz",
                                          "rewind.weights.npz")], files
    # The same command again reports the same (nothing was taken as finished).
    with pytest.raises(FloatingPointError, match=r"^IMP level 0 \(level_00/\) diverged"):
        run.run(1)


@pytest.mark.slow
def test_skipped_nan_steps_leave_epsilon_to_the_steps_that_trained(tmp_path):
    # One overflowing step (kernel 3e38 for step 3 only, then restored) under 'skip': the
    # level finishes; epsilon is the std of the 5 finite per-batch losses.
    run = _imp(tmp_path, _Poison("level_00", 2, 3e38, restore=True), nonfinite="skip")
    m = run.run(0)[0]
    losses = m["last_epoch_losses"]
    assert len(losses) == 6 and losses[2] is None and m["nonfinite_losses_last_epoch"] == 1
    finite = [v for v in losses if v is not None]
    assert m["loss_std_last_epoch"] == pytest.approx(float(np.std(finite)))
