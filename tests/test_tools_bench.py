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


@pytest.mark.slow
def test_bench_scale_quick():
    out = _run("bench_scale.py", "--quick")
    for key in ("rigl_update_seconds", "gmp_step_seconds", "mask_bytes_over_weight_bytes"):
        assert out[key] > 0
    assert out["mask_bytes_over_weight_bytes"] <= 1.0
