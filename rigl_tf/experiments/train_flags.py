"""rigl-train's command-line flags (no TensorFlow import, so ``--help`` is fast)."""

from absl import flags

from rigl_tf.progress import MODES as PROGRESS
from rigl_tf.progress import fit_verbosity

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
MODES = ("train_eval", "hessian")

FLAGS = flags.FLAGS

flags.DEFINE_multi_string(
    "gin_config", [], "Gin config files (later ones override): a path, or the name of a "
    "shipped config from any directory, e.g. mnist_lenet5/rigl.gin.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'training.total_steps=100'.")
flags.DEFINE_string("preload_gin_config", None,
                    "A gin file read before --gin_config and --gin_bindings, e.g. another "
                    "run's operative_config.gin.")
flags.DEFINE_string("logdir", "/tmp/rigl_tf", "Directory of checkpoints, summaries, results.")
flags.DEFINE_integer("seed", 0, "Seed of initialization, masks, data order and updates.")
flags.DEFINE_enum("mode", "train_eval", MODES, "What to run.")
flags.DEFINE_string("strategy", "default",
                    f"tf.distribute strategy: one of {', '.join(STRATEGIES)}.")
flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu ('' or 'local' for local).")
flags.DEFINE_bool("overwrite", False, "Delete a logdir holding a different run.")
flags.DEFINE_bool("dry_run", False, "Build everything gin names, print a summary, no training.")
flags.DEFINE_bool("debug", False, "On an error, show the full traceback (not one line).")
flags.DEFINE_enum("progress", "auto", PROGRESS,
                  "Training progress: 'bar' (redrawn progress bar), 'lines' (one log line "
                  "per training.log_freq steps, for log files), 'off', or 'auto' (bar on a "
                  "terminal, lines otherwise).")


def progress_verbosity(progress: str, stream=None) -> int:
    """``model.fit`` verbosity for ``--progress`` (see :func:`rigl_tf.progress.fit_verbosity`)."""
    return fit_verbosity(progress, stream)
