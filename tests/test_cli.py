"""The installed commands: --help lists their own flags fast (TensorFlow not imported),
TensorFlow's C++ log level, progress modes, the start-up parameter counts."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANALYSIS = ("gradient_flow", "hessian", "interpolate", "similarity", "distances",
            "ticket_stats", "plot_runs")


def test_rigl_train_help_lists_its_flags_with_their_meaning():
    code = ("import sys; sys.argv[0] = 'rigl-train'\n"
            "from rigl_tf.commands import train\ntrain.run()")
    proc = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    for flag in ("--gin_config:", "--gin_bindings:", "--logdir:", "--seed:", "--progress:",
                 "--[no]dry_run:", "--[no]overwrite:", "--strategy:"):
        assert flag in out, flag
    assert "Gin config files" in out and "one log line per training.log_freq steps" in out
    assert "Traceback" not in out


def test_rigl_train_help_does_not_import_tensorflow():
    code = ("import sys; sys.argv[0] = 'rigl-train'\n"
            "from rigl_tf.commands import train\n"
            "try:\n    train.run()\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    proc = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.strip().endswith("NO-TF"), proc.stdout[-500:] + proc.stderr[-500:]


@pytest.mark.parametrize("name", ANALYSIS)
def test_analysis_help_lists_flags_without_importing_tensorflow(name):
    code = (f"import sys; sys.argv[0] = 'rigl-{name.replace('_', '-')}'\n"
            f"from rigl_tf.commands.{name} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().endswith("NO-TF"), proc.stdout[-500:] + proc.stderr[-500:]
    assert f"usage: rigl-{name.replace('_', '-')}" in proc.stdout
    assert "--out" in proc.stdout or "--list_tags" in proc.stdout


def test_tf_log_level_default_and_user_choice():
    from rigl_tf.commands import _cli

    code = ("import os; from rigl_tf.commands import _cli; _cli.quiet_tensorflow(); "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300).stdout.split()[-1]
    assert out == "2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=300).stdout.split()
    assert out[-1] == "0"
    assert callable(_cli.absl_run)


class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_verbosity():
    from rigl_tf.experiments.train_flags import progress_verbosity

    assert progress_verbosity("auto", _Stream(True)) == 1
    assert progress_verbosity("auto", _Stream(False)) == 2
    assert [progress_verbosity(p) for p in ("bar", "lines", "off")] == [1, 2, 0]
    with pytest.raises(ValueError, match="--progress"):
        progress_verbosity("loud")


def test_parameter_counts_exclude_masks():
    import keras
    import rigl_tf
    from rigl_tf.experiments import train

    # 784-300-100-10 MLP: 784*300+300 + 300*100+100 + 100*10+10 = 266,610 parameters;
    # kernels 235,200 + 30,000 + 1,000 = 266,200 prunable entries.
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300),
                              keras.layers.Dense(100), keras.layers.Dense(10)])
    sparse = rigl_tf.sparsify(model, sparsity=0.9, distribution="uniform", seed=0)
    text = train.parameter_counts(sparse)
    # uniform 90%: round(0.1 * n) ones per kernel = 23,520 + 3,000 + 100.
    assert text == "params=266610 prunable=266200 active=26620 (density 0.1000)"


def test_noise_filter_on_hand_written_lines():
    from rigl_tf.commands import _cli

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 00:00:1796052364.847106   20179 cudart_stub.cc:31] Could not find cuda "
        "drivers on your machine, GPU will not be used.",
        "E0000 00:00:1796053013.877736   30388 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error",
        "I0000 00:00:1796052365.062012   20179 cpu_feature_guard.cc:227] This TensorFlow "
        "binary is optimized to use available CPU instructions.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.",
    ]
    real = ["Traceback (most recent call last):", "E0000 00:00:1.0 1 op_kernel.cc:1] OOM",
            "error: --logdir: no such directory"]
    assert [_cli.is_noise(ln) for ln in noise] == [True] * len(noise)
    assert [_cli.is_noise(ln) for ln in real] == [False] * len(real)


def test_import_tensorflow_hides_startup_noise_unless_asked():
    code = ("import sys; sys.argv[0] = 'rigl-x'\n"  # as a console script: lazy package
            "from rigl_tf.commands import _cli; _cli.import_tensorflow()")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "absl::InitializeLog" not in quiet.stderr and "cudart_stub" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=600)
    assert loud.returncode == 0
    # The user's own level is kept (this machine's TensorFlow prints its CPU/CUDA notes).
    if "cudart_stub" in loud.stderr or "cpu_feature_guard" in loud.stderr:
        assert "I0000" in loud.stderr


def test_rigl_lottery_help_lists_its_flags_without_importing_tensorflow():
    code = ("import sys; sys.argv[0] = 'rigl-lottery'\n"
            "from rigl_tf.commands import lottery\n"
            "try:\n    lottery.run()\nexcept SystemExit:\n    pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    proc = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    for flag in ("--gin_config:", "--root_dir:", "--run_dir:", "--strategy:"):
        assert flag in out, out[-2000:]
    assert "Parent directory of run directories" in out
    assert proc.stdout.strip().endswith("NO-TF"), out[-2000:]
