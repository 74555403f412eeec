"""Every plot function writes a non-empty PNG and returns its path."""

import numpy as np

from rigl_tf import analysis

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE
    return path


def test_all_plots_write_pngs(tmp_path):
    steps = np.arange(10)
    _check(
        analysis.plot_curves(
            {"RigL": (steps, np.exp(-steps / 5)), "Static": (steps, np.exp(-steps / 3))},
            tmp_path / "curves.png",
            ylabel="gradient norm",
            logy=True,
        )
    )
    eigs = np.array([-0.1, 0.0, 0.5, 2.0])
    grid = np.linspace(-1, 3, 50)
    _check(
        analysis.plot_spectral_density(
            {
                "before": (grid, analysis.spectral_density(eigs, grid, 0.1)),
                "after": {"grid": grid, "density": analysis.spectral_density(eigs * 2, grid, 0.1)},
            },
            tmp_path / "sub" / "density.png",
        )
    )
    alphas = np.linspace(-0.2, 1.2, 8)
    result = {
        "alphas": alphas,
        "loss": alphas**2,
        "error": 0.1 + alphas * 0,
        "accuracy": 0.9 + alphas * 0,
    }
    _check(analysis.plot_interpolation(result, tmp_path / "interp.png"))
    _check(
        analysis.plot_interpolation(
            {"a": result, "b": result}, tmp_path / "interp2.png", metrics="loss"
        )
    )
    _check(
        analysis.plot_barrier_matrix(
            np.array([[0, 0.1], [0.1, 0]]), tmp_path / "barrier.png", labels=["s1", "s2"]
        )
    )
    _check(
        analysis.plot_mds(
            np.random.default_rng(0).normal(size=(4, 2)),
            tmp_path / "mds.png",
            labels=list("abcd"),
            groups=["LT", "LT", "RigL", "RigL"],
        )
    )
    plane = {
        "a": np.linspace(0, 1, 4),
        "b": np.linspace(0, 1, 3),
        "error": np.arange(12.0).reshape(3, 4),
        "points": np.array([[0, 0], [1, 0], [0.5, 1]]),
    }
    _check(analysis.plot_plane(plane, tmp_path / "plane.png"))
    plane["error"] = np.zeros((3, 4))
    _check(analysis.plot_plane(plane, tmp_path / "plane_flat.png"))
    evo = analysis.sparsity_evolution([[np.ones(4)], [np.array([1, 1, 0, 0])]])
    path = _check(analysis.plot_sparsity_evolution(evo, str(tmp_path / "sparsity.png")))
    assert path == str(tmp_path / "sparsity.png")
    for p in tmp_path.rglob("*.png"):
        assert p.stat().st_size > 1000
