"""Process start-up for the commands: TensorFlow imported quietly, after argument parsing.

Kept below `rigl_tf.experiments` and `rigl_tf.commands` (both use it); imports only the
standard library until :func:`import_tensorflow` is called.
"""

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
