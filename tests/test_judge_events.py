"""Which NetHack sentences report no change in the world (rewards/judges/events.py), and what
that does to the embedding judge on both shipped labelled sets."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.judges.events import FARLOOK, INTRODUCES, NEGATED, WH_PROMPT, non_event, plain

# Real NetHack 3.6 messages; none is needed by a rule, each shows one.
NON_EVENTS = {
    "You can't move diagonally out of an intact doorway.": NEGATED,
    "There is nothing here to pick up.": NEGATED,
    "It won't come off the hinges.": NEGATED,
    "You see no objects here.": NEGATED,
    "You cannot pass through the bars.": NEGATED,
    "What do you want to call this dungeon level?": WH_PROMPT,
    "In what direction?": WH_PROMPT,
    "Talk to whom? (in what direction)": WH_PROMPT,
    "Where do you want to travel to? (For instructions type a '?')": WH_PROMPT,
    "Things that are here:": INTRODUCES,
    "The key named <name>:": INTRODUCES,
    "+ a spellbook or a closed door (closed door)": FARLOOK,
    "< a staircase up or a ladder up (staircase up)": FARLOOK,
}
EVENTS = ["You kill the newt!", "The door opens.", "Unlock it? [yn] (n)",
          "You succeed in unlocking the door.", "g - a key named <name>.", "$ - 2 gold pieces.",
          "Really attack the shopkeeper?", "There is a staircase down here.",
          "What a strange direction!", "Noop", "(For instructions type a '?')"]


@pytest.mark.parametrize("sentence,kind", NON_EVENTS.items())
def test_non_events_by_kind(sentence: str, kind: str) -> None:
    assert non_event(sentence) == kind


@pytest.mark.parametrize("sentence", EVENTS)
def test_events_and_yes_no_confirmations_stay(sentence: str) -> None:
    assert non_event(sentence) is None


def test_inventory_lines_in_plain_words() -> None:
    assert plain("g - a key named <name>.") == "You now have a key named <name>."
    assert plain("$ - 2 gold pieces.") == "You now have 2 gold pieces."
    for unchanged in ("You kill the newt!", "a spellbook - not a line", "The door opens."):
        assert plain(unchanged) == unchanged


def test_a_one_clause_positive_with_a_direction_needs_a_caption_with_one_by_hand() -> None:
    from rewards.judges.embedding import helpfulness

    captions = np.array([[1.0, 0.0], [1.0, 0.0]])
    positives = np.array([[0.8, 0.6], [0.6, 0.8]])
    negatives = np.array([[0.0, 1.0]])
    opposites = np.array([[0.6, 0.8], [0.0, 0.0]])  # only the first positive has a direction
    # Caption 0 states a direction and is nearer the first positive than its opposite (0.8 >
    # 0.6): both positives count, top-1 = 0.8. Caption 1 states none: the first drops to -1,
    # top-1 = 0.6. Negatives: 0.0 for both.
    directed = np.array([True, False])
    np.testing.assert_allclose(
        helpfulness(captions, positives, negatives, k=1, opposites=opposites,
                    directed=directed), [0.8, 0.6])
    # A bound that leaves the first positive out (a whole goal sentence) keeps it for both.
    np.testing.assert_allclose(
        helpfulness(captions, positives, negatives, k=1, opposites=opposites,
                    directed=directed, bound=np.array([False, False])), [0.8, 0.8])


@pytest.fixture(scope="module")
def keyroom_judge():
    from cluster.config import load_config
    from rewards.judges import make_judge

    cfg = load_config("configs/minihack/keyroom_s5.yaml", [])
    return make_judge(cfg.rewards.judge, env_id=cfg.env.id)


def test_the_key_rooms_look_alikes_are_not_progress(keyroom_judge) -> None:
    inner = keyroom_judge.inner
    looks = ["You sit on the stairs.", "It won't come off the hinges.",
             "What do you want to call this dungeon level?",
             "The key named The Master Key of Thievery whispers:"]
    verdicts = keyroom_judge.label(looks)
    assert [v.label for v in verdicts] == [False] * 4
    stats = inner.stats()
    assert stats.non_events[NEGATED] >= 1 and stats.non_events[WH_PROMPT] >= 1
    assert stats.non_events[INTRODUCES] >= 1  # the guard keeps the colon after <name>
    assert stats["non_event_negated"] >= 1  # exported flat, as the annotator's metrics
    events = ["You succeed in unlocking the door.", "g - a key named The Master Key of Thievery.",
              "There is a staircase down here."]
    assert [v.label for v in keyroom_judge.label(events)] == [True] * 3


def test_the_events_filter_can_be_switched_off() -> None:
    from cluster.config import load_config
    from rewards.judges.embedding import EmbeddingJudge

    cfg = load_config("configs/minihack/keyroom_s5.yaml",
                      ["rewards.judge.embedding.events_only=false"])
    judge = EmbeddingJudge(cfg.rewards.judge, "minihack_keyroom")
    assert np.isfinite(judge.scores(["It won't come off the hinges."])[0])
    assert judge.stats().non_events == {}


@pytest.mark.parametrize("labels,config,check", [
    # issue 19's bar: precision and recall >= 0.6 on the key room with its default settings,
    # NetHackScore accuracy at least 0.82. Measured 0.80 / 0.67 and 0.888.
    ("configs/judge_eval/minihack_keyroom.tsv", "configs/minihack/keyroom_s5.yaml",
     lambda m: m["precision"] >= 0.6 and m["recall"] >= 0.6),
    # The hard key room's own config, which the README offers to reproduce the S15 bench: it
    # once ran the judge's NetHack defaults, which find 0 of the set's 6 helpful messages.
    ("configs/judge_eval/minihack_keyroom.tsv", "configs/minihack/keyroom.yaml",
     lambda m: m["precision"] >= 0.6 and m["recall"] >= 0.6),
    ("configs/judge_eval/nethack_score.tsv", "configs/default.yaml",
     lambda m: m["accuracy"] >= 0.82),
])
def test_shipped_labelled_sets_meet_the_bar(labels: str, config: str, check) -> None:
    from cluster.config import load_config
    from rewards.judge_eval import evaluate, read_labels
    from rewards.judges import make_judge

    cfg = load_config(config, [])
    judge = make_judge(cfg.rewards.judge, env_id=cfg.env.id)
    metrics = evaluate(judge, read_labels(labels), batch_size=64)["metrics"]
    assert check(metrics), metrics
