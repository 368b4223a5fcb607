"""The arms bench's bookkeeping (bench/learning_task.py): run keys, resuming, result files per
task, and the statistics of its report (bench/stats.py) on hand-computed values. No training
here: the bench itself is run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import learning_task as lb
from bench import stats


def _plan(shared: list[str] | None = None) -> dict:
    return lb.settings("keyroom-s5", "count", minutes=1.0, steps=1000, shared=shared or [])


def test_settings_hash_names_what_a_run_computes() -> None:
    assert lb.settings_hash(_plan(["a=1", "b=2"])) == lb.settings_hash(_plan(["b=2", "a=1"]))
    assert lb.settings_hash(_plan()) != lb.settings_hash(_plan(["learner.lr=1e-3"]))
    count, extrinsic = _plan(), lb.settings("keyroom-s5", "extrinsic", minutes=1.0, steps=1000,
                                            shared=[])
    assert lb.settings_hash(count) != lb.settings_hash(extrinsic)
    cfg = lb.config_for(count, seed=3)
    assert cfg.rewards.model.kind == "count" and not cfg.rewards.annotator.enabled
    assert cfg.env.id == "MiniHack-KeyRoom-S5-v0" and cfg.env.penalty_step == 0.0
    assert cfg.rewards.judge.embedding.negatives == "unhelpful_everywhere"  # oni.yaml's
    assert cfg.run.seed == 3 and cfg.rewards.intrinsic_coef == 0.4


def test_steps_to_exceed_and_bands_known_values() -> None:
    curve = [{"env_steps": 100, "success_rate": None}, {"env_steps": 200, "success_rate": 0.1},
             {"env_steps": 300, "success_rate": 0.3}, {"env_steps": 400, "success_rate": 0.6}]
    assert lb.steps_to_exceed(curve, 0.1) == 300  # exceeds, not reaches
    assert lb.steps_to_exceed(curve, 0.5) == 400 and lb.steps_to_exceed(curve, 0.9) is None
    # A run that learnt and lost it: its peak, not its last report.
    collapsed = [*curve, {"env_steps": 500, "success_rate": 0.0}]
    assert lb.peak_success(collapsed) == 0.6 and lb.peak_success(curve[:1]) is None
    # Two seeds: Student's t(0.975, 1) = 12.706, not the normal 1.96; sd 0.1414, n 2.
    mean, half = lb.band([0.2, 0.4, None])
    assert mean == pytest.approx(0.3) and half == pytest.approx(12.706 * 0.1414213 / 2 ** 0.5,
                                                                rel=1e-4)


@pytest.fixture
def few_resamples(monkeypatch) -> None:
    # The known answers below hold for any number of resamples; fewer keep the test fast.
    monkeypatch.setattr(stats, "BOOTSTRAP_REPS", 200)


def test_few_seed_statistics_known_values(few_resamples) -> None:
    assert stats.t_multiplier(5) == pytest.approx(2.776, abs=1e-3)  # 5 seeds
    assert stats.t_multiplier(3) == pytest.approx(4.303, abs=1e-3)
    assert stats.t_band([0.5]) == (0.5, 0.0) and stats.t_band([None])[0] != stats.t_band([None])[0]
    # IQM of 0, 1, 2, 3: the middle half, 1 and 2, averaged.
    iqm, low, high = stats.iqm_interval([0.0, 1.0, 2.0, 3.0])
    assert iqm == pytest.approx(1.5) and 0.0 <= low <= 1.5 <= high <= 3.0
    # Every run of X above every run of Y: P = 1, whatever the resample.
    assert stats.improvement([2.0, 3.0], [0.0, 1.0]) == (1.0, 1.0, 1.0)
    # Pairs (0,0) tie, (0,1) lose, (1,0) win, (1,1) tie: (0.5 + 0 + 1 + 0.5) / 4.
    assert stats.improvement([0.0, 1.0], [0.0, 1.0])[0] == pytest.approx(0.5)
    # Welch: means 2 and 5, variances 1 and 1, n 3 each: t = -3 / sqrt(2 / 3).
    t, p = stats.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert t == pytest.approx(-3 / (2 / 3) ** 0.5) and 0.01 < p < 0.05
    assert stats.welch([1.0, 1.0], [1.0, 1.0]) is None  # no spread: no test


def test_comparisons_count_a_seed_that_never_got_there_as_its_budget(few_resamples) -> None:
    def run(success: float, curve: list[float]) -> dict:
        points = [{"env_steps": 100 * (i + 1), "success_rate": v} for i, v in enumerate(curve)]
        return {"summary": {"final_success_rate": success, "env_steps": 400}, "curve": points}

    by_arm = {"retrieval": [run(0.8, [0.2, 0.6]), run(0.9, [0.6])],
              "extrinsic": [run(0.0, [0.0]), run(0.1, [0.1])]}
    assert lb.steps_to_threshold(by_arm["extrinsic"], 0.5) == [400.0, 400.0]
    (c,) = lb.comparisons(by_arm)
    assert (c["arm"], c["control"]) == ("retrieval", "extrinsic")
    assert c["success_difference"] == pytest.approx(0.8)
    assert c["success_improvement"] == (1.0, 1.0, 1.0)
    # steps to 50%: 200 and 100 against the budget, 400 and 400: fewer is better
    assert c["steps_to_0.5_improvement"][0] == 1.0
    # 2 seeds: t = 12.706, half-width 12.706 * 0.0707 / sqrt(2) = 0.635 on both sides, so
    # [0.215, 1.485] against [-0.585, 0.685]: the intervals overlap.
    assert c["success_intervals_apart"] == "overlap"


def test_bootstrap_intervals_are_the_same_for_the_same_runs(few_resamples) -> None:
    values = [0.1, 0.5, 0.3, 0.9, 0.2, 0.65, 0.05]
    np.random.seed(1)
    first = stats.iqm_interval(values), stats.improvement(values, values[::-1][:5])
    np.random.seed(2)  # whatever state numpy's global RNG is in
    assert (stats.iqm_interval(values), stats.improvement(values, values[::-1][:5])) == first
    np.random.seed(3)
    expected = np.random.random()
    np.random.seed(3)
    stats.iqm_interval(values)
    assert np.random.random() == expected  # ... and it is left as it was


def test_intervals_apart_says_which_way() -> None:
    assert lb.intervals_apart(0.9, 0.05, 0.1, 0.05) == "above"
    assert lb.intervals_apart(0.0, 0.0, 1.0, 0.0) == "below"  # MultiRoom's retrieval vs count
    assert lb.intervals_apart(0.5, 0.2, 0.2, 0.1) == "overlap"  # 0.3 == 0.3: touching
    assert lb._apart("below") == "yes, below" and lb._apart("overlap") == "no"
    assert lb._apart(None) == "n/a (1 seed)"


def test_a_run_the_new_default_learner_changes_gets_a_new_key() -> None:
    """Runs stored before 2026-12-08 ran with the plain learner: a command whose learner the
    new defaults change must not reuse them, one that pins the learner keeps its stored runs,
    and a stored run's config is the one it ran with."""
    plain = _plan()
    assert plain["learner"] == lb.STABILISED  # the defaults changed this run's learner
    legacy = {k: v for k, v in plain.items() if k != "learner"}  # as it was stored
    assert lb.settings_hash(plain) != lb.settings_hash(legacy)
    old = lb.config_for(legacy, seed=0).learner
    assert (old.normalize_advantages, old.advantage_std_floor, old.value_clip) == (False, 0.0,
                                                                                   None)
    new = lb.config_for(plain, seed=0).learner
    assert (new.normalize_advantages, new.advantage_std_floor, new.value_clip) == (True, 1.0,
                                                                                   1.0)
    pinned = ["learner.normalize_advantages=true", "learner.advantage_std_floor=1.0",
              "learner.value_clip=1.0"]
    for shared in (pinned, ["learner.preset=plain"], ["learner.preset=oni"]):
        assert "learner" not in _plan(shared), shared  # computes what it did: the old key
    # learner.preset=plain added to an older table's command finds its stored runs
    assert lb.settings_hash(_plan(["learner.preset=plain"])) == lb.settings_hash(legacy)
    rewnorm = ["learner.normalize_rewards=true"]
    stored = {k: v for k, v in _plan(rewnorm).items() if k != "learner"}
    assert lb.settings_hash(_plan(["learner.preset=plain", *rewnorm])) == lb.settings_hash(stored)
    assert lb.config_for(stored, seed=0).learner.value_clip is None
    assert lb.config_for(_plan(["learner.preset=oni"]), seed=0).learner.lr == 1e-4


def test_one_results_file_per_task_and_settings_and_renamed_keys_still_match() -> None:
    a = lb.default_stem("MiniHack-MultiRoom-N4-v0", minutes=None, steps=10, shared=["x=1"])
    assert a.name.startswith("learning-multiroom-n4-")
    assert a != lb.default_stem("MiniHack-MultiRoom-N4-v0", minutes=None, steps=20,
                                shared=["x=1"])
    assert a == lb.default_stem("MiniHack-MultiRoom-N4-v0", minutes=None, steps=10,
                                shared=["x=1"])
    assert lb.base_config("NetHackScore-v0").name == "default.yaml"
    assert lb.base_config("MiniHack-MultiRoom-N4-v0").name == "oni.yaml"
    # A run stored under the judge's old flat key is found with today's key (the learner it
    # ran with pinned: today's default learner would be another run).
    old = lb.settings("keyroom-s5", "count", minutes=1.0, steps=1000,
                      shared=["rewards.judge.embedding_goal_sentences=true",
                              "learner.preset=plain"])
    new = lb.settings("keyroom-s5", "count", minutes=1.0, steps=1000,
                      shared=["rewards.judge.embedding.goal_sentences=true",
                              "learner.preset=plain"])
    digest = lb.settings_hash(old)
    stored = {"runs": {lb.run_key("count", 0, digest): {
        "arm": "count", "seed": 0, "settings_hash": digest, "settings": old}}}
    migrated = lb.migrate(stored)
    assert list(migrated["runs"]) == [lb.run_key("count", 0, lb.settings_hash(new))]
    # No time cap: only the step budget finishes a run; with a cap, the cap does too.
    assert lb.finished({"minutes": None}, "step budget reached")
    assert not lb.finished({"minutes": None}, "time budget reached")
    assert lb.finished({"minutes": 5.0}, "time budget reached")
    assert not lb.finished({"minutes": 5.0}, "signal")


def test_message_labels_count_seeds_and_preference_wins() -> None:
    by_arm = {"retrieval": [{"labels": {"g - a key.": True, "It's a wall.": False}},
                            {"labels": {"g - a key.": False}}],
              "ranking": [{"preferences": {"g - a key.": [3, 4]}}]}
    labels = lb.message_labels(by_arm)
    assert labels["g - a key."] == {"retrieval": "1/2", "ranking": "wins 3/4"}
    assert labels["It's a wall."] == {"retrieval": "0/1"}


def test_a_stored_run_is_never_run_again(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bench"
    plan = _plan()
    digest = lb.settings_hash(plan)
    curve = [{"env_steps": 1000, "success_rate": 0.2, "mean_return": 1.0}]
    stored = {"arm": "count", "seed": 0, "settings_hash": digest, "settings": plan,
              "summary": {"final_success_rate": 0.2, "final_mean_return": 1.0,
                          "env_steps": 1000}, "curve": curve, "labels": {},
              "preferences": {}}
    out.with_suffix(".json").write_text(json.dumps(
        {"bench": "learning-minihack", "runs": {lb.run_key("count", 0, digest): stored}}))

    def must_not_train(*_args, **_kwargs):  # fault injection: training here is the bug
        raise AssertionError("a stored run was run again")

    monkeypatch.setattr(lb, "one_run", must_not_train)
    # Report only, beside a running bench: seeds still to run are not run, the JSON stays.
    before = out.with_suffix(".json").read_text()
    partial = lb.run_bench("keyroom-s5", arms=["count"], seeds={"count": 3}, minutes=1.0,
                           steps=1000, shared=[], out=out, random_episodes=0, report_only=True)
    assert partial["arms"]["count"]["seeds"] == 1
    assert out.with_suffix(".json").read_text() == before
    assert "| count | 1 | 0.200 ± n/a | n/a | 1.00 ± n/a" in out.with_suffix(".md").read_text()
    report = lb.run_bench("keyroom-s5", arms=["count"], seeds={"count": 1}, minutes=1.0,
                          steps=1000, shared=[], out=out, random_episodes=0)
    assert report["arms"]["count"]["seeds"] == 1
    assert report["arms"]["count"]["steps_to_0.1"]["per_seed"] == [1000]
    assert report["arms"]["count"]["peak_success_per_seed"] == [0.2]
    assert "| count | 1 | 0.200 ± n/a | n/a | 1.00 ± n/a" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 5_000


def test_random_only_measures_the_random_row_and_runs_no_arm(tmp_path: Path,
                                                             monkeypatch) -> None:
    def must_not_train(*_args, **_kwargs):  # fault injection: training here is the bug
        raise AssertionError("--random-only ran an arm")

    monkeypatch.setattr(lb, "one_run", must_not_train)
    out = tmp_path / "pilot"
    lb.run_bench("MiniHack-MultiRoom-N4-v0", arms=["extrinsic"], seeds={"extrinsic": 3},
                 minutes=None, steps=1000, shared=["env.penalty_step=0"], out=out,
                 random_episodes=8, random_only=True)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["runs"] == {}
    assert saved["random"]["episodes"] == 8
    assert saved["random"]["key"] == "MiniHack-MultiRoom-N4-v0/penalty=0.0/episodes=8"
    assert 0.0 <= saved["random"]["success_rate"] <= 1.0


def test_curves_keep_every_diagnostic_a_real_metrics_row_has() -> None:
    # The names are the metrics row's own: a renamed learner or annotator column would make a
    # diagnostic vanish from every stored curve without an error.
    from cluster.counters import Counters
    from cluster.progress import LoopState, annotator_columns, metrics_row
    from learner import appo, intrinsic

    losses = {name: 0.5 for name in (appo.ENTROPY_LOSS, appo.GRAD_NORM, appo.CLIP_FRACTION,
                                      appo.MEAN_RATIO, appo.VALUE_LOSS, appo.MEAN_VALUE,
                                      appo.MEAN_REWARD, intrinsic.REWARD_MODEL_VERSION,
                                      intrinsic.INTRINSIC_MEAN,
                                      intrinsic.INTRINSIC_ZERO_FRACTION, *appo.UPDATE_STATS)}
    annotator = annotator_columns({"store_labels": 7}, reward_model_version_trained=3,
                                  learner_losses=losses)
    loop = LoopState(sps=1.0, policy_version=3, policy_lag=0.0, fragments_ready=0,
                     updates_queued=0, object_store_mb=None)
    row = metrics_row(Counters(), loop, losses, annotator)
    point = lb.curve_point(row)
    assert set(lb.DIAGNOSTICS) <= set(point)
    assert point["labels_total"] == 7.0 and point["learner_grad_norm"] == 0.5


def test_no_bench_script_shadows_a_standard_library_module() -> None:
    # `python bench/X.py` puts bench/ first on sys.path, and Ray hands that path to its
    # workers: a bench/profile.py once made torch's `import profile` load it, and every actor
    # of every bench died at start-up.
    import sys

    names = {p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py")}
    assert not names & set(sys.stdlib_module_names)


S15_SETTINGS = {"env_id": "MiniHack-KeyRoom-S15-v0", "arm": ["rewards.model.kind=retrieval"],
                "minutes": None, "steps": 4_000_000,
                "shared": ["env.penalty_step=0", "rollout.envs_per_actor=32"]}


def test_reports_over_a_partial_window_are_not_judged() -> None:
    # The first report of a real S15 pilot: one episode had ended, a success (145 steps).
    curve = [{"env_steps": 18_432, "episodes": 1, "success_rate": 1.0, "mean_length": 145.0},
             {"env_steps": 36_864, "episodes": 65, "success_rate": 0.02, "mean_length": 396.0},
             {"env_steps": 57_344, "episodes": 120, "success_rate": 0.0, "mean_length": 400.0},
             {"env_steps": 2_000_000, "episodes": 6_000, "success_rate": 0.6,
              "mean_length": 200.0},
             {"env_steps": 4_000_000, "episodes": 11_000, "success_rate": 0.1,
              "mean_length": 380.0}]
    run = {"seed": 1, "settings": S15_SETTINGS, "curve": curve,
           "summary": {"env_steps": 4_000_000}}
    judged = lb.judged_reports(run)
    assert [p["env_steps"] for p in judged] == [57_344, 2_000_000, 4_000_000]  # >= 100 ended
    assert lb.peak_success(judged) == 0.6  # not the 1.00 of one episode
    assert lb.steps_to_threshold([run], 0.5) == [2_000_000.0]  # not 18,432
    assert stats.collapse([p["success_rate"] for p in judged])["collapsed"]  # 0.6 -> 0.1
    flat = {**run, "curve": [{**p, "success_rate": 1.0 if i == 0 else 0.0}
                             for i, p in enumerate(curve)]}
    assert not lb.arm_table([flat])["collapse_per_seed"][0]["collapsed"]  # never learnt


def test_a_report_stored_without_its_episode_count_counts_from_a_bound() -> None:
    # 2 actors x 32 envs, a 400-step limit (the longest mean length seen), a window of 100:
    # every env has ended 2 episodes (128 >= 100) by 64 * 400 * ceil(100 / 64) = 51,200 steps.
    curve = [{"env_steps": s, "success_rate": p, "mean_length": m} for s, p, m in
             ((18_432, 1.0, 145.0), (36_864, 0.02, 396.0), (51_199, 0.0, 400.0),
              (51_200, 0.0, 400.0), (4_000_000, 0.5, 300.0))]
    run = {"seed": 0, "settings": S15_SETTINGS, "curve": curve,
           "summary": {"env_steps": 4_000_000}}
    assert [p["env_steps"] for p in lb.judged_reports(run)] == [51_200, 4_000_000]
    # A hand-made record (no settings, no counts) keeps every report.
    assert lb.judged_reports({"curve": curve}) == curve


def test_a_task_without_success_shows_n_a_not_nan() -> None:
    assert lb._plus_minus(0.83, 0.12, seeds=5, digits=3) == "0.830 ± 0.120"
    assert lb._plus_minus(0.83, 0.0, seeds=1, digits=3) == "0.830 ± n/a"
    assert lb._plus_minus(float("nan"), float("nan"), seeds=3, digits=3) == "n/a"
