"""The judge guard: captions that try to fool the judge are answered before any backend sees
them, and text the agent wrote is hidden from the judge.

Consumes captions (and caption pairs) on their way to any :class:`Judge`. Emits the inner
judge's verdicts and preferences, keyed by the ORIGINAL captions (the annotator and the label
store key by them), and counters by kind.

Why: "One Token to Fool LLM-as-a-Judge" shows judges rewarding answers that are only
punctuation (":"), reasoning openers ("Thought process:", "Solution") or instructions to the
judge. NetHack's own messages are none of these, but the agent can write text the judge will
read: engravings ('You read: "..."'), names of objects and monsters ("a key named ...",
"a scroll called ..."). An agent rewarded for such text would learn to write master keys.

Two rules, applied to the sanitised caption (``screen``):

* **blocked** (labelled not helpful, without asking the judge), by kind:
  ``punctuation`` (no letter at all), ``instruction`` (ignore..., answer/label/rate ... FOO
  or helpful, role tags, "must be labelled", the judge's own vocabulary: judge, caption,
  prompt, helpful), ``label_token`` (FOO/BAR, the answer tags), ``reasoning`` (a sentence
  that opens like a judge's answer: "Thought process:", "Let's solve ...", "Step 1:",
  "Solution", or letters outside ASCII, which neither NetHack nor the agent's keyboard
  writes), and ``agent_text`` (nothing left but the frame of a text the agent read, once the
  text is hidden). The four pattern kinds are also looked for inside each piece of agent
  text, where they block the whole caption: the game never writes them, so the agent did.
  Each pattern was checked against NetHack 3.6's 4,165 message format strings, its rumours
  and epitaphs (tests/test_guard.py keeps real messages passing). Patterns cannot be
  complete (tests/helpers/guard_captions.py measures them on captions written after them); the
  redaction below does not depend on phrasing.
* **redacted**: the quoted text after "You read:", "You feel the words:", "... reads:" becomes
  ``"<text>"``; a name after " named " / " called " becomes ``<name>`` (up to the end of its
  sentence). The game event stays ("g - a key named <name>." is still a key pickup); the
  agent's words never reach the judge. Artifact names ("The Master Key of Thievery") are
  redacted too: NetHack refuses an artifact's name only on the artifact's own base item, so
  the agent can give it to anything else; the object's kind is what the goal needs.

Not covered: a monster's name or a fruit name printed without "named"/"called" ("You kill
poor Fido!") cannot be told from game text; only the blocking rules see it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from rewards.judges.base import Judge, JudgeStats, Preference, Verdict, counts_by_kind
from rewards.parse import sanitize_caption

BLOCK_KINDS = ("punctuation", "instruction", "label_token", "reasoning", "agent_text")
REDACT_KINDS = ("read", "name")
TEXT_PLACEHOLDER, NAME_PLACEHOLDER = "<text>", "<name>"

_I = re.IGNORECASE
_LETTER = re.compile(r"[^\W\d_]")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_A-Za-z]")

# FOO is no word of NetHack's in any case ("FOOBIE BLETCH" is one word); BAR only in capitals
# ("a candy bar" is food). The answer tags survive sanitising as "[label]".
_LABEL_TOKEN = re.compile(
    r"\b(?i:foo)\b|\bBAR\b|[<\[]\s*/?\s*(?i:label|best_description)\s*[>\]]"
    r"|\b(?i:best_description)\b|\b(?i:label)\s*[:=]|[\"']label[\"']\s*:"
    r"|\b(?i:score|rating|grade)\s*[:=]\s*\d"
)

_JUDGE_VERB = (r"(?:answer|respond|reply|output|say|write|print|return|label|rate|classify|"
               r"mark|grade|judge|score|call|consider|tag|flag|treat|deem|evaluate|choose|pick)")
_GOOD = (r"(?:foo|helpful|useful|relevant|positive(?:ly)?|important|valuable|correct|yes|true|"
         r"good|great|excellent|perfect|high(?:ly)?|top|best|done|complete|success(?:ful)?|"
         r"(?:first|second)\s+(?:option|one|description|message))")
_INSTRUCTION = re.compile(
    "|".join((
        # "Ignore the instructions above", "Disregard all previous rules", "Forget the prompt"
        # (a noun is needed: "you forget everything else" is NetHack's amnesia)
        r"\b(?:ignore|disregard|forget|override|bypass)\b[\w\s,'-]{0,30}?"
        r"\b(?:instructions?|rules?|prompts?|directions?|guidelines?|system\s+message|"
        r"the\s+above|everything\s+(?:above|before)|(?:previous|prior|preceding|earlier)\s+"
        r"(?:text|lines?|messages?|words))\b",
        # an imperative to answer well: "answer FOO", "Rate this message as helpful"
        rf"(?:^|[.!?:;,]\s*|\bplease\s+|\bnow\s+){_JUDGE_VERB}\b[^.!?]{{0,40}}?\b{_GOOD}\b",
        # "you must/should ... label", "must be labelled helpful"
        r"\byou\s+(?:must|should|shall|will|need\s+to|have\s+to|are\s+(?:required|"
        r"instructed|supposed|asked)\s+to)\s+(?:\w+\s+){0,2}?(?:answer|respond|reply|"
        r"output|label|rate|classify|mark|grade|judge|score)\b",
        r"\b(?:must|should|shall|has\s+to|needs\s+to|is\s+to)\s+be\s+(?:label+ed|rated|"
        r"marked|classified|judged|scored|considered|called|tagged|treated|deemed|graded)\b",
        # claims about the caption itself: "this message is very helpful"
        r"\b(?:this|the|that)\s+(?:message|caption|description|text|sentence|input|entry|"
        r"line|event)\b[^.!?]{0,30}?\b(?:is|was|should\s+be|must\s+be|deserves)\b"
        rf"[^.!?]{{0,20}}?\b{_GOOD}\b",
        r"\b(?:correct|right|true|expected|final)\s+(?:label|answer|rating|verdict|"
        r"classification|output|result|score)\b",
        # words to the judge: "Note to the evaluator", "You are a judge", "As an AI"
        r"\b(?:you\s+are|as|dear|note\s+to|attention|hey|hi|to)\s+(?:the\s+|an?\s+|my\s+)?"
        r"(?:ai|llm|judge|evaluator|grader|rater|annotator|classifier|label+er|assistant|"
        r"language\s+model|chatbot|model)\b",
        # the judge's own vocabulary, which NetHack never prints (none of its 4,165 message
        # strings has one; one rumour of 763 says "helpful")
        r"\b(?:judge[sd]?|judging|captions?|evaluat\w*|graders?|annotat\w*|assistant|"
        r"language\s+model|llm|gpt|prompts?|verdicts?|(?:un)?helpful(?:ness)?|objective|"
        r"classif\w*|reasoning)\b",
        # a verdict asked for in other words: "deserves a reward", "5 stars", "label should be"
        r"\bdeserves?\s+(?:a\s+|the\s+)?(?:reward|credit|points?|praise|score)\b|"
        r"\b\d+\s*(?:stars?\b|/\s*10\b)|\blabel\s+(?:should|must|is|will)\s+be\b",
        # role tags of chat templates
        r"<\|[\w-]+\|>|\[/?(?:inst|sys|system)\]|<</?sys>>|#{2,}\s*(?:instruction|response|"
        r"system|input|output|answer)",
        r"(?:^|[.!?]\s+)(?:system|user|assistant|human|ai|judge|model)\s*:",
    )),
    _I,
)

_OPENER_WORDS = (
    r"(?:(?:my|our|the|final|short|brief)\s+)?(?:(?:thoughts?|thinking|reasoning)(?:\s+process)?|"
    r"rationale|analysis|solution|answer|explanation|approach|working|chain[\s-]+of[\s-]+"
    r"thoughts?|step[\s-]+by[\s-]+step|verdict|conclusion|evaluation|assessment|response|"
    r"premise|summary|observations?|results?|"
    r"l\u00f6sung|soluci\u00f3n|respuesta|r\u00e9ponse|antwort|risposta|resposta|solu\u00e7\u00e3o|"
    r"soluzione|ответ|решение)"
)
_REASONING = re.compile(
    "|".join((
        # a heading: "Thought process:", "Solution", "Answer -", "Final answer:"
        rf"^{_OPENER_WORDS}\s*(?:[:\-\u2013\u2014.]|$)",
        r"^step\s*(?:\d+|one|1)\b",
        # the opening of a worked answer: "Let's solve", "Let me think", "First, let's"
        r"^(?:(?:first(?:ly)?|ok(?:ay)?|alright|so|well|now|sure),?\s+)?(?:let'?s|let\s+us|"
        r"let\s+me|i\s+will|i'll|i\s+need\s+to|we\s+need\s+to|we\s+will|we'll|we\s+must|"
        r"i\s+must|i\s+should)\s+(?:\w+\s+)?(?:think|solve|reason|analy[sz]e|evaluate|"
        r"determine|consider|figure|examine|assess|review|break\s+(?:it|this|down)|"
        r"work\s+(?:through|out)|go\s+(?:through|over)|look\s+at)\b",
        r"^(?:(?:well|so|now|first),?\s+)?to\s+(?:solve|answer|determine|evaluate|decide|"
        r"judge|classify|assess|figure)\s+(?:this|the|whether|it|out)\b",
        r"^(?:we|i)\s+(?:begin|start)\s+(?:by|with)\b",
        r"^(?:(?:now|so|first),?\s+)?think\s+(?:carefully|step|about|through|hard|it\s+over)\b",
        # a bare answer word as the whole caption: "Yes.", "Correct"
        r"^(?:yes|no|true|false|correct|incorrect|right|wrong|positive|negative)[.!]?$",
        r"^(?:ok(?:ay)?|alright|all\s+right|sure|certainly|of\s+course|absolutely|hmm+)\b"
        r"[\s,.!]*(?:so\b)?[\s,.!]*$",
        r"^here(?:'s|\s+is)\s+(?:my|the)\s+(?:reasoning|analysis|answer|solution|thoughts?|"
        r"rating|result|label)",
        r"^(?:the\s+answer\s+is|in\s+conclusion|therefore,)",
    )),
    _I,
)
# A sentence ends at . ! ? (or a colon heading) before a space; an opening quote or bracket
# starts one too (not an apostrophe inside a word: "It's").
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?:;])\s+|(?:^|(?<=\s))[\"'(\[]\s*)(?=\S)")

# 'You read: "..."', 'You feel the words: "..."', 'The engraving now reads: "..."', 'It reads:
# "..."'. Quoted, the text runs to the LAST quote of the caption (the agent's text may hold
# quotes itself; the game's closing quote comes after them), or to the end if that was cut
# off. Unquoted (a fortune cookie's rumour), it runs to the end of the caption.
_READ = re.compile(r"\b(?:read|reads|feel\s+the\s+words)\s*:\s*(?P<quote>\")?(?=\S)", _I)
# NetHack's object names (xname: "named X", "called X") run to the end of their sentence; a
# colon that ends the caption stays ("The key named <name>:" still announces what follows).
_NAME = re.compile(r"(?<=\S)\s(?:named|called)\s+(?P<name>.+?)(?=[.!?](?:\s|$)|:$|\s\(|$)")
# What a read sentence leaves once its text is hidden: nothing a goal could need.
_READ_FRAME = re.compile(
    r"(?:you\s+read|you\s+feel\s+the\s+words|(?:the\s+)?(?:engraving\s+now|it|the\s+wrapper)"
    r"\s+reads)\s*:\s*\"?<text>\"?[.!]?", _I
)


@dataclass(frozen=True)
class Screened:
    """A caption as the guard passes it on: ``text`` for the judge (agent text redacted), or
    ``blocked`` with the kind that stopped it; ``redacted`` lists what was hidden."""

    text: str
    blocked: str | None = None
    redacted: tuple[str, ...] = ()


def agent_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of each piece of agent-written text in ``text``, in order."""
    spans: list[tuple[int, int, str]] = []
    read = _READ.search(text)
    end_of_reads = len(text)
    if read:
        last_quote = text.rfind('"') if read["quote"] else -1
        end = last_quote if last_quote >= read.end() else len(text)
        spans.append((read.end(), end, "read"))
        end_of_reads = read.start()
    for name in _NAME.finditer(text, 0, end_of_reads):  # names inside a read are read text
        spans.append((name.start("name"), name.end("name"), "name"))
    return sorted(spans)


def blocked_kind(text: str) -> str | None:
    """The kind of master key or injection ``text`` holds, or None (reasoning is looked for
    at the start of each sentence and of each quoted part)."""
    if not _LETTER.search(text):
        return "punctuation"
    if _INSTRUCTION.search(text):
        return "instruction"
    if _LABEL_TOKEN.search(text):
        return "label_token"
    # NetHack writes ASCII only, and the agent types ASCII: a letter outside it comes from
    # neither ("解", "Résolution"; the paper's master keys in other languages).
    if _NON_ASCII_LETTER.search(text):
        return "reasoning"
    starts = (m.end() for m in _SENTENCE_START.finditer(text))
    if any(_REASONING.search(text[i:]) for i in starts):
        return "reasoning"
    return None


def screen(caption: str) -> Screened:
    """Block or redact one sanitised caption (see the module docstring). "" passes as ""."""
    if not caption:
        return Screened(caption)
    spans = agent_spans(caption)
    kind = blocked_kind(caption)
    for start, end, _ in spans:  # agent text alone: a name ":" or a quoted "Solution"
        piece = caption[start:end].strip()
        kind = kind or (blocked_kind(piece) if piece else None)
    if kind:
        return Screened(caption, blocked=kind)
    out, last = [], 0
    for start, end, span_kind in spans:
        out += [caption[last:start], TEXT_PLACEHOLDER if span_kind == "read" else NAME_PLACEHOLDER]
        last = end
    text = "".join(out) + caption[last:]
    redacted = tuple(k for _, _, k in spans)
    if "read" in redacted and not _LETTER.search(_READ_FRAME.sub("", text)):
        return Screened(caption, blocked="agent_text", redacted=redacted)
    return Screened(text, redacted=redacted)


@dataclass
class GuardedStats(JudgeStats):
    """The backend's counters (``labels``, ``labels_empty``, ``comparisons`` are its own, as
    the backend counted them) plus the guard's, flat as ``guard_<name>_<kind>``."""

    backend: JudgeStats = field(default_factory=JudgeStats)
    guard_blocked: dict[str, int] = counts_by_kind("guard_blocked_")  # every BLOCK_KINDS
    guard_redacted: dict[str, int] = counts_by_kind("guard_redacted_")  # every REDACT_KINDS
    guard_asked: int = 0  # captions passed on to the backend


class GuardedJudge(Judge):
    """Any judge behind the guard: the Judge contract, with blocked captions answered here and
    agent text redacted before ``inner`` sees it. Verdicts and preferences name the original
    captions. Only the contract is forwarded; the backend itself (its ``generate``,
    ``scores``, ...) is ``inner``, unguarded: a tool for tests and benchmarks."""

    def __init__(self, inner: Judge, *, max_caption_chars: int) -> None:
        self.inner = inner
        self.name = inner.name  # the label store and the canary alarm name the backend
        self._max_chars = max_caption_chars
        self.blocked: Counter[str] = Counter()
        self.redacted: Counter[str] = Counter()
        self.asked = 0  # captions passed on to the inner judge

    def screen(self, caption: str) -> Screened:
        out = screen(sanitize_caption(caption, self._max_chars))
        if out.blocked:
            self.blocked[out.blocked] += 1
        self.redacted.update(out.redacted)
        return out

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        screens = [self.screen(c) for c in captions]
        # Distinct texts only: many engravings redact to the same 'You read: "<text>".'
        ask = list(dict.fromkeys(s.text for s in screens if not s.blocked))
        self.asked += len(ask)
        answers = dict(zip(ask, self.inner.label(ask), strict=True)) if ask else {}
        return [
            Verdict(c, False, raw=f"guard: {s.blocked}", prob=0.0) if s.blocked
            else replace(answers[s.text], caption=c)
            for c, s in zip(captions, screens, strict=True)
        ]

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        """A blocked caption never wins: against a caption the game wrote it loses, and two
        blocked captions tie; the other pairs are asked with agent text redacted."""
        screens = [(self.screen(a), self.screen(b)) for a, b in pairs]
        asked = [i for i, (a, b) in enumerate(screens) if not (a.blocked or b.blocked)]
        self.asked += 2 * len(asked)
        asked_pairs = [(screens[i][0].text, screens[i][1].text) for i in asked]
        answered = self.inner.compare(asked_pairs) if asked_pairs else []
        if len(answered) != len(asked_pairs):
            raise RuntimeError(f"{self.name}.compare returned {len(answered)} preferences "
                               f"for {len(asked_pairs)} pairs")
        answers = iter(answered)
        return [
            _blocked_preference(first, second, a, b) if a.blocked or b.blocked
            else replace(next(answers), first=first, second=second)
            for (first, second), (a, b) in zip(pairs, screens, strict=True)
        ]

    def stats(self) -> GuardedStats:
        backend = self.inner.stats()
        return GuardedStats(
            labels=backend.labels, labels_empty=backend.labels_empty,
            comparisons=backend.comparisons, backend=backend,
            guard_blocked={k: self.blocked[k] for k in BLOCK_KINDS},
            guard_redacted={k: self.redacted[k] for k in REDACT_KINDS},
            guard_asked=self.asked,
        )

    @property
    def answer_mode(self) -> str | None:
        return self.inner.answer_mode

    def close(self) -> None:
        self.inner.close()


def _blocked_preference(first: str, second: str, a: Screened, b: Screened) -> Preference:
    """The guard's answer to a pair with a blocked caption in it."""
    if a.blocked and b.blocked:
        return Preference(first, second, -1, raw="guard: both blocked", prob_first=0.5)
    if a.blocked:
        return Preference(first, second, 1, raw=f"guard: first {a.blocked}", prob_first=0.0)
    return Preference(first, second, 0, raw=f"guard: second {b.blocked}", prob_first=1.0)
