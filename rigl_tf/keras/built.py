"""Built SparseOptimizers, so masks set from outside a train step can reset their slots.

Kept apart from ``optimizer.py`` so that ``model_ops`` (``set_masks``, ``apply_masks``) can
notify the optimizers without importing the optimizer module (no import cycle).
"""

import weakref

_BUILT = weakref.WeakSet()


def masks_changed(masks):
    """Tells every built :class:`SparseOptimizer` that ``masks`` (mask variables) were set
    from outside its train step: their slots are reset wherever a mask is zero, so masked
    weights stay exact zeros without re-applying masks after every step. Called by
    ``rigl_tf.set_masks`` and ``rigl_tf.apply_masks``; call it after assigning masks
    yourself (and zero the weights there, e.g. with ``rigl_tf.apply_masks``).
    """
    ids = {id(m) for m in masks}
    for optimizer in list(_BUILT):
        optimizer._reset_inactive_slots(ids)


