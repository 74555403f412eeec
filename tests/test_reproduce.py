"""rigl-reproduce: claim rules and tables on hand-made numbers, the plan, the cache, flags.

Expected values are worked out by hand in each test (not read from the code under test).
The end-to-end run of ``--budget=quick`` is the slow test at the bottom.
"""

import json
import os
import re

import pytest

from rigl_tf.reproduce import report as rp
from rigl_tf.reproduce import study


def _curve(norms, step=100):
    return {"steps": [i * step for i in range(len(norms))], "norm": list(norms)}


def _sim_row(method, acc, ens, dis, kl, jsd=0.01, n=2):
    return {"method": method, "num_models": n, "accuracy": [acc, 0.0],
            "ensemble_accuracy": [ens, 0.0], "disagreement": [dis, 0.0], "kl": [kl, 0.0],
            "jsd": [jsd, 0.0]}


def _model():
    """A model's results where every claim of the paper holds (numbers chosen by hand)."""
    return {
        "accuracy": {"95": {rp.PRUNING: [0.90], rp.LOTTERY: [0.89, 0.91],
                            rp.SCRATCH: [0.85, 0.87], rp.SCRATCH_PLUS: [0.88],
                            rp.RIGL: [0.89], rp.SET: [0.87]},
                     "98": {rp.SCRATCH: [0.80], rp.SCRATCH_PLUS: [0.82]}},
        "gradflow": {rp.SCRATCH: _curve([1.0, 0.5, 0.3]),
                     rp.SCRATCH_PLUS: _curve([4.0, 0.6, 0.4]),
                     rp.LOTTERY: _curve([1.1, 0.4, 0.2]),
                     rp.RIGL: _curve([1.0, 0.9, 0.7])},
        "mask_updates": {
            rp.RIGL: [{"step": 25, "before": 1.0, "after": 2.0},
                      {"step": 50, "before": 1.0, "after": 3.0},
                      {"step": 75, "before": 1.0, "after": 0.5}],
            rp.SET: [{"step": 25, "before": 1.0, "after": 1.1},
                     {"step": 50, "before": 1.0, "after": 0.9}]},
        "hessian": {rp.RIGL: {"step": 50, "method": "exact", "num_params": 10,
                              "num_examples": 8,
                              "before": {"max_eigenvalue": 5.0, "min_eigenvalue": -0.1,
                                         "num_negative": 1},
                              "after": {"max_eigenvalue": 6.0, "min_eigenvalue": -0.4,
                                        "num_negative": 3}}},
        "distances": {"to_prune": {rp.LOTTERY: [1.0, 2.0], rp.SCRATCH: [9.0, 11.0]},
                      "init_to_prune": {rp.LOTTERY: [5.0, 5.0], rp.SCRATCH: [7.0, 7.0]}},
        "barriers": {rp.LOTTERY: [{"error": 0.01, "loss": 0.02}],
                     rp.SCRATCH: [{"error": 0.30, "loss": 0.9}]},
        "similarity": {"reference_accuracy": 0.90, "rows": [
            _sim_row(rp.LOTTERY, 0.89, 0.905, 0.03, 0.01),
            _sim_row(rp.SCRATCH, 0.86, 0.91, 0.08, 0.07),
            _sim_row(rp.RESTART, 0.90, 0.90, 0.01, 0.005, n=1),
            _sim_row(rp.DIFF_PRUNED, 0.88, 0.92, 0.06, 0.05)]},
        "ensembles": {"rows": [_sim_row(rp.LOTTERY, 0.90, 0.905, 0.02, 0.01)]},
    }


def _verdicts(model):
    return {c["id"]: c["verdict"] for c in rp.evaluate_claims(model)}


def test_every_claim_holds_on_numbers_that_satisfy_it():
    verdicts = _verdicts(_model())
    assert set(verdicts) == {c[0] for c in rp.CLAIMS} == set(rp.CLAIM_RUNS)
    assert all(v == rp.HOLDS for v in verdicts.values()), verdicts


def test_claims_fail_when_the_numbers_say_otherwise():
    m = _model()
    m["gradflow"][rp.SCRATCH_PLUS] = _curve([0.5, 0.6, 0.4])          # 0.5 < 1.0
    m["accuracy"]["95"][rp.LOTTERY] = [0.80]                            # 0.80 < 0.86 mean
    m["distances"]["to_prune"][rp.LOTTERY] = [12.0]                     # 12 > 10
    m["barriers"][rp.LOTTERY] = [{"error": 0.5, "loss": 1.0}]           # 0.5 > 0.3
    # 1 of 3 updates raises the norm (33% <= 50%) even though the mean change is +1/3.
    m["mask_updates"][rp.RIGL] = [{"step": 25, "before": 1.0, "after": 3.0},
                                  {"step": 50, "before": 1.0, "after": 0.5},
                                  {"step": 75, "before": 1.0, "after": 0.5}]
    # KL of LT above scratch while disagreement stays below: both are required.
    m["similarity"]["rows"][0] = _sim_row(rp.LOTTERY, 0.89, 0.905, 0.03, 0.2)
    v = _verdicts(m)
    for cid in ("sparse_init_gradflow", "lt_accuracy", "lt_close_l2", "lt_low_barrier",
                "rigl_updates_increase", "lt_close_function"):
        assert v[cid] == rp.FAILS, cid
    # LT 1.1 is now closer to Scratch+ 0.5? |log(1.1/1.0)|=0.095 < |log(1.1/0.5)|=0.79: holds.
    assert v["lt_no_gradflow"] == rp.HOLDS


def test_a_tie_does_not_hold():
    m = _model()
    m["distances"]["to_prune"][rp.LOTTERY] = [10.0]  # scratch: mean of 9 and 11 = 10
    m["accuracy"]["95"][rp.RIGL] = [0.86]            # scratch: mean of 0.85 and 0.87
    v = _verdicts(m)
    assert v["lt_close_l2"] == rp.FAILS and v["dst_accuracy"] == rp.FAILS


def test_accuracy_margin_within_seed_noise_is_flagged_not_flipped():
    m = _model()
    # 95%: Lottery [0.89, 0.91] and Scratch [0.85, 0.87] both have population std 0.01, so
    # the seed noise is 1.00 point. RigL 0.89 vs Scratch mean 0.86: margin 3 points > 1.
    claims = {c["id"]: c for c in rp.evaluate_claims(m)}
    assert claims["dst_accuracy"]["caveat"] is None
    m["accuracy"]["95"][rp.RIGL] = [0.865]        # margin 0.5 point <= 1 point
    m["accuracy"]["95"][rp.SCRATCH_PLUS] = [0.855]  # margin -0.5 point: fails, also noise
    claims = {c["id"]: c for c in rp.evaluate_claims(m)}
    dst, init = claims["dst_accuracy"], claims["sparse_init_accuracy"]
    assert (dst["verdict"], dst["caveat"]) == (rp.HOLDS, rp.WITHIN_NOISE)
    assert "margin +0.50 points, seed std 1.00 points" in dst["numbers"]
    assert (init["verdict"], init["caveat"]) == (rp.FAILS, rp.WITHIN_NOISE)
    # 98%: one run per method, so no seed noise is known and no caveat is given.
    assert claims["sparse_init_accuracy_98"]["caveat"] is None
    assert "seed std" not in claims["sparse_init_accuracy_98"]["numbers"]
    text = rp.claims_md({"models": {"mlp": m}})
    assert "- **HOLDS** (within seed noise) [MLP (300-100)] `dst_accuracy`:" in text
    assert "- **HOLDS** [MLP (300-100)] `lt_accuracy`:" in text


def test_runs_at_chance_accuracy_are_flagged_in_table_and_claims():
    m = _model()
    # RigL ended at 10.00% (chance for 10 classes: it never trained); the rule still
    # compares 0.10 with Scratch's 0.86 and fails, and says why.
    m["accuracy"]["95"][rp.RIGL] = [0.10]
    # One of two Scratch runs at 10.5% (within a point of chance), the other at 87%.
    m["accuracy"]["95"][rp.SCRATCH] = [0.105, 0.87]
    m["accuracy"]["95"][rp.SET] = [0.12]  # 12%: above chance + 1 point, not flagged
    claims = {c["id"]: c for c in rp.evaluate_claims(m)}
    dst = claims["dst_accuracy"]
    assert dst["verdict"] == rp.FAILS and rp.AT_CHANCE in dst["caveat"]
    assert "runs at chance accuracy: RigL 1 of 1, Scratch 1 of 2" in dst["numbers"]
    # The seed noise leaves dead runs out: Lottery's 1.00 point, not Scratch's 38.25.
    assert "margin -38.75 points, seed std 1.00 points" in dst["numbers"]
    assert rp.AT_CHANCE in claims["lt_accuracy"]["caveat"]  # Scratch is compared there
    # Non-accuracy claims that read a dead run say so too: RigL's mask updates, Hessian.
    for cid in ("rigl_updates_increase", "hessian_rigl", "lt_low_barrier"):
        assert rp.AT_CHANCE in claims[cid]["caveat"], cid
    assert "runs at chance accuracy: RigL 1 of 1" in claims["hessian_rigl"]["numbers"]
    for cid in ("sparse_init_accuracy_98", "lt_not_novel", "lt_ensemble"):
        assert claims[cid]["caveat"] is None, cid
    table = rp.accuracy_table({"models": {"lenet5": m}})
    assert "| RigL | 10.00 †1 | n/f |" in table
    # Scratch: mean of 10.5 and 87 = 48.75, population std 38.25 points, one dead run.
    assert "| Scratch | 48.75 ± 38.25 (n=2) †1 | n/f |" in table
    assert "| SET | 12.00 | n/f |" in table
    text = rp.render_report({"meta": {}, "models": {"lenet5": m}})
    assert "- **DOES NOT HOLD** (a run at chance accuracy) [LeNet5] `dst_accuracy`:" in text


def test_lt_gradflow_rule_uses_log_ratios():
    m = _model()
    m["gradflow"][rp.LOTTERY] = _curve([3.0, 0.1])  # |log 3| = 1.10 > |log 0.75| = 0.29
    assert _verdicts(m)["lt_no_gradflow"] == rp.FAILS


def test_ensemble_gain_is_ensemble_minus_better_member():
    m = _model()
    # LT: 0.905 - max(0.90, 0.89) = 0.005; different pruned: 0.92 - max(0.90, 0.88) = 0.02.
    assert rp.ensemble_gain(m, rp.LOTTERY) == pytest.approx(0.005)
    assert rp.ensemble_gain(m, rp.DIFF_PRUNED) == pytest.approx(0.02)
    m["similarity"]["rows"][3] = _sim_row(rp.DIFF_PRUNED, 0.88, 0.901, 0.06, 0.05)  # 0.001
    assert _verdicts(m)["lt_ensemble"] == rp.FAILS


def test_missing_inputs_are_not_measured_not_guessed():
    v = _verdicts({"accuracy": {}})
    assert set(v.values()) == {rp.MISSING}


def test_accuracy_table_cells():
    results = {"models": {"lenet5": _model()}}
    table = rp.accuracy_table(results)
    # Lottery [0.89, 0.91]: mean 90.00 %, population std 1.00 points, two runs.
    assert "| Lottery | 90.00 ± 1.00 (n=2) | n/f |" in table
    # Scratch+ at 98%: one run, 0.82 -> 82.00, no std.
    assert re.search(r"\| Scratch\+ \| 88\.00 \| n/f \| 82\.00 \| n/f \|", table)
    assert "Small dense" not in table  # rows without any number are left out


def test_report_has_every_table_and_a_claim_line_per_claim_and_model():
    results = {"meta": {"budget": "quick"},
               "models": {"lenet5": _model(), "mlp": _model()}}
    text = rp.render_report(results, figures=["lenet5_mds.png"])
    for title in rp.TABLE_TITLES:
        assert f"## {title}" in text
    for cid, *_ in rp.CLAIMS:
        for model in ("LeNet5", "MLP (300-100)"):
            assert re.search(rf"^- \*\*HOLDS\*\* \[{re.escape(model)}\] `{cid}`: .*\d",
                             text, re.M), (cid, model)
    assert "![lenet5_mds.png](lenet5_mds.png)" in text
    # Hessian row: λmax 5 -> 6 and λmin -0.1 -> -0.4 as given.
    assert "5.0000 → 6.0000" in text and "-0.1000 → -0.4000" in text


def test_plan_gives_scratch_a_seed_other_than_the_pruning_run():
    runs = study.plan_runs(study.QUICK)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    by = {r.name: r for r in runs}
    # 95%: 3 pruning runs, 2 lottery, 2 scratch, Scratch+, restart, 3 DST x 2 inits, small
    # dense = 16; 98%: 1 pruning, 1 lottery, 1 scratch, Scratch+, 2 DST x 2, small dense = 9.
    assert sum(r.sparsity == "95" for r in runs) == 16
    assert sum(r.sparsity == "98" for r in runs) == 9
    for r in runs:
        if r.method in (rp.LOTTERY, rp.SCRATCH, rp.SCRATCH_PLUS, rp.RESTART):
            assert r.seed >= 1 and r.depends
            parent = by[r.depends[0]]
            assert parent.seed == 0 and parent.sparsity == r.sparsity
            assert names.index(parent.name) < names.index(r.name)
    assert "PRUNE_INIT = '@prune_s0:0'" in by["lottery_s1"].bindings
    assert "PRUNE_INIT = '@prune_s0'" in by["prune_restart_s1"].bindings
    assert "network.weight_init_method = 'unit_scaled'" in by["rigl_plus_s1"].bindings
    assert "TARGET_SPARSITY = 0.98" in by["scratch98_s1"].bindings
    assert "TARGET_SPARSITY = 0.95" in by["scratch_s1"].bindings
    assert "network.small_dense_density = 0.02" in by["small_dense98_s1"].bindings
    assert "network.small_dense_density = 0.05" in by["small_dense_s1"].bindings


def test_bindings_resolve_run_references(tmp_path):
    s = study.Study(str(tmp_path), "fashion_mnist_idx", "quick", ["mlp"])
    b = s.bindings("mlp", next(r for r in s.runs if r.name == "lottery_s1"))
    root = os.path.join(str(tmp_path), "runs", "quick", "mlp")
    assert f"PRUNE_INIT = '{root}/prune_s0:0'" in b
    assert f"PRUNE_LOGDIR = '{root}/prune_s0'" in b
    assert "training.total_steps = 300" in b


def test_cache_reuses_only_for_the_same_key(tmp_path):
    path = str(tmp_path / "c.json")
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert study.cached(path, "k1", compute) == ({"n": 1}, True)
    assert study.cached(path, "k1", compute) == ({"n": 1}, False)
    assert study.cached(path, "k2", compute) == ({"n": 2}, True)
    with open(path, "w") as f:
        f.write("{corrupt")
    assert study.cached(path, "k2", compute) == ({"n": 3}, True)


def test_cache_key_changes_with_a_checkpoint_file(tmp_path):
    prefix = str(tmp_path / "ckpt-5")
    with open(prefix + ".index", "w") as f:
        f.write("a")
    k1 = study.cache_key({"x": 1}, [prefix])
    assert study.cache_key({"x": 1}, [prefix]) == k1
    assert study.cache_key({"x": 2}, [prefix]) != k1
    with open(prefix + ".index", "w") as f:
        f.write("bb")  # size changes
    assert study.cache_key({"x": 1}, [prefix]) != k1


def test_progress_lines_count_stages_and_estimate_from_worked_steps():
    lines = []
    p = study.Progress(3, log=lambda text, **kw: lines.append(text))
    p.step("a", lambda: (1, False))
    p.timed.append(10.0)  # as if stage b had taken 10 s
    p.step("b", lambda: (2, False))
    # Third line: 1 stage left (itself), mean 10 s -> ETA 0:00:10.
    p.step("c", lambda: (3, False))
    assert lines[0].startswith("[1/3] a") and "ETA unknown" in lines[0]
    assert lines[2].startswith("[3/3] c") and "ETA 0:00:10" in lines[2]


@pytest.mark.parametrize("argv, needle", [
    (["--out_dir", "X", "--budget", "medium"], "--budget: got 'medium'"),
    (["--out_dir", "X", "--dataset", "cifar10"], "--dataset: got 'cifar10'"),
    (["--out_dir", "X", "--models", "lenet5,vgg"], "--models: got 'lenet5,vgg'"),
    (["--budget", "quick"], "--out_dir"),
    (["--out_dir", "X", "--jobs", "0"], "--jobs: got 0"),
])
def test_bad_flags_one_sentence_exit_2(tmp_path, capsys, argv, needle):
    from rigl_tf.commands import reproduce

    argv = [a.replace("X", str(tmp_path / "out")) for a in argv]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not os.path.exists(tmp_path / "out")  # nothing written


def test_out_dir_that_is_a_file_is_refused(tmp_path, capsys):
    from rigl_tf.commands import reproduce

    f = tmp_path / "file"
    f.write_text("keep")
    assert reproduce.main(["--out_dir", str(f)]) == 2
    assert "--out_dir" in capsys.readouterr().err
    assert f.read_text() == "keep"


def test_unavailable_dataset_is_refused_before_any_write(tmp_path, capsys):
    from rigl_tf.commands import reproduce
    from rigl_tf.experiments import datasets

    try:
        datasets.get_dataset("mnist", "test", 1, prefetch=False)
        pytest.skip("tfds mnist is available here")
    except FileNotFoundError:
        pass
    out = tmp_path / "out"
    assert reproduce.main(["--out_dir", str(out), "--dataset", "mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --dataset: 'mnist' cannot be read")
    assert not out.exists()


def test_help_lists_the_flags_without_importing_tensorflow():
    import subprocess
    import sys

    code = ("import sys; sys.argv[0] = 'rigl-reproduce'\n"
            "from rigl_tf.commands.reproduce import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().endswith("NO-TF"), proc.stdout[-500:] + proc.stderr[-500:]
    for flag in ("--out_dir", "--dataset", "--budget", "--models", "--jobs"):
        assert flag in proc.stdout


FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION), reason=f"Fashion-MNIST IDX files not in {FASHION}")
def test_quick_budget_end_to_end_and_resume(tmp_path, capsys):
    from rigl_tf.commands import reproduce

    out = tmp_path / "repro"
    assert reproduce.main(["--out_dir", str(out), "--budget", "quick"]) == 0
    text = (out / "REPORT.md").read_text()
    for title in rp.TABLE_TITLES:
        assert f"## {title}" in text
    for cid, *_ in rp.CLAIMS:
        for model in ("LeNet5", "MLP (300-100)"):
            line = re.search(rf"^- \*\*([A-Z ]+)\*\*(?: \([a-z ;]+\))? "
                             rf"\[{re.escape(model)}\] `{cid}`: (.*)$", text, re.M)
            assert line, (cid, model)
            assert line.group(1) in (rp.HOLDS, rp.FAILS), line.group(0)
            assert re.search(r"\d\.\d", line.group(2)), line.group(0)
    for model in ("lenet5", "mlp"):
        for fig in ("gradient_flow", "mask_updates", "hessian", "mds", "linear_paths"):
            assert (out / f"{model}_{fig}.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"lenet5", "mlp"}
    capsys.readouterr()
    # Resume: as if killed after training and one analysis -- a run lost its results file
    # and an analysis its cache; only those are redone, the other caches are kept.
    cache = out / "cache" / "mlp"
    kept = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    (cache / "similarity.json").unlink()
    assert reproduce.main(["--out_dir", str(out), "--budget", "quick"]) == 0
    log = capsys.readouterr().out
    assert re.search(r"\[\d+/\d+\] similarity mlp", log)
    for name, mtime in kept.items():
        if name != "similarity.json":
            assert (cache / name).stat().st_mtime_ns == mtime, name
    assert (cache / "similarity.json").exists()
    assert (out / "REPORT.md").read_text().count("`lt_close_function`") == 2
