from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow
from service.release.catalogue import MetricDecl

# A model or dataset version's lifecycle: it only moves forward; a retired version takes no new jobs.
LIFECYCLE = ("active", "deprecated", "retired")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)  # input/output names, dtypes, shapes: never weights
    # How the built-in suites read it (inference.model_info.Contract), and the one onnxruntime
    # configuration it runs with wherever it runs (part of every release's provenance).
    contract: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inference: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the sidecar lets a job see of its outputs: {"kind": "full" | "rounded" | "top_k" | "labels",
    # "digits": d (rounded), "k": k (top_k)}. Against extraction; recorded in provenance.
    output_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {"kind": "full"})
    # The operator's own lifetime caps per partner (None: the defaults derived from its size).
    lifetime_bits: Mapped[float | None] = mapped_column(Float, nullable=True)
    lifetime_rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Its license terms, {"terms", "spdx", "url"} (registry.schemas.LicenseRead), or None: shown with
    # every result computed on it and signed into each release's attestation.
    license: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[int] = mapped_column(Integer)
    classes: Mapped[int] = mapped_column(Integer)  # 0 for a regression dataset (float targets)
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    task: Mapped[str] = mapped_column(String(16), default="classification")  # or "regression"
    features_dtype: Mapped[str] = mapped_column(String(16), default="float32")
    # The features alone (x, without y): what a rows-mode job is given, so its code never sees labels.
    features_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # For operators only: per-class rows, and what registration warned about (NaN accepted, ...).
    class_counts: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    lifetime_bits: Mapped[float | None] = mapped_column(Float, nullable=True)  # the operator's own cap
    license: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # as ModelVersion.license
    status: Mapped[str] = mapped_column(String(16), default="active")  # as ModelVersion.status (LIFECYCLE)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class SuiteVersion(Base):
    """A suite version is `namespace/name@version`: the namespace is its uploader's principal name, or
    the reserved one of the built-in suites, so one partner's names never collide with another's."""

    __tablename__ = "suite_versions"
    __table_args__ = (
        UniqueConstraint("namespace", "name", "version", name="uq_suite_versions_namespace_name_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # tree digest of the extracted files
    entrypoint: Mapped[str] = mapped_column(String(255))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # name -> declaration (kind, ...), see release.catalogue
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    # "metrics": the suite's code computes and reports its metrics (declared by kind in `metrics`).
    # "rows": it writes one output row per dataset row and the service computes the metrics (`rows`:
    # what the rows are, and which of the catalogue's metrics it offers); its code never sees labels.
    mode: Mapped[str] = mapped_column(String(16), default="metrics")
    rows: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("principals.id"), nullable=True)
    # Usable by every partner (built-in suites always are); otherwise by its owner and operators only.
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"

    @property
    def metric_decls(self) -> dict[str, MetricDecl]:
        return {name: MetricDecl.model_validate(d) for name, d in self.metrics.items()}
