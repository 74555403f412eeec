"""Shipped gin configs are found by name from any directory (includes too); a user's own
path wins; a non-editable install (a built wheel) carries the configs and the commands."""

import os
import shutil
import subprocess
import sys
import zipfile

import gin
import pytest

from rigl_tf.experiments import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shipped_config_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = os.path.join(ROOT, "configs", "mnist_lenet5", "rigl.gin")
    assert os.path.samefile(config_lib.resolve_config("mnist_lenet5/rigl.gin"), expected)
    assert os.path.samefile(config_lib.resolve_config("configs/mnist_lenet5/rigl.gin"),
                            expected)


def test_includes_resolve_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # set.gin includes rigl.gin, which includes base.gin ("data.dataset_name = 'imagenet2012'"
    # and "mask_updater.update_alg = 'rigl'" overridden by set.gin's 'set').
    config_lib.parse(["imagenet_vgg16/set.gin"])
    assert gin.query_parameter("data.dataset_name") == "imagenet2012"
    assert gin.query_parameter("mask_updater.update_alg") == "set"
    assert gin.query_parameter("mask_updater.update_freq") == 100


def test_users_own_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("mnist_lenet5")
    with open(os.path.join("mnist_lenet5", "rigl.gin"), "w") as f:
        f.write("include 'quickstart.gin'\ntraining.total_steps = 7\n")
    assert config_lib.resolve_config("mnist_lenet5/rigl.gin") == "mnist_lenet5/rigl.gin"
    config_lib.parse(["mnist_lenet5/rigl.gin"])  # its include is a shipped config
    assert gin.query_parameter("training.total_steps") == 7


def test_unknown_config_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'nope/rigl.gin' does not exist .*shipped"):
        config_lib.parse(["nope/rigl.gin"])


def _shipped():
    out = set()
    for d, _, names in os.walk(os.path.join(ROOT, "configs")):
        for n in names:
            if n.endswith(".gin"):
                out.add(os.path.relpath(os.path.join(d, n), ROOT).replace(os.sep, "/"))
    return out


@pytest.mark.slow
def test_wheel_installs_configs_and_commands_usable_from_any_directory(tmp_path):
    """Builds the wheel (a non-editable install's content), installs it into a fresh
    directory (--target) and runs an installed command and a config lookup from an empty
    directory, with the checkout out of the path."""
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Build from a copy of the tracked sources: an in-tree build/ directory left by an
    # earlier build would otherwise be reused.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(source / name), exist_ok=True)
            shutil.copy(os.path.join(ROOT, name), source / name)
    for name in ("setup.py", "README.md"):  # the working-tree versions under test
        shutil.copy(os.path.join(ROOT, name), source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
                   check=True, env=env, cwd=str(tmp_path), timeout=600,
                   capture_output=True)
    (wheel,) = list(wheels.glob("rigl_tf-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names
                            if n.endswith("entry_points.txt"))
    configs = {n[len("rigl_tf/"):] for n in names if n.startswith("rigl_tf/configs/")}
    assert configs == _shipped()
    commands = {n for n in names if n.startswith("rigl_tf/commands/")}
    assert {f"rigl_tf/commands/{m}.py" for m in ("gradient_flow", "hessian", "interpolate",
                                                 "similarity", "distances", "ticket_stats",
                                                 "plot_runs", "train")} <= commands
    assert not [n for n in names if n.startswith(("tools/", "tests/"))]
    for script in ("rigl-train", "rigl-lottery", "rigl-distances", "rigl-plot-runs"):
        assert f"{script} = " in entry_points or f"{script}=" in entry_points

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, env=env, timeout=600,
                   capture_output=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    run_env = {**env, "PYTHONPATH": str(site)}
    code = ("import rigl_tf.experiments.config as c, rigl_tf; "
            "print(rigl_tf.__file__); print(c.resolve_config('mnist_lenet5/rigl.gin'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(empty), env=run_env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    package_file, config_file = out.stdout.split()[-2:]
    assert package_file.startswith(str(site)) and config_file.startswith(str(site))
    script = site / "bin" / "rigl-distances"
    out = subprocess.run([str(script), "--help"], cwd=str(empty), env=run_env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "usage: rigl-distances" in out.stdout, out.stderr[-2000:]
