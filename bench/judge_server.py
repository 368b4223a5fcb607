"""A fault-injecting OpenAI-compatible judge server on 127.0.0.1, for outage tests and the soak.

    python bench/judge_server.py --port 0 [--mode ok] [--port-file PATH]

Answers ``POST /v1/completions`` (a batch of prompts) and ``POST /v1/chat/completions`` the
way :class:`rewards.judges.openai_judge.OpenAIJudge` expects, by the current mode:

    ok           a well-formed answer ending in ``<label> FOO </label>`` when the rated caption
                 mentions a key, an exit or stairs, else ``<label> BAR </label>`` (so canaries,
                 which are true negatives, come back BAR)
    unparseable  valid JSON whose text has no label tag (a judge answering in the wrong format)
    garbage      HTTP 200 with a body that is not JSON
    500          HTTP 500
    hang         holds the request without answering (until the mode changes or ``hang_s``)
    down         the listening socket is closed: connections are refused (in-process only;
                 a subprocess server is taken down by killing it)

The mode is switched in-process with :meth:`JudgeServer.set_mode`, or over HTTP with
``POST /control {"mode": "..."}``. ``GET /stats`` returns the answers given per mode and the
Authorization headers seen (hashed: a test checks that the key was sent without the server
ever holding it in clear). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("ok", "unparseable", "garbage", "500", "hang", "down")
HELPFUL_WORDS = ("key", "exit", "stair")
_CAPTION = re.compile(r"Please rate this message: (\".*?\")\s*\n")


def answer_text(prompt: Any) -> str:
    """A well-formed judge answer for one label prompt (completion text or chat messages)."""
    if isinstance(prompt, list):  # chat: the last user message (an assistant's may follow)
        prompt = [m for m in prompt if m.get("role") == "user"][-1]["content"]
    found = _CAPTION.search(prompt) if isinstance(prompt, str) else None
    caption = json.loads(found.group(1)) if found else ""
    label = "FOO" if any(w in caption.lower() for w in HELPFUL_WORDS) else "BAR"
    return (
        "<knowledge> NetHack is a roguelike. </knowledge> "
        f"<analysis> The message is {caption!r}. </analysis> <label> {label} </label>"
    )


class JudgeServer:
    """The server; thread-safe. ``port=0`` picks a free port, kept across ``down`` periods."""

    def __init__(self, port: int = 0, *, mode: str = "ok", hang_s: float = 120.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self.hang_s = hang_s
        self.answers: Counter[str] = Counter()  # requests answered (or refused) per mode
        self.auth_digests: set[str] = set()
        self._mode = "ok"
        self._lock = threading.Lock()
        self._mode_changed = threading.Event()  # wakes hanging handlers
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self._open()
        self.set_mode(mode)

    @property
    def url(self) -> str:
        """The base_url a judge config takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._lock:
            previous, self._mode = self._mode, mode
            self._mode_changed.set()
            self._mode_changed = threading.Event()
        if mode == "down" and previous != "down":
            self._close()
        elif mode != "down" and self._httpd is None:
            self._open()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"mode": self._mode, "answers": dict(self.answers),
                    "auth_sha256": sorted(self.auth_digests)}

    def close(self) -> None:
        with self._lock:
            self._mode_changed.set()
        self._close()

    # -- plumbing -------------------------------------------------------------------------

    def _open(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so that `down` really refuses the next
            # request instead of a kept-alive connection serving on past the closed socket.
            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/stats":
                    return self._send(200, json.dumps(server.stats()).encode())
                return self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") == "/control":
                    server.set_mode(json.loads(body)["mode"])
                    return self._send(200, json.dumps(server.stats()).encode())
                auth = self.headers.get("Authorization")
                with server._lock:
                    mode, changed = server._mode, server._mode_changed
                    server.answers[mode] += 1
                    if auth:
                        server.auth_digests.add(hashlib.sha256(auth.encode()).hexdigest())
                if mode == "hang":
                    changed.wait(server.hang_s)
                    self.close_connection = True
                    return None
                if mode == "500":
                    return self._send(500, b'{"error": "internal error"}')
                if mode == "garbage":
                    return self._send(200, b'{"choices": [ <html>this is not json')
                try:
                    request = json.loads(body)
                except ValueError:
                    return self._send(400, b'{"error": "bad json"}')
                self._send(200, json.dumps(_completion(request, mode)).encode())
                return None

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # a log line per request drowns output
                pass

        # Re-binding the same port after a `down` period: the judge's config names the port.
        deadline = time.monotonic() + 10
        while True:
            try:
                httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="judge-server",
                                        daemon=True)
        self._thread.start()

    def _close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()


def _completion(request: dict[str, Any], mode: str) -> dict[str, Any]:
    def text(prompt: Any) -> str:
        if mode != "ok":
            return "I would rather not say."
        answer = answer_text(prompt)
        if (request.get("structured_outputs") or {}).get("choice"):
            # vLLM's guided choice (a constrained judge): the label's value only, as " FOO".
            return answer.rsplit("<label>", 1)[1].removesuffix("</label>").rstrip()
        return answer

    if "messages" in request:
        message = {"role": "assistant", "content": text(request["messages"])}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
    return {"choices": [{"index": i, "text": text(p), "finish_reason": "stop"}
                        for i, p in enumerate(prompts)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok", choices=[m for m in MODES if m != "down"])
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    args = parser.parse_args()
    server = JudgeServer(args.port, mode=args.mode)
    if args.port_file:
        args.port_file.write_text(f"{server.port}\n")
    print(f"judge server: {server.url} (mode {server.mode})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
