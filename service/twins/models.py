from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow


class TwinKind(StrEnum):
    DATASET = "dataset"  # a synthetic dataset with the version's schema
    MODEL = "model"  # a stand-in model with the version's signature


class TwinOrigin(StrEnum):
    GENERATED = "generated"  # made by the service at registration
    UPLOADED = "uploaded"  # an operator's own file


class Twin(Base):
    """The current twin of one model or dataset version (an upload replaces a generated one; the
    ledger keeps both). Its file is in the twins' own blob store (service.twins.service.blob_path)."""

    __tablename__ = "twins"
    __table_args__ = (UniqueConstraint("kind", "asset_id", name="uq_twins_kind_asset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # TwinKind
    asset_id: Mapped[int] = mapped_column(Integer)  # a model_versions or dataset_versions id, by kind
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    origin: Mapped[str] = mapped_column(String(16))  # TwinOrigin
    # Exactly what was released to make it (statistics, ε each, mechanism, seed), or what was uploaded.
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
