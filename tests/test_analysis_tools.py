"""End-to-end tests of the analysis commands (rigl_tf/commands/*.py) on one tiny logdir.

One rigl-train run (quickstart MLP shrunk to 64-16-10, 20 steps, checkpoints every 10
steps and around the mask update at step 10) is made once per session with the
in-process `run_experiment`; every tool's `main(argv)` runs in-process on it.
"""

import importlib
import json
import os

import numpy as np
import pytest

from rigl_tf.analysis import evaluate
from rigl_tf.experiments import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    return importlib.import_module(f"rigl_tf.commands.{name}")


@pytest.fixture(scope="session")
def logdir(tmp_path_factory):
    from rigl_tf.experiments import train

    path = str(tmp_path_factory.mktemp("tools") / "run")
    train.run_experiment(
        [os.path.join(ROOT, "configs", "quickstart.gin")],
        ["training.total_steps = 20", "training.save_freq = 10", "training.log_freq = 10",
         "training.checkpoint_mask_updates = True", "mask_updater.update_freq = 10",
         # quickstart's cosine drop fraction ends at step 1500, past this run (refused):
         # a constant fraction with updates until the end instead.
         "mask_updater.schedule_alg = 'constant'", "mask_updater.last_update_step = -1",
         "training.val_batch_size = 100", "network.hidden_sizes = (16,)",
         "training.max_train_eval_examples = 200"],
        logdir=path, seed=0, verbose=0)
    return path


def _files(directory):
    out = []
    for root, _, names in os.walk(directory):
        out.extend(os.path.join(root, n) for n in names)
    return sorted(out)


def _error(capsys, code):
    assert code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_runs_helper(logdir):
    run = runs.load_run(logdir)
    assert run.steps == [0, 10, 20]
    # Reference convention: updates right after steps update_freq, 2 * update_freq, ...
    # (10 and 20 of this 20-step run, which updates until its end).
    assert run.mask_update_steps() == [10, 20]
    _, prefix, label = runs.parse_checkpoint(f"{logdir}/mask_updates/before/ckpt-10")
    assert prefix.endswith("before/ckpt-10") and "before" in label
    _, prefix, _ = runs.parse_checkpoint(logdir)
    assert prefix == os.path.join(logdir, "ckpt-20")
    with pytest.raises(runs.ToolError, match="step 30"):
        runs.parse_checkpoint(f"{logdir}:30")
    scalars = runs.read_scalars(logdir)
    assert "gradient_flow/norm" in scalars
    steps, values = scalars["gradient_flow/norm"]
    assert list(steps[-2:]) == [10, 20] and np.all(np.diff(steps) > 0)
    assert np.all(np.isfinite(values))


def test_gradient_flow(logdir, tmp_path, capsys):
    tool = _tool("gradient_flow")
    out = str(tmp_path / "gf")
    argv = ["--logdir", f"A={logdir}", "--logdir", f"B={logdir}", "--num_examples", "50",
            "--out_dir", out]
    assert tool.main(argv) == 0
    result = json.load(open(os.path.join(out, "A.json")))
    assert set(tool.KEYS) <= set(result)
    assert result["steps"] == [0, 10, 20] and len(result["norm"]) == 3
    assert set(result["per_variable"]) >= {"dense/kernel", "dense_1/kernel"}
    update = result["mask_updates"][0]
    assert update["step"] == 10
    assert update["change"] == pytest.approx(update["after"] - update["before"])
    assert os.path.exists(os.path.join(out, "gradient_flow.png"))
    before = os.path.getmtime(os.path.join(out, "A.json"))
    capsys.readouterr()
    assert tool.main(argv) == 0  # rerun: skipped
    assert "skipped" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "A.json")) == before
    with open(os.path.join(out, "B.json"), "w") as f:
        f.write("{not json")
    files = _files(out)
    line = _error(capsys, tool.main(argv))
    assert "--out_dir" in line and "B.json" in line and "not valid JSON" in line
    assert _files(out) == files


def test_gradient_flow_bad_input(logdir, tmp_path, capsys):
    tool = _tool("gradient_flow")
    out = str(tmp_path / "gf")
    line = _error(capsys, tool.main(["--logdir", str(tmp_path / "missing"), "--out_dir", out]))
    assert "--logdir" in line and "missing" in line
    assert not os.path.exists(out)
    line = _error(capsys, tool.main(["--logdir", logdir, "--out_dir", out, "--steps", "5"]))
    assert "--steps" in line and "step 5" in line
    assert not os.path.exists(out)
    line = _error(capsys, tool.main(["--logdir", logdir, "--out_dir", out, "--bogus", "1"]))
    assert "--bogus" in line
    line = _error(capsys, tool.main(["--logdir", logdir, "--out_dir", out, "--split", "val"]))
    assert "--split" in line and "'val'" in line


@pytest.mark.slow
def test_hessian(logdir, tmp_path, capsys):
    tool = _tool("hessian")
    out = str(tmp_path / "h")
    argv = ["--mask_update", logdir, "--checkpoint", f"init={logdir}:0", "--num_examples",
            "40", "--chunk_size", "256", "--out_dir", out]
    assert tool.main(argv) == 0
    run = runs.load_run(logdir)
    for stem in ("init", "run_before_10", "run_after_10"):
        eigs = np.load(os.path.join(out, f"{stem}.eigvals.npy"), allow_pickle=False)
        summary = json.load(open(os.path.join(out, f"{stem}.json")))
        assert set(tool.SUMMARY_KEYS) <= set(summary)
        assert eigs.shape == (summary["num_params"],)
        assert summary["max_eigenvalue"] == pytest.approx(eigs.max())
        assert summary["num_negative"] == int(np.sum(eigs < 0))
    run.restore(run.prefix(0))
    active = sum(int(np.sum(m)) if m is not None else int(np.prod(v.shape))
                 for m, v in zip(run.masks(), run.model.trainable_variables))
    assert summary["num_params"] == active  # sparse spectrum: active weights only
    assert os.path.exists(os.path.join(out, "spectral_density.png"))
    capsys.readouterr()
    assert tool.main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 3
    with open(os.path.join(out, "init.eigvals.npy"), "wb") as f:
        f.write(b"garbage")
    files = _files(out)
    line = _error(capsys, tool.main(argv))
    assert "--out_dir" in line and "init.eigvals.npy" in line and ".npy" in line
    assert _files(out) == files


@pytest.mark.slow
def test_hessian_trajectory_over_the_whole_training_set(logdir, tmp_path, capsys):
    """--trajectory (Fig. 11a) with --num_examples 0: every training example, every step."""
    from rigl_tf.analysis.hessian import hessian

    tool = _tool("hessian")
    out = str(tmp_path / "t")
    argv = ["--trajectory", f"rigl={logdir}", "--steps", "0,20", "--num_examples", "0",
            "--batch_size", "500", "--out_dir", out]
    assert tool.main(argv) == 0
    table = json.load(open(os.path.join(out, "trajectory.json")))
    assert table["rigl"]["steps"] == [0, 20]
    assert os.path.exists(os.path.join(out, "negative_eigenvalue.png"))
    run = runs.load_run(logdir)
    x, y = tool._arrays(run.data("train", 0))
    run.restore(run.prefix(20))
    # The independent check uses the generic product method on all examples at once.
    matrix, _ = hessian(run.model, (x, y), run.masks(), method="forward_over_reverse",
                        batch_size=len(x))
    lowest = np.linalg.eigvalsh(matrix)[0]
    assert table["rigl"]["min_eigenvalue"][1] == pytest.approx(lowest, abs=1e-6)
    assert table["rigl"]["abs_min_negative_eigenvalue"][1] == pytest.approx(max(-lowest, 0),
                                                                             abs=1e-6)
    summary = json.load(open(os.path.join(out, "rigl_step_20.json")))
    assert summary["num_examples"] == 0 and summary["method_used"] == "split"
    assert not [f for f in os.listdir(os.path.join(out, "jobs")) if f.endswith(".partial.npz")]


def test_hessian_slq_and_errors(logdir, tmp_path, capsys):
    tool = _tool("hessian")
    out = str(tmp_path / "h")
    assert tool.main(["--checkpoint", logdir, "--method", "slq", "--num_examples", "40",
                      "--num_probes", "2", "--num_steps", "8", "--out_dir", out]) == 0
    density = np.load(os.path.join(out, "run_20.slq.npy"), allow_pickle=False)
    assert density.shape[0] == 2 and np.all(density[1] >= 0)
    line = _error(capsys, tool.main(["--checkpoint", f"{logdir}:7", "--out_dir", out + "2"]))
    assert "--checkpoint" in line and "step 7" in line
    assert not os.path.exists(out + "2")
    line = _error(capsys, tool.main(["--checkpoint", logdir, "--method", "lanczos",
                                     "--out_dir", out]))
    assert "--method" in line and "lanczos" in line


def test_interpolate_endpoints(logdir, tmp_path, capsys):
    tool = _tool("interpolate")
    out = str(tmp_path / "i")
    argv = ["--start", f"{logdir}:0", "--end", logdir, "--num_examples", "100",
            "--out_dir", out]
    assert tool.main(argv) == 0
    result = json.load(open(os.path.join(out, "interpolation.json")))
    assert {"alphas", "loss", "accuracy", "error", "barrier", "start", "end"} <= set(result)
    alphas = np.array(result["alphas"])
    assert len(alphas) == 29 and alphas[0] == pytest.approx(-0.2)
    assert alphas[-1] == pytest.approx(1.2)
    run = runs.load_run(logdir)
    data = run.data("test", 100, 0)
    for alpha, step in ((0.0, 0), (1.0, 20)):
        run.restore(run.prefix(step))
        expected = evaluate(run.model, data)
        i = int(np.flatnonzero(np.isclose(alphas, alpha))[0])
        assert result["loss"][i] == pytest.approx(expected["loss"], rel=1e-5)
        assert result["accuracy"][i] == pytest.approx(expected["accuracy"])
    assert result["barrier"]["error"] >= 0
    assert os.path.exists(os.path.join(out, "interpolation.png"))
    capsys.readouterr()
    assert tool.main(argv) == 0
    assert "skipped" in capsys.readouterr().out
    line = _error(capsys, tool.main(["--start", logdir, "--out_dir", out + "x"]))
    assert "--start/--end" in line
    assert not os.path.exists(out + "x")


def test_interpolate_modes(logdir, tmp_path):
    tool = _tool("interpolate")
    out = str(tmp_path / "i")
    common = ["--num_examples", "50", "--out_dir", out]
    assert tool.main(["--pairwise", f"{logdir}:0", f"{logdir}:10", logdir] + common) == 0
    pairwise = json.load(open(os.path.join(out, "pairwise.json")))
    error = np.array(pairwise["error"])
    assert error.shape == (3, 3) and np.all(np.diag(error) == 0)
    np.testing.assert_allclose(error, error.T)
    assert os.path.exists(os.path.join(out, "pairwise.png"))
    assert tool.main(["--plane", f"{logdir}:0", f"{logdir}:10", logdir, "--grid", "3"]
                     + common) == 0
    plane = json.load(open(os.path.join(out, "plane.json")))
    assert np.array(plane["error"]).shape == (3, 3) and len(plane["points"]) == 3
    assert tool.main(["--instability", f"a={logdir}", f"b={logdir}"] + common) == 0
    inst = json.load(open(os.path.join(out, "instability.json")))
    assert inst["instability"] == pytest.approx(0.0, abs=1e-12)  # same run: no barrier


def test_similarity(logdir, tmp_path, capsys):
    tool = _tool("similarity")
    out = str(tmp_path / "sim.json")
    argv = ["--method", f"Late={logdir}:10,{logdir}", "--method", f"Early={logdir}:0,{logdir}:10",
            "--reference", logdir, "--num_examples", "100", "--out", out]
    assert tool.main(argv) == 0
    result = json.load(open(out))
    assert [r["method"] for r in result["rows"]] == ["Late", "Early"]
    for row in result["rows"]:
        assert {"accuracy", "ensemble_accuracy", "disagreement", "kl", "jsd"} <= set(row)
        assert row["num_models"] == 2
    printed = capsys.readouterr().out
    assert "Ensemble acc." in printed and "Late" in printed
    line = _error(capsys, tool.main(["--method", "X=" + logdir, "--out", out + "2"]))
    assert "--method" in line and "at least 2" in line
    assert not os.path.exists(out + "2")


def test_distances(logdir, tmp_path, capsys):
    tool = _tool("distances")
    out = str(tmp_path / "d")
    assert tool.main(["--checkpoint", f"{logdir}:0", "--checkpoint", f"{logdir}:10",
                      "--checkpoint", logdir, "--out_dir", out]) == 0
    result = json.load(open(os.path.join(out, "distances.json")))
    for metric in ("l2", "cosine", "angular"):
        matrix = np.load(os.path.join(out, f"distances_{metric}.npy"), allow_pickle=False)
        np.testing.assert_allclose(matrix, np.array(result[metric]))
        assert matrix.shape == (3, 3) and np.all(np.diag(matrix) == 0)
        assert os.path.exists(os.path.join(out, f"mds_{metric}.png"))
    line = _error(capsys, tool.main(["--checkpoint", logdir, "--checkpoint", logdir,
                                     "--metrics", "l1", "--out_dir", out]))
    assert "--metrics" in line and "l1" in line


def test_ticket_stats(logdir, tmp_path, capsys):
    tool = _tool("ticket_stats")
    out = str(tmp_path / "t")
    assert tool.main(["--rp", f"{logdir}:0", logdir, "--out_dir", out]) == 0
    rp = json.load(open(os.path.join(out, "rp.json")))
    assert 0 <= rp["total"] <= 1 and set(rp["per_layer"]) == {"dense/kernel", "dense_1/kernel"}
    assert tool.main(["--rp", f"{logdir}:0", f"{logdir}:0", "--out_dir", out, "--name",
                      "self"]) == 0
    assert json.load(open(os.path.join(out, "self.json")))["total"] == pytest.approx(1.0)
    # IMP-style level directories (mask.npz + solution.weights.npz) mix with checkpoints.
    run = runs.load_run(logdir)
    levels = []
    for i, step in enumerate((0, 10, 20)):
        run.restore(run.prefix(step))
        level = tmp_path / f"level_{i:02d}"
        level.mkdir()
        masks = {k: m for k, m in zip(run.names(), run.masks()) if m is not None}
        np.savez(level / "mask.npz", **masks)
        np.savez(level / "solution.weights.npz",
                 **{v.path: v.numpy() for v in run.model.weights})
        levels.append(str(level))
    assert tool.main(["--overlap", levels[0], f"{logdir}:0", "--out_dir", out]) == 0
    overlap = json.load(open(os.path.join(out, "overlap.json")))
    assert overlap["total"]["jaccard"] == pytest.approx(1.0)
    assert tool.main(["--evolution"] + levels + ["--out_dir", out]) == 0
    evo = json.load(open(os.path.join(out, "evolution.json")))
    assert len(evo["sign_flips"]) == 2 and len(evo["sparsity"]["total"]) == 3
    assert evo["sparsity"]["total"][0] == pytest.approx(0.9, abs=0.01)
    assert os.path.exists(os.path.join(out, "evolution.png"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    line = _error(capsys, tool.main(["--rp", str(bad), logdir, "--out_dir", out, "--name",
                                     "bad"]))
    assert "--rp" in line and "bad.npz" in line
    assert not os.path.exists(os.path.join(out, "bad.json"))


def test_plot_runs(logdir, tmp_path, capsys):
    tool = _tool("plot_runs")
    assert tool.main(["--logdir", logdir, "--list_tags"]) == 0
    assert "gradient_flow/norm" in capsys.readouterr().out
    out = str(tmp_path / "p")
    assert tool.main(["--logdir", f"A={logdir}", "--tag", "gradient_flow/norm",
                      "--out_dir", out]) == 0
    data = json.load(open(os.path.join(out, "gradient_flow__norm.json")))
    assert data["runs"]["A"]["steps"][-2:] == [10, 20]
    assert os.path.exists(os.path.join(out, "gradient_flow__norm.png"))
    line = _error(capsys, tool.main(["--logdir", logdir, "--tag", "nope", "--out_dir",
                                     out + "x"]))
    assert "--tag" in line and "'nope'" in line
    assert not os.path.exists(out + "x")


def test_progress_lines_with_eta(logdir, tmp_path, capsys):
    """--progress=lines: a status line on stderr, the last one for all evaluated points."""
    tool = _tool("interpolate")
    argv = ["--start", f"{logdir}:0", "--end", logdir, "--num_alphas", "3",
            "--num_examples", "50", "--out_dir", str(tmp_path), "--progress", "lines"]
    assert tool.main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines()
             if ln.startswith("interpolate ")]
    # alphas: linspace(-0.2, 1.2, 3) plus 0 and 1 -> 5 points.
    assert lines[0].startswith("interpolate 1/5 20% ") and "ETA" in lines[0]
    assert lines[-1].startswith("interpolate 5/5 100% ")
    assert tool.main(argv[:-2] + ["--overwrite", "--progress", "off"]) == 0
    assert "interpolate 1/5" not in capsys.readouterr().err
