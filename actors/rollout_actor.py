"""The Ray shell around :class:`actors.rollout_worker.RolloutWorker`.

Consumes: the newest weights as an ObjectRef (nested in a list, so Ray hands over the ref and
the actor fetches it only when the version changed). Emits: each fragment as its own object in
the object store (the driver forwards the ref and never fetches it) and a small stats object.
"""

from __future__ import annotations

import os

import pyarrow.compute as pc
import ray
import torch

from actors.fragment import step_rows
from actors.rollout_worker import EpisodeStats, RolloutWorker
from cluster import metrics as m
from cluster.config import OniConfig


@ray.remote
class RolloutActor:
    def __init__(self, cfg: OniConfig, *, actor_id: int, seed: int) -> None:
        # One intra-op thread: actors share the machine's cores with each other and the learner.
        torch.set_num_threads(cfg.rollout.torch_threads)
        self.worker = RolloutWorker(
            env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=actor_id, seed=seed
        )
        self._labels = m.component_labels(role="rollout", actor_id=actor_id)
        # Without the annotation service nobody reads captions: skip extracting them.
        self._extract_captions = cfg.rewards.annotator.enabled

    def info(self) -> dict:
        return {
            "actor_id": self.worker.actor_id,
            "num_actions": self.worker.num_actions,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    @ray.method(num_returns=3)
    def sample(self, weights: list, version: int):
        """One fragment acted by policy ``version``; ``weights`` is ``[ObjectRef]``.

        Returns three objects: the fragment, its stats, and the distinct messages of its step
        rows (the caption column the annotator reads, so fragments never go to the judge), or
        None when the annotation service is off.
        """
        if version != self.worker.policy_version:
            with m.WEIGHT_SYNC_SECONDS.labels(**self._labels).time():
                self.worker.set_weights(ray.get(weights[0]), version)
            m.POLICY_VERSION.labels(**self._labels).set(version)
        fragment, stats = self.worker.sample()
        labels = self._labels
        m.ENV_STEPS.labels(**labels).inc(stats.env_steps)
        m.FRAGMENTS_PRODUCED.labels(**labels).inc()
        seconds = stats.env_seconds + stats.inference_seconds
        m.ENV_STEPS_PER_SECOND.labels(**labels).set(stats.env_steps / max(seconds, 1e-9))
        for ret, length in zip(stats.episode_returns, stats.episode_lengths, strict=True):
            m.EPISODE_RETURN.labels(**labels).observe(ret)
            m.EPISODE_LENGTH.labels(**labels).observe(length)
        captions = (
            pc.unique(step_rows(fragment).column("message")) if self._extract_captions else None
        )
        return fragment, stats, captions

    def metrics(self) -> bytes:
        """This process's Prometheus exposition text, for the driver's hub."""
        return m.metrics_snapshot()

    def random_baseline(self, *, episodes_per_env: int, min_steps: int = 0) -> EpisodeStats:
        """A uniformly random agent's first episodes in every env (``RolloutWorker.play_random``);
        then every env starts afresh."""
        return self.worker.play_random(episodes_per_env=episodes_per_env, min_steps=min_steps)

    def random_steps(self, fragments: int) -> int:
        """Step ``fragments`` fragments with random actions and discard them (the benchmark's
        raw ceiling: the same env loop and Arrow assembly, no inference, nothing shipped)."""
        return sum(self.worker.sample(random_policy=True)[1].env_steps for _ in range(fragments))

    def shutdown(self) -> None:
        self.worker.close()
