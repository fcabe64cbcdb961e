"""One way to get a Docker client: with a timeout on every call and a clear error when no engine runs."""

from __future__ import annotations

import docker
from docker.errors import DockerException

from service.sandbox.errors import DockerUnavailable

API_TIMEOUT_S = 60

NO_ENGINE = (
    "No Docker engine answers. evalgate runs every job in Docker containers, so it needs one: install "
    "docker.io (Debian) or Docker Engine and start dockerd, or point DOCKER_HOST at a running engine."
)


def docker_client(timeout: int = API_TIMEOUT_S) -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as e:
        raise DockerUnavailable(NO_ENGINE) from e
    return client
