"""rigl-lottery: every config parses, a tiny run resumes, flags coexist with rigl-train."""

import glob
import os

import pytest

from rigl_tf.lottery import IMPConfig, RunDirConflictError
from rigl_tf.lottery import main as lottery_main

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "lottery")
ALL = sorted(glob.glob(os.path.join(CONFIGS, "*.gin")))
TINY = ["network.hidden_sizes = (16,)", "training.total_steps = 5",
        "lottery_run.levels = 1", "lottery_run.branches = ['lottery', 'shuffle_mask']"]


def test_every_lottery_config_parses_and_builds():
    names = {os.path.basename(p) for p in ALL}
    for arch in ("mnist_lenet5", "fashion_mnist_lenet5", "fashion_mnist_mlp"):
        assert {f"{arch}_init.gin", f"{arch}_step.gin"} <= names
    assert "quickstart_imp.gin" in names
    for path in ALL:
        lottery_main.parse([path])
        config, train_spec, spec = lottery_main.resolve()
        assert isinstance(config, IMPConfig)
        assert config.prune_fraction == 0.2, path
        assert config.rewinding == ("step" if path.endswith("_step.gin") else "init"), path
        dataset = train_spec.data.dataset_name
        if "fashion_mnist" in path:
            assert dataset == "fashion_mnist_idx", path
        if path.endswith("quickstart_imp.gin"):
            assert dataset == "digits" and spec.levels == 3
        else:
            # 10 epochs of 60000 examples at batch 128 per level.
            assert spec.levels == 10 and train_spec.training.total_steps == 4680, path
            assert train_spec.training.batch_size == 128, path


@pytest.mark.slow
def test_tiny_run_resumes_and_refuses_another_config(tmp_path, capsys):
    qs = os.path.join(CONFIGS, "quickstart_imp.gin")
    out = lottery_main.run_lottery([qs], TINY, root_dir=str(tmp_path), progress="lines")
    assert [m["level"] for m in out["levels"]] == [0, 1]
    assert [b["branch"] for b in out["branches"]] == ["lottery", "shuffle_mask"]
    assert os.path.exists(os.path.join(out["run_dir"], lottery_main.OPERATIVE_CONFIG))
    captured = capsys.readouterr()
    assert "test acc" in captured.out
    # One status line per trained level (levels 0 and 1 of 2), the first with an ETA.
    status = [ln for ln in captured.err.splitlines() if ln.startswith("IMP levels trained")]
    assert status[0].startswith("IMP levels trained 1/2 50%") and "ETA" in status[0], status
    assert status[-1].startswith("IMP levels trained 2/2 100%"), status
    again = lottery_main.run_lottery([qs], TINY, root_dir=str(tmp_path))
    assert "levels 0..1 are finished" in capsys.readouterr().out
    assert again["levels"] == out["levels"]
    with pytest.raises(RunDirConflictError, match="scope: run dir has 'global'"):
        lottery_main.run_lottery([qs], TINY + ["imp.scope = 'layerwise'"],
                                 run_dir=out["run_dir"])


def test_gin_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"Unknown parameter `imp.prune_fractoin`. Did you "
                                         r"mean prune_fraction\?"):
        lottery_main.parse([], ["imp.prune_fractoin = 3"])
    # The former IMP names of shared parameters point to rigl-train's vocabulary.
    with pytest.raises(ValueError, match=r"`imp.train_steps` is now `training.total_steps`"):
        lottery_main.parse([], ["imp.train_steps = 3"])
    with pytest.raises(ValueError, match=r"`imp.learning_rate` is now "
                                         r"`optimizer.learning_rate`"):
        lottery_main.parse([], ["imp.learning_rate = 0.1"])
    lottery_main.parse([], ["sparsity.sparsity = 0.9"])
    with pytest.raises(ValueError, match=r"`sparsity.sparsity`=0.9 is not used by IMP"):
        lottery_main.resolve()
    lottery_main.parse([], ["imp.prune_fraction = 1.5"])
    with pytest.raises(ValueError, match="`prune_fraction`.*1.5"):
        lottery_main.imp()
    lottery_main.parse([], ["lottery_run.branches = ['lotery']"])
    with pytest.raises(ValueError, match="Unknown branch 'lotery'"):
        lottery_main.lottery_run()
    with pytest.raises(FileNotFoundError, match="nope.gin"):
        lottery_main.parse(["nope.gin"])


def test_flags_coexist_with_rigl_train():
    from absl import flags

    from rigl_tf.experiments import train  # noqa: F401  (defines --gin_config too)

    lottery_main._define_flags()
    lottery_main._define_flags()
    assert "root_dir" in flags.FLAGS and "gin_config" in flags.FLAGS
