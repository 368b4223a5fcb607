"""The Ray shell around :class:`learner.appo.Learner`: data-parallel learners on Ray actors.

Consumes fragment references (``ray.ObjectRef`` of ``pa.RecordBatch``): each learner fetches
only its share, straight from the object store, never through the driver. Emits, per update,
a reference to rank 0's metrics dict, which carries ``policy_version`` and ``weights``
(a :class:`VersionedRef` to the freshly published weights: the ref nested, so a
``ray.get`` of the metrics does not fetch the weights too), or ``{lost: 1.0}`` when a
fragment's only copy went down with its node: the ranks agree to skip that batch and live
on, so a lost object is never taken for a dead learner. Gradients are averaged with
``torch.distributed`` (gloo on CPU, nccl on GPUs), so all ranks hold the same parameters
after every update; RND's predictor is trained the same way (``learner.intrinsic``), so
all ranks hold the same RND too. Each rank gets a builder of its core
(:class:`learner.learner_core.LearnerCore`) from the run's wiring, ``cluster.components``,
which also places the ranks.

State has one contract at every level (``Learner``, ``IntrinsicScorer``, ``LearnerCore``,
``LearnerActor``, ``LearnerGroup``): ``state()`` returns it, ``load_state(state)``
restores it. The driver writes it into its own checkpoint file (``cluster.run_dir``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray
import torch

from actors import metrics as m
from actors.versioned import VersionedRef
from learner import appo
from learner.intrinsic import INTRINSIC_MEAN, INTRINSIC_ZERO_FRACTION
from learner.learner_core import INTRINSIC_STATE, LearnerCore

__all__ = ["INTRINSIC_STATE", "LOST", "SKIPPED", "WEIGHTS", "LearnerActor", "LearnerGroup"]

WEIGHTS = "weights"  # metrics key: rank 0's published weights, a VersionedRef
_MAX_REMEMBERED = 64  # update numbers kept for skip_after(); far above max_queued_batches
SKIPPED = "skipped"  # metrics key of an update skipped at a stop (see skip_after)
LOST = "lost"  # metrics key of an update whose batch could not be fetched (see update)


# "control" runs beside the updates (which stay serial, one at a time, in the default
# group), so a stopping driver can tell a busy learner to skip the updates queued behind.
@ray.remote(concurrency_groups={"control": 1})
class LearnerActor:
    """One rank: a :class:`Learner` plus process-group setup and weight publishing."""

    def __init__(
        self,
        build: Callable[[], LearnerCore],
        *,
        rank: int,
        world_size: int,
        torch_threads: int,
        backend: str,
    ) -> None:
        """``build``: this rank's core; ``backend``: gloo or nccl, of the process group."""
        torch.set_num_threads(torch_threads)
        self.rank, self.world_size = rank, world_size
        self.core = build()
        self.backend = backend
        # The latest published weights: the owner must outlive every borrower's use.
        self._weights: VersionedRef | None = None
        self._labels = m.component_labels(role="learner", actor_id=rank)

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a free port for the process group's TCP store (rank 0)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def init_process_group(self, *, address: str, port: int) -> None:
        import torch.distributed as dist

        dist.init_process_group(
            self.backend,
            init_method=f"tcp://{address}:{port}",
            rank=self.rank,
            world_size=self.world_size,
        )

    @ray.method(concurrency_group="control")
    def skip_from(self, seq: int) -> None:
        """Updates numbered ``seq`` and later return ``{SKIPPED: 1.0}`` without training.
        Every rank gets the same number, so no rank waits in an all-reduce for a skipper."""
        self._skip_from = seq

    def update(
        self,
        fragment_refs: list[ray.ObjectRef],
        reward_model: VersionedRef | None = None,
        seq: int = -1,
    ) -> dict[str, Any]:
        """Train on the fragments; ``reward_model``'s state is fetched only when its version
        is new (ONI relabels each batch with the newest model). ``{LOST: 1.0}``, untrained,
        when any rank could not fetch its share (an object lost with its node)."""
        if seq >= getattr(self, "_skip_from", 1 << 62):
            return {SKIPPED: 1.0}
        try:
            fragments = ray.get(fragment_refs)
            if self.core.needs_model(reward_model):
                assert reward_model is not None
                reward_model = VersionedRef(reward_model.version, ray.get(reward_model.ref))
            fetched = True
        except ray.exceptions.ObjectLostError:
            # Its only copy went down with a node (or its owner died): Ray says so once the
            # node is declared dead, so this never waits for ever. This rank lives on.
            fetched = False
        if not self._all_fetched(fetched):  # every rank skips together, or none does
            return {LOST: 1.0}
        metrics = self.core.update(fragments, reward_model)
        self._record(metrics, len(fragments))
        if self.rank == 0:
            metrics[WEIGHTS] = self._publish()
        return metrics

    def _all_fetched(self, fetched: bool) -> bool:
        """Whether every rank fetched its share: a rank that trained alone would wait in the
        gradient all-reduce for one that gave up. One collective of one number."""
        if self.world_size == 1:
            return fetched
        import torch.distributed as dist

        flag = torch.tensor([float(fetched)],
                            device="cuda" if self.backend == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _record(self, metrics: dict[str, Any], num_fragments: int) -> None:
        labels = self._labels
        m.LEARNER_UPDATES.labels(**labels).inc()
        m.FRAGMENTS_CONSUMED.labels(**labels).inc(num_fragments)
        m.UPDATE_SECONDS.labels(**labels).observe(metrics[appo.UPDATE_SECONDS])
        m.GRAD_NORM.labels(**labels).set(metrics[appo.GRAD_NORM])
        for stat in appo.UPDATE_STATS:
            if stat in metrics:
                m.UPDATE_STAT.labels(**labels, stat=stat).set(metrics[stat])
        m.POLICY_VERSION.labels(**labels).set(self.core.policy_version)
        for term, key in (("policy", appo.POLICY_LOSS), ("value", appo.VALUE_LOSS),
                          ("entropy", appo.ENTROPY_LOSS), ("total", appo.TOTAL_LOSS)):
            m.LEARNER_LOSS.labels(**labels, loss=term).set(metrics[key])
        if metrics[INTRINSIC_MEAN] is not None:  # a model scored this batch
            m.INTRINSIC_REWARD_MEAN.labels(**labels).set(metrics[INTRINSIC_MEAN])
            m.INTRINSIC_REWARD_SPARSITY.labels(**labels).set(metrics[INTRINSIC_ZERO_FRACTION])
            m.REWARD_MODEL_VERSION.labels(**labels).set(self.core.scorer.version)

    def _publish(self) -> VersionedRef:
        with m.WEIGHT_SYNC_SECONDS.labels(**self._labels).time():
            weights = self.core.get_weights()
            self._weights = VersionedRef(self.core.policy_version, ray.put(weights))
        m.WEIGHT_SYNC_BYTES.labels(**self._labels).inc(sum(w.nbytes for w in weights.values()))
        return self._weights

    def metrics(self) -> bytes:
        """This process's Prometheus exposition text, for the driver's hub."""
        return m.metrics_snapshot()

    def latest_weights(self) -> VersionedRef:
        if self._weights is None or self._weights.version != self.core.policy_version:
            self._publish()
        assert self._weights is not None
        return self._weights

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.core.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.core.set_weights(weights)

    def state(self) -> dict[str, Any]:
        return self.core.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.core.load_state(state)
        if self.rank == 0:
            self._publish()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class LearnerGroup:
    """Learner actors, one per rank, training one policy together.

    ``actors``: rank 0 first (``cluster.components.learner_group`` creates them).
    """

    def __init__(self, actors: list[Any]) -> None:
        self.actors = list(actors)
        n = len(self.actors)
        self._peer_refs: list[ray.ObjectRef] = []
        self._seq = 0  # the number of the next update, the same on every rank
        # By the ref's hex, not the ref: holding an update's ref would pin its result, and
        # with it the weights it published, in the object store.
        self._seqs: collections.OrderedDict[str, int] = collections.OrderedDict()
        if n > 1:
            address, port = ray.get(self.actors[0].rendezvous_address.remote())
            # Every rank must be inside init_process_group at once: it blocks until all join.
            ray.get([a.init_process_group.remote(address=address, port=port)
                     for a in self.actors])
            # The same seed gives the same net on every rank; copying rank 0 makes sure.
            weights = self.actors[0].get_weights.remote()
            ray.get([a.set_weights.remote(weights) for a in self.actors[1:]])

    def update(
        self,
        fragment_refs: Sequence[ray.ObjectRef],
        *,
        reward_model: VersionedRef | None = None,
    ) -> ray.ObjectRef:
        """Start one update; returns the ref to rank 0's metrics (with ``WEIGHTS``).

        ``reward_model``: the newest intrinsic reward model (its ref nested: fetched only by a
        rank whose version is older).
        """
        n = len(self.actors)
        if not fragment_refs or len(fragment_refs) % n:
            raise ValueError(
                f"{len(fragment_refs)} fragments cannot be split evenly among {n} learners"
            )
        self.raise_peer_errors()
        share = len(fragment_refs) // n
        # A list argument is not resolved by Ray: each learner fetches its own fragments.
        refs = [
            actor.update.remote(
                list(fragment_refs[rank * share : (rank + 1) * share]), reward_model, self._seq
            )
            for rank, actor in enumerate(self.actors)
        ]
        self._seqs[refs[0].hex()] = self._seq
        self._seq += 1
        self._peer_refs += refs[1:]
        while len(self._seqs) > _MAX_REMEMBERED:
            self._seqs.popitem(last=False)
        return refs[0]

    def skip_after(self, update_ref: ray.ObjectRef, *, timeout: float = 30) -> None:
        """Every update started after ``update_ref`` returns ``{SKIPPED: 1.0}`` untrained.

        For a stop: ``ray.cancel`` cannot stop a queued task of a synchronous actor (it runs
        and its result is thrown away, training lost), so the ranks are told to skip them.
        """
        seq = self._seqs[update_ref.hex()] + 1
        ray.get([a.skip_from.remote(seq) for a in self.actors], timeout=timeout)

    def infos(self) -> list[dict[str, Any]]:
        """Each rank's ``LearnerActor.info()``: rank, pid, node id."""
        return ray.get([a.info.remote() for a in self.actors])

    def raise_peer_errors(self) -> None:
        """Surface a failed update on a rank > 0 (the caller only waits on rank 0's ref)."""
        if not self._peer_refs:
            return
        done, self._peer_refs = ray.wait(
            self._peer_refs, num_returns=len(self._peer_refs), timeout=0
        )
        ray.get(done)

    def weights(self) -> VersionedRef:
        """The current policy version and the ref to its published weights."""
        return ray.get(self.actors[0].latest_weights.remote())

    def state(self) -> dict[str, Any]:
        """The group's state for the driver's checkpoint: model, optimiser, version, RNG,
        reward model and RND. Rank 0's, which every rank holds alike."""
        return ray.get(self.actors[0].state.remote())

    def load_state(self, state: dict[str, Any]) -> None:
        """Every rank loads the same state (put once, fetched by each rank)."""
        ref = ray.put(state)
        ray.get([a.load_state.remote(ref) for a in self.actors])

    def shutdown(self) -> None:
        # A dead or hung rank cannot close its group; killing it below is all that is left.
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            ray.get([a.close.remote() for a in self.actors], timeout=30)
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

