"""An LLM judge behind any OpenAI-compatible server (vLLM, llama.cpp, TGI, OpenAI itself).

Consumes: prompts rendered by ``rewards.prompts`` (through ``label`` / ``compare``).
Emits: one completion per prompt, ``None`` where the server failed for good; ``stats()`` and
``drain_latencies()`` for the annotator's metrics. Constrained answers use vLLM's guided-choice
extension (``structured_outputs``); log-probability scoring reads the ``logprobs`` of one-token
answers (:meth:`OpenAIJudge.choice_probs`); a chat ending with the judge's begun answer is
continued with vLLM's ``continue_final_message``.

Transport: ``requests`` (already a dependency), one ``Session`` per pool thread because a
Session is not thread-safe. ``/completions`` takes ``batch_size`` prompts per request; chat
endpoints take one conversation per request. At most ``max_concurrency`` requests are in
flight, whichever thread calls ``generate``.

Failure handling, per request: ``timeout_s`` bounds each attempt; timeouts, connection errors,
5xx, 429 and malformed bodies are retried up to ``max_retries`` times, ``backoff_s`` doubling
after each; other 4xx are not (a wrong key or model name will not fix itself). A
:class:`~rewards.judges.breaker.CircuitBreaker` spans requests: after ``breaker_failures``
consecutive failures every request returns None at once for ``breaker_cooldown_s``, then one
probe decides whether to close. Worst case for one call while the server hangs:
``(max_retries + 1) * timeout_s`` plus the backoffs, then fast failures until it is back.

The API key is read from the environment variable named by ``api_key_env`` and sent as
``Authorization: Bearer``; it is never stored in config, logged, or shown by ``repr``.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from rewards.config import JudgeConfig
from rewards.judges.base import counts_by_kind
from rewards.judges.breaker import CIRCUIT_CODES, OPEN, CircuitBreaker
from rewards.judges.text import TextJudge, TextJudgeStats, constrained_probs

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the latency histogram; same shape as a Prometheus Histogram's.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Failure kinds worth retrying: the server may answer next time.
RETRYABLE = frozenset({"timeout", "connection", "http_5xx", "http_429", "garbage"})
# Top alternatives asked per answer token in logprob scoring: OpenAI's cap, and vLLM's
# default --max-logprobs.
TOP_LOGPROBS = 20
# Request fields only vLLM understands (constrained answers, continued chat answers).
_VLLM_EXTENSIONS = frozenset({"structured_outputs", "continue_final_message"})
# Enough for any tag value of the judge's grammar; guided choice ends the answer itself.
CHOICE_MAX_TOKENS = 16
# A chat prompt is either a plain user message or a full message list (system, few-shot, ...).
ChatMessages = list[dict[str, str]]


@dataclass
class OpenAIStats(TextJudgeStats):
    """The text judge's counters plus the HTTP transport's (latencies of answered requests;
    buckets: :meth:`OpenAIJudge.latency_buckets`)."""

    http_requests: int = 0  # attempts
    http_answered: int = 0
    http_failures: int = 0  # failed attempts, of every kind
    http_retries: int = 0  # attempts after a request's first
    http_short_circuited: int = 0  # requests the open breaker refused
    circuit_state: int = 0  # 0 closed, 1 half-open, 2 open
    circuit_opens: int = 0
    latency_sum_s: float = 0.0
    latency_count: int = 0
    # Failed attempts by kind: http_failures_timeout, ..._http_5xx, ..._garbage, ...
    http_failures_by_kind: dict[str, int] = counts_by_kind("http_failures_")


class OpenAIJudge(TextJudge):
    """``TextJudge`` over HTTP; ``label`` and ``compare`` come from ``rewards.judges.text``."""

    name = "openai"
    supports_choices = True

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        super().__init__(cfg, task)
        self.http = http = cfg.openai
        endpoint = "chat/completions" if self.use_chat else "completions"
        self._url = f"{http.base_url.rstrip('/')}/{endpoint}"
        self._api_key = os.environ.get(http.api_key_env, "") if http.api_key_env else ""
        self._extension_hint_given = False
        self._breaker = CircuitBreaker(
            failure_threshold=http.breaker_failures,
            cooldown_s=http.breaker_cooldown_s,
            name=f"{self.name}@{http.base_url}",
        )
        self._pool = ThreadPoolExecutor(
            max_workers=http.max_concurrency, thread_name_prefix="oniray-judge-http"
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latency_sum = 0.0
        self._latency_hist = [0] * (len(LATENCY_BUCKETS_S) + 1)  # last bin: +Inf
        # Bounded so an annotator that never drains cannot grow without limit.
        self._recent_latencies: deque[float] = deque(maxlen=4096)

    def __repr__(self) -> str:
        # Spelled out so that no default repr can ever print the key.
        return (
            f"{type(self).__name__}(base_url={self.http.base_url!r}, model={self.http.model!r}, "
            f"api={self.cfg.api!r}, api_key_env={self.http.api_key_env!r}, "
            f"api_key_set={bool(self._api_key)})"
        )

    __str__ = __repr__

    # -- the TextJudge contract -------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str | ChatMessages], *, max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str | None]:
        """One completion per prompt, in order; None where every attempt failed."""
        extra: dict[str, Any] = {"max_tokens": max_new_tokens or self.cfg.max_new_tokens}
        if stop:
            extra["stop"] = list(stop)
        return self._batched(list(prompts), extra, self._texts)

    def choose(
        self, prompts: Sequence[str | ChatMessages], choices: Sequence[str]
    ) -> list[str | None]:
        """vLLM's structured outputs (guided choice) in the request body: the server decodes
        exactly one of ``choices``. A server without the extension ignores or refuses it: its
        free answer is then read by the strict parser and counted when unreadable."""
        extra = {"max_tokens": CHOICE_MAX_TOKENS, "structured_outputs": {"choice": list(choices)}}
        return self._batched(list(prompts), extra, self._texts)

    def choice_probs(
        self, prompts: Sequence[str | ChatMessages], choices: Sequence[str]
    ) -> list[list[float] | None]:
        """One token per request, with the server's top ``TOP_LOGPROBS`` log-probabilities;
        each choice is matched by the longest listed token that begins it (the server's
        tokenizer is not known here). Choices that share that token (" 1", " 2" behind " ")
        are asked again after it. P(choice) as :func:`constrained_probs` defines it; a choice
        whose token is not listed gets 0, and a prompt none of whose choices is listed (or an
        answer without logprobs) gets None: counted, never a guessed label."""
        prompts = list(prompts)
        walks = [_ChoiceWalk(choices) for _ in prompts]
        pending = [(i, "") for i in range(len(prompts))]
        while pending:
            asks = [self.answer_prompt(prompts[i], prefix) for i, prefix in pending]
            tops = self._batched(asks, self._logprob_body(), self._top_logprobs)
            pending = [
                (i, prefix)
                for (i, asked), top in zip(pending, tops, strict=True)
                for prefix in walks[i].visit(asked, top)
            ]
        return [walk.probs() for walk in walks]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- metrics ------------------------------------------------------------------------------

    def stats(self) -> OpenAIStats:
        """The text judge's counters plus this transport's, cumulative since construction."""
        with self._lock:
            counts = dict(self._counts)
            latency_sum = self._latency_sum
            latency_count = sum(self._latency_hist)
        kinds = {k.removeprefix("fail_"): v for k, v in counts.items() if k.startswith("fail_")}
        return super().stats().extend(
            OpenAIStats,
            http_requests=counts.get("requests", 0),
            http_answered=counts.get("answered", 0),
            http_failures=sum(kinds.values()),
            http_retries=counts.get("retries", 0),
            http_short_circuited=counts.get("short_circuited", 0),
            circuit_state=CIRCUIT_CODES[self._breaker.circuit],
            circuit_opens=self._breaker.opens,
            latency_sum_s=latency_sum,
            latency_count=latency_count,
            http_failures_by_kind=kinds,
        )

    @property
    def circuit_state(self) -> str:
        """closed, open or half_open."""
        return self._breaker.circuit

    def latency_buckets(self) -> list[tuple[float, int]]:
        """[(upper bound s, cumulative count)] of answered requests, the last bound +Inf."""
        with self._lock:
            hist = list(self._latency_hist)
        out, total = [], 0
        for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), hist, strict=True):
            total += n
            out.append((bound, total))
        return out

    def drain_latencies(self) -> list[float]:
        """Latencies (s) recorded since the last call, for ``Histogram.observe``."""
        with self._lock:
            out = list(self._recent_latencies)
            self._recent_latencies.clear()
        return out

    # -- one request, with retries ------------------------------------------------------------

    def _batched(
        self, prompts: list[Any], extra: dict[str, Any], parse: Callable[[Any, int], list[Any]]
    ) -> list[Any]:
        """``parse``d answers, one per prompt, in order (None where every attempt failed):
        ``batch_size`` prompts per /completions request, one per chat request."""
        step = 1 if self.use_chat else self.cfg.batch_size
        chunks = [range(i, min(i + step, len(prompts))) for i in range(0, len(prompts), step)]
        futures = [
            self._pool.submit(self._request, [prompts[i] for i in chunk], extra, parse)
            for chunk in chunks
        ]
        out: list[Any] = [None] * len(prompts)
        for chunk, future in zip(chunks, futures, strict=True):
            answers = future.result()
            if answers is not None:
                for i, answer in zip(chunk, answers, strict=True):
                    out[i] = answer
        return out

    def _logprob_body(self) -> dict[str, Any]:
        if not self.use_chat:
            return {"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
        return {"max_tokens": 1, "temperature": 0.0, "logprobs": True,
                "top_logprobs": TOP_LOGPROBS}

    def _request(
        self, prompts: list[Any], extra: dict[str, Any] | None = None,
        parse: Callable[[Any, int], list[Any]] | None = None,
    ) -> list[Any] | None:
        payload = {**self._payload(prompts), **(extra or {})}
        parse = parse or self._texts
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            if not self._breaker.allow():
                self._count("short_circuited")
                return None
            kind, texts = self._post(payload, len(prompts), parse)
            if kind == "ok":
                self._breaker.record_success()
                return texts
            self._count(f"fail_{kind}")
            self._breaker.record_failure()
            if kind not in RETRYABLE or attempt == self.cfg.max_retries:
                return None
            if self._breaker.circuit == OPEN:
                # Sleeping out the backoff would only delay a None the breaker already gave.
                self._count("short_circuited")
                return None
        return None

    def _post(
        self, payload: dict[str, Any], n: int, parse: Callable[[Any, int], list[Any]]
    ) -> tuple[str, list[Any] | None]:
        """One attempt: ("ok", parsed answers) or (failure kind, None)."""
        self._count("requests")
        start = time.perf_counter()
        try:
            resp = self._session().post(
                self._url, json=payload, headers=self._headers(), timeout=self.http.timeout_s
            )
        except requests.Timeout:
            return "timeout", None
        except requests.RequestException as exc:
            log.debug("judge request failed: %s", self._redact(type(exc).__name__))
            return "connection", None
        latency = time.perf_counter() - start
        if resp.status_code == 429:
            return "http_429", None
        if resp.status_code >= 500:
            return "http_5xx", None
        if resp.status_code >= 400:
            log.warning("judge answered HTTP %d; not retried", resp.status_code)
            if _VLLM_EXTENSIONS & payload.keys() and not self._extension_hint_given:
                # Constrained answers and logprob chats use vLLM's request extensions; a
                # server that refuses them fails every label, so say once what to change.
                self._extension_hint_given = True
                log.error(
                    "judge server refused a request that uses vLLM's extensions (%s) with "
                    "HTTP %d: for a server other than vLLM set rewards.judge.constrained=false "
                    "and rewards.judge.scoring=generate",
                    ", ".join(sorted(_VLLM_EXTENSIONS & payload.keys())), resp.status_code,
                )
            return "http_4xx", None
        try:
            texts = parse(resp.json(), n)
        except (ValueError, KeyError, TypeError, IndexError):
            return "garbage", None
        self._observe(latency)
        return "ok", texts

    def _payload(self, prompts: list[Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.http.model,
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": self.cfg.temperature,
        }
        if not self.use_chat:
            body["prompt"] = prompts
        else:
            (prompt,) = prompts
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            body["messages"] = messages
            if messages[-1].get("role") == "assistant":
                # The judge's own answer, begun (the forced opening tag): vLLM's extension
                # continues it instead of closing it and starting a new one.
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        return body

    def _texts(self, body: Any, n: int) -> list[str]:
        """The n answers of a response body, in prompt order; raises on any malformation."""
        choices = _ordered(body, n)
        if not self.use_chat:
            texts = [c["text"] for c in choices]
        else:
            texts = [c["message"]["content"] for c in choices]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("non-string answer")
        return texts

    def _top_logprobs(self, body: Any, n: int) -> list[dict[str, float] | None]:
        """Per prompt, {token text: log-probability} of the first answer token's top
        alternatives; None where the server gave none (it does not do logprobs)."""
        out: list[dict[str, float] | None] = []
        for choice in _ordered(body, n):
            logprobs = choice.get("logprobs") or {}
            if not self.use_chat:
                tops = logprobs.get("top_logprobs") or [None]
                top = tops[0]
            else:
                content = logprobs.get("content") or [{}]
                entries = content[0].get("top_logprobs")
                top = None if entries is None else {e["token"]: e["logprob"] for e in entries}
            out.append({str(k): float(v) for k, v in top.items()} if top else None)
        return out

    # -- plumbing -----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _observe(self, latency: float) -> None:
        with self._lock:
            self._counts["answered"] += 1
            self._latency_sum += latency
            self._latency_hist[bisect.bisect_left(LATENCY_BUCKETS_S, latency)] += 1
            self._recent_latencies.append(latency)


def _ordered(body: Any, n: int) -> list[dict[str, Any]]:
    choices = sorted(body["choices"], key=lambda c: c["index"])
    if len(choices) != n:
        raise ValueError(f"{len(choices)} choices for {n} prompts")
    return choices


class _ChoiceWalk:
    """One prompt's walk down the choices' shared beginnings, by token text (see
    :meth:`OpenAIJudge.choice_probs`): the tokens each choice was matched with and their
    log-probabilities, for :func:`constrained_probs`."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = list(choices)
        self.paths: list[list[str]] = [[] for _ in choices]  # matched tokens per choice
        self.logprob: dict[tuple[tuple[str, ...], str], float] = {}
        self.failed = False

    def visit(self, prefix: str, top: dict[str, float] | None) -> list[str]:
        """Read the top tokens after the prompt continued by ``prefix``; return the
        prefixes to ask next (one per token that several choices still share)."""
        alive = [i for i, c in enumerate(self.choices) if "".join(self.paths[i]) == prefix]
        node = tuple(self.paths[alive[0]])
        matched: dict[int, str] = {}
        for i in alive:
            rest = self.choices[i][len(prefix):]
            tokens = [t for t in (top or {}) if t and rest.startswith(t)]
            if tokens:
                matched[i] = max(tokens, key=len)
        if not matched:  # no logprobs, or none of the choices among the top tokens
            self.failed = True
            return []
        for i in alive:
            # Unlisted: less likely than every listed token; -inf, so P = 0 and never chosen.
            token = matched.get(i, f"\0unlisted-{i}")
            self.paths[i].append(token)
            self.logprob[(node, token)] = (top or {}).get(token, -math.inf)
        groups: dict[str, list[int]] = {}
        for i in alive:
            groups.setdefault(self.paths[i][-1], []).append(i)
        nexts = []
        for token, members in groups.items():
            if len(members) == 1:
                continue
            if any(self.choices[i] == prefix + token for i in members):
                self.failed = True  # one choice is another's beginning: undecidable here
                return []
            nexts.append(prefix + token)
        return nexts

    def probs(self) -> list[float] | None:
        if self.failed:
            return None
        return constrained_probs(self.paths, lambda node, token: self.logprob[(node, token)])
