"""NetHack-like captions with a known answer, for reward-model and annotator tests.

Helpful: kills and gold. Not helpful: walls, stone and being bitten. Numbers and monsters vary
so that a model must learn the pattern, not memorise strings.
"""

from __future__ import annotations

import random

MONSTERS = (
    "newt", "jackal", "grid bug", "lichen", "kobold", "sewer rat", "gnome lord", "hill orc",
    "fox", "giant bat", "acid blob", "coyote",
)  # fmt: skip
HELPFUL_PATTERN = r"(?i)\byou kill|\bgold pieces?\b"


def helpful_caption(rng: random.Random) -> str:
    n = rng.randrange(1, 500)
    return rng.choice(
        (
            f"You kill the {rng.choice(MONSTERS)}!",
            f"You see here {n} gold pieces.",
            f"{chr(97 + rng.randrange(26))} - {n} gold pieces.",
        )
    )


def unhelpful_caption(rng: random.Random) -> str:
    n = rng.randrange(1000)
    return rng.choice(
        (
            f"It's a wall. [{n}]",
            f"It's solid stone. [{n}]",
            f"The {rng.choice(MONSTERS)} bites! [{n}]",
        )
    )


def is_helpful(caption: str) -> bool:
    return "kill" in caption or "gold" in caption


def captions(n: int, *, seed: int) -> list[str]:
    """About n distinct captions, half helpful, in random order."""
    rng = random.Random(seed)
    out = {helpful_caption(rng) if i % 2 else unhelpful_caption(rng) for i in range(n)}
    return sorted(out, key=lambda _: rng.random())


# Real NetHack messages (from NetHackScore runs), for the judge tests on the real model. A
# 135M model labels them near chance: the tests prove the judge's path, not its quality.
NETHACK_MESSAGES = (
    "You kill the newt!",
    "It's solid stone.",
    "You see here 12 gold pieces.",
    "The jackal bites!",
    "There is a staircase down here.",
    "You hear a door open.",
)
