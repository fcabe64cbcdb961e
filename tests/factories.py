"""Test data: settings, principals and keys, registry rows, suite bundles, job specs.

Tests build what they need from here; fixtures (conftest.py) only wire these to real services."""

from __future__ import annotations

import io
import tarfile
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from service.auth import service as auth
from service.auth.roles import Role
from service.config import Settings
from service.registry import service as registry
from service.registry.bundles import BundleLimits
from service.registry.models import DatasetVersion

# The built-in classification suite as shipped in this release.
CLASSIFICATION = registry.builtin_ref("classification")
CLASSIFICATION_REF = f"evalgate/{CLASSIFICATION}"  # as records and alternatives name it
CLASSIFICATION_METRICS = ["accuracy", "ece", "log_loss", "macro_f1", "misclassified"]
# The built-in suite runs in rows mode: the service computes every metric from the labels, so every one is noised.
NOISED = CLASSIFICATION_METRICS
DEMO_MODEL, DEMO_DATASET = "demo-classifier@1", "demo-blobs@1"

# Test suites that do not care about kinds declare their metrics as wide bounded reals.
WIDE = {"kind": "real", "min": -1e9, "max": 1e9}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def settings(data_dir: Path, **overrides: Any) -> Settings:
    """Explicit values only: the developer's own EVALGATE_* environment must not leak into tests.
    Tests that are not about the release gate's budgets get exact values, small time buckets (so they
    need not wait) and budgets they cannot reach; the gate's own tests set these back."""
    base: dict[str, Any] = dict(
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        min_dataset_rows=100,
        default_timeout_s=60,
        queue=f"evalgate-test-{uuid.uuid4().hex[:8]}",
        dp_mechanism="none",
        timing_buckets_s=[0.25],
        leakage_bits_per_day=1e9,
        dataset_lifetime_fraction=None,
        model_lifetime_fraction=None,
        model_lifetime_rows_per_parameter=None,
        release_max_bits=1e9,
        metric_max_bits=1e9,
        dp_epsilon_budget=1e6,
        releases_per_window=100_000,
        max_concurrent_jobs=1000,
        docker_runtime="runc",  # tests name their runtime; the security battery runs both
    )
    base.update(overrides)
    return Settings(**base)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def principal(session: Session, name: str, role: Role | str, expires: str = "1d") -> tuple[int, str]:
    """A principal (made if new) and a fresh key for it: (principal id, plaintext key)."""
    row, plaintext = auth.create_key(session, name=name, role=role, expires_in=auth.parse_duration(expires))
    return row.principal_id, plaintext


def key(session: Session, name: str, role: Role | str, expires: str = "1d") -> str:
    """The plaintext of a fresh key for a principal (made if new)."""
    return principal(session, name, role, expires)[1]


def dataset_row(session: Session, name: str = "d", rows: int = 1000, **extra: Any) -> DatasetVersion:
    """A registered dataset version without a file (for tests that only need the row)."""
    values: dict[str, Any] = dict(
        name=name, version="1", sha256=uuid.uuid4().hex * 2, size_bytes=1, rows=rows, features=2, classes=2
    )
    values.update(extra)
    d = DatasetVersion(**values)
    session.add(d)
    session.flush()
    return d


def job_spec(metrics: list[str] | None = None, suite: str = CLASSIFICATION, **extra: Any) -> dict[str, Any]:
    """A POST /v1/jobs body on the demo model and dataset."""
    return {"suite": suite, "model": DEMO_MODEL, "dataset": DEMO_DATASET, "metrics": metrics or ["accuracy"], **extra}


# -- suite bundles ------------------------------------------------------------------------------------------


def manifest(name: str, metrics: list[str] | dict, version: str = "1.0.0", entrypoint: str = "main.py") -> str:
    declared = metrics if isinstance(metrics, dict) else {m: dict(WIDE) for m in metrics}
    return yaml.safe_dump({"name": name, "version": version, "entrypoint": entrypoint, "metrics": declared})


def tar_gz(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


# Small bundle limits for tests of the bundle reader (service.registry.bundles).
BUNDLE_LIMITS = BundleLimits(
    max_files=20,
    max_unpacked_bytes=1 << 20,
    max_metrics=8,
    max_dirs=20,
    max_depth=8,
    max_path_bytes=512,
    max_name_bytes=128,
    max_file_bytes=1 << 20,
    max_ratio=100,
)


def suite_bundle(name: str, code: str, metrics: list[str] | dict, version: str = "1.0.0") -> bytes:
    return tar_gz({"suite.yaml": manifest(name, metrics, version), "main.py": textwrap.dedent(code)})


def rows_bundle(name: str, code: str, rows: dict[str, Any] | None = None, version: str = "1.0.0") -> bytes:
    """A rows-mode suite: its code writes per-row outputs; the service computes the metrics."""
    manifest = {
        "name": name,
        "version": version,
        "entrypoint": "main.py",
        "mode": "rows",
        "rows": rows or {"kind": "classification"},
    }
    return tar_gz({"suite.yaml": yaml.safe_dump(manifest), "main.py": textwrap.dedent(code)})
