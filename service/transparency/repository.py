"""Every query of the transparency log."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from service.transparency.models import LogHead, LogLeaf, LogNode


def size(session: Session) -> int:
    head = session.get(LogHead, 1)
    if head is None:
        raise RuntimeError("tlog_head row missing: run the migrations")
    return head.size


def claim_next_index(session: Session) -> int:
    """Bump the size first (the lock that orders appends), then read which index is ours."""
    bumped = cast(
        "CursorResult[Any]", session.execute(update(LogHead).where(LogHead.id == 1).values(size=LogHead.size + 1))
    )
    if bumped.rowcount != 1:
        raise RuntimeError("tlog_head row missing: run the migrations")
    head = session.execute(select(LogHead).where(LogHead.id == 1)).scalar_one()
    session.refresh(head)
    return head.size - 1


def nodes(session: Session, keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Hashes of perfect subtrees by (level, index), in one query per level."""
    by_level: dict[int, list[int]] = {}
    for level, idx in keys:
        by_level.setdefault(level, []).append(idx)
    if not by_level:
        return {}
    where = or_(*(and_(LogNode.level == lv, LogNode.idx.in_(ids)) for lv, ids in by_level.items()))
    return {(n.level, n.idx): n.hash for n in session.execute(select(LogNode).where(where)).scalars()}


def leaves(session: Session, start: int, end: int) -> list[LogLeaf]:
    rows = session.execute(select(LogLeaf).where(LogLeaf.idx >= start, LogLeaf.idx < end).order_by(LogLeaf.idx))
    return list(rows.scalars())
