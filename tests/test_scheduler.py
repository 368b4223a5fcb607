"""Unit tier: the loop's rules, driven by synthetic events (no Ray, no environments)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from actors.checkpointable import Checkpointable
from actors.versioned import VersionedRef
from cluster.scheduler import (
    ACTOR_LOST,
    LEARNER_LOST,
    OBJECT_LOST,
    POLICY_LAG,
    STEP_BUDGET_REACHED,
    STOP,
    TIME_BUDGET_REACHED,
    Checkpoint,
    Drop,
    Limits,
    RebuildLearners,
    RestartActor,
    Sample,
    Scheduler,
    Train,
)

STEPS = 10  # env steps per fragment


def limits(**kw) -> Limits:
    base = dict(num_actors=2, fragments_in_flight=1, fragments_per_batch=2, max_policy_lag=1,
                max_queued_batches=1, checkpoint_every_updates=100, total_env_steps=10_000,
                learner_max_restarts=1)
    return Limits(**{**base, **kw})


def of(cmds: list, kind: type) -> list:
    return [c for c in cmds if isinstance(c, kind)]


def weights(version: int) -> VersionedRef:
    return VersionedRef(version, f"w{version}")


def ready(s: Scheduler, actor: int, version: int, handle: object = None) -> list:
    return s.fragment_ready(actor, s.incarnations[actor], handle, version=version, steps=STEPS)


def test_start_issues_every_slot_with_the_initial_weights() -> None:
    s = Scheduler(limits(fragments_in_flight=2))
    cmds = s.start(weights(0))
    assert cmds == [Sample(0, 0, weights(0))] * 2 + [Sample(1, 0, weights(0))] * 2


def test_a_full_batch_trains_and_the_slots_are_reissued_with_the_newest_weights() -> None:
    s = Scheduler(limits())
    s.start(weights(0))
    assert ready(s, 0, 0, "a") == [Sample(0, 0, weights(0))]  # half a batch: keep sampling
    cmds = ready(s, 1, 0, "b")
    assert cmds[0] == Train(["a", "b"], None, [0, 0])
    assert of(cmds, Sample) == [Sample(1, 0, weights(0))]  # actor 0 was reissued at once
    s.reward_model_published(VersionedRef(3, "m"))
    cmds = s.update_done(weights(1))
    assert cmds == []  # nothing ready: nothing to train, both actors are busy
    assert ready(s, 0, 0) == [Sample(0, 0, weights(1))]
    assert of(ready(s, 1, 1), Train)[0].reward_model == VersionedRef(3, "m")


def test_backpressure_pauses_sampling_while_a_full_batch_waits_for_a_busy_learner() -> None:
    s = Scheduler(limits(num_actors=4, max_policy_lag=10))
    s.start(weights(0))
    ready(s, 0, 0)
    assert of(ready(s, 1, 0), Train)  # the one update allowed is now outstanding
    ready(s, 2, 0)
    assert of(ready(s, 3, 0), Sample) == []  # a full batch waits: actor 3 pauses
    assert len(s.ready) == 2 and len(s.idle) == 1
    cmds = s.update_done(weights(1))
    assert of(cmds, Train) and of(cmds, Sample) == [Sample(3, 0, weights(1))]


def test_fragments_older_than_the_lag_bound_are_dropped_and_counted() -> None:
    s = Scheduler(limits(max_policy_lag=2, fragments_per_batch=1, max_queued_batches=3))
    s.start(weights(5))
    s.updates.extend([[], []])  # two updates outstanding: the next batch trains version 7
    s.counters.env_steps_produced = 0
    cmds = s.fragment_ready(0, 0, "old", version=4, steps=STEPS)  # lag 7 - 4 = 3 > 2
    assert Drop(POLICY_LAG, 1, STEPS) in cmds and not of(cmds, Train)
    s.updates.clear()  # now the next batch trains version 5: lag 5 - 3 = 2 is allowed
    cmds = s.fragment_ready(1, 0, "ok", version=3, steps=STEPS)
    assert of(cmds, Train)[0].lags == [2]
    c = s.counters
    assert c.env_steps_dropped == c.env_steps_dropped_by_reason[POLICY_LAG] == STEPS
    assert c.fragments_dropped == 1


def test_an_old_fragment_behind_a_newer_one_is_dropped_too() -> None:
    s = Scheduler(limits(max_policy_lag=0, fragments_per_batch=2))
    s.start(weights(3))
    s.fragment_ready(0, 0, "new", version=3, steps=STEPS)
    cmds = s.fragment_ready(1, 0, "old", version=2, steps=STEPS)  # arrived second
    assert cmds[0] == Drop(POLICY_LAG, 1, STEPS) and not of(cmds, Train)
    assert [r.handle for r in s.ready] == ["new"]


def test_a_checkpoint_pauses_batching_until_written() -> None:
    s = Scheduler(limits(checkpoint_every_updates=1, max_policy_lag=10))
    s.start(weights(0))
    ready(s, 0, 0)
    ready(s, 1, 0)
    ready(s, 0, 0)
    ready(s, 1, 0)  # a second full batch waits
    assert s.update_done(weights(1)) == [Checkpoint()]
    assert len(s.updates) == 0 and len(s.ready) == 2
    cmds = s.checkpointed()
    assert of(cmds, Train) and len(s.updates) == 1


def test_state_counts_what_is_pending_as_dropped_by_its_own_steps() -> None:
    """A checkpoint's counters: a resumed run never trains on what waits now, so it is dropped
    (reason stop) in the state, counted by each fragment's own length; the live counters and
    the queue are untouched, and a scheduler loading the state continues the counts."""
    s = Scheduler(limits(num_actors=3, fragments_per_batch=3, max_policy_lag=10))
    assert isinstance(s, Checkpointable)
    s.start(weights(0))
    s.fragment_ready(0, 0, None, version=0, steps=STEPS)
    s.fragment_ready(1, 0, None, version=0, steps=3 * STEPS)  # a shorter or longer fragment
    state = s.state()
    assert (state["fragments_dropped"], state["env_steps_dropped"]) == (2, 4 * STEPS)
    assert state["env_steps_dropped_by_reason"] == {STOP: 4 * STEPS}
    assert state["env_steps_produced"] == 4 * STEPS and state["env_steps_trained"] == 0
    assert s.counters.env_steps_dropped == 0 and len(s.ready) == 2
    resumed = Scheduler(limits())
    resumed.load_state(state)
    assert resumed.state() == state  # nothing pends after a resume: the round trip is exact
    c = resumed.counters
    assert c.env_steps_produced == c.env_steps_trained + c.env_steps_dropped


def test_the_scheduler_imports_nothing_heavy() -> None:
    """The rules are pure: importing them must not pull in torch, Ray or the config's
    pydantic (a fresh interpreter, since this one has them loaded already)."""
    heavy = ("torch", "ray", "pydantic", "omegaconf", "gymnasium", "numpy", "pyarrow")
    code = ("import sys, cluster.scheduler; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root).stdout
    assert out.strip() == "[]"


def test_dead_actor_is_restarted_once_per_incarnation_and_stale_slots_are_retired() -> None:
    s = Scheduler(limits(fragments_in_flight=2))
    s.start(weights(0))
    assert s.actor_lost(0, 0) == [Drop(ACTOR_LOST, 1, 0), RestartActor(0)]
    assert s.actor_lost(0, 0) == [Drop(ACTOR_LOST, 1, 0)]  # the same death
    assert s.counters.fragments_lost == 2 and s.counters.env_steps_dropped == 0
    cmds = s.actor_restarted(0)
    assert of(cmds, Sample) == [Sample(0, 1, weights(0))] * 2
    # A late fragment of the dead incarnation counts, but its slot is not reissued.
    cmds = s.fragment_ready(0, 0, None, version=0, steps=STEPS)
    assert of(cmds, Sample) == []


def test_a_failed_sample_call_of_a_live_actor_is_lost_and_its_slot_reissued() -> None:
    s = Scheduler(limits())
    s.start(weights(0))
    s.learner_restored(weights(3))
    assert s.sample_failed(1, 0) == [Drop(ACTOR_LOST, 1, 0), Sample(1, 0, weights(3))]
    assert s.counters.fragments_lost == 1 and s.counters.env_steps_produced == 0


def test_stop_issues_nothing_then_drops_what_waits() -> None:
    s = Scheduler(limits(num_actors=3, max_queued_batches=2, max_policy_lag=10))
    s.start(weights(0))
    for a in (0, 1, 2):
        ready(s, a, 0)
    s.request_stop("SIGTERM")
    assert ready(s, 0, 0) == []  # completes a batch, yet neither trains nor samples
    assert s.skip_queued() is False
    assert s.update_done(weights(1)) == []
    assert s.drop_pending() == [Drop(STOP, 2, 2 * STEPS)]
    c = s.counters
    assert c.env_steps_produced == c.env_steps_trained + c.env_steps_dropped == 4 * STEPS
    assert s.stop_reason == "SIGTERM" and not s.failed


def test_queued_updates_are_skipped_at_the_stop_and_counted_dropped() -> None:
    s = Scheduler(limits(num_actors=4, max_queued_batches=2, max_policy_lag=10))
    s.start(weights(0))
    for a in range(4):
        ready(s, a, 0)
    assert len(s.updates) == 2
    s.request_stop("SIGINT")
    assert s.skip_queued()
    s.update_done(weights(1))
    assert s.update_done(None, skipped=True) == [Drop(STOP, 2, 2 * STEPS)]
    assert s.counters.updates == 1


def test_budgets_stop_the_run() -> None:
    s = Scheduler(limits(total_env_steps=2 * STEPS, max_minutes=1.0))
    s.start(weights(0))
    s.check_budget(59.0)
    assert not s.stopping
    s.check_budget(60.0)
    assert s.stop_reason == TIME_BUDGET_REACHED
    s = Scheduler(limits(total_env_steps=2 * STEPS))
    s.start(weights(0))
    ready(s, 0, 0)
    ready(s, 1, 0)
    s.check_budget(0.0)
    assert s.stop_reason == STEP_BUDGET_REACHED


def test_learner_lost_drops_what_it_held_since_the_checkpoint_and_rebuilds() -> None:
    s = Scheduler(limits(checkpoint_every_updates=2, max_policy_lag=10))
    s.start(weights(0))
    for version in (1, 2, 3):  # update 2 is checkpointed, update 3 is not
        ready(s, 0, 0)
        ready(s, 1, 0)
        if s.update_done(weights(version)) == [Checkpoint()]:
            s.checkpointed()
    ready(s, 0, 0)
    ready(s, 1, 0)  # a fourth update is outstanding when the learner dies
    cmds = s.learner_lost()
    assert Drop(LEARNER_LOST, 2, 2 * STEPS) in cmds  # the outstanding one
    assert Drop(LEARNER_LOST, 2, 2 * STEPS) in cmds[1:]  # update 3, trained but lost
    assert cmds[-1] == RebuildLearners()
    c = s.counters
    assert c.updates == 2 and c.env_steps_trained == 4 * STEPS and c.learner_restarts == 1
    assert c.env_steps_dropped_by_reason[LEARNER_LOST] == 4 * STEPS
    ready(s, 0, 2)
    assert of(ready(s, 1, 2), Train) == []  # no batch for a learner being rebuilt
    cmds = s.learner_restored(weights(2))
    assert of(cmds, Train)
    # A second death exceeds learner.max_restarts = 1: the run stops, failed.
    assert not of(s.learner_lost(), RebuildLearners)
    assert s.stopping and s.failed
    s.drop_pending()
    assert c.env_steps_produced == c.env_steps_trained + c.env_steps_dropped


def test_an_unfetchable_batch_is_dropped_alone_and_the_learner_trains_on() -> None:
    s = Scheduler(limits(max_queued_batches=2, max_policy_lag=10))
    s.start(weights(0))
    for _ in range(2):  # two batches of two fragments outstanding
        ready(s, 0, 0)
        ready(s, 1, 0)
    assert len(s.updates) == 2
    ready(s, 0, 0)  # and one waiting
    # The first batch's fragments went down with their node: 2 fragments, 2 * STEPS dropped.
    cmds = s.update_lost()
    assert cmds[0] == Drop(OBJECT_LOST, 2, 2 * STEPS)
    c = s.counters
    assert c.updates == 0 and c.learner_restarts == 0 and not s.learner_down
    assert c.env_steps_dropped_by_reason == {OBJECT_LOST: 2 * STEPS}
    # The second batch trains as usual: 5 fragments produced = 2 trained + 2 dropped + 1 waiting.
    s.update_done(weights(1))
    assert (c.updates, c.env_steps_trained, c.env_steps_dropped) == (1, 2 * STEPS, 2 * STEPS)
    assert c.env_steps_produced == 5 * STEPS == (c.env_steps_trained + c.env_steps_dropped
                                                + s.pending_steps())


@pytest.mark.parametrize("seed", range(20))
def test_accounting_holds_after_arbitrary_event_sequences(seed: int) -> None:
    rng = random.Random(seed)
    s = Scheduler(limits(num_actors=3, fragments_in_flight=2, max_queued_batches=2,
                         max_policy_lag=rng.randint(0, 3), checkpoint_every_updates=3,
                         learner_max_restarts=2))
    outstanding = [(c.actor, c.incarnation) for c in of(s.start(weights(0)), Sample)]
    version = 0

    def run(cmds: list) -> None:
        for cmd in cmds:
            if isinstance(cmd, Sample):
                outstanding.append((cmd.actor, cmd.incarnation))
            elif isinstance(cmd, Checkpoint):
                while s.updates:
                    run(s.update_done(weights(s.version + 1), pump=False))
                run(s.checkpointed())
            elif isinstance(cmd, RestartActor):
                run(s.actor_restarted(cmd.actor))
            elif isinstance(cmd, RebuildLearners):
                run(s.learner_restored(weights(version)))

    for _ in range(300):
        event = rng.random()
        if event < 0.6 and outstanding:
            actor, inc = outstanding.pop(rng.randrange(len(outstanding)))
            run(s.fragment_ready(actor, inc, None, version=max(s.version - rng.randint(0, 4), 0),
                                 steps=rng.choice([STEPS, 2 * STEPS])))
        elif event < 0.85 and s.updates:
            version = s.version + 1
            run(s.update_done(weights(version)))
        elif event < 0.9 and outstanding:
            actor, inc = outstanding.pop(rng.randrange(len(outstanding)))
            run(s.actor_lost(actor, inc))
        elif event < 0.93:
            run(s.learner_lost())
        elif event < 0.96 and s.updates:
            run(s.update_lost())
        c = s.counters
        assert c.env_steps_produced == c.env_steps_trained + c.env_steps_dropped + s.pending_steps()
        assert sum(c.env_steps_dropped_by_reason.values()) == c.env_steps_dropped
        assert len(s.updates) <= 2
        if s.stopping:
            break
    s.request_stop("end")
    while s.updates:
        s.update_done(None, skipped=rng.random() < 0.5)
    s.drop_pending()
    c = s.counters
    assert c.env_steps_produced == c.env_steps_trained + c.env_steps_dropped
    assert sum(c.env_steps_dropped_by_reason.values()) == c.env_steps_dropped
