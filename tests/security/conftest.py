"""The battery runs every attack on the sandbox under runc and again under gVisor (runsc). Attacks on
the API and the registry (ingress, bundles, namespaces) need neither Docker nor Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Harness, unavailable, worker_harness


@pytest.fixture(scope="module", params=["runc", "runsc"])
def stack(request, tmp_path_factory, demo_files: dict[str, Path], docker_client) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    from service.sandbox.runtimes import runsc_available

    if request.param == "runsc" and not runsc_available(docker_client):
        unavailable("gVisor", "the engine lacks the evalgate runsc runtimes: run `evalgate sandbox setup`")
    tmp = tmp_path_factory.mktemp(f"battery-{request.param}")
    yield from worker_harness(tmp, demo_files, docker_runtime=request.param, default_timeout_s=30)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" not in str(item.fspath):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        if "docker_client" in fixtures:
            item.add_marker(pytest.mark.docker)
        if fixtures & {"stack", "small_sidecar"}:  # a real worker, fed through Redis
            item.add_marker(pytest.mark.redis)
