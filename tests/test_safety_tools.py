"""Analysis commands (issue 15): results keyed by their inputs, output checks before any
computation, one writer per output directory, damaged event files."""

import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    return importlib.import_module(f"rigl_tf.commands.{name}")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    from rigl_tf.experiments import train

    path = str(tmp_path_factory.mktemp("safety_tools") / "run")
    train.run_experiment(
        [os.path.join(ROOT, "configs", "quickstart.gin")],
        ["training.total_steps = 20", "training.save_freq = 10", "training.log_freq = 10",
         # quickstart's RigL schedule (every 100 steps until 1500) does not fit 20 steps
         "mask_updater.update_freq = 10", "mask_updater.last_update_step = 20",
         "network.hidden_sizes = (16,)", "training.val_batch_size = 100",
         "training.max_train_eval_examples = 200"], logdir=path, seed=0, verbose=0)
    return path


def _run(capsys, tool, argv):
    assert _tool(tool).main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _cache_case(capsys, tool, first, second, result):
    """first -> computed; second (other inputs) -> recomputed, naming what changed;
    second again -> reused; first again -> recomputed (never the stale second result)."""
    out = _run(capsys, tool, first)
    assert "skipped" not in out
    a = json.load(open(result))
    out = _run(capsys, tool, second)
    assert "skipped" not in out and "computed for other inputs" in out, out
    b = json.load(open(result))
    assert a != b  # the new request's result, not the old file
    assert "skipped" in _run(capsys, tool, second)
    assert json.load(open(result)) == b
    assert "computed for other inputs" in _run(capsys, tool, first)
    assert json.load(open(result)) == a
    sidecars = [f for f in os.listdir(os.path.dirname(result)) if f.endswith(".inputs.json")]
    assert sidecars, os.listdir(os.path.dirname(result))
    with open(os.path.join(os.path.dirname(result), sidecars[0])) as f:
        recorded = json.load(f)
    assert set(recorded) == {"parameters", "inputs"} and recorded["inputs"]
    return out


def test_interpolate_other_end_is_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "i")
    base = ["--start", f"{logdir}:0", "--num_examples", "60", "--num_alphas", "3",
            "--out_dir", out]
    text = _cache_case(capsys, "interpolate", base + ["--end", logdir],
                       base + ["--end", f"{logdir}:10"],
                       os.path.join(out, "interpolation.json"))
    assert "--end" in text


def test_distances_other_checkpoints_are_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "d")
    _cache_case(capsys, "distances",
                ["--checkpoint", f"{logdir}:0", "--checkpoint", logdir, "--out_dir", out],
                ["--checkpoint", f"{logdir}:10", "--checkpoint", logdir, "--out_dir", out],
                os.path.join(out, "distances.json"))


def test_similarity_other_methods_are_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "sim.json")
    common = ["--reference", logdir, "--num_examples", "60", "--out", out]
    _cache_case(capsys, "similarity", ["--method", f"A={logdir}:10"] + common,
                ["--method", f"A={logdir}:0"] + common, out)


def test_gradient_flow_other_split_or_size_is_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "g")
    base = ["--logdir", f"R={logdir}", "--out_dir", out, "--steps", "0,20"]
    text = _cache_case(capsys, "gradient_flow", base + ["--num_examples", "40"],
                       base + ["--num_examples", "80", "--split", "test"],
                       os.path.join(out, "R.json"))
    assert "--split" in text or "--num_examples" in text


def test_ticket_stats_other_inputs_are_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "t")
    _cache_case(capsys, "ticket_stats", ["--rp", f"{logdir}:0", logdir, "--out_dir", out],
                ["--rp", f"{logdir}:0", logdir, "--p", "0.5", "--out_dir", out],
                os.path.join(out, "rp.json"))


def test_hessian_other_examples_are_recomputed(logdir, tmp_path, capsys):
    out = str(tmp_path / "h")
    base = ["--checkpoint", logdir, "--method", "slq", "--out_dir", out, "--num_probes", "1",
            "--num_steps", "5"]
    # (hessian's result name depends on the label; found after the first run)
    assert _tool("hessian").main(base + ["--num_examples", "30"]) == 0
    name = next(f for f in os.listdir(out) if f.endswith(".json") and
                not f.endswith(".inputs.json"))
    shutil.rmtree(out)
    capsys.readouterr()
    _cache_case(capsys, "hessian", base + ["--num_examples", "30"],
                base + ["--num_examples", "60"], os.path.join(out, name))


def test_input_files_changing_in_place_is_a_different_request(logdir, tmp_path, capsys):
    run = str(tmp_path / "copy")
    shutil.copytree(logdir, run)
    out = str(tmp_path / "p")
    argv = ["--logdir", run, "--tag", "gradient_flow/norm", "--out_dir", out]
    _run(capsys, "plot_runs", argv)
    assert "skipped" in _run(capsys, "plot_runs", argv)
    # The run continued (its files changed): the plot is redrawn, not reused.
    for name in os.listdir(run):
        if name.startswith("ckpt-20"):
            os.utime(os.path.join(run, name), ns=(1, 1))
    assert "computed for other inputs" in _run(capsys, "plot_runs", argv)


# --------------------------------------------------------------------------- output checks


def _err(capsys, code):
    assert code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_output_that_is_a_file_or_read_only_fails_before_computing(logdir, tmp_path, capsys,
                                                                     monkeypatch):
    from rigl_tf.analysis import interpolation

    calls = []
    monkeypatch.setattr(interpolation, "interpolate",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(
                            AssertionError("computed")))
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    argv = ["--start", f"{logdir}:0", "--end", logdir, "--num_examples", "20"]
    line = _err(capsys, _tool("interpolate").main(argv + ["--out_dir", str(a_file)]))
    assert "--out_dir" in line and "is a file" in line
    assert a_file.read_text() == "keep"
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        line = _err(capsys, _tool("interpolate").main(argv + ["--out_dir", str(ro)]))
        assert "cannot write" in line
    # similarity --out naming a directory with other files: refused, nothing removed.
    d = tmp_path / "results"
    d.mkdir()
    (d / "mine.txt").write_text("mine")
    line = _err(capsys, _tool("similarity").main(
        ["--method", f"A={logdir}:0,{logdir}", "--out", str(d), "--overwrite"]))
    assert "--out" in line and "is a directory" in line
    assert (d / "mine.txt").read_text() == "mine"
    assert not calls


_HOLDER = """
import sys, time
from rigl_tf import locking
with locking.exclusive(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_output_directory_held_by_another_process_is_refused(logdir, tmp_path, capsys):
    out = str(tmp_path / "busy")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, out], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = _tool("distances").main(["--checkpoint", f"{logdir}:0", "--checkpoint", logdir,
                                        "--out_dir", out])
        err = capsys.readouterr().err
        assert code != 0 and f"process {holder.pid}" in err, err
        assert sorted(os.listdir(out)) == [".rigl_tf.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_plot_runs_uses_the_intact_records_of_a_truncated_event_file(logdir, tmp_path, capsys):
    run = str(tmp_path / "copy")
    shutil.copytree(logdir, run)
    events = sorted(os.path.join(run, "summaries", f)
                    for f in os.listdir(os.path.join(run, "summaries")))
    from rigl_tf.experiments import runs

    full = runs.read_scalars(run)["gradient_flow/norm"]
    with open(events[-1], "r+b") as f:
        f.truncate(os.path.getsize(events[-1]) - 7)  # the last record loses its tail
    capsys.readouterr()
    damaged = runs.read_scalars(run)
    err = capsys.readouterr().err
    assert f"event file {events[-1]!r} is damaged" in err
    steps, _ = damaged["gradient_flow/norm"]
    assert list(steps) == list(full[0])[:len(steps)] and len(steps) >= len(full[0]) - 1
    out = str(tmp_path / "p")
    assert _tool("plot_runs").main(["--logdir", run, "--tag", "gradient_flow/norm",
                                    "--out_dir", out]) == 0
