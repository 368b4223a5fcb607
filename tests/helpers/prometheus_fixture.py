"""A real Prometheus server for tests: start it on loopback, scrape given targets, query it.

Fixture `prometheus_factory`: call it with scrape targets ("127.0.0.1:PORT") and get a running
`PrometheusServer`; every server it started is stopped at teardown. `query(base_url, promql)`
and `wait_for_result(...)` read Prometheus's HTTP API. Skips only when the `prometheus` binary
is absent (Debian package `prometheus`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRAPE_INTERVAL_S = 1


@dataclass
class PrometheusServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, targets: list[str], *, job: str = "oniray") -> None:
    # JSON is valid YAML, and avoids needing a YAML writer here.
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    path.write_text(json.dumps(config, indent=2))


def start_prometheus(workdir: Path, targets: list[str], *, timeout_s: float = 30.0
                     ) -> PrometheusServer:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus binary not found (make prometheus installs Debian's)"
        if os.environ.get("CI"):  # CI installs it through make test: missing is a failure
            pytest.fail(message)
        pytest.skip(message)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    write_config(config_path, targets)
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited {process.returncode}: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"prometheus not ready in {timeout_s}s: {log_path.read_text()}")


def query(base_url: str, promql: str) -> list[dict]:
    """Instant query; returns the result list (vector entries with `metric` and `value`)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries Prometheus's parse error message
        raise ValueError(f"{promql!r}: {error.read().decode()}") from error
    if body["status"] != "success":
        raise ValueError(f"{promql!r}: {body}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):  # a bare [time, value]: wrap like a vector
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def wait_for_result(base_url: str, promql: str, *, timeout_s: float = 20.0,
                    accept: Callable[[list[dict]], bool] = bool) -> list[dict]:
    """Poll `promql` until `accept(result)`; scrapes land once per SCRAPE_INTERVAL_S."""
    deadline = time.monotonic() + timeout_s
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = query(base_url, promql)
        if accept(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql!r} never accepted in {timeout_s}s; last result {result}")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[list[str]], PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def start(targets: list[str]) -> PrometheusServer:
        server = start_prometheus(tmp_path / f"prometheus{len(servers)}", targets)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
