"""A rigl-train run's summaries read back with TensorBoard's own reader (EventAccumulator):
the tags and values the README promises."""

import glob
import io
import math
import os

import numpy as np
import pytest
import tensorflow as tf

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install 'rigl_tf[tensorboard]')")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 20  # total steps; log every 10; one RigL update at step 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from rigl_tf.experiments import train

    logdir = str(tmp_path_factory.mktemp("tb") / "run")
    results = train.run_experiment(
        [os.path.join(ROOT, "configs", "quickstart.gin")],
        [f"training.total_steps = {T}", "training.save_freq = 10", "training.log_freq = 10",
         "mask_updater.update_freq = 10", "mask_updater.start_step = 10",
         # quickstart's cosine drop fraction ends at step 1500, past this run (refused)
         "mask_updater.schedule_alg = 'constant'", "mask_updater.last_update_step = -1",
         "training.checkpoint_mask_updates = True", "network.hidden_sizes = (16,)",
         "training.val_batch_size = 120"],
        logdir=logdir, seed=0, verbose=0)
    acc = event_accumulator.EventAccumulator(
        os.path.join(logdir, "summaries"),
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0,
                       event_accumulator.HISTOGRAMS: 0, event_accumulator.SCALARS: 0})
    acc.Reload()
    return logdir, results, acc


def _values(acc, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}


def _final_masks(logdir):
    """The masks of checkpoint ``ckpt-T``, restored into a rebuilt model (runs.py)."""
    from rigl_tf.experiments import runs

    run = runs.load_run(logdir)
    run.restore(run.prefix(T))
    return [m for m in run.masks() if m is not None]  # None for biases


def test_promised_tags_exist(run):
    _, _, acc = run
    tags = set(acc.Tags()["tensors"])
    for tag in ("train/loss", "train/accuracy", "test/loss", "test/accuracy",
                "learning_rate", "sparsity/total", "gradient_flow/norm",
                "gradient_flow/mask_update/before", "gradient_flow/mask_update/after",
                "gradient_flow/mask_update/change", "mask_update/drop_fraction"):
        assert tag in tags, (tag, sorted(tags))
    for prefix in ("sparsity/", "mask/", "weights/"):
        per_layer = [t for t in tags if t.startswith(prefix) and t != "sparsity/total"]
        assert len(per_layer) == 2, (prefix, per_layer)  # the 64-16-10 MLP's kernels


def test_learning_rate_is_the_cosine_schedule(run):
    _, _, acc = run
    lr = _values(acc, "learning_rate")
    # 0.1 * (1 + cos(pi * step / T)) / 2, logged at the end of each 10-step epoch.
    for step in (10, 20):
        assert float(lr[step]) == pytest.approx(0.05 * (1 + math.cos(math.pi * step / T)),
                                                abs=1e-7)


def test_test_accuracy_matches_results(run):
    _, results, acc = run
    final = _values(acc, "test/accuracy")[T]
    assert float(final) == pytest.approx(results["test_accuracy"], abs=1e-6)
    for step, loss in _values(acc, "train/loss").items():
        assert 0 < float(loss) < 10 and step in (10, 20)


def test_sparsity_histograms_and_images_match_the_checkpoint(run):
    logdir, _, acc = run
    masks = _final_masks(logdir)
    tags = sorted(t for t in acc.Tags()["tensors"] if t.startswith("sparsity/")
                  and t != "sparsity/total")
    sizes = {m.size: m for m in masks}  # 64x16 and 16x10: distinct sizes
    assert sorted(sizes) == [160, 1024]
    by_tag = {}
    for tag in tags:
        key = tag[len("sparsity/"):]
        weights_hist = _values(acc, f"weights/{key}")[T]
        image = _values(acc, f"mask/{key}")[T]
        width, height = int(image[0]), int(image[1])
        pixels = tf.io.decode_png(image[2]).numpy()
        mask = sizes[width * height]  # the image is the mask reshaped to 2-D
        by_tag[tag] = mask
        assert float(_values(acc, tag)[T]) == pytest.approx(1 - mask.mean(), abs=1e-6)
        assert set(np.unique(pixels)) <= {0, 255}
        assert int((pixels == 255).sum()) == int(mask.sum())
        # Histogram buckets (left, right, count) count exactly the active weights.
        assert weights_hist.shape[1] == 3 and int(weights_hist[:, 2].sum()) == int(mask.sum())
    total = sum(m.sum() for m in masks) / sum(m.size for m in masks)
    assert float(_values(acc, "sparsity/total")[T]) == pytest.approx(1 - total, abs=1e-6)
    assert sum(m.size for m in by_tag.values()) == sum(m.size for m in masks)


def test_gradient_norm_change_at_the_mask_update(run):
    _, _, acc = run
    before = _values(acc, "gradient_flow/mask_update/before")
    after = _values(acc, "gradient_flow/mask_update/after")
    change = _values(acc, "gradient_flow/mask_update/change")
    # Updates right after steps 10 and 20 of the 20-step run (update_freq 10, reference
    # convention).
    assert set(before) == set(after) == set(change) == {10, 20}
    assert float(before[10]) > 0 and float(after[10]) > 0
    assert float(change[10]) == pytest.approx(float(after[10]) - float(before[10]), rel=1e-6)
    norms = _values(acc, "gradient_flow/norm")
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in norms.values())
