"""``rigl-train``: parses the flags (rigl_tf/experiments/train_flags.py) before importing
TensorFlow, then runs :func:`rigl_tf.experiments.train.main`."""

from rigl_tf.commands import _cli


def run():
    """Console-script entry point."""
    _cli.absl_run("rigl_tf.experiments.train_flags", "rigl_tf.experiments.train:main")
