"""Shared start-up of the installed commands: quiet TensorFlow, absl key flags, lazy main.

Command modules import only the standard library, absl, argparse and numpy at module
level and import TensorFlow inside their main function, after the command line is parsed,
so ``--help`` and usage errors answer at once.
"""

import importlib
import sys

from rigl_tf.startup import import_tensorflow, is_noise, quiet_tensorflow  # noqa: F401


def adopt_key_flags(module_name: str = None, names=()):
    """Shows flags in ``--help`` of the running program: those defined in ``module_name``
    and those called ``names``.

    absl's ``--help`` lists the key flags of the main module (``sys.argv[0]``); a console
    script defines none itself, so without this it prints only "Try --helpfull".
    """
    from absl import flags

    chosen = []
    if module_name is not None:
        module = importlib.import_module(module_name)
        chosen += flags.FLAGS.get_flags_for_module(module.__name__)
    chosen += [flags.FLAGS[name] for name in names]
    for flag in chosen:
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
