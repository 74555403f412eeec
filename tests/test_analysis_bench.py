"""tools/bench_hessian.py --quick prints one JSON object: both procedures over all rows."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_hessian_quick_prints_json():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_hessian.py"), "--quick",
         "--models", "lenet5"],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["quick"] is True and len(result["results"]) == 1
    case = result["results"][0]
    for key in ("ours_wall_seconds", "ours_cpu_seconds", "reference_wall_seconds",
                "reference_cpu_seconds", "speedup_wall", "speedup_cpu", "examples"):
        assert case[key] > 0
    # Biases of the tiny LeNet5 (2, 3, 8, 6 units and 10 logits) are all coordinates.
    assert case["coordinates"] == case["active_weights"] + 2 + 3 + 8 + 6 + 10
    # Every row of the reference was computed: two per call.
    assert case["reference_calls"] == (case["coordinates"] + 1) // 2
    assert case["max_eig_diff_relative"] <= 1e-6
