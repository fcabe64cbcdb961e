"""What one sandbox run is asked (JobSandbox, with its Limits) and what it leaves (Outcome): plain
data, without Docker, so the domains that build a run or read its outcome (jobs, release, dev) need
not import the runner that talks to the engine (service.sandbox.runner)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.inference.contract import JOB_USER, RESULT_NAME

if TYPE_CHECKING:
    from service.sandbox.runtimes import Runtime


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: float
    timeout_s: int
    pids: int = 128
    tmp_mb: int = 64
    shm_mb: int = 16
    output_bytes: int = 1 << 20
    output_inodes: int = 64
    nofile: int = 256
    log_cap_bytes: int = 64 << 10
    sidecar_memory_mb: int = 1024
    result_max_bytes: int = 64 << 10
    max_requests: int = 1_000_000
    max_batch_rows: int = 65536
    max_requests_per_s: float = 2000.0
    max_connections: int = 8  # connections a job may hold to its sidecar at once
    # What the sidecar needs besides the job's requests: the interpreter, onnxruntime and one batch's
    # working memory (twice the model file is added for the model itself).
    sidecar_reserve_mb: int = 256


@dataclass(frozen=True)
class JobSandbox:
    job_id: str
    job_image: str  # image ids, not tags
    sidecar_image: str
    model_path: Path
    dataset_path: Path
    suite_path: Path
    entrypoint: str
    env: dict[str, str]
    query_budget_rows: int
    limits: Limits
    runtime: Runtime
    # What the job container runs; None: the job image's own command (the SDK's runner). Set only by
    # operators' tools (the channel benchmark runs its measuring script in the sidecar image).
    command: list[str] | None = None
    result_name: str = RESULT_NAME  # the one file collected from /output (ROWS_NAME in rows mode)
    sidecar_threads: int = 1  # onnxruntime's threads: the model version's, whatever the job's CPUs
    output_policy: dict[str, Any] = field(default_factory=lambda: {"kind": "full"})  # the operator's, per model
    score_outputs: tuple[str, ...] = ()  # the outputs it applies to
    job_user: str = JOB_USER  # uid:gid the job runs as: the worker allocates one per job
    # Also keep the job's stdout and its stderr apart, each capped at this many bytes (a twin job,
    # whose partner reads them: nothing private is in its sandbox). None: only the combined log.
    separate_output_bytes: int | None = None


@dataclass
class Outcome:
    """What a finished sandbox run left: the facts the worker reads from Docker, the result file's
    bytes (unread by anyone yet), the sidecar's count of model use, and the job's capped output."""

    exit_code: int | None = None
    oom: bool = False
    timed_out: bool = False
    cancelled: bool = False
    result: bytes | None = None
    result_problem: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    job_log: str = ""
    # Only when the spec asked for them (separate_output_bytes): the job's own stdout and stderr, capped.
    stdout: str | None = None
    stderr: str | None = None
    images: dict[str, str] = field(default_factory=dict)  # the image ids the containers really ran
    # The SDK's runner starts the partner's code only once it has talked to a ready sidecar, so a
    # sidecar that never served the model means the partner's code never ran (and saw no data).
    sidecar_ready: bool = True
    job_started: bool = True
    # For operators: whether the sidecar stayed within its memory (a job must never be able to push
    # it out), and its peak in bytes as the sidecar reports it with its usage (its cgroup's figure
    # under runc, its own peak resident size under gVisor).
    sidecar_oom: bool = False
    sidecar_memory_peak: int | None = None
    # The sidecar stopped before the job did (killed from outside, or a bug of ours): the job's
    # failure is then not its own doing.
    sidecar_died: bool = False
    # Seconds this worker spent on the sandbox, for operators' metrics: `start` (volumes and both
    # containers made and started), `run` (from then until the outcome was collected).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def partner_code_ran(self) -> bool:
        return self.job_started and self.sidecar_ready

    def facts(self) -> dict[str, Any]:
        """Everything but the result bytes and the log, as JSON (the worker records it)."""
        return {
            "exit_code": self.exit_code,
            "oom": self.oom,
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "result_problem": self.result_problem,
            "usage": self.usage,
            "images": self.images,
            "sidecar_ready": self.sidecar_ready,
            "job_started": self.job_started,
            "sidecar_oom": self.sidecar_oom,
            "sidecar_memory_peak": self.sidecar_memory_peak,
            "sidecar_died": self.sidecar_died,
            "timings": self.timings,
        }

    @classmethod
    def from_facts(cls, facts: dict[str, Any], result: bytes | None) -> Outcome:
        return cls(result=result, **facts)
