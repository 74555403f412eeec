"""The reproduction study: runs to train, analyses to compute, caching and progress.

Layout of ``out_dir``::

    REPORT.md, *.png              the report and its figures (written atomically)
    results.json                  every measured number the report is made of
    runs/<budget>/<model>/<run>/  one rigl-train logdir per run (resumes by itself)
    cache/<model>/<analysis>.json analysis results with the key of their inputs

A run is finished when its ``results.json`` says ``completed``; an analysis result is
reused when its stored key (the analysis parameters plus the identity of every checkpoint
it read: path, size and modification time) equals the current one. A killed reproduction
therefore continues where it stopped: finished runs and analyses are skipped, an
interrupted run resumes from its latest checkpoint.
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rigl_tf.reproduce import report as rp

MODELS = ("lenet5", "mlp")
BUDGETS = ("quick", "full")
# --dataset -> (config directory prefix, extra gin bindings).
DATASETS = {
    "fashion_mnist_idx": ("fashion_mnist", ()),
    "fashion_mnist": ("fashion_mnist", ("data.dataset_name = 'fashion_mnist'",)),
    "mnist": ("mnist", ()),
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much to compute. `total_steps=None` keeps the configs' (the paper's) values."""

    name: str
    total_steps: Optional[int]
    seeds: int              # lottery / scratch seeds at 95%
    seeds_98: int           # lottery seeds at 98% (Table 2)
    pruned_models: int      # pruning runs with different seeds (the first is the reference)
    gradflow_examples: int
    hessian_examples: int
    hessian_max_params: int  # exact Hessian up to this many coordinates, else SLQ
    eval_examples: int       # test examples for linear paths (0 = whole test split)
    alphas: int              # points on [0, 1] of a linear path
    overrides: Tuple[str, ...] = ()


QUICK = Budget(
    name="quick", total_steps=300, seeds=2, seeds_98=1, pruned_models=3,
    gradflow_examples=256, hessian_examples=64, hessian_max_params=3000, eval_examples=2000,
    alphas=11,
    overrides=(
        # 300 steps: pruning from step 60 to 180 every 10 steps, a checkpoint every 50,
        # DST updates every 50 steps (the paper's 3000-7000/100 and 500 shrunk ~30x); one
        # evaluation at the end (a run's cost is mostly its fixed start-up, not its steps).
        "training.save_freq = 50", "training.log_freq = 300",
        "training.max_train_eval_examples = 2000",
        "pruning.begin_step = 60", "pruning.end_step = 180", "pruning.frequency = 10",
        "mask_updater.update_freq = 50",
    ))
FULL = Budget(
    name="full", total_steps=None, seeds=5, seeds_98=3, pruned_models=5, gradflow_examples=1000,
    hessian_examples=1000, hessian_max_params=6000, eval_examples=0, alphas=29)
BUDGET_BY_NAME = {"quick": QUICK, "full": FULL}


# Runs whose step-0 point is embedded next to the solutions (Fig. 5a).
INIT_POINTS = ("lottery_s1", "scratch")
# Runs whose gradient norm is also measured around every mask update (Fig. 3).
UPDATE_METHODS = (rp.SET, rp.SET_PLUS, rp.RIGL, rp.RIGL_PLUS)


@dataclasses.dataclass
class RunSpec:
    """One rigl-train run of the study."""

    name: str
    config: str                  # config file name in configs/<prefix>_<model>/
    bindings: Tuple[str, ...]
    seed: int
    depends: Tuple[str, ...] = ()
    method: str = ""             # report method name
    sparsity: str = "95"


def plan_runs(budget: Budget) -> List[RunSpec]:
    """Every run of one model's study, dependencies first.

    `prune_s0` is the pruning solution the lottery tickets, scratch runs and prune restart
    are derived from; lottery / scratch seeds start at 1, so no scratch run shares the
    pruning run's random initialization.
    """
    dst = ("training.checkpoint_mask_updates = True",)
    plus = ("network.weight_init_method = 'unit_scaled'",)
    no_plus = ("network.weight_init_method = None",)
    runs = []
    for sp, tag in (("95", ""), ("98", "98")):
        # Explicit for both levels, whatever the configs' default is.
        target = (f"TARGET_SPARSITY = 0.{sp}",)
        prune = f"prune{tag}_s0"

        def from_prune(extra=(), init=None, _prune=prune):
            b = (f"PRUNE_LOGDIR = '@{_prune}'",)
            if init is not None:
                b += (f"PRUNE_INIT = '@{_prune}{init}'",)
            return b + extra

        n_pruned = budget.pruned_models if sp == "95" else 1
        for k in range(n_pruned):
            runs.append(RunSpec(f"prune{tag}_s{k}", "prune", target, k, method=rp.PRUNING,
                                sparsity=sp))
        for k in range(1, (budget.seeds if sp == "95" else budget.seeds_98) + 1):
            runs.append(RunSpec(f"lottery{tag}_s{k}", "lottery", target + from_prune(init=":0"),
                                k, (prune,), rp.LOTTERY, sp))
            if sp == "95" or k == 1:
                runs.append(RunSpec(f"scratch{tag}_s{k}", "scratch",
                                    target + from_prune(no_plus), k, (prune,), rp.SCRATCH, sp))
        runs.append(RunSpec(f"scratch_plus{tag}_s1", "scratch", target + from_prune(plus), 1,
                            (prune,), rp.SCRATCH_PLUS, sp))
        if sp == "95":
            runs.append(RunSpec("prune_restart_s1", "lottery", from_prune(init=""), 1,
                                (prune,), rp.RESTART, sp))
        algs = (("set", rp.SET, rp.SET_PLUS), ("rigl", rp.RIGL, rp.RIGL_PLUS))
        if sp == "95":
            algs += (("rigl_inverted", rp.RIGL_INV, rp.RIGL_INV_PLUS),)
        for alg, name, name_plus in algs:
            # As in the reference (and the configs): DST starts from the pruning run's final
            # masks with a fresh initialization (seed 1, never the pruning run's seed 0).
            runs.append(RunSpec(f"{alg}{tag}_s1", alg, target + dst + from_prune(no_plus), 1,
                                (prune,), name, sp))
            runs.append(RunSpec(f"{alg}_plus{tag}_s1", alg, target + dst + from_prune(plus), 1,
                                (prune,), name_plus, sp))
        density = (f"network.small_dense_density = {1 - int(sp) / 100:.2f}",)
        runs.append(RunSpec(f"small_dense{tag}_s1", "small_dense", target + density, 1, (),
                            rp.SMALL_DENSE, sp))
    return runs


# --------------------------------------------------------------------------- progress


class Progress:
    """`[i/N] stage ... elapsed, ETA` lines.

    The ETA is the mean duration of the stages that did work so far, times the stages left,
    divided by the number of parallel workers (a rough guide: stages differ in cost).
    """

    def __init__(self, total, log=print, workers=1):
        self.total = total
        self.done = 0
        self.workers = max(1, workers)
        self.start = time.time()
        self.timed = []  # durations of stages that did work (skipped ones cost ~0)
        self.log = log

    def begin(self, label):
        """Prints the line of the next stage."""
        self.done += 1
        now = time.time()
        remaining = self.total - self.done + 1
        eta = (sum(self.timed) / len(self.timed) * remaining / self.workers
               if self.timed else None)
        self.log(f"[{self.done}/{self.total}] {label} (elapsed {_hms(now - self.start)}, "
                 f"ETA {_hms(eta) if eta is not None else 'unknown'})", flush=True)

    def finish(self, seconds, worked):
        if worked:
            self.timed.append(seconds)

    def step(self, label, fn):
        """Runs ``fn() -> (value, worked)`` as the next stage; returns the value."""
        self.begin(label)
        t = time.time()
        value, worked = fn()
        self.finish(time.time() - t, worked)
        return value


def _hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- cache


def file_identity(paths):
    """(path, size, mtime) of every existing file among ``paths`` (the inputs of a result)."""
    out = []
    for p in sorted(paths):
        if os.path.exists(p):
            st = os.stat(p)
            out.append([os.path.abspath(p), st.st_size, int(st.st_mtime_ns)])
    return out


def checkpoint_files(prefix):
    """The files of a TF checkpoint prefix (index + data shards)."""
    directory, base = os.path.split(prefix)
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, f) for f in os.listdir(directory)
            if f == base + ".index" or f.startswith(base + ".data-")]


def cache_key(params, prefixes):
    """A stable hash of the analysis parameters and the checkpoint files they read."""
    files = []
    for p in prefixes:
        files += checkpoint_files(p)
    text = json.dumps({"params": params, "files": file_identity(files)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cached(path, key, compute):
    """``compute()``'s result, read back from ``path`` when it was stored with ``key``.

    Returns:
      ``(value, computed)``.
    """
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            if stored.get("key") == key:
                return stored["value"], False
        except (ValueError, OSError):
            pass  # unreadable: recompute and replace
    value = compute()
    from rigl_tf.files import write_json

    write_json(path, {"key": key, "value": value})
    return value, True


# --------------------------------------------------------------------------- the study


class Study:
    """One reproduction: dataset, budget, models and the output directory."""

    def __init__(self, out_dir, dataset="fashion_mnist_idx", budget="quick",
                 models=MODELS, jobs=1, log=print):
        self.out_dir = os.path.abspath(out_dir)
        self.dataset = dataset
        self.budget = BUDGET_BY_NAME[budget]
        self.models = tuple(models)
        self.prefix, self.data_bindings = DATASETS[dataset]
        self.runs = plan_runs(self.budget)
        self.jobs = int(jobs)
        self.log = log

    # ----- paths and configs

    def logdir(self, model, name):
        return os.path.join(self.out_dir, "runs", self.budget.name, model, name)

    def config_path(self, model, config):
        from rigl_tf.experiments import config as config_lib

        return os.path.join(config_lib.CONFIGS_DIR, f"{self.prefix}_{model}", f"{config}.gin")

    def bindings(self, model, spec: RunSpec):
        out = list(self.data_bindings)
        if self.budget.total_steps is not None:
            out.append(f"training.total_steps = {self.budget.total_steps}")
        out += list(self.budget.overrides)
        for b in spec.bindings:  # '@run' -> that run's logdir
            if "'@" in b:
                head, rest = b.split("'@", 1)
                name, tail = rest.split("'", 1)
                run, _, suffix = name.partition(":")
                b = f"{head}'{self.logdir(model, run)}{':' + suffix if suffix else ''}'{tail}"
            out.append(b)
        return out

    def check(self):
        """Validates everything before the first write (configs exist, dataset known).

        Raises:
          ValueError: one sentence naming the flag.
        """
        for model in self.models:
            for spec in self.runs:
                path = self.config_path(model, spec.config)
                if not os.path.exists(path):
                    raise ValueError(f"--dataset: {self.dataset!r} needs the config {path!r}, "
                                     "which does not exist.")
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise ValueError(f"--out_dir: {self.out_dir!r} exists and is not a directory.")

    def check_data(self):
        """Fails before any training when the dataset is not available here.

        Raises:
          ValueError: one sentence naming ``--dataset`` and how to provide the data.
        """
        from rigl_tf.experiments import datasets

        name = {"fashion_mnist": "fashion_mnist"}.get(self.dataset, self.dataset)
        try:
            datasets.get_dataset(name, "test", 1, prefetch=False)
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise ValueError(f"--dataset: {self.dataset!r} cannot be read here: {e}") from None

    # ----- training

    def finished(self, model, name):
        path = os.path.join(self.logdir(model, name), "results.json")
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                data = json.load(f)
        except (ValueError, OSError):
            return None
        return data if data.get("status") == "completed" else None

    def train_args(self, model, spec: RunSpec):
        """Arguments of `_train_one` for one run."""
        return ([self.config_path(model, spec.config)], self.bindings(model, spec),
                self.logdir(model, spec.name), spec.seed)

    def train_all(self, progress):
        """Trains (or resumes) every run, ``self.jobs`` at a time, dependencies first.

        Returns:
          ``{(model, run name): results dict}``.
        """
        todo = [(m, s) for m in self.models for s in self.runs]
        results = {}
        for m, s in todo:  # finished runs first: no work, no process
            done = self.finished(m, s.name)
            if done is not None:
                progress.begin(f"train {m}/{s.name}: finished earlier, skipped")
                results[(m, s.name)] = done
        todo = [(m, s) for m, s in todo if (m, s.name) not in results]
        if not todo:
            return results
        if self.jobs == 1:
            for m, s in todo:
                progress.begin(f"train {m}/{s.name}")
                t = time.time()
                results[(m, s.name)] = _train_one(*self.train_args(m, s))
                progress.finish(time.time() - t, True)
            return results
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # TF is not fork-safe
        running = {}
        with cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            try:
                while todo or running:
                    ready = [(m, s) for m, s in todo
                             if all((m, d) in results for d in s.depends)]
                    # Runs others depend on first, so the dependants can start early.
                    parents = {d for _, s in todo for d in s.depends}
                    ready.sort(key=lambda ms: ms[1].name not in parents)
                    while ready and len(running) < self.jobs:
                        m, s = ready.pop(0)
                        todo.remove((m, s))
                        progress.begin(f"train {m}/{s.name}")
                        fut = pool.submit(_train_one, *self.train_args(m, s))
                        running[fut] = (m, s, time.time())
                    if not running:
                        names = [f"{m}/{s.name}" for m, s in todo]
                        raise RuntimeError(f"runs {names} wait for runs that never finish.")
                    finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        m, s, t = running.pop(fut)
                        results[(m, s.name)] = fut.result()  # a failed run stops the study
                        progress.finish(time.time() - t, True)
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
        return results

    # ----- analyses

    def _run(self, model, name):
        from rigl_tf.experiments import runs

        return runs.load_run(self.logdir(model, name))

    def _final(self, model, name):
        run = self._run(model, name)
        return run, run.prefix(run.steps[-1])

    def _names(self, model, method, sparsity="95"):
        return [s.name for s in self.runs if s.method == method and s.sparsity == sparsity]

    def gradflow(self, model):
        """Masked gradient norm at every checkpoint (Fig. 2) and around updates (Fig. 3)."""
        labels = {rp.SCRATCH: "scratch_s1", rp.SCRATCH_PLUS: "scratch_plus_s1",
                  rp.LOTTERY: "lottery_s1", rp.PRUNING: "prune_s0", rp.SET: "set_s1",
                  rp.SET_PLUS: "set_plus_s1", rp.RIGL: "rigl_s1", rp.RIGL_PLUS: "rigl_plus_s1"}
        n = self.budget.gradflow_examples
        prefixes = []
        for method, name in labels.items():
            run = self._run(model, name)
            prefixes += [run.prefix(s) for s in run.steps]
            if method in UPDATE_METHODS:
                prefixes += [run.prefix(s, k) for s in run.mask_update_steps()
                             for k in ("before", "after")]

        def compute():
            from rigl_tf.analysis import gradient_norm

            curves, updates = {}, {}
            for method, name in labels.items():
                run = self._run(model, name)
                data = run.data("train", n, 0)

                def norm(prefix, run=run, data=data):
                    run.restore(prefix)
                    return gradient_norm(run.model, data, masks=run.masks())["norm"]

                curves[method] = {"steps": list(run.steps),
                                  "norm": [norm(run.prefix(s)) for s in run.steps]}
                steps = run.mask_update_steps() if method in UPDATE_METHODS else []
                ups = [{"step": s, "before": norm(run.prefix(s, "before")),
                        "after": norm(run.prefix(s, "after"))} for s in steps]
                if ups:
                    updates[method] = ups
            return {"gradflow": curves, "mask_updates": updates}

        return cached(self._cache(model, "gradflow"),
                      cache_key({"examples": n, "labels": labels}, prefixes), compute)

    def hessian(self, model):
        """Hessian spectrum just before and after the middle SET and RigL update (Fig. 10)."""
        n, limit = self.budget.hessian_examples, self.budget.hessian_max_params
        labels = {rp.SET: "set_s1", rp.RIGL: "rigl_s1"}
        chosen, prefixes = {}, []
        for method, name in labels.items():
            run = self._run(model, name)
            steps = run.mask_update_steps()
            if steps:
                step = steps[len(steps) // 2]
                chosen[method] = step
                prefixes += [run.prefix(step, k) for k in ("before", "after")]

        def compute():
            from rigl_tf.analysis.hessian import (eigenvalues, hessian, select_coordinates,
                                                  slq_density, spectrum_summary)

            out = {}
            for method, step in chosen.items():
                run = self._run(model, labels[method])
                data = run.data("train", n, 0)
                entry = {"step": step, "num_examples": n}
                for kind in ("before", "after"):
                    run.restore(run.prefix(step, kind))
                    masks = run.masks()
                    p = select_coordinates(run.model, masks).num_params
                    entry["num_params"] = p
                    if p <= limit:
                        eigs = eigenvalues(hessian(run.model, data, masks)[0])
                        entry["method"] = "exact"
                        entry[kind] = spectrum_summary(eigs, tol=1e-6)
                        entry[kind + "_eigs"] = eigs.tolist()
                    else:
                        slq = slq_density(run.model, data, masks=masks, num_probes=4,
                                          num_steps=30, seed=0)
                        nodes = np.concatenate(slq["nodes"])
                        entry["method"] = "slq"
                        entry[kind] = {"max_eigenvalue": float(nodes.max()),
                                       "min_eigenvalue": float(nodes.min()),
                                       "num_negative": "-"}
                        entry[kind + "_density"] = [slq["grid"].tolist(),
                                                    slq["density"].tolist()]
                out[method] = entry
            return out

        return cached(self._cache(model, "hessian"),
                      cache_key({"examples": n, "max_params": limit, "chosen": chosen},
                                prefixes), compute)

    def _groups(self):
        return {rp.LOTTERY: self._names(None, rp.LOTTERY),
                rp.SCRATCH: self._names(None, rp.SCRATCH),
                rp.RESTART: self._names(None, rp.RESTART),
                rp.DIFF_PRUNED: [n for n in self._names(None, rp.PRUNING) if n != "prune_s0"]}

    def geometry(self, model):
        """L2 distances + MDS (Fig. 5a/b) and linear paths from the pruning solution (5c)."""
        groups = self._groups()
        names = ["prune_s0"] + [n for g in groups.values() for n in g]
        prefixes = []
        for name in names:
            run = self._run(model, name)
            prefixes += [run.prefix(run.steps[0]), run.prefix(run.steps[-1])]
        params = {"examples": self.budget.eval_examples, "alphas": self.budget.alphas,
                  "groups": groups, "init_points": INIT_POINTS}

        def compute():
            from rigl_tf.analysis import (distance_matrix, error_barrier, interpolate,
                                          l2_distance, mds_embedding)

            final, init = {}, {}
            for name in names:
                run = self._run(model, name)
                run.restore(run.prefix(run.steps[0]))
                init[name] = run.weights()
                run.restore(run.prefix(run.steps[-1]))
                final[name] = run.weights()
            ref = final["prune_s0"]
            to_prune = {g: [l2_distance(final[n], ref) for n in ns] for g, ns in groups.items()}
            init_to_prune = {g: [l2_distance(init[n], ref) for n in ns]
                             for g, ns in groups.items()}
            # Step-0 points: the ticket's (the pruning init with its final mask) and the
            # scratch runs' (same mask, new init).
            starts = [n for n in names if n.startswith(INIT_POINTS)]
            labels = [f"{n} final" for n in names] + [f"{n} init" for n in starts]
            points = [final[n] for n in names] + [init[n] for n in starts]
            matrix = distance_matrix(points, "l2")
            coords = mds_embedding(matrix, 2)
            run = self._run(model, "prune_s0")
            run.restore(run.prefix(run.steps[-1]))
            data = run.data("test", self.budget.eval_examples, 0)
            alphas = np.linspace(0.0, 1.0, self.budget.alphas)
            barriers, paths = {}, {}
            for g, ns in groups.items():
                barriers[g] = []
                for n in ns:
                    path = interpolate(run.model, ref, final[n], data, alphas)
                    b = error_barrier(path)
                    barriers[g].append({"error": b["error"], "loss": b["loss"], "run": n})
                    paths[n] = {k: np.asarray(v).tolist() for k, v in path.items()}
            return {"distances": {"to_prune": to_prune, "init_to_prune": init_to_prune,
                                  "labels": labels, "matrix": matrix.tolist(),
                                  "mds": coords.tolist()},
                    "barriers": barriers, "paths": paths}

        return cached(self._cache(model, "geometry"), cache_key(params, prefixes), compute)

    def similarity(self, model):
        """Function similarity to the pruning solution (Tables 3/7) and within methods."""
        groups = self._groups()
        names = ["prune_s0"] + [n for g in groups.values() for n in g]
        prefixes = [self._final(model, n)[1] for n in names]

        def compute():
            from rigl_tf.analysis import accuracy, predict_probs, similarity_table

            probs = {}
            labels = None
            for name in names:
                run, prefix = self._final(model, name)
                run.restore(prefix)
                data = run.data("test", 0, 0)
                probs[name], labels = predict_probs(run.model, data, return_labels=True)
            ref = probs["prune_s0"]
            by_method = {g: [probs[n] for n in ns] for g, ns in groups.items() if ns}
            rows = similarity_table(by_method, labels, ref)
            pairs = {g: v for g, v in by_method.items() if len(v) >= 2}
            pair_rows = similarity_table(pairs, labels) if pairs else []

            def clean(rs):
                return [{k: list(v) if isinstance(v, tuple) else v for k, v in r.items()}
                        for r in rs]

            return {"similarity": {"rows": clean(rows),
                                   "reference_accuracy": accuracy(ref, labels)},
                    "ensembles": {"rows": clean(pair_rows)}}

        return cached(self._cache(model, "similarity"), cache_key({"groups": groups}, prefixes),
                      compute)

    def _cache(self, model, name):
        return os.path.join(self.out_dir, "cache", model, f"{name}.json")

    # ----- everything

    def analysis_stages(self):
        """The ordered list of ``(label, fn)``; each fn returns ``(value, worked)``."""
        out = []
        for model in self.models:
            for name in ("gradflow", "hessian", "geometry", "similarity"):
                out.append((f"{name} {model}", lambda m=model, n=name: getattr(self, n)(m)))
        return out

    def run(self, command=""):
        """Runs every stage, then writes results.json, the figures and REPORT.md.

        Returns:
          The path of REPORT.md.
        """
        self.check()
        self.check_data()
        os.makedirs(self.out_dir, exist_ok=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        t0 = time.time()
        stages = self.analysis_stages()
        progress = Progress(len(self.models) * len(self.runs) + len(stages) + 1, self.log,
                            self.jobs)
        trained = self.train_all(progress)
        progress.workers = 1  # analyses run one after the other
        values = {}
        for label, fn in stages:
            values[label] = progress.step(label, fn)
        results = {"meta": {"command": command, "dataset": self.dataset,
                            "budget": self.budget.name,
                            "total_steps": self.budget.total_steps or "paper (configs)",
                            "seeds": self.budget.seeds, "started": started},
                   "models": {}}
        for model in self.models:
            m = {"accuracy": {}}
            for spec in self.runs:
                res = trained[(model, spec.name)]
                m["accuracy"].setdefault(spec.sparsity, {}).setdefault(spec.method, []).append(
                    res.get("test_accuracy"))
            for name in ("gradflow", "hessian", "geometry", "similarity"):
                v = values[f"{name} {model}"]
                if name == "hessian":
                    m["hessian"] = v
                else:
                    m.update(v)
            results["models"][model] = m
        return progress.step("report", lambda: (self.write_report(results, t0), True))

    def write_report(self, results, t0):
        from rigl_tf.analysis import (plot_curves, plot_interpolation, plot_mds,
                                      plot_spectral_density)
        from rigl_tf.experiments.runs import save_plot
        from rigl_tf.files import atomic_output, write_json

        figures = []
        for model, m in results["models"].items():
            f = f"{model}_gradient_flow.png"
            save_plot(os.path.join(self.out_dir, f), plot_curves,
                      {k: (v["steps"], v["norm"]) for k, v in m["gradflow"].items()},
                      xlabel="step", ylabel="masked gradient norm", logy=True,
                      title=f"Gradient flow, {model}")
            figures.append(f)
            if m.get("mask_updates"):
                f = f"{model}_mask_updates.png"
                save_plot(os.path.join(self.out_dir, f), plot_curves,
                          {k: ([u["step"] for u in v], [u["after"] - u["before"] for u in v])
                           for k, v in m["mask_updates"].items()},
                          xlabel="update step", ylabel="Δ gradient norm (after - before)",
                          title=f"Gradient norm change at mask updates, {model}")
                figures.append(f)
            dens = {}
            for method, e in m.get("hessian", {}).items():
                for kind in ("before", "after"):
                    if kind + "_eigs" in e:
                        eigs = np.asarray(e[kind + "_eigs"])
                        span = max(float(eigs.max() - eigs.min()), 1e-6)
                        grid = np.linspace(eigs.min() - 0.05 * span, eigs.max() + 0.05 * span,
                                           500)
                        from rigl_tf.analysis import spectral_density

                        dens[f"{method} {kind}"] = (grid, spectral_density(eigs, grid,
                                                                           0.01 * span))
                    elif kind + "_density" in e:
                        dens[f"{method} {kind}"] = tuple(np.asarray(a) for a in
                                                         e[kind + "_density"])
            if dens:
                f = f"{model}_hessian.png"
                save_plot(os.path.join(self.out_dir, f), plot_spectral_density, dens,
                          title=f"Hessian spectrum around a mask update, {model}")
                figures.append(f)
            d = m["distances"]
            f = f"{model}_mds.png"
            save_plot(os.path.join(self.out_dir, f), plot_mds, np.asarray(d["mds"]),
                      labels=d["labels"], groups=[lbl.split("_s")[0] + lbl[lbl.rfind(" "):]
                                                  for lbl in d["labels"]],
                      title=f"MDS of solutions (L2), {model}")
            figures.append(f)
            f = f"{model}_linear_paths.png"
            save_plot(os.path.join(self.out_dir, f), plot_interpolation,
                      {n: {k: np.asarray(v) for k, v in p.items()}
                       for n, p in m["paths"].items()},
                      title=f"Pruning solution to each solution, {model}")
            figures.append(f)
        results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        results["meta"]["wall_time"] = _hms(time.time() - t0)
        slim = json.loads(json.dumps(results, default=_jsonable))
        for m in slim["models"].values():  # the raw spectra/paths stay in cache/
            m.pop("paths", None)
            for e in (m.get("hessian") or {}).values():
                for k in [k for k in e if k.endswith(("_eigs", "_density"))]:
                    e.pop(k)
        write_json(os.path.join(self.out_dir, "results.json"), slim)
        text = rp.render_report(slim, figures)
        path = os.path.join(self.out_dir, "REPORT.md")
        with atomic_output(path) as tmp:
            with open(tmp, "w") as fh:
                fh.write(text)
        return path


def _train_one(config, bindings, logdir, seed):
    """Trains one run (in this process or a worker); returns its results dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rigl_tf.experiments.train import run_experiment

    return run_experiment(config, bindings, logdir=logdir, seed=seed, verbose=0)


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
