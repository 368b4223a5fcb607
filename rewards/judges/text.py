"""Text judges: the base class of the backends that answer prompts with text, and their
shared logic: sanitise, render, generate, parse strictly, retry, count.

Consumes a :class:`TextJudge` (its ``generate``, ``choose``, ``choice_probs`` and
``render_*``) and captions or caption pairs. Emits one Verdict / Preference per input, in
order. An answer that cannot be parsed is asked again, up to ``cfg.max_retries`` times, and is
otherwise returned as None and counted: it never becomes a label.

Three ways to get an answer, chosen by ``cfg.scoring`` and ``cfg.constrained`` and written
once (:func:`collect_answers`) for both questions, each a :class:`Grammar` (label, compare):

* free text (``scoring: generate``, not constrained, or a backend without choices): the judge
  writes its whole answer, and the strict parser reads the final tag;
* constrained (``scoring: generate``, ``constrained: true``): the prompt is followed by the
  answer's opening tag (after at most ``think_tokens`` tokens of free thought), and the backend
  continues with exactly one of the tag's values (:meth:`TextJudge.choose`), so every answer
  parses by construction;
* log-probabilities (``scoring: logprob``): the same prompt and opening tag, one forward pass,
  and P(value) for each of the tag's values (:meth:`TextJudge.choice_probs`); P(helpful) is
  normalised over FOO and BAR and thresholded at ``cfg.threshold``.
"""

from __future__ import annotations

import math
import random
import time
from abc import abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from rewards.judges.base import Judge, JudgeStats, Preference, Verdict
from rewards.parse import parse_label, parse_preference, sanitize_caption
from rewards.prompts import load_prompts

if TYPE_CHECKING:
    from rewards.config import JudgeConfig

T = TypeVar("T")
A = TypeVar("A")
# A prompt as a backend takes it: a completion string, or chat messages (role, content).
Prompt = str | list[dict[str, str]]

# The answer grammar of ONI's prompts (rewards/parse.py reads it): an opening tag, one value,
# a closing tag. Values carry their leading space, as the prompts write them ("<label> FOO").
LABEL_OPEN, LABEL_CLOSE = "<label>", " </label>"
LABEL_CHOICES = (" FOO", " BAR")  # helpful, not helpful
COMPARE_OPEN, COMPARE_CLOSE = "<best_description>", " </best_description>"
COMPARE_CHOICES = (" 1", " 2", " none")  # first, second, neither


@dataclass
class TextJudgeStats(JudgeStats):
    """Counters of one text judge since construction (``labels``, ``labels_empty`` and
    ``comparisons`` come from :class:`JudgeStats`)."""

    label_generations: int = 0  # prompts sent, retries included
    label_request_failures: int = 0  # generate returned None
    label_parse_failures: int = 0  # answers without a readable final <label> tag
    label_unparseable: int = 0  # captions still unparsed after every retry
    comparisons_empty: int = 0  # both captions empty: a tie without asking
    compare_generations: int = 0
    compare_request_failures: int = 0
    compare_parse_failures: int = 0
    compare_unparseable: int = 0
    generate_seconds: float = 0.0


@dataclass(frozen=True)
class Grammar:
    """One question's answer grammar: an opening tag, one of ``choices``, a closing tag."""

    kind: str  # "label" or "compare": the prefix of its counters in TextJudgeStats
    open: str
    close: str
    choices: tuple[str, ...]
    values: tuple[Any, ...]  # what each choice means (label: True/False; compare: 0, 1, -1)
    parse: Callable[[str], Any]  # the strict parser of a whole free answer
    # Log-probability scoring: the index of the chosen choice, from the choices' probabilities
    # and cfg.threshold; and the note on the probabilities kept in the raw answer.
    decide: Callable[[list[float], float], int]
    note: Callable[[list[float]], str]


LABEL = Grammar(
    "label", LABEL_OPEN, LABEL_CLOSE, LABEL_CHOICES, (True, False), parse_label,
    decide=lambda probs, threshold: 0 if probs[0] > threshold else 1,
    note=lambda probs: f"(P(FOO)={probs[0]:.4f})",
)
COMPARE = Grammar(
    "compare", COMPARE_OPEN, COMPARE_CLOSE, COMPARE_CHOICES, (0, 1, -1), parse_preference,
    decide=lambda probs, _: max(range(len(probs)), key=probs.__getitem__),
    note=lambda probs: f"(P(1)={probs[0]:.4f}, P(2)={probs[1]:.4f}, P(none)={probs[2]:.4f})",
)


@dataclass(frozen=True)
class Answer:
    """One prompt's answer, whichever way it was got (module docstring)."""

    value: Any  # one of the grammar's values; None: unparseable, or no answer
    raw: str  # the answer's text ("no answer" where log-probabilities failed)
    answered: bool = True  # False: no attempt got any answer (an outage)
    probs: list[float] | None = None  # log-probability scoring: P(choice), per choice


class TextJudge(Judge):
    """A judge that answers prompts with text; see ``rewards.prompts`` and ``rewards.parse``.

    Subclasses implement ``generate``; the shared ``label``/``compare`` (sanitise, render,
    generate, parse strictly, retry unparseable answers, count) are the functions below. A
    subclass chooses chat prompts with ``use_chat`` and renders them in ``render_chat``.
    """

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        self.cfg = cfg
        self.task = task
        self.prompts = load_prompts(cfg.prompts)
        self.prompts.goal(task)  # an unknown task fails here, not at the first caption
        self.counters = TextJudgeStats()
        if cfg.scoring == "logprob" and not self.supports_choices:
            raise ValueError(
                f"rewards.judge.scoring=logprob: the {self.name} backend cannot score "
                "log-probabilities (use transformers, vllm or openai)"
            )

    @property
    def answer_mode(self) -> str:
        """How this judge answers: ``logprob``, ``constrained`` or ``free`` (module doc)."""
        if self.cfg.scoring == "logprob":
            return "logprob"
        return "constrained" if self.cfg.constrained and self.supports_choices else "free"

    #: The backend implements ``choose`` and ``choice_probs`` (constrained answers and
    #: log-probability scoring). Backends that cannot leave it False: they answer in free text,
    #: and ``scoring: logprob`` is refused at construction.
    supports_choices: bool = False

    @abstractmethod
    def generate(
        self, prompts: Sequence[Any], *, max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str | None]:
        """One completion per prompt, in order; None where the request failed for good.
        ``max_new_tokens`` overrides ``cfg.max_new_tokens``; generation ends before any of
        ``stop`` (the stop string itself is not returned)."""

    def choose(self, prompts: Sequence[Any], choices: Sequence[str]) -> list[str | None]:
        """For each prompt, which ends inside the judge's answer right after an opening tag
        (:meth:`answer_prompt`), the continuation, constrained to be exactly one of ``choices``
        (greedy, or sampled at ``cfg.temperature``); None where the request failed."""
        raise NotImplementedError(f"{self.name} judge cannot constrain its answers")

    def choice_probs(
        self, prompts: Sequence[Any], choices: Sequence[str]
    ) -> list[list[float] | None]:
        """For each prompt (as for :meth:`choose`), the probability of each of ``choices`` as
        the continuation, normalised to sum to 1 over ``choices``, from one forward pass;
        None where the request failed. Defined as the probability that decoding constrained
        to ``choices`` produces it (:func:`constrained_probs`): for choices that differ at
        their first token (FOO, BAR) the first tokens' probabilities, renormalised; choices
        that share a first token (" 1", " 2" on SmolLM2: " " then "1" / "2") also read the
        token where they part."""
        raise NotImplementedError(f"{self.name} judge cannot score log-probabilities")

    def answer_prompt(self, prompt: Any, answer_start: str) -> Any:
        """``prompt`` followed by the beginning of the judge's own answer. A completion string
        gets it appended; chat messages get a final assistant message that the backend must
        continue (``continue_final_message``), not close; chat messages that already end with
        the assistant's begun answer get ``answer_start`` added to it (so that an answer can be
        continued step by step)."""
        if isinstance(prompt, str):
            return prompt + answer_start
        if prompt and prompt[-1].get("role") == "assistant":
            last = prompt[-1]
            return [*prompt[:-1], {**last, "content": last["content"] + answer_start}]
        return [*prompt, {"role": "assistant", "content": answer_start}]

    @property
    def use_chat(self) -> bool:
        """Prompts are chat messages (passed through :meth:`render_chat`), not one completion
        string: as ``cfg.api`` says (openai, vllm); a backend that decides otherwise overrides
        it (transformers: whether the model has a chat template)."""
        return self.cfg.api == "chat"

    def render_chat(self, messages: list[dict[str, str]]) -> Prompt:
        """A chat prompt as this backend takes it: the messages themselves (an OpenAI chat
        endpoint, vLLM's chat call); a backend that applies the chat template itself returns
        the rendered string."""
        return messages

    def render_label(self, caption: str) -> Prompt:
        """The prompt sent for one (already sanitised) caption."""
        if self.use_chat:
            return self.render_chat(self.prompts.render_label_messages(caption, task=self.task))
        return self.prompts.render_label_prompt(caption, task=self.task)

    def render_compare(self, first: str, second: str) -> Prompt:
        """The prompt sent for one (already sanitised) pair, in that order."""
        if self.use_chat:
            messages = self.prompts.render_compare_messages(first, second, task=self.task)
            return self.render_chat(messages)
        return self.prompts.render_compare_prompt(first, second, task=self.task)

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        return label_captions(self, captions)

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        return compare_pairs(self, pairs)

    def stats(self) -> TextJudgeStats:
        """Counters since construction (requests, retries, parse failures, generate time)."""
        return replace(self.counters)


def _ask(
    judge: TextJudge,
    prompts: list[Any],
    parse: Callable[[A], T | None],
    *,
    kind: str,
    ask: Callable[[list[Any]], list[A | None]] | None = None,
) -> list[tuple[T | None, A | None]]:
    """(parsed, raw) per prompt; re-asks the unparsed ones up to ``max_retries`` times. raw is
    None where no attempt got an answer (the request failed every time). ``ask`` defaults to
    free-text generation."""
    ask = ask or judge.generate
    stats = judge.counters
    results: list[tuple[T | None, A | None]] = [(None, None)] * len(prompts)
    pending = list(range(len(prompts)))
    for _ in range(1 + judge.cfg.max_retries):
        if not pending:
            break
        start = time.perf_counter()
        answers = ask([prompts[i] for i in pending])
        stats.generate_seconds += time.perf_counter() - start
        if len(answers) != len(pending):
            raise RuntimeError(
                f"{judge.name}.generate returned {len(answers)} answers for {len(pending)} prompts"
            )
        _add(stats, f"{kind}_generations", len(pending))
        still = []
        for i, answer in zip(pending, answers, strict=True):
            if answer is None:
                _add(stats, f"{kind}_request_failures", 1)
                still.append(i)
                continue
            parsed = parse(answer)
            results[i] = (parsed, answer)
            if parsed is None:
                _add(stats, f"{kind}_parse_failures", 1)
                still.append(i)
        pending = still
    _add(stats, f"{kind}_unparseable", len(pending))
    return results


def _add(stats: TextJudgeStats, name: str, n: int) -> None:
    setattr(stats, name, getattr(stats, name) + n)


def label_captions(judge: TextJudge, captions: Sequence[str]) -> list[Verdict]:
    """One verdict per caption. Empty captions are not sent: they are labelled not helpful."""
    limit = judge.cfg.max_caption_chars
    clean = [sanitize_caption(c, limit) for c in captions]
    judge.counters.labels += len(captions)
    asked = [i for i, c in enumerate(clean) if c]
    judge.counters.labels_empty += len(captions) - len(asked)
    answers = collect_answers(judge, [judge.render_label(clean[i]) for i in asked], LABEL)
    verdicts = [Verdict(caption=c, label=False, raw="") for c in captions]
    for i, a in zip(asked, answers, strict=True):
        prob = a.probs[0] if a.probs else None  # P(FOO): P(helpful)
        verdicts[i] = Verdict(captions[i], a.value, raw=a.raw, answered=a.answered, prob=prob)
    return verdicts


def collect_answers(judge: TextJudge, prompts: list[Any], grammar: Grammar) -> list[Answer]:
    """One answer per prompt, in the judge's :attr:`~TextJudge.answer_mode` (module doc):
    free text read by ``grammar.parse``; or, after the opening tag, one of the grammar's
    choices (constrained) or the choices' probabilities (logprob). Counted and retried by
    :func:`_ask`."""
    mode = judge.answer_mode
    if mode == "free":
        answers = _ask(judge, prompts, grammar.parse, kind=grammar.kind)
        return [Answer(value, raw or "", answered=raw is not None) for value, raw in answers]
    starts = _answer_starts(judge, prompts, grammar.open)
    prompts = [judge.answer_prompt(p, s) for p, s in zip(prompts, starts, strict=True)]
    if mode == "constrained":
        chosen = _ask(judge, prompts, grammar.parse, kind=grammar.kind,
                      ask=_choose_answers(judge, grammar.choices, starts, prompts, grammar.close))
        return [Answer(value, raw or "", answered=raw is not None) for value, raw in chosen]
    scored = _ask(judge, prompts, _checked_probs(len(grammar.choices)), kind=grammar.kind,
                  ask=lambda ps: judge.choice_probs(ps, grammar.choices))
    out = []
    for start, (probs, _) in zip(starts, scored, strict=True):
        if probs is None:
            out.append(Answer(None, "no answer", answered=False))
            continue
        best = grammar.decide(probs, judge.cfg.threshold)
        raw = f"{start}{grammar.choices[best]}{grammar.close} {grammar.note(probs)}"
        out.append(Answer(grammar.values[best], raw, probs=probs))
    return out


def _answer_starts(judge: TextJudge, prompts: list[Any], opening: str) -> list[str]:
    """The start of each answer: up to ``think_tokens`` tokens of free thought, then the
    opening tag. A thought that fails or runs out of budget is kept as it is; the tag follows."""
    if judge.cfg.think_tokens <= 0 or not prompts:
        return [opening] * len(prompts)
    start = time.perf_counter()
    thoughts = judge.generate(prompts, max_new_tokens=judge.cfg.think_tokens, stop=[opening])
    judge.counters.generate_seconds += time.perf_counter() - start
    # A thought must not leave a tag open: the forced tag would then sit inside it.
    return [_close_thought(t or "") + opening for t in thoughts]


def _close_thought(thought: str) -> str:
    thought = thought.rstrip()
    return f"{thought}\n" if thought else ""


def _choose_answers(
    judge: TextJudge, choices: Sequence[str], starts: list[str], prompts: list[Any], close: str
) -> Callable[[list[Any]], list[str | None]]:
    """``ask`` for constrained answers: the full answer text (thought, tag, value, closing
    tag), so the strict parser reads it like any other answer and counts what it can't read."""
    start_of = {id(p): s for p, s in zip(prompts, starts, strict=True)}

    def ask(batch: list[Any]) -> list[str | None]:
        values = judge.choose(batch, choices)
        return [None if v is None else f"{start_of[id(p)]}{v}{close}"
                for p, v in zip(batch, values, strict=True)]

    return ask


def _checked_probs(n: int) -> Callable[[list[float]], list[float] | None]:
    """Accept a probability vector only if it has ``n`` finite entries summing to ~1."""

    def check(probs: list[float]) -> list[float] | None:
        if len(probs) != n or not all(0.0 <= p <= 1.0 for p in probs):
            return None
        return probs if abs(sum(probs) - 1.0) < 1e-3 else None

    return check


def compare_pairs(judge: TextJudge, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    """One preference per pair, asked in the given order only. Two empty captions are a tie
    without asking; one empty caption is still asked (the prompt allows empty descriptions)."""
    limit = judge.cfg.max_caption_chars
    clean = [(sanitize_caption(a, limit), sanitize_caption(b, limit)) for a, b in pairs]
    judge.counters.comparisons += len(pairs)
    asked = [i for i, (a, b) in enumerate(clean) if a or b]
    judge.counters.comparisons_empty += len(pairs) - len(asked)
    answers = collect_answers(judge, [judge.render_compare(*clean[i]) for i in asked], COMPARE)
    prefs = [Preference(first=a, second=b, preferred=-1) for a, b in pairs]
    for i, a in zip(asked, answers, strict=True):
        prob_first = None
        if a.probs:  # P(1 better) among the decided answers; no preference either way: 1/2
            decided = a.probs[0] + a.probs[1]
            prob_first = a.probs[0] / decided if decided > 0 else 0.5
        prefs[i] = Preference(pairs[i][0], pairs[i][1], a.value, raw=a.raw,
                              prob_first=prob_first)
    return prefs


def _swap(preferred: int) -> int:
    return {0: 1, 1: 0}.get(preferred, preferred)


def compare_both_orders(judge: Judge, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
    """Ask every pair as (a, b) and as (b, a), in one batch, to cancel the judge's position
    bias (LLMs favour one slot); one Preference of (a, b) per pair.

    ``preferred``: agreement -> that answer (0 = a, 1 = b, -1 = tie); disagreement -> -1;
    None when either order was unparseable. ``prob_first``: where both orders have one,
    P(a better) = mean(P(a over b), 1 - P(b over a)), so each slot counts once; else None.
    """
    pairs = list(pairs)
    prefs = judge.compare(pairs + [(b, a) for a, b in pairs])
    out: list[Preference] = []
    for (a, b), forward, backward in zip(
        pairs, prefs[: len(pairs)], prefs[len(pairs) :], strict=True
    ):
        if forward.preferred is None or backward.preferred is None:
            out.append(Preference(a, b, None, raw=f"{forward.raw} | {backward.raw}"))
            continue
        preferred = forward.preferred if forward.preferred == _swap(backward.preferred) else -1
        prob_first = None
        if forward.prob_first is not None and backward.prob_first is not None:
            prob_first = (forward.prob_first + 1.0 - backward.prob_first) / 2
        out.append(Preference(a, b, preferred, raw=f"{forward.raw} | {backward.raw}",
                              prob_first=prob_first))
    return out


# -- choice probabilities from token log-probabilities (shared by every backend) ------------


def decision_depths(sequences: Sequence[Sequence[Hashable]]) -> list[int]:
    """For each choice's token sequence, the index of its deciding token: the first token that
    no other choice shares at that point (after it, constrained decoding has no choice left).
    Raises ValueError for a choice that is a prefix of another (it could never be decided)."""
    depths = []
    for i, seq in enumerate(sequences):
        others = [s for j, s in enumerate(sequences) if j != i]
        for depth in range(len(seq)):
            if not any(tuple(s[: depth + 1]) == tuple(seq[: depth + 1]) for s in others):
                depths.append(depth)
                break
        else:
            raise ValueError(f"choice tokens {list(seq)} are a prefix of another choice's")
    return depths


def constrained_probs(
    sequences: Sequence[Sequence[Hashable]],
    logprob: Callable[[tuple[Hashable, ...], Hashable], float],
) -> list[float]:
    """P(choice) under decoding constrained to the choices: at each point where the choices'
    token sequences diverge, the model's probabilities renormalised over the tokens that
    continue some choice; their product along a choice's path up to its deciding token.
    ``logprob(prefix, token)`` is the model's log P(token | prompt + prefix). For FOO / BAR
    (which differ at their first token) this is P(FOO) / (P(FOO) + P(BAR)) after the tag."""
    depths = decision_depths(sequences)
    probs = []
    for seq, depth in zip(sequences, depths, strict=True):
        p = 1.0
        for j in range(depth + 1):
            prefix = tuple(seq[:j])
            siblings = {s[j] for s in sequences if len(s) > j and tuple(s[:j]) == prefix}
            if len(siblings) == 1:
                continue  # every choice here goes on with this token: constrained, P = 1
            # Shifted by the largest log-probability so that no exp underflows to 0/0.
            lps = {t: logprob(prefix, t) for t in siblings}
            top = max(lps.values())
            p *= math.exp(lps[seq[j]] - top) / sum(math.exp(v - top) for v in lps.values())
        probs.append(p)
    return probs


def constrained_choice(
    sequences: Sequence[Sequence[Hashable]],
    logprob: Callable[[tuple[Hashable, ...], Hashable], float],
    *,
    temperature: float = 0.0,
    rng: random.Random | None = None,
) -> int:
    """The index of the choice that decoding constrained to ``sequences`` produces: token by
    token, the most likely of the tokens that continue some choice (greedy, as vLLM's guided
    choice decodes), or one sampled from them at ``temperature``."""
    alive = list(range(len(sequences)))
    depth = 0
    while len(alive) > 1:
        prefix = tuple(sequences[alive[0]][:depth])
        siblings = sorted({sequences[i][depth] for i in alive}, key=repr)
        if len(siblings) > 1:
            lps = [logprob(prefix, t) for t in siblings]
            if temperature > 0:
                top = max(lps)
                weights = [math.exp((v - top) / temperature) for v in lps]
                token = (rng or random).choices(siblings, weights=weights)[0]
            else:
                token = siblings[max(range(len(lps)), key=lps.__getitem__)]
            alive = [i for i in alive if sequences[i][depth] == token]
        depth += 1
    return alive[0]
