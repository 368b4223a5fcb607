"""The Ray shell around :class:`actors.rollout_worker.RolloutWorker`.

Consumes: a builder of its worker (from the run's wiring, ``cluster.components``, which
alone knows seeds and Ray options), and the newest weights as a
:class:`actors.versioned.VersionedRef` (the ObjectRef nested in it, so Ray hands over the ref
and the actor fetches it only when the version changed). Emits: each fragment as its own
object in the object store (the driver forwards the ref and never fetches it) and a small
stats object.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ray
import torch

from actors import metrics as m
from actors.fragment import step_captions
from actors.rollout_worker import EpisodeStats, RolloutWorker
from actors.versioned import VersionedRef


@ray.remote
class RolloutActor:
    def __init__(
        self, build: Callable[[], RolloutWorker], *, torch_threads: int, extract_captions: bool
    ) -> None:
        # One intra-op thread: actors share the machine's cores with each other and the learner.
        torch.set_num_threads(torch_threads)
        self.worker = build()
        self._labels = m.component_labels(role="rollout", actor_id=self.worker.actor_id)
        # Without the annotation service nobody reads captions: skip extracting them.
        self._extract_captions = extract_captions

    def info(self) -> dict:
        return {
            "actor_id": self.worker.actor_id,
            "num_actions": self.worker.num_actions,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    @ray.method(num_returns=3)
    def sample(self, weights: VersionedRef | None):
        """One fragment acted by the policy ``weights`` (None: the worker's own, i.e. random).

        Returns three objects: the fragment, its stats, and the distinct messages of its step
        rows (the caption column the annotator reads, so fragments never go to the judge), or
        None when the annotation service is off.
        """
        if weights is not None and weights.version != self.worker.policy_version:
            with m.WEIGHT_SYNC_SECONDS.labels(**self._labels).time():
                self.worker.set_weights(ray.get(weights.ref), weights.version)
            m.POLICY_VERSION.labels(**self._labels).set(weights.version)
        fragment, stats = self.worker.sample()
        labels = self._labels
        m.ENV_STEPS.labels(**labels).inc(stats.env_steps)
        m.FRAGMENTS_PRODUCED.labels(**labels).inc()
        seconds = stats.env_seconds + stats.inference_seconds
        m.ENV_STEPS_PER_SECOND.labels(**labels).set(stats.env_steps / max(seconds, 1e-9))
        for ret, length in zip(stats.episode_returns, stats.episode_lengths, strict=True):
            m.EPISODE_RETURN.labels(**labels).observe(ret)
            m.EPISODE_LENGTH.labels(**labels).observe(length)
        captions = step_captions(fragment) if self._extract_captions else None
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
