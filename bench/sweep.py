"""The arms bench's grid as Ray Tune trials: ``bench/learning.py --env ENV_ID ... --tune``.

Consumes: the arms bench's plan (bench/learning_task.py: arms, seeds, settings, the results
stem) and a Ray cluster (joined with ``--ray-address``, or a local one started here). Emits:
the same ``<out>.{json,md,png}`` as the sequential bench, through the same code
(``learning_task.store_run`` and ``finish_bench``): a table made here and one made
sequentially are one format, and each skips the runs the other stored.

One trial per (arm, seed) not yet stored (bench/sweep_trial.py): a training run in a placement
group of its own, as many side by side as the cluster's resources hold (``--max-concurrent``
caps them; a local Ray here is sized for one trial at a time). A trial that fails is retried
from its newest checkpoint up to ``--max-failures`` times (Tune's ``FailureConfig``). The
sweep's state is Tune's experiment folder ``<storage>/<experiment>``, named after the results
stem and the grid, so the same command after a killed driver finds it and resumes it
(``Tuner.restore``, errored trials resumed from their checkpoints), and every (arm, seed)
finishes once. Run folders live in ``<storage>/runs/<arm>-seed<N>-<settings hash>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from bench import learning_task as lt
from bench import sweep_trial

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = REPO / "runs" / "sweeps"
# Set by Ray's job supervisor in a submitted job's driver: the job's runtime_env (its
# working_dir) already reaches every trial.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


@dataclasses.dataclass
class SweepOptions:
    max_concurrent: int | None = None  # None: as many as the cluster's resources hold
    max_failures: int = 3
    storage: str = str(DEFAULT_STORAGE)  # a path every node shares, or a URI (s3://...)
    ray_address: str | None = None


def experiment_name(out: Path, plan: dict[str, dict], seeds: dict[str, int]) -> str:
    """The Tune experiment of this command: the results stem and a hash of the grid, so the
    same command finds its experiment again and another grid gets one of its own."""
    grid = {arm: [lt.settings_hash(s), seeds[arm]] for arm, s in plan.items()}
    digest = hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8]
    return f"{out.name}-sweep-{digest}"


def run_sweep(task: str, *, arms: list[str], seeds: dict[str, int], minutes: float | None,
              steps: int, shared: list[str], out: Path, random_episodes: int,
              config: Path | None, options: SweepOptions) -> int:
    """Every (arm, seed) not yet stored, as Tune trials; then the report. 0 when every run of
    the grid is stored, 1 when a trial failed past its retries (the same command retries it)."""
    json_path = out.with_suffix(".json")
    results = lt.load_results(json_path)
    plan = {arm: lt.settings(task, arm, minutes=minutes, steps=steps, shared=shared,
                             config=config) for arm in arms}
    for arm in arms:  # fail on a bad --set before any trial starts
        lt.config_for(plan[arm], 0)
    todo = lt.to_run(results, plan, seeds)
    failed: list[str] = []
    if todo:
        name = experiment_name(out, plan, seeds)
        _connect(plan, options)
        failed = _fit(name, todo, plan, json_path, results, options)
    lt.finish_bench(json_path, results, task=task, plan=plan, out=out,
                    random_episodes=random_episodes)
    if failed:
        print(f"failed past --max-failures: {', '.join(failed)}; the same command resumes "
              f"them from their newest checkpoints", file=sys.stderr)
        return 1
    return 0


def _connect(plan: dict[str, dict], options: SweepOptions) -> None:
    """Join the cluster at ``--ray-address``, or start a local Ray sized for one trial (its
    bundles' CPUs; logical CPUs: the actors time-share a small machine, as ``oniray train``
    lets them)."""
    import ray

    cfg = lt.config_for(next(iter(plan.values())), 0)
    runtime_env = None
    if not os.environ.get(RAY_JOB_CONFIG_ENV):
        # The trials import bench/ from this checkout (the nodes share its path: one machine,
        # or one image); a fault to inject (tests) reaches them the same way.
        env_vars = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get("PYTHONPATH")]))}
        if os.environ.get(sweep_trial.FAULT_ENV):
            env_vars[sweep_trial.FAULT_ENV] = os.environ[sweep_trial.FAULT_ENV]
        runtime_env = {"env_vars": env_vars}
    if options.ray_address:
        ray.init(address=options.ray_address, namespace=cfg.ray.namespace,
                 runtime_env=runtime_env)
        return
    widest = max(sum(b.get("CPU", 0.0) for b in _bundles(s)) for s in plan.values())
    # "local": a Ray of its own, not one some other `ray start` left on this machine.
    store_mb = cfg.ray.object_store_mb
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(widest)),
             object_store_memory=None if store_mb is None else store_mb * 2**20,
             include_dashboard=False, namespace=cfg.ray.namespace, runtime_env=runtime_env)


def _bundles(s: dict) -> list[dict[str, float]]:
    return sweep_trial.bundles(lt.config_for(s, 0))


def _fit(name: str, todo: list[tuple[str, int]], plan: dict[str, dict], json_path: Path,
         results: dict, options: SweepOptions) -> list[str]:
    """Run (or resume) the experiment; store each finished trial's run; the keys that failed."""
    storage, runs_dir = _storage(options.storage)
    trainable = tune.with_resources(
        sweep_trial.trial,
        lambda spec: tune.PlacementGroupFactory(_bundles(spec["point"]["settings"])),
    )
    store = _Store(json_path, results, plan)
    path = f"{storage}/{name}"
    if tune.Tuner.can_restore(path):
        print(f"resuming the sweep {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        points = [sweep_trial.trial_config(arm, seed, plan[arm], runs_dir=runs_dir, sweep=name)
                  for arm, seed in todo]
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(points)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=options.max_concurrent, reuse_actors=False,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[store], verbose=1,
            ),
        )
    print(f"sweep: {path} ({len(todo)} runs to go)", flush=True)
    grid = tuner.fit()
    failed = []
    for result in grid:  # trials finished before a driver kill, and any the callback missed
        if result.error is None:
            store.keep(result.config["point"], result.checkpoint)
        else:
            failed.append(result.config["point"]["key"])
    return failed


def _storage(storage: str) -> tuple[str, Path]:
    """Tune's storage and the run folders' parent. A URI holds only Tune's experiment; each
    node then keeps run folders on its own disk, and a retry elsewhere starts from the
    checkpoint Tune kept (``sweep_trial``)."""
    if "://" in storage:
        return storage.rstrip("/"), Path(tempfile.gettempdir()) / "oniray-sweep-runs"
    local = Path(storage).resolve()
    return str(local), local / "runs"


def _trial_name(trial: Any) -> str:
    point = trial.config["point"]
    return sweep_trial.run_name(point["arm"], point["seed"], point["settings"])


class _Store(tune.Callback):
    """Tune callback: each finished trial's run, from its last checkpoint's record, into the
    results JSON at once (``learning_task.store_run``), so ``--report-only`` shows it while
    the sweep goes on and a driver kill loses nothing stored."""

    def __init__(self, json_path: Path, results: dict, plan: dict[str, dict]) -> None:
        self.json_path, self.results, self.plan = json_path, results, plan

    def keep(self, point: dict, checkpoint: Any) -> None:
        if point["key"] in self.results["runs"]:
            return
        record = None
        if checkpoint is not None:
            with checkpoint.as_directory() as held:
                record = sweep_trial.read_record(Path(held))
        record = record or sweep_trial.read_record(Path(point["run_dir"]))
        if record is None:
            raise RuntimeError(f"{point['key']} finished without its record")
        lt.store_run(self.json_path, self.results, arm=point["arm"], seed=point["seed"],
                     s=point["settings"], run=record)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
        self.keep(trial.config["point"], trial.checkpoint)
