"""``rigl-lottery``: parses the flags (rigl_tf/experiments/lottery_flags.py) before
importing TensorFlow, then runs :func:`rigl_tf.lottery.main.main`."""

from rigl_tf.commands import _cli


def run():
    """Console-script entry point."""
    from absl import app

    # rigl-train's flag module first: the trainer (imported below) defines its flags at
    # import time, and rigl-lottery's define_flags() reuses the names they share.
    from rigl_tf.experiments import train_flags  # noqa: F401
    from rigl_tf.experiments import lottery_flags

    _cli.quiet_tensorflow()
    lottery_flags.define_flags()
    _cli.adopt_key_flags(names=lottery_flags.FLAG_NAMES)

    def _main(argv):
        _cli.import_tensorflow()
        from rigl_tf.lottery import main

        return main.main(argv)

    app.run(_main)
