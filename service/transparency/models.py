from __future__ import annotations

from sqlalchemy import Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class LogLeaf(Base):
    """One entry of the transparency log. `data` (canonical JSON) is what is hashed: for a release,
    a commitment to its signed statement, never the statement itself."""

    __tablename__ = "tlog_leaves"

    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)


class LogNode(Base):
    """The hash of a perfect subtree: leaves [idx·2^level, (idx+1)·2^level). Level 0 holds the leaf
    hashes. Every proof is made from these, with O(log n) reads."""

    __tablename__ = "tlog_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogHead(Base):
    """A single row: the log's size. Updating it first serializes appends (a row lock on Postgres,
    the write lock on SQLite), as the audit log's head does."""

    __tablename__ = "tlog_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
