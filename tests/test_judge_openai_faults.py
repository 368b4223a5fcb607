"""OpenAIJudge against a local fault-injecting OpenAI-compatible server (stdlib, 127.0.0.1).

The server answers each request by the next scripted mode, then by its default mode:
ok (valid completions saying FOO), unparseable (valid JSON, unreadable text), garbage
(not JSON), 500, hang (sleeps past the client's timeout). Every test bounds its wall clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rewards.config import JudgeConfig, OpenAIJudgeConfig
from rewards.judges.openai_judge import OpenAIJudge

KEY_ENV = "ONIRAY_TEST_JUDGE_KEY"
SECRET = "sk-test-9f8e7d6c5b4a"
GOOD = "<analysis> It kills a monster. </analysis> <label> FOO </label>"


class FaultServer:
    """A threaded HTTP server whose answers are scripted per request."""

    def __init__(self) -> None:
        self.default = "ok"
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []  # {"path", "auth", "body"}
        self.hang_s = 5.0
        self._stop = threading.Event()  # cuts hangs short at teardown
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append({
                        "path": self.path, "auth": self.headers.get("Authorization"),
                        "body": body,
                    })
                    mode = server.script.popleft() if server.script else server.default
                server.answer(self, mode, body)

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler, mode: str, body: dict[str, Any]) -> None:
        if mode == "hang" and self._stop.wait(self.hang_s):
            return
        if mode == "500":
            return self._send(handler, 500, b'{"error": "boom"}')
        if mode == "400":  # e.g. a server that refuses vLLM's request extensions
            return self._send(handler, 400, b'{"error": "unrecognized request argument"}')
        if mode == "garbage":
            return self._send(handler, 200, b'{"choices": [ this is not json')
        text = GOOD if mode in ("ok", "hang") else "Hmm, hard to say."
        n = len(body["prompt"]) if "prompt" in body else 1
        if "messages" in body:
            choices = [{"index": 0, "message": {"role": "assistant", "content": text}}]
        else:
            # Reversed on purpose: the client must order choices by their index.
            choices = [{"index": i, "text": text} for i in reversed(range(n))]
        self._send(handler, 200, json.dumps({"choices": choices}).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    srv = FaultServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def make_judge(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    judges: list[OpenAIJudge] = []
    base = JudgeConfig(
        backend="openai", max_retries=2, backoff_s=0.05, batch_size=3,
        # Free text: these tests are about the transport. Constrained and log-probability
        # answers from a real vLLM server: tests/test_judge_vllm.py.
        constrained=False,
    )
    http = OpenAIJudgeConfig(
        model="tiny", base_url=server.url, api_key_env=KEY_ENV, max_concurrency=1,
        timeout_s=2.0, breaker_failures=100, breaker_cooldown_s=0.5,
    )

    def make(**overrides: Any) -> OpenAIJudge:
        """``overrides``: keys of rewards.judge and of its openai section, by name."""
        mine = {k: v for k, v in overrides.items() if hasattr(http, k)}
        shared = {k: v for k, v in overrides.items() if k not in mine}
        cfg = replace(base, **shared, openai=replace(http, **mine))
        judges.append(OpenAIJudge(cfg, task="score"))
        return judges[-1]

    yield make
    for judge in judges:
        judge.close()


def test_completions_are_batched_ordered_and_authenticated(server, make_judge, caplog):
    caplog.set_level(logging.DEBUG)
    judge = make_judge()
    verdicts = judge.label([f"You kill the newt #{i}!" for i in range(7)])
    assert [v.label for v in verdicts] == [True] * 7
    assert [len(r["body"]["prompt"]) for r in server.requests] == [3, 3, 1]
    assert {r["path"] for r in server.requests} == {"/v1/completions"}
    assert {r["auth"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert server.requests[0]["body"]["max_tokens"] == 256
    stats = judge.stats()
    assert stats["http_requests"] == 3 and stats["http_answered"] == 3
    assert stats["latency_count"] == 3 and stats["latency_sum_s"] > 0
    assert judge.latency_buckets()[-1] == (float("inf"), 3)
    assert len(judge.drain_latencies()) == 3 and judge.drain_latencies() == []
    # The key never shows: not in repr/str, not in any log record.
    assert SECRET not in repr(judge) and SECRET not in str(judge)
    assert "api_key_set=True" in repr(judge)
    assert SECRET not in caplog.text


def test_chat_sends_one_conversation_per_caption(server, make_judge):
    judge = make_judge(api="chat", max_concurrency=4)
    verdicts = judge.label(["You find a hidden passage.", "You hear a door open."])
    assert [v.label for v in verdicts] == [True, True]
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    roles = [m["role"] for m in server.requests[0]["body"]["messages"]]
    assert roles == ["system", "user"]  # the prompt file's chat rendering, not a flat string


def test_no_key_no_authorization_header(server, make_judge, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    judge = make_judge()
    assert judge.generate(["x"]) == [GOOD]
    assert server.requests[0]["auth"] is None
    assert "api_key_set=False" in repr(judge)


def test_5xx_is_retried_with_exponential_backoff(server, make_judge):
    server.script.extend(["500", "500"])
    judge = make_judge()
    start = time.monotonic()
    assert judge.generate(["You kill the newt!"]) == [GOOD]
    elapsed = time.monotonic() - start
    assert elapsed >= 0.05 + 0.10  # backoff_s, then doubled
    stats = judge.stats()
    assert stats["http_requests"] == 3 and stats["http_retries"] == 2
    assert stats["http_failures_http_5xx"] == 2 and stats["http_failures"] == 2


def test_retries_are_bounded(server, make_judge):
    server.default = "500"
    judge = make_judge(max_retries=2)
    assert judge.generate(["a", "b"]) == [None, None]  # one batch: a 3-prompt batch size
    assert judge.stats()["http_requests"] == 3


def test_hanging_server_is_cut_by_the_timeout(server, make_judge):
    server.default = "hang"
    judge = make_judge(timeout_s=0.3, max_retries=1)
    start = time.monotonic()
    assert judge.generate(["You kill the newt!"]) == [None]
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 0.6 + 0.05 + 1.0  # two timeouts and one backoff, plus slack
    assert judge.stats()["http_failures_timeout"] == 2


def test_garbage_json_is_counted_never_labelled(server, make_judge):
    server.default = "garbage"
    judge = make_judge(max_retries=1)
    verdicts = judge.label(["You kill the newt!"])
    assert verdicts[0].label is None
    stats = judge.stats()
    assert stats["http_failures_garbage"] == stats["http_requests"] >= 2
    assert stats["label_request_failures"] >= 1 and stats["label_unparseable"] == 1


def test_unparseable_answer_is_re_asked_then_left_unlabelled(server, make_judge):
    server.default = "unparseable"
    judge = make_judge(max_retries=1)
    verdicts = judge.label(["You kill the newt!"])
    assert verdicts[0].label is None and verdicts[0].raw == "Hmm, hard to say."
    stats = judge.stats()
    assert stats["http_failures"] == 0  # the transport worked; the parser refused
    assert stats["label_parse_failures"] == 2 and stats["label_unparseable"] == 1


def test_connection_refused_fails_fast(make_judge):
    judge = make_judge(base_url="http://127.0.0.1:9/v1", max_retries=1)
    start = time.monotonic()
    assert judge.generate(["x"]) == [None]
    assert time.monotonic() - start < 2.0
    assert judge.stats()["http_failures_connection"] == 2


def test_circuit_breaker_opens_fails_fast_and_recovers(server, make_judge, caplog):
    caplog.set_level(logging.WARNING)
    server.default = "500"
    judge = make_judge(api="chat", max_retries=0, breaker_failures=3, breaker_cooldown_s=0.5)
    assert judge.generate(["a", "b", "c"]) == [None] * 3
    assert judge.circuit_state == "open" and len(server.requests) == 3

    # Open: nothing reaches the server, and the answer is immediate.
    start = time.monotonic()
    assert judge.generate(["d"] * 20) == [None] * 20
    assert time.monotonic() - start < 0.2
    assert len(server.requests) == 3 and judge.stats()["http_short_circuited"] == 20

    # Half-open while still down: exactly one probe goes out, then open again.
    time.sleep(0.55)
    assert judge.generate(["e", "f"]) == [None, None]
    assert len(server.requests) == 4 and judge.circuit_state == "open"

    # The server comes back: the next probe closes the circuit by itself.
    server.default = "ok"
    time.sleep(0.55)
    assert judge.generate(["g", "h"]) == [GOOD, GOOD]
    assert judge.circuit_state == "closed"
    stats = judge.stats()
    assert stats["circuit_state"] == 0 and stats["circuit_opens"] == 1
    opened = [r for r in caplog.records if "circuit open" in r.getMessage()]
    closed = [r for r in caplog.records if "circuit closed" in r.getMessage()]
    assert len(opened) == 1 and len(closed) == 1  # one line per outage, not per probe
    assert SECRET not in caplog.text


def test_concurrency_is_bounded(server, make_judge):
    server.default = "hang"
    server.hang_s = 0.2  # shorter than the timeout: slow, not failing
    judge = make_judge(api="chat", max_concurrency=2, timeout_s=2.0)
    in_flight, peak = 0, 0
    lock = threading.Lock()
    original = server.answer

    def counting(handler, mode, body):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            original(handler, mode, body)
        finally:
            with lock:
                in_flight -= 1

    server.answer = counting  # type: ignore[method-assign]
    start = time.monotonic()
    assert judge.generate(["x"] * 6) == [GOOD] * 6
    assert peak == 2
    assert time.monotonic() - start >= 3 * 0.2


def test_constrained_and_logprob_requests_ask_the_extension(server, make_judge):
    judge = make_judge(constrained=True, max_retries=0)
    judge.label(["You kill the newt!"])
    body = server.requests[-1]["body"]
    assert body["structured_outputs"] == {"choice": [" FOO", " BAR"]}
    assert body["prompt"][0].endswith("<label>")
    judge = make_judge(api="chat", constrained=True, max_retries=0)
    judge.label(["You kill the newt!"])
    body = server.requests[-1]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "<label>"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    judge = make_judge(constrained=False, max_retries=0)
    judge.label(["You kill the newt!"])
    assert "structured_outputs" not in server.requests[-1]["body"]


def test_a_server_without_logprobs_gives_no_label(server, make_judge):
    # The fault server answers text without logprobs: no probability, so no label (counted
    # as a failed request), never a label guessed from the text.
    judge = make_judge(scoring="logprob", max_retries=1)
    verdicts = judge.label(["You kill the newt!", "It's solid stone."])
    assert [(v.label, v.prob, v.answered) for v in verdicts] == [(None, None, False)] * 2
    body = server.requests[-1]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] == 20
    stats = judge.stats()
    assert stats["label_request_failures"] == 4 and stats["http_failures"] == 0


def test_a_server_refusing_the_extension_is_named_once(server, make_judge, caplog):
    # A non-vLLM server answers 400 to structured_outputs: every label fails (counted, never
    # guessed), and the log says once which key to change.
    server.default = "400"
    judge = make_judge(constrained=True, max_retries=0)
    with caplog.at_level("ERROR", logger="rewards.judges.openai_judge"):
        verdicts = judge.label(["You kill the newt!"]) + judge.label(["It's solid stone."])
    assert [v.label for v in verdicts] == [None, None]
    hints = [r for r in caplog.records if "rewards.judge.constrained=false" in r.getMessage()]
    assert len(hints) == 1 and "structured_outputs" in hints[0].getMessage()
    assert SECRET not in caplog.text
