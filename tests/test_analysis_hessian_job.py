"""The resumable Hessian job: results, atomic outputs, interruption and kill -9 + resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from rigl_tf.analysis.hessian_job import PARTIAL_SUFFIX, run_hessian_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"),
                              keras.layers.Dense(3)])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    y = rng.integers(0, 3, 23).astype(np.int32)
    return model, x, y


def _reference(model, x, y):
    """Hessian of the mean loss by nested tapes over all data at once (float32, independent)."""
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=False), from_logits=True))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    jac = outer.jacobian(flat, variables)
    return np.concatenate([tf.reshape(j, [flat.shape[0], -1]).numpy() for j in jac], 1)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_job_writes_results_and_resumes_after_an_interruption(tmp_path):
    model, x, y = _problem()
    lines = []
    full = run_hessian_job(model, (x, y), str(tmp_path / "a"), batch_size=5,
                           checkpoint_seconds=0, progress=lines.append)
    np.testing.assert_allclose(full["matrix"], _reference(model, x, y), atol=2e-6)
    files = sorted(os.listdir(tmp_path / "a"))
    assert files == ["hessian.density.png", "hessian.eigvals.npy", "hessian.hessian.npy",
                     "hessian.json"]
    np.testing.assert_allclose(np.load(tmp_path / "a" / "hessian.eigvals.npy"),
                               np.linalg.eigvalsh(full["matrix"]))
    summary = json.loads((tmp_path / "a" / "hessian.json").read_text())
    assert summary["num_examples"] == 23 and summary["num_params"] == 6 * 5 + 6 + 6 * 3 + 3
    # Progress: one line per batch (5 batches of 5, 5, 5, 5, 3) with an ETA.
    assert len(lines) == 6 and "23/23 examples (100.0%)" in lines[4] and "ETA" in lines[0]

    def stop_after_two(done, total):
        if done == 2:
            raise _Stop()

    out = str(tmp_path / "b")
    with pytest.raises(_Stop):
        run_hessian_job(model, (x, y), out, batch_size=5, checkpoint_seconds=0,
                        progress=lambda m: None, on_batch=stop_after_two)
    assert os.listdir(out) == ["hessian" + PARTIAL_SUFFIX]
    state = np.load(os.path.join(out, "hessian" + PARTIAL_SUFFIX))
    assert int(state["batches_done"]) == 2 and int(state["count"]) == 10
    seen = []
    resumed = run_hessian_job(model, (x, y), out, batch_size=5, checkpoint_seconds=0,
                              progress=seen.append, on_batch=lambda d, t: None)
    assert seen[0].startswith("hessian: resuming at batch 2 (10 of 23")
    assert len(seen) == 1 + 3 + 1  # resume note, batches 3..5, done
    np.testing.assert_allclose(resumed["matrix"], full["matrix"], rtol=1e-12, atol=1e-15)
    assert not os.path.exists(os.path.join(out, "hessian" + PARTIAL_SUFFIX))


def test_job_refuses_partial_sums_of_other_inputs(tmp_path):
    model, x, y = _problem()

    def stop(done, total):
        raise _Stop()

    with pytest.raises(_Stop):
        run_hessian_job(model, (x, y), str(tmp_path), batch_size=5, checkpoint_seconds=0,
                        progress=lambda m: None, on_batch=stop)
    model.trainable_variables[0].assign(model.trainable_variables[0] * 2)
    with pytest.raises(ValueError, match="out_dir: .* different job"):
        run_hessian_job(model, (x, y), str(tmp_path), batch_size=5, progress=lambda m: None)
    with pytest.raises(ValueError, match="batch_size"):
        run_hessian_job(model, (x, y), str(tmp_path), batch_size=0)


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_analysis_hessian_job import _problem
    from rigl_tf.analysis.hessian_job import run_hessian_job
    model, x, y = _problem()

    def slow(done, total):
        print("BATCH", done, flush=True)
        if done >= 2:
            time.sleep(60)  # killed here

    run_hessian_job(model, (x, y), {out!r}, batch_size=5, checkpoint_seconds=0,
                    progress=lambda m: None, on_batch=slow)
""")


@pytest.mark.slow
def test_job_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    model, x, y = _problem()
    uninterrupted = run_hessian_job(model, (x, y), str(tmp_path / "ref"), batch_size=5,
                                    progress=lambda m: None)
    out = str(tmp_path / "killed")
    code = _CHILD.format(tests=os.path.join(ROOT, "tests"), out=out)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        for line in child.stdout:
            if line.strip() == "BATCH 2":
                break
        else:
            pytest.fail(f"child exited early with code {child.wait()}")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    state = np.load(os.path.join(out, "hessian" + PARTIAL_SUFFIX))
    assert int(state["batches_done"]) == 2
    resumed = run_hessian_job(model, (x, y), out, batch_size=5, progress=lambda m: None)
    np.testing.assert_allclose(resumed["matrix"], uninterrupted["matrix"], rtol=1e-12,
                               atol=1e-15)
