"""ONI's prompt file and its loader (rewards.prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rewards.prompts import (
    DEFAULT_PROMPTS,
    PromptError,
    load_prompts,
    render_compare_messages,
    render_compare_prompt,
    render_label_messages,
    render_label_prompt,
    resolve_path,
    task_for_env,
)

TASKS = ["score", "staircase", "staircase_pet", "oracle", "gold", "eat", "scout", "corridor",
         "minihack_room", "minihack_keyroom", "minihack_corridor", "minihack_maze",
         "minihack_river", "minihack_lava", "minihack_quest", "minihack_sokoban",
         "minihack_skill", "minihack"]


@pytest.mark.parametrize(
    ("env_id", "task"),
    [
        ("NetHackScore-v0", "score"),
        ("NetHackStaircase-v0", "staircase"),
        ("NetHackStaircasePet-v0", "staircase_pet"),
        ("NetHackOracle-v0", "oracle"),
        ("NetHackGold-v0", "gold"),
        ("NetHackEat-v0", "eat"),
        ("NetHackScout-v0", "scout"),
        ("NetHackChallenge-v0", "score"),
        ("oniray/Corridor-v0", "corridor"),
    ],
)
def test_task_for_env(env_id: str, task: str) -> None:
    assert task_for_env(env_id) == task
    assert task in load_prompts().goals


def test_task_for_unknown_env_says_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"rewards\.judge\.task"):
        task_for_env("CartPole-v1")


def test_every_task_has_a_goal_and_both_kinds_of_examples() -> None:
    prompts = load_prompts()
    assert sorted(prompts.tasks) == sorted(TASKS)
    for task in TASKS:
        positives, negatives = prompts.labelled_examples(task)
        assert positives and negatives
    score_pos, score_neg = prompts.labelled_examples("score")
    assert "You kill the newt!" in score_pos
    assert "You hear a door open." in score_neg
    assert "Hello stranger, who are you?" in score_neg


def test_label_prompt_has_goal_shots_and_quoted_caption() -> None:
    prompt = render_label_prompt('He said "hi"\nthen left', task="gold")
    prompts = load_prompts()
    assert prompts.goals["gold"] in prompt
    assert prompt.startswith(prompts.system)
    # The caption is JSON-quoted: its quote and newline cannot end its slot.
    assert 'Please rate this message: "He said \\"hi\\"\\nthen left"' in prompt
    # Few-shot labels follow the task: gold pieces help the gold task, a kill does not.
    assert '"5 gold pieces." means the player collected 5 gold coins. For this goal it ' \
        "should be labelled FOO." in prompt
    assert "Welcome to experience level 4.\" means the player killed a goblin and gained a " \
        "level, which raises its abilities. For this goal it should be labelled BAR." in prompt


def test_label_prompt_examples_flip_with_the_task() -> None:
    kill = '"You kill the goblin!  Welcome to experience level 4."'
    score = render_label_prompt("x", task="score")
    gold = render_label_prompt("x", task="gold")
    assert score.split(kill)[1].split("\n")[0].endswith("FOO.")
    assert gold.split(kill)[1].split("\n")[0].endswith("BAR.")


def test_compare_prompt_orders_the_captions() -> None:
    prompt = render_compare_prompt("You see a key here.", "It's solid stone.", task="corridor")
    assert prompt.index('description_1: "You see a key here."') < prompt.index(
        "description_2: \"It's solid stone.\""
    )
    assert "<best_description> 1 </best_description>" in prompt


def test_chat_messages_split_system_and_user() -> None:
    for messages in (
        render_label_messages("You kill the newt!", task="score"),
        render_compare_messages("a", "b", task="score"),
    ):
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == load_prompts().system
        assert load_prompts().goals["score"] in messages[1]["content"]


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="corridor"):
        render_label_prompt("x", task="sokoban")


def test_default_path_resolves_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_path(DEFAULT_PROMPTS).is_file()


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _valid() -> dict:
    return yaml.safe_load(resolve_path(DEFAULT_PROMPTS).read_text())


def test_a_copy_of_the_default_file_loads(tmp_path: Path) -> None:
    assert load_prompts(_write(tmp_path, _valid())).goals == load_prompts().goals


def test_errors_name_the_file_and_every_bad_key(tmp_path: Path) -> None:
    data = _valid()
    del data["system"]
    data["label_template"] = data["label_template"].replace("{caption}", "{captoin}")
    data["examples"][0]["helpful_for"] = ["score", "sokoban"]
    data["rules"]["corridor"] = ["(unclosed"]
    data["extra"] = 1
    path = _write(tmp_path, data)
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    text = str(err.value)
    for fragment in (
        f"{path}: key 'system'",
        "key 'label_template': unknown fields ['captoin']",
        "key 'label_template': missing fields ['caption']",
        "key 'examples[0].helpful_for': unknown task 'sokoban'",
        "key 'rules.corridor': bad regex '(unclosed'",
        "key 'extra': unknown key",
    ):
        assert fragment in text
    assert len(err.value.problems) == 6


def test_a_task_without_negative_examples_is_rejected(tmp_path: Path) -> None:
    data = _valid()
    for example in data["examples"]:
        example["helpful_for"] = [*example["helpful_for"], "eat"]
    with pytest.raises(PromptError, match="no not-helpful example for task 'eat'"):
        load_prompts(_write(tmp_path, data))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="cannot read"):
        load_prompts(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("goals: [unclosed")
    with pytest.raises(PromptError, match=f"{bad}: not valid YAML"):
        load_prompts(bad)
