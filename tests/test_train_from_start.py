"""The trainer entry point that IMP levels, branches and one-shot runs use
(rigl_tf.experiments.train.train_from_start): first step, data order, identity."""

import os

import keras
import numpy as np
import pytest

import rigl_tf
from rigl_tf.experiments import datasets, train
from rigl_tf.experiments.config import make_spec

SPEC = make_spec(network={"network_name": "mlp", "hidden_sizes": (8,)},
                 data={"dataset_name": "digits"},
                 training={"total_steps": 7, "batch_size": 32, "save_freq": 2, "log_freq": 2,
                           "val_batch_size": 100},
                 optimizer={"name": "sgd", "schedule": "constant", "learning_rate": 0.1})


def _model_fn():
    keras.utils.set_random_seed(3)
    info = datasets.get_dataset_info("digits")
    return rigl_tf.sparsify(train.build_dense_model(SPEC, info), 0.0, "uniform", init="dense")


def _train(logdir, seed, data_seed, start_step=3, identity="a"):
    start = train.TrainStart(model_fn=_model_fn, identity=identity, start_step=start_step,
                             data_seed=data_seed)
    results = train.train_from_start(SPEC, start, str(logdir), seed=seed)
    return results, [w.numpy() for w in start.model.weights]


def test_data_seed_and_first_step_off_the_log_grid(tmp_path):
    # The run's seed only picks the data order (static masks, model_fn seeds itself), so
    # data_seed=7 under seed 0 must train exactly like seed 7 - also after step 3 -> 4,
    # where the trainer re-creates the data stream on the log_freq grid.
    r1, w1 = _train(tmp_path / "a", seed=0, data_seed=7)
    r2, w2 = _train(tmp_path / "b", seed=7, data_seed=None)
    r3, w3 = _train(tmp_path / "c", seed=0, data_seed=None)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(w1, w3))
    assert r1["step"] == 7 and r1["resumed_from_step"] is None
    steps = sorted(int(p[5:-6]) for p in os.listdir(tmp_path / "a")
                   if p.startswith("ckpt-") and p.endswith(".index"))
    assert steps == [3, 4, 6, 7]  # the first step, every save_freq, the end


def test_identity_conflict_and_bad_start(tmp_path):
    _train(tmp_path / "a", seed=0, data_seed=None, start_step=5)
    with pytest.raises(train.LogdirConflictError):
        _train(tmp_path / "a", seed=0, data_seed=None, start_step=5, identity="b")
    with pytest.raises(ValueError, match=r"`start.start_step`=7 must be in \[0, "
                                         r"training.total_steps=7\)"):
        _train(tmp_path / "c", seed=0, data_seed=None, start_step=7)
    with pytest.raises(ValueError, match=r"`strategy` must be one of 'default', 'mirrored'"):
        train.train_from_start(SPEC, train.TrainStart(_model_fn, "x"), str(tmp_path / "d"),
                               strategy="multi_worker")
