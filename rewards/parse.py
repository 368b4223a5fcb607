"""Strict parsing of judge answers, and the cleaning of captions before they reach a judge.

Consumes the judge's raw text. Emits a label (True = FOO = helpful, False = BAR) or a
preference (0 = first, 1 = second, -1 = tie), or None when the answer cannot be read.
Only the answer's FINAL tag counts: judges think aloud and quote the caption first, and a
caption may itself contain "<label> FOO </label>" (prompt injection). An unreadable answer is
never guessed into a label (ONI's parser read any "FOO" anywhere as helpful).
"""

from __future__ import annotations

import re
import unicodedata

LABELS = {"FOO": True, "BAR": False}
PREFERENCES = {"1": 0, "2": 1, "none": -1, "tie": -1, "neither": -1}
TRUNCATION_MARKER = " [...]"

# Tolerates case and inner whitespace ("< LABEL >", "</ label >"), nothing else.
_LABEL_OPEN = re.compile(r"<\s*label\s*>", re.IGNORECASE)
_LABEL_CLOSE = re.compile(r"<\s*/\s*label\s*>", re.IGNORECASE)
_BEST_OPEN = re.compile(r"<\s*best_description\s*>", re.IGNORECASE)
_BEST_CLOSE = re.compile(r"<\s*/\s*best_description\s*>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# A tag the parser reads, written inside a caption (prompt injection), e.g. "<label> FOO".
_TAG_IN_CAPTION = re.compile(r"<(\s*/?\s*(?:label|best_description)\s*)>", re.IGNORECASE)


def final_tag(text: str, opening: re.Pattern[str], closing: re.Pattern[str]) -> str | None:
    """The stripped content of the LAST opening tag in ``text``, or None when that tag is not
    closed (a truncated answer must not fall back to an earlier tag)."""
    last = None
    for last in opening.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        return None
    close = closing.search(text, last.end())
    if close is None:
        return None
    return text[last.end() : close.start()].strip()


def parse_label(text: str | None) -> bool | None:
    """FOO -> True, BAR -> False, from the final ``<label> ... </label>`` tag only; None when
    there is no final tag or its content is anything but FOO or BAR."""
    if not text:
        return None
    content = final_tag(text, _LABEL_OPEN, _LABEL_CLOSE)
    if content is None:
        return None
    return LABELS.get(content.upper())


def parse_preference(text: str | None) -> int | None:
    """From the final ``<best_description> ... </best_description>`` tag: 1 -> 0, 2 -> 1,
    none/tie -> -1; None when there is no final tag or it says anything else."""
    if not text:
        return None
    content = final_tag(text, _BEST_OPEN, _BEST_CLOSE)
    if content is None:
        return None
    return PREFERENCES.get(content.lower())


def sanitize_caption(caption: str | bytes | None, max_chars: int) -> str:
    """The caption as a judge may see it; "" means: do not ask, label it not helpful.

    Invalid UTF-8 (bytes, or lone surrogates in a str) becomes U+FFFD; tabs and newlines become
    spaces; other control and format characters (NUL, ESC, bidi overrides) are dropped; tags
    the parser reads (``<label>``, ``</best_description>``) become ``[label]`` ...; runs of
    whitespace collapse. A caption longer than ``max_chars`` keeps its head and ends with
    :data:`TRUNCATION_MARKER`, so the result never exceeds ``max_chars``.
    """
    if max_chars <= len(TRUNCATION_MARKER):
        raise ValueError(f"max_chars must exceed {len(TRUNCATION_MARKER)}, got {max_chars}")
    if caption is None:
        return ""
    if isinstance(caption, bytes):
        text = caption.decode("utf-8", errors="replace")
    else:
        text = caption.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    text = "".join(_clean_char(c) for c in text)
    # Defused to "[label]": a judge that parrots the caption cannot then answer with its tag.
    text = _TAG_IN_CAPTION.sub(r"[\1]", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - len(TRUNCATION_MARKER)].rstrip() + TRUNCATION_MARKER
    return text


def _clean_char(c: str) -> str:
    if c.isspace():
        return " "
    # Cc control, Cf format (bidi overrides, zero-width), Cs surrogate, Co private, Cn unassigned
    return "" if unicodedata.category(c).startswith("C") else c
