"""tfmot interop, run in a subprocess: importing tfmot would flip tf.keras in this process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow_model_optimization")

_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import rigl_tf
    from rigl_tf.interop import tfmot as I
    tfmot, tfk = I.import_tfmot()
    out = {"env_after_import": os.environ.get("TF_USE_LEGACY_KERAS")}
    tfk.utils.set_random_seed(0)
    m = tfk.Sequential([tfk.layers.Conv2D(4, 3, input_shape=(6, 6, 1), name="conv"),
                        tfk.layers.Flatten(name="flat"),
                        tfk.layers.Dense(16, activation="relu", name="fc1"),
                        tfk.layers.Dense(3, name="fc2")])
    p = I.prune_low_magnitude_static(m, 0.75)
    p.compile(tfk.optimizers.SGD(0.1, momentum=0.9),
              tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(0)
    x, y = rng.rand(32, 6, 6, 1).astype("float32"), rng.randint(0, 3, 32)
    cb = I.mask_update_callback(p, rigl_tf.updaters.RigL(update_freq=2, init_drop_fraction=0.3),
                                data=(x[:8], y[:8]))
    m0 = {k: mk.numpy().copy() for k, _, mk in I.masked_variables(p)}
    out["counts_before"] = {k: int(v.sum()) for k, v in m0.items()}
    p.fit(x, y, batch_size=8, epochs=1, verbose=0,
          callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), cb])
    out["last_update_step"] = cb.last_update_step
    out["counts_after"] = {k: int(mk.numpy().sum()) for k, _, mk in I.masked_variables(p)}
    out["changed"] = {k: int((mk.numpy() != m0[k]).sum()) for k, _, mk in I.masked_variables(p)}
    out["zeros_ok"] = all(bool(np.all(w.numpy()[mk.numpy() == 0] == 0))
                          for _, w, mk in I.masked_variables(p))
    s = I.from_tfmot(p)
    out["converted_masks_equal"] = all(
        np.array_equal(rigl_tf.get_masks(s)[k], mk.numpy()) for k, _, mk in I.masked_variables(p))
    out["max_pred_diff"] = float(np.abs(s(x).numpy() - p(x).numpy()).max())
    out["wrapped"] = sorted(rigl_tf.get_masks(s))
    try:
        I.mask_update_callback(p, "rigl")
    except ValueError as e:
        out["no_data_error"] = str(e)
    try:
        I.from_tfmot(m)
    except ValueError as e:
        out["not_pruned_error"] = str(e)
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfmot") / "run.py"
    path.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_import_restores_environment(result):
    assert result["env_after_import"] is None


def test_rigl_on_tfmot_model_keeps_exact_counts(result):
    expected = {"conv/kernel": 9, "fc1/kernel": 256, "fc2/kernel": 12}  # 25% of 36, 1024, 48
    assert result["counts_before"] == expected
    assert result["counts_after"] == expected
    assert result["last_update_step"] == 4  # 4 steps: events after updates 2 and 4
    assert result["changed"]["fc1/kernel"] > 0
    assert result["zeros_ok"]


def test_conversion_to_keras3_is_exact(result):
    assert result["wrapped"] == ["conv/kernel", "fc1/kernel", "fc2/kernel"]
    assert result["converted_masks_equal"]
    assert result["max_pred_diff"] < 1e-5


def test_interop_errors(result):
    assert "needs gradients: pass `data=(x, y)`" in result["no_data_error"]
    assert "has no tfmot PruneLowMagnitude layers" in result["not_pruned_error"]
