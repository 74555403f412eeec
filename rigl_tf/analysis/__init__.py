"""Analysis of sparse networks: why lottery tickets and dynamic sparse training work.

* `gradient_flow`: norm of the masked gradient of the mean loss (Evci et al.).
* `hessian`: exact Hessians of the active weights (the Gauss-Newton / residual split of
  `hessian_split` for piecewise-linear chains, batched Hessian-vector products otherwise),
  spectra, power iteration and stochastic Lanczos quadrature; `hessian_job` runs it over a
  full training set, resumably.
* `interpolation`: loss/error along linear paths, error barriers, pairwise barriers,
  piecewise paths and 2-D planes through three solutions (Frankle et al.).
* `similarity`: function-space similarity (ensembles, disagreement, KL, JSD) in the layout
  of the gradient-flow paper's Table 3.
* `distances`: L2 / cosine / angular distances (Maene et al.) and classical MDS.
* `tickets`: correlation indicator R_p (Ma et al.), mask overlap, sign flips, per-connection
  std across IMP levels, sparsity evolution.
* `plots`: PNG plots of the above.

Conventions (models output logits; `masks` and weight lists are aligned with
`model.trainable_variables`; data is `(x, y)` arrays or a batched `tf.data.Dataset`) are
described in `rigl_tf.analysis._common`.

Note: the package attribute `rigl_tf.analysis.hessian` is the function `hessian` (it
shadows the submodule of the same name); import the module's other names with
`from rigl_tf.analysis.hessian import ...`.
"""

from rigl_tf.analysis._common import evaluate, get_weights, iterate_batches, temporary_weights
from rigl_tf.analysis.distances import (
    angular_distance,
    cosine_distance,
    distance_matrix,
    l2_distance,
    mds_embedding,
)
from rigl_tf.analysis.gradient_flow import gradient_norm, mean_gradients
from rigl_tf.analysis.hessian import (
    Coordinates,
    HessianOperator,
    eigenvalues,
    hessian,
    hvp,
    lanczos,
    power_iteration,
    select_coordinates,
    slq_density,
    spectral_density,
    spectrum_summary,
)
from rigl_tf.analysis.interpolation import (
    error_barrier,
    interpolate,
    linear_mode_connectivity,
    pairwise_barriers,
    piecewise_path,
    plane,
)
from rigl_tf.analysis.plots import (
    plot_barrier_matrix,
    plot_curves,
    plot_interpolation,
    plot_mds,
    plot_plane,
    plot_sparsity_evolution,
    plot_spectral_density,
)
from rigl_tf.analysis.similarity import (
    accuracy,
    disagreement,
    ensemble_accuracy,
    entropy,
    format_similarity_table,
    jensen_shannon,
    kl_divergence,
    mean_std_over_pairs,
    pairwise_matrix,
    predict_probs,
    similarity_table,
    similarity_to_reference,
)
from rigl_tf.analysis.tickets import (
    correlation_indicator,
    mask_overlap,
    per_connection_std,
    sign_flips,
    sparsity_evolution,
)

__all__ = [
    "Coordinates",
    "HessianOperator",
    "accuracy",
    "angular_distance",
    "correlation_indicator",
    "cosine_distance",
    "disagreement",
    "distance_matrix",
    "eigenvalues",
    "ensemble_accuracy",
    "entropy",
    "error_barrier",
    "evaluate",
    "format_similarity_table",
    "get_weights",
    "gradient_norm",
    "hessian",
    "hvp",
    "interpolate",
    "iterate_batches",
    "jensen_shannon",
    "kl_divergence",
    "l2_distance",
    "lanczos",
    "linear_mode_connectivity",
    "mask_overlap",
    "mds_embedding",
    "mean_gradients",
    "mean_std_over_pairs",
    "pairwise_barriers",
    "pairwise_matrix",
    "per_connection_std",
    "piecewise_path",
    "plane",
    "plot_barrier_matrix",
    "plot_curves",
    "plot_interpolation",
    "plot_mds",
    "plot_plane",
    "plot_sparsity_evolution",
    "plot_spectral_density",
    "power_iteration",
    "predict_probs",
    "select_coordinates",
    "sign_flips",
    "similarity_table",
    "similarity_to_reference",
    "slq_density",
    "sparsity_evolution",
    "spectral_density",
    "spectrum_summary",
    "temporary_weights",
]
