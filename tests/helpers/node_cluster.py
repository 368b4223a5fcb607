"""A local multi-node Ray cluster (``ray.cluster_utils.Cluster``) in a process of its own.

Why a process of its own: the Cluster's calls run in the process that owns it, and Ray's
token authentication is read once per process (``RAY_AUTH_MODE``, the token). Here the whole
cluster gets a token of its own (``RAY_AUTH_TOKEN``) and never touches the test session's Ray
(tests/conftest.py) nor ~/.ray/auth_token. Every node binds to 127.0.0.1.

``NodeCluster(tmp, head_resources=...)`` starts the head (with fast node-death detection, see
``SYSTEM_CONFIG``); ``add(resources)`` a worker node, returning its node id;
``remove(node_id)`` kills that node without warning (``allow_graceful=False``: SIGKILL of its
raylet, object store and workers, as when a machine or pod dies); ``close()`` tears it all
down and keeps Ray's logs in ``tmp/ray-logs`` (the driver's and each worker's core-worker
log, for a failure's post-mortem). ``env``: the environment a driver needs to join it
(``ray.address=`` + ``address``).

Run as a script it is the server: one JSON command per stdin line, one JSON answer per line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers.ray_processes import free_port

# Ray's GCS declares a node dead after `health_check_failure_threshold` failed checks, one
# every `health_check_period_ms` (each waiting up to `health_check_timeout_ms`). Ray 2.60's
# defaults (3000 ms, 5, 10000 ms) take 15 s or more to notice a killed node; these take
# about 1.5 s, and still ride out a 2-core machine's stalls (3 s per check). A fetch from a
# dead node gives up after `object_manager_pull_timeout_ms` (10000 by default; measured here:
# a learner gave up a lost fragment 10.7 s after its node died, 2.2 s with 2000).
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 3000,
    "health_check_failure_threshold": 3,
    "object_manager_pull_timeout_ms": 2000,
    # Ray runs its workers at nice 15: beside the other tests' busy processes on 2 cores they
    # got under 1% of a core, and a run stood still for minutes (seen here, with no fault).
    "worker_niceness": 0,
}
NODE_CPUS = 2
OBJECT_STORE_BYTES = 100 * 1024**2


class NodeCluster:
    """The client: starts the server process and sends it commands."""

    def __init__(self, tmp: Path, *, head_resources: dict[str, float] | None = None) -> None:
        self.token = secrets.token_hex(32)
        # No RAY_* of the test session (its RAY_ADDRESS, its auth mode): only this cluster's.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, PYTHONUNBUFFERED="1")
        # ray.init(address="127.0.0.1:PORT") would swap the loopback for the machine's own
        # address (where nothing of this cluster listens); Ray's switch for one-host clusters
        # keeps the loopback, and on Linux changes nothing else.
        self.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        self._log = (tmp / "node_cluster.log").open("w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.node_cluster"], cwd=Path(__file__).parents[2],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, start_new_session=True,
        )
        try:
            started = self._ask({"head": {"resources": head_resources or {},
                                          "logs_to": str(tmp / "ray-logs")}})
        except Exception:
            self.close()
            raise
        self.address: str = started["address"]
        self.head_id: str = started["node_id"]

    def add(self, resources: dict[str, float]) -> str:
        return self._ask({"add": {"resources": resources}})["node_id"]

    def remove(self, node_id: str) -> None:
        self._ask({"remove": node_id})

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._ask({"close": True})
                self._proc.wait(timeout=60)
            except Exception:  # teardown: kill whatever is left below
                pass
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._log.close()

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the cluster process died; see {self._log.name}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer


def _node_args(resources: dict[str, float]) -> dict[str, Any]:
    return {"num_cpus": NODE_CPUS, "resources": resources, "node_ip_address": "127.0.0.1",
            "object_store_memory": OBJECT_STORE_BYTES}


def _serve() -> None:
    from ray.cluster_utils import Cluster

    cluster: Cluster | None = None
    nodes: dict[str, Any] = {}
    ray_tmp: str | None = None
    logs_to: str | None = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if "head" in command:
                args = command["head"]
                logs_to = args["logs_to"]
                # Short: Ray's socket paths under it must stay within 107 characters.
                ray_tmp = tempfile.mkdtemp(prefix="onc-", dir="/tmp")
                cluster = Cluster(initialize_head=True, head_node_args={
                    **_node_args(args["resources"]), "gcs_server_port": free_port(),
                    # The dashboard serves Ray's state API (`ray list tasks`), which a stalled
                    # test prints (tests/helpers/run_output.py::where_stalled); off by
                    # default, as it costs a core's share on 2 cores.
                    "include_dashboard": bool(os.environ.get("ONIRAY_TEST_DASHBOARD")),
                    "dashboard_host": "127.0.0.1", "dashboard_port": free_port(),
                    "temp_dir": ray_tmp,
                    "_system_config": SYSTEM_CONFIG,
                })
                head = cluster.head_node
                answer = {"address": cluster.address, "node_id": head.node_id}
            elif "add" in command:
                assert cluster is not None
                node = cluster.add_node(**_node_args(command["add"]["resources"]))
                nodes[node.node_id] = node
                answer = {"node_id": node.node_id}
            elif "remove" in command:
                assert cluster is not None
                cluster.remove_node(nodes.pop(command["remove"]), allow_graceful=False)
                answer = {"removed": command["remove"]}
            else:
                break
        except Exception as exc:  # reported to the client, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    if cluster is not None:
        cluster.shutdown()
    if ray_tmp is not None and logs_to is not None:  # Ray's own logs, kept with the test's
        shutil.copytree(Path(ray_tmp, "session_latest", "logs"), logs_to, dirs_exist_ok=True,
                        ignore_dangling_symlinks=True)
    if ray_tmp is not None:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(json.dumps({"closed": True}), flush=True)


if __name__ == "__main__":
    _serve()
