"""rigl-lottery killed with SIGKILL in the middle of IMP level 2 resumes inside the level
(from the trainer's latest checkpoint) and ends bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
QUICKSTART = os.path.join(ROOT, "configs", "lottery", "quickstart_imp.gin")
T = 60
BINDINGS = [
    "network.hidden_sizes = (16,)", f"training.total_steps = {T}", "training.batch_size = 32",
    "training.save_freq = 3", "training.log_freq = 10", "training.val_batch_size = 120",
    "training.deterministic = True", "imp.rewinding = 'step'", "imp.rewind_step = 4",
    "lottery_run.levels = 2", "lottery_run.branches = []",
]


def _cmd(run_dir):
    return ([sys.executable, "-m", "rigl_tf.lottery.main", f"--gin_config={QUICKSTART}",
             f"--run_dir={run_dir}"] + [f"--gin_bindings={b}" for b in BINDINGS])


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TF_USE_LEGACY_KERAS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _level_2_midway(run_dir):
    """The latest checkpoint of level 2 is past its first step and before its last."""
    logdir = os.path.join(run_dir, "level_02", "train")
    if not os.path.exists(os.path.join(logdir, "checkpoint")):
        return False
    latest = tf.train.latest_checkpoint(logdir)
    return latest is not None and 4 < int(latest.rsplit("-", 1)[1]) < T


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_sigkill_inside_level_2_then_restart_matches_uninterrupted_run(tmp_path):
    ref = str(tmp_path / "ref")
    done = subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not _level_2_midway(killed):
        assert proc.poll() is None, "the run ended before level 2 was interrupted"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not os.path.exists(os.path.join(killed, "level_02", "metrics.json"))
    assert os.path.exists(os.path.join(killed, "level_01", "metrics.json"))

    again = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "levels 0..1 are finished" in again.stdout

    with open(os.path.join(killed, "level_02", "metrics.json")) as f:
        got = json.load(f)
    with open(os.path.join(ref, "level_02", "metrics.json")) as f:
        want = json.load(f)
    # Level 2 resumed inside the level (not from its start at step K = 4).
    assert got["resumed_from_step"] is not None and 4 < got["resumed_from_step"] < T
    assert want["resumed_from_step"] is None
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "density"):
        assert got[key] == want[key], key
    for level in (0, 1, 2):
        for name in ("mask.npz", "start.weights.npz", "solution.weights.npz"):
            a = _arrays(os.path.join(killed, f"level_{level:02d}", name))
            b = _arrays(os.path.join(ref, f"level_{level:02d}", name))
            assert sorted(a) == sorted(b)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{level} {name} {key}")
