"""The sweep's plan without Ray (bench/sweep.py, bench/sweep_trial.py, cluster/submit.py):
what each trial reserves, the experiment a command finds again, the job a sweep submits, the
W&B group its trials share. The sweep itself runs in tests/test_sweep.py."""

from __future__ import annotations

from pathlib import Path

from bench import learning_task as lt
from bench import sweep, sweep_trial
from cluster.config import load_config
from cluster.submit import sweep_entrypoint

REPO = Path(__file__).resolve().parents[1]


def test_a_trial_reserves_a_bundle_for_its_driver_and_each_actor() -> None:
    cfg = load_config(REPO / "configs" / "corridor.yaml", [
        "rollout.num_actors=3", "rollout.num_cpus=0.5", "rollout.resources={rollout_node: 0.25}",
        "learner.num_gpus=1", "learner.resources={learner_node: 0.5}",
        "rewards.annotator.enabled=true", "rewards.annotator.num_cpus=2"])
    # driver 1 CPU; 3 rollout actors of 0.5 CPU + 0.25 rollout_node; 1 learner of 1 CPU,
    # 1 GPU, 0.5 learner_node; the annotator's 2 CPUs (no vLLM engine actor: not vllm)
    assert sweep_trial.bundles(cfg) == [
        {"CPU": 1.0},
        *[{"CPU": 0.5, "rollout_node": 0.25}] * 3,
        {"CPU": 1.0, "learner_node": 0.5, "GPU": 1.0},
        {"CPU": 2.0},
    ]
    plain = load_config(REPO / "configs" / "corridor.yaml")  # 2 rollout actors, no annotator
    assert sweep_trial.bundles(plain) == [{"CPU": 1.0}] * 4
    # A rollout actor that asks for nothing fits in any bundle: Ray refuses an empty one.
    free = load_config(REPO / "configs" / "corridor.yaml", ["rollout.num_cpus=0"])
    assert sweep_trial.bundles(free) == [{"CPU": 1.0}] * 2


def _plan(arms: list[str]) -> dict[str, dict]:
    return {arm: lt.settings("oniray/Corridor-v0", arm, minutes=None, steps=1000, shared=[])
            for arm in arms}


def test_the_same_command_finds_its_experiment_and_another_grid_gets_its_own() -> None:
    out = Path("/x/learning-corridor")
    plan = _plan(["extrinsic", "count"])
    name = sweep.experiment_name(out, plan, {"extrinsic": 2, "count": 2})
    assert name == sweep.experiment_name(out, _plan(["extrinsic", "count"]),
                                         {"extrinsic": 2, "count": 2})
    assert name.startswith("learning-corridor-sweep-")
    assert name != sweep.experiment_name(out, plan, {"extrinsic": 3, "count": 2})
    assert name != sweep.experiment_name(out, _plan(["extrinsic"]), {"extrinsic": 2})


def test_a_trial_runs_the_bench_config_and_its_wandb_group_is_the_sweep() -> None:
    s = lt.settings("oniray/Corridor-v0", "count", minutes=None, steps=1000,
                    shared=["run.wandb.mode=offline"])
    point = sweep_trial.trial_config("count", 1, s, runs_dir=Path("/r"), sweep="exp-1")
    assert point["key"] == lt.run_key("count", 1, lt.settings_hash(s))
    assert point["run_dir"] == f"/r/count-seed1-{lt.settings_hash(s)}"
    cfg = sweep_trial.run_config(point)
    assert cfg.run.wandb.group == "exp-1" and cfg.run.seed == 1
    assert cfg.rewards.model.kind == "count" and cfg.run.total_env_steps == 1000
    named = dict(point, settings=dict(s, shared=[*s["shared"], "run.wandb.group=mine"]))
    assert sweep_trial.run_config(named).run.wandb.group == "mine"
    off = dict(point, settings=lt.settings("oniray/Corridor-v0", "count", minutes=None,
                                           steps=1000, shared=[]))
    assert sweep_trial.run_config(off).run.wandb.group is None


def test_a_submitted_sweep_runs_the_bench_as_tune_trials_on_its_cluster() -> None:
    assert sweep_entrypoint(["--env", "MiniHack-Room-5x5-v0", "--steps", "100", "--tune",
                             "--set", "learner.lr=1e-4"]) == (
        "python bench/learning.py --env MiniHack-Room-5x5-v0 --steps 100 --set learner.lr=1e-4 "
        "--tune --ray-address auto")
