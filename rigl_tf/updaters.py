"""`rigl_tf.updaters`: the documented path of :mod:`rigl_tf.keras.updaters` (same module).

``import rigl_tf.updaters`` and ``rigl_tf.updaters.RigL`` give the objects defined in
`rigl_tf.keras.updaters`; this module replaces itself by that one on import.
"""

import sys

from rigl_tf.keras import updaters as _updaters

sys.modules[__name__] = _updaters
