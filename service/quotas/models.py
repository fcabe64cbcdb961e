from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow

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


class BudgetReservation(Base):
    """Everything one job reserved at admission, and whether it has been settled. The job counts as
    'in progress' for its partner until it is. Settling happens once (a conditional UPDATE of
    `settled`), so a job's budgets are given back or charged exactly once, whoever ends it."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_open", "principal_id", "settled"),)

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    epsilon_micro: Mapped[int] = mapped_column(BigInteger)  # ε spent on the dataset version, in millionths
    millibits: Mapped[int] = mapped_column(BigInteger)  # the most the job's ending can carry
    rows: Mapped[int] = mapped_column(BigInteger)  # model rows granted (at most what the job asked for)
    day: Mapped[str] = mapped_column(String(8))  # the UTC day the daily parts were counted on
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    ran: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rows_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
