"""Every Prometheus metric oniray records: one catalog, shared by every component.

Consumes: nothing at import (declaring a metric only registers it in this process's default
registry). Emits: exposition text via `metrics_snapshot()` in every process; the driver merges
them into one HTTP endpoint (`cluster.metrics`). The catalog sits in the lowest layer because
every component records into it.

Every metric carries the labels `role` and `actor_id` (build them with `component_labels`); a few
carry one more label, listed in the table.

| constant                  | name                                     | type      | extra label |
|---------------------------|------------------------------------------|-----------|-------------|
| ENV_STEPS                 | oniray_env_steps_total                   | counter   |             |
| ENV_STEPS_PER_SECOND      | oniray_env_steps_per_second              | gauge     |             |
| EPISODE_RETURN            | oniray_episode_return                    | histogram |             |
| EPISODE_LENGTH            | oniray_episode_length_steps              | histogram |             |
| FRAGMENTS_PRODUCED        | oniray_fragments_produced_total          | counter   |             |
| FRAGMENTS_CONSUMED        | oniray_fragments_consumed_total          | counter   |             |
| FRAGMENTS_DROPPED         | oniray_fragments_dropped_total           | counter   | reason      |
| POLICY_LAG                | oniray_policy_lag_versions               | histogram |             |
| POLICY_VERSION            | oniray_policy_version                    | gauge     |             |
| LEARNER_LOSS              | oniray_learner_loss                      | gauge     | loss        |
| GRAD_NORM                 | oniray_learner_grad_norm                 | gauge     |             |
| UPDATE_STAT               | oniray_learner_update_stat               | gauge     | stat        |
| UPDATE_SECONDS            | oniray_learner_update_seconds            | histogram |             |
| LEARNER_UPDATES           | oniray_learner_updates_total             | counter   |             |
| WEIGHT_SYNC_SECONDS       | oniray_weight_sync_seconds               | histogram |             |
| WEIGHT_SYNC_BYTES         | oniray_weight_sync_bytes_total           | counter   |             |
| QUEUE_DEPTH               | oniray_queue_depth                       | gauge     | queue       |
| JUDGE_LABELS              | oniray_judge_labels_total                | counter   |             |
| JUDGE_LABELS_PER_SECOND   | oniray_judge_labels_per_second           | gauge     |             |
| JUDGE_LATENCY_SECONDS     | oniray_judge_latency_seconds             | histogram |             |
| JUDGE_CACHE_HIT_RATIO     | oniray_judge_cache_hit_ratio             | gauge     |             |
| JUDGE_PARSE_FAILURES      | oniray_judge_parse_failures_total        | counter   |             |
| CANARY_FALSE_POSITIVES    | oniray_judge_canary_false_positive_ratio | gauge     | kind        |
| JUDGE_GUARD_BLOCKED       | oniray_judge_guard_blocked_total         | counter   | kind        |
| JUDGE_GUARD_REDACTED      | oniray_judge_guard_redacted_total        | counter   | kind        |
| JUDGE_CIRCUIT_STATE       | oniray_judge_circuit_state               | gauge     |             |
| JUDGE_REQUEST_FAILURES    | oniray_judge_request_failures_total      | counter   | kind        |
| JUDGE_UNANSWERED          | oniray_judge_unanswered_total            | counter   |             |
| REWARD_MODEL_VERSION      | oniray_reward_model_version              | gauge     |             |
| REWARD_MODEL_ACCURACY     | oniray_reward_model_accuracy_ratio       | gauge     |             |
| INTRINSIC_REWARD_MEAN     | oniray_intrinsic_reward_mean             | gauge     |             |
| INTRINSIC_REWARD_SPARSITY | oniray_intrinsic_reward_zero_ratio       | gauge     |             |
| OBJECT_STORE_USED_BYTES   | oniray_object_store_used_bytes           | gauge     |             |
| ACTOR_RESTARTS            | oniray_actor_restarts_total              | counter   |             |

Use:
    labels = component_labels(role="rollout", actor_id="3")
    ENV_STEPS.labels(**labels).inc(n_steps)
    with UPDATE_SECONDS.labels(**labels).time(): ...
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `_created` series double the series count of every counter and histogram and no dashboard
# reads them; the switch is process-global, which is fine because this module owns all metrics.
disable_created_metrics()

ROLES = ("driver", "rollout", "learner", "annotator", "reward_model")
COMPONENT_LABELS = ("role", "actor_id")
DROP_REASONS = ("policy_lag", "actor_lost", "queue_full", "object_lost")
LOSS_TERMS = ("policy", "value", "entropy", "total")

# NetHack score-task returns: most early agents score < 1k, strong ones reach tens of thousands.
# No negative bound: prometheus_client then drops `_sum`, which the mean-return panels need;
# a negative return (step penalties in other tasks) lands in the le="0" bucket.
_RETURN_BUCKETS = (0, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 25000, 50000)
# Episodes end in a few hundred steps (early death) up to NLE's 100k-step cap.
_LENGTH_BUCKETS = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000)
_LAG_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
_UPDATE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# One LLM judge call: cache hits are sub-10ms, a cold 8B-model generation is seconds.
_JUDGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

_L = COMPONENT_LABELS

# --- rollouts -----------------------------------------------------------------------------
ENV_STEPS = Counter("oniray_env_steps_total", "Environment steps taken.", _L)
ENV_STEPS_PER_SECOND = Gauge(
    "oniray_env_steps_per_second", "Environment steps per second, recent window.", _L
)
EPISODE_RETURN = Histogram(
    "oniray_episode_return", "Extrinsic return of finished episodes.", _L, buckets=_RETURN_BUCKETS
)
EPISODE_LENGTH = Histogram(
    "oniray_episode_length_steps", "Length of finished episodes.", _L, buckets=_LENGTH_BUCKETS
)
FRAGMENTS_PRODUCED = Counter(
    "oniray_fragments_produced_total", "Trajectory fragments put in the object store.", _L
)
FRAGMENTS_CONSUMED = Counter(
    "oniray_fragments_consumed_total", "Trajectory fragments used in a learner update.", _L
)
FRAGMENTS_DROPPED = Counter(
    "oniray_fragments_dropped_total", "Fragments discarded, by reason.", (*_L, "reason")
)
POLICY_LAG = Histogram(
    "oniray_policy_lag_versions",
    "Learner version minus the version that generated a consumed fragment.",
    _L,
    buckets=_LAG_BUCKETS,
)
POLICY_VERSION = Gauge("oniray_policy_version", "Policy weights version in use.", _L)

# --- learner ------------------------------------------------------------------------------
LEARNER_LOSS = Gauge("oniray_learner_loss", "Last update's loss, by term.", (*_L, "loss"))
GRAD_NORM = Gauge("oniray_learner_grad_norm", "Global gradient norm before clipping.", _L)
# An update's size (stat: kl, clip_fraction, grad_norm_clipped, mean_value,
# explained_variance, advantage_mean, advantage_std, lr, ...; learner.appo's keys).
UPDATE_STAT = Gauge(
    "oniray_learner_update_stat", "Last update's size and the critic's fit, by statistic.",
    (*_L, "stat"),
)
UPDATE_SECONDS = Histogram(
    "oniray_learner_update_seconds", "Wall time of one learner update.", _L,
    buckets=_UPDATE_BUCKETS,
)
LEARNER_UPDATES = Counter("oniray_learner_updates_total", "Learner updates applied.", _L)
WEIGHT_SYNC_SECONDS = Histogram(
    "oniray_weight_sync_seconds", "Wall time to publish or fetch policy weights.", _L,
    buckets=_SYNC_BUCKETS,
)
WEIGHT_SYNC_BYTES = Counter(
    "oniray_weight_sync_bytes_total", "Bytes of policy weights published or fetched.", _L
)

# --- annotator, judge and reward models ---------------------------------------------------
QUEUE_DEPTH = Gauge("oniray_queue_depth", "Items waiting in a bounded queue.", (*_L, "queue"))
JUDGE_LABELS = Counter("oniray_judge_labels_total", "Messages labelled by the LLM judge.", _L)
JUDGE_LABELS_PER_SECOND = Gauge(
    "oniray_judge_labels_per_second", "Judge labels per second, recent window.", _L
)
JUDGE_LATENCY_SECONDS = Histogram(
    "oniray_judge_latency_seconds", "Latency of one judge request.", _L, buckets=_JUDGE_BUCKETS
)
JUDGE_CACHE_HIT_RATIO = Gauge(
    "oniray_judge_cache_hit_ratio", "Fraction of messages answered from the label cache.", _L
)
JUDGE_PARSE_FAILURES = Counter(
    "oniray_judge_parse_failures_total", "Judge responses that could not be parsed.", _L
)
# kind: "all", or a canary kind (rewards.canary.CANARY_KIND_NAMES: punctuation, reasoning, ...).
CANARY_FALSE_POSITIVES = Gauge(
    "oniray_judge_canary_false_positive_ratio",
    "Fraction of known-negative canary messages the judge labelled positive, by canary kind "
    "(kind=all: every canary).",
    (*_L, "kind"),
)
# kind: what the judge guard found (rewards.judges.guard.BLOCK_KINDS / REDACT_KINDS).
JUDGE_GUARD_BLOCKED = Counter(
    "oniray_judge_guard_blocked_total",
    "Captions the judge guard labelled not helpful without asking the judge, by kind.",
    (*_L, "kind"),
)
JUDGE_GUARD_REDACTED = Counter(
    "oniray_judge_guard_redacted_total",
    "Agent-written texts hidden from the judge (read: engravings and read texts; name: "
    "object and monster names).",
    (*_L, "kind"),
)
# 0 closed, 1 half-open (one probe allowed), 2 open (failing fast): breaker.CIRCUIT_CODES.
JUDGE_CIRCUIT_STATE = Gauge(
    "oniray_judge_circuit_state",
    "Judge circuit breaker: 0 closed, 1 half-open, 2 open.",
    _L,
)
JUDGE_REQUEST_FAILURES = Counter(
    "oniray_judge_request_failures_total",
    "Failed judge HTTP attempts, by kind (timeout, connection, http_5xx, garbage, ...).",
    (*_L, "kind"),
)
JUDGE_UNANSWERED = Counter(
    "oniray_judge_unanswered_total",
    "Captions the judge gave no answer for (outage); they wait, they are not dropped.",
    _L,
)
REWARD_MODEL_VERSION = Gauge("oniray_reward_model_version", "Reward model version in use.", _L)
REWARD_MODEL_ACCURACY = Gauge(
    "oniray_reward_model_accuracy_ratio", "Reward model accuracy on held-out judge labels.", _L
)
INTRINSIC_REWARD_MEAN = Gauge(
    "oniray_intrinsic_reward_mean", "Mean intrinsic reward per step, recent window.", _L
)
INTRINSIC_REWARD_SPARSITY = Gauge(
    "oniray_intrinsic_reward_zero_ratio", "Fraction of steps with zero intrinsic reward.", _L
)

# --- cluster ------------------------------------------------------------------------------
OBJECT_STORE_USED_BYTES = Gauge(
    "oniray_object_store_used_bytes", "Ray object store bytes in use on this node.", _L
)
ACTOR_RESTARTS = Counter("oniray_actor_restarts_total", "Actors restarted after a failure.", _L)


def component_labels(*, role: str, actor_id: str | int) -> dict[str, str]:
    """The two labels every oniray metric carries; unknown roles fail loudly (dashboards
    filter on the role names in ROLES)."""
    if role not in ROLES:
        raise ValueError(f"unknown metrics role {role!r}; expected one of {ROLES}")
    return {"role": role, "actor_id": str(actor_id)}


def metrics_snapshot() -> bytes:
    """This process's metrics as Prometheus exposition text; components return it to the driver."""
    return generate_latest(REGISTRY)
