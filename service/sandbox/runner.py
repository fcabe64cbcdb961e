"""Run one job: an inference sidecar and a job container, both without network.

Idempotent by job id: container and volume names derive from it, so a redelivered task finds what
an earlier attempt left (a running or exited container) and goes on from there instead of starting
a second one.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import Mount, Ulimit

from service.inference.contract import (
    COLLECT_DIR,
    DATASET_PATH,
    MODEL_PATH,
    OUTPUT_DIR,
    READY_NAME,
    RESULT_COPY_NAME,
    SIDECAR_USER,
    SOCKET_DIR,
    SOCKET_PATH,
    STATUS_DIR,
    SUITE_DIR,
    TRANSFER_DIR,
    USAGE_NAME,
    Env,
)
from service.sandbox.errors import ImageMissing, SandboxError
from service.sandbox.reading import (
    read_archived_file,
    read_copied_result,
    read_status,
    tail,
)
from service.sandbox.spec import JobSandbox, Limits, Outcome

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.volumes import Volume

LABEL_JOB = "org.evalgate.job-id"
LABEL_ROLE = "org.evalgate.role"
LABEL_DEPLOYMENT = "org.evalgate.deployment"

# Under runc a container shares the host's kernel, and /proc and /sys show host-wide counters: how
# many processes the host forked, its memory, load, uptime, disk and interrupt activity, how many
# cgroups and open files exist. A job could watch them to learn about other jobs. These paths are
# masked (empty files, empty read-only directories); what stays visible is listed in SECURITY.md.
# Setting MaskedPaths replaces Docker's default list, so that list comes first. gVisor's /proc is
# its own kernel's and shows the sandbox only.
DOCKER_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
HOST_COUNTERS_MASKED = (
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/meminfo",
    "/proc/vmstat",
    "/proc/zoneinfo",
    "/proc/buddyinfo",
    "/proc/pagetypeinfo",
    "/proc/slabinfo",
    "/proc/vmallocinfo",
    "/proc/diskstats",
    "/proc/partitions",
    "/proc/swaps",
    "/proc/interrupts",
    "/proc/softirqs",
    "/proc/schedstat",
    "/proc/locks",
    "/proc/cgroups",
    "/proc/key-users",
    "/proc/pressure",
    "/proc/sys/fs/file-nr",
    "/proc/sys/fs/inode-nr",
    "/proc/sys/fs/inode-state",
    "/proc/sys/fs/dentry-state",
    "/proc/sys/fs/aio-nr",
    "/proc/sys/kernel/random/entropy_avail",
    "/sys/devices/system/node",
    "/sys/kernel/mm",
    "/sys/block",
    "/sys/class/block",
)
MASKED_PATHS = [*DOCKER_MASKED_PATHS, *HOST_COUNTERS_MASKED]


def allowance_bytes(limits: Limits, model_bytes: int) -> int:
    """The memory a job's requests may hold in its sidecar: the sidecar's limit less what the sidecar
    needs for itself and the model (at least 16 MiB, so a small limit still serves small batches)."""
    return max(16 << 20, ((limits.sidecar_memory_mb - limits.sidecar_reserve_mb) << 20) - 2 * model_bytes)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def names(job_id: str) -> dict[str, str]:
    base = f"evalgate-{job_id}"
    return {
        "sidecar": f"{base}-sidecar",
        "job": f"{base}-job",
        "sock": f"{base}-sock",
        "out": f"{base}-out",
        "transfer": f"{base}-transfer",
        "status": f"{base}-status",
    }


class Sandbox:
    """`deployment` names the service these sandboxes belong to (its queue): a sweep removes only its
    own, so two deployments, or a demo beside a service, can share one Docker engine."""

    def __init__(self, client: docker.DockerClient, deployment: str = "evalgate", state_dir: Path | None = None):
        """`state_dir`: where each job's sidecar writes its status files (a host directory the Docker
        engine can bind-mount, as it does the model and dataset files)."""
        self.client, self.deployment = client, deployment
        self.state_dir = private_dir((state_dir or default_state_dir()) / deployment)

    def image_id(self, tag: str) -> str:
        """Jobs run images by id, so the digest recorded in provenance is exactly what ran."""
        try:
            return str(self.client.images.get(tag).id)
        except ImageNotFound:
            raise ImageMissing(f"image {tag} is missing: run `evalgate images build`") from None
        except (APIError, requests.exceptions.RequestException) as e:
            raise SandboxError(f"docker: {e}") from e

    def _labels(self, job_id: str, role: str) -> dict[str, str]:
        return {LABEL_JOB: job_id, LABEL_ROLE: role, LABEL_DEPLOYMENT: self.deployment}

    # -- volumes ---------------------------------------------------------------------------------

    def _volume(self, name: str, job_id: str, role: str, opts: str) -> Volume:
        try:
            return self.client.volumes.get(name)
        except NotFound:
            # tmpfs-backed: sized and inode-capped, never on the host's disk, gone when removed.
            return self.client.volumes.create(
                name=name,
                driver="local",
                labels=self._labels(job_id, role),
                driver_opts={"type": "tmpfs", "device": "tmpfs", "o": opts},
            )

    # -- containers ------------------------------------------------------------------------------

    def _get(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def _create(
        self,
        spec: JobSandbox,
        role: str,
        *,
        image: str,
        name: str,
        user: str,
        environment: dict[str, str],
        command: list[str] | None = None,
        **host: Any,
    ) -> Container:
        """Create (not start) one of the job's containers, with what both have in common. Through the
        low-level API: the high-level one cannot set MaskedPaths."""
        host_config = self.client.api.create_host_config(
            network_mode="none",  # no interface but loopback: no egress, no metadata service, no DNS
            read_only=True,  # the image cannot be altered; writable places are listed explicitly
            cap_drop=["ALL"],  # no capability at all, even inside the container's user namespace
            security_opt=[
                "no-new-privileges:true",  # setuid binaries cannot raise privileges
                # An allowlist tighter than Docker's default (sandbox_images/seccomp/build_profile.py
                # says what is left out and why), sent as JSON text so no host path is involved.
                f"seccomp={spec.runtime.seccomp}",
            ],
            init=True,  # a real PID 1 reaps zombies and forwards signals
            ipc_mode="private",
            # runc, or gVisor with a per-role runtime entry: the job may only connect to host unix
            # sockets, the sidecar may create its own.
            runtime=spec.runtime.job if role == "job" else spec.runtime.sidecar,
            # json-file with one capped file: a stdout flood cannot fill the host's disk.
            log_config={
                "type": "json-file",
                "config": {"max-size": str(max(spec.limits.log_cap_bytes, 16 << 10)), "max-file": "1"},
            },
            **host,
        )
        if spec.runtime.family == "runc":
            host_config["MaskedPaths"] = MASKED_PATHS
        created = self.client.api.create_container(
            image,
            command=command,
            name=name,
            user=user,
            environment=environment,
            labels=self._labels(spec.job_id, role),
            host_config=host_config,
            use_config_proxy=False,  # nothing of the host's Docker client configuration goes in
        )
        return self.client.containers.get(created["Id"])

    def _start_sidecar(self, spec: JobSandbox, n: dict[str, str]) -> Container:
        lim = spec.limits
        container = self._create(
            spec,
            "sidecar",
            image=spec.sidecar_image,
            name=n["sidecar"],
            user=SIDECAR_USER,
            environment={
                Env.SOCKET: SOCKET_PATH,
                Env.MODEL: MODEL_PATH,
                Env.STATUS_DIR: STATUS_DIR,
                Env.QUERY_BUDGET_ROWS: str(spec.query_budget_rows),
                Env.MAX_REQUESTS: str(lim.max_requests),
                Env.MAX_BATCH: str(lim.max_batch_rows),
                Env.MAX_REQUESTS_PER_S: str(lim.max_requests_per_s),
                # Batches through a sealed memfd the job hands over (runc); gVisor cannot pass
                # descriptors between two sandboxes, so there a batch comes in a file of a shared
                # volume (the transfer volume), or in the socket.
                Env.SHARED_MEMORY: "1" if spec.runtime.family == "runc" else "0",
                Env.TRANSFER: "1" if _transfers(spec) else "0",
                # The model version's own thread count: its numbers never depend on the job's CPUs.
                Env.THREADS: str(spec.sidecar_threads),
                # What a job may see of the scores (full, rounded, top-k, labels): against extraction.
                Env.OUTPUT_POLICY: json.dumps(spec.output_policy),
                Env.SCORE_OUTPUTS: ",".join(spec.score_outputs),
                # Whatever the job sends, the sidecar stays under its memory limit (see allowance_bytes).
                Env.MAX_CONNECTIONS: str(lim.max_connections),
                Env.ALLOWANCE_BYTES: str(allowance_bytes(lim, _size(spec.model_path))),
                # The job's own dataset file: requests may name its rows instead of carrying them.
                Env.DATASET: DATASET_PATH,
                # The job's result, copied for the worker when the worker asks for the usage.
                Env.RESULT: spec.result_name,
                Env.RESULT_MAX_BYTES: str(lim.result_max_bytes),
            },
            mounts=[
                Mount(MODEL_PATH, str(spec.model_path), type="bind", read_only=True),
                Mount(DATASET_PATH, str(spec.dataset_path), type="bind", read_only=True),
                Mount(SOCKET_DIR, n["sock"], type="volume"),
                # Readiness and usage, for the worker only: the job never sees this directory, and
                # it outlives the container (a sidecar that died still says whether it had served).
                Mount(STATUS_DIR, str(self._status_dir(spec.job_id, create=True)), type="bind"),
                # Holds the job's output volume so it outlives the job container until collected.
                Mount(COLLECT_DIR, n["out"], type="volume", read_only=True),
                *([Mount(TRANSFER_DIR, n["transfer"], type="volume", read_only=True)] if _transfers(spec) else []),
            ],
            tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
            ulimits=[
                Ulimit(name="core", soft=0, hard=0),
                # Its status files, and the copy of the job's result (at most result_max_bytes).
                Ulimit(name="fsize", soft=_sidecar_fsize(lim), hard=_sidecar_fsize(lim)),
            ],
            mem_limit=f"{lim.sidecar_memory_mb}m",
            memswap_limit=f"{lim.sidecar_memory_mb}m",
            nano_cpus=int(max(spec.sidecar_threads, 1) * 1e9),  # the model owner's CPUs, one per thread
            pids_limit=64 + spec.runtime.extra_pids,
        )
        container.start()
        return container

    def _status_dir(self, job_id: str, create: bool = False) -> Path:
        path = self.state_dir / job_id
        if create:
            path.mkdir(mode=0o700, exist_ok=True)
            uid = int(SIDECAR_USER.split(":")[0])
            try:
                os.chown(path, uid, uid)
            except PermissionError:  # a worker not running as root: the parent is private to it
                path.chmod(0o777)
        return path

    def _status(self, job_id: str, name: str, max_bytes: int = 16 << 10) -> dict[str, Any] | None:
        """A status file the sidecar wrote (ready.json, usage.json), or None while there is none."""
        return read_status(self._status_dir(job_id) / name, max_bytes)

    def _is_ready(self, job_id: str) -> bool:
        return self._status(job_id, READY_NAME) is not None

    def _wait_ready(self, job_id: str, container: Container, timeout_s: float = 60) -> bool:
        """Whether the sidecar served the model (it may still be loading if the job never asked)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._is_ready(job_id):
                return True
            container.reload()
            if container.status not in ("created", "running"):
                return self._is_ready(job_id)
            time.sleep(0.05)
        return False

    def _start_job(self, spec: JobSandbox, n: dict[str, str]) -> Container:
        lim = spec.limits
        container = self._create(
            spec,
            "job",
            image=spec.job_image,
            command=spec.command,
            name=n["job"],
            # Not root, and a host uid of its own (allocated per job): per-user kernel limits and
            # counters (processes, inotify instances, message queues, ...) are the job's alone.
            user=spec.job_user,
            environment={
                **spec.env,
                Env.ENTRYPOINT: spec.entrypoint,
                Env.SOCKET: SOCKET_PATH,
                Env.DATASET: DATASET_PATH,
                Env.OUTPUT: f"{OUTPUT_DIR}/{spec.result_name}",
                "HOME": "/tmp",
            },
            mounts=[
                Mount(SUITE_DIR, str(spec.suite_path), type="bind", read_only=True),
                Mount(DATASET_PATH, str(spec.dataset_path), type="bind", read_only=True),
                # Read-only: the job can connect to the socket but cannot replace it or store files there.
                Mount(SOCKET_DIR, n["sock"], type="volume", read_only=True),
                Mount(OUTPUT_DIR, n["out"], type="volume"),
                *([Mount(TRANSFER_DIR, n["transfer"], type="volume")] if _transfers(spec) else []),
            ],
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={lim.tmp_mb}m"},
            shm_size=f"{lim.shm_mb}m",
            mem_limit=f"{lim.memory_mb}m",
            memswap_limit=f"{lim.memory_mb}m",  # equal to mem_limit: no swap, so OOM is prompt and visible
            nano_cpus=int(lim.cpus * 1e9),
            pids_limit=lim.pids + spec.runtime.extra_pids,  # fork and thread bombs stop here
            ulimits=[
                Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
                Ulimit(name="core", soft=0, hard=0),  # a crash cannot dump memory to disk
                Ulimit(
                    name="fsize",
                    soft=max(lim.tmp_mb << 20, lim.output_bytes),
                    hard=max(lim.tmp_mb << 20, lim.output_bytes),
                ),
                # The job's uid is its own, so RLIMIT_NPROC counts this job's processes only (under
                # runc: on the host; under gVisor: in its kernel, where guest tasks are not host
                # threads and the pids cgroup does not see a thread bomb).
                Ulimit(name="nproc", soft=lim.pids, hard=lim.pids),
            ],
        )
        container.start()
        return container

    # -- the run ---------------------------------------------------------------------------------

    def run(self, spec: JobSandbox, should_cancel: Callable[[], bool] = lambda: False) -> Outcome:
        """Run (or resume) the job and collect its outcome. Does not remove anything: call remove()."""
        n = names(spec.job_id)
        began = time.monotonic()
        try:
            side_gid = SIDECAR_USER.split(":")[1]
            side = "uid={0},gid={0}".format(SIDECAR_USER.split(":")[0])
            job_uid = spec.job_user.split(":")[0]
            lim = spec.limits
            # The job's output: its own, and the sidecar's group may read what it writes there
            # (setgid: a file made in it gets that group) to copy the result for the worker.
            out_opts = f"size={lim.output_bytes},nr_inodes={lim.output_inodes},uid={job_uid},gid={side_gid},mode=2750"
            with ThreadPoolExecutor(max_workers=3, thread_name_prefix="evalgate-volumes") as pool:
                volumes = [
                    pool.submit(
                        self._volume, n["sock"], spec.job_id, "socket", f"size=64k,nr_inodes=16,{side},mode=0755"
                    ),
                    pool.submit(self._volume, n["out"], spec.job_id, "output", out_opts),
                ]
                if _transfers(spec):  # the job's, readable by the sidecar's group, as the output volume
                    opts = f"size={TRANSFER_BYTES},nr_inodes=8,uid={job_uid},gid={side_gid},mode=2750"
                    volumes.append(pool.submit(self._volume, n["transfer"], spec.job_id, "transfer", opts))
                for made in volumes:
                    made.result()
            # The two containers are made and started at once, each on its own connection to the
            # engine: the SDK waits for the socket, so the model loading and the job's own start-up
            # overlap, and neither waits for the other's Docker calls.
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="evalgate-start") as pool:
                side_started = pool.submit(lambda: self._get(n["sidecar"]) or self._start_sidecar(spec, n))
                job_started = pool.submit(self._job_container, spec, n)
                sidecar, job = side_started.result(), job_started.result()
            started = time.monotonic()
            outcome = self._wait(spec.job_id, job, sidecar, spec.limits.timeout_s, should_cancel)
            ran = time.monotonic()
            # The sidecar's side (ready? then the usage, its memory peak and the copied result,
            # asked with SIGUSR1) on its own connection to the engine, while this thread reads the
            # job container's state and logs.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-collect") as pool:
                sidecar_end = pool.submit(self._sidecar_end, spec, sidecar)
                self._job_facts(spec, job, outcome)
                outcome.sidecar_ready, running, usage = sidecar_end.result()
            sidecar_peak = usage.pop("memory_peak", None)  # the sidecar's own figure, not a usage
            outcome.images = {"job": job.attrs["Image"], "sidecar": sidecar.attrs["Image"]}
            if not outcome.sidecar_ready:
                outcome.job_log += f"\n--- sidecar (never served the model) ---\n{self._tail(sidecar, 4000)}"
            if running:
                outcome.usage = usage
                if isinstance(sidecar_peak, int) and not isinstance(sidecar_peak, bool) and sidecar_peak > 0:
                    outcome.sidecar_memory_peak = sidecar_peak
                max_bytes = spec.limits.result_max_bytes
                if usage.pop("result", None) == "copied":
                    outcome.result, outcome.result_problem = self._copied_result(spec.job_id, max_bytes)
                else:  # none, or not one the sidecar would copy: the engine's archive API says what is wrong
                    outcome.result, outcome.result_problem = self._collect(sidecar, spec.result_name, max_bytes)
            else:
                outcome.sidecar_died = outcome.sidecar_ready
                outcome.result_problem = "sidecar stopped before the result was collected"
                usage.pop("result", None)
                outcome.usage = usage
                outcome.job_log += f"\n--- sidecar (stopped early) ---\n{self._tail(sidecar, 4000)}"
            # A sidecar the kernel OOM-killed has stopped; a running one was not. It is not stopped
            # here: remove() kills it with its containers, after the gate, off the partner's path.
            outcome.sidecar_oom = bool(sidecar.attrs["State"].get("OOMKilled"))
            done = time.monotonic()
            outcome.timings = {
                "start": round(started - began, 3),  # volumes, and both containers made and started
                "run": round(done - started, 3),
                # Of `run`: the job container's life, and collecting its state, output, result and
                # the sidecar's usage and memory peak.
                "job": round(ran - started, 3),
                "collect": round(done - ran, 3),
            }
            return outcome
        except (APIError, requests.exceptions.RequestException) as e:
            raise SandboxError(f"docker: {e}") from e

    def _job_facts(self, spec: JobSandbox, job: Container, outcome: Outcome) -> None:
        """The stopped job container's exit, whether it ran out of memory, and its logs."""
        job.reload()
        state = job.attrs["State"]
        outcome.exit_code = state.get("ExitCode")
        killed = outcome.exit_code == SIGKILLED and not (outcome.cancelled or outcome.timed_out)  # not by us
        outcome.oom = bool(state.get("OOMKilled")) or (
            killed and self._oom_event(job, str(state.get("StartedAt") or ""))
        )
        outcome.job_started = not str(state.get("StartedAt") or "0001").startswith("0001")
        outcome.job_log = self._tail(job, spec.limits.log_cap_bytes)
        if spec.separate_output_bytes is not None:
            outcome.stdout = self._tail(job, spec.separate_output_bytes, stderr=False)
            outcome.stderr = self._tail(job, spec.separate_output_bytes, stdout=False)

    def _sidecar_end(self, spec: JobSandbox, sidecar: Container) -> tuple[bool, bool, dict[str, Any]]:
        """Whether the sidecar served the model, whether it is still running, and the job's usage
        (with what became of its result file), once the job container has stopped."""
        ready = self._wait_ready(spec.job_id, sidecar)
        sidecar.reload()
        if sidecar.status != "running":
            return ready, False, self._status(spec.job_id, USAGE_NAME) or {}
        return ready, True, self._usage(spec.job_id, sidecar)

    def _copied_result(self, job_id: str, max_bytes: int) -> tuple[bytes | None, str | None]:
        """The job's result as the sidecar copied it (regular, within the cap; checked again here)."""
        return read_copied_result(self._status_dir(job_id) / RESULT_COPY_NAME, max_bytes)

    def _oom_event(self, container: Container, started_at: str) -> bool:
        """Whether the engine logged an OOM event for the container since it started. Docker sets
        OOMKilled from that event, which can come after the exit it caused (seen under gVisor on a
        loaded machine): the job then looked killed by a signal, `crashed`. Asked only for a job
        killed by SIGKILL without the flag; a job that killed itself has no such event."""
        since = time.time() - _elapsed_since(started_at) - 1
        for attempt in range(3):  # the event may still be on its way
            if attempt:
                time.sleep(0.2)
            events = self.client.events(  # events up to now, then the stream ends
                since=int(since), until=f"{time.time():.6f}", filters={"container": container.id, "event": "oom"}
            )
            try:
                if any(True for _ in events):
                    return True
            finally:
                events.close()
        return False

    def _job_container(self, spec: JobSandbox, n: dict[str, str]) -> Container:
        """The job's container, started: made now, or the one an earlier attempt left."""
        job = self._get(n["job"])
        if job is None:
            return self._start_job(spec, n)
        if job.status == "created":
            job.start()
        return job

    def _wait(
        self, job_id: str, job: Container, sidecar: Container, timeout_s: int, should_cancel: Callable[[], bool]
    ) -> Outcome:
        outcome = Outcome()
        job.reload()
        started = job.attrs["State"].get("StartedAt") or ""
        deadline = time.monotonic() + timeout_s - _elapsed_since(started)
        while True:
            try:
                job.wait(timeout=1)
                return outcome
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                pass
            if should_cancel():
                outcome.cancelled = True
            elif time.monotonic() >= deadline:
                outcome.timed_out = True
            elif self._sidecar_died_unready(job_id, sidecar):
                pass  # the job's runner is waiting for a model that will never come: stop it now
            else:
                continue
            try:
                job.kill()
            except APIError:
                pass  # it ended on its own meanwhile
            job.wait(timeout=30)
            return outcome

    def _sidecar_died_unready(self, job_id: str, sidecar: Container) -> bool:
        sidecar.reload()
        return sidecar.status not in ("created", "running") and not self._is_ready(job_id)

    def _collect(self, sidecar: Container, name: str, max_bytes: int) -> tuple[bytes | None, str | None]:
        """Read the result file through the Docker API, after the job container has stopped."""
        return self._read_file(sidecar, f"{COLLECT_DIR}/{name}", max_bytes)

    def _read_file(self, container: Container, path: str, max_bytes: int) -> tuple[bytes | None, str | None]:
        return read_archived_file(container, path, max_bytes)

    def _usage(self, job_id: str, sidecar: Container, timeout_s: float = 30) -> dict[str, Any]:
        """The job's query usage, from the sidecar, once the job's connections have ended: asked with
        SIGUSR1, answered in usage.json (out of the job's reach). Empty if the sidecar cannot say
        (the worker then charges the whole grant)."""
        try:
            sidecar.kill(signal="SIGUSR1")
        except APIError:
            return {}
        deadline = time.monotonic() + timeout_s
        checked = time.monotonic()
        while time.monotonic() < deadline:
            usage = self._status(job_id, USAGE_NAME)
            if usage is not None:
                return usage
            if time.monotonic() - checked >= 0.1:  # a file read every 5 ms, the engine asked every 100
                checked = time.monotonic()
                sidecar.reload()
                if sidecar.status != "running":
                    break
            time.sleep(0.005)
        return self._status(job_id, USAGE_NAME) or {}

    @staticmethod
    def _tail(container: Container, cap: int, stdout: bool = True, stderr: bool = True) -> str:
        return tail(container, cap, stdout, stderr)

    # -- cleanup ---------------------------------------------------------------------------------

    def remove(self, job_id: str) -> None:
        """Remove the job's containers and volumes. Safe to call any number of times."""
        n = names(job_id)
        for key in ("job", "sidecar"):
            c = self._get(n[key])
            if c is not None:
                try:
                    c.remove(force=True)
                except NotFound:
                    pass
        for key in ("sock", "out", "transfer"):
            try:
                self.client.volumes.get(n[key]).remove(force=True)
            except NotFound:
                pass
        shutil.rmtree(self._status_dir(job_id), ignore_errors=True)

    def sweep(self, keep: Callable[[str], bool]) -> list[str]:
        """Remove every container and volume of this deployment whose job `keep` does not claim."""
        removed = set()
        mine = {"label": [LABEL_JOB, f"{LABEL_DEPLOYMENT}={self.deployment}"]}
        found = {c.labels.get(LABEL_JOB) for c in self.client.containers.list(all=True, filters=mine)}
        found |= {v.attrs.get("Labels", {}).get(LABEL_JOB) for v in self.client.volumes.list(filters=mine)}
        found |= {p.name for p in self.state_dir.iterdir() if p.is_dir()}
        for job_id in found - {None}:
            if not keep(job_id):
                self.remove(job_id)
                removed.add(job_id)
        return sorted(removed)


# The transfer volume (gVisor): room for a batch in each of the client's four slots (a batched request
# carries at most 16 MiB). Its pages are the job's memory; a batch that does not fit goes in the socket.
TRANSFER_BYTES = 4 * (16 << 20) + (1 << 20)


def _transfers(spec: JobSandbox) -> bool:
    """Whether the job gets a transfer volume: under gVisor, which cannot share a memfd."""
    return spec.runtime.family != "runc"


def _sidecar_fsize(limits: Limits) -> int:
    """The largest file the sidecar may write: its status files, and the copy of the job's result."""
    return max(1 << 20, limits.result_max_bytes + (64 << 10))


def default_state_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"evalgate-sandbox-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """A directory only this user can enter (made if missing; refused if someone else's, or a link)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SandboxError(f"{path} is not a directory of this user")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


SIGKILLED = 128 + 9  # a container's exit code when SIGKILL ended it


def _elapsed_since(started_at: str) -> float:
    """Seconds since Docker's StartedAt (RFC 3339 with nanoseconds), 0 if unknown."""
    if not started_at or started_at.startswith("0001"):
        return 0.0
    try:
        trimmed = started_at.rstrip("Z").split(".")[0]
        t = datetime.fromisoformat(trimmed).replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - t).total_seconds())
    except ValueError:
        return 0.0
