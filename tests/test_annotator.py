"""The annotator core (no Ray): dedup, bounded queue, unparseable answers, retraining."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from rewards.annotator import Annotator, serve_until_stopped
from rewards.config import RewardsConfig
from rewards.judges.base import Judge, Preference, Verdict
from rewards.label_store import LabelStore
from tests.helpers.captions import captions, is_helpful


class RecordingJudge(Judge):
    """Labels by the test's known answer and records every caption and pair it is asked.

    Captions containing "garbled" get an unparseable answer; ``fail`` makes calls raise.
    """

    name = "recording"

    def __init__(self, *, canary_helpful: bool = False) -> None:
        self.asked: list[str] = []
        self.batches: list[int] = []  # the size of each label() call
        self.compared: list[tuple[str, str]] = []
        self.fail = False
        self.canary_helpful = canary_helpful

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        if self.fail:
            raise ConnectionError("judge unreachable")
        self.asked += captions
        self.batches.append(len(captions))
        return [
            Verdict(c, None if "garbled" in c else is_helpful(c) or self.canary_helpful)
            for c in captions
        ]

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        self.compared += pairs
        out = []
        for a, b in pairs:
            ha, hb = is_helpful(a), is_helpful(b)
            out.append(Preference(a, b, -1 if ha == hb else (0 if ha else 1)))
        return out


class ProbabilityJudge(RecordingJudge):
    """Gives P(helpful) with each verdict (0.8 helpful, 0.25 not) and P(first better) with
    each preference, biased 0.1 towards the first slot, as a log-probability judge does."""

    name = "probability"

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        return [v if v.label is None else replace(v, prob=0.8 if v.label else 0.25)
                for v in super().label(captions)]

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        return [replace(p, prob_first=_pref_prob(p.first, p.second) + 0.1)
                for p in super().compare(pairs)]


def _pref_prob(a: str, b: str) -> float:
    return 0.5 + 0.3 * (is_helpful(a) - is_helpful(b))


def _cfg(**annotator: object) -> RewardsConfig:
    cfg = RewardsConfig()
    cfg.judge.batch_size = 4
    cfg.judge.max_retries = 2
    cfg.annotator.canary_every = 0
    cfg.annotator.batch_wait_s = 0.0  # a partial batch is due at once (tests that wait set it)
    cfg.model.kind = "retrieval"
    cfg.model.train_every_labels = 1000
    for key, value in annotator.items():
        setattr(cfg.annotator, key, value)
    return cfg


def _annotator(tmp_path: Path, cfg: RewardsConfig | None = None, **kw: object) -> Annotator:
    judge = kw.pop("judge", None) or RecordingJudge()
    return Annotator(cfg or _cfg(), judge=judge, store=LabelStore(tmp_path), **kw)  # type: ignore[arg-type]


def _drain(annotator: Annotator) -> None:
    """Tick, as both runtimes do, until every queued caption is labelled."""
    while annotator.queue_depth():
        annotator.tick()


def test_a_caption_submitted_while_pending_or_labelled_is_asked_once(tmp_path: Path) -> None:
    annotator = _annotator(tmp_path)
    judge = annotator.judge
    assert isinstance(judge, RecordingJudge)
    for _ in range(50):
        annotator.submit(["You kill the newt!", "It's a wall.", "", "  "])
    assert annotator.queue_depth() == 2
    batch = annotator._take_batch()  # in flight: still pending, so still not queued again
    annotator.submit(["You kill the newt!"])
    assert annotator.queue_depth() == 0
    annotator._requeue_failed(batch)  # as after a failed ask
    _drain(annotator)
    annotator.submit(pa.array(["You kill the newt!", "It's a wall.", "It's a wall.", None]))

    assert sorted(judge.asked) == ["It's a wall.", "You kill the newt!"]
    assert annotator.store.get("You kill the newt!") is True
    stats = annotator.stats()
    assert stats["submitted_total"] == 103  # 100 + 1 + the array's 2 distinct texts
    assert stats["cache_hits_total"] == 101
    assert stats["cache_hit_rate"] == pytest.approx(101 / 103)
    assert stats["empty_captions_total"] == 100
    assert stats["labels_total"] == 2 and stats["pending"] == 0


def test_labelled_captions_in_a_reopened_store_never_reach_the_judge(tmp_path: Path) -> None:
    first = _annotator(tmp_path)
    known = captions(20, seed=0)
    first.submit(known)
    _drain(first)
    first.flush()

    second = _annotator(tmp_path)
    assert second.submit(known) == 0
    second.step()
    assert second.judge.asked == []  # type: ignore[attr-defined]
    assert second.stats()["cache_hit_rate"] == 1.0


@pytest.mark.parametrize(
    ("priority", "asked_first", "kept"),
    [
        ("newest", ["c4", "c3", "c2"], {"c2", "c3", "c4"}),
        ("oldest", ["c0", "c1", "c2"], {"c0", "c1", "c2"}),
    ],
)
def test_bounded_queue_sheds_the_lowest_priority(
    tmp_path: Path, priority: str, asked_first: list[str], kept: set[str]
) -> None:
    cfg = _cfg(queue_size=3, priority=priority)
    cfg.judge.batch_size = 3
    annotator = _annotator(tmp_path, cfg)
    for i in range(5):
        annotator.submit([f"c{i}"])
    stats = annotator.stats()
    assert stats["queue_depth"] == 3 and stats["shed_total"] == 2 and stats["pending"] == 3
    annotator.step()
    assert annotator.judge.asked == asked_first  # type: ignore[attr-defined]
    assert {c for c in kept if c in annotator.store} == kept
    shed = ({"c0", "c1", "c2", "c3", "c4"} - kept).pop()
    assert annotator.submit([shed]) == 1  # shed is not labelled: the game may show it again


def test_unparseable_answers_are_retried_then_dropped_never_labelled(tmp_path: Path) -> None:
    annotator = _annotator(tmp_path)  # max_retries = 2: three asks in all
    annotator.submit(["garbled answer", "You kill the jackal!"])
    _drain(annotator)

    assert annotator.judge.asked.count("garbled answer") == 3  # type: ignore[attr-defined]
    assert "garbled answer" not in annotator.store
    assert annotator.store.get("You kill the jackal!") is True
    stats = annotator.stats()
    assert stats["parse_failures_total"] == 3 and stats["gave_up_total"] == 1
    assert stats["pending"] == 0


def test_judge_errors_requeue_and_captions_that_sanitise_to_nothing_skip_the_judge(
    tmp_path: Path,
) -> None:
    annotator = _annotator(tmp_path)
    judge = annotator.judge
    assert isinstance(judge, RecordingJudge)
    judge.fail = True
    annotator.submit(["You kill the fox!", "\x1b\x00\u202e"])
    assert annotator.step() == 1  # the control-only caption: labelled without asking
    for _ in range(5):  # an outage longer than max_retries spends no retry
        assert annotator.step() == 0
    assert annotator.stats()["gave_up_total"] == 0
    assert annotator.store.get("\x1b\x00\u202e") is False
    assert annotator.stats()["judge_errors_total"] == 6 and annotator.queue_depth() == 1
    judge.fail = False
    assert annotator.step() == 1
    assert judge.asked == ["You kill the fox!"]


def test_canaries_are_asked_but_never_stored(tmp_path: Path) -> None:
    cfg = _cfg(canary_every=2, canary_max_fpr=0.2)
    annotator = _annotator(tmp_path, cfg, judge=RecordingJudge(canary_helpful=True))
    annotator.submit(captions(12, seed=1))
    _drain(annotator)
    asked = set(annotator.judge.asked)  # type: ignore[attr-defined]
    canaries = asked - set(captions(12, seed=1))
    assert canaries and not any(c in annotator.store for c in canaries)
    stats = annotator.stats()
    assert stats["canaries_answered"] >= 5 and stats["canary_fpr"] == 1.0
    assert stats["labels_total"] == len(annotator.store)


def test_retrains_every_n_labels_and_publishes_a_new_version(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.model.train_every_labels = 8
    annotator = _annotator(tmp_path, cfg)
    assert annotator.reward_model() == (0, None)
    annotator.submit(captions(20, seed=2))
    _drain(annotator)
    version, state = annotator.reward_model()
    assert version == 2 and state is not None and state["kind"] == "retrieval"
    assert annotator.stats()["reward_model_version"] == 2


def test_a_restarted_annotator_continues_the_reward_model_versions(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.model.train_every_labels = 8
    first = _annotator(tmp_path, cfg)
    first.submit(captions(20, seed=2))
    _drain(first)
    assert first.reward_model()[0] == 2
    # A new annotator on the same labels (a restart): the count goes on, never back.
    second = _annotator(tmp_path, cfg)
    assert second.reward_model() == (2, None)
    second.retrain()
    assert second.reward_model()[0] == 3 and second.stats()["reward_model_version"] == 3
    assert LabelStore(second.store.directory).reward_model_version == 3


def test_ranking_asks_new_pairs_in_both_orders(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.model.kind = "ranking"
    cfg.model.train_every_labels = 8
    cfg.model.pairs_per_round = 5
    cfg.model.train_steps = 5
    annotator = _annotator(tmp_path, cfg)
    annotator.submit(captions(8, seed=3))
    _drain(annotator)
    compared = annotator.judge.compared  # type: ignore[attr-defined]
    assert len(compared) == 10
    assert compared[5:] == [(b, a) for a, b in compared[:5]]
    assert annotator.store.num_preferences == 5
    assert annotator.reward_model()[0] == 1
    annotator.begin_round()  # a second round never repeats a pair
    pairs = [frozenset(p) for p in annotator.judge.compared]  # type: ignore[attr-defined]
    assert len(set(pairs)) == len(pairs) // 2 == 10


def test_probabilities_reach_the_store_and_both_orders_are_averaged(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.model.kind = "ranking"
    cfg.model.train_every_labels = 8
    cfg.model.pairs_per_round = 5
    cfg.model.train_steps = 5
    annotator = _annotator(tmp_path, cfg, judge=ProbabilityJudge())
    caps = captions(7, seed=3)
    annotator.submit([*caps, "garbled answer", "\x1b\x00"])
    _drain(annotator)

    labels = annotator.store.labels()
    prob = dict(zip(labels.column("caption").to_pylist(), labels.column("prob").to_pylist(),
                    strict=True))
    assert "garbled answer" not in prob  # unparseable: no label, whatever its probability
    assert prob == {**{c: 0.8 if is_helpful(c) else 0.25 for c in caps}, "\x1b\x00": None}
    prefs = annotator.store.preferences()
    assert prefs.num_rows == 5
    for a, b, p in zip(*(prefs.column(k).to_pylist() for k in ("first", "second", "prob_first")),
                       strict=True):
        # (P(a over b) + 1 - P(b over a)) / 2: the slot bias of 0.1 cancels.
        assert p == pytest.approx(_pref_prob(a, b))
    stats = annotator.stats()
    assert stats["soft_labels_total"] == 7 and stats["labels_total"] == 8
    assert stats["soft_label_fraction"] == 7 / 8
    helpful = sum(map(is_helpful, caps))
    assert stats["judge_prob_mean"] == pytest.approx((0.8 * helpful + 0.25 * (7 - helpful)) / 7)


def test_the_judge_threshold_reaches_the_reward_model(tmp_path: Path) -> None:
    cfg = _cfg()  # retrieval
    cfg.judge.threshold = 0.9  # above every probability the judge gives: nothing is helpful
    cfg.model.train_every_labels = 4
    annotator = _annotator(tmp_path, cfg, judge=ProbabilityJudge())
    caps = [c for c in captions(12, seed=5) if is_helpful(c)][:4]
    annotator.submit(caps)
    _drain(annotator)
    version, state = annotator.reward_model()
    assert version == 1 and state is not None
    assert all(annotator.store.get(c) for c in caps)  # the judge's own verdicts: helpful
    assert state["helpful"] == [] and state["label_threshold"] == 0.9


def test_the_service_thread_labels_in_the_background_and_flushes_on_stop(
    tmp_path: Path,
) -> None:
    annotator = _annotator(tmp_path, _cfg(flush_interval_s=60))
    stop = threading.Event()
    thread = threading.Thread(target=serve_until_stopped, args=(annotator, stop))
    thread.start()
    annotator.submit(captions(30, seed=4))
    for _ in range(200):
        if annotator.stats()["labels_total"] == 30:
            break
        stop.wait(0.01)
    assert len(LabelStore(tmp_path)) == 0  # flush_interval_s 60: nothing written yet
    stop.set()
    annotator.wake.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(LabelStore(tmp_path)) == 30


def test_a_partial_batch_waits_for_more_captions_up_to_batch_wait(tmp_path: Path) -> None:
    now = [0.0]
    annotator = _annotator(tmp_path, _cfg(batch_wait_s=2.0), clock=lambda: now[0])
    assert annotator.seconds_until_batch() is None  # nothing queued
    annotator.submit(captions(3, seed=1))
    assert annotator.seconds_until_batch() == 2.0
    assert annotator.wake.is_set()  # the first caption queued: a waiting thread looks again
    assert annotator.tick() == 0.5 and annotator.queue_depth() == 3  # not due: nothing asked
    assert not annotator.wake.is_set()  # tick cleared it
    now[0] = 1.5
    assert annotator.seconds_until_batch() == 0.5
    annotator.submit(captions(3, seed=2))  # 6 >= judge.batch_size (4): ask now
    assert annotator.seconds_until_batch() == 0.0 and annotator.wake.is_set()
    annotator.step()
    # The 2 left over wait afresh for a fuller batch.
    assert annotator.queue_depth() == 2 and annotator.seconds_until_batch() == 2.0
    now[0] = 3.5
    assert annotator.seconds_until_batch() == 0.0


def test_the_service_thread_asks_full_batches_at_once_and_a_partial_one_after_the_wait(
    tmp_path: Path,
) -> None:
    annotator = _annotator(tmp_path, _cfg(batch_wait_s=0.6, flush_interval_s=60))
    judge = annotator.judge
    assert isinstance(judge, RecordingJudge)
    stop = threading.Event()
    thread = threading.Thread(target=serve_until_stopped, args=(annotator, stop))
    thread.start()
    try:
        annotator.submit(captions(10, seed=5))  # 4 + 4 at once, the last 2 after the wait
        stop.wait(0.3)
        assert judge.batches == [4, 4]
        stop.wait(0.8)
        assert judge.batches == [4, 4, 2]
    finally:
        stop.set()
        annotator.wake.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_tick_trains_an_idle_annotator_once_train_every_s_passed_and_flushes_on_time(
    tmp_path: Path,
) -> None:
    """The bug --local had: 3 labels (< train_every_labels) and then no new caption; only the
    time rule can start a round, and it must be looked at while the queue is idle."""
    now = [0.0]
    cfg = _cfg(flush_interval_s=1.0)
    cfg.model.train_every_s = 10.0
    annotator = _annotator(tmp_path, cfg, clock=lambda: now[0])
    annotator.submit(captions(3, seed=6))
    annotator.tick()  # batch_wait_s 0: asked at once
    assert annotator.stats()["labels_total"] == 3 and annotator.reward_model() == (0, None)
    assert len(LabelStore(tmp_path)) == 0  # the flush is due at t = 1
    now[0] = 1.0
    # Idle: the wait is the idle cap (0.5), below the round's 9 s and the next flush's 1 s.
    assert annotator.tick() == 0.5
    assert len(LabelStore(tmp_path)) == 3 and annotator.reward_model() == (0, None)
    now[0] = 9.9
    annotator.tick()
    assert annotator.reward_model() == (0, None)
    now[0] = 10.0  # train_every_s after the annotator began: a round, queue empty or not
    annotator.tick()
    version, state = annotator.reward_model()
    assert version == 1 and state is not None
    now[0] = 30.0
    annotator.tick()
    assert annotator.reward_model()[0] == 1  # no new label since: no round


def test_tick_backs_off_a_failing_judge_doubling_the_wait(tmp_path: Path) -> None:
    now = [0.0]
    cfg = _cfg()
    cfg.judge.backoff_s = 1.0
    annotator = _annotator(tmp_path, cfg, clock=lambda: now[0])
    judge = annotator.judge
    assert isinstance(judge, RecordingJudge)
    judge.fail = True
    annotator.submit(["You kill the newt!"])

    def errors() -> float:
        return annotator.stats()["judge_errors_total"]

    annotator.tick()  # t 0: asked, failed: the next ask at t 1 (backoff_s)
    assert errors() == 1
    now[0] = 0.4
    assert annotator.tick() == pytest.approx(0.5)  # idle cap; the backoff has 0.6 s left
    now[0] = 0.9
    assert annotator.tick() == pytest.approx(0.1) and errors() == 1
    now[0] = 1.0
    annotator.tick()  # asked, failed again: the wait doubles, the next ask at t 1 + 2
    assert errors() == 2
    now[0] = 2.9
    annotator.tick()
    assert errors() == 2
    judge.fail = False
    now[0] = 3.0
    annotator.tick()
    assert errors() == 2 and annotator.store.get("You kill the newt!") is True
    assert annotator.consecutive_errors == 0 and judge.asked == ["You kill the newt!"]


def test_a_reopened_store_is_fitted_at_the_first_tick(tmp_path: Path) -> None:
    """A restarted annotator (Ray) or a resumed run (--local) publishes a model from the
    labels it reloaded without waiting for new ones."""
    first = _annotator(tmp_path)
    first.submit(captions(5, seed=7))
    _drain(first)
    first.flush()
    assert first.reward_model() == (0, None)  # 5 labels, train_every_labels 1000: no round
    second = _annotator(tmp_path)
    assert second.reward_model() == (0, None)
    second.tick()
    version, state = second.reward_model()
    assert version == 1 and state is not None
