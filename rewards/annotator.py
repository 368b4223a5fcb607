"""The annotator: captions in, judge labels and a distilled reward model out (no Ray here).

Consumes captions (the ``message`` column of fragments) via :meth:`Annotator.submit`. Emits
labels into the :class:`LabelStore` and, every ``train_every_labels`` new labels, a retrained
reward model as ``(version, state)`` from :meth:`Annotator.reward_model`.

The judge is slow (an LLM: ~seconds per batch) and the game repeats itself, so:

* every caption is asked at most once: ``submit`` drops captions that are labelled (in the
  store, which survives restarts) or pending (queued or being asked);
* the queue is bounded (``queue_size``): under a burst of new captions the lowest-priority ones
  are shed and counted, and are asked later if the game shows them again. Priority is newest
  first by default (ONI), since new captions are what the current policy reaches;
* an unparseable answer is never a label: the caption is re-queued at the front up to
  ``judge.max_retries`` times, then dropped and counted (a later submit may ask it again);
* no answer at all (server down, HTTP 5xx, a garbage body, the judge's breaker open) is an
  outage, not a parse failure: the captions wait at the front of the queue without spending
  retries, counted in ``unanswered``, while the service backs off;
* a caption that sanitises to nothing is labelled not helpful without asking (as the judges
  would answer it).

:meth:`Annotator.tick` alone decides when a batch is asked, the judge is backed off, the
reward model retrains and the store is flushed; both runtimes drive the service with it (the
Ray actor's labelling thread, :func:`serve_until_stopped`; the local runtime after each command
it carries out), so the two cannot disagree on when a reward model appears.

Thread-safe: the actor shell calls ``submit`` and ``stats`` while a thread runs ``tick``; the
lock is never held while the judge works or the model trains.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rewards.canary import CanaryMonitor
from rewards.config import RewardsConfig
from rewards.judges.base import Judge, Verdict
from rewards.judges.text import compare_both_orders
from rewards.label_store import LabelStore
from rewards.models import make_reward_model
from rewards.parse import sanitize_caption

logger = logging.getLogger(__name__)

_RATE_WINDOW_S = 60.0  # labels/s is measured over this trailing window
# decode_message turns bytes that are not UTF-8 (NLE's message buffer) into this character.
_REPLACEMENT = "\ufffd"
_RECENT_LATENCIES = 1024  # judge latencies kept for drain_latencies() between metric scrapes
# The longest a tick says nothing is due: a waiting thread looks again at least this often.
_MAX_IDLE_S = 0.5
_MAX_BACKOFF_DOUBLINGS = 6  # a failing judge is asked again after at most 64 * judge.backoff_s


class Annotator:
    """Dedup, queue, ask the judge, store the labels, retrain the reward model."""

    def __init__(
        self,
        cfg: RewardsConfig,
        *,
        judge: Judge,
        store: LabelStore,
        canary: CanaryMonitor | None = None,
        seed: int = 0,
        train_in_step: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``train_in_step=False``: a round (:meth:`begin_round`) only sets ``train_due``
        and a thread running :func:`run_trainer` fits, so labelling goes on during a fit (a
        fit of the char-CNN takes about as long as a few LLM batches)."""
        self.cfg = cfg
        self.judge = judge
        self.store = store
        if canary is None and cfg.annotator.canary_every > 0:
            canary = CanaryMonitor(
                every=cfg.annotator.canary_every,
                max_fpr=cfg.annotator.canary_max_fpr,
                judge_name=judge.name,
            )
        self.canary = canary
        self.model = make_reward_model(cfg.model, label_threshold=cfg.judge.threshold)
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # Set when a batch may have become due sooner than the last tick said (the first caption
        # queued, a batch filled) or to end a wait (stop); a thread between ticks waits on it.
        self.wake = threading.Event()
        self._full = False  # a full judge batch was queued at the last look
        self._queued_since: float | None = None  # when the queue last became non-empty
        # Bounded by annotator.queue_size: a judge slower than the game must not grow memory.
        self._queue: deque[str] = deque()
        self._failures: dict[str, int] = {}  # pending caption (queued or asked) -> failed asks
        # The annotator owns the reward-model version; it continues the count persisted with
        # the labels, so a restarted annotator never publishes a version already handed out.
        self._version_base = store.reward_model_version
        self._published: tuple[int, dict[str, Any] | None] = (self._version_base, None)
        self._since_fit = 0  # labels stored since the last round began
        self._last_round = self._clock()
        if self.model is not None and len(store):
            # A reopened store: its labels are due a round at once, so a restarted annotator
            # (or a resumed run) publishes a model without waiting for new labels.
            self._since_fit, self._last_round = len(store), float("-inf")
        self._last_flush = self._clock()
        self._backoff_until = float("-inf")  # no batch is asked before it (a failing judge)
        self.train_in_step = train_in_step
        self.train_due = threading.Event()
        self._fit_lock = threading.Lock()
        self._rate: deque[tuple[float, int]] = deque()
        self._latencies: deque[float] = deque(maxlen=_RECENT_LATENCIES)
        self._last_fit: dict[str, float] = {}
        self.consecutive_errors = 0
        self._n: dict[str, float] = dict.fromkeys(
            (
                "submitted", "cache_hits", "empty_captions", "shed", "labels", "judge_calls",
                "judge_errors", "unanswered", "judge_latency_sum_s", "parse_failures",
                "gave_up", "truncated", "invalid_utf8",
                "preferences", "preference_failures", "fits", "soft_labels", "prob_sum",
            ),
            0.0,
        )  # fmt: skip

    # -- intake ----------------------------------------------------------------------------

    def submit(self, captions: Sequence[str] | pa.Array | pa.ChunkedArray) -> int:
        """Queue the captions that are neither labelled nor pending; return how many."""
        if isinstance(captions, pa.Array | pa.ChunkedArray):
            captions = pc.unique(captions).drop_null().to_pylist()  # only distinct texts cross
        queued = 0
        with self._lock:
            for caption in captions:
                if not caption or caption.isspace():
                    self._n["empty_captions"] += 1  # never rewarded: nothing to ask
                    continue
                self._n["submitted"] += 1
                if caption in self._failures or caption in self.store:
                    self._n["cache_hits"] += 1
                    continue
                self._failures[caption] = 0
                queued += self._enqueue(caption)
            self._note_queue()
        return queued

    def _note_queue(self) -> None:
        """Update the queue's age and wake a waiting thread when a batch may be due sooner
        than it thinks; call with the lock held."""
        if not self._queue:
            self._queued_since, self._full = None, False
            return
        if self._queued_since is None:  # its batch wait starts (with batch_wait_s 0: due now)
            self._queued_since = self._clock()
            self.wake.set()
        full = len(self._queue) >= self.cfg.judge.batch_size
        if full and not self._full:
            self.wake.set()
        self._full = full

    def seconds_until_batch(self) -> float | None:
        """None with nothing queued; else how long the loop should still wait for a fuller
        batch (0: ask now, since a full batch is queued or the oldest caption waited
        ``annotator.batch_wait_s``)."""
        with self._lock:
            if not self._queue:
                return None
            if len(self._queue) >= self.cfg.judge.batch_size or self._queued_since is None:
                return 0.0
            waited = self._clock() - self._queued_since
            return max(0.0, self.cfg.annotator.batch_wait_s - waited)

    def _enqueue(self, caption: str) -> int:
        """Append by priority and shed beyond the bound; 1 if ``caption`` stayed queued."""
        self._queue.append(caption)
        if len(self._queue) <= self.cfg.annotator.queue_size:
            return 1
        newest_first = self.cfg.annotator.priority == "newest"
        shed = self._queue.popleft() if newest_first else self._queue.pop()
        del self._failures[shed]
        self._n["shed"] += 1
        return int(shed != caption)

    def _take_batch(self) -> list[str]:
        with self._lock:
            n = min(self.cfg.judge.batch_size, len(self._queue))
            newest_first = self.cfg.annotator.priority == "newest"
            batch = [self._queue.pop() if newest_first else self._queue.popleft() for _ in range(n)]
            self._queued_since = None  # what is left waits afresh for a fuller batch
            self._note_queue()
            return batch

    def _requeue_failed(self, captions: Sequence[str], *, use_retry: bool = True) -> None:
        """Failed captions go back to the front of the queue, until they run out of retries.

        A judge outage (``use_retry=False``) is not the captions' fault: they wait, with the
        loop backing off, instead of spending retries and being dropped.
        """
        with self._lock:
            for caption in captions:
                self._failures[caption] += int(use_retry)
                if self._failures[caption] > self.cfg.judge.max_retries:
                    del self._failures[caption]
                    self._n["gave_up"] += 1
                elif self.cfg.annotator.priority == "newest":
                    self._queue.append(caption)
                else:
                    self._queue.appendleft(caption)
            self._note_queue()

    # -- labelling -------------------------------------------------------------------------

    def step(self) -> int:
        """Label one batch now, due or not; return the number of new labels stored.
        :meth:`tick` calls it when a batch is due."""
        batch = self._take_batch()
        if not batch:
            return 0
        limit = self.cfg.judge.max_caption_chars
        clean = {c: sanitize_caption(c, limit) for c in batch}
        with self._lock:  # bad input is handled, and counted so that it is seen
            self._n["truncated"] += sum(len(c) > limit for c in batch)
            self._n["invalid_utf8"] += sum(_REPLACEMENT in c for c in batch)
        verdicts = [Verdict(c, False, raw="empty after sanitising") for c in batch if not clean[c]]
        asked = [c for c in batch if clean[c]]
        answers = self._ask(asked, clean) if asked else []
        if answers is None:  # the judge failed: the captions wait for its recovery
            self._requeue_failed(asked, use_retry=False)
        else:
            unanswered = [v.caption for v in answers if not v.answered]
            verdicts += [v for v in answers if v.answered]
            if unanswered:  # no answer is an outage, not a parse failure: no retry spent
                with self._lock:
                    self._n["unanswered"] += len(unanswered)
                self._requeue_failed(unanswered, use_retry=False)
        parsed = [v for v in verdicts if v.label is not None]
        # Store first, then clear pending: a caption is always in one of the two for submit().
        added = self.store.add(parsed, judge=self.judge.name)
        unparseable = [v.caption for v in verdicts if v.label is None]
        with self._lock:
            for v in parsed:
                self._failures.pop(v.caption, None)
            # Every parsed caption was pending, so none was stored before: added == len(parsed).
            probs = [v.prob for v in parsed if v.prob is not None]
            self._n["soft_labels"] += len(probs)
            self._n["prob_sum"] += sum(probs)
            self._n["labels"] += added
            self._n["parse_failures"] += len(unparseable)
            self._rate.append((self._clock(), added))
        if unparseable:
            self._requeue_failed(unparseable)
        self._since_fit += added
        return added

    def round_due(self) -> bool:
        """A retrain is due: enough new labels, or some new labels and enough time since the
        last round (a task with few distinct messages would otherwise never train)."""
        if self.model is None or self._since_fit == 0:
            return False
        model = self.cfg.model
        return (self._since_fit >= model.train_every_labels
                or self._clock() - self._last_round >= model.train_every_s)

    def _ask(self, captions: list[str], clean: dict[str, str]) -> list[Verdict] | None:
        """The judge's verdicts on the captions' sanitised texts (plus canaries, taken back
        out), keyed by the original captions; None if the judge raised."""
        distinct = list(dict.fromkeys(clean[c] for c in captions))  # in priority order
        to_judge = distinct + (self.canary.canaries_for(len(distinct)) if self.canary else [])
        try:
            answers = self._timed(lambda: self.judge.label(to_judge))
        except Exception:
            logger.exception("judge %r failed on a batch of %d", self.judge.name, len(distinct))
            with self._lock:
                self._n["judge_errors"] += 1
            self.consecutive_errors += 1
            return None
        # A judge that answers nothing (its breaker open, its server down) is failing as surely
        # as one that raises: count it so the loop backs off instead of spinning on the queue.
        if answers and not any(v.answered for v in answers):
            self.consecutive_errors += 1
        else:
            self.consecutive_errors = 0
        if self.canary:
            answers = self.canary.take(answers)
        # Matched by text, not position: the canary monitor may take any equal caption.
        by_clean = {v.caption: v for v in answers}
        missing = Verdict("", None, raw="no answer")
        return [dataclasses.replace(by_clean.get(clean[c], missing), caption=c) for c in captions]

    def _timed(self, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return call()
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._n["judge_calls"] += 1
                self._n["judge_latency_sum_s"] += elapsed
                self._latencies.append(elapsed)

    # -- the service: what is due, when ------------------------------------------------------

    def tick(self) -> float:
        """Do what is due now, once, and return for how long nothing else will be (seconds,
        at most half a second). What is due, in this order:

        * a judge batch: a full one, or a partial one whose oldest caption waited
          ``annotator.batch_wait_s``; none while backing off after the judge failed
          (``judge.backoff_s``, doubled for each consecutive failure up to 64x);
        * a reward-model round (:meth:`round_due`), looked for whether or not captions are
          queued: a task with few distinct messages labels them all within seconds, and its
          labels would otherwise never train a model;
        * a flush of the new labels to the store, every ``annotator.flush_interval_s``.

        The Ray actor's thread waits between ticks (:func:`serve_until_stopped`); the local
        runtime ticks after each command, so both decide by this one method."""
        self.wake.clear()  # first: a caption queued from here on ends the caller's next wait
        now = self._clock()
        waits = [_MAX_IDLE_S]
        until_batch = self.seconds_until_batch()
        if until_batch is not None:
            if now < self._backoff_until:
                waits.append(self._backoff_until - now)
            elif until_batch > 0:
                waits.append(until_batch)
            else:
                self.step()
                if self.consecutive_errors:
                    doublings = min(self.consecutive_errors - 1, _MAX_BACKOFF_DOUBLINGS)
                    self._backoff_until = self._clock() + self.cfg.judge.backoff_s * 2**doublings
                waits.append(0.0)  # more may be due at once: the next tick looks
        if self.round_due():
            self.begin_round()
        elif self.model is not None and self._since_fit:
            waits.append(self._last_round + self.cfg.model.train_every_s - now)
        flush_at = self._last_flush + self.cfg.annotator.flush_interval_s
        if self._clock() >= flush_at:
            self.flush()
            self._last_flush = self._clock()
        else:
            waits.append(flush_at - now)
        return max(0.0, min(waits))

    # -- reward model ----------------------------------------------------------------------

    def begin_round(self) -> None:
        """A training round: ask new preference pairs (ranking, on the judge's thread, since
        a judge need not be thread-safe), then fit here or wake the trainer thread."""
        self._since_fit = 0
        self._last_round = self._clock()
        if self.model is not None and self.model.kind == "ranking":
            self._ask_preferences()
        if self.train_in_step:
            self.retrain()
        else:
            self.train_due.set()

    def retrain(self) -> dict[str, float]:
        """Fit the reward model on every label and preference so far, publish its state and
        return the fit's metrics."""
        if self.model is None:
            return {}
        with self._fit_lock:
            metrics = self.model.fit(
                labels=self.store.labels(), preferences=self.store.preferences()
            )
            state = self.model.state()
        version = self._version_base + self.model.version
        self.store.save_reward_model_version(version)
        with self._lock:
            self._published = (version, state)
            self._last_fit = metrics
            self._n["fits"] += 1
        return metrics

    def _ask_preferences(self) -> None:
        pairs = self._new_pairs(self.cfg.model.pairs_per_round)
        if not pairs:
            return
        try:
            answers = self._timed(lambda: compare_both_orders(self.judge, pairs))
        except Exception:
            logger.exception("judge %r failed on %d preference pairs", self.judge.name, len(pairs))
            with self._lock:
                self._n["judge_errors"] += 1
            return
        added = self.store.add_preferences(answers, judge=self.judge.name)
        with self._lock:
            self._n["preferences"] += added
            self._n["preference_failures"] += len(pairs) - added

    def _new_pairs(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` random pairs of labelled captions that were never compared."""
        known = self.store.labels().column("caption").to_pylist()
        if len(known) < 2:
            return []
        done = self.store.compared_pairs()
        pairs: list[tuple[str, str]] = []
        for _ in range(4 * n):  # rejection sampling; gives up early on a nearly complete set
            a, b = self._rng.sample(known, 2)
            if frozenset((a, b)) not in done:
                done.add(frozenset((a, b)))
                pairs.append((a, b))
                if len(pairs) == n:
                    break
        return pairs

    def reward_model(self) -> tuple[int, dict[str, Any] | None]:
        """(version, state) of the newest reward model; (persisted version, None) before this
        annotator's first fit."""
        with self._lock:
            return self._published

    # -- bookkeeping -----------------------------------------------------------------------

    def queue_depth(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self) -> int:
        return self.store.flush()

    def drain_latencies(self) -> list[float]:
        """Judge latencies (seconds) since the last drain, for a histogram metric."""
        with self._lock:
            out = list(self._latencies)
            self._latencies.clear()
            return out

    def stats(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            while self._rate and self._rate[0][0] < now - _RATE_WINDOW_S:
                self._rate.popleft()
            span = max(now - self._rate[0][0], 1.0) if self._rate else 1.0
            out = {f"{k}_total": v for k, v in self._n.items()
                   if k not in ("judge_latency_sum_s", "prob_sum")}
            out |= {
                "labels_per_s": sum(n for _, n in self._rate) / span,
                "store_labels": float(len(self.store)),
                "queue_depth": float(len(self._queue)),
                "pending": float(len(self._failures)),
                "cache_hit_rate": self._n["cache_hits"] / max(self._n["submitted"], 1.0),
                # Labels with the judge's P(helpful) (logprob scoring), and its mean over them:
                # a mean drifting to 0 or 1 shows a judge that stopped hedging (or a prompt
                # that broke); NaN until the first soft label.
                "soft_label_fraction": self._n["soft_labels"] / max(self._n["labels"], 1.0),
                "judge_prob_mean": (self._n["prob_sum"] / self._n["soft_labels"]
                                    if self._n["soft_labels"] else float("nan")),
                "judge_latency_sum_s": self._n["judge_latency_sum_s"],
                "judge_latency_count": self._n["judge_calls"],
                "reward_model_version": float(self._published[0]),
                "reward_model_accuracy": self._last_fit.get("accuracy", float("nan")),
                "reward_model_fit_seconds": self._last_fit.get("fit_seconds", 0.0),
            }
        if self.canary:
            out |= self.canary.stats()
        # The backend's own counters (transport failures by kind, circuit state), prefixed.
        out |= {f"judge_{k}": v for k, v in self.judge.stats().items()}
        return out


def serve_until_stopped(annotator: Annotator, stop: threading.Event) -> None:
    """The Ray actor's labelling thread: :meth:`Annotator.tick` until ``stop`` is set, waiting
    between ticks as long as the tick says nothing is due, or until a caption wakes it
    (``annotator.wake``); flush the store on the way out. ``stop`` takes effect within half
    a second, at once when the caller also sets ``annotator.wake``."""
    while not stop.is_set():
        wait = annotator.tick()
        if wait > 0:
            annotator.wake.wait(timeout=wait)
    annotator.flush()


def run_trainer(annotator: Annotator, stop: threading.Event) -> None:
    """Fit the reward model whenever a round is due, until ``stop`` is set."""
    while not stop.is_set():
        if annotator.train_due.wait(timeout=0.5):
            annotator.train_due.clear()
            try:
                annotator.retrain()
            except Exception:  # a failed fit keeps the last published model; labelling goes on
                logger.exception("reward model fit failed")
