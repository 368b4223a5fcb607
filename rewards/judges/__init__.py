"""Judges that label captions for the reward models; ``make_judge`` builds the configured one.

Backends are imported lazily: the embedding judge pulls in sentence-transformers, the
transformers judge a causal LM, vllm an engine, and a run uses exactly one of them. Every
backend is put behind the guard (``rewards.judge.guard``, on by default): master keys and
injections are answered before the backend sees them, agent-written text is redacted.
"""

from __future__ import annotations

from rewards.config import JudgeConfig
from rewards.judges.base import Judge, JudgeStats, Preference, Verdict
from rewards.judges.guard import GuardedJudge
from rewards.judges.text import TextJudge
from rewards.prompts import task_for_env

__all__ = [
    "GuardedJudge", "Judge", "JudgeStats", "Preference", "TextJudge", "Verdict", "judge_task",
    "make_judge",
]


def judge_task(cfg: JudgeConfig, *, env_id: str) -> str:
    """The prompt task: ``cfg.task`` if set, else derived from the env id."""
    return cfg.task or task_for_env(env_id)


def make_judge(cfg: JudgeConfig, *, env_id: str) -> Judge:
    """The judge ``cfg.backend`` names, for the task of ``env_id`` (or ``cfg.task``), behind
    the guard unless ``cfg.guard`` is off."""
    inner = _backend(cfg, judge_task(cfg, env_id=env_id))
    if not cfg.guard:
        return inner
    return GuardedJudge(inner, max_caption_chars=cfg.max_caption_chars)


def _backend(cfg: JudgeConfig, task: str) -> Judge:
    """The bare backend ``cfg.backend`` names."""
    if cfg.backend == "embedding":
        from rewards.judges.embedding import EmbeddingJudge

        return EmbeddingJudge(cfg, task)
    if cfg.backend == "rules":
        from rewards.judges.rules import RulesJudge

        return RulesJudge(cfg, task)
    if cfg.backend == "transformers":
        from rewards.judges.transformers_judge import TransformersJudge

        return TransformersJudge(cfg, task)
    if cfg.backend == "vllm":
        from rewards.judges.vllm_judge import VLLMJudge

        return VLLMJudge(cfg, task)
    if cfg.backend == "openai":
        from rewards.judges.openai_judge import OpenAIJudge

        return OpenAIJudge(cfg, task)
    raise ValueError(f"unknown judge backend {cfg.backend!r}")
