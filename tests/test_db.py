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
