"""One Settings object, read at the entry points (API app, worker, CLI)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVALGATE_", extra="ignore")

    data_dir: Path = Path(".evalgate")
    # Default: a SQLite file inside data_dir. Production: postgresql+psycopg://...
    database_url: str | None = None
    # None means embedded mode: the API process runs one worker thread itself.
    broker_url: str | None = None
    queue: str = "evalgate-jobs"  # the Celery queue API and workers share
    # Where per-partner counters live; defaults to the broker when that is Redis. Unset: the database.
    redis_url: str | None = None

    docker_runtime: str = "runc"
    job_image: str = "evalgate-job:latest"
    sidecar_image: str = "evalgate-sidecar:latest"
    signing_key_path: Path | None = None

    # Resource defaults and the ceiling a partner may ask for.
    default_memory_mb: int = 512
    max_memory_mb: int = 2048
    default_cpus: float = 1.0
    max_cpus: float = 2.0
    default_timeout_s: int = 300
    max_timeout_s: int = 1800
    default_query_budget: int = 100_000
    max_query_budget: int = 1_000_000
    # The model channel, against extraction: rows a partner may have predicted per UTC day across all
    # its jobs, requests per job, rows per request and requests per second at the sidecar.
    partner_rows_per_day: int = 2_000_000
    max_requests_per_job: int = 100_000
    max_batch_rows: int = 4096
    max_requests_per_s: float = 2000.0
    # Per-partner overrides, by principal name: {"acme": {"rows_per_day": 50000, "max_query_budget": 10000}}
    partner_quotas: dict[str, dict[str, int]] = Field(default_factory=dict)
    pids_limit: int = 128
    tmp_size_mb: int = 64
    output_dir_bytes: int = 1 << 20
    output_dir_inodes: int = 64
    sidecar_memory_mb: int = 1024
    log_cap_bytes: int = 64 << 10

    # Release gate.
    result_max_bytes: int = 64 << 10
    max_metrics: int = 32
    significant_digits: int = Field(default=4, ge=1, le=15)
    min_dataset_rows: int = 100

    # Uploads.
    bundle_max_bytes: int = 5 << 20
    bundle_max_files: int = 200
    bundle_max_unpacked_bytes: int = 20 << 20
    model_max_bytes: int = 512 << 20
    dataset_max_bytes: int = 512 << 20

    custom_suites_require_approval: bool = True

    @model_validator(mode="after")
    def _derive_paths(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'evalgate.db'}"
        if self.redis_url is None and self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            self.redis_url = self.broker_url
        if self.signing_key_path is None:
            self.signing_key_path = self.data_dir / "keys" / "attestation.ed25519"
        if self.docker_runtime not in {"runc", "runsc", "auto"}:
            raise ValueError("docker_runtime must be runc, runsc or auto")
        return self

    def partner_limit(self, name: str, key: str) -> int:
        """A partner's own limit if the operator set one, else the default."""
        defaults = {"rows_per_day": self.partner_rows_per_day, "max_query_budget": self.max_query_budget}
        return int(self.partner_quotas.get(name, {}).get(key, defaults[key]))

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def longest_job_s(self) -> int:
        return self.max_timeout_s + 120  # plus container start, gate and cleanup


@lru_cache
def get_settings() -> Settings:
    return Settings()
