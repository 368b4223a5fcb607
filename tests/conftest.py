"""Shared fixtures of oniray's tests, and their tiers.

Tiers (pytest markers, registered in pyproject.toml); every test has exactly one:

    unit    one process, no service started: pure functions and components, real models
    local   the in-process runtime (`oniray train --local`): the loop without Ray
    system  starts Ray, the `oniray` CLI, vLLM or Prometheus, or runs the real LLM judge
    cluster the slowest whole-system runs: a Ray Tune sweep with a crash and a killed driver,
            a multi-node Ray cluster losing nodes, the two-minute fault soak

``make test-fast`` runs ``-m "unit or local"``, ``make test`` the first three tiers (under 20
minutes on 2 cores), ``make test-cluster`` the last; CI (``.ci/run``) runs both.
A module states its tier with ``pytestmark = pytest.mark.local`` (or ``system``), a single
test with the decorator; an unmarked test is ``system`` if it requests a fixture in
``SYSTEM_FIXTURES`` (Ray, Prometheus), else ``unit``.

``ray_session``: ONE local Ray for the whole test session (starting Ray costs seconds, and
the machine is small). Request it in any test that needs Ray; never call ``ray.init`` or
``ray.shutdown`` in a test. 4 logical CPUs, a 200 MiB object store, no dashboard, namespace
``oniray-tests``; Ray's default token authentication stays on. Actors a test creates should
be killed by that test (or its component's ``shutdown``) so later tests get the CPUs back.

Fragments for tests: ``tests.helpers.fragments.make_fragment``. Tests share helpers through
``tests/helpers/``, never by importing another test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

RAY_NUM_CPUS = 4
RAY_OBJECT_STORE_BYTES = 200 * 1024**2

TIERS = ("unit", "local", "system", "cluster")
SYSTEM_FIXTURES = frozenset({"ray_session", "prometheus_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test its tier (see the module docstring); two tiers on one test is a bug."""
    for item in items:
        tiers = [tier for tier in TIERS if item.get_closest_marker(tier)]
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier marker {tiers}")
        if not tiers:
            system = SYSTEM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            item.add_marker("system" if system else "unit")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread in every test: the machine is shared, and two threads under load
    are ~30x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(
        address="local",  # a Ray of the tests' own, never one already running on the machine
        num_cpus=RAY_NUM_CPUS,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        include_dashboard=False,
        namespace="oniray-tests",
    )
    try:
        yield
    finally:
        ray.shutdown()


# Real-Prometheus fixtures (`prometheus_factory`) for the metrics and dashboard tests.
pytest_plugins = ["tests.helpers.prometheus_fixture"]
