"""Pure tensor math for sparsity: distributions, exact masks, initializers, schedules.

Nothing here creates Keras objects; every function takes and returns tensors or arrays.
"""

from rigl_tf.sparsity.distributions import (  # noqa: F401
    DISTRIBUTIONS,
    check_sparsity,
    get_counts,
    get_densities,
    num_active,
)
from rigl_tf.sparsity.init import (  # noqa: F401
    INITIALIZERS,
    UNIT_SCALED_METHODS,
    layer_scaled,
    sparse_fans,
    sparse_initialize,
    unit_scaled,
)
from rigl_tf.sparsity.masks import (  # noqa: F401
    global_topk_masks,
    random_mask,
    stateless_seed,
    topk_mask,
    topk_mask_np,
)
from rigl_tf.sparsity.schedules import (  # noqa: F401
    DropFractionSchedule,
    PruningSchedule,
    UpdateSchedule,
)
