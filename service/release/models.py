from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow


class Result(Base):
    """A released result. The unique job_id makes a second release of one job impossible."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    # How the values were made: suppressed metrics and why, noise parameters, bits charged.
    disclosure: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    ledger_seq: Mapped[int] = mapped_column(Integer)
    # The DSSE envelope of its in-toto statement, and its leaf in the transparency log; null for a
    # release made before the log existed.
    envelope: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    leaf_index: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    # HMAC-SHA256 of the raw (pre-noise) result under the server secret (release/raw.py), for
    # reproductions to compare with; never shown. Null for a release made before revision 0013.
    raw_hmac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
