"""One-command reproduction of the gradient-flow paper's MNIST study (``rigl-reproduce``).

* `rigl_tf.reproduce.study`: the plan (which runs, which budget), training through
  rigl-train's trainer, and the cached analyses (gradient flow, mask-update gradient
  change, Hessian spectra, distances/MDS, linear paths, function similarity);
* `rigl_tf.reproduce.report`: pure functions turning the measured numbers into the
  report's tables and the paper's claims with HOLDS / DOES NOT HOLD verdicts.
"""
