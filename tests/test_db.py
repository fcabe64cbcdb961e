"""The unit of work: what a transaction did outside the database is undone when it rolls back."""

from __future__ import annotations

import pytest

from service.db import on_rollback, session_scope
from service.ledger.models import AuditHead


def test_undo_runs_on_rollback_only_and_once(sessions):
    undone: list[str] = []
    with session_scope(sessions) as s:
        s.get(AuditHead, 1)
        on_rollback(s, lambda: undone.append("committed"))
    assert undone == []
    with pytest.raises(RuntimeError), session_scope(sessions) as s:
        s.get(AuditHead, 1)
        on_rollback(s, lambda: undone.append("first"))
        on_rollback(s, lambda: undone.append("second"))
        raise RuntimeError("refused")
    assert undone == ["second", "first"]  # in reverse, like the reservations they undo
    with session_scope(sessions) as s:  # a later unit of work on a new session starts clean
        s.get(AuditHead, 1)
    assert undone == ["second", "first"]


def test_a_failing_undo_does_not_stop_the_others(sessions):
    undone: list[str] = []

    def broken() -> None:
        raise ConnectionError("redis went away")

    with pytest.raises(RuntimeError), session_scope(sessions) as s:
        s.get(AuditHead, 1)
        on_rollback(s, lambda: undone.append("rows"))
        on_rollback(s, broken)
        raise RuntimeError("refused")
    assert undone == ["rows"]


def test_a_session_knows_whether_it_wrote(sessions):
    """The API ends a session that only read on its event loop, and one that wrote in a worker
    thread (service.deps): every way of writing through a Session must count."""
    from sqlalchemy import select, text, update

    from service.db import wrote
    from service.ledger.models import AuditEvent

    with sessions() as s:
        s.get(AuditHead, 1)
        s.execute(select(AuditEvent).limit(1)).all()
        assert not wrote(s)
    with sessions() as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        head.size = head.size + 1  # dirty until flushed
        assert wrote(s)
        s.rollback()
    with sessions() as s:
        s.execute(update(AuditHead).where(AuditHead.id == -1).values(size=0))
        assert wrote(s)
    with sessions() as s:
        s.execute(text("SELECT 1"))  # raw SQL: counted as a write, whatever it says
        assert wrote(s)
    with sessions() as s:
        s.add(AuditHead(id=-5, size=0, head_hash="0" * 64))
        s.flush()
        assert wrote(s)
        s.rollback()
