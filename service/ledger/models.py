from __future__ import annotations

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class AuditEvent(Base):
    """One appended event. `record` (canonical JSON) is the source of truth; the other columns are
    indexes over it and are checked against it by verification.

    leaf_hash = SHA-256(0x00 || record), the RFC 6962 leaf hash, so the same rows can later back a
    Merkle tree with signed checkpoints; chain_hash = SHA-256(prev chain_hash || leaf_hash) makes the
    sequence itself tamper-evident today.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128), index=True)
    record: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row: the size of the log and its newest chain hash. Updating it first serializes
    appends (a row lock on Postgres, the write lock on SQLite)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
