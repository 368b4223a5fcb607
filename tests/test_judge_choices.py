"""The arithmetic of constrained answers and log-probability labels, on hand-computed values:
which token decides each choice, P(choice) under decoding constrained to the choices, the
greedy walk, and the OpenAI judge's walk over token texts."""

from __future__ import annotations

import math
import random

import pytest

from rewards.judges.openai_judge import _ChoiceWalk
from rewards.judges.text import constrained_choice, constrained_probs, decision_depths

# SmolLM2's tokens: " FOO" = " FO" "O", " BAR" = " B" "AR", " 1" = " " "1", " none" one token.
LABELS = [[23761, 63], [389, 2285]]
COMPARE = [[216, 33], [216, 34], [7182]]
# log P(token | prompt + prefix): at the root " " 0.3, " none" 0.1 (the rest of the
# vocabulary 0.6); after " ", "1" 0.2 and "2" 0.6.
LOGPROB = {
    ((), 216): math.log(0.3), ((), 7182): math.log(0.1), ((), 23761): math.log(0.2),
    ((), 389): math.log(0.6), ((216,), 33): math.log(0.2), ((216,), 34): math.log(0.6),
}


def logprob(prefix: tuple, token: int) -> float:
    return LOGPROB[(prefix, token)]


def test_deciding_tokens() -> None:
    assert decision_depths(LABELS) == [0, 0]  # FOO and BAR part at their first token
    assert decision_depths(COMPARE) == [1, 1, 0]  # 1 and 2 part after the shared " "
    with pytest.raises(ValueError, match="prefix"):
        decision_depths([[1], [1, 2]])


def test_probabilities_renormalised_where_the_choices_part() -> None:
    # FOO / BAR: 0.2 / (0.2 + 0.6); the O after FO is forced and never read.
    assert constrained_probs(LABELS, logprob) == pytest.approx([0.25, 0.75])
    # " " vs " none": 0.75 / 0.25; then "1" vs "2": 0.25 / 0.75.
    assert constrained_probs(COMPARE, logprob) == pytest.approx([0.1875, 0.5625, 0.25])


def test_greedy_walk_follows_the_likelier_token_at_each_parting() -> None:
    assert constrained_choice(LABELS, logprob) == 1
    # Greedy: " " (0.75 against " none"), then "2" (0.75 against "1").
    assert constrained_choice(COMPARE, logprob) == 1
    rng = random.Random(0)
    picks = [constrained_choice(LABELS, logprob, temperature=1.0, rng=rng) for _ in range(2000)]
    assert picks.count(1) / len(picks) == pytest.approx(0.75, abs=0.04)


def test_openai_walk_by_token_text() -> None:
    walk = _ChoiceWalk([" 1", " 2", " none"])
    top = {" ": math.log(0.3), " none": math.log(0.1), " The": math.log(0.5)}
    assert walk.visit("", top) == [" "]  # 1 and 2 share " ": ask again after it
    assert walk.visit(" ", {"1": math.log(0.2), "2": math.log(0.6)}) == []
    assert walk.probs() == pytest.approx([0.1875, 0.5625, 0.25])
    # The longest listed token that begins a choice; an unlisted choice gets 0.
    walk = _ChoiceWalk([" FOO", " BAR"])
    assert walk.visit("", {" F": -3.0, " FO": -1.0, " X": -0.1}) == []
    assert walk.probs() == [1.0, 0.0]
    # No logprobs, or none of the choices listed: no probabilities (counted, never guessed).
    for top in (None, {" X": -0.1}):
        walk = _ChoiceWalk([" FOO", " BAR"])
        assert walk.visit("", top) == [] and walk.probs() is None
