from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
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
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    epsilon_micro: Mapped[int] = mapped_column(BigInteger)  # ε spent on the dataset version, in millionths
    millibits: Mapped[int] = mapped_column(BigInteger)  # the most the job's ending can carry
    rows: Mapped[int] = mapped_column(BigInteger)  # model rows granted (at most what the job asked for)
    day: Mapped[str] = mapped_column(String(8))  # the UTC day the daily parts were counted on
    # The lifetime counters it was counted against: [[scope, asset id, principal id, resource, amount]].
    lifetime_parts: Mapped[list[list[Any]] | None] = mapped_column(JSON, nullable=True)
    # The job ended (`ran`: its partner code may have run), and what that gives back is applied at
    # `settle_at`: the time its partner sees it end (the padded time), so no budget a partner can read
    # moves before then. `settled`: applied. Until then it counts as a job in progress.
    ended: Mapped[bool] = mapped_column(Boolean, default=False)
    settle_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    ran: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rows_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LifetimeUsage(Base):
    """What one partner (principal_id), or every partner together (principal_id 0), has used of one
    asset over its lifetime: leakage in millibits, or model rows. Never resets."""

    __tablename__ = "lifetime_usage"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "dataset" or "model"
    asset_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)  # "millibits" or "rows"
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
