"""The run summary's verdict against a random agent (cluster.summary), and the unbiased
random baseline it compares with (RolloutWorker.play_random)."""

from __future__ import annotations

import math

import pytest

from cluster.counters import Counters
from cluster.summary import success_z, summarise


def test_success_z_known_values() -> None:
    # pooled p = 0.3, se = sqrt(0.3 * 0.7 * (1/100 + 1/100)) = 0.0648074
    assert success_z(0.5, 100, 0.1, 100) == pytest.approx(0.4 / math.sqrt(0.0042))
    assert success_z(0.0, 100, 0.0, 500) == 0.0  # nobody succeeds: no evidence either way
    assert success_z(0.2, 50, 0.0, 500) == pytest.approx(
        0.2 / math.sqrt((10 / 550) * (540 / 550) * (1 / 50 + 1 / 500)))
    assert success_z(0.5, 0, 0.1, 10) == 0.0


def _summary(returns: list[float], successes: list[bool], baseline: dict) -> dict:
    c = Counters(recent_returns=returns, recent_successes=successes, episodes=len(returns))
    return summarise(c, baseline, policy_version=1, stop_reason="budget", failed=False)


def test_goal_tasks_are_judged_by_success_not_return() -> None:
    # The pilot's trap: a higher return (no longer paying the step penalty) with no success.
    baseline = {"mean_return": -0.5, "ci95": 0.01, "success_rate": 0.0, "episodes": 500}
    s = _summary([-0.05] * 100, [False] * 100, baseline)
    assert s["beats_random_by"] == "success_rate" and not s["beats_random"]
    assert s["beats_random_z"] == 0.0
    s = _summary([0.9] * 20 + [-0.05] * 80, [True] * 20 + [False] * 80, baseline)
    assert s["beats_random"] and s["beats_random_z"] == round(success_z(0.2, 100, 0.0, 500), 2)


def test_tasks_without_a_goal_are_judged_by_return() -> None:
    baseline = {"mean_return": 10.0, "ci95": 1.0, "success_rate": None, "episodes": 200}
    s = _summary([20.0, 22.0, 18.0, 20.0], [], baseline)
    assert s["final_success_rate"] is None and "random_success_rate" not in s
    assert s["beats_random_by"] == "return" and s["beats_random"]


def test_random_baseline_plays_each_envs_first_episodes() -> None:
    from tests.helpers.rollouts import small_worker

    worker = small_worker("oniray/Corridor-v0", envs=4)
    stats = worker.play_random(episodes_per_env=3)
    assert len(stats.episode_returns) == 12 == len(stats.episode_successes)
    assert stats.env_steps == sum(stats.episode_lengths)  # no step outside a counted episode
    more = worker.play_random(episodes_per_env=1, min_steps=stats.env_steps + 1)
    # Whole rounds only: every env plays as many episodes as the others.
    assert len(more.episode_returns) % 4 == 0 and more.env_steps >= stats.env_steps + 1
    assert len(more.episode_returns) > 4
    worker.close()


def test_report_headline_gives_the_verdict_with_the_measure_it_used() -> None:
    from cluster.report import _headline

    baseline = {"mean_return": -0.5, "ci95": 0.01, "success_rate": 0.0, "episodes": 500}
    goal = _summary([-0.05] * 100, [False] * 100, baseline)
    lines = _headline({**goal, "env_steps": 1000}, {})
    success_line = next(line for line in lines if line.startswith("Episodes reaching the goal"))
    assert "**0.0%**" in success_line and "does not beat** random" in success_line
    assert not any("beat" in line for line in lines if line.startswith("Final mean return"))


def test_curve_of_a_goal_task_adds_the_success_panel(tmp_path) -> None:
    import matplotlib.image

    from cluster.report import plot_curve

    rows = [{"env_steps": 1000 * i, "mean_return": 0.1 * i, "success_rate": 0.1 * i}
            for i in range(1, 6)]
    baseline = {"mean_return": 0.07, "ci95": 0.03, "success_rate": 0.07, "episodes": 256}
    plot_curve(rows, baseline, tmp_path / "goal.png")
    no_goal = [{**row, "success_rate": None} for row in rows]
    plot_curve(no_goal, {**baseline, "success_rate": None}, tmp_path / "score.png")
    goal_px = matplotlib.image.imread(tmp_path / "goal.png").shape
    score_px = matplotlib.image.imread(tmp_path / "score.png").shape
    assert (goal_px[1], score_px[1]) == (12 * 110, 7 * 110)  # two panels against one
