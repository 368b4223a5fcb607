"""The CPUs a run's Ray actors reserve (``cluster.config.reserved_cpus``, the one place the sum
is written; ``cluster.ray_setup`` sizes a local Ray by it, the loader refuses a smaller
``ray.num_cpus``), counted against hand-computed figures, with and without a vLLM judge whose
engine is a Ray actor of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config, reserved_cpus
from rewards.judges.vllm_judge import placement

CORRIDOR = Path(__file__).resolve().parents[1] / "configs" / "corridor.yaml"
SIZES = ["rollout.num_actors=3", "rollout.num_cpus=0.5", "learner.num_learners=2",
         "learner.num_cpus=2", "rewards.annotator.num_cpus=1.5"]
ANNOTATED = ["rewards.annotator.enabled=true", "rewards.model.kind=retrieval"]
VLLM_ON_A_GPU = ["rewards.judge.backend=vllm", "rewards.judge.vllm.model=/models/judge",
                 "rewards.judge.vllm.num_gpus=1"]


def test_without_the_annotator_only_rollouts_and_learners_count() -> None:
    terms = reserved_cpus(load_config(CORRIDOR, SIZES))
    # 3 rollout actors * 0.5 + 2 learners * 2 = 1.5 + 4 = 5.5; the annotator is off
    assert sum(terms.values()) == 5.5
    assert terms["rewards.annotator.num_cpus"] == 0


def test_an_embedding_judge_adds_the_annotator_only() -> None:
    terms = reserved_cpus(load_config(CORRIDOR, SIZES + ANNOTATED))
    # 1.5 + 4 + the annotator's 1.5 = 7.0; the embedding judge runs inside the annotator
    assert sum(terms.values()) == 7.0
    assert terms["the vLLM engine actor"] == 0


def test_a_vllm_judge_on_a_gpu_adds_its_engine_actor() -> None:
    terms = reserved_cpus(load_config(CORRIDOR, SIZES + ANNOTATED + VLLM_ON_A_GPU))
    # 1.5 + 4 + 1.5 + the engine actor's 1 (rewards/judges/vllm_judge.py) = 8.0
    assert sum(terms.values()) == 8.0
    assert terms["the vLLM engine actor"] == 1


VLLM_HERE = ["rewards.judge.backend=vllm", "rewards.judge.vllm.model=/models/judge"]


def test_a_vllm_judge_without_gpus_or_resources_has_no_actor_of_its_own() -> None:
    # On a CPU host the engine runs in the annotator's process or a child of it: no actor.
    assert sum(reserved_cpus(load_config(CORRIDOR, SIZES + ANNOTATED + VLLM_HERE)).values()) == 7


def test_the_engine_is_counted_exactly_where_ray_places_it_in_an_actor(ray_session: None) -> None:
    # With Ray up (as in the Ray runtime, where the annotator makes its judge), the judge's own
    # placement decision and the CPU sum agree.
    on_a_judge_node = [*VLLM_HERE, "rewards.judge.vllm.resources.judge_node=1"]
    for extra in (VLLM_ON_A_GPU, VLLM_HERE, on_a_judge_node):
        cfg = load_config(CORRIDOR, SIZES + ANNOTATED + extra)
        counted = reserved_cpus(cfg)["the vLLM engine actor"] > 0
        assert counted == (placement(cfg.rewards.judge.vllm) == "ray_actor"), extra


def test_a_ray_num_cpus_below_the_sum_names_every_term_and_the_engine() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CORRIDOR, [*SIZES, *ANNOTATED, *VLLM_ON_A_GPU, "ray.num_cpus=7"])
    (line,) = info.value.problems
    assert "'ray.num_cpus' = 7 is less than the 8 CPUs the actors reserve" in line
    assert "rollout.num_actors * rollout.num_cpus (1.5)" in line
    assert "the vLLM engine actor (1)" in line
    # Exactly enough is fine.
    assert load_config(CORRIDOR, [*SIZES, *ANNOTATED, *VLLM_ON_A_GPU, "ray.num_cpus=8"])
