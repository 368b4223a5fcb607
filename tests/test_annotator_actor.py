"""The annotator actor: captions by reference in, labels and reward models out, restarts.

Captions travel as in a run: ``step_captions`` of a fragment (what a rollout actor returns
beside it), put once, handed to ``submit_captions`` by reference."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest
import ray

from actors.fragment import step_captions
from cluster.components import annotator_actor
from rewards.config import JudgeConfig, RewardsConfig
from rewards.judges.base import Judge, Preference, Verdict
from rewards.judges.rules import RulesJudge
from rewards.label_store import LabelStore
from rewards.models import reward_model_from_state
from rewards.scoring import score_messages
from tests.helpers.captions import HELPFUL_PATTERN, captions, is_helpful
from tests.helpers.fragments import make_fragment

T, E = 16, 4
BOOTSTRAP_ONLY = "You hear the footsteps of a guard on patrol."  # only ever in bootstrap rows


class LoggingRulesJudge(Judge):
    """The rules judge, appending every caption it is asked to a file that outlives actors."""

    name = "rules"

    def __init__(self, log_path: str, cfg: JudgeConfig) -> None:
        self.inner = RulesJudge(cfg, "score")
        self.log_path = log_path

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        with open(self.log_path, "a") as f:
            f.writelines(json.dumps(c) + "\n" for c in captions)
        return self.inner.label(captions)

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        return self.inner.compare(pairs)


# Ray's workers cannot import this test module by name: ship the judge class by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _asked(log: Path) -> list[str]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _fragment(texts: list[str], seed: int) -> pa.RecordBatch:
    """A realistic fragment whose step rows show ``texts`` (cycled) as their messages."""
    fragment = make_fragment(T=T, E=E, seed=seed)
    steps = [texts[i % len(texts)] for i in range(T * E)]
    i = fragment.schema.get_field_index("message")
    return fragment.set_column(
        i, fragment.schema.field(i), pa.array(steps + [BOOTSTRAP_ONLY] * E, pa.string())
    )


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _cfg() -> RewardsConfig:
    cfg = RewardsConfig()
    cfg.judge.backend = "rules"
    cfg.judge.rules.positive = [HELPFUL_PATTERN]
    cfg.annotator.canary_every = 0
    cfg.annotator.flush_interval_s = 0.2
    cfg.annotator.num_cpus = 1
    cfg.model.kind = "classification"
    cfg.model.train_every_labels = 64
    cfg.model.train_steps = 20
    return cfg


@pytest.mark.usefixtures("ray_session")
def test_labels_arrive_by_reference_and_survive_a_killed_actor(tmp_path: Path) -> None:
    cfg, store_dir, log = _cfg(), str(tmp_path / "labels"), tmp_path / "asked.jsonl"
    factory = functools.partial(LoggingRulesJudge, str(log), cfg.judge)
    texts = captions(200, seed=5)
    distinct = set(texts)
    fragments = [_fragment([*texts[k::4], ""], seed=k) for k in range(4)]
    refs = [ray.put(step_captions(f)) for f in fragments]  # as a rollout actor returns them

    actor = annotator_actor(cfg, labels_dir=store_dir, env_id="NetHackScore-v0",
                            judge_factory=factory)  # fmt: skip
    ray.get(actor.ready.remote())
    start = time.perf_counter()
    ray.get([actor.submit_captions.remote([ref]) for ref in refs])
    ray.get(actor.submit_captions.remote(refs[:2]))  # the same captions again: all cache hits
    _wait(lambda: ray.get(actor.stats.remote())["labels_total"] == len(distinct))
    elapsed = time.perf_counter() - start
    stats = ray.get(actor.stats.remote())
    print(f"\nannotator actor, rules judge: {len(distinct) / elapsed:.0f} labels/s end to end")

    asked = _asked(log)
    assert sorted(asked) == sorted(distinct)  # each once; never "" nor a bootstrap row
    assert stats["cache_hits_total"] == sum(len(set(texts[k::4])) for k in range(2))
    _wait(lambda: ray.get(actor.reward_model_ref.remote()) is not None)
    published = ray.get(actor.reward_model_ref.remote())
    version, state_ref = published.version, published.ref
    assert ray.get(actor.reward_model_ref.remote()) == published  # put once
    model = reward_model_from_state(ray.get(state_ref))
    assert model.version == version
    messages = fragments[0].column("message")
    assert score_messages(model, messages).shape == (len(messages),)

    ray.get(actor.flush.remote())
    ray.kill(actor)  # no stop(): as if the node died

    store = LabelStore(store_dir)
    assert len(store) == len(distinct)
    assert all(store.get(c) is is_helpful(c) for c in distinct)

    reborn = annotator_actor(cfg, labels_dir=store_dir, env_id="NetHackScore-v0",
                             judge_factory=factory)  # fmt: skip
    ray.get([reborn.submit_captions.remote([ref]) for ref in refs])
    ray.get(reborn.submit.remote(["You kill the Wizard of Yendor!"]))  # one genuinely new caption
    _wait(lambda: ray.get(reborn.stats.remote())["labels_total"] == 1)
    stats = ray.get(reborn.stats.remote())
    assert _asked(log)[len(asked) :] == ["You kill the Wizard of Yendor!"]
    assert stats["store_labels"] == len(distinct) + 1
    assert stats["cache_hits_total"] == len(distinct)
    # A reopened store is fitted at once: learners get a model without new labels.
    _wait(lambda: ray.get(reborn.reward_model_ref.remote()) is not None)
    # The reborn annotator continues the version count persisted with the labels.
    assert ray.get(reborn.reward_model_ref.remote()).version > version
    ray.get(reborn.stop.remote())
    assert LabelStore(store_dir).get("You kill the Wizard of Yendor!") is True
    ray.kill(reborn)
