"""A resumable exact-Hessian job over any number of examples (e.g. a full training set).

`run_hessian_job` streams `(x, y)` in batches, adds each batch's exact Hessian sum to float64
partial sums (the split method's G and R for piecewise-linear chains, otherwise per-batch
Hessians of the generic method), reports progress with an ETA, and saves the partial sums
atomically every `checkpoint_seconds` to `OUT_DIR/<label>.partial.npz`. A job killed at any
moment resumes from its last saved batch when run again with the same inputs; different
inputs (weights, masks, data, batch size, method) are refused rather than mixed. At the end it
writes, each atomically: `<label>.hessian.npy` (the float64 matrix), `<label>.eigvals.npy`
(`numpy.linalg.eigh`), `<label>.json` (summary and timings) and `<label>.density.png` (the
Gaussian-kernel spectral density of Ghorbani et al., as in the paper's Fig. 10), then removes
its partial file.
"""

import hashlib
import json
import os
import sys
import time

import numpy as np

from rigl_tf.analysis import _common
from rigl_tf.analysis.hessian import (
    METHODS,
    eigenvalues,
    hessian,
    select_coordinates,
    spectral_density,
    spectrum_summary,
    wrapper_masks,
)

PARTIAL_SUFFIX = ".partial.npz"


def _fingerprint(model, coords, x, y, batch_size, method, spectrum):
    """A digest of everything the partial sums depend on."""
    digest = hashlib.sha256()
    for v in model.trainable_variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    for idx in coords.flat_indices:
        digest.update(np.asarray(idx, np.int64).tobytes())
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    digest.update(json.dumps([int(batch_size), method, spectrum, len(x)]).encode())
    return digest.hexdigest()


def _save_partial(path, arrays):
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _format_seconds(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def density_grid(eigs, sigma=None, points=1000):
    """A grid spanning the eigenvalues with a margin, and the default kernel width."""
    lo, hi = float(np.min(eigs)), float(np.max(eigs))
    span = hi - lo if hi > lo else 1.0
    sigma = sigma or 0.01 * span
    return np.linspace(lo - 0.05 * span - 3 * sigma, hi + 0.05 * span + 3 * sigma, points), sigma


def run_hessian_job(
    model,
    data,
    out_dir,
    label="hessian",
    masks=None,
    spectrum="sparse",
    method="auto",
    batch_size=256,
    chunk_size=64,
    checkpoint_seconds=60.0,
    max_params=30000,
    sigma=None,
    progress=None,
    on_batch=None,
    loss_fn=None,
):
    """Computes (or resumes) the exact Hessian of the mean loss over `data`; see module doc.

    Args:
      model: a Keras model producing logits.
      data: `(x, y)` numpy arrays (memory-mapped arrays work); read batch by batch.
      out_dir: directory for the partial sums and the results (created if missing).
      label: file name stem of this job's files.
      masks, spectrum, method, chunk_size, max_params, loss_fn: as for
        `rigl_tf.analysis.hessian` (masks default to the SparseWrappers' masks).
      batch_size: examples per batch (part of the job's identity).
      checkpoint_seconds: save partial sums at most this often (and after the last batch);
        0 saves after every batch.
      sigma: kernel width of the density plot (default 1% of the spectrum's span).
      progress: `progress(message)` for progress lines; default prints to stderr.
      on_batch: optional `on_batch(batches_done, num_batches)` called after each batch has
        been added (and checkpointed, if due); used by tests to interrupt a job.

    Returns:
      A dict: `matrix`, `eigenvalues`, `coordinates`, `summary` (also in `<label>.json`) and
      `paths` of the files written.

    Raises:
      ValueError: for bad arguments, more than `max_params` coordinates, or a partial file
        in `out_dir` that belongs to different inputs.
    """
    from rigl_tf.analysis import hessian_split
    from rigl_tf.analysis.plots import plot_spectral_density
    from rigl_tf.experiments import runs

    _common.check_choice(method, "method", METHODS)
    batch_size = _common.check_positive_int(batch_size, "batch_size")
    if not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds: must be >= 0; got {checkpoint_seconds!r}.")
    if not isinstance(label, str) or not label or os.sep in label:
        raise ValueError(f"label: must be a non-empty file name without {os.sep!r}; got {label!r}.")
    x, y = _common._check_pair(data)
    if len(x) == 0:
        raise ValueError("data: holds no examples; at least one (x, y) example is needed.")
    coords = select_coordinates(model, masks, spectrum)
    if coords.num_params > max_params:
        raise ValueError(
            f"max_params: the {spectrum!r} spectrum has {coords.num_params} coordinates, more "
            f"than max_params={max_params}; raise max_params."
        )
    if masks is None:
        masks = wrapper_masks(model)
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    accumulator = None
    if method in ("auto", "split"):
        try:
            accumulator = hessian_split.SplitHessian(model, coords, loss_fn, chunk_size)
            used = "split"
        except hessian_split.NotSupported:
            if method == "split":
                raise
            accumulator = None
    if accumulator is None:
        used = "forward_over_reverse" if method in ("auto", "split") else method
    fingerprint = _fingerprint(model, coords, x, y, batch_size, used, spectrum)
    os.makedirs(out_dir, exist_ok=True)
    partial = os.path.join(out_dir, label + PARTIAL_SUFFIX)
    num = coords.num_params
    gn, residual, done, count, seconds_before = np.zeros((num, num)), None, 0, 0, 0.0
    if used == "split":
        residual = np.zeros((num, num))
    if os.path.exists(partial):
        with np.load(partial, allow_pickle=False) as state:
            if str(state["fingerprint"]) != fingerprint:
                raise ValueError(
                    f"out_dir: {partial!r} holds partial sums of a different job (other weights, "
                    "masks, data, batch size or method); remove it or choose another label."
                )
            gn = np.array(state["gn"])
            residual = np.array(state["residual"]) if used == "split" else None
            done, count = int(state["batches_done"]), int(state["count"])
            seconds_before = float(state["seconds"])
        say(f"{label}: resuming at batch {done} ({count} of {len(x)} examples done).")
    num_batches = (len(x) + batch_size - 1) // batch_size
    start_time = time.perf_counter()
    last_save = start_time
    resumed_at = count

    def save():
        arrays = {"gn": gn, "batches_done": done, "count": count, "fingerprint": fingerprint,
                  "seconds": seconds_before + time.perf_counter() - start_time}
        if residual is not None:
            arrays["residual"] = residual
        _save_partial(partial, arrays)

    for b in range(done, num_batches):
        xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
        if accumulator is not None:
            accumulator.gn, accumulator.residual = gn, residual  # adds in place
            accumulator.add(xb, yb)  # checks the chain against the model's output first
        else:
            matrix, _ = hessian(model, (xb, yb), masks, spectrum, chunk_size,
                                            len(xb), loss_fn, used, max_params)
            gn += matrix * len(xb)
        done, count = b + 1, count + len(xb)
        now = time.perf_counter()
        if now - last_save >= checkpoint_seconds or done == num_batches:
            save()
            last_save = now
        elapsed = now - start_time
        rate = (count - resumed_at) / max(elapsed, 1e-9)
        eta = (len(x) - count) / rate if rate > 0 else float("nan")
        say(f"{label}: {count}/{len(x)} examples ({100.0 * count / len(x):.1f}%), "
            f"{_format_seconds(seconds_before + elapsed)} elapsed, ETA {_format_seconds(eta)}")
        if on_batch is not None:
            on_batch(done, num_batches)
    if used == "split":
        matrix = hessian_split.assemble(gn, residual, count)
    else:
        matrix = (gn + gn.T) / 2.0 / count
    compute_seconds = seconds_before + time.perf_counter() - start_time
    t0 = time.perf_counter()
    eigs = eigenvalues(matrix)
    eigh_seconds = time.perf_counter() - t0
    summary = {"label": label, "method": used, "spectrum": spectrum, "num_examples": count,
               "batch_size": batch_size, "hessian_seconds": round(compute_seconds, 3),
               "eigh_seconds": round(eigh_seconds, 3)}
    summary.update(spectrum_summary(eigs))
    grid, sigma = density_grid(eigs, sigma)
    density = spectral_density(eigs, grid, sigma)
    summary["density_sigma"] = sigma
    paths = {key: os.path.join(out_dir, f"{label}.{key}") for key in
             ("hessian.npy", "eigvals.npy", "json", "density.png")}
    runs.save_npy(paths["hessian.npy"], matrix)
    runs.save_npy(paths["eigvals.npy"], eigs)
    runs.save_json(paths["json"], summary)
    runs.save_plot(paths["density.png"], plot_spectral_density, {label: (grid, density)},
                   title=f"Hessian spectral density ({label}, {count} examples)")
    os.remove(partial)
    say(f"{label}: done: {num} coordinates, {count} examples, {compute_seconds:.1f} s; "
        f"eigenvalues in [{summary['min_eigenvalue']:.4g}, {summary['max_eigenvalue']:.4g}].")
    return {"matrix": matrix, "eigenvalues": eigs, "coordinates": coords, "summary": summary,
            "paths": paths}
