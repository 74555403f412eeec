"""Installed analysis commands (console scripts ``rigl-<name>``), thin over `rigl_tf.analysis`.

Each module has ``main(argv=None) -> exit code``; setup.py maps ``rigl-gradient-flow`` to
``rigl_tf.commands.gradient_flow:main`` and so on. Importing a command module does not
import TensorFlow: it is imported after the flags are parsed.
"""
