"""Which sentences of NetHack's message line report no change in the world.

A sentence embedding pays for look-alike words: "It won't come off the hinges." sits near
"open the locked door", "The key named ... whispers:" near "pick up the key". An LLM judge
reads the grammar and sees that nothing happened; the embedding judge needs it said. These
rules read only NetHack's message grammar, the same for every task; none names a task's
message or object:

- **negated**: a sentence with a negation ("You can't ...", "It won't ...", "There is
  nothing here ...", "You see no objects here.") reports an action that failed or was refused.
- **wh_prompt**: a question that asks which object, name, direction or place ("What do you
  want to call this dungeon level?", "In what direction?"): a command waiting for its
  argument, which has done nothing yet. A yes/no confirmation ("Unlock it? [yn] (n)") names
  the action about to happen and is left to the judge.
- **introduces**: a sentence ending in a colon ("Things that are here:", "X whispers:")
  announces the text that follows; it is no event of its own.
- **farlook**: the description of a map symbol the player looked at ("+ a spellbook or a
  closed door (closed door)"): the screen, not the world, answered.
"""

from __future__ import annotations

import re

NEGATED = "negated"
WH_PROMPT = "wh_prompt"
INTRODUCES = "introduces"
FARLOOK = "farlook"
KINDS = (NEGATED, WH_PROMPT, INTRODUCES, FARLOOK)

_NEGATION = re.compile(r"\b(?:not|no|nothing|never|nobody|none|cannot)\b|n't\b", re.IGNORECASE)
# A wh-word before the question mark: "What do you want to ...?", "Talk to whom?".
_WH_QUESTION = re.compile(r"\b(?:what|which|where|whom|who)\b[^?]*\?", re.IGNORECASE)
_ENDS_IN_COLON = re.compile(r":\s*$")
# A map symbol (punctuation), whitespace, then its description in lower case. Monster letters
# ("d  a jackal") are not matched: a sentence may start with a letter too.
_FARLOOK_LINE = re.compile(r"^[^\w\s\"']\s+[a-z]")


def non_event(sentence: str) -> str | None:
    """The kind of non-event ``sentence`` is (one of :data:`KINDS`), or None for an event."""
    if _FARLOOK_LINE.search(sentence):
        return FARLOOK
    if _ENDS_IN_COLON.search(sentence):
        return INTRODUCES
    if _WH_QUESTION.search(sentence):
        return WH_PROMPT
    if _NEGATION.search(sentence):
        return NEGATED
    return None


# An inventory line: a letter (or "$" for gold), " - ", the object: "g - a key named <name>.".
_INVENTORY_LINE = re.compile(r"^([a-zA-Z$]) - (?P<object>.+)$")


def plain(sentence: str) -> str:
    """``sentence`` in words a sentence encoder reads as what it means. NetHack reports an
    object entering the inventory (picked up, or changed there) as "g - a key." The encoder
    sees a letter and a dash; "You now have a key." says it."""
    return _INVENTORY_LINE.sub(r"You now have \g<object>", sentence)
