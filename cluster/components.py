"""The run's wiring, in one place: how each component is made, and what it is handed.

Consumes: a validated :class:`OniConfig` and the run's labels folder. Emits: the run's
:class:`Components`, for either runtime: the cores as objects in this process
(:class:`InProcess`, ``cluster.local_runtime``) or the same cores inside their Ray shells
(:class:`OnRay`, ``cluster.driver``). :func:`connect_components` is the diagram: what each
component gets from the others, one comment per edge; the loop that moves data along the
edges at run time is ``cluster.loop.RunLoop``.

The cores (``RolloutWorker``, ``LearnerCore``, ``Annotator``) are constructed here and nowhere
else, and so are the Ray actors around them: their options and seeds live here too, and how
each runtime stops them (``Makers.close``). A shell gets a builder of its core (a
``functools.partial`` of a factory below), so the packages below ``cluster`` never import it.
The Ray modules are imported only inside the Ray factories: the local runtime never loads Ray.
What a new component touches, here and elsewhere: docs/architecture.md#adding-a-component.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from actors.checkpointable import check_checkpointable
from actors.rollout_worker import RolloutWorker
from cluster.config import OniConfig
from cluster.scheduler import rollout_seed
from learner.learner_core import LearnerCore
from rewards.config import RewardsConfig

if TYPE_CHECKING:
    from cluster.supervision import AnnotatorSupervisor, RolloutSupervisor
    from learner.learner_group import LearnerGroup
    from rewards.annotator import Annotator
    from rewards.judges import Judge

R = TypeVar("R")  # the rollouts: workers, or their supervised actors
L = TypeVar("L")  # the learner: one core, or the group of ranks
A = TypeVar("A")  # the annotator: the core, or its supervised actor


# ---- the cores: plain objects, built the same way in both runtimes --------------------------
def rollout_worker(cfg: OniConfig, *, actor_id: int, incarnation: int = 0) -> RolloutWorker:
    """Rollout actor ``actor_id``'s worker; each incarnation (restart) steps a seed of its own."""
    return RolloutWorker(env=cfg.env, rollout=cfg.rollout, model=cfg.model, actor_id=actor_id,
                         seed=rollout_seed(cfg.run.seed, actor_id, incarnation))


def learner_core(
    cfg: OniConfig, *, num_actions: int, rank: int = 0, world_size: int = 1
) -> LearnerCore:
    """One learner rank: the APPO learner and its intrinsic scorer."""
    return LearnerCore(cfg, num_actions=num_actions, rank=rank, world_size=world_size)


def annotator(
    rewards: RewardsConfig,
    *,
    env_id: str,
    labels_dir: str,
    train_in_step: bool,
    judge_factory: Callable[[], Judge] | None = None,
) -> Annotator:
    """The reward service: the judge, the label store (reloaded from ``labels_dir``, so a
    restarted annotator asks nothing twice) and the reward model. ``train_in_step``: fit in
    ``step()`` (one process) rather than in a thread of its own (the Ray shell).
    ``judge_factory``: a judge other than the configured one (tests)."""
    # Imported here: a run without the reward service never loads the judges.
    from rewards.annotator import Annotator
    from rewards.judges import make_judge
    from rewards.label_store import LabelStore

    judge = judge_factory() if judge_factory is not None else make_judge(rewards.judge,
                                                                           env_id=env_id)
    return Annotator(rewards, judge=judge, store=LabelStore(labels_dir),
                     train_in_step=train_in_step)


# ---- the Ray shells around the cores: placement options, and a builder of the core ------
def rollout_actor(
    cfg: OniConfig, *, actor_id: int, incarnation: int = 0, extract_captions: bool
) -> Any:
    """A :class:`actors.rollout_actor.RolloutActor`, placed by ``rollout.num_cpus`` /
    ``resources``."""
    from actors.rollout_actor import RolloutActor

    rc = cfg.rollout
    build = functools.partial(rollout_worker, cfg, actor_id=actor_id, incarnation=incarnation)
    return RolloutActor.options(num_cpus=rc.num_cpus, resources=rc.resources or None).remote(
        build, torch_threads=rc.torch_threads, extract_captions=extract_captions
    )


def learner_group(cfg: OniConfig, *, num_actions: int) -> LearnerGroup:
    """``learner.num_learners`` ranks, each a :class:`learner.learner_group.LearnerActor`
    placed by ``learner.num_cpus`` / ``num_gpus`` / ``resources``, joined in one group."""
    from learner.learner_group import LearnerActor, LearnerGroup

    lc, n = cfg.learner, cfg.learner.num_learners
    backend = lc.backend if lc.backend != "auto" else ("nccl" if lc.num_gpus > 0 else "gloo")
    ranks = [
        LearnerActor.options(
            num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, resources=dict(lc.resources)
        ).remote(
            functools.partial(learner_core, cfg, num_actions=num_actions, rank=rank,
                              world_size=n),
            rank=rank, world_size=n, torch_threads=lc.torch_threads, backend=backend,
        )
        for rank in range(n)
    ]
    return LearnerGroup(ranks)


def annotator_actor(
    rewards: RewardsConfig,
    *,
    env_id: str,
    labels_dir: str,
    judge_factory: Callable[[], Judge] | None = None,
) -> Any:
    """A :class:`rewards.annotator_actor.AnnotatorActor`, placed by
    ``rewards.annotator.num_cpus`` / ``resources``; threaded (see its ``MAX_CONCURRENCY``)."""
    from rewards.annotator_actor import MAX_CONCURRENCY, AnnotatorActor

    options: dict[str, Any] = {
        "num_cpus": rewards.annotator.num_cpus,
        "max_concurrency": MAX_CONCURRENCY,
    }
    if rewards.annotator.resources:
        options["resources"] = dict(rewards.annotator.resources)
    build = functools.partial(annotator, rewards, env_id=env_id, labels_dir=labels_dir,
                              train_in_step=False, judge_factory=judge_factory)
    return AnnotatorActor.options(**options).remote(rewards, build=build)


# ---- the two runtimes' ways of making the components -------------------------------------
class Makers(Generic[R, L, A]):
    """How one runtime makes each component (:class:`InProcess`, :class:`OnRay`)."""

    def rollouts(self, cfg: OniConfig, *, extract_captions: bool) -> R:
        raise NotImplementedError

    def num_actions(self, rollouts: R) -> int:
        raise NotImplementedError

    def learners(self, cfg: OniConfig, *, num_actions: int) -> L:
        raise NotImplementedError

    def annotator(self, cfg: OniConfig, *, labels_dir: str) -> A:
        raise NotImplementedError

    def close(self, parts: Components[R, L, A]) -> None:
        """Stop what this runtime made (the runtime's ``finally``: after a failure too)."""
        raise NotImplementedError


class InProcess(Makers[list[RolloutWorker], LearnerCore, "Annotator"]):
    """The cores as objects in this process (one learner rank, nothing restarted)."""

    def rollouts(self, cfg: OniConfig, *, extract_captions: bool) -> list[RolloutWorker]:
        # extract_captions: here the loop takes the captions from the fragment itself.
        return [rollout_worker(cfg, actor_id=i) for i in range(cfg.rollout.num_actors)]

    def num_actions(self, rollouts: list[RolloutWorker]) -> int:
        return rollouts[0].num_actions

    def learners(self, cfg: OniConfig, *, num_actions: int) -> LearnerCore:
        return learner_core(cfg, num_actions=num_actions)

    def annotator(self, cfg: OniConfig, *, labels_dir: str) -> Annotator:
        # Fitted in the loop's step, not in a thread: a debugger sees one thread.
        return annotator(cfg.rewards, env_id=cfg.env.id, labels_dir=labels_dir,
                         train_in_step=True)

    def close(self, parts: LocalComponents) -> None:
        if parts.annotator is not None:
            parts.annotator.judge.close()
        for worker in parts.rollouts:
            worker.close()


class OnRay(Makers["RolloutSupervisor", "LearnerGroup", "AnnotatorSupervisor"]):
    """Each core in its Ray shell; rollout actors and the annotator restarted when they die."""

    def rollouts(self, cfg: OniConfig, *, extract_captions: bool) -> RolloutSupervisor:
        from cluster.supervision import RolloutSupervisor

        create = functools.partial(rollout_actor, cfg, extract_captions=extract_captions)
        return RolloutSupervisor(create, num_actors=cfg.rollout.num_actors,
                                 max_restarts=cfg.rollout.max_restarts)

    def num_actions(self, rollouts: RolloutSupervisor) -> int:
        import ray

        # Every actor answers: all are up before the learners take their CPUs.
        infos = ray.get([a.info.remote() for a in rollouts.actors])
        return infos[0]["num_actions"]

    def learners(self, cfg: OniConfig, *, num_actions: int) -> LearnerGroup:
        return learner_group(cfg, num_actions=num_actions)

    def annotator(self, cfg: OniConfig, *, labels_dir: str) -> AnnotatorSupervisor:
        from cluster.supervision import AnnotatorSupervisor

        create = functools.partial(annotator_actor, cfg.rewards, env_id=cfg.env.id,
                                   labels_dir=labels_dir)
        supervisor = AnnotatorSupervisor(create,
                                         max_restarts=cfg.rewards.annotator.max_restarts)
        supervisor.wait_ready()  # a judge that cannot load fails here, not later
        return supervisor

    def close(self, parts: RayComponents) -> None:
        import ray

        for actor in parts.rollouts.actors:
            ray.kill(actor)
        parts.learners.shutdown()  # the current group: a rebuilt one replaces it in parts
        if parts.annotator is not None:
            parts.annotator.stop()  # flushes the label store


# ---- the run's components and their edges ------------------------------------------------
@dataclass
class Components(Generic[R, L, A]):
    rollouts: R
    learners: L  # replaced when a dead rank takes the group down (Ray)
    num_actions: int
    annotator: A | None = None  # when the reward service runs


LocalComponents = Components[list[RolloutWorker], LearnerCore, "Annotator"]
RayComponents = Components["RolloutSupervisor", "LearnerGroup", "AnnotatorSupervisor"]


def connect_components(
    cfg: OniConfig, makers: Makers[R, L, A], *, labels_dir: str
) -> Components[R, L, A]:
    """Create every component and hand each what it takes from the others. Components hold
    no handles of each other: the loop (``cluster.loop``) forwards along each edge below."""
    annotating = cfg.rewards.annotator.enabled
    # rollout -> annotator: each fragment's distinct messages (a ref on Ray), via the loop;
    # extracted only when the annotator, their one reader, runs
    rollouts = makers.rollouts(cfg, extract_captions=annotating)
    # rollout -> learner: the action count, which sizes the policy's output
    num_actions = makers.num_actions(rollouts)
    # rollout -> learner: fragments (refs on Ray; each rank fetches its share) in batches
    # learner -> rollout: the newest weights as one VersionedRef, with each sample call
    learners = makers.learners(cfg, num_actions=num_actions)
    # learner -> checkpoints: its state() / load_state() (checked now, not at the first save)
    check_checkpointable(learners, role="learner")
    # annotator -> learner: the newest reward model as a VersionedRef, with each batch
    # annotator -> labels/: every label on disk, so a restarted annotator asks nothing twice
    annotator = makers.annotator(cfg, labels_dir=labels_dir) if annotating else None
    return Components(rollouts=rollouts, learners=learners, num_actions=num_actions,
                      annotator=annotator)
