"""Unit tier: the driver's report, as pure functions (cluster.progress)."""

from __future__ import annotations

from cluster.counters import Counters
from cluster.progress import (
    ANNOTATOR_COLUMNS,
    LoopState,
    annotator_columns,
    clock,
    metrics_row,
    progress_line,
)
from learner.intrinsic import INTRINSIC_ZERO_FRACTION

LOOP = LoopState(sps=1234.4, policy_version=7, policy_lag=1.5, fragments_ready=3,
                 updates_queued=2, object_store_mb=12.5)


def counters() -> Counters:
    return Counters(env_steps_produced=4096, env_steps_trained=3072, env_steps_dropped=256,
                    fragments_dropped=1, updates=3, episodes=4, elapsed_s=3725.9,
                    recent_returns=[1.0, 2.0, 6.0], recent_lengths=[10, 20, 30],
                    recent_successes=[True, False, False, False])


def test_metrics_row_carries_counters_loop_losses_and_annotator_columns() -> None:
    row = metrics_row(counters(), LOOP, {"policy_loss": -0.25},
                      {"labels_total": 9.0, "reward_model_version_trained": 4})
    assert row["time_s"] == 3725.9 and row["env_steps"] == 4096
    assert row["env_steps_trained"] + row["env_steps_dropped"] == 3328
    assert row["mean_return"] == 3.0 and row["mean_length"] == 20.0
    assert row["success_rate"] == 0.25
    assert (row["sps"], row["policy_version"], row["policy_lag"]) == (1234.4, 7, 1.5)
    assert (row["fragments_ready"], row["updates_queued"], row["object_store_mb"]) == (3, 2, 12.5)
    assert row["learner_policy_loss"] == -0.25
    assert row["labels_total"] == 9.0 and row["reward_model_version_trained"] == 4


def test_metrics_row_before_any_episode_has_no_return_success_or_length() -> None:
    row = metrics_row(Counters(), LOOP, {}, {})
    assert row["mean_return"] is None and row["success_rate"] is None
    assert row["mean_length"] is None
    assert not any(key.startswith("learner_") for key in row)


def test_annotator_columns_rename_known_stats_and_ignore_the_rest() -> None:
    stats = {"store_labels": 120, "cache_hit_rate": 0.9, "canary_fpr": 0.0, "pid": 4242}
    row = annotator_columns(stats, reward_model_version_trained=5,
                            learner_losses={INTRINSIC_ZERO_FRACTION: 0.75})
    assert row == {"labels_total": 120.0, "judge_cache_hit_rate": 0.9, "canary_fpr": 0.0,
                   "reward_model_version_trained": 5, "intrinsic_sparsity": 0.75}
    assert set(ANNOTATOR_COLUMNS) >= {"store_labels", "cache_hit_rate", "canary_fpr"}


def test_annotator_columns_without_an_answer_keep_the_learners_side() -> None:
    row = annotator_columns(None, reward_model_version_trained=2,
                            learner_losses={INTRINSIC_ZERO_FRACTION: 0.5})
    assert row == {"reward_model_version_trained": 2, "intrinsic_sparsity": 0.5}


def test_progress_line() -> None:
    no_goal = counters()
    no_goal.recent_successes = []  # NetHackScore: no success rate, so the return leads
    line = progress_line(metrics_row(no_goal, LOOP, {}, {}), {"mean_return": -1.234})
    assert line == ("[01:02:05] steps      4,096 | sps   1,234 | lag  1.5 | return   3.00 "
                    "(random -1.23) | episodes 4 | updates 3 | dropped 1")
    assert "return    n/a |" in progress_line(metrics_row(Counters(), LOOP, {}, {}), None)


def test_clock_counts_hours_past_a_day() -> None:
    assert clock(0.9) == "00:00:00"
    assert clock(26 * 3600 + 61) == "26:01:01"


def test_progress_line_of_a_goal_task_leads_with_success_against_random() -> None:
    c = counters()
    c.recent_successes = [True, False, False, False]
    line = progress_line(metrics_row(c, LOOP, {}, {}),
                         {"mean_return": -1.234, "success_rate": 0.07})
    assert ("| success 0.25 (random 0.07) | return   3.00 | episodes 4 |") in line
    # a baseline of an old checkpoint, without a success rate: the agent's alone
    line = progress_line(metrics_row(c, LOOP, {}, {}), {"mean_return": 0.0})
    assert "| success 0.25 | return   3.00 |" in line
