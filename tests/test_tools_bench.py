"""Smoke runs of the benchmarks: each prints one JSON object with the documented keys."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_init_quick():
    out = _run("bench_init.py", "--quick")
    assert {"naive_loop_100x100_seconds", "resnet20_erk90_unit_scaled_seconds"} <= set(out)
    assert out["sparsity"] == pytest.approx(0.9, abs=1e-4)


@pytest.mark.slow
def test_bench_training_quick():
    out = _run("bench_training.py", "--quick")
    keys = {"static_over_dense", "rigl_over_dense", "rigl_amortised_over_dense",
            "update_step_over_dense", "null_over_dense"}
    for ratios in (out["ratios"]["mlp"], out["cpu_ratios"]["mlp"]):
        assert set(ratios) == keys
        assert all(v > 0 for v in ratios.values())
    details = out["details"]["mlp"]
    assert details["steps_timed_per_variant"] == 2 * 3
    assert details["rigl_update_steps_timed"] == 2  # one per timed round
    assert set(details["cpu_spread"]["static_over_dense"]) == {"min", "max", "iqr"}
    assert len(out["loadavg_before"]) == 3 and out["cpu_count"] >= 1
    assert out["checks"]["seconds<=300"] is True and "mlp:static_over_dense<=1.02" in out["checks"]


def _bench_training():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import bench_training
    finally:
        sys.path.pop(0)
    return bench_training


def test_bench_training_pairs_each_step_with_the_dense_step_of_its_cycle():
    B = _bench_training()
    # Two rounds of two cycles; the machine is twice as slow in cycle 1 as in the others.
    # Samples are (round, wall, cpu, tag, cycle).
    dense = [(1, 1.0, 2.0, None, 0), (1, 2.0, 4.0, None, 1),
             (2, 1.0, 2.0, None, 2), (2, 1.0, 2.0, None, 3)]
    mine = [(1, 1.1, 2.0, None, 0), (1, 2.2, 4.4, None, 1),
            (2, 1.3, 2.0, None, 2), (2, 1.0, 2.0, None, 3)]
    got = B._ratios({"dense": dense, "x": mine}, select=mine)
    # Per-cycle wall ratios 1.1, 1.1, 1.3, 1.0: median 1.1; rounds' medians 1.1 and 1.15.
    # (A ratio of round medians would read round 1 as 1.65 / 1.5 = 1.1 and the slow cycle's
    # dense step would move a one-step round entirely.)
    assert got["wall"]["median"] == pytest.approx(1.1)
    assert got["wall"]["rounds"] == pytest.approx([1.1, 1.15])
    # CPU: 1.0, 1.1, 1.0, 1.0.
    assert got["cpu"]["median"] == pytest.approx(1.0)
    assert got["cpu"]["rounds"] == pytest.approx([1.05, 1.0])


def test_bench_training_baseline_of_two_dense_copies_is_their_mean_per_cycle():
    B = _bench_training()
    a = [(1, 1.0, 1.0, None, 0), (1, 2.0, 2.0, None, 1), (1, 1.0, 1.0, None, 2)]
    b = [(1, 0.8, 1.0, None, 0), (1, 1.8, 2.0, None, 1)]  # no step in cycle 2
    mine = [(1, 1.08, 1.0, None, 0), (1, 2.09, 2.0, None, 1), (1, 9.0, 9.0, None, 2)]
    got = B._ratios({"a": a, "b": b, "x": mine}, base=("a", "b"), select=mine)
    # Cycle 0: 1.08 / 0.9 = 1.2; cycle 1: 2.09 / 1.9 = 1.1; cycle 2 has no full baseline.
    assert got["wall"]["median"] == pytest.approx(1.15)
    assert got["cpu"]["median"] == pytest.approx(1.0)


def test_bench_training_times_steps_with_the_collector_off_and_turns_it_back_on():
    import gc

    B = _bench_training()
    seen = []

    class Step:
        def __init__(self, fail):
            self.fail = fail

        def train_function(self, iterator):
            seen.append(gc.isenabled())
            if self.fail and len(seen) == 3:
                raise RuntimeError("step failed")

    out = B._interleave({"a": Step(False), "b": Step(False)}, {"a": None, "b": None},
                        rounds=1, steps=2, seed=0)
    # Round 0 (warm-up) and round 1, two cycles each, two variants: 8 steps, 4 timed each.
    assert seen == [False] * 8 and gc.isenabled()
    assert [s[4] for s in out["a"]] == [2, 3]
    seen.clear()
    with pytest.raises(RuntimeError):
        B._interleave({"a": Step(True)}, {"a": None}, rounds=1, steps=2, seed=0)
    assert gc.isenabled()


def test_bench_training_checks_name_each_missed_target():
    B = _bench_training()
    results = {
        "mlp": {"wall": {"static_over_dense": 1.03, "rigl_over_dense": 1.04,
                         "rigl_amortised_over_dense": 1.09, "tfmot_over_dense": 1.035}},
        "resnet20": {"wall": {"static_over_dense": 1.00, "rigl_over_dense": 1.06,
                              "rigl_amortised_over_dense": 1.11}},
    }
    got = B._checks(results, 301.0)
    assert got == {
        "mlp:static_over_dense<=1.02": False, "mlp:rigl_over_dense<=1.05": True,
        "mlp:rigl_amortised_over_dense<=1.1": True,
        "mlp:static_over_dense<tfmot": True, "mlp:rigl_over_dense<tfmot": False,
        "resnet20:static_over_dense<=1.02": True, "resnet20:rigl_over_dense<=1.05": False,
        "resnet20:rigl_amortised_over_dense<=1.1": False,
        "seconds<=300": False,
    }


@pytest.mark.slow
def test_bench_scale_quick():
    out = _run("bench_scale.py", "--quick")
    for key in ("rigl_update_seconds", "gmp_step_seconds", "mask_bytes_over_weight_bytes"):
        assert out[key] > 0
    assert out["mask_bytes_over_weight_bytes"] <= 1.0
