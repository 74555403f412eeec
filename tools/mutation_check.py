"""Mutation check of the test suite: does every central claim have a test that fails?

Applies small, named bugs ("mutants") to the package one at a time, *in memory only*,
runs the tests that guard each one, and reports whether they failed (caught) or passed
(missed). No file on disk is changed: the pytest subprocess loads this file as a plugin
(``-p mutation_check``), which installs an import hook that compiles the mutated source
of one module (read from disk, one exact snippet replaced) and serves it to ``inspect``
through ``linecache``, so tf.function's autograph converts the mutant too.

    python tools/mutation_check.py                 # all mutants, table + JSON
    python tools/mutation_check.py --list          # names only
    python tools/mutation_check.py -k slot -j 1    # mutants whose name contains 'slot'

A mutant whose snippet is not found exactly once in its module is reported NOT APPLICABLE
(the code drifted; update the snippet). A mutant whose module the tests never imported is
NOT EXERCISED. The exit status is non-zero unless every mutant is caught.
"""

import argparse
import concurrent.futures
import dataclasses
import importlib.abc
import importlib.machinery
import json
import linecache
import os
import subprocess
import sys
import tempfile
import time

ENV_VAR = "RIGL_TF_MUTANT"
REPORT_VAR = "RIGL_TF_MUTANT_REPORT"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One small bug: replace ``snippet`` (exactly one occurrence) in ``module``."""

    name: str
    module: str
    snippet: str
    replacement: str
    tests: tuple  # pytest arguments: node ids / files (optionally "-k", expression)

    def path(self, root=ROOT):
        return os.path.join(root, *self.module.split(".")) + ".py"


T_OPT = "tests/test_optimizer.py"
T_SP = "tests/test_sparsity.py"
T_DS = "tests/test_datasets.py"
T_LC = "tests/test_lottery_claims.py"

MUTANTS = [
    # ------------------------------------------------------------ optimizer
    Mutant("no gradient masking", "rigl_tf.keras.optimizer",
           "masked.append(g * tf.cast(item.mask, g.dtype))",
           "masked.append(g)",
           (f"{T_OPT}::test_rigl_matches_numpy_model[momentum]",)),
    Mutant("no slot reset", "rigl_tf.keras.optimizer",
           "slot.assign(value * keep_s + reset * (1.0 - keep_s))",
           "slot.assign(value)",
           (f"{T_OPT}::test_every_supported_optimizer_slots_through_rigl_update[adagrad]",
            f"{T_OPT}::test_rigl_matches_numpy_model[momentum]")),
    Mutant("slots reset everywhere", "rigl_tf.keras.optimizer",
           "slot.assign(value * keep_s + reset * (1.0 - keep_s))",
           "slot.assign(value * 0.0 + reset)",
           (f"{T_OPT}::test_every_supported_optimizer_slots_through_rigl_update[adam]",)),
    Mutant("masks not re-applied after the step", "rigl_tf.keras.optimizer",
           "return var.assign(var * tf.cast(mask, var.dtype))",
           "return var",
           # Masks are re-applied at step 0 and every step for optimizers that do not keep
           # zeros (the fast path skips it otherwise, issue 16).
           (f"{T_OPT}::test_external_mask_change_is_enforced_after_the_step",
            "tests/test_optimizer_fastpath.py::test_weights_assigned_before_training_are_"
            "masked_at_step_0",
            "tests/test_optimizer_fastpath.py::test_masks_reapplied_with_gradient_accumulation")),
    Mutant("masks of weights assigned before training not applied", "rigl_tf.keras.optimizer",
           "                with tf.init_scope():\n"
           "                    self._apply_masks(distribution)\n",
           "                pass\n",
           ("tests/test_optimizer_fastpath.py::test_weights_assigned_before_training_are_"
            "masked_at_step_0",
            "tests/test_optimizer_fastpath.py::test_weights_assigned_between_compile_and_fit_"
            "are_masked")),
    Mutant("rewind snapshot one step late", "rigl_tf.keras.optimizer",
           "tf.equal(step, self.rewind_step),",
           "tf.equal(step, self.rewind_step + 1),",
           (f"{T_OPT}::test_rewind_step_captures_and_restores",)),
    Mutant("mask-update cond lowered to switch/merge", "rigl_tf.keras.optimizer",
           'op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))',
           "pass",
           ("tests/test_optimizer_fastpath.py::test_rewind_and_update_conds_stay_single_if_"
            "nodes",)),
    # ------------------------------------------------------------ updaters
    # ---- sparse-training claims (tests/test_sparse_training_claims.py)
    Mutant("DST updates stop one step before end_step", "rigl_tf.sparsity.schedules",
           "ok = tf.logical_and(ok, step <= self.end_step)",
           "ok = tf.logical_and(ok, step < self.end_step)",
           (f"{T_SP}::test_update_schedule_semantics",)),
    Mutant("cosine drop fraction not held at 0 after end_step", "rigl_tf.sparsity.schedules",
           "t = tf.minimum(tf.cast(step, tf.float32), float(self.end_step))",
           "t = tf.cast(step, tf.float32)",
           (f"{T_SP}::test_cosine_drop_fraction_is_the_papers_formula_from_step_0",)),
    Mutant("grown weights not initialised to zero", "rigl_tf.keras.updaters",
           'if self.grow_init == "zeros":\n            return None',
           'if False:\n            return None',
           ("tests/test_sparse_training_claims.py::test_rigl_grown_weights_start_at_zero",
            f"{T_OPT}::test_dst_invariants[momentum-rigl]")),
    Mutant("RigL cannot regrow a just-dropped connection", "rigl_tf.keras.updaters",
           "candidates = tf.where(keep > 0, neg_inf, grow_score)",
           "candidates = tf.where(m > 0, neg_inf, grow_score)",
           ("tests/test_sparse_training_claims.py::test_rigl_may_regrow_a_connection_it_just_"
            "dropped",
            f"{T_OPT}::test_rigl_matches_numpy_model[momentum]")),
    Mutant("SNFS mean momentum over all weights, not the active ones", "rigl_tf.keras.updaters",
           "means.append(tf.math.divide_no_nan(tf.reduce_sum(magnitude * m), tf.reduce_sum(m)))",
           "means.append(tf.reduce_mean(magnitude))",
           ("tests/test_snfs.py::test_snfs_redistributes_by_mean_momentum_like_a_numpy_model",)),
    Mutant("SNFS momentum coefficients swapped", "rigl_tf.keras.updaters",
           "return self.momentum * state + (1.0 - self.momentum) * grad",
           "return (1.0 - self.momentum) * state + self.momentum * grad",
           # test_snfs uses momentum 0.5, where the swap is invisible.
           ("tests/test_sparse_training_claims.py::test_snfs_momentum_is_an_exponential_"
            "moving_average_of_the_gradient",)),
    Mutant("magnitude pruning regrows when the target is denser", "rigl_tf.keras.updaters",
           "return tf.minimum(k, n_active)  # pruning never regrows",
           "return k",
           ("tests/test_sparse_training_claims.py::test_magnitude_pruning_never_regrows_when_"
            "the_target_is_denser",)),
    Mutant("ERK makes the lowest-density layer dense", "rigl_tf.sparsity.distributions",
           "dense.update(k for k, r in raw.items() if r == max_raw)",
           "dense.update(k for k, r in raw.items() if r == min(raw.values()))",
           (f"{T_SP}::test_erk_formula_and_capping",)),
    Mutant("RigL grows by |w| instead of |grad|", "rigl_tf.keras.updaters",
           "        return tf.abs(ctx.grad)\n",
           "        return tf.abs(ctx.weight) + 0.0 * tf.abs(ctx.grad)\n",
           (f"{T_OPT}::test_rigl_grows_largest_gradients_and_drops_smallest_weights",)),
    Mutant("drop largest magnitudes", "rigl_tf.keras.updaters",
           '        """Higher = more important to keep. Default: weight magnitude."""\n'
           "        return tf.abs(ctx.weight)",
           '        """Higher = more important to keep. Default: weight magnitude."""\n'
           "        return -tf.abs(ctx.weight)",
           (f"{T_OPT}::test_rigl_grows_largest_gradients_and_drops_smallest_weights",)),
    Mutant("wrong drop count (ceil)", "rigl_tf.keras.updaters",
           "returns (kept, grown) masks.\"\"\"\n"
           "        n_active = tf.cast(tf.reduce_sum(m), tf.int32)\n"
           "        n_drop = tf.cast(tf.floor(",
           "returns (kept, grown) masks.\"\"\"\n"
           "        n_active = tf.cast(tf.reduce_sum(m), tf.int32)\n"
           "        n_drop = tf.cast(tf.math.ceil(",
           (f"{T_OPT}::test_rigl_grows_largest_gradients_and_drops_smallest_weights",)),
    Mutant("SET grows non-randomly", "rigl_tf.keras.updaters",
           "        return masks_lib.random_scores(tf.shape(ctx.weight), self.seed, ctx.step, "
           "ctx.index)\n",
           "        return tf.zeros(tf.shape(ctx.weight))\n",
           (f"{T_OPT}::test_deterministic_for_seed[set]",)),
    Mutant("pruning keeps the smallest magnitudes", "rigl_tf.keras.updaters",
           '        """Higher = kept. Magnitude by default."""\n        return tf.abs(weight)',
           '        """Higher = kept. Magnitude by default."""\n        return -tf.abs(weight)',
           (f"{T_OPT}::test_magnitude_pruning_keeps_the_largest_weights[layerwise]",)),
    # ------------------------------------------------------------ sparsity: masks
    Mutant("top-k off by one", "rigl_tf.sparsity.masks",
           "last = tf.gather(positions, need - 1)",
           "last = tf.gather(positions, need)",
           (f"{T_SP}::test_topk_mask_exact_count_and_selection",)),
    Mutant("top-k ties broken by the highest index", "rigl_tf.sparsity.masks",
           "return tf.logical_or(above, tf.logical_and(ties, index <= last))",
           "return tf.logical_or(above, tf.logical_and(\n"
           "            ties, index >= tf.gather(tf.reverse(positions, [0]), need - 1)))",
           (f"{T_SP}::test_topk_mask_exact_count_and_selection",)),
    Mutant("top-k radix ignores the keys above the threshold's bin", "rigl_tf.sparsity.masks",
           "b_low, _ = last_bin_with(h_low, k - n_above)",
           "b_low, _ = last_bin_with(h_low, k)",
           (f"{T_SP}::test_topk_radix_selection_matches_stable_sort",)),
    Mutant("top-k radix bin scan ignores the rows above the chosen row",
           "rigl_tf.sparsity.masks",
           "+ (row_at_least[r] - per_row[r])",
           "+ 0",
           (f"{T_SP}::test_topk_radix_selection_matches_stable_sort",)),
    Mutant("top-k orders -0.0 below +0.0", "rigl_tf.sparsity.masks",
           "bits = tf.where(tf.equal(bits, tf.int32.min), tf.zeros_like(bits), bits)",
           "bits = bits",
           (f"{T_SP}::test_topk_radix_selection_matches_stable_sort",)),
    Mutant("top-k off by one under XLA", "rigl_tf.sparsity.masks",
           "return tf.logical_or(above, tf.logical_and(ties, tie_rank <= need))",
           "return tf.logical_or(above, tf.logical_and(ties, tie_rank <= need + 1))",
           (f"{T_SP}::test_topk_radix_selection_matches_stable_sort",)),
    Mutant("top-k ties broken by the highest index under XLA", "rigl_tf.sparsity.masks",
           "tie_rank = tf.cumsum(tf.cast(ties, tf.int64))  # 1-based rank among ties",
           "tie_rank = tf.cumsum(tf.cast(ties, tf.int64), reverse=True)",
           (f"{T_SP}::test_topk_radix_selection_matches_stable_sort",)),
    # ------------------------------------------------------------ sparsity: distributions
    Mutant("ERK without capping", "rigl_tf.sparsity.distributions",
           "        if max_raw * eps > 1.0:\n",
           "        if False:\n",
           (f"{T_SP}::test_erk_formula_and_capping",)),
    Mutant("ERK ignores the kernel dims", "rigl_tf.sparsity.distributions",
           'kernel = distribution == "erk"',
           "kernel = False",
           (f"{T_OPT}::test_pruning_with_erk_targets_and_random_pruning",)),
    # ------------------------------------------------------------ sparsity: schedules
    Mutant("cosine schedule with the wrong phase", "rigl_tf.sparsity.schedules",
           "f0 * 0.5 * (1.0 + tf.cos(math.pi * t",
           "f0 * 0.5 * (1.0 - tf.cos(math.pi * t",
           (T_SP, "-k", "cosine_drop_fraction")),
    Mutant("polynomial pruning exponent ignored", "rigl_tf.sparsity.schedules",
           "return final + (initial - final) * tf.pow(1.0 - progress, self.power)",
           "return final + (initial - final) * (1.0 - progress)",
           (f"{T_OPT}::test_gradual_magnitude_pruning",)),
    # ------------------------------------------------------------ sparsity: init
    Mutant("unit_scaled uses the layer-average fan-in", "rigl_tf.sparsity.init",
           "    fan_in, fan_out = sparse_fans(mask, in_axes, out_axes)\n"
           '    fan = {"fanin": fan_in,',
           "    fan_in, fan_out = sparse_fans(mask, in_axes, out_axes)\n"
           "    fan_in = tf.reduce_mean(fan_in) + 0.0 * fan_in\n"
           "    fan_out = tf.reduce_mean(fan_out) + 0.0 * fan_out\n"
           '    fan = {"fanin": fan_in,',
           (f"{T_SP}::test_unit_scaled_per_unit_fan",)),
    Mutant("unit_scaled fan-in and fan-out swapped", "rigl_tf.sparsity.init",
           '    fan = {"fanin": fan_in, "fanout": fan_out, "fanavg": (fan_in + fan_out) / 2.0}'
           "[fan_kind]",
           '    fan = {"fanin": fan_out, "fanout": fan_in, "fanavg": (fan_in + fan_out) / 2.0}'
           "[fan_kind]",
           (f"{T_SP}::test_unit_scaled_per_unit_fan",)),
    Mutant("unit_scaled uniform limit without the factor 3", "rigl_tf.sparsity.init",
           "values = noise * tf.sqrt(3.0 * variance)",
           "values = noise * tf.sqrt(variance)",
           (f"{T_SP}::test_unit_scaled_per_unit_fan",)),
    # ------------------------------------------------------------ lottery
    Mutant("prune_by_fraction ignores the current density", "rigl_tf.lottery.importance",
           "return prune_masks(weights, masks, current * (1.0 - fraction), **kwargs)",
           "return prune_masks(weights, masks, 1.0 - fraction, **kwargs)",
           (f"{T_LC}::test_prune_by_fraction_prunes_a_fraction_of_the_remaining_weights",)),
    Mutant("layerwise pruning revives pruned weights", "rigl_tf.lottery.importance",
           "count = min(counts[k], active[k])",
           "count = counts[k]",
           (f"{T_LC}::test_layerwise_pruning_never_revives_a_pruned_weight",)),
    Mutant("adaptive p rejected at exactly dense loss + epsilon", "rigl_tf.lottery.adaptive",
           "accepted = bool(np.isfinite(value) and value <= threshold)",
           "accepted = bool(np.isfinite(value) and value < threshold)",
           (f"{T_LC}::test_adaptive_fraction_accepted_at_exactly_the_threshold",)),
    Mutant("levels_to_reach needs density strictly below the target", "rigl_tf.lottery.adaptive",
           "if d <= goal + 1e-9:",
           "if d < goal:",
           (f"{T_LC}::test_levels_to_reach_counts_a_density_exactly_at_the_target",)),
    Mutant("jackpot judged against D - gap instead of D - similar", "rigl_tf.lottery.verdict",
           'return "jackpot" if lottery >= dense - similar else "secondary prize"',
           'return "jackpot" if lottery >= dense - gap else "secondary prize"',
           (f"{T_LC}::test_jackpot_uses_the_similar_threshold_against_dense",)),
    Mutant("inconclusive band open at LT - RR == gap", "rigl_tf.lottery.verdict",
           "if diff <= gap:",
           "if diff < gap:",
           (f"{T_LC}::test_inconclusive_band_is_closed_at_gap",)),
    Mutant("repellent cosine on the unmasked current weights", "rigl_tf.lottery.repellent",
           "current = flatten_masked(weights, masks)",
           "current = flatten_masked(weights)",
           ("tests/test_lottery_repellent.py::test_value_with_mask_strength_and_several_optima",
            f"{T_LC}::test_repellent_ignores_pruned_entries_of_the_current_weights")),
    Mutant("shuffle_masks reuses one permutation for every layer", "rigl_tf.lottery.branches",
           "np.random.default_rng([int(seed), i])",
           "np.random.default_rng([int(seed), 0])",
           (f"{T_LC}::test_shuffle_masks_permutes_each_layer_with_its_own_stream",)),
    Mutant("IMP prunes the largest weights", "rigl_tf.lottery.importance",
           "def _magnitude(a):\n    return a\n",
           "def _magnitude(a):\n    return -a\n",
           ("tests/test_lottery_imp.py::test_pruned_weights_are_lowest_magnitudes_at_every_level",)),
    # ------------------------------------------------------------ data pipelines
    Mutant("standardization without the std", "rigl_tf.experiments.datasets",
           "        image = (image - mean) / std\n",
           "        image = image - mean\n",
           (f"{T_DS}::test_tfds_cifar10_standardization_constants_by_hand",)),
    Mutant("CIFAR crop without zero padding", "rigl_tf.experiments.datasets",
           "padded = tf.image.pad_to_bounding_box(image, 4, 4, h + 8, w + 8)",
           "padded = tf.image.resize(image, (h + 8, w + 8))",
           (f"{T_DS}::test_tfds_cifar_augmentation_is_a_padded_crop_and_flip",)),
    Mutant("ImageNet eval crop at the corner", "rigl_tf.experiments.datasets",
           "window = tf.stack([(ih - crop + 1) // 2, (iw - crop + 1) // 2, crop, crop])",
           "window = tf.stack([0 * ih, 0 * iw, crop, crop])",
           (f"{T_DS}::test_tfds_imagenet_eval_takes_the_central_crop",)),
    Mutant("IMP captures theta_K one step late", "rigl_tf.lottery.imp",
           "capture_step=self.rewind_step,",
           "capture_step=self.rewind_step + 1,",
           ("tests/test_lottery_imp.py::test_pruned_weights_are_lowest_magnitudes_at_every_level",)),
    # ------------------------------------------------------------ analysis
    Mutant("Hessian-vector product averaged over batches, not examples",
           "rigl_tf.analysis.hessian",
           "return total / self.num_examples",
           "return total / len(self._batches)",
           ("tests/test_analysis_claims_2.py::test_hvp_is_the_mean_over_examples_not_over_"
            "batches",)),
    Mutant("spectral density weights not normalised", "rigl_tf.analysis.hessian",
           "        weights = weights / weights.sum()\n    diff = grid",
           "        weights = weights\n    diff = grid",
           ("tests/test_analysis_claims_2.py::test_spectral_density_normalises_given_weights",)),
    Mutant("sparse Hessian keeps the masked coordinates", "rigl_tf.analysis.hessian",
           "idx = np.flatnonzero(mask.ravel()).astype(np.int64)",
           "idx = np.arange(size, dtype=np.int64)",
           ("tests/test_analysis_claims_2.py::test_sparse_hessian_is_the_active_sub_block_of_"
            "the_mean_loss_hessian",
            "tests/test_analysis_hessian.py::test_hessian_equals_nested_tape[sparse-auto]",
            "tests/test_analysis_hessian.py::test_hessian_dataset_input_and_coordinate_metadata")),
    Mutant("Hessian eigenvalues by the general (non-symmetric) solver",
           "rigl_tf.analysis.hessian",
           "values, vectors = np.linalg.eigh(matrix)",
           "values, vectors = np.linalg.eig(matrix)",
           ("tests/test_analysis_claims_2.py::test_eigenvalues_of_a_symmetric_matrix_ascending_"
            "with_orthonormal_vectors",
            "tests/test_analysis_hessian.py::test_hessian_equals_nested_tape[sparse-auto]")),
    Mutant("JSD against the first model instead of the mixture", "rigl_tf.analysis.similarity",
           "    mean = np.mean(probs_list, axis=0)\n    return float(",
           "    mean = probs_list[0]\n    return float(",
           ("tests/test_analysis_similarity.py::test_kl_and_jsd_by_hand",
            "tests/test_analysis_claims_2.py::test_jsd_is_half_kl_to_the_mixture_averaged_over_"
            "examples")),
    Mutant("similarity_to_reference KL(model || reference)", "rigl_tf.analysis.similarity",
           '"kl": np.array([kl_divergence(reference, p) for p in probs_list]),',
           '"kl": np.array([kl_divergence(p, reference) for p in probs_list]),',
           ("tests/test_analysis_claims_2.py::test_similarity_to_reference_uses_kl_reference_"
            "to_model",
            "tests/test_analysis_similarity.py::test_similarity_table_with_reference_and_text")),
    Mutant("L2 distance over the first variable only", "rigl_tf.analysis.distances",
           "total = float(np.linalg.norm(_common.flatten(a) - _common.flatten(b)))",
           "total = float(np.linalg.norm(np.ravel(a[0]) - np.ravel(b[0])))",
           ("tests/test_analysis_claims_2.py::test_l2_distance_spans_every_variable",
            "tests/test_analysis_distances.py::test_distance_matrix_and_mds_recover_points_on_a_"
            "line")),
    Mutant("IMP 'step' rewinding to theta_0 instead of theta_K", "rigl_tf.lottery.imp",
           'weights, first = self.read_weights(0, "rewind"), K',
           'weights, first = self.read_weights(0, "start"), K',
           ("tests/test_lottery_imp.py::test_two_level_imp_density_and_rewinding"
            "[layerwise-step-2]",)),
    Mutant("global top-k split per tensor in proportion to its size", "rigl_tf.sparsity.masks",
           "joint = topk_mask(tf.concat(flats, axis=0), k, dtype)",
           "joint = tf.concat([topk_mask(f, tf.cast(k, tf.int64) * n // sum(sizes), dtype)\n"
           "                       for f, n in zip(flats, sizes)], axis=0)",
           (f"{T_SP}::test_global_topk",
            "tests/test_analysis_claims_2.py::test_global_topk_counts_across_tensors_of_"
            "different_sizes")),
    Mutant("Hessian missing the cross-layer (residual) blocks", "rigl_tf.analysis.hessian_split",
           "return ((gn + gn.T) / 2.0 + residual + residual.T) / count",
           "return ((gn + gn.T) / 2.0) / count",
           ("tests/test_analysis_hessian_split.py::test_split_matches_central_finite_differences",)),
    Mutant("Hessian keeps only the computed triangle", "rigl_tf.analysis.hessian",
           "matrix = np.where(computed, matrix, matrix.T)",
           "matrix = np.where(computed, matrix, 0.0)",
           ("tests/test_analysis_hessian.py::test_hessian_equals_nested_tape",)),
    Mutant("gradient flow averages per-batch mean gradients", "rigl_tf.analysis.gradient_flow",
           "            acc.assign_add(tf.cast(g, tf.float64))\n",
           # Each batch's summed gradient rescaled to a full batch: exact when every batch is
           # full, wrong (the last, short batch over-weighted) otherwise.
           "            acc.assign_add(tf.cast(g, tf.float64) * batch_size\n"
           "                           / tf.cast(tf.shape(x)[0], tf.float64))\n",
           ("tests/test_analysis_gradient_flow.py::test_gradient_norm_equals_direct_"
            "computation",)),
    Mutant("gradient flow ignores the masks", "rigl_tf.analysis.gradient_flow",
           "grads.append(g if mask is None else g * mask)",
           "grads.append(g)",
           ("tests/test_analysis_gradient_flow.py::test_mean_gradients_are_masked_and_"
            "dataset_matches_arrays",)),
    Mutant("barrier measured from the mean of the endpoints", "rigl_tf.analysis.interpolation",
           "gaps = values[inside] - ((1.0 - alphas[inside]) * v0 + alphas[inside] * v1)",
           "gaps = values[inside] - 0.5 * (v0 + v1)",
           ("tests/test_analysis_claims.py::test_error_barrier_subtracts_the_linear_"
            "interpolation_of_unequal_endpoints",)),
    Mutant("barrier includes alphas outside [0, 1]", "rigl_tf.analysis.interpolation",
           "inside = (alphas >= -1e-9) & (alphas <= 1 + 1e-9)",
           "inside = np.ones(alphas.shape, bool)",
           ("tests/test_analysis_claims.py::test_error_barrier_subtracts_the_linear_"
            "interpolation_of_unequal_endpoints",
            "tests/test_analysis_interpolation.py::test_error_barrier_by_hand")),
    Mutant("ensemble averages log-probabilities", "rigl_tf.analysis.similarity",
           "return accuracy(np.mean(probs_list, axis=0), labels)",
           "return accuracy(np.mean(np.log(np.maximum(probs_list, EPS)), axis=0), labels)",
           ("tests/test_analysis_claims.py::test_ensemble_averages_probabilities_not_log_"
            "probabilities",)),
    Mutant("MDS on the distances instead of their squares", "rigl_tf.analysis.distances",
           "b = -0.5 * j @ (d**2) @ j",
           "b = -0.5 * j @ d @ j",
           ("tests/test_analysis_distances.py::test_mds_reproduces_euclidean_distances_"
            "in_2d",)),
    Mutant("angular distance on the union of the supports", "rigl_tf.analysis.distances",
           "x & y for x, y in zip(_support(a, masks_a, \"masks_a\"), "
           "_support(b, masks_b, \"masks_b\"))",
           "x | y for x, y in zip(_support(a, masks_a, \"masks_a\"), "
           "_support(b, masks_b, \"masks_b\"))",
           ("tests/test_analysis_distances.py::test_angular_distance_identical_random_"
            "opposite_and_masked",)),
    Mutant("correlation indicator total unweighted by layer size", "rigl_tf.analysis.tickets",
           "        num += overlap * x.size\n        den += x.size\n",
           "        num += overlap\n        den += 1\n",
           ("tests/test_analysis_claims.py::test_correlation_indicator_total_is_weighted_"
            "by_layer_size",)),
    Mutant("disagreement on probabilities instead of argmax", "rigl_tf.analysis.similarity",
           "return float(np.mean(np.argmax(p, axis=1) != np.argmax(q, axis=1)))",
           "return float(np.mean(np.any(p != q, axis=1)))",
           ("tests/test_analysis_similarity.py",)),
    Mutant("JSD with the wrong sign", "rigl_tf.analysis.similarity",
           "np.mean(entropy(mean, eps) - np.mean([entropy(p, eps) for p in probs_list], "
           "axis=0))",
           "np.mean(np.mean([entropy(p, eps) for p in probs_list], axis=0) - "
           "entropy(mean, eps))",
           ("tests/test_analysis_similarity.py",)),
    Mutant("KL divergence reversed", "rigl_tf.analysis.similarity",
           "terms = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - "
           "np.log(np.maximum(q, eps))), 0.0)",
           "terms = np.where(q > 0, q * (np.log(np.maximum(q, eps)) - "
           "np.log(np.maximum(p, eps))), 0.0)",
           ("tests/test_analysis_similarity.py",)),
    Mutant("interpolation endpoints swapped", "rigl_tf.analysis.interpolation",
           "point = [(1.0 - alpha) * a + alpha * b for a, b in zip(start, end)]",
           "point = [alpha * a + (1.0 - alpha) * b for a, b in zip(start, end)]",
           ("tests/test_analysis_interpolation.py",)),
    Mutant("angular distance without the factor 2/pi", "rigl_tf.analysis.distances",
           "return 2.0 * float(np.arccos(cos)) / np.pi if np.isfinite(cos) else float(\"nan\")",
           "return float(np.arccos(cos)) if np.isfinite(cos) else float(\"nan\")",
           ("tests/test_analysis_distances.py",)),
]


# ---------------------------------------------------------------------- in-memory patching
def mutate_source(source, mutant_spec):
    """Returns ``source`` with the mutant's snippet replaced; raises if not found once."""
    count = source.count(mutant_spec["snippet"])
    if count != 1:
        raise LookupError(
            f"mutant {mutant_spec['name']!r}: snippet found {count} times in "
            f"{mutant_spec['module']} (expected exactly once)")
    return source.replace(mutant_spec["snippet"], mutant_spec["replacement"])


class _MutantLoader(importlib.machinery.SourceFileLoader):
    """Compiles the mutated source in memory (nothing is written, no bytecode cached)."""

    def __init__(self, fullname, path, spec):
        super().__init__(fullname, path)
        self._spec = spec

    def get_code(self, fullname):
        source = mutate_source(self.get_data(self.path).decode("utf-8"), self._spec)
        # tf.function's autograph re-reads a function's source through linecache/inspect;
        # compiled under the real path it would convert the unmutated file on disk. Under
        # a name that is not a file, with the mutated lines in linecache (mtime None: never
        # re-validated), it converts the mutant.
        filename = self.path + ":mutant"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        code = compile(source, filename, "exec", dont_inherit=True)
        report = os.environ.get(REPORT_VAR)
        if report:
            with open(report, "a") as f:
                f.write(f"applied {self._spec['module']}\n")
        return code


class _MutantFinder(importlib.abc.MetaPathFinder):
    def __init__(self, spec):
        self._spec = spec

    def find_spec(self, fullname, path, target=None):
        if fullname != self._spec["module"]:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        spec.loader = _MutantLoader(fullname, spec.origin, self._spec)
        return spec


def install(spec):
    """Makes the next import of ``spec['module']`` load the mutated source."""
    if spec["module"] in sys.modules:
        raise RuntimeError(f"{spec['module']} was imported before the mutant was installed")
    sys.meta_path.insert(0, _MutantFinder(spec))


# Loaded by pytest with ``-p mutation_check``: install the mutant named in the environment
# before any test module (or conftest) imports the package.
if os.environ.get(ENV_VAR) and __name__ != "__main__":
    install(json.loads(os.environ[ENV_VAR]))


# ---------------------------------------------------------------------- driver
def check_applicable(mutant, root=ROOT):
    """None if the mutant applies (exactly one match, still valid Python), else a reason."""
    try:
        with open(mutant.path(root)) as f:
            source = f.read()
    except OSError as e:
        return f"cannot read {mutant.module}: {e}"
    try:
        compile(mutate_source(source, dataclasses.asdict(mutant)), mutant.path(root), "exec")
    except LookupError as e:
        return str(e)
    except SyntaxError as e:
        return f"mutated source does not compile: {e}"
    return None


def run_mutant(mutant, root=ROOT, timeout=900):
    """Runs the mutant's tests in a subprocess; returns a result dict."""
    start = time.perf_counter()
    reason = check_applicable(mutant, root)
    if reason:
        return {"name": mutant.name, "module": mutant.module, "status": "NOT APPLICABLE",
                "seconds": 0.0, "detail": reason}
    with tempfile.NamedTemporaryFile("r", suffix=".log", delete=False) as tmp:
        report = tmp.name
    env = dict(os.environ)
    env[ENV_VAR] = json.dumps(dataclasses.asdict(mutant))
    env[REPORT_VAR] = report
    env["PYTHONPATH"] = os.pathsep.join(
        [root, os.path.join(root, "tools")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "-p", "mutation_check", "-o", "addopts=", *mutant.tests]
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        rc, out = None, "timeout"
    with open(report) as f:
        applied = f.read().strip()
    os.unlink(report)
    seconds = time.perf_counter() - start
    if not applied:
        status = "NOT EXERCISED"
    elif rc == 1:
        status = "caught"
    elif rc == 0:
        status = "MISSED"
    else:
        status = f"ERROR (pytest exit {rc})"
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return {"name": mutant.name, "module": mutant.module, "status": status,
            "seconds": round(seconds, 1), "detail": lines[-1] if lines else ""}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run in parallel")
    parser.add_argument("--list", action="store_true", help="print the mutant names and exit")
    parser.add_argument("--json", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in mutants:
            print(f"{m.name}  [{m.module}]")
        return 0
    if not mutants:
        print(f"no mutant name contains {args.k!r}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_mutant, m) for m in mutants]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()  # progress, as each mutant finishes
            print(f"  {r['status']:<16} {r['seconds']:7.1f} s  {r['name']}", flush=True)
        results = [f.result() for f in futures]
    total = time.perf_counter() - start
    width = max(len(r["name"]) for r in results)
    print(f"{'mutant':<{width}}  {'module':<32} {'status':<16} seconds")
    for r in results:
        print(f"{r['name']:<{width}}  {r['module']:<32} {r['status']:<16} {r['seconds']:7.1f}")
    caught = sum(r["status"] == "caught" for r in results)
    print(f"{caught}/{len(results)} caught in {total:.1f} s (wall, {args.jobs} jobs)")
    report = {"mutants": results, "caught": caught, "total": len(results),
              "seconds": round(total, 1), "jobs": args.jobs}
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
