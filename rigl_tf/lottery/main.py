r"""rigl-lottery: gin-configured, resumable iterative magnitude pruning (lottery tickets).

Usage::

    rigl-lottery --gin_config=configs/lottery/quickstart_imp.gin --root_dir=/tmp/lottery
    python -m rigl_tf.lottery.main \
        --gin_config=configs/lottery/fashion_mnist_lenet5_step.gin \
        --gin_bindings="lottery_run.levels = 3" --root_dir=/tmp/lottery

Gin vocabulary:

* ``data.*``, ``network.*``, ``optimizer.*``, ``training.*``, ``sparsity.keep_dense``,
  ``sparsity.min_active``: the same parameters as ``rigl-train`` (each level and branch
  is trained by rigl-train's trainer: checkpoints every ``training.save_freq`` steps
  inside a level, resumption, summaries, mixed precision, weight decay, warm-up).
* ``imp.<name>``: the IMP-only fields of :class:`rigl_tf.lottery.imp.IMPConfig`
  (pruning fraction, importance, scope, rewinding, adaptive ratio, repellent loss,
  seeds). With the training parameters they define the run: they are stored in
  ``config.json`` and name its directory ``<root_dir>/<run name>``.
* ``lottery_run.<name>``: what to execute in that run (levels, one-shot pruning,
  branches); changing these never invalidates finished work.

Re-running the same command continues after the last finished level and skips finished
one-shot runs and branches, and an interrupted level resumes from its latest checkpoint;
a ``--run_dir`` that holds a different configuration is refused. The run directory also
receives ``operative_config.gin`` (the last invocation's gin parameters) and
``summary.json``.
"""

import dataclasses
import difflib
import inspect
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402

from rigl_tf.experiments import config as config_lib  # noqa: E402
from rigl_tf.lottery import branches as branches_lib  # noqa: E402
from rigl_tf.lottery import imp as imp_lib  # noqa: E402
from rigl_tf.lottery import importance as importance_lib  # noqa: E402
from rigl_tf.lottery import layout  # noqa: E402
from rigl_tf.lottery.start import check_int  # noqa: E402
from rigl_tf import locking  # noqa: E402

OPERATIVE_CONFIG = "operative_config.gin"

imp = gin.external_configurable(imp_lib.IMPConfig, "imp")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What to execute in an IMP run (see :func:`lottery_run`)."""

    levels: int
    target_sparsity: Optional[float]
    oneshot_sparsities: tuple
    branches: tuple
    branch_levels: Optional[tuple]
    branch_seeds: tuple


@gin.configurable("lottery_run")
def lottery_run(levels=3, target_sparsity=None, oneshot_sparsities=(), branches=(),
                branch_levels=None, branch_seeds=(1,)):
    """The work to do in a run.

    Args:
      levels: the last IMP level ``L_max`` (levels ``0 .. L_max`` are run).
      target_sparsity: stop IMP after the first level reaching this sparsity (and report
        the compute saved by the adaptive ratio against the fixed one).
      oneshot_sparsities: sparsities for one-shot magnitude pruning (OMP) runs.
      branches: branch names to run (see ``rigl_tf.lottery.branches.BRANCHES``).
      branch_levels: IMP levels to branch from (default: the last level reached).
      branch_seeds: branch seeds (>= 1), one branch run per seed.

    Returns:
      A :class:`RunSpec`.
    """
    check_int("lottery_run.levels", levels, 0)
    if target_sparsity is not None:
        importance_lib.check_fraction(target_sparsity, "lottery_run.target_sparsity")
    for i, s in enumerate(oneshot_sparsities):
        importance_lib.check_fraction(s, f"lottery_run.oneshot_sparsities[{i}]")
    for name in branches:
        if name not in branches_lib.BRANCHES:
            raise ValueError(
                f"Unknown branch {name!r} in `lottery_run.branches`; known branches: "
                f"{', '.join(branches_lib.BRANCHES)}.")
    if branch_levels is not None:
        for i, lvl in enumerate(branch_levels):
            check_int(f"lottery_run.branch_levels[{i}]", lvl, 0)
            if lvl > levels:
                raise ValueError(
                    f"`lottery_run.branch_levels[{i}]`={lvl} is beyond `lottery_run.levels`"
                    f"={levels}; branch levels must be finished IMP levels.")
    for i, s in enumerate(branch_seeds):
        check_int(f"lottery_run.branch_seeds[{i}]", s, 1)
    return RunSpec(int(levels), target_sparsity, tuple(oneshot_sparsities), tuple(branches),
                   None if branch_levels is None else tuple(branch_levels),
                   tuple(branch_seeds))


# The former ``imp.*`` names of parameters that now come from rigl-train's vocabulary.
RENAMED = {
    "imp.network": "network.network_name", "imp.dataset": "data.dataset_name",
    "imp.model_kwargs": "network.model_kwargs (or network.hidden_sizes)",
    "imp.normalization": "data.normalization", "imp.image_size": "data.image_size",
    "imp.keep_dense": "sparsity.keep_dense", "imp.min_active": "sparsity.min_active",
    "imp.train_steps": "training.total_steps",
    "imp.train_epochs": "training.total_steps (epochs * training examples // batch size)",
    "imp.batch_size": "training.batch_size", "imp.optimizer": "optimizer.name",
    "imp.learning_rate": "optimizer.learning_rate", "imp.momentum": "optimizer.momentum",
    "imp.lr_schedule": "optimizer.schedule", "imp.weight_decay": "network.weight_decay",
    "lottery_run.eval_batch_size": "training.val_batch_size",
}


def parse(gin_config: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
    """Parses gin files and bindings afresh (rigl-train's parser, with its search paths).

    Raises:
      FileNotFoundError: for a missing config file.
      ValueError: for unknown configurables or parameters (a former ``imp.*`` name
        gets its new name).
    """
    try:
        config_lib.parse(gin_config, gin_bindings)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"`--gin_config`: {e}") from None
    except ValueError as e:
        m = re.search(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'", str(e))
        if not m or m.group(1) not in ("imp", "lottery_run"):
            raise
        name = f"{m.group(1)}.{m.group(2)}"
        first = str(e).split("\n")[0]
        if name in RENAMED:
            raise ValueError(f"`{name}` is now `{RENAMED[name]}` (rigl-train's vocabulary; "
                             f"see configs/lottery/).\n{first}") from None
        fn = imp_lib.IMPConfig if m.group(1) == "imp" else lottery_run
        accepted = list(inspect.signature(inspect.unwrap(fn)).parameters)
        close = difflib.get_close_matches(m.group(2), accepted, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown parameter `{name}`.{hint} {m.group(1)} accepts: "
                         f"{', '.join(accepted)}.\n{first}") from None


def resolve():
    """``(IMPConfig, ExperimentSpec, RunSpec)`` of the parsed gin config (validated)."""
    spec = imp_lib.check_spec(config_lib.resolve())
    return imp(), spec, lottery_run()


def run_lottery(gin_config: Sequence[str] = (), gin_bindings: Sequence[str] = (), *,
                root_dir: str = "/tmp/rigl_lottery", run_dir: Optional[str] = None,
                data_dir: Optional[str] = None, fit_verbose: int = 0,
                strategy: str = "default", tpu: Optional[str] = None,
                print_fn=print, progress: Optional[str] = None) -> Dict:
    """Runs (or resumes) the IMP run that the gin files and bindings describe.

    Args:
      gin_config: gin files.
      gin_bindings: gin bindings (applied after the files).
      root_dir: parent of the run directory (named by the hyperparameters).
      run_dir: explicit run directory (overrides ``root_dir``).
      data_dir: data directory for IDX / tfds datasets (overrides ``data.data_dir``).
      fit_verbose: the trainer's verbosity (``model.fit`` progress and log lines).
      strategy: the trainer's strategy ('default', 'mirrored' or 'tpu').
      tpu: TPU address for 'tpu'.
      print_fn: where tables go.
      progress: one line per IMP level with an ETA (a `rigl_tf.progress` mode; default:
        ``$RIGL_TF_PROGRESS`` or a bar on a terminal, nothing otherwise).

    Returns:
      ``{"run_dir", "levels", "oneshot", "branches", "savings"}``.

    Raises:
      ValueError: for invalid hyperparameters (naming the parameter), or
        ``layout.RunDirConflictError`` for a run directory of another configuration.
    """
    parse(gin_config, gin_bindings)
    config, train_spec, spec = resolve()
    named = train_spec if data_dir is None else dataclasses.replace(
        train_spec, data=dataclasses.replace(train_spec.data, data_dir=data_dir))
    directory = run_dir or os.path.join(root_dir, config.run_name(named))
    with locking.exclusive(directory, "IMP run directory"):
        return _run_locked(config, train_spec, spec, root_dir, run_dir, data_dir, fit_verbose,
                           strategy, tpu, print_fn, progress)


def _run_locked(config, train_spec, spec, root_dir, run_dir, data_dir, fit_verbose, strategy,
                tpu, print_fn, progress=None):
    """:func:`run_lottery` while this process owns the run directory."""
    run = imp_lib.IMPRun(config, train_spec, root_dir, run_dir=run_dir, data_dir=data_dir,
                         strategy=strategy, tpu=tpu, verbose=fit_verbose)
    _write_text(os.path.join(run.run_dir, OPERATIVE_CONFIG), gin.operative_config_str())
    print_fn(f"IMP run directory: {run.run_dir}")
    done = run.finished_levels()
    if done:
        print_fn(f"Resuming: levels {done[0]}..{done[-1]} are finished and skipped.")
    levels = run.run(spec.levels, spec.target_sparsity, progress=progress)
    print_fn(imp_lib.format_summary(run.write_summary()))
    oneshot = []
    for s in spec.oneshot_sparsities:
        m = run.run_oneshot(s)
        oneshot.append({"sparsity": s, "test_accuracy": m["test_accuracy"]})
        print_fn(f"OMP to sparsity {s:g}: test accuracy {m['test_accuracy']:.4f}")
    branch_rows: List[Dict] = []
    last = len(levels) - 1
    for level in spec.branch_levels if spec.branch_levels is not None else (last,):
        for name in spec.branches:
            for seed in spec.branch_seeds:
                m = run.run_branch(level, name, seed)
                branch_rows.append({"level": level, "branch": name, "seed": seed,
                                    "density": m["density"],
                                    "kernel_params": m["kernel_params"],
                                    "test_accuracy": m["test_accuracy"]})
    if branch_rows:
        print_fn(_format_branches(branch_rows))
    savings = None
    if spec.target_sparsity is not None:
        savings = run.compute_savings(spec.target_sparsity)
        print_fn(_format_savings(savings))
    return {"run_dir": run.run_dir, "levels": levels, "oneshot": oneshot,
            "branches": branch_rows, "savings": savings}


def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    layout._atomic(path, write, ".gin")


def _format_branches(rows):
    head = f"{'level':>5} {'branch':<14} {'seed':>4} {'density':>9} {'kernels':>8} {'test acc':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['level']:>5} {r['branch']:<14} {r['seed']:>4} {r['density']:>9.5f} "
                     f"{r['kernel_params']:>8} {r['test_accuracy']:>9.4f}")
    return "\n".join(lines)


def _format_savings(s):
    if s["adaptive_levels"] is None:
        return (f"Target sparsity {s['target_sparsity']:g} not reached; a fixed ratio of "
                f"{s['fixed_fraction']:g} needs {s['fixed_levels']} levels "
                f"({s['fixed_steps']} steps).")
    return (f"Target sparsity {s['target_sparsity']:g}: this run needed "
            f"{s['adaptive_levels']} levels ({s['adaptive_steps']} steps); a fixed ratio of "
            f"{s['fixed_fraction']:g} needs {s['fixed_levels']} levels ({s['fixed_steps']} "
            f"steps): saved {s['saved_levels']} levels, {s['saved_steps']} steps "
            f"({100 * s['saved_fraction']:.1f}%).")


# --------------------------------------------------------------------------- absl


# The flags live in a module without TensorFlow (rigl-lottery --help answers at once).
from rigl_tf.experiments.lottery_flags import FLAG_NAMES as _FLAG_NAMES  # noqa: E402
from rigl_tf.experiments.lottery_flags import define_flags as _define_flags  # noqa: E402


def main(argv):
    """absl entry point: :func:`run_lottery` with the command-line flags."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    from rigl_tf import progress as progress_lib
    from rigl_tf.errors import report_errors

    fit_verbose = (progress_lib.fit_verbosity(F.progress) if F.fit_verbose is None
                   else F.fit_verbose)
    code = report_errors("rigl-lottery", lambda: run_lottery(
        F.gin_config, F.gin_bindings, root_dir=F.root_dir, run_dir=F.run_dir,
        data_dir=F.data_dir, fit_verbose=fit_verbose, strategy=F.strategy, tpu=F.tpu,
        progress=progress_lib.command_mode(F.progress)), debug=F.debug)
    if code:
        sys.exit(code)


def run(argv=None):
    """Entry point of ``python -m rigl_tf.lottery.main`` (the console script
    ``rigl-lottery`` is rigl_tf/commands/lottery.py, which parses before importing TF)."""
    from rigl_tf.commands import _cli

    _define_flags()
    _cli.adopt_key_flags(names=_FLAG_NAMES)  # `rigl-lottery --help` lists them
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
