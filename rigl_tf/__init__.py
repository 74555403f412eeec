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

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # e.g. set in ~/.keras/keras.json
    raise ImportError(
        f"rigl_tf requires Keras 3 with the TensorFlow backend, but Keras is using the "
        f"{_keras.backend.backend()!r} backend; set KERAS_BACKEND=tensorflow."
    )

from rigl_tf.keras.model_ops import (  # noqa: E402,F401
    SparsityReport,
    apply_masks,
    get_masks,
    init_masks,
    initialize,
    masked_weights,
    set_masks,
    sparsify,
    sparsity_report,
    strip,
)
from rigl_tf.keras.wrapper import (  # noqa: E402,F401
    PrunableWeight,
    SparseWrapper,
    register_prunable_layer,
)

__version__ = "0.1.0"

from rigl_tf.keras import updaters  # noqa: E402,F401
import sys as _sys  # noqa: E402

# The documented path `rigl_tf.updaters` names the same module object, so
# `import rigl_tf.updaters` works as well as `rigl_tf.updaters.RigL`.
_sys.modules.setdefault(__name__ + ".updaters", updaters)
from rigl_tf.keras.optimizer import SparseOptimizer, register_optimizer_slots  # noqa: E402,F401
from rigl_tf import callbacks  # noqa: E402,F401
from rigl_tf.keras.oneshot import prune_at_init  # noqa: E402,F401
from rigl_tf.deploy import export, export_report  # noqa: E402,F401
