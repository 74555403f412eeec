"""Gin vocabulary of rigl-train: every config file parses and builds; errors are clear."""

import glob
import os

import gin
import keras
import numpy as np
import pytest

from rigl_tf.experiments import config as config_lib
from rigl_tf.experiments import train

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
# configs/lottery/ holds the IMP driver's configs (rigl-lottery, its own vocabulary and
# tests); every other file is a rigl-train config.
OTHER_BINARIES = ("lottery",)
ALL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(CONFIGS, "**", "*.gin"), recursive=True)
    if os.path.relpath(p, CONFIGS).split(os.sep)[0] not in OTHER_BINARIES
)


def _rel(path):
    return os.path.relpath(path, CONFIGS)


def _parse(*bindings, files=()):
    config_lib.parse(files, bindings)
    return config_lib.resolve()


def test_configs_directory_has_the_expected_experiments():
    names = {_rel(p) for p in ALL_CONFIGS}
    for arch in ("mnist_lenet5", "mnist_mlp", "fashion_mnist_lenet5", "fashion_mnist_mlp"):
        for exp in ("dense", "small_dense", "prune", "lottery", "scratch", "set", "rigl",
                    "rigl_inverted", "snip", "grasp"):
            assert f"{arch}/{exp}.gin" in names
    for exp in ("dense", "prune", "rigl", "set", "scratch", "lottery"):
        assert f"cifar10_resnet20/{exp}.gin" in names
    for arch in ("imagenet_resnet50", "imagenet_vgg16"):
        for exp in ("dense", "rigl", "set", "prune"):
            assert f"{arch}/{exp}.gin" in names
    for name in ("hessian.gin", "interpolate.gin", "quickstart.gin"):
        assert name in names


def test_every_config_parses_and_resolves():
    # One test over all files (the per-test Keras reset costs more than a parse).
    assert len(ALL_CONFIGS) >= 60
    for path in ALL_CONFIGS:
        spec = _parse(files=[path])
        text = config_lib.operative_config()
        analysis = config_lib.resolve_analysis()
        assert "hessian." not in text  # analysis settings stay out of a run's identity
        if path.endswith("hessian.gin"):
            assert len(analysis["hessian"]["ckpt_ids"]) > 20
        if path.endswith("interpolate.gin"):
            assert analysis["interpolate"]["n_interpolation"] == 29
        assert "training.total_steps" in text and "network.network_name" in text, path
        if "fashion_mnist" in path:
            assert spec.data.dataset_name == "fashion_mnist_idx", path
        if path.endswith(("rigl.gin", "set.gin")):
            assert spec.mask_updater.update_alg in ("rigl", "set"), path
            # Sparse from step 0: a random topology, or the pruning run's masks.
            assert spec.sparsity.sparsity > 0 or spec.network.mask_init_path, path
        if path.endswith("prune.gin"):
            assert spec.pruning_active and spec.sparsity.sparsity == 0.0, path
        if path.endswith("lottery.gin"):
            assert spec.network.mask_init_path and spec.network.weight_init_path, path
        if path.endswith(("snip.gin", "grasp.gin")):
            assert spec.oneshot_sparsity > 0.9, path


@pytest.mark.parametrize("arch", ["mnist_lenet5", "mnist_mlp", "fashion_mnist_lenet5",
                                  "fashion_mnist_mlp"])
def test_paper_configs_have_the_papers_table_4_and_5_values(arch):
    """The gradient-flow paper's Tables 4 (LeNet5) and 5 (MLP), written out by hand."""
    def load(exp):
        return _parse(files=[os.path.join(CONFIGS, arch, f"{exp}.gin")])

    hidden = (6, 16, 120, 84) if "lenet5" in arch else (300, 100)
    for exp in ("dense", "prune", "lottery", "scratch", "scratch_plus", "set", "rigl",
                "rigl_inverted", "small_dense", "snip", "grasp"):
        spec = load(exp)
        assert (spec.training.total_steps, spec.training.batch_size) == (11719, 128), exp
        assert (spec.optimizer.name, spec.optimizer.learning_rate, spec.optimizer.momentum,
                spec.optimizer.schedule, spec.optimizer.warmup_steps) == (
                    "momentum", 0.05, 0.9, "cosine", 0), exp
        assert spec.network.network_name == arch.split("_")[-1], exp
        assert spec.network.model_kwargs["hidden_sizes"] == hidden, exp
        assert spec.network.model_kwargs["use_batch_norm"] is False, exp
        # Section 4.3 runs have no weight decay; sections 4.1 / 4.2 use 5e-4.
        wd = 0.0005 if exp in ("scratch_plus", "set", "rigl", "rigl_inverted") else 0.0
        assert spec.network.weight_decay == wd, exp
    p = load("prune").pruning
    assert (p.mode, p.initial_sparsity, p.final_sparsity, p.begin_step, p.end_step,
            p.frequency, p.power, p.scope, p.distribution) == (
                "prune", 0.0, 0.95, 3000, 7000, 100, 3.0, "layerwise", "uniform")
    prune_dir = f"/tmp/rigl_tf/{arch}/prune"
    for exp in ("set", "rigl", "rigl_inverted"):
        mu = load(exp).mask_updater
        assert (mu.update_alg, mu.schedule_alg, mu.init_drop_fraction, mu.update_freq,
                mu.last_update_step) == (exp, "lr", 0.3, 500, -1)
    # SET / RigL / Scratch / Scratch+ all start from the pruning run's final masks (the
    # reference's mask_init_path), so every comparison shares the pruning layout.
    for exp in ("set", "rigl", "rigl_inverted", "scratch", "scratch_plus", "lottery"):
        spec = load(exp)
        assert spec.network.mask_init_path == prune_dir, exp
        assert spec.sparsity.sparsity == 0.0, exp
    lottery = load("lottery").network
    assert lottery.weight_init_path == prune_dir + ":0"
    plus = load("scratch_plus")
    assert plus.network.weight_init_method == "unit_scaled"
    assert (plus.unit_scaled_init.method, plus.unit_scaled_init.scale) == ("fanavg_uniform", 1.0)
    assert load("scratch").network.weight_init_method is None
    assert load("small_dense").network.small_dense_density == 0.05
    assert load("snip").oneshot_sparsity == load("grasp").oneshot_sparsity == 0.95


def test_includes_resolve_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _parse(files=[os.path.join(os.path.abspath(CONFIGS), "fashion_mnist_mlp", "rigl.gin")])
    assert spec.network.network_name == "mlp" and spec.mask_updater.update_alg == "rigl"


def test_fast_dry_run_of_representative_configs(capsys):
    for name in ("quickstart.gin", "mnist_lenet5/rigl.gin", "mnist_mlp/lottery.gin"):
        # The paper's LeNet5 needs 16x16 images; digits are 8x8.
        out = train.run_experiment([os.path.join(CONFIGS, name)],
                                   ["data.dataset_name='digits'", "data.image_size=16"],
                                   dry_run=True, verbose=1)
        assert out["dry_run"]
        assert "total" in out["summary"] and "updater" in out["summary"]
    printed = capsys.readouterr().out
    assert "Dry run: nothing trained or written." in printed
    # The lottery config names a pruning run that does not exist: reported, not fatal.
    assert "a real run would fail here" in printed


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_rel)
def test_every_config_dry_run_builds(path, tmp_path):
    from rigl_tf.experiments import datasets

    if "fashion_mnist" in path and not os.path.isdir(datasets.FASHION_MNIST_IDX_DIR):
        pytest.skip("Debian package dataset-fashion-mnist not installed (.ci/run installs it)")
    bindings = []
    if "imagenet" in path:  # same graph, small enough for CI
        bindings = ["data.image_size = 32", "network.width_multiplier = 0.125"]
    out = train.run_experiment([path], bindings, logdir=str(tmp_path / "run"), dry_run=True,
                               verbose=0)
    assert out["dry_run"] and "total" in out["summary"]
    assert not os.path.exists(tmp_path / "run")  # a dry run writes nothing


def test_unknown_parameter_gets_a_did_you_mean_hint():
    with pytest.raises(ValueError) as e:
        _parse("training.total_stepz = 5")
    msg = str(e.value)
    assert "total_stepz" in msg and "did you mean training.total_steps" in msg


def test_unknown_configurable_gets_a_hint():
    with pytest.raises(ValueError, match="did you mean training"):
        _parse("trainng.total_steps = 5")
    with pytest.raises(ValueError, match="network.hidden_sizes"):
        _parse("lenet5.hidden_sizes = (6, 16, 120, 84)")


@pytest.mark.parametrize("binding, fragment", [
    ("training.total_steps = 0", "`training.total_steps` must be an integer >= 1, got 0"),
    ("optimizer.name = 'adagrad'", "`optimizer.name` must be one of"),
    ("mask_updater.update_alg = 'rigll'", "`mask_updater.update_alg` must be one of"),
    ("sparsity.sparsity = 1.0", "`sparsity.sparsity` must be a number in [0.0, 1.0)"),
    ("sparsity.distribution = 'erk2'", "'erk2'"),
    ("network.network_name = 'lenet7'", "`network.network_name` must be one of"),
    ("data.dataset_name = 'mnist2'", "`data.dataset_name` must be one of"),
    ("mask_updater.use_stateless = False", "use_stateless"),
    ("optimizer.weight_decay = 0.1", "only applies to optimizer.name='adamw'"),
    ("pruning.mode = 'gradual'", "`pruning.mode` must be one of 'prune', 'constant'"),
])
def test_bad_values_name_the_parameter(binding, fragment):
    with pytest.raises(ValueError) as e:
        _parse(binding)
    assert fragment in str(e.value)


def test_incompatible_combinations_are_refused():
    with pytest.raises(ValueError, match="one run has one mask updater"):
        _parse("pruning.final_sparsity = 0.9", "mask_updater.update_alg = 'rigl'")
    with pytest.raises(ValueError, match="needs a target"):
        _parse("mask_updater.update_alg = 'snip'")
    with pytest.raises(ValueError, match="oneshot_prune_fraction"):
        _parse("training.oneshot_prune_fraction = 0.9")
    # The original configs' idiom: final_sparsity 0 (their huge begin_step is harmless).
    spec = _parse("pruning.final_sparsity = 0.0", "pruning.begin_step = 100000000",
                  "mask_updater.update_alg = 'rigl'")
    assert not spec.pruning_active and spec.mask_updater.update_alg == "rigl"


# Each refusal: (bindings on top of a 40-step run, message parts written by hand).
_SHORT = ("training.total_steps = 40",)


@pytest.mark.parametrize("bindings, parts", [
    # RigL every 100 steps: the first update (step 100) never comes in 40 steps.
    (("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 100"),
     ["`mask_updater.update_freq`=100", "first rigl mask update past",
      "`training.total_steps`=40", "in [1, 40]"]),
    (("mask_updater.update_alg = 'set'", "mask_updater.update_freq = 10",
      "mask_updater.start_step = 41"),
     ["`mask_updater.start_step`=41", "first set mask update past", "in [1, 40]"]),
    # Updates until step 41 of a 40-step run: cut off, whatever the drop-fraction schedule.
    (("mask_updater.update_alg = 'snfs'", "mask_updater.update_freq = 10",
      "mask_updater.last_update_step = 41"),
     ["`mask_updater.last_update_step`=41 is past `training.total_steps`=40",
      "in [1, 40] or -1 for updates until the end"]),
    (("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 10",
      "mask_updater.schedule_alg = 'cosine'", "mask_updater.last_update_step = 1500"),
     ["`mask_updater.last_update_step`=1500 is past `training.total_steps`=40",
      "'cosine' drop-fraction schedule", "in [1, 40] (the reference"]),
    # The last update (step 5) before the first (step 10): no update at all.
    (("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 10",
      "mask_updater.last_update_step = 5"),
     ["`mask_updater.last_update_step`=5 is before the first rigl mask update "
      "(`mask_updater.update_freq`=10)", "in [10, 40] or -1 for updates until the end",
      "or 0 to switch the updates off"]),
    # Pruning switched on next to a DST updater but starting after the end: never prunes.
    (("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 10",
      "pruning.final_sparsity = 0.9", "pruning.begin_step = 100000000"),
     ["`pruning.begin_step`=100000000 is at or past `training.total_steps`=40",
      "`pruning.final_sparsity`=0.9 would be silently ignored",
      "`mask_updater.update_alg`='rigl'", "set pruning.final_sparsity = 0"]),
])
def test_schedules_that_cannot_happen_within_the_run_are_refused(bindings, parts):
    with pytest.raises(ValueError) as e:
        _parse(*(_SHORT + bindings))
    for part in parts:
        assert part in str(e.value), (part, str(e.value))


@pytest.mark.parametrize("bindings", [
    # An update at the last step happens (right after step 40).
    ("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 40"),
    ("mask_updater.update_alg = 'rigl'", "mask_updater.update_freq = 10",
     "mask_updater.schedule_alg = 'cosine'", "mask_updater.last_update_step = 40"),
    # -1: until the end; 0: never (explicit choices, not a schedule cut short).
    ("mask_updater.update_alg = 'set'", "mask_updater.update_freq = 10",
     "mask_updater.last_update_step = -1"),
    ("mask_updater.update_alg = 'set'", "mask_updater.update_freq = 100",
     "mask_updater.last_update_step = 0"),
])
def test_schedules_that_fit_the_run_are_accepted(bindings):
    assert _parse(*(_SHORT + bindings)).training.total_steps == 40


def test_build_updater_maps_the_vocabulary():
    spec = _parse("mask_updater.update_alg = 'snfs'", "mask_updater.update_freq = 7",
                  "mask_updater.last_update_step = 70", "mask_updater.schedule_alg = 'cosine'")
    up = config_lib.build_updater(spec, seed=3)
    cfg = up.get_config()
    assert (cfg["name"], cfg["update_freq"], cfg["end_step"], cfg["schedule_alg"],
            cfg["seed"]) == ("snfs", 7, 70, "cosine", 3)
    spec = _parse("pruning.mode = 'prune'", "pruning.final_sparsity = 0.8",
                  "pruning.begin_step = 10", "pruning.end_step = 50", "pruning.scope = 'global'")
    cfg = config_lib.build_updater(spec, 0).get_config()
    assert (cfg["name"], cfg["schedule"], cfg["final_sparsity"], cfg["scope"]) == (
        "magnitude", "polynomial", 0.8, "global")
    spec = _parse("pruning.mode = 'constant'", "pruning.final_sparsity = 0.5",
                  "pruning.method = 'random'")
    cfg = config_lib.build_updater(spec, 0).get_config()
    assert (cfg["name"], cfg["schedule"]) == ("random", "constant")
    assert config_lib.build_updater(_parse(), 0).name == "static"


def test_learning_rate_schedules():
    spec = _parse("optimizer.learning_rate = 1.0", "optimizer.schedule = 'step'",
                  "optimizer.boundaries = (10, 20)", "optimizer.decay_factor = 0.1",
                  "optimizer.warmup_steps = 5")
    lr = config_lib.build_learning_rate(spec.optimizer, 30)
    got = [float(lr(s)) for s in (0, 1, 5, 9, 10, 19, 20, 29)]
    np.testing.assert_allclose(got, [0.0, 0.2, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    spec = _parse("optimizer.learning_rate = 2.0", "optimizer.schedule = 'cosine'")
    lr = config_lib.build_learning_rate(spec.optimizer, 100)
    np.testing.assert_allclose([float(lr(0)), float(lr(50)), float(lr(100))], [2.0, 1.0, 0.0],
                               atol=1e-6)
    spec = _parse("optimizer.schedule = 'constant'", "optimizer.learning_rate = 0.3")
    assert config_lib.build_learning_rate(spec.optimizer, 100) == 0.3


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("momentum", "SGD"), ("adam", "Adam"),
                                       ("rmsprop", "RMSprop"), ("adamw", "AdamW")])
def test_build_optimizer(name, cls):
    spec = _parse(f"optimizer.name = '{name}'", "optimizer.clipnorm = 1.0",
                  "optimizer.nesterov = True" if name == "momentum" else "")
    opt = config_lib.build_optimizer(spec.optimizer, 100)
    assert type(opt).__name__ == cls and opt.clipnorm == 1.0
    if name == "momentum":
        assert opt.momentum == 0.9 and opt.nesterov
    if name == "sgd":
        assert opt.momentum == 0.0


def test_operative_config_records_every_role():
    _parse("network.hidden_sizes = (8,)")
    text = config_lib.operative_config()
    for role in ("training", "optimizer", "network", "unit_scaled_init", "pruning",
                 "mask_updater", "sparsity", "data"):
        assert f"{role}." in text
    assert "network.hidden_sizes = (8,)" in text


def test_gin_stays_out_of_the_library():
    root = os.path.join(os.path.dirname(__file__), os.pardir, "rigl_tf")
    for sub in ("keras", "sparsity"):
        for path in glob.glob(os.path.join(root, sub, "*.py")):
            with open(path) as f:
                assert "import gin" not in f.read(), path


def teardown_module(module):
    gin.clear_config()
    keras.backend.clear_session()
