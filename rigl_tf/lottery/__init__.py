"""Lottery tickets: iterative magnitude pruning (IMP), ticket branches and verdicts.

* :mod:`~rigl_tf.lottery.imp`: :class:`IMPConfig` and :class:`IMPRun`, the resumable IMP
  driver (every level and branch is trained by rigl-train's trainer,
  :func:`rigl_tf.experiments.train.train_from_start`) (rewinding to init, to step K, learning-rate rewinding, fine-tuning; one-shot
  magnitude pruning for comparison).
* :mod:`~rigl_tf.lottery.importance`: importance measures (magnitude, l1, l2, softmax,
  minmax, random) and exact-count pruning masks, global or layerwise.
* :mod:`~rigl_tf.lottery.branches`: lottery, reinit, data_order, shuffle_mask,
  random_prune, small_dense and prune_restart experiments from a level's mask.
* :mod:`~rigl_tf.lottery.adaptive`: the adaptive pruning ratio of Paul et al.
* :mod:`~rigl_tf.lottery.repellent`: the repellent / attractive loss of Maene et al.
* :mod:`~rigl_tf.lottery.verdict`: jackpot / secondary prize / no ticket (Ma et al.).
* :mod:`~rigl_tf.lottery.layout`: the run-directory layout and atomic file writes.
* :mod:`~rigl_tf.lottery.start`: :class:`Start`, where a level / branch starts.

The binary ``rigl-lottery`` (:mod:`rigl_tf.lottery.main`) configures these with gin; the
library itself does not need gin.
"""

from rigl_tf.lottery.adaptive import compute_savings, select_fraction
from rigl_tf.lottery.branches import BRANCHES, branch_start, run_branch
from rigl_tf.lottery.imp import IMPConfig, IMPRun, REWINDINGS, check_spec, format_summary
from rigl_tf.lottery.importance import (
    importance_scores,
    layer_scores,
    list_measures,
    prune_masks,
    target_counts,
)
from rigl_tf.lottery.layout import RunDirConflictError
from rigl_tf.lottery.repellent import RepellentModel, repellent_loss
from rigl_tf.lottery.start import Start
from rigl_tf.lottery.verdict import classify, ticket_verdicts, verdict_table

__all__ = [
    "BRANCHES", "IMPConfig", "IMPRun", "REWINDINGS", "RepellentModel", "RunDirConflictError",
    "Start", "branch_start", "check_spec", "classify", "compute_savings", "format_summary",
    "importance_scores", "layer_scores", "list_measures", "prune_masks", "repellent_loss", "run_branch",
    "select_fraction", "target_counts", "ticket_verdicts", "verdict_table",
]
