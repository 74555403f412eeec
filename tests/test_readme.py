"""Every Python and shell code block of README.md is executed (small data, few steps).

Blocks are extracted generically (any ```python / ```bash / ```sh / ```shell fence), so
a block added to the README is run without touching this file. What runs differs from
the README text only by the documented substitutions below:

* all blocks: ``/tmp/`` becomes a fresh temporary directory; the working directory is an
  empty directory (configs are found by name, as installed);
* shell blocks run as a user of a non-editable install would: the package is built into a
  wheel and installed with ``pip install --target``, whose directory alone is on
  ``PYTHONPATH`` (not the checkout) and whose console scripts come first on ``PATH``;
  ``rigl-train`` and ``rigl-lottery`` are shell functions that append tiny-step gin
  bindings (``TINY_TRAIN`` / ``_tiny_lottery()``: the offline ``digits`` data, 20 steps;
  ``TINY_PER_CONFIG``); the analysis commands run on those tiny runs;
* ``SPECIAL``: per-block replacements (undefined placeholders such as ``x, y``, epochs,
  the analysis block's step numbers and example counts) and the few blocks that cannot
  run here (installing into a fresh venv, the full test suite, a multi-machine cluster),
  each with its reason.

Shell blocks share one temporary directory and run in README order, since later blocks
(analysis) read the runs earlier blocks (training) made; the whole chain takes several
minutes, so it is marked slow. The Python blocks run against the checkout.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
LANGS = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}

# Tiny training for every README rigl-train command (digits, LeNet5 at 16x16, 20 steps,
# schedules squeezed into them); the analysis commands read these runs.
TINY_TRAIN = [
    "data.dataset_name='digits'", "training.total_steps=20",
    "training.batch_size=32", "training.val_batch_size=120", "training.save_freq=10",
    "training.log_freq=10", "training.max_train_eval_examples=200", "pruning.begin_step=4",
    "pruning.end_step=12", "pruning.frequency=4", "mask_updater.update_freq=5",
    # updates after steps 5, 10, 15 (the DST configs' last_update_step is past 20 steps)
    "mask_updater.last_update_step=15",
    "hessian.ckpt_ids=[10]", "hessian.batch_size=50", "hessian.rows_at_once=256",
]


def _tiny_lottery():
    text = open(os.path.join(ROOT, "configs", "lottery", "quickstart_imp.gin")).read()
    steps = "imp.train_steps" if "imp.train_steps" in text else "training.total_steps"
    return [f"{steps}=20", "lottery_run.levels=3"]


# Per config: LeNet5's 'valid' 5x5 convolutions need more than digits' 8x8 pixels; the
# quickstart MLP keeps 8x8 pixels and gets narrower layers, so the analysis block's exact
# Hessian of it has ~1,000 coordinates instead of ~5,400 (eigh of that took ~1.5 min per
# checkpoint on 2 busy cores).
TINY_PER_CONFIG = {"lenet5": "data.image_size=16", "quickstart": "network.hidden_sizes=(64, 32)"}


def _shell_prelude():
    train = " ".join(f'--gin_bindings="{b}"' for b in TINY_TRAIN)
    lottery = " ".join(f'--gin_bindings="{b}"' for b in _tiny_lottery())
    return "\n".join([
        "set -euo pipefail",
        f'rigl-train() {{ local extra=(); case "$*" in '
        + "".join(f'*{k}*) extra=(--gin_bindings="{v}");; ' for k, v in TINY_PER_CONFIG.items())
        + 'esac; '
        f'command rigl-train "$@" {train} "${{extra[@]}}" --progress=off; }}',
        f'rigl-lottery() {{ command rigl-lottery "$@" {lottery}; }}',
    ]) + "\n"


PY_DATA = ("import numpy as np\n"
           "x = np.random.default_rng(0).random((256, 28, 28, 1), dtype=np.float32)\n"
           "y = np.random.default_rng(1).integers(0, 10, 256)\n")

# (text identifying the block, replacements [(old, new)] or "skip: reason", prelude).
SPECIAL = [
    ("python3 -m venv .venv", "skip: installs the package into a new venv and runs the whole "
     "test suite (CI's .ci/run does exactly this); its rigl-train command is run from the "
     "'rigl-train --gin_config=configs/quickstart.gin' block", None),
    ("sparse.fit(x, y, batch_size=128, epochs=10)",
     [("epochs=10", "epochs=1")], PY_DATA),  # x, y: a small random batch
    ("def train_step(x, y):", [], "import keras, tensorflow as tf, rigl_tf\n"
     "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])\n"
     "model = rigl_tf.sparsify(model, 0.5, 'uniform')\n"
     "loss_fn = keras.losses.MeanSquaredError()\n"
     "optimizer = rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1), rigl_tf.updaters.RigL("
     "update_freq=1, init_drop_fraction=0.3, end_step=5))\n"
     "optimizer.build(model.trainable_variables)\n"),
    ("rigl-reproduce --out_dir", "skip: trains dozens of runs even with --budget=quick (the "
     "command has no smaller budget; its pipeline is tested in tests/test_reproduce.py)",
     None),
    ("TF_CONFIG=", "skip: needs two machines and a gs:// bucket (multi-worker training is "
     "tested with local worker processes in tests/test_multiworker.py)", None),
    ("tensorboard --logdir", [("tensorboard --logdir", "tensorboard --inspect --logdir"),
                              ('pip install "rigl_tf[tensorboard]"', "true")], None),
    # The analysis commands run on the tiny workflow runs (20 steps, checkpoints 0, 10, 20):
    ("rigl-ticket-stats --evolution", [
        # the RigL config's first update is at step 500; the tiny RigL run updates after
        # steps 5, 10 and 15 (mask_updates/{before,after}/ckpt-5 exist)
        ("/tmp/fm/rigl:500", "/tmp/fm/rigl:5"),
        # the paper's checkpoints of an 11719-step run; the tiny runs save 0, 10 and 20
        ("--steps 0,1000,3000,6000,11719", "--steps 0,10,20"),
        ("/tmp/fm/prune:1000", "/tmp/fm/prune:10"),
        # fewer examples for the gradient norms and the Hessian trajectory ...
        ("--num_examples 1000", "--num_examples 100"),
        # ... and fewer probe vectors and Lanczos steps (this checks the command, not the
        # estimate; SLQ itself is tested in tests/test_analysis_hessian.py)
        ("--method slq", "--method slq --num_probes 2 --num_steps 20"),
        # --num_examples 0 (the whole digits training set) stays: ~15 s per checkpoint
    ], None),
]


def readme_blocks(text=None):
    """``(line, lang, code)`` of every Python/shell fenced block (lang 'python'/'shell')."""
    text = open(README, encoding="utf-8").read() if text is None else text
    out = []
    for m in re.finditer(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        lang = LANGS.get(m.group(1).lower())
        if lang:
            out.append((text.count("\n", 0, m.start()) + 1, lang, m.group(2)))
    return out


def _special(code):
    found = [s for s in SPECIAL if s[0] in code]
    assert len(found) <= 1, f"several SPECIAL rules match one block: {[s[0] for s in found]}"
    return found[0] if found else None


def prepare(code, rt):
    """The code to run for a block (None if skipped), with every substitution applied."""
    special = _special(code)
    prelude = ""
    if special is not None:
        _, action, prelude = special
        if isinstance(action, str):
            return None
        for old, new in action:
            assert old in code, f"substitution {old!r} no longer matches its block"
            code = code.replace(old, new)
        prelude = prelude or ""
    return prelude + code.replace("/tmp/", rt.rstrip("/") + "/")


def test_extraction_and_rules_on_hand_made_text():
    text = ("x\n```python\nprint(1)\n```\n```bash\necho /tmp/a\n```\n```\nnot code\n```\n"
            "```text\nno\n```\n")
    blocks = readme_blocks(text)
    assert [(b[0], b[1]) for b in blocks] == [(2, "python"), (5, "shell")]
    assert prepare(blocks[1][2], "/x/rt") == "echo /x/rt/a\n"


def test_every_special_rule_matches_a_readme_block():
    codes = [c for _, _, c in readme_blocks()]
    stale = [s[0] for s in SPECIAL if not any(s[0] in c for c in codes)]
    assert not stale, f"SPECIAL rules for blocks no longer in the README: {stale}"
    assert len(codes) >= 8


def _env(rt):
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["RT"] = rt
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _python_blocks():
    return [(line, code) for line, lang, code in readme_blocks() if lang == "python"]


@pytest.mark.parametrize("line,code", _python_blocks(),
                         ids=[f"line{line}" for line, _ in _python_blocks()])
def test_python_block_runs(line, code, tmp_path):
    rt = str(tmp_path / "rt")
    os.makedirs(rt)
    source = prepare(code, rt)
    if source is None:
        pytest.skip(_special(code)[1])
    proc = subprocess.run([sys.executable, "-c", source], cwd=rt, env=_env(rt),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"README line {line}:\n{source}\n{proc.stderr[-3000:]}"


def _install(tmp):
    """A non-editable install of this checkout: build a wheel, ``pip install --target``.

    The wheel is built from a copy of the checkout, so no ``build/`` or ``*.egg-info`` is
    left in it; dependencies are not installed (the test environment has them). Returns
    the target directory (its ``bin/`` holds the console scripts).
    """
    src, wheels, target = (os.path.join(tmp, d) for d in ("src", "wheels", "site"))
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "build", "dist", "*.egg-info", ".venv", ".pytest_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Without setuptools in the environment (a fresh Python 3.12 venv), let pip fetch it.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    cmd = pip + ["wheel", "--no-deps", *isolation, "-w", wheels, src]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    (wheel,) = glob.glob(os.path.join(wheels, "rigl_tf-*.whl"))
    cmd = pip + ["install", "--no-deps", "--target", target, wheel]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return target


def _installed_env(rt, target):
    """The environment of a user of the installed package: ``target`` (never the checkout)
    on ``PYTHONPATH``, its console scripts first on ``PATH``."""
    env = _env(rt)
    env["PYTHONPATH"] = target
    env["PATH"] = os.path.join(target, "bin") + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return _install(str(tmp_path_factory.mktemp("install")))


@pytest.mark.slow
def test_installed_package_is_what_runs(installed, tmp_path):
    """The wheel install is imported, ships the configs and its scripts are on PATH."""
    rt = str(tmp_path / "rt")
    os.makedirs(rt)
    env = _installed_env(rt, installed)
    probe = ("import os, rigl_tf, rigl_tf.experiments.config as c\n"
             "print(os.path.dirname(rigl_tf.__file__)); print(c.CONFIGS_DIR)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=rt, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, configs = proc.stdout.split()
    assert package == os.path.join(installed, "rigl_tf")
    assert configs == os.path.join(installed, "rigl_tf", "configs")
    shipped = sorted(os.path.relpath(f, os.path.join(ROOT, "configs"))
                     for f in glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"),
                                        recursive=True))
    assert shipped and all(os.path.isfile(os.path.join(configs, f)) for f in shipped)
    cmd = ("command -v rigl-train rigl-hessian rigl-ticket-stats && "
           "rigl-train --gin_config=mnist_lenet5/prune.gin --dry_run")
    proc = subprocess.run(["bash", "-c", cmd], cwd=rt, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.split()[:3] == [os.path.join(installed, "bin", n) for n in
                                       ("rigl-train", "rigl-hessian", "rigl-ticket-stats")]


@pytest.mark.slow
def test_shell_blocks_run_in_order(installed, tmp_path):
    """All shell blocks in README order in one empty directory (later blocks use earlier
    runs), as a user of a non-editable install: the package, its configs and its console
    scripts come from a wheel installed with ``pip install --target``; the checkout is
    neither on ``PYTHONPATH`` nor the working directory."""
    rt = str(tmp_path / "rt")
    os.makedirs(rt)
    env = _installed_env(rt, installed)
    ran = 0
    for line, lang, code in readme_blocks():
        if lang != "shell":
            continue
        source = prepare(code, rt)
        if source is None:
            continue
        proc = subprocess.run(["bash", "-c", _shell_prelude() + source], cwd=rt,
                              env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, (
            f"README line {line}:\n{source}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}")
        ran += 1
    assert ran >= 4
