"""rigl_tf: sparse training (RigL, SET, SNFS, pruning, lottery tickets) for Keras 3.

Public API::

    sparse = rigl_tf.sparsify(model, sparsity=0.9, distribution="erk", init="unit_scaled")
    sparse.compile(optimizer=rigl_tf.SparseOptimizer(keras.optimizers.SGD(0.1, 0.9),
                                                     rigl_tf.updaters.RigL(...)), ...)
    sparse.fit(...)
    plain = rigl_tf.strip(sparse)
"""

import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"rigl_tf requires Keras 3 with the TensorFlow backend, but KERAS_BACKEND is "
        f"{_backend!r}; set KERAS_BACKEND=tensorflow before importing rigl_tf."
    )

_LAZY = {
    # public name -> module defining it; imported on first use (PEP 562), so that
    # `import rigl_tf.commands.x` (the installed commands) does not import TensorFlow
    # before the command line is parsed.
    **dict.fromkeys(
        ["SparsityReport", "apply_masks", "get_masks", "init_masks", "initialize",
         "masked_weights", "set_masks", "sparsify", "sparsity_report", "strip"],
        "rigl_tf.keras.model_ops"),
    **dict.fromkeys(["PrunableWeight", "SparseWrapper", "register_prunable_layer"],
                    "rigl_tf.keras.wrapper"),
    **dict.fromkeys(["SparseOptimizer", "register_optimizer_slots"], "rigl_tf.keras.optimizer"),
    "prune_at_init": "rigl_tf.keras.oneshot",
    **dict.fromkeys(["export", "export_report"], "rigl_tf.deploy"),
}
_SUBMODULES = ("analysis", "callbacks", "commands", "compressed", "deploy", "errors",
               "experiments", "locking", "reproduce",
               "files", "inference", "interop", "keras", "lottery", "progress", "sparsity",
               "startup", "updaters")

__version__ = "0.1.0"
__all__ = sorted(_LAZY) + ["callbacks", "updaters"]


def _check_backend():
    import keras

    if keras.backend.backend() != "tensorflow":  # e.g. set in ~/.keras/keras.json
        raise ImportError(
            f"rigl_tf requires Keras 3 with the TensorFlow backend, but Keras is using the "
            f"{keras.backend.backend()!r} backend; set KERAS_BACKEND=tensorflow."
        )


def __getattr__(name):
    import importlib

    if name in _LAZY:
        _check_backend()
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name == "updaters":
        _check_backend()
        value = importlib.import_module("rigl_tf.updaters")
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


def _is_command_process():
    import sys

    return bool(sys.argv) and _os.path.basename(sys.argv[0] or "").startswith("rigl-")


if not _is_command_process():
    # Library use: import everything now. This also registers the Keras serializables, so
    # `import rigl_tf` is all `keras.models.load_model` of a sparse model needs. The
    # installed commands (`rigl-*`) skip it and import TensorFlow after parsing their
    # command line, so `--help` answers at once.
    for _name in __all__:
        __getattr__(_name)
    del _name
