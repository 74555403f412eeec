"""PNG plots of analysis results (matplotlib, Agg canvas; pyplot's global state is untouched).

Every function writes one PNG (creating parent directories) and returns its path.
"""

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(figsize=(6.0, 4.0)):
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _check_dict(value, name):
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"{name}: must be a non-empty dict {{label: ...}}; got {type(value).__name__}."
        )
    return value


def plot_curves(curves, path, xlabel="step", ylabel="value", title=None, logy=False):
    """Several runs on one axis, e.g. gradient norm vs. training step.

    Args:
      curves: dict {label: (x, y)} of equally long 1-D sequences.
      path: output PNG path.
      xlabel, ylabel, title: axis labels and optional title.
      logy: logarithmic y axis.

    Returns:
      `path`.
    """
    _check_dict(curves, "curves")
    fig = _figure()
    ax = fig.add_subplot()
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=str(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_spectral_density(densities, path, logy=True, title="Hessian spectral density"):
    """Spectral densities, e.g. before and after training.

    Args:
      densities: dict {label: (grid, density)} or {label: `slq_density` result dict}.
      path: output PNG path.
      logy: logarithmic density axis (the usual view of Hessian spectra); values are
        floored at 1e-12 so zeros remain drawable.
      title: plot title.

    Returns:
      `path`.
    """
    _check_dict(densities, "densities")
    fig = _figure()
    ax = fig.add_subplot()
    for label, value in densities.items():
        grid, density = (value["grid"], value["density"]) if isinstance(value, dict) else value
        density = np.asarray(density, np.float64)
        ax.plot(np.asarray(grid), np.maximum(density, 1e-12) if logy else density, label=str(label))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_interpolation(results, path, metrics=("loss", "error"), title="Linear interpolation"):
    """Loss and/or error along interpolation paths.

    Args:
      results: dict {label: `interpolate` result} (or one result).
      path: output PNG path.
      metrics: which keys to plot, one panel each.
      title: figure title.

    Returns:
      `path`.
    """
    if isinstance(results, dict) and "alphas" in results:
        results = {"path": results}
    _check_dict(results, "results")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    fig = _figure((4.5 * len(metrics), 3.8))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for label, result in results.items():
            ax.plot(result["alphas"], result[metric], marker=".", label=str(label))
        for edge in (0.0, 1.0):
            ax.axvline(edge, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("alpha")
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_barrier_matrix(matrix, path, labels=None, title="Error barrier", cmap="viridis"):
    """Heat map of a pairwise matrix (barriers, distances, disagreements).

    Args:
      matrix: (K, K) array.
      path: output PNG path.
      labels: optional K tick labels.
      title: plot title.
      cmap: matplotlib colormap name.

    Returns:
      `path`.
    """
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix: must be square; got shape {matrix.shape}.")
    k = matrix.shape[0]
    fig = _figure((1.0 + 0.6 * max(k, 5), 0.6 * max(k, 5)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap=cmap)
    fig.colorbar(image, ax=ax)
    ticks = labels if labels is not None else list(range(k))
    ax.set_xticks(range(k), [str(t) for t in ticks], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(t) for t in ticks])
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", fontsize=7, color="w"
                )
    ax.set_title(title)
    return _save(fig, path)


def plot_mds(coordinates, path, labels=None, groups=None, title="MDS embedding"):
    """Scatter plot of a 2-D MDS embedding of solutions.

    Args:
      coordinates: (K, 2) array from `mds_embedding`.
      path: output PNG path.
      labels: optional K point labels.
      groups: optional K group names (one colour and legend entry each).
      title: plot title.

    Returns:
      `path`.
    """
    coordinates = np.asarray(coordinates, np.float64)
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise ValueError(f"coordinates: must be (K, 2); got shape {coordinates.shape}.")
    k = coordinates.shape[0]
    fig = _figure((5.0, 5.0))
    ax = fig.add_subplot()
    groups = list(groups) if groups is not None else ["solutions"] * k
    for group in dict.fromkeys(groups):
        sel = np.array([g == group for g in groups])
        ax.scatter(coordinates[sel, 0], coordinates[sel, 1], label=str(group))
    if labels is not None:
        for (x, y), label in zip(coordinates[:, :2], labels):
            ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_plane(result, path, metric="error", point_labels=("w0", "w1", "w2"), levels=20):
    """Contour plot of a `plane` result with the three defining points marked.

    Args:
      result: dict from `interpolation.plane`.
      path: output PNG path.
      metric: `"loss"`, `"error"` or `"accuracy"`.
      point_labels: names of the three points.
      levels: number of contour levels.

    Returns:
      `path`.
    """
    if metric not in result:
        raise ValueError(
            f"metric: {metric!r} is not in the result; allowed: loss, error, accuracy."
        )
    fig = _figure((5.5, 4.5))
    ax = fig.add_subplot()
    values = np.asarray(result[metric], np.float64)
    if np.ptp(values) > 0:
        contour = ax.contourf(result["a"], result["b"], values, levels=levels, cmap="viridis")
    else:  # a constant surface has no contour levels
        contour = ax.pcolormesh(result["a"], result["b"], values, cmap="viridis", shading="auto")
    fig.colorbar(contour, ax=ax, label=metric)
    points = np.asarray(result["points"])
    ax.scatter(points[:, 0], points[:, 1], color="white", edgecolors="black", zorder=3)
    for (x, y), label in zip(points, point_labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), color="white")
    ax.set_xlabel("a")
    ax.set_ylabel("b")
    ax.set_title(f"{metric} on the plane")
    return _save(fig, path)


def plot_sparsity_evolution(evolution, path, title="Sparsity per layer"):
    """Per-layer and total sparsity across levels (e.g. IMP rounds).

    Args:
      evolution: dict from `tickets.sparsity_evolution`.
      path: output PNG path.
      title: plot title.

    Returns:
      `path`.
    """
    per = np.asarray(evolution["per_layer"], np.float64)
    steps = np.arange(per.shape[0])
    fig = _figure()
    ax = fig.add_subplot()
    for col, name in enumerate(evolution["layers"]):
        ax.plot(steps, per[:, col], marker=".", label=str(name))
    ax.plot(steps, evolution["total"], color="black", linewidth=2, label="total")
    ax.set_xlabel("level")
    ax.set_ylabel("sparsity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)
