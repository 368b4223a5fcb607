"""Shared fixtures of oniray's tests.

``ray_session``: ONE local Ray for the whole test session (starting Ray costs seconds, and
the machine is small). Request it in any test that needs Ray; never call ``ray.init`` or
``ray.shutdown`` in a test. 4 logical CPUs, a 200 MiB object store, no dashboard, namespace
``oniray-tests``; Ray's default token authentication stays on. Actors a test creates should
be killed by that test (or its component's ``shutdown``) so later tests get the CPUs back.

Fragments for tests: ``tests.fragments.make_fragment``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

RAY_NUM_CPUS = 4
RAY_OBJECT_STORE_BYTES = 200 * 1024**2


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
pytest_plugins = ["tests.prometheus_fixture"]
