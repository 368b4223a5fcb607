"""Training runs as Ray jobs: ``oniray submit`` and ``oniray job status|logs|stop``.

Consumes: a config file inside this checkout, key=value overrides, and the job-server
(dashboard) address of a running Ray cluster. Emits: one Ray job whose entrypoint is
``python -m cluster.cli train CONFIG [overrides] ray.address=auto``, with the checkout shipped
as its ``working_dir``; by default its logs, followed until it ends. A sweep
(``oniray submit --sweep ARGS``) is the same kind of job, its entrypoint
``python bench/learning.py ARGS --tune --ray-address auto`` (bench/sweep.py).

Authentication: Ray 2.60's job server rejects requests without the cluster's token whenever
the cluster runs with ``RAY_AUTH_MODE=token``, but Ray's HTTP client only sends the token when
its own process has ``RAY_AUTH_MODE=token`` (unset means "disabled" for a client). So these
commands set ``RAY_AUTH_MODE=token`` unless the caller chose a mode, and Ray then reads the
token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cluster.config import ConfigError, load_config

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]  # the checkout, shipped as the job's working_dir
# gitignore-style patterns (Ray also applies the checkout's .gitignore): environments, run
# folders and benchmark output are large and node-specific, and the git history is not needed.
WORKING_DIR_EXCLUDES = [".venv*", "runs/", "bench/results/", ".git"]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Exit codes: 0 the job succeeded (or was submitted with --no-wait), 1 it did not,
# 2 a usage or config error, 3 the cluster could not be reached or refused the token.
EXIT_JOB_FAILED, EXIT_USAGE, EXIT_CLUSTER = 1, 2, 3


class ClusterError(RuntimeError):
    """The job server could not be reached or rejected our credentials; one line for the user."""


def default_address() -> str:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_ADDRESS


def entrypoint(config: str, overrides: list[str]) -> str:
    """The job's shell command; ``ray.address=auto`` comes last so that it wins."""
    return shlex.join(
        ["python", "-m", "cluster.cli", "train", config, *overrides, "ray.address=auto"]
    )


def sweep_entrypoint(bench_args: list[str]) -> str:
    """A sweep job's shell command: the arms bench's grid as Ray Tune trials
    (``bench/learning.py ... --tune``, bench/sweep.py) on the cluster the job runs in."""
    args = [a for a in bench_args if a != "--tune"]
    return shlex.join(["python", "bench/learning.py", *args, "--tune", "--ray-address", "auto"])


def runtime_env(pip: list[str] | None = None) -> dict:
    env: dict = {"working_dir": str(ROOT), "excludes": list(WORKING_DIR_EXCLUDES)}
    if pip:
        env["pip"] = list(pip)
    return env


def config_in_checkout(config: str | Path) -> str:
    """CONFIG as a path relative to the checkout: the job resolves it inside its working_dir."""
    path = Path(config).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        raise ConfigError([
            f"{config}: outside the checkout {ROOT}; only the checkout is shipped to the "
            f"cluster, so put the config under configs/"
        ]) from None


def connect(address: str) -> JobSubmissionClient:
    """A job client that sends the cluster token (see the module docstring)."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise ClusterError(_auth_message(address, exc)) from None
    except ConnectionError as exc:
        raise ClusterError(f"cannot reach the Ray job server at {address}: {exc}") from None


def _auth_message(address: str, exc: Exception) -> str:
    reason = str(getattr(exc, "message", exc)).splitlines()[0]
    return (
        f"the Ray cluster at {address} rejected the request ({reason}). Give the cluster's "
        f"token in RAY_AUTH_TOKEN, or a file in RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
    )


def _guarded(address: str, call: Callable[[], T]) -> T:
    """Run one client call, turning Ray's authentication error into a :class:`ClusterError`."""
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError as exc:
        raise ClusterError(_auth_message(address, exc)) from None


def submit(
    config: str,
    overrides: list[str],
    *,
    address: str,
    pip: list[str] | None = None,
    wait: bool = True,
    submission_id: str | None = None,
) -> int:
    """Validate the config here, submit it, and (``wait``) follow the job to its end."""
    relative = config_in_checkout(config)
    # The same validation the job would do, so a typo fails in a second, not after an upload.
    cfg = load_config(config, [*overrides, "ray.address=auto"])
    if not Path(cfg.run.out_dir).is_absolute():
        print(
            f"oniray submit: warning: run.out_dir={cfg.run.out_dir!r} is relative, so the run "
            f"folder lands in the job's temporary working_dir on the head node; pass "
            f"run.out_dir=/absolute/shared/path to keep it",
            file=sys.stderr,
        )
    client = connect(address)
    job_id = submission_id or f"oniray-{Path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = entrypoint(relative, overrides)
    job_id = _guarded(address, lambda: client.submit_job(
        entrypoint=command, runtime_env=runtime_env(pip), submission_id=job_id,
        metadata={"oniray_config": relative},
    ))
    print(f"submitted job {job_id} to {address}: {command}", flush=True)
    if not wait:
        print(f"follow it with: oniray job logs {job_id} --follow --address {address}")
        return 0
    return follow(client, job_id, address=address)


def submit_sweep(
    bench_args: list[str],
    *,
    address: str,
    pip: list[str] | None = None,
    wait: bool = True,
    submission_id: str | None = None,
) -> int:
    """Submit a sweep (``oniray submit --sweep ARGS``) and (``wait``) follow it to its end.
    Its results and Tune's state stay on the cluster: ``--out`` and ``--storage`` should be
    paths every node shares (or ``--storage`` a URI), else they land in the job's
    temporary working_dir."""
    if not bench_args:
        raise ConfigError(["oniray submit --sweep: give bench/learning.py's arms-bench "
                           "arguments after --sweep (--env ENV_ID --steps N ...)"])
    for flag in ("--out", "--storage"):
        value = next((bench_args[i + 1] for i, a in enumerate(bench_args[:-1]) if a == flag),
                     None)
        if value is None or not (Path(value).is_absolute() or "://" in value):
            print(f"oniray submit: warning: no absolute {flag}: the sweep's "
                  f"{'results' if flag == '--out' else 'Tune state and run folders'} land in "
                  f"the job's temporary working_dir on the head node; pass {flag} "
                  f"/absolute/shared/path to keep them", file=sys.stderr)
    client = connect(address)
    job_id = submission_id or f"oniray-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    command = sweep_entrypoint(bench_args)
    job_id = _guarded(address, lambda: client.submit_job(
        entrypoint=command, runtime_env=runtime_env(pip), submission_id=job_id,
        metadata={"oniray_sweep": "1"},
    ))
    print(f"submitted job {job_id} to {address}: {command}", flush=True)
    if not wait:
        print(f"follow it with: oniray job logs {job_id} --follow --address {address}")
        return 0
    return follow(client, job_id, address=address)


def follow(client: JobSubmissionClient, job_id: str, *, address: str) -> int:
    """Stream the job's logs until it ends; 0 if it SUCCEEDED, else 1."""
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        # Like `ray job submit`: leaving the log stream leaves the job running.
        print(f"\nstopped following; the job keeps running. Stop it with: "
              f"oniray job stop {job_id} --address {address}", file=sys.stderr)
        return EXIT_JOB_FAILED
    # The log stream closes when the job ends; the status can lag it by a moment.
    info = client.get_job_info(job_id)
    while not info.status.is_terminal():
        time.sleep(0.5)
        info = client.get_job_info(job_id)
    detail = f": {info.message}" if info.message and info.status != JobStatus.SUCCEEDED else ""
    print(f"job {job_id} {info.status.value}{detail}", flush=True)
    return 0 if info.status == JobStatus.SUCCEEDED else EXIT_JOB_FAILED


def job_command(action: str, job_id: str, *, address: str, follow_logs: bool = False) -> int:
    """``oniray job status|logs|stop ID``: Ray's job calls with the token sent."""
    client = connect(address)
    if action == "status":
        info = _guarded(address, lambda: client.get_job_info(job_id))
        print(f"{job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
        return 0
    if action == "logs":
        if follow_logs:
            return follow(client, job_id, address=address)
        print(_guarded(address, lambda: client.get_job_logs(job_id)), end="")
        return 0
    if action == "stop":
        stopped = _guarded(address, lambda: client.stop_job(job_id))
        print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")
        return 0
    raise ValueError(f"unknown job action {action!r}")
