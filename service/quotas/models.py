from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base

# Daily resources, counted in whole units: model rows, and leakage in millibits.
RESOURCES = ("rows", "millibits")


class DailyUsage(Base):
    """One partner's use of a daily resource on one UTC day (embedded mode; with Redis, Redis holds it)."""

    __tablename__ = "daily_usage"

    principal_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyGrant(Base):
    """What one job was granted, so a redelivered task neither reserves twice nor refunds twice."""

    __tablename__ = "daily_grants"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    principal_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[str] = mapped_column(String(8))
    granted: Mapped[int] = mapped_column(BigInteger)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)


class EpsilonSpend(Base):
    """Differential-privacy ε spent by one partner on one dataset version, in millionths (exact sums).
    It never resets: the dataset's rows stay the same rows."""

    __tablename__ = "epsilon_spend"

    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    spent_micro: Mapped[int] = mapped_column(BigInteger, default=0)
