"""Config schema of the reward side: reward combination, judge, annotator, reward models, RND.

Consumed by ``cluster.config`` (which nests :class:`RewardsConfig` under ``rewards``).
Every field is documented and range-checked at load; components never change the config.
The judge's shared keys sit at ``rewards.judge.*``, each backend's at
``rewards.judge.<backend>.*``; a key of the old flat layout (``rewards.judge.base_url``) is
refused at load with the key it became (``cluster.config``'s did-you-mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from actors.fields import param, section


@dataclass
class RulesJudgeConfig:
    """The rules backend: a caption is helpful when a regex matches it."""

    positive: list[str] = param(
        factory=list, doc="regexes whose match makes a caption helpful; empty = the task's "
        "rules in the prompt file"
    )


@dataclass
class EmbeddingJudgeConfig:
    """The embedding backend: few-shot nearest examples in sentence-embedding space."""

    model: str = param("", "local sentence-transformers directory; empty = all-MiniLM-L6-v2")
    margin: float = param(0.0, "helpful if sim(positive) - sim(negative) > margin")
    top_k: int = param(
        3, "sim(...) = mean cosine similarity of the k nearest examples", ge=1
    )
    cache_size: int = param(
        100_000, "caption embeddings kept (least recently used dropped)", ge=0
    )
    per_sentence: bool = param(
        True, "score each sentence of a caption and keep the best (NetHack joins independent "
        "events into one message; sentences recur far more often than their combinations, so "
        "most captions cost no new embedding)"
    )
    goal_sentences: bool = param(
        False, "each sentence of the goal string, and each clause of three words or more, is a "
        "helpful example too, beside the whole goal (a short message sits near the one clause "
        "that names its event, far from the average of a paragraph)"
    )
    contrast: bool = param(
        True, "a helpful example or goal sentence with a direction word (down/up, "
        "downstairs/upstairs, descend/climb) is no evidence for a caption nearer to its "
        "opposite (the same text with those words swapped) or for one that states no "
        "direction: an embedding barely tells 'staircase up' from 'staircase down', or either "
        "from 'You sit on the stairs.'"
    )
    events_only: bool = param(
        True, "score only sentences that report a change in the world: negated ones (a "
        "failed or refused action), wh-prompts waiting for an argument, lines ending in a "
        "colon and descriptions of looked-at map symbols are not helpful, whatever words they "
        "share with the goal (rewards/judges/events.py)"
    )
    negatives: Literal["all", "unhelpful_everywhere"] = param(
        "all", "the not-helpful neighbours: all = every example not helpful for this task; "
        "unhelpful_everywhere = only examples helpful for no task (an example helpful for "
        "another goal, such as 'The door opens.', is no evidence against this one)"
    )


@dataclass
class TransformersJudgeConfig:
    """The transformers backend: a local Hugging Face causal LM on the CPU."""

    model: str = param("", "local Hugging Face model directory (nothing is downloaded)")


@dataclass
class VLLMJudgeConfig:
    """The vllm backend: a vLLM engine in this process, a child process or a Ray actor."""

    model: str = param("", "local model directory the engine loads")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto", "weight and activation dtype (float32 on CPU hosts)"
    )
    tensor_parallel_size: int = param(1, "vLLM tensor parallelism", ge=1)
    num_gpus: float = param(
        0.0, "GPUs of the engine's Ray actor (with Ray up, > 0 puts the engine in one)", ge=0
    )
    resources: dict[str, float] = param(
        factory=dict, doc="custom Ray resources the engine's actor requires (cluster "
        "placement; non-empty puts the engine in a Ray actor)"
    )
    cpu_kv_cache_gib: int = param(
        1, "on CPU hosts: GiB of memory the engine reserves for its KV cache "
        "(VLLM_CPU_KVCACHE_SPACE; vLLM's own default can exceed a laptop's free memory and "
        "fail at start-up); a VLLM_CPU_KVCACHE_SPACE set in the environment wins", ge=1
    )
    python: str = param(
        ".venv-vllm/bin/python", "the interpreter that runs the engine when `import vllm` "
        "fails in oniray's own (CPU hosts; made by `make vllm-venv`)"
    )


@dataclass
class OpenAIJudgeConfig:
    """The openai backend: any OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI, ...)."""

    model: str = param("", "the served model name")
    base_url: str = param("http://127.0.0.1:8000/v1", "OpenAI-compatible server")
    api_key_env: str = param(
        "ONIRAY_JUDGE_API_KEY", "name of the environment variable holding the API key "
        "(the key itself never appears in config, logs or checkpoints)"
    )
    max_concurrency: int = param(8, "concurrent HTTP requests to the judge", ge=1)
    timeout_s: float = param(60.0, "per-request timeout, seconds", gt=0)
    breaker_failures: int = param(
        5, "consecutive failed requests that open the circuit breaker", ge=1
    )
    breaker_cooldown_s: float = param(
        30.0, "seconds the open breaker answers None before probing", gt=0
    )


@dataclass
class JudgeConfig:
    """The LLM judge that labels captions; shared keys here, each backend's in its section."""

    backend: Literal["embedding", "rules", "openai", "transformers", "vllm"] = param(
        "embedding", "which judge: embedding (offline, CPU), rules, openai (HTTP), "
        "transformers (local HF dir), vllm (local engine); its settings are in the section "
        "of that name"
    )
    task: str = param(
        "", "task whose goal string the prompts use (score, staircase, oracle, ...); "
        "empty = derived from env.id"
    )
    prompts: str = param(
        "configs/prompts/oni.yaml", "prompt templates, few-shot examples and goal strings"
    )
    api: Literal["completions", "chat"] = param(
        "completions", "openai and vllm backends: prompts as one completion string, or as "
        "chat messages (the OpenAI endpoint called; vLLM applies the model's chat template)"
    )
    max_retries: int = param(
        3, "retries of a failed or unparseable request (and the annotator's re-asks of a "
        "caption left unparsed)", ge=0
    )
    backoff_s: float = param(
        0.5, "first retry delay after a failed request (openai) or a failing judge "
        "(annotator); doubles each retry", ge=0
    )
    max_new_tokens: int = param(256, "text judges: generation budget per answer", ge=1)
    scoring: Literal["generate", "logprob"] = param(
        "generate", "text judges: generate = write an answer and parse its label tag; logprob = "
        "one forward pass per caption, P(helpful) from the label tokens' probabilities after "
        "the prompt and the opening tag (no generation)"
    )
    constrained: bool = param(
        True, "text judges, scoring=generate: force the answer into the label grammar where "
        "the backend can (vLLM guided choice, logits restricted to the label tokens), so every "
        "answer parses; off = free text read by the strict parser"
    )
    think_tokens: int = param(
        0, "text judges, constrained or logprob: tokens the judge may write freely (think "
        "aloud) before the opening label tag is forced; 0 = the tag comes first", ge=0
    )
    threshold: float = param(
        0.5, "a caption is labelled helpful when the judge's P(helpful) exceeds this (logprob "
        "scoring and every backend that gives a probability)", ge=0, le=1
    )
    guard: bool = param(
        True, "answer captions that try to fool the judge (punctuation only, reasoning "
        "openers, instructions, label tokens) as not helpful without asking it, and hide "
        "agent-written text (engravings, object names) from it; see rewards/judges/guard.py. "
        "Off only to measure a backend alone"
    )
    temperature: float = param(0.0, "text judges: sampling temperature", ge=0)
    batch_size: int = param(32, "captions per judge batch", ge=1)
    max_caption_chars: int = param(
        512, "captions longer than this are cut (with a marker) before they reach the judge",
        ge=32,
    )
    rules: RulesJudgeConfig = section(RulesJudgeConfig)
    embedding: EmbeddingJudgeConfig = section(EmbeddingJudgeConfig)
    transformers: TransformersJudgeConfig = section(TransformersJudgeConfig)
    vllm: VLLMJudgeConfig = section(VLLMJudgeConfig)
    openai: OpenAIJudgeConfig = section(OpenAIJudgeConfig)


@dataclass
class AnnotatorConfig:
    """The asynchronous annotation service that feeds the judge and trains reward models."""

    enabled: bool = param(
        True, "run the annotation service (needed by a judge-based reward model: "
        "rewards.model.kind retrieval, classification or ranking)"
    )
    queue_size: int = param(
        4096, "captions waiting for the judge; the lowest-priority ones are shed beyond it "
        "(the oldest with priority newest, the newest with priority oldest)", ge=1
    )
    priority: Literal["newest", "oldest"] = param("newest", "which queued captions to label first")
    canary_every: int = param(
        200, "slip a canary caption (true label: not helpful) in every N labels; 0 = never", ge=0
    )
    canary_max_fpr: float = param(
        0.2, "warn loudly when the judge calls more canaries helpful than this", ge=0, le=1
    )
    batch_wait_s: float = param(
        1.0, "with fewer than judge.batch_size captions queued, wait up to this long for more "
        "before asking the judge (a full batch costs a local judge several times less CPU per "
        "caption than a batch of one; 0 = ask at once)", ge=0
    )
    flush_interval_s: float = param(
        1.0, "write new labels to the store at least this often, seconds (a kill -9 loses "
        "at most this much labelling, which is asked again)", gt=0
    )
    max_pending_submissions: int = param(
        16, "caption submissions the driver keeps outstanding; beyond it a fragment's "
        "captions are skipped (each pending call pins its captions in the object store)", ge=1
    )
    max_restarts: int = param(
        3, "annotator restarts after it dies, per session (it reloads the label store); one "
        "more death stops the run with a checkpoint", ge=0
    )
    num_cpus: float = param(1.0, "CPUs reserved for the annotator actor", ge=0)
    nice: int = param(
        10, "OS scheduling niceness of the annotator's process: where it shares cores with "
        "rollouts and learners, the judge takes idle cycles and training keeps its speed", ge=0,
        le=19,
    )
    resources: dict[str, float] = param(factory=dict, doc="custom Ray resources it requires")


@dataclass
class RewardModelConfig:
    """The intrinsic reward model distilled from the judge's labels (ONI)."""

    kind: Literal["none", "retrieval", "classification", "ranking", "count"] = param(
        "retrieval", "ONI's reward model: retrieval (label table), classification, ranking; "
        "or count: label-free, every non-empty message scores 1, so the reward is its "
        "episodic count alone, c_int * N^-beta (message novelty; needs no judge or "
        "annotator); none = no intrinsic reward (set rewards.intrinsic_coef to 0 too)"
    )
    threshold: float = param(
        0.5, "classification: reward 1 where the model's P(helpful) exceeds it (the judge's "
        "own probabilities are cut at rewards.judge.threshold)", ge=0, le=1
    )
    ranking_quantile: float = param(
        0.5, "ranking: reward where the normalised score exceeds this quantile", ge=0, le=1
    )
    train_every_labels: int = param(64, "retrain after this many new labels", ge=1)
    train_every_s: float = param(
        10.0, "also retrain when there are new labels and this many seconds passed", gt=0
    )
    train_steps: int = param(200, "optimiser steps per retraining", ge=1)
    lr: float = param(1e-3, "reward-model learning rate", gt=0)
    holdout_fraction: float = param(
        0.1, "labels held out to measure accuracy", ge=0, lt=1
    )
    pairs_per_round: int = param(64, "ranking: new preference pairs asked per round", ge=1)
    batch_size: int = param(64, "captions (classification) or pairs (ranking) per step", ge=1)


@dataclass
class RNDConfig:
    """Random network distillation bonus on observations."""

    coef: float = param(0.0, "weight of the RND bonus; 0 = off", ge=0)
    lr: float = param(1e-4, "predictor learning rate", gt=0)
    embedding_dim: int = param(64, "output size of target and predictor", ge=1)


@dataclass
class RewardsConfig:
    """How the learner's reward is made: r = c_ext clip(r_ext) + c_int r_int N^-beta (+ RND)."""

    extrinsic_coef: float = param(
        0.1, "c_ext: weight of the environment's reward (0.1: ONI's for NetHackScore)"
    )
    extrinsic_clip: float | None = param(
        None, "clip |r_ext| to this before weighting; null = no clip", gt=0
    )
    intrinsic_coef: float = param(
        0.4, "c_int: weight of the intrinsic reward (0.4: ONI's); 0 = the environment's "
        "reward alone", ge=0
    )
    count_exponent: float = param(
        3.0, "beta: the intrinsic reward is divided by msg_count ** beta (ONI)", ge=0
    )
    judge: JudgeConfig = section(JudgeConfig)
    annotator: AnnotatorConfig = section(AnnotatorConfig)
    model: RewardModelConfig = section(RewardModelConfig)
    rnd: RNDConfig = section(RNDConfig)
