from __future__ import annotations

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class RowUsage(Base):
    """Model rows reserved by one partner on one UTC day (embedded mode; with Redis, Redis holds it)."""

    __tablename__ = "row_usage"

    principal_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)


class RowGrant(Base):
    """What one job was granted, so a redelivered task neither reserves twice nor refunds twice."""

    __tablename__ = "row_grants"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[str] = mapped_column(String(8))
    granted: Mapped[int] = mapped_column(Integer)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
