"""tools/bench_hessian.py --quick prints one valid JSON object with the required keys."""

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
        [sys.executable, os.path.join(ROOT, "tools", "bench_hessian.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in (
        "ours_seconds",
        "baseline_seconds",
        "speedup",
        "max_abs_eig_diff",
        "num_params",
        "baseline_rows_timed",
        "baseline_extrapolated",
    ):
        assert key in result
    assert result["quick"] is True and result["baseline_extrapolated"] is False
    assert result["baseline_rows_timed"] == result["num_params"] > 0
    # The quick run computes every baseline row, so the spectra must agree.
    assert result["max_abs_eig_diff"] <= 1e-4 * max(1.0, abs(result["max_eigenvalue"]))
