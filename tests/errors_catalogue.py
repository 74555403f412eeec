"""The bad-input catalogue: one row per user mistake, the exception and the message.

Single source of truth for README's "Errors" table (``python tools/errors_table.py``
prints it) and for ``tests/test_errors_catalogue.py`` (one test per row). Every message
names the parameter, the bad value and what is allowed.
"""

import os

import keras
import numpy as np

L = keras.layers


def _mlp():
    return keras.Sequential([keras.Input((8,)), L.Dense(8, name="hidden"), L.Dense(4, name="out")])


def _sparse():
    import rigl_tf

    return rigl_tf.sparsify(_mlp(), 0.5, "uniform")


def _sparsify(**kwargs):
    import rigl_tf

    return lambda: rigl_tf.sparsify(_mlp(), **kwargs)


def _updater(name, **kwargs):
    from rigl_tf.keras import updaters

    return lambda: updaters.get_updater(name, **kwargs)


def _fit_without_wrappers():
    import rigl_tf

    model = _mlp()
    model.compile(rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), "rigl"), "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 4)), verbose=0)


def _custom_optimizer_for_rigl():
    import rigl_tf

    class MyOpt(keras.optimizers.Optimizer):
        def update_step(self, g, v, lr):
            v.assign_sub(lr * g)

    rigl_tf.SparseOptimizer(MyOpt(0.1), "rigl")


def _rewind_before_snapshot():
    import rigl_tf

    model = _sparse()
    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), "static", rewind_step=5)
    opt.build(model.trainable_variables)
    opt.rewind()


def _set_masks(value):
    def call():
        import rigl_tf

        rigl_tf.set_masks(_sparse(), {"hidden/kernel": value})

    return call


def _keras2_model():
    import tf_keras

    import rigl_tf

    rigl_tf.sparsify(tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))]), 0.5)


def _subclassed():
    import rigl_tf

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    rigl_tf.sparsify(net, 0.5)


def _dataset(**kwargs):
    def call():
        from rigl_tf.experiments import datasets

        datasets.get_dataset(**kwargs)

    return call


def _model(name):
    def call():
        from rigl_tf.experiments import models

        models.get_model(name, (8, 8, 1), 10)

    return call


def _get_model(name, input_shape=(28, 28, 1), **kwargs):
    def call():
        from rigl_tf.experiments import models

        models.get_model(name, input_shape, 10, **kwargs)

    return call


def _lr_peak_zero():
    import tensorflow as tf

    import rigl_tf

    class Ramp(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.01 * tf.cast(step, tf.float32)

    opt = rigl_tf.SparseOptimizer(keras.optimizers.SGD(Ramp()), "rigl")
    opt.build(_sparse().trainable_variables)


def _hessian_too_big():
    from rigl_tf.analysis import hessian

    model = keras.Sequential([keras.Input((64,)), L.Dense(64), L.Dense(10)])
    hessian(model, (np.ones((2, 64), "float32"), np.zeros(2, "int32")), spectrum="dense",
            max_params=100)


def _similarity_bad_probs():
    from rigl_tf.analysis import similarity

    similarity.disagreement(np.ones((3, 2)), np.ones((4, 2)))


def _prune_at_init_unknown():
    from rigl_tf.keras import oneshot

    oneshot.prune_at_init(_sparse(), np.ones((2, 8), "float32"), np.zeros(2, "int32"),
                          method="obd", sparsity=0.5)


# --------------------------------------------------------------------------- rigl-train

_QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "quickstart.gin")
# quickstart's RigL schedule (every 100 steps until 1500) does not fit 4 steps (refused):
# these runs update at steps 2 and 4.
_TINY = ["network.hidden_sizes = (16,)", "training.batch_size = 16",
         "training.val_batch_size = 60", "training.total_steps = 4",
         "training.save_freq = 2", "training.log_freq = 2",
         "mask_updater.update_freq = 2", "mask_updater.last_update_step = 4"]


def _rigl_train(bindings=(), dry_run=True, **kwargs):
    def call():
        import tempfile

        from rigl_tf.experiments import train

        kwargs.setdefault("logdir", tempfile.mkdtemp(prefix="rigl_err_"))
        train.run_experiment([_QUICKSTART], list(bindings), dry_run=dry_run, verbose=0,
                             **kwargs)

    return call


def _tree(directory):
    """{relative path: bytes} of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def _logdir_conflict():
    import tempfile

    from rigl_tf.experiments import train

    logdir = tempfile.mkdtemp(prefix="rigl_err_")
    with open(os.path.join(logdir, "operative_config.gin"), "w") as f:
        f.write("# rigl-train seed = 0\ntraining.total_steps = 7\n")
    with open(os.path.join(logdir, "results.json"), "w") as f:
        f.write("{}")
    before = _tree(logdir)
    try:
        train.run_experiment([_QUICKSTART], _TINY, logdir=logdir, verbose=0)
    finally:
        if _tree(logdir) != before:
            raise AssertionError(f"the refused logdir {logdir} was modified")


def _same_init_as_mask_source():
    import tempfile

    from rigl_tf.experiments import train

    source = tempfile.mkdtemp(prefix="rigl_err_src_")
    # A static sparse source: its final masks are its step-0 masks.
    train.run_experiment([_QUICKSTART], _TINY + ["mask_updater.update_alg = ''"],
                         logdir=source, seed=0, verbose=0)
    _rigl_train(_TINY + [f"network.mask_init_path = '{source}'", "sparsity.sparsity = 0.0"],
                dry_run=False, seed=0)()


def _mismatched_mask_checkpoint():
    import tempfile

    import rigl_tf
    from rigl_tf.experiments import train

    other = keras.Sequential([keras.Input((64,)), L.Dense(12), L.Dense(10)])
    other = rigl_tf.sparsify(other, 0.5, "uniform")
    prefix = train.make_checkpoint(other).write(
        os.path.join(tempfile.mkdtemp(prefix="rigl_err_"), "ckpt-0"))
    _rigl_train(_TINY + [f"network.mask_init_path = '{prefix}'"])()


def _empty_dataset():
    import struct
    import tempfile

    data_dir = tempfile.mkdtemp(prefix="rigl_err_idx_")
    for name, dims in (("train-images-idx3-ubyte", [0, 28, 28]),
                       ("train-labels-idx1-ubyte", [0]),
                       ("t10k-images-idx3-ubyte", [0, 28, 28]),
                       ("t10k-labels-idx1-ubyte", [0])):
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 0x08, len(dims)))
            f.write(b"".join(struct.pack(">I", d) for d in dims))
    logdir = tempfile.mkdtemp(prefix="rigl_err_")
    try:
        _rigl_train(_TINY + ["data.dataset_name = 'mnist_idx'",
                             f"data.data_dir = '{data_dir}'"], dry_run=False, logdir=logdir)()
    finally:
        if os.listdir(logdir):
            raise AssertionError(f"files were written to {logdir}: {os.listdir(logdir)}")


def _nan_loss():
    import tempfile

    import tensorflow as tf

    from rigl_tf.experiments import train

    logdir = tempfile.mkdtemp(prefix="rigl_err_")
    try:
        train.run_experiment(
            [_QUICKSTART], _TINY + ["optimizer.learning_rate = 1e30",
                                    "optimizer.schedule = 'constant'",
                                    "training.total_steps = 30", "training.save_freq = 1",
                                    "training.log_freq = 30"],
            logdir=logdir, verbose=0)
    finally:
        last = tf.train.latest_checkpoint(logdir)
        if last is None or os.path.exists(os.path.join(logdir, "results.json")):
            raise AssertionError("no last good checkpoint, or results.json was written")
        reader = tf.train.load_checkpoint(last)
        for key in reader.get_variable_to_shape_map():
            if key.startswith("variables/"):
                if not np.all(np.isfinite(reader.get_tensor(key))):
                    raise AssertionError(f"{last} holds non-finite {key}")


def _lottery(spec=None, **kwargs):
    def call():
        from rigl_tf import lottery
        from rigl_tf.experiments.config import make_spec

        config = lottery.IMPConfig(**kwargs)
        train_spec = make_spec(**(spec or {"network": {"network_name": "mlp"},
                                           "data": {"dataset_name": "digits"}}))
        lottery.IMPRun(config, train_spec, root_dir=os.devnull + "_unused")

    return call


def _branch(name):
    def call():
        from rigl_tf.lottery import branches

        branches.check_branch(name)

    return call


def _tool(script, *argv):
    """Runs an analysis command's main in-process; turns its exit-2 error line into an error."""
    def call():
        import contextlib
        import importlib
        import io

        module = importlib.import_module(f"rigl_tf.commands.{script}")
        args = [a() if callable(a) else a for a in argv]  # files made only when run
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = module.main(args)
        if code == 2:
            raise SystemExit(err.getvalue().strip())

    return call


def _corrupt_file(name, content):
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="rigl_tf_bad_"), name)
    with open(path, "wb") as f:
        f.write(content)
    return path



# --------------------------------------------------------------------------- issue 15


_HOLDER = ("import sys, time\nfrom rigl_tf import locking\n"
           "with locking.exclusive(sys.argv[1]):\n    print('locked', flush=True)\n"
           "    time.sleep(600)\n")


def _while_locked(directory, body):
    """Runs ``body()`` while another process holds ``directory``'s lock."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, directory], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        body()
    finally:
        holder.kill()
        holder.wait()


_IMP_QS = os.path.join(os.path.dirname(_QUICKSTART), "lottery", "quickstart_imp.gin")
_IMP_TINY = ["network.hidden_sizes = (8,)", "training.total_steps = 2",
             "lottery_run.levels = 0", "lottery_run.branches = []"]


def _imp_library_run_dir_in_use():
    import tempfile

    from rigl_tf import lottery
    from rigl_tf.experiments.config import make_spec

    run_dir = tempfile.mkdtemp(prefix="rigl_err_imp_")
    spec = make_spec(network={"network_name": "mlp", "hidden_sizes": (8,)},
                     data={"dataset_name": "digits"}, training={"total_steps": 2})
    _while_locked(run_dir, lambda: lottery.IMPRun(lottery.IMPConfig(), spec,
                                                  run_dir=run_dir).run(0))


def _imp_rewind_past_the_end():
    import tempfile

    from rigl_tf.lottery import main as lottery_main

    run_dir = os.path.join(tempfile.mkdtemp(prefix="rigl_err_imp_"), "run")
    lottery_main.run_lottery([_IMP_QS], _IMP_TINY + ["imp.rewinding = 'step'",
                                                     "imp.rewind_step = 5"],
                             run_dir=run_dir, print_fn=lambda *a: None)


def _imp_level_diverges():
    import tempfile

    from rigl_tf import lottery
    from rigl_tf.experiments.config import make_spec

    spec = make_spec(network={"network_name": "mlp", "hidden_sizes": (8,)},
                     data={"dataset_name": "digits"},
                     training={"total_steps": 6, "batch_size": 32},
                     optimizer={"learning_rate": 1e30, "schedule": "constant"})
    run = lottery.IMPRun(lottery.IMPConfig(), spec,
                         run_dir=tempfile.mkdtemp(prefix="rigl_err_imp_"))
    run.run(0)


def _logdir_in_use():
    import tempfile

    logdir = tempfile.mkdtemp(prefix="rigl_err_")
    _while_locked(logdir, _rigl_train(_TINY, dry_run=False, logdir=logdir))


def _imp_run_dir_in_use():
    import tempfile

    from rigl_tf.lottery import main as lottery_main

    run_dir = tempfile.mkdtemp(prefix="rigl_err_imp_")
    _while_locked(run_dir, lambda: lottery_main.run_lottery(
        [_IMP_QS], _IMP_TINY, run_dir=run_dir, print_fn=lambda *a: None))


def _all_checkpoints_damaged():
    import glob
    import tempfile

    logdir = tempfile.mkdtemp(prefix="rigl_err_")
    _rigl_train(_TINY, dry_run=False, logdir=logdir)()
    os.remove(os.path.join(logdir, "checkpoint"))
    for path in glob.glob(os.path.join(logdir, "ckpt-*.data-*")):
        with open(path, "r+b") as f:
            f.truncate(3)
    _rigl_train(_TINY, dry_run=False, logdir=logdir)()


def _dir_with_user_files():
    import tempfile

    directory = tempfile.mkdtemp(prefix="rigl_err_out_")
    with open(os.path.join(directory, "notes.txt"), "w") as f:
        f.write("mine")
    return directory


def _export_into_user_dir():
    import rigl_tf

    rigl_tf.export(_sparse(), _dir_with_user_files(), "saved_model")


def _compressed_into_user_dir():
    from rigl_tf import compressed

    compressed.save_compressed(_sparse(), _dir_with_user_files())


def _first_mask_dataset(h5):
    """Path of the first SparseWrapper's own variable (its mask) in a .keras weights file."""
    names = []
    h5.visit(names.append)
    return next(n for n in names if "sparse_wrapper" in n and "/layer/" not in n
                and n.endswith("/vars/0"))


def _half_mask_keras_file():
    import tempfile
    import zipfile

    import h5py

    import rigl_tf  # noqa: F401  (registers SparseWrapper)

    d = tempfile.mkdtemp(prefix="rigl_err_")
    path = os.path.join(d, "m.keras")
    _sparse().save(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    weights = os.path.join(d, "w.h5")
    with open(weights, "wb") as f:
        f.write(parts["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        f[_first_mask_dataset(f)][...] = 0.5
    with open(weights, "rb") as f:
        parts["model.weights.h5"] = f.read()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    keras.models.load_model(path)


def _dense_mask_run():
    import tempfile

    dense = tempfile.mkdtemp(prefix="rigl_err_dense_")
    _rigl_train(_TINY + ["sparsity.sparsity = 0.0", "mask_updater.update_alg = ''"],
                dry_run=False, logdir=dense)()
    # Another seed than the dense run's, so the same-initialization guard does not fire first.
    _rigl_train(_TINY + [f"network.mask_init_path = '{dense}'"], seed=1)()


def _imp_damaged(name):
    def call():
        import tempfile

        from rigl_tf.lottery import main as lottery_main

        run_dir = tempfile.mkdtemp(prefix="rigl_err_imp_")
        bindings = list(_IMP_TINY)
        lottery_main.run_lottery([_IMP_QS], bindings, run_dir=run_dir,
                                 print_fn=lambda *a: None)
        path = os.path.join(run_dir, name)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        lottery_main.run_lottery([_IMP_QS], bindings + ["lottery_run.levels = 1"],
                                 run_dir=run_dir, print_fn=lambda *a: None)

    return call


# (area, what the user did, callable, exception class, regex the message must match)
CATALOGUE = [
    ("sparsify", "sparsity of 1.0", _sparsify(sparsity=1.0), ValueError,
     r"`sparsity` must be in \[0, 1\), got 1.0"),
    ("sparsify", "negative sparsity", _sparsify(sparsity=-0.1), ValueError,
     r"`sparsity` must be in \[0, 1\), got -0.1"),
    ("sparsify", "sparsity that is not a number", _sparsify(sparsity="high"), ValueError,
     r"`sparsity` must be a number in \[0, 1\), got 'high'"),
    ("sparsify", "unknown distribution", _sparsify(sparsity=0.5, distribution="gaussian"),
     ValueError, r"Unknown `distribution` 'gaussian'; known distributions: uniform, er, erk"),
    ("sparsify", "unknown initializer", _sparsify(sparsity=0.5, init="he"), ValueError,
     r"Unknown `init` 'he'; known sparse initializers: dense, layer_scaled, unit_scaled"),
    ("sparsify", "unknown unit_scaled method",
     _sparsify(sparsity=0.5, init="unit_scaled", init_method="fan_normal"), ValueError,
     r"Unknown unit_scaled `method` 'fan_normal'; known methods: fanin_normal"),
    ("sparsify", "override map naming a missing layer",
     _sparsify(sparsity=0.5, custom_sparsity={"conv9": 0.1}), ValueError,
     r"`custom_sparsity` names 'conv9', which is not a prunable .* prunable layers are"),
    ("sparsify", "keep_dense naming a missing layer",
     _sparsify(sparsity=0.5, keep_dense="conv9"), ValueError,
     r"`keep_dense` names layer 'conv9', which is not in the model"),
    ("sparsify", "initial mask of the wrong shape",
     _sparsify(sparsity=0.5, masks={"hidden/kernel": np.ones((3, 3))}), ValueError,
     r"`masks\['hidden/kernel'\]` has shape \(3, 3\), expected \(8, 8\)"),
    ("sparsify", "unknown sparsity pattern", _sparsify(sparsity=0.5, pattern="diagonal"),
     ValueError, r"Unknown sparsity `pattern` 'diagonal'; accepted forms"),
    ("sparsify", "N:M pattern with N > M", _sparsify(sparsity=0.5, pattern="5:4"),
     ValueError, r"`pattern` '5:4': N:M needs 0 < N <= M"),
    ("sparsify", "pattern that does not divide a weight", _sparsify(sparsity=0.5, pattern="2:3"),
     ValueError, r"`pattern` '2:3' does not divide weight 'hidden/kernel'.*is 8, not a multiple of M=3"),
    ("sparsify", "global distribution with a structured pattern",
     _sparsify(sparsity=0.5, distribution="global", pattern="2:4"), ValueError,
     r"`distribution` 'global' cannot be combined with structured patterns"),
    ("sparsify", "model without prunable layers",
     lambda: __import__("rigl_tf").sparsify(
         keras.Sequential([keras.Input((4,)), L.BatchNormalization()]), 0.5),
     ValueError, r"has no prunable layer left to sparsify \(supported types: .*Dense"),
    ("sparsify", "not a Keras model", lambda: __import__("rigl_tf").sparsify({"a": 1}, 0.5),
     TypeError, r"`model` must be a Keras 3 keras.Model, got dict"),
    ("sparsify", "a Keras 2 (tf_keras) model", _keras2_model, TypeError,
     r"`model` is a Keras 2 \(tf_keras\) model.*rigl_tf.interop.tfmot"),
    ("sparsify", "a subclassed model", _subclassed, TypeError,
     r"is a subclassed model.*rigl_tf.SparseWrapper in its __init__"),
    ("SparseWrapper", "wrapping a layer without prunable weights",
     lambda: __import__("rigl_tf").SparseWrapper(L.BatchNormalization()), TypeError,
     r"has no prunable weights\. Supported layer types: .*Dense"),
    ("set_masks", "mask with values other than 0/1", _set_masks(np.full((8, 8), 0.5)),
     ValueError, r"`masks\['hidden/kernel'\]` must contain only 0 and 1"),
    ("set_masks", "mask for an unknown weight",
     lambda: __import__("rigl_tf").set_masks(_sparse(), {"nope": np.ones((8, 8))}), ValueError,
     r"`masks` names 'nope', which is not a prunable"),
    ("get_masks", "a model with no SparseWrapper", lambda: __import__("rigl_tf").get_masks(_mlp()),
     ValueError, r"`model` has no SparseWrapper layers; call rigl_tf.sparsify"),
    ("updaters", "unknown updater", _updater("rigl2"), ValueError,
     r"Unknown updater `update_alg` 'rigl2'; known updaters: magnitude, random, rigl"),
    ("updaters", "drop fraction above 1", _updater("rigl", init_drop_fraction=1.5), ValueError,
     r"`init_drop_fraction` must be in \[0.0, 1.0\], got 1.5"),
    ("updaters", "update_freq of 0", _updater("set", update_freq=0), ValueError,
     r"`update_freq` must be >= 1, got 0"),
    ("updaters", "end_step before start_step",
     _updater("rigl", update_freq=10, start_step=100, end_step=50), ValueError,
     r"`end_step` \(50\) must be >= `start_step` \(100\)"),
    ("updaters", "unknown drop-fraction schedule", _updater("rigl", schedule_alg="linear"),
     ValueError, r"Unknown drop-fraction `schedule_alg` 'linear'; known schedules: constant"),
    ("updaters", "cosine drop fraction that never reaches its end",
     _updater("rigl", schedule_alg="cosine"), ValueError,
     r"The 'cosine' drop-fraction schedule decays to 0 at `end_step` \(last_update_step\), "
     r"which must be > 0, got -1"),
    ("updaters", "SNFS redistribute that is not a boolean", _updater("snfs", redistribute=1),
     ValueError, r"`redistribute` must be True or False, got 1"),
    ("SparseOptimizer", "'lr' drop fraction under a schedule whose peak is 0",
     _lr_peak_zero, ValueError,
     r"The 'lr' drop-fraction schedule divides by the peak learning rate, which is 0.0"),
    ("updaters", "unknown pruning schedule", _updater("magnitude", schedule="exponential"),
     ValueError, r"Unknown pruning `schedule` 'exponential'; known schedules: polynomial"),
    ("updaters", "final sparsity of 1", _updater("magnitude", final_sparsity=1.0), ValueError,
     r"`final_sparsity` must be in \[0.0, 1.0\), got 1.0"),
    ("updaters", "initial sparsity above the final one",
     _updater("magnitude", initial_sparsity=0.9, final_sparsity=0.5), ValueError,
     r"`initial_sparsity` \(0.9\) must be <= `final_sparsity` \(0.5\)"),
    ("updaters", "unknown pruning scope", _updater("magnitude", scope="local"), ValueError,
     r"Unknown pruning `scope` 'local'; known scopes: layerwise, global"),
    ("SparseOptimizer", "negative rewind step",
     lambda: __import__("rigl_tf").SparseOptimizer(keras.optimizers.SGD(), rewind_step=-1),
     ValueError, r"`rewind_step` must be None or an integer >= 0, got -1"),
    ("SparseOptimizer", "inner optimizer that is not a Keras 3 optimizer",
     lambda: __import__("rigl_tf").SparseOptimizer("sgd", "rigl"), TypeError,
     r"`inner_optimizer` must be a Keras 3 optimizer, got str"),
    ("SparseOptimizer", "optimizer whose state cannot be reset, with a regrowing updater",
     _custom_optimizer_for_rigl, ValueError,
     r"`inner_optimizer` MyOpt has optimizer state .* Supported: .*SGD"),
    ("SparseOptimizer", "training a model without SparseWrappers", _fit_without_wrappers,
     ValueError, r"found no masked weights .*call rigl_tf.sparsify first"),
    ("SparseOptimizer", "rewind() before the rewind step was reached", _rewind_before_snapshot,
     ValueError, r"no snapshot yet; training must pass step 5"),
    ("models", "unknown model name", _model("resnet1000"), ValueError,
     r"Unknown `network_name`='resnet1000'; known models: "),
    ("models", "lenet5 hidden_sizes without 4 widths",
     _get_model("lenet5", hidden_sizes=(6, 16, 120)), ValueError,
     r"`hidden_sizes` of lenet5 must be 4 positive ints, got \(6, 16, 120\)"),
    ("models", "use_batch_norm that is not a boolean", _get_model("mlp", use_batch_norm="yes"),
     ValueError, r"`use_batch_norm` must be True or False, got 'yes'"),
    ("models", "the paper's lenet5 on images smaller than 16x16", _get_model(
        "lenet5", (8, 8, 1)), ValueError, r"Model 'lenet5' needs images of at least 16x16"),
    ("datasets", "unknown dataset name", _dataset(name="svhn2", split="train", batch_size=8),
     ValueError, r"svhn2"),
    ("datasets", "batch size of 0", _dataset(name="digits", split="train", batch_size=0),
     ValueError, r"`batch_size` must be a positive"),
    ("datasets", "unknown split", _dataset(name="digits", split="validation", batch_size=8),
     ValueError, r"validation"),
    ("datasets", "IDX directory without the files",
     _dataset(name="mnist_idx", split="train", batch_size=8, data_dir=os.devnull + "_missing"),
     (FileNotFoundError, ValueError),
     r"IDX directory '.*_missing' for dataset 'mnist_idx' does not exist; pass `data_dir`"),
    ("datasets", "tfds dataset not downloaded (offline)",
     _dataset(name="cifar10", split="train", batch_size=8, data_dir=os.devnull + "_missing"),
     (FileNotFoundError, ValueError), r"cifar10.*(tfds build|digits)"),
    ("analysis", "Hessian larger than max_params", _hessian_too_big, ValueError,
     r"max_params"),
    ("analysis", "probability tables of different shapes", _similarity_bad_probs, ValueError,
     r"shape"),
    ("lottery", "prune fraction of 1", _lottery(prune_fraction=1.0), ValueError,
     r"`prune_fraction` must be a number in the open interval \(0, 1\).*got 1.0"),
    ("lottery", "unknown importance measure", _lottery(importance="taylor"), ValueError,
     r"Unknown importance `measure` 'taylor'; known measures: magnitude, l1, l2"),
    ("lottery", "unknown rewinding mode", _lottery(rewinding="back"), ValueError,
     r"`rewinding` must be one of 'init', 'step', 'lr', 'none', got 'back'"),
    ("lottery", "rewind step past the end of training",
     _lottery(rewinding="step", rewind_step=10**6,
              spec={"network": {"network_name": "mlp"}, "data": {"dataset_name": "digits"},
                    "training": {"total_steps": 100}}), ValueError,
     r"past the end of training"),
    ("lottery", "training setting IMP does not use",
     _lottery(spec={"network": {"network_name": "mlp"}, "data": {"dataset_name": "digits"},
                    "sparsity": {"sparsity": 0.9}}), ValueError,
     r"`sparsity.sparsity`=0.9 is not used by IMP"),
    ("lottery", "unknown branch", _branch("nope"), ValueError,
     r"Unknown branch `name` 'nope'; known branches: lottery, reinit"),
    ("oneshot", "unknown pruning-at-init method", _prune_at_init_unknown, ValueError,
     r"'obd'.*snip"),
    ("rigl-train", "unknown gin parameter", _rigl_train(["mask_updater.update_frq = 3"]),
     ValueError, r"Unknown parameter mask_updater.update_frq; did you mean "
     r"mask_updater.update_freq"),
    ("rigl-train", "unknown strategy", _rigl_train(strategy="horovod"), ValueError,
     r"Unknown `--strategy` 'horovod'; known strategies: default, mirrored, multi_worker, tpu"),
    ("rigl-train", "logdir holding a different config, without --overwrite (left unchanged)",
     _logdir_conflict, ValueError, r"`--logdir`=.* holds a run with a different operative "
     r"config .*pass --overwrite"),
    ("rigl-train", "cosine drop fraction with last_update_step -1",
     _rigl_train(["mask_updater.last_update_step = -1"]), ValueError,
     r"`mask_updater.last_update_step` must be > 0 with mask_updater.schedule_alg = "
     r"'cosine'"),
    ("rigl-train", "fresh init with the mask source run's seed (its lottery ticket)",
     _same_init_as_mask_source, ValueError,
     r"`network.mask_init_path`=.* gives this run exactly that run's step-0 weights .*"
     r"set network.allow_same_init = True"),
    ("rigl-train", "mask checkpoint of a network with other shapes", _mismatched_mask_checkpoint,
     ValueError, r"`network.mask_init_path`=.*: the masks in checkpoint .* do not match this "
     r"model"),
    ("rigl-train", "missing mask checkpoint", _rigl_train(
        _TINY + ["network.mask_init_path = '/nonexistent/run'"], dry_run=False),
     FileNotFoundError, r"`network.mask_init_path`='/nonexistent/run': checkpoint "
     r"'/nonexistent/run' not found"),
    ("rigl-train", "NaN loss (last good checkpoint kept)", _nan_loss, FloatingPointError,
     r"Training diverged: `loss` is nan at step \d+; stopped .* Last good checkpoint: .*ckpt-"),
    ("rigl-train", "empty dataset", _empty_dataset, ValueError,
     r"`data.dataset_name`='mnist_idx' .* has no 'train' examples"),
    ("rigl-train", "a layer pruned to nothing", _rigl_train(
        ["sparsity.custom_sparsity = {'dense': 1.0}"]), ValueError,
     r"`custom_sparsity\['dense/kernel'\]` must be in \[0, 1\), got 1.0"),
    ("rigl-train", "unknown non-finite policy", _rigl_train(["training.nonfinite = 'ignore'"]),
     ValueError, r"`training.nonfinite` must be one of 'stop', 'skip'; got 'ignore'"),
    ("rigl-train", "unknown mixed-precision policy",
     _rigl_train(["training.mixed_precision = 'float16'"]), ValueError,
     r"`training.mixed_precision` must be one of 'float32', 'mixed_float16', "
     r"'mixed_bfloat16'; got 'float16'"),
    ("rigl-train", "gradient regularization with --strategy=multi_worker",
     _rigl_train(["training.gradient_regularization = 0.1"], strategy="multi_worker"),
     ValueError, r"`training.gradient_regularization`=0.1 is not supported with "
     r"`--strategy`='multi_worker'"),
    ("tools", "analysis tool pointed at a missing logdir",
     _tool("gradient_flow", "--logdir", os.devnull + "_no_run", "--out_dir",
           os.devnull + "_no_out"), SystemExit, r"error: --logdir.*_no_run"),
    ("tools", "corrupt NPZ mask file given to ticket_stats",
     _tool("ticket_stats", "--overlap", lambda: _corrupt_file("a.npz", b"not an npz"),
           lambda: _corrupt_file("b.npz", b"nope"), "--out_dir", os.devnull + "_no_out"),
     SystemExit, r"error: .*(npz|NPZ|zip)"),
    ("tools", "plot_runs on a missing logdir",
     _tool("plot_runs", "--logdir", os.devnull + "_no_run", "--tag", "x",
           "--out_dir", os.devnull + "_no_out"), SystemExit, r"error: --logdir"),
    ("rigl-train", "logdir in use by another process (left unchanged)", _logdir_in_use,
     RuntimeError, r"`--logdir` '.*' is in use by process \d+ on host .*; wait for it"),
    ("rigl-train", "every checkpoint in the logdir damaged (no silent restart)",
     _all_checkpoints_damaged, ValueError,
     r"`--logdir`=.*: no checkpoint reads back intact \(damaged: .*ckpt-4"),
    ("rigl-train", "empty logdir", _rigl_train(_TINY, logdir=""), ValueError,
     r"`--logdir` must name a directory for this run, got ''"),
    ("rigl-train", "root or home directory as logdir", _rigl_train(_TINY, logdir="/"),
     ValueError, r"`--logdir`='/' is the file-system root or the home directory"),
    ("rigl-train", "truthy string for a boolean",
     _rigl_train(_TINY + ["network.use_batch_norm = 'no'"]), ValueError,
     r"`network.use_batch_norm` must be True or False, got 'no'"),
    ("rigl-train", "truthy string for data.augment",
     _rigl_train(_TINY + ["data.augment = 'no'"]), ValueError,
     r"`data.augment` must be True or False, got 'no'"),
    ("rigl-train", "unknown normalization", _rigl_train(_TINY + ["data.normalization = 'bogus'"]),
     ValueError, r"`data.normalization` must be one of 'unit', 'standardize'; got 'bogus'"),
    ("rigl-train", "non-positive layer width",
     _rigl_train(_TINY + ["network.hidden_sizes = (-3, 16)"]), ValueError,
     r"`network.hidden_sizes` must be a tuple of positive integer widths, got \(-3, 16\)"),
    ("rigl-train", "infinite noise_stddev", _rigl_train(_TINY + ["network.noise_stddev = 1e999"]),
     ValueError, r"`network.noise_stddev` must be a finite number in \[0.0, inf\], got inf"),
    ("rigl-train", "infinite unit_scaled_init.scale",
     _rigl_train(_TINY + ["unit_scaled_init.scale = 1e999"]), ValueError,
     r"`unit_scaled_init.scale` must be a finite number"),
    ("rigl-train", "mask_init_path pointing at a dense run", _dense_mask_run, ValueError,
     r"start at sparsity 0.0000, far below the configured 0.9: the masks loaded from "
     r"`network.mask_init_path`="),
    ("rigl-train", "min_active larger than the layers",
     _rigl_train(_TINY + ["sparsity.min_active = 100000"]), ValueError,
     r"far below the configured 0.9: `sparsity.min_active`=100000"),
    ("rigl-train", "pruning that starts after training ends",
     _rigl_train(_TINY + ["mask_updater.update_alg = ''", "sparsity.sparsity = 0.0",
                          "pruning.final_sparsity = 0.9", "pruning.begin_step = 3000"]),
     ValueError, r"`pruning.begin_step`=3000 is at or past `training.total_steps`=4"),
    ("rigl-train", "gradual pruning ending after training ends",
     _rigl_train(_TINY + ["mask_updater.update_alg = ''", "sparsity.sparsity = 0.0",
                          "pruning.final_sparsity = 0.9", "pruning.mode = 'prune'",
                          "pruning.begin_step = 1", "pruning.end_step = 7000"]),
     ValueError, r"`pruning.end_step`=7000 is past `training.total_steps`=4"),
    ("rigl-train", "DST first mask update after training ends",
     _rigl_train(_TINY + ["mask_updater.update_freq = 100"]), ValueError,
     r"`mask_updater.update_freq`=100 puts the first rigl mask update past "
     r"`training.total_steps`=4, so the topology would never change"),
    ("rigl-train", "DST last_update_step after training ends",
     _rigl_train(_TINY + ["mask_updater.last_update_step = 1500"]), ValueError,
     r"`mask_updater.last_update_step`=1500 is past `training.total_steps`=4, so the rigl "
     r"updates \('cosine' drop-fraction schedule\) would be cut off"),
    ("rigl-train", "DST last_update_step before the first update",
     _rigl_train(_TINY + ["mask_updater.update_freq = 3", "mask_updater.last_update_step = 2"]),
     ValueError, r"`mask_updater.last_update_step`=2 is before the first rigl mask update "
     r"\(`mask_updater.update_freq`=3\), so the topology would never change"),
    ("rigl-train", "pruning next to a DST updater, starting after training ends",
     _rigl_train(_TINY + ["pruning.final_sparsity = 0.9", "pruning.begin_step = 100000000"]),
     ValueError, r"`pruning.begin_step`=100000000 is at or past `training.total_steps`=4, so "
     r"pruning to `pruning.final_sparsity`=0.9 would be silently ignored next to "
     r"`mask_updater.update_alg`='rigl'"),
    ("SparseWrapper", "loading a .keras file whose masks hold 0.5", _half_mask_keras_file,
     ValueError, r"saved mask .* must contain only 0 and 1, got 64 other values \(e.g. 0.5\)"),
    ("export", "SavedModel export into a directory holding other files", _export_into_user_dir,
     FileExistsError, r"`path`=.* is an existing directory holding other files \(notes.txt\)"),
    ("export", "compressed save onto a directory holding other files",
     _compressed_into_user_dir, FileExistsError,
     r"`path`=.* is an existing directory holding other files \(notes.txt\)"),
    ("rigl-lottery", "IMP run directory in use by another process", _imp_run_dir_in_use,
     RuntimeError, r"IMP run directory '.*' is in use by process \d+"),
    ("lottery", "IMPRun (library) on a run directory another process holds",
     _imp_library_run_dir_in_use, RuntimeError,
     r"^IMP run directory '.*' is in use by process \d+ on host"),
    ("rigl-lottery", "imp.rewind_step past the end of training",
     _imp_rewind_past_the_end, ValueError,
     r"^`rewind_step`=5 \(step 5\) is past the end of training: it must be < the 2 "
     r"training steps"),
    ("lottery", "IMP level whose training loss diverges", _imp_level_diverges,
     FloatingPointError,
     r"^IMP level 0 \(level_00/\) diverged \(`loss` is (nan|inf) at step \d+\); nothing of "
     r"it is marked finished"),
    ("rigl-lottery", "damaged config.json in the run directory", _imp_damaged("config.json"),
     ValueError, r"'.*config.json' is damaged \(not valid JSON"),
    ("rigl-lottery", "damaged mask.npz of a finished level",
     _imp_damaged(os.path.join("level_00", "mask.npz")), ValueError,
     r"'.*level_00/mask.npz' is damaged \(not a readable .npz archive"),
    ("tools", "output directory that is a file",
     _tool("distances", "--checkpoint", "x", "--checkpoint", "y", "--out_dir",
           lambda: _corrupt_file("out", b"a file")), SystemExit,
     r"error: --out_dir: .* is a file; give a directory"),
    ("tools", "similarity --out naming a directory with other files (left unchanged)",
     _tool("similarity", "--method", "A=x,y", "--out", _dir_with_user_files, "--overwrite"),
     SystemExit, r"error: --out: .* is a directory; give a file path"),
]
