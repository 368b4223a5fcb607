"""The MiniHack learning bench's bookkeeping (bench/learning_minihack.py): run keys, resuming,
the statistics of its report. No training here: the bench itself is run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import learning_minihack as lb


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
    assert cfg.env.id == "MiniHack-KeyRoom-S5-v0" and cfg.env.penalty_step == -0.001
    assert cfg.run.seed == 3 and cfg.rewards.intrinsic_coef == 0.4


def test_steps_to_exceed_and_bands_known_values() -> None:
    curve = [{"env_steps": 100, "success_rate": None}, {"env_steps": 200, "success_rate": 0.1},
             {"env_steps": 300, "success_rate": 0.3}, {"env_steps": 400, "success_rate": 0.6}]
    assert lb.steps_to_exceed(curve, 0.1) == 300  # exceeds, not reaches
    assert lb.steps_to_exceed(curve, 0.5) == 400 and lb.steps_to_exceed(curve, 0.9) is None
    mean, half = lb.band([0.2, 0.4, None])
    assert mean == pytest.approx(0.3) and half == pytest.approx(1.96 * 0.1414213 / 2 ** 0.5)


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
    assert "| count | 1 | 0.200 ± 0.000" in out.with_suffix(".md").read_text()
    report = lb.run_bench("keyroom-s5", arms=["count"], seeds={"count": 1}, minutes=1.0,
                          steps=1000, shared=[], out=out, random_episodes=0)
    assert report["arms"]["count"]["seeds"] == 1
    assert report["arms"]["count"]["steps_to_0.1"]["per_seed"] == [1000]
    assert "| count | 1 | 0.200 ± 0.000" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 5_000
