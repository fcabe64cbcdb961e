"""Container runtimes (runc, or gVisor's runsc) and the seccomp profile that goes with each.

Two runsc entries keep the job side at least privilege: the job only connects to the model socket
(--host-uds=open); the sidecar must create it (--host-uds=create). Both run with no network stack
at all (--network=none) and apply evalgate's seccomp profile inside gVisor (--oci-seccomp).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from service.sandbox.errors import SandboxError

log = logging.getLogger(__name__)
SECCOMP_DIR = Path(__file__).resolve().parents[2] / "sandbox_images" / "seccomp"
DAEMON_JSON = Path("/etc/docker/daemon.json")
RUNSC_JOB = "evalgate-runsc-job"
RUNSC_SIDECAR = "evalgate-runsc-sidecar"
RUNSC_EXTRA_PIDS = 128
RUNSC_ARGS = {
    RUNSC_JOB: ["--network=none", "--host-uds=open", "--oci-seccomp"],
    RUNSC_SIDECAR: ["--network=none", "--host-uds=create", "--oci-seccomp"],
}


@dataclass(frozen=True)
class Runtime:
    family: str  # "runc" or "runsc"
    job: str  # the engine's runtime name for the job container
    sidecar: str
    seccomp: str  # profile JSON text, passed to Docker inline
    # Under gVisor the container's pids cgroup also holds gVisor's own kernel (the Sentry) and its
    # threads; guest processes are Sentry tasks. The limit needs headroom for them, or the sandbox
    # cannot start. A fork bomb then kills the whole sandbox at the cgroup limit: the host is safe.
    extra_pids: int = 0

    @property
    def name(self) -> str:
        return self.family


def seccomp_profile(family: str) -> str:
    path = SECCOMP_DIR / f"evalgate-{family}.json"
    return json.dumps(json.loads(path.read_text()), separators=(",", ":"))


def runsc_available(client: docker.DockerClient) -> bool:
    runtimes = client.info().get("Runtimes") or {}
    return RUNSC_JOB in runtimes and RUNSC_SIDECAR in runtimes


def resolve(client: docker.DockerClient, wanted: str) -> Runtime:
    """runc, runsc, or auto (runsc when the engine has evalgate's runsc runtimes)."""
    if wanted == "auto":
        wanted = "runsc" if runsc_available(client) else "runc"
        if wanted == "runc":
            log.warning(
                "gVisor (runsc) is not registered with the Docker engine: jobs run under runc, which shares "
                "the host's kernel. Run `evalgate sandbox setup` as root for the stronger sandbox."
            )
    if wanted == "runsc":
        if not runsc_available(client):
            raise SandboxError(
                "EVALGATE_DOCKER_RUNTIME=runsc but the engine lacks the evalgate runsc runtimes: "
                "run `evalgate sandbox setup` as root"
            )
        return Runtime("runsc", RUNSC_JOB, RUNSC_SIDECAR, seccomp_profile("runsc"), extra_pids=RUNSC_EXTRA_PIDS)
    if wanted != "runc":
        raise SandboxError(f"unknown runtime {wanted!r}: runc, runsc or auto")
    return Runtime("runc", "runc", "runc", seccomp_profile("runc"))


def with_runsc(config: dict[str, Any], runsc_path: str) -> dict[str, Any]:
    """daemon.json with evalgate's two runsc runtimes added; every other setting kept as it was."""
    merged: dict[str, Any] = json.loads(json.dumps(config))
    merged.setdefault("runtimes", {}).update(
        {name: {"path": runsc_path, "runtimeArgs": args} for name, args in RUNSC_ARGS.items()}
    )
    return merged


def setup_runsc(
    client: docker.DockerClient, daemon_json: Path = DAEMON_JSON, log: Callable[[str], None] = print
) -> None:
    """Register the two runsc runtimes in daemon.json (keeping whatever else is there) and make
    dockerd reload it (SIGHUP reloads runtimes without stopping running containers)."""
    runsc = shutil.which("runsc")
    if runsc is None:
        raise SandboxError("runsc is not installed: apt-get install runsc (Debian) or see gvisor.dev")
    current = json.loads(daemon_json.read_text()) if daemon_json.exists() else {}
    config = with_runsc(current, runsc)
    if config == current and runsc_available(client):
        log("runsc runtimes already configured")
        return
    daemon_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = daemon_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, daemon_json)
    log(f"wrote {daemon_json}")
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if not pids:
        raise SandboxError("dockerd is not running on this host; restart it to load the runtimes")
    for pid in pids:
        os.kill(int(pid), signal.SIGHUP)
    for _ in range(50):
        if runsc_available(client):
            log("dockerd reloaded: runsc runtimes available")
            return
        time.sleep(0.2)
    raise SandboxError("dockerd did not pick up the runsc runtimes; restart it")
