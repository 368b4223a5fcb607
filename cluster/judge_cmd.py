"""``oniray judge``: try a judge on captions, or against a labels file, before training.

    oniray judge label "caption" ... [key=value ...]
    oniray judge eval LABELS.tsv [--out RESULT.json] [key=value ...]

Consumes the run config (``--config``, default configs/default.yaml) with the train command's
overrides, restricted to what a judge reads: ``rewards.judge.*`` and ``env.id`` (the task's
goal comes from it, unless ``rewards.judge.task`` names one). Emits the verdicts, or the
figures of :mod:`rewards.judge_eval` on stdout and, with ``--out``, as JSON written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

from cluster.config import ConfigError, OniConfig, default_config, load_config
from cluster.run_dir import atomic_write_text
from rewards.judge_eval import LabelsError, evaluate, read_labels, summary_lines, verdict_name

# An override is a dotted key then '=' (env.id=..., rewards.judge.backend=...); anything else
# is a caption, even with an '=' in it ("Unknown direction: '=' ...").
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(captions, overrides) of ``oniray judge label``'s free arguments, each in order."""
    overrides = [a for a in args if _OVERRIDE.match(a)]
    return [a for a in args if not _OVERRIDE.match(a)], overrides


def judge_config(config: str | None, overrides: list[str]) -> OniConfig:
    """The config a judge is built from; :class:`ConfigError` for a key a judge does not read
    (it would be silently ignored) and for everything the loader rejects."""
    problems = []
    for item in overrides:
        key, _, value = item.partition("=")
        if not (key.strip() == "env.id" or key.strip().startswith("rewards.judge.")):
            problems.append(f"command line: '{key}' = {value!r}: oniray judge reads only "
                            f"rewards.judge.* and env.id")
    if problems:
        raise ConfigError(problems)
    return load_config(Path(config) if config else default_config(), overrides)


def _build(cfg: OniConfig):
    from rewards.judges import judge_task, make_judge

    judge_cfg = cfg.rewards.judge
    task = judge_task(judge_cfg, env_id=cfg.env.id)
    judge = make_judge(judge_cfg, env_id=cfg.env.id)
    mode = judge.answer_mode  # None for the judges that compute their verdicts
    guard = "guard on" if judge_cfg.guard else "guard off"
    print(f"judge: {judge.name}{f' ({mode})' if mode else ''}, task: {task}, {guard}",
          flush=True)
    return judge, task


def _fail(exc: Exception) -> int:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    print(f"oniray judge: {text.splitlines()[0] if text else type(exc).__name__}",
          file=sys.stderr)
    return 2


def run_label(config: str | None, args: list[str]) -> int:
    captions, overrides = split_overrides(args)
    if not captions:
        print("oniray judge label: give at least one caption", file=sys.stderr)
        return 2
    cfg = judge_config(config, overrides)
    try:
        judge, _ = _build(cfg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        return _fail(exc)
    try:
        for verdict in judge.label(captions):
            prob = "-" if verdict.prob is None else f"{verdict.prob:.3f}"
            print(f"{verdict_name(verdict.label):<11}  P(helpful)={prob:<5}  {verdict.caption}")
    finally:
        judge.close()
    return 0


def run_eval(config: str | None, labels: str, overrides: list[str], out: str | None) -> int:
    cfg = judge_config(config, overrides)
    try:
        rows = read_labels(labels)
    except LabelsError as exc:
        return _fail(exc)
    try:
        judge, task = _build(cfg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        return _fail(exc)
    try:
        result = evaluate(judge, rows, batch_size=cfg.rewards.judge.batch_size)
    finally:
        judge.close()
    print("\n".join(summary_lines(result)))
    if out:
        result = {"labels": str(labels), "task": task, "env_id": cfg.env.id,
                  "judge_config": dataclasses.asdict(cfg.rewards.judge), **result}
        atomic_write_text(Path(out), json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(f"written: {out}")
    return 0
