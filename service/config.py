"""One Settings object, read at the entry points (API app, worker, CLI)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Runtime = Literal["runc", "runsc", "auto"]
Mechanism = Literal["laplace", "gaussian", "none"]
MetricKind = Literal["proportion", "count", "nonnegative", "real"]


class PartnerLimits(BaseModel):
    """What one partner may use. The defaults come from the settings below; an operator may set any
    of them per partner (EVALGATE_PARTNER_QUOTAS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows_per_day: int = Field(ge=0, description="model rows predicted for the partner per UTC day, across jobs")
    max_query_budget: int = Field(ge=1, description="the most model rows one job may ask for")
    epsilon_budget: float = Field(ge=0, description="ε per dataset version, for ever")
    max_epsilon_per_metric: float = Field(gt=0, description="the most ε a job may spend per noised metric")
    bits_per_day: float = Field(ge=0, description="bits the partner's releases may carry per UTC day")
    releases_per_window: int = Field(ge=0, description="releases per moving window")
    max_concurrent_jobs: int = Field(ge=0, description="jobs admitted and not yet ended")
    hard_rule_trips_per_day: int = Field(
        default=20, ge=1, description="hard-rule trips per UTC day before the partner is suspended (service.sanctions)"
    )
    twin_jobs_per_day: int = Field(
        default=20, ge=0, description="jobs on synthetic twins per UTC day (they spend no other budget)"
    )


class PartnerLimitsOverride(BaseModel):
    """An operator's per-partner values; a limit left out keeps its default."""

    model_config = ConfigDict(extra="forbid")

    rows_per_day: int | None = Field(default=None, ge=0)
    max_query_budget: int | None = Field(default=None, ge=1)
    epsilon_budget: float | None = Field(default=None, ge=0)
    max_epsilon_per_metric: float | None = Field(default=None, gt=0)
    bits_per_day: float | None = Field(default=None, ge=0)
    releases_per_window: int | None = Field(default=None, ge=0)
    max_concurrent_jobs: int | None = Field(default=None, ge=0)
    hard_rule_trips_per_day: int | None = Field(default=None, ge=1)
    twin_jobs_per_day: int | None = Field(default=None, ge=0)


def _default_noised_kinds() -> list[MetricKind]:
    return ["proportion", "count"]


def _default_timing_buckets_s() -> list[float]:
    return [30, 60, 120, 300, 600, 1200, 1800, 3600]


class Settings(BaseSettings):
    # "null" in the environment is None: how a process passes "unset" to another (tests, compose).
    model_config = SettingsConfigDict(env_prefix="EVALGATE_", extra="ignore", env_parse_none_str="null")

    data_dir: Path = Path(".evalgate")
    # Default: a SQLite file inside data_dir. Production: postgresql+psycopg://...
    database_url: str | None = None
    # None means embedded mode: the API process runs one worker thread itself.
    broker_url: str | None = None
    queue: str = "evalgate-jobs"  # the Celery queue API and workers share (twin jobs: `twin_queue`)
    # Where per-partner counters live; defaults to the broker when that is Redis. Unset: the database.
    redis_url: str | None = None

    docker_runtime: Runtime = "auto"  # gVisor whenever the engine has it (`evalgate sandbox setup`)
    job_image: str = "evalgate-job:latest"
    sidecar_image: str = "evalgate-sidecar:latest"
    signing_key_path: Path | None = None
    # The transparency log's origin: the first line of its checkpoints and the name of their key.
    # Unset: `evalgate.<queue>`. Name the deployment (e.g. `evalgate.example.org/log`): no spaces, no +.
    log_origin: str | None = None

    # Observability (service/observability). Logs: one JSON object a line (request_id, job_id,
    # partner), or plain text for a person at a terminal.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # A worker's own Prometheus endpoint (unauthenticated: keep it on a private network; it carries
    # no per-partner data). None: off. The API serves GET /metrics to operators instead.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # Resource defaults and the ceiling a partner may ask for.
    default_memory_mb: int = 512
    max_memory_mb: int = 2048
    default_cpus: float = 1.0
    max_cpus: float = 2.0
    default_timeout_s: int = 300
    max_timeout_s: int = 1800
    # A job that asks for no query budget gets this many model rows, or (None) one pass over its dataset.
    # A job is charged every row it reserves, so the default is what an evaluation needs.
    default_query_budget: int | None = None
    max_query_budget: int = 1_000_000
    # The model channel, against extraction: rows a partner may have predicted per UTC day across all
    # its jobs, requests per job, rows per request and requests per second at the sidecar.
    partner_rows_per_day: int = 2_000_000
    max_requests_per_job: int = 100_000
    max_batch_rows: int = 4096
    max_requests_per_s: float = 2000.0
    # onnxruntime's threads for a model version registered without its own: fixed per version, so
    # its numbers never depend on a job's CPU limit.
    inference_threads: int = Field(default=2, ge=1, le=64)
    # Per-partner overrides of any PartnerLimits field, by principal name:
    # {"acme": {"rows_per_day": 50000, "epsilon_budget": 2.0, "bits_per_day": 1024}}
    partner_quotas: dict[str, PartnerLimitsOverride] = Field(default_factory=dict)
    pids_limit: int = 128
    # Each running job's container runs as a host uid of its own, from this range, so per-user kernel
    # limits and counters are per job (jobs.repository.allocate_sandbox_uid).
    sandbox_uid_base: int = 300000
    sandbox_uid_count: int = 65536
    tmp_size_mb: int = 64
    output_dir_bytes: int = 1 << 20
    output_dir_inodes: int = 64
    sidecar_memory_mb: int = 1024
    # Of the sidecar's memory, what it keeps for itself (interpreter, onnxruntime, one batch's working
    # memory; the model counts twice its file size on top). The rest is what a job's requests may
    # hold there at once; past it they are answered `busy`.
    sidecar_reserve_mb: int = 256
    sidecar_max_connections: int = 8
    log_cap_bytes: int = 64 << 10

    # Crashes (jobs.leases, jobs.recovery). A worker renews its claim on each job it runs every
    # lease_s / 3; a job whose claim ran out is recovered by the reaper in every worker (and the
    # embedded API) within two lease periods. A job committed as runnable that no worker holds or
    # has been handed for reconcile_after_s is handed to one again.
    lease_s: float = Field(default=10.0, ge=1.0, le=600.0)
    reconcile_after_s: float = Field(default=30.0, ge=1.0)

    # Release gate.
    result_max_bytes: int = 64 << 10
    max_metrics: int = 32
    release_decimals: int = Field(default=4, ge=0, le=8)  # proportions and reals go out on a 10^-d grid
    min_dataset_rows: int = 100
    suppress_below_rows: int = Field(default=50, ge=1)  # a metric on fewer rows is withheld
    suppress_below_class_rows: int = Field(default=20, ge=1)  # ... or, per class, with a smaller class
    # Differential privacy (OpenDP). The privacy unit is one dataset row; ε is spent per partner and
    # dataset version. "none" turns noise off (every release is then exact, and costs no ε).
    dp_mechanism: Mechanism = "laplace"
    dp_noised_kinds: list[MetricKind] = Field(default_factory=_default_noised_kinds)
    dp_delta: float = Field(default=1e-7, ge=0, lt=1e-3)  # gaussian only
    dp_epsilon_per_metric: float = Field(default=0.1, gt=0)  # when the job asks for none
    dp_max_epsilon_per_metric: float = Field(default=0.5, gt=0)
    dp_epsilon_budget: float = Field(default=10.0, ge=0)  # per partner and dataset version, for ever
    # Synthetic twins (service.twins): the ε a dataset version's generated twin spends, from its
    # registering operator's own budget on it (0: no generated twin; an operator may upload one), and
    # the quantiles its per-feature ranges are released at (q and 1 - q).
    twin_epsilon: float = Field(default=1.0, ge=0)
    twin_range_quantile: float = Field(default=0.01, ge=0, lt=0.5)
    # Leakage in bits per partner per UTC day: what released values, outcomes and times can carry.
    leakage_bits_per_day: float = Field(default=4096, ge=0)
    # ... and over an asset's lifetime, per partner: a fraction of the bits the asset holds (a dataset's
    # labels, n·log2(k), or 16 bits per regression target; a model's parameters, 32 bits each), unless
    # its operator set the asset's own. None: no lifetime cap.
    dataset_lifetime_fraction: float | None = Field(default=0.1, gt=0, le=1)
    model_lifetime_fraction: float | None = Field(default=0.1, gt=0, le=1)
    # Optional: one more cap per asset over every partner together, so partners who pool what they
    # learn cannot get past it (a fraction of the asset's bits). None: off.
    pooled_lifetime_fraction: float | None = Field(default=None, gt=0, le=1)
    # Model rows per (partner, model version) over the model's lifetime: this many per parameter (at
    # least model_lifetime_rows_min), unless its operator set the model's own. None: no lifetime cap.
    model_lifetime_rows_per_parameter: float | None = Field(default=200.0, gt=0)
    model_lifetime_rows_min: int = Field(default=20_000, ge=1)
    # The most one release may carry, and one metric: a suite declaring more is refused at upload, a
    # job asking more at submission.
    release_max_bits: float = Field(default=256.0, gt=0)
    metric_max_bits: float = Field(default=32.0, gt=0)
    # Sizing the bounds checked at upload, before a dataset is known.
    max_dataset_rows: int = Field(default=10_000_000, ge=1)
    # Releases per partner per window (moving window, in Redis), and jobs in progress per partner.
    releases_per_window: int = Field(default=30, ge=0)
    release_window_s: int = Field(default=3600, ge=1)
    max_concurrent_jobs: int = Field(default=4, ge=0)
    # Completion times shown to partners are padded up to the next of these (seconds after submission;
    # past the last, to a multiple of it), so how long a job ran is not a side channel.
    timing_buckets_s: list[float] = Field(default_factory=_default_timing_buckets_s)

    # Uploads.
    bundle_max_bytes: int = 5 << 20
    bundle_max_files: int = 200
    bundle_max_unpacked_bytes: int = 20 << 20
    # Every other dimension of a suite bundle is bounded too (service/registry/bundles.py): directories
    # (named or implied by a path), components per path, bytes per path and per name component (the
    # filesystem's NAME_MAX is 255), bytes per file, and how much more it unpacks to than it packs.
    bundle_max_dirs: int = Field(default=100, ge=0)
    bundle_max_depth: int = Field(default=16, ge=1)
    bundle_max_path_bytes: int = Field(default=1024, ge=1, le=3072)
    bundle_max_name_bytes: int = Field(default=255, ge=1, le=255)
    bundle_max_file_bytes: int = Field(default=10 << 20, ge=1)
    bundle_max_ratio: int = Field(default=100, ge=1)
    model_max_bytes: int = 512 << 20
    dataset_max_bytes: int = 512 << 20

    # API ingress (service/ingress.py), checked before a request's body is read: the most a JSON body
    # may hold (an upload is bounded by its own limit above), and failed authentications per client
    # address per minute, per API process, over at most this many remembered addresses.
    json_max_bytes: int = Field(default=1 << 20, ge=1)
    auth_failures_per_minute: int = Field(default=20, ge=1)
    auth_failure_addresses: int = Field(default=10_000, ge=1)
    # Worker threads an API process runs its blocking work in (database queries, file writes): each
    # request takes at most two (authentication, then the endpoint). anyio's default is 40; with few
    # cores, threads past the database's own concurrency only contend for the GIL (bench/api_load.py).
    api_threads: int = Field(default=40, ge=1, le=1000)

    # The results site (service/site): its session cookie is marked Secure when the request came over
    # HTTPS, and always with this set (behind a TLS proxy that does not pass the scheme on).
    site_cookie_secure: bool = False

    # Reproductions of released jobs (service.reproductions): operators may always ask for one,
    # researchers only with this on. At most this many of one job per UTC day, whoever asks.
    researchers_may_reproduce: bool = False
    reproductions_per_job_per_day: int = Field(default=5, ge=1)

    # Rows-mode suites of partners wait for an operator (metrics-mode ones, whose code sees the labels, always do).
    custom_suites_require_approval: bool = True
    # Governance (service.approvals): a grant of an approval request (and of a custom suite) needs two
    # distinct operators. Off by default: one operator decides.
    approvals_two_operators: bool = False
    # Sanctions (service.sanctions): hard-rule trips per partner per UTC day (output rejected by the
    # gate, model queries past the budget, refusals for an exhausted budget) before the partner is
    # suspended; the default of every partner's `hard_rule_trips_per_day`.
    hard_rule_trips_per_day: int = Field(default=20, ge=1)
    # Twin jobs (`"target": "twin"`, service.jobs.twin): per partner per UTC day, the default of every
    # partner's `twin_jobs_per_day`; and how much of a twin job's stdout and of its stderr its partner gets.
    twin_jobs_per_day: int = Field(default=20, ge=0)
    twin_log_cap_bytes: int = Field(default=64 << 10, ge=1024)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'evalgate.db'}"
        if self.redis_url is None and self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            self.redis_url = self.broker_url
        if self.signing_key_path is None:
            self.signing_key_path = self.data_dir / "keys" / "attestation.ed25519"
        if self.log_origin is None:
            self.log_origin = f"evalgate.{self.queue}"
        if not self.log_origin or "+" in self.log_origin or any(c.isspace() for c in self.log_origin):
            raise ValueError("log_origin must be non-empty, without spaces or +")
        if not self.timing_buckets_s or any(b <= 0 for b in self.timing_buckets_s):
            raise ValueError("timing_buckets_s needs at least one positive bucket")
        self.timing_buckets_s = sorted(self.timing_buckets_s)
        return self

    @property
    def default_limits(self) -> PartnerLimits:
        return PartnerLimits(
            rows_per_day=self.partner_rows_per_day,
            max_query_budget=self.max_query_budget,
            epsilon_budget=self.dp_epsilon_budget,
            max_epsilon_per_metric=self.dp_max_epsilon_per_metric,
            bits_per_day=self.leakage_bits_per_day,
            releases_per_window=self.releases_per_window,
            max_concurrent_jobs=self.max_concurrent_jobs,
            hard_rule_trips_per_day=self.hard_rule_trips_per_day,
            twin_jobs_per_day=self.twin_jobs_per_day,
        )

    def limits_for(self, partner: str) -> PartnerLimits:
        """A partner's limits: the operator's values where set, else the defaults."""
        override = self.partner_quotas.get(partner)
        if override is None:
            return self.default_limits
        return self.default_limits.model_copy(update=override.model_dump(exclude_none=True))

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def twin_queue(self) -> str:
        """Twin jobs' own queue, served by workers of their own (`evalgate worker --twins`): a twin
        job's partner sees when it starts, so it never waits behind real jobs (service.jobs.dispatch)."""
        return f"{self.queue}.twins"

    @property
    def longest_job_s(self) -> int:
        return self.max_timeout_s + 120  # plus container start, gate and cleanup


@lru_cache
def get_settings() -> Settings:
    return Settings()
