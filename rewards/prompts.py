"""ONI's judge prompts: load ``configs/prompts/oni.yaml``, map env ids to tasks, render prompts.

Consumes the YAML file named by ``JudgeConfig.prompts`` (templates, per-task goal strings,
labelled few-shot examples, default rules). Emits prompt strings for completion backends and
chat-message lists for chat backends. Every key and every template field is checked at load,
and all problems are reported together, each naming the file and the key.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = "configs/prompts/oni.yaml"

# NLE registers its tasks as NetHack<Task>-v0; the challenge is scored like the score task.
_ENV_TASKS = {"oniray/Corridor-v0": "corridor", "NetHackChallenge-v0": "score"}
_NLE_ID = re.compile(r"^(?:NLE/)?NetHack(?P<name>[A-Z][A-Za-z]*)-v\d+$")
# MiniHack's 161 ids by family: the first pattern found in the id names its task (so
# MultiRoom-N2-Lava is a lava task, LavaCross-Levitate too). Any other MiniHack id (Memento,
# HideNSeek, ...) gets the generic "minihack" goal.
_MINIHACK_TASKS = (
    ("KeyRoom", "minihack_keyroom"),
    ("River", "minihack_river"),
    ("Lava", "minihack_lava"),
    ("Quest", "minihack_quest"),
    ("Sokoban|Boxoban", "minihack_sokoban"),
    ("Maze|Labyrinth|SimpleCrossing", "minihack_maze"),
    ("Corridor", "minihack_corridor"),
    ("Room", "minihack_room"),
    ("Eat|Pray|Sink|Wield|Wear|PutOn|Zap|Read|WoD|Levitate|Freeze|Door|Skill", "minihack_skill"),
)
MINIHACK_GENERIC_TASK = "minihack"

# Each template must use exactly these fields: a missing one silently drops the caption or the
# goal from every prompt, an unknown one fails only when the first caption is rendered.
_TEMPLATE_FIELDS = {
    "label_template": {"goal", "examples", "caption"},
    "example_template": {"index", "text", "why", "label"},
    "compare_template": {"goal", "first", "second"},
}

Message = dict[str, str]


class PromptError(ValueError):
    """The prompt file is missing, unreadable or breaks the schema; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid prompt file:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Example:
    """A labelled NetHack message: helpful for the tasks in ``helpful_for``, not for others."""

    text: str
    helpful_for: frozenset[str]
    why: str = ""
    shot: bool = False  # shown to the LLM as a few-shot example

    def helpful(self, task: str) -> bool:
        return task in self.helpful_for


@dataclass(frozen=True)
class PromptSet:
    """The validated contents of one prompt file."""

    path: Path
    system: str
    label_template: str
    example_template: str
    compare_template: str
    goals: Mapping[str, str]
    examples: tuple[Example, ...]
    rules: Mapping[str, tuple[str, ...]]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.goals)

    def goal(self, task: str) -> str:
        if task not in self.goals:
            raise KeyError(f"{self.path}: no goal for task {task!r}; known: {sorted(self.goals)}")
        return self.goals[task]

    def labelled_examples(self, task: str) -> tuple[list[str], list[str]]:
        """(helpful texts, not-helpful texts) for ``task``."""
        self.goal(task)
        positives = [e.text for e in self.examples if e.helpful(task)]
        negatives = [e.text for e in self.examples if not e.helpful(task)]
        return positives, negatives

    def render_examples(self, task: str) -> str:
        shots = [e for e in self.examples if e.shot]
        return "\n".join(
            self.example_template.format(
                index=i, text=quote(e.text), why=e.why, label="FOO" if e.helpful(task) else "BAR"
            )
            for i, e in enumerate(shots, start=1)
        )

    def label_user_text(self, caption: str, *, task: str) -> str:
        return self.label_template.format(
            goal=self.goal(task), examples=self.render_examples(task), caption=quote(caption)
        )

    def compare_user_text(self, first: str, second: str, *, task: str) -> str:
        return self.compare_template.format(
            goal=self.goal(task), first=quote(first), second=quote(second)
        )

    def render_label_prompt(self, caption: str, *, task: str) -> str:
        return _completion(self.system, self.label_user_text(caption, task=task))

    def render_compare_prompt(self, first: str, second: str, *, task: str) -> str:
        return _completion(self.system, self.compare_user_text(first, second, task=task))

    def render_label_messages(self, caption: str, *, task: str) -> list[Message]:
        return _chat(self.system, self.label_user_text(caption, task=task))

    def render_compare_messages(self, first: str, second: str, *, task: str) -> list[Message]:
        return _chat(self.system, self.compare_user_text(first, second, task=task))


def quote(text: str) -> str:
    """A caption as a JSON string: quotes, backslashes and newlines in it are escaped, so the
    caption cannot close its own slot and pose as prompt text."""
    return json.dumps(text, ensure_ascii=False)


def _completion(system: str, user: str) -> str:
    return f"{system}\n\n{user}\n\n"


def _chat(system: str, user: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def task_for_env(env_id: str) -> str:
    """The prompt task of an env id: NetHackScore-v0 -> score, NetHackStaircasePet-v0 ->
    staircase_pet, oniray/Corridor-v0 -> corridor, MiniHack-KeyRoom-S15-v0 ->
    minihack_keyroom, any MiniHack id outside the known families -> minihack."""
    if env_id in _ENV_TASKS:
        return _ENV_TASKS[env_id]
    if env_id.startswith("MiniHack-"):
        name = env_id.removeprefix("MiniHack-")
        for pattern, task in _MINIHACK_TASKS:
            if re.search(pattern, name):
                return task
        return MINIHACK_GENERIC_TASK
    match = _NLE_ID.match(env_id)
    if match is None:
        raise ValueError(
            f"no judge task for env {env_id!r}: set rewards.judge.task "
            "(score, staircase, staircase_pet, oracle, gold, eat, scout, corridor, minihack_*)"
        )
    return re.sub(r"(?<!^)(?=[A-Z])", "_", match["name"]).lower()


def resolve_path(path: str | Path) -> Path:
    """A relative prompt path is read from the working directory, else from the repo root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def load_prompts(path: str | Path = DEFAULT_PROMPTS) -> PromptSet:
    """Load and validate a prompt file; raise :class:`PromptError` listing every problem."""
    return _load_cached(str(resolve_path(path).resolve()))


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> PromptSet:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise PromptError([f"{path}: not valid YAML: {str(exc).splitlines()[0]}"]) from None
    return _validate(Path(path), raw)


def _validate(path: Path, raw: Any) -> PromptSet:
    problems: list[str] = []

    def bad(key: str, why: str) -> None:
        problems.append(f"{path}: key '{key}': {why}")

    if not isinstance(raw, dict):
        raise PromptError([f"{path}: expected a mapping at the top level"])
    known = {"system", "goals", "examples", "rules", *_TEMPLATE_FIELDS}
    for key in sorted(set(raw) - known):
        bad(key, f"unknown key (expected {sorted(known)})")
    texts: dict[str, str] = {}
    for key in ("system", *_TEMPLATE_FIELDS):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            bad(key, "missing or not a non-empty string")
            continue
        texts[key] = value
        if key in _TEMPLATE_FIELDS:
            _check_fields(value, _TEMPLATE_FIELDS[key], lambda why, k=key: bad(k, why))

    goals = raw.get("goals")
    if not isinstance(goals, dict) or not goals:
        bad("goals", "missing or not a mapping of task -> goal string")
        goals = {}
    for task, goal in goals.items():
        if not isinstance(goal, str):
            bad(f"goals.{task}", "not a string")

    examples = _examples(raw.get("examples"), set(goals), bad)
    for task in goals:
        if not any(e.helpful(task) for e in examples):
            bad("examples", f"no helpful example for task {task!r}")
        if all(e.helpful(task) for e in examples):
            bad("examples", f"no not-helpful example for task {task!r}")
    rules = _rules(raw.get("rules", {}), set(goals), bad)
    if problems:
        raise PromptError(problems)
    return PromptSet(
        path=path,
        system=texts["system"],
        label_template=texts["label_template"],
        example_template=texts["example_template"],
        compare_template=texts["compare_template"],
        goals={str(t): str(g).strip() for t, g in goals.items()},
        examples=tuple(examples),
        rules=rules,
    )


def _check_fields(template: str, expected: set[str], bad: Any) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # an unmatched brace
        bad(f"not a valid format string: {exc}")
        return
    if fields - expected:
        bad(f"unknown fields {sorted(fields - expected)}; literal braces must be doubled")
    if expected - fields:
        bad(f"missing fields {sorted(expected - fields)}")


def _examples(raw: Any, tasks: set[str], bad: Any) -> list[Example]:
    if not isinstance(raw, list) or not raw:
        bad("examples", "missing or not a list")
        return []
    out: list[Example] = []
    for i, item in enumerate(raw):
        key = f"examples[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            bad(key, "needs a string 'text'")
            continue
        if set(item) - {"text", "helpful_for", "why", "shot"}:
            bad(key, f"unknown keys {sorted(set(item) - {'text', 'helpful_for', 'why', 'shot'})}")
        helpful = item.get("helpful_for")
        if not isinstance(helpful, list) or not all(isinstance(t, str) for t in helpful):
            bad(f"{key}.helpful_for", "needs a list of task names ([] = helpful for none)")
            continue
        for task in sorted(set(helpful) - tasks):
            bad(f"{key}.helpful_for", f"unknown task {task!r} (tasks are the keys of 'goals')")
        shot = bool(item.get("shot", False))
        if shot and not item.get("why"):
            bad(f"{key}.why", "a few-shot example needs a 'why'")
        out.append(Example(item["text"], frozenset(helpful), str(item.get("why", "")), shot))
    return out


def _rules(raw: Any, tasks: set[str], bad: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        bad("rules", "not a mapping of task -> list of regexes")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for task, patterns in raw.items():
        key = f"rules.{task}"
        if task not in tasks:
            bad(key, "unknown task (tasks are the keys of 'goals')")
        if not isinstance(patterns, list):
            bad(key, "not a list of regexes")
            continue
        for pattern in patterns:
            error = regex_error(pattern)
            if error:
                bad(key, error)
        out[task] = tuple(str(p) for p in patterns)
    return out


def regex_error(pattern: Any) -> str | None:
    """Why ``pattern`` is not a usable regex, or None."""
    if not isinstance(pattern, str):
        return f"{pattern!r} is not a string"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"bad regex {pattern!r}: {exc}"
    return None


def _default() -> PromptSet:
    return load_prompts(DEFAULT_PROMPTS)


def render_label_prompt(caption: str, *, task: str, prompts: PromptSet | None = None) -> str:
    """The classification prompt (completion form) for one caption."""
    return (prompts or _default()).render_label_prompt(caption, task=task)


def render_compare_prompt(
    first: str, second: str, *, task: str, prompts: PromptSet | None = None
) -> str:
    """The pairwise ranking prompt (completion form) for (first, second), in that order."""
    return (prompts or _default()).render_compare_prompt(first, second, task=task)


def render_label_messages(
    caption: str, *, task: str, prompts: PromptSet | None = None
) -> list[Message]:
    """The classification prompt as chat messages (system, user)."""
    return (prompts or _default()).render_label_messages(caption, task=task)


def render_compare_messages(
    first: str, second: str, *, task: str, prompts: PromptSet | None = None
) -> list[Message]:
    """The ranking prompt as chat messages (system, user)."""
    return (prompts or _default()).render_compare_messages(first, second, task=task)


def known_tasks(prompts: PromptSet | None = None) -> Iterable[str]:
    return (prompts or _default()).tasks
