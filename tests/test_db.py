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


def test_an_api_engine_keeps_the_connections_it_opened(db_settings):
    """Closed on return and opened again by the next busy request, a connection past the first five
    cost PostgreSQL a new backend process each time (service.db.make_engine)."""
    from service.db import make_engine

    engine = make_engine(str(db_settings.database_url), connections=12)
    try:
        held = [engine.connect() for _ in range(12)]
        opened = {id(c.connection.dbapi_connection) for c in held}
        for c in held:
            c.close()
        assert engine.pool.checkedin() == 12
        again = [engine.connect() for _ in range(12)]
        assert {id(c.connection.dbapi_connection) for c in again} == opened  # none opened anew
        for c in again:
            c.close()
    finally:
        engine.dispose()


def test_the_api_takes_its_startup_heap_out_of_the_collectors_sight(settings):
    """A full collection over the ~230,000 objects of a started API stalled every request for
    125-145 ms (service.main.settle_heap); they go back when the app stops."""
    import gc

    from fastapi.testclient import TestClient

    from service.main import create_app

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 50_000
    assert gc.get_freeze_count() == 0


def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with engine.connect() as c:
        return int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("idle_s, replaced", [(0.0, True), (3600.0, False)])
def test_a_connection_idle_in_the_pool_is_pinged_before_use(postgres_url, monkeypatch, idle_s, replaced):
    """Past PING_AFTER_IDLE_S in the pool, a connection the server dropped is found by a ping and
    replaced before the request uses it; within it (a busy API) no ping is sent, and a dropped one
    fails the request that takes it (then the pool is dropped, as on any disconnect)."""
    import psycopg
    from sqlalchemy import exc

    from service import db

    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", idle_s)
    engine = db.make_engine(postgres_url, connections=2)
    try:
        first = _backend_pid(engine)
        with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        if replaced:
            assert _backend_pid(engine) != first
        else:
            with pytest.raises(exc.OperationalError):
                _backend_pid(engine)
            assert _backend_pid(engine) != first  # and the next one gets a new connection
    finally:
        engine.dispose()
