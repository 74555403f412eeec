"""Training callbacks (``rigl_tf.callbacks``): sparsity summaries, gradient flow, distance to
initialization, metrics summaries and a NaN/Inf guard. See ``rigl_tf.keras.callbacks``."""

from rigl_tf.keras.callbacks import (  # noqa: F401
    DistanceToInit,
    GradientFlow,
    MetricsSummary,
    NanGuard,
    SparsitySummary,
)
