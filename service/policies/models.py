"""Operators' per-partner limits and per-dataset-version policies. A column left null keeps the
deployment's default (the EVALGATE_* setting); `version` counts the changes, and is the ETag."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow


class PartnerPolicy(Base):
    __tablename__ = "partner_policies"

    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    public_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rows_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_query_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    epsilon_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_epsilon_per_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    bits_per_day: Mapped[float | None] = mapped_column(Float, nullable=True)
    releases_per_window: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hard_rule_trips_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    twin_jobs_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Model and dataset names (`name`, any version, or `name@version`) the partner may use; null: all.
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    datasets: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(96), default="")


class DatasetPolicy(Base):
    __tablename__ = "dataset_policies"

    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    dp_mechanism: Mapped[str | None] = mapped_column(String(16), nullable=True)
    epsilon_per_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_epsilon_per_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    epsilon_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    suppress_below_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    suppress_below_class_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_dataset_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(96), default="")
