"""One trial of a bench sweep (bench/sweep.py): one training run, an (arm, seed, settings), as a
Ray Tune trial.

Consumes: the trial's config (:func:`trial_config`: the arm, the seed, the arm's settings and
the run folder), and Tune's newest checkpoint of the trial when Tune retries or restores it.
Emits: a Tune checkpoint holding each new checkpoint of the run's folder, and at the end the
run's record (``bench.learning_task.run_record``) in ``<run folder>/bench-record.json``, for
the sweep's driver to store in the results JSON.

The run is what ``oniray train`` runs: ``cluster.driver.train_on_ray``, in a thread of the
trial's actor (Tune's actor takes no signal handler, and the thread leaves this one free to
report checkpoints). Ray is already initialised there, so ``init_ray`` joins it. The trial's
placement group (:func:`bundles`) holds a bundle for that driver and one for each actor the run
starts; Tune starts the trial's actor in the group with ``placement_group_capture_child_tasks``,
and oniray's actors set no scheduling strategy of their own (``cluster.components``), so they
land in the group too. They are unnamed: two trials' actors never share a name.

Resuming is ``oniray train``'s ``run.resume=auto``: the run folder's path is stable per
(arm, seed, settings), and a trial that starts with a checkpoint there (or in Tune's
checkpoint, copied in first: a node other than the first may run the retry) continues from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.learning_task import config_for, finished, run_key, run_record, settings_hash
from cluster.config import OniConfig
from cluster.run_dir import RunDir, atomic_write_text

RECORD = "bench-record.json"
# The trial's driver (the run loop) mostly waits on its actors, but batches, reports and
# checkpoints: a whole CPU keeps a trial from starting where its loop would starve.
DRIVER_BUNDLE = {"CPU": 1.0}
CHECKPOINT_POLL_S = 1.0
# Test-only fault: "ARM/seed=N" makes that trial's actor die once after reporting its first
# checkpoint (a crash Tune must retry from it); a marker file in the run folder makes it once.
FAULT_ENV = "ONIRAY_SWEEP_FAULT"
FAULT_MARKER = ".sweep-fault-injected"


def bundles(cfg: OniConfig) -> list[dict[str, float]]:
    """The trial's placement group: its driver, then one bundle per actor its run starts
    (rollout actors, learner ranks, the annotator and the vLLM judge's engine actor when they
    run), each as that actor asks (``cluster.components``, ``rewards.judges.vllm_judge``)."""
    from rewards.judges.vllm_judge import ENGINE_NUM_CPUS, wants_ray_actor

    def bundle(cpus: float, gpus: float = 0.0, resources: dict | None = None) -> dict:
        b = {"CPU": float(cpus), **{k: float(v) for k, v in (resources or {}).items()}}
        return b | ({"GPU": float(gpus)} if gpus else {})

    rc, lc, ac = cfg.rollout, cfg.learner, cfg.rewards.annotator
    out = [dict(DRIVER_BUNDLE)]
    out += [bundle(rc.num_cpus, resources=rc.resources) for _ in range(rc.num_actors)]
    out += [bundle(lc.num_cpus, lc.num_gpus, lc.resources) for _ in range(lc.num_learners)]
    if ac.enabled:
        out.append(bundle(ac.num_cpus, resources=ac.resources))
        vllm = cfg.rewards.judge.vllm
        if cfg.rewards.judge.backend == "vllm" and wants_ray_actor(vllm):
            out.append(bundle(ENGINE_NUM_CPUS, vllm.num_gpus, vllm.resources))
    # Ray refuses an empty bundle; an actor that asks for nothing fits in any bundle anyway.
    return [b for b in out if any(b.values())]


def run_name(arm: str, seed: int, s: dict) -> str:
    return f"{arm}-seed{seed}-{settings_hash(s)}"


def trial_config(arm: str, seed: int, s: dict, *, runs_dir: Path, sweep: str) -> dict[str, Any]:
    """One point of the sweep's grid: everything the trial needs, JSON-plain."""
    return {"key": run_key(arm, seed, settings_hash(s)), "arm": arm, "seed": seed,
            "settings": s, "run_dir": str(runs_dir / run_name(arm, seed, s)), "sweep": sweep}


def run_config(point: dict[str, Any]) -> OniConfig:
    """The run's config: the bench's (``learning_task.config_for``), and with W&B on, the
    sweep's name as the W&B group of every trial (unless the settings name one)."""
    cfg = config_for(point["settings"], point["seed"])
    wandb = cfg.run.wandb
    if wandb.mode != "disabled" and wandb.group is None:
        wandb = dataclasses.replace(wandb, group=point["sweep"])
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, wandb=wandb))
    return cfg


def read_record(run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def trial(config: dict[str, Any]) -> None:
    """The trainable: train (or resume) the run to its budget, reporting each checkpoint.
    ``config["point"]``: the trial's :func:`trial_config`."""
    from ray import tune

    config = config["point"]
    run_dir = RunDir(Path(config["run_dir"]))
    run_dir.root.mkdir(parents=True, exist_ok=True)
    _seed_from_tune(run_dir, tune.get_checkpoint())
    if read_record(run_dir.root) is not None:  # finished before a driver kill: report it
        _log_session(run_dir, event="already finished")
        _report_checkpoint(run_dir, None, finished=1)
        return
    loaded = run_dir.load_latest_checkpoint()
    _log_session(run_dir, event="start", resumed_from=loaded[1].name if loaded else None)
    cfg = run_config(config)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=_train, name="oniray-trial-run", daemon=True,
                              args=(cfg, run_dir, loaded[0] if loaded else None, outcome))
    worker.start()
    reported = loaded[1].name if loaded else None
    while worker.is_alive():
        worker.join(timeout=CHECKPOINT_POLL_S)
        newest = run_dir.newest_checkpoint_name()
        if newest is not None and newest != reported and worker.is_alive():
            _report_checkpoint(run_dir, newest, finished=0)
            reported = newest
            _maybe_fault(config, run_dir)
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    reason = summary.get("stop_reason")
    if summary.get("failed") or not finished(config["settings"], reason):
        # Raised, so Tune retries the trial (FailureConfig) from its newest checkpoint.
        raise RuntimeError(f"{config['key']} stopped before its budget ({reason})")
    atomic_write_text(run_dir.root / RECORD, json.dumps(run_record(run_dir), default=str))
    _log_session(run_dir, event="finished")
    _report_checkpoint(run_dir, run_dir.newest_checkpoint_name(), finished=1)


def _train(cfg: OniConfig, run_dir: RunDir, resume_state: dict | None,
           outcome: dict[str, Any]) -> None:
    from cluster.driver import train_on_ray

    try:
        outcome["summary"] = train_on_ray(cfg, run_dir, resume_state=resume_state)
    except BaseException as exc:  # handed to the trial's thread, which raises it to Tune
        outcome["error"] = exc


def _report_checkpoint(run_dir: RunDir, name: str | None, *, finished: int) -> None:
    """A Tune checkpoint holding the run folder's checkpoint ``name`` with its checksum, and
    once the run finished its record (what the sweep's driver stores)."""
    from ray import tune

    rows = run_dir.read_metrics()
    metrics = {"finished": finished, "env_steps": rows[-1]["env_steps"] if rows else 0}
    with tempfile.TemporaryDirectory() as tmp:
        held = Path(tmp)
        if name is not None:
            ckpt = run_dir.checkpoints / name
            try:
                shutil.copy2(ckpt, held / name)
                shutil.copy2(ckpt.with_suffix(".sha256"), held / ckpt.with_suffix(".sha256").name)
            except FileNotFoundError:  # rotated away meanwhile: a newer one gets reported
                (held / name).unlink(missing_ok=True)
        if finished:
            shutil.copy2(run_dir.root / RECORD, held / RECORD)
        if any(held.iterdir()):
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)


def _seed_from_tune(run_dir: RunDir, checkpoint: Any) -> None:
    """Copy Tune's checkpoint of the trial into the run folder when the folder lacks it (a
    retry on another node without the first's disk); the checksum goes second, as
    ``RunDir.save_checkpoint`` writes them. A finished run's record comes along."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as held:
        if (Path(held) / RECORD).exists() and not (run_dir.root / RECORD).exists():
            atomic_write_text(run_dir.root / RECORD, (Path(held) / RECORD).read_text())
        for pt in Path(held).glob("ckpt-*.pt"):
            target = run_dir.checkpoints / pt.name
            if not target.with_suffix(".sha256").exists():
                run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pt, target)
                shutil.copy2(pt.with_suffix(".sha256"), target.with_suffix(".sha256"))


def _log_session(run_dir: RunDir, *, event: str, resumed_from: str | None = None) -> None:
    """A line per session's start and end (``sweep-sessions.jsonl``): where it started from
    and which placement group holds it. An operator reads how often a run was retried; the
    sweep's tests, that a run finished once and its actors stayed in its group."""
    import ray

    line = {"event": event, "resumed_from": resumed_from,
            "placement_group": ray.get_runtime_context().get_placement_group_id(),
            "pid": os.getpid()}
    with (run_dir.root / "sweep-sessions.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


def _maybe_fault(config: dict[str, Any], run_dir: RunDir) -> None:
    marker = run_dir.root / FAULT_MARKER
    if os.environ.get(FAULT_ENV) == f"{config['arm']}/seed={config['seed']}" \
            and not marker.exists():
        marker.touch()
        os._exit(1)  # the trial's process dies, its run's actors with it
