"""rigl-lottery's command-line flags (no TensorFlow import, so ``--help`` is fast)."""

from absl import flags

from rigl_tf.progress import MODES

FLAG_NAMES = ("gin_config", "gin_bindings", "root_dir", "run_dir", "data_dir", "progress",
              "fit_verbose", "strategy", "tpu", "debug")


def define_flags():
    """Defines rigl-lottery's flags (once; names rigl-train shares are reused)."""
    # Defined on first use, not at import: rigl-train defines --gin_config and
    # --gin_bindings too, and both modules may live in one process (tests, notebooks).
    def define(kind, name, default, help_):
        if name not in flags.FLAGS:
            getattr(flags, kind)(name, default, help_)

    define("DEFINE_multi_string", "gin_config", [], "Gin config files (later ones override).")
    define("DEFINE_multi_string", "gin_bindings", [],
           "Gin bindings, e.g. 'training.total_steps = 100'.")
    define("DEFINE_string", "root_dir", "/tmp/rigl_lottery",
           "Parent directory of run directories (named by the hyperparameters).")
    define("DEFINE_string", "run_dir", None, "Explicit run directory (overrides --root_dir).")
    define("DEFINE_string", "data_dir", None, "Data directory of IDX / tfds datasets.")
    if "progress" not in flags.FLAGS:
        flags.DEFINE_enum("progress", "auto", MODES,
                          "Progress: 'bar' (redrawn), 'lines' (one line per level and per "
                          "training.log_freq steps, for log files), 'off', or 'auto' (bar on a "
                          "terminal, lines otherwise).")
    define("DEFINE_integer", "fit_verbose", None,
           "model.fit verbosity (0, 1 or 2); default: from --progress.")
    define("DEFINE_string", "strategy", "default",
           "tf.distribute strategy of the trainer: default, mirrored or tpu.")
    define("DEFINE_string", "tpu", None, "TPU address for --strategy=tpu.")
    define("DEFINE_bool", "debug", False,
           "On an error, show the full traceback (not one line).")
