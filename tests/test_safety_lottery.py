"""rigl-lottery (issue 15): one process per IMP run directory, damaged run files named,
one-line command-line errors."""

import os
import subprocess
import sys

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
