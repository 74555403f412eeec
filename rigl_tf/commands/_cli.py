"""Shared start-up of the installed commands: quiet TensorFlow, absl key flags, lazy main.

Command modules import only the standard library, absl, argparse and numpy at module
level and import TensorFlow inside their main function, after the command line is parsed,
so ``--help`` and usage errors answer at once.
"""

import importlib
import os
import re
import sys


# Lines TensorFlow's C++ side prints while it loads (CUDA probing on a machine without
# GPUs, CPU-feature notes); some ignore TF_CPP_MIN_LOG_LEVEL because they are logged
# before absl's C++ logging is initialised.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|"
    r"cuda_executor|cpu_feature_guard|port)\.cc:\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|This TensorFlow binary is optimized to use available CPU instructions)")
_user_level = None


def quiet_tensorflow():
    """Hides TensorFlow's C++ INFO/WARNING lines unless the user set TF_CPP_MIN_LOG_LEVEL.

    Must run before TensorFlow is imported (the C++ side reads it once).
    """
    global _user_level
    if _user_level is None:
        _user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def is_noise(line: str) -> bool:
    """Whether ``line`` is TensorFlow start-up noise hidden by :func:`import_tensorflow`."""
    return bool(_NOISE.match(line))


def import_tensorflow():
    """Imports TensorFlow and initialises its devices, hiding the start-up noise.

    Unless the user set TF_CPP_MIN_LOG_LEVEL, the C++ lines TensorFlow writes to the
    standard-error file descriptor while loading are captured and replayed without the
    known noise (:func:`is_noise`); anything else (a real error) still appears.
    """
    quiet_tensorflow()
    if "tensorflow" in sys.modules or _user_level:
        import tensorflow  # noqa: F401
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()  # CUDA probing happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [ln for ln in text.splitlines() if ln.strip() and not is_noise(ln)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def adopt_key_flags(module_name: str):
    """Shows the flags defined in ``module_name`` in ``--help`` of the running program.

    absl's ``--help`` lists the key flags of the main module (``sys.argv[0]``); a console
    script defines none itself, so without this it prints only "Try --helpfull".
    """
    from absl import flags

    module = importlib.import_module(module_name)
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def absl_run(flags_module: str, main: str):
    """Defines the flags of ``flags_module``, parses argv, then imports and runs ``main``.

    Args:
      flags_module: module that defines the absl flags (must not import TensorFlow).
      main: ``"package.module:function"``, the absl main taking ``argv``; imported only
        after the flags are parsed.
    """
    from absl import app

    quiet_tensorflow()
    adopt_key_flags(flags_module)

    def _main(argv):
        import_tensorflow()
        module, function = main.split(":")
        return getattr(importlib.import_module(module), function)(argv)

    app.run(_main)
