"""Engine, sessions and migrations.

Services flush and never commit; the request dependency and session_scope() commit at the end of
a unit of work, so an error leaves nothing half-written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import DateTime, String, create_engine, event, exc
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, SessionTransaction, UOWTransaction, sessionmaker
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


E = TypeVar("E", bound=StrEnum)


class StrEnumText(TypeDecorator[E]):
    """A closed set stored as its text value, read back as its enum member."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int):
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


def make_engine(url: str, connections: int | None = None) -> Engine:
    """`connections`: the most the engine opens at once (SQLAlchemy's default otherwise: 5, and 10
    more while busy). The API sizes it so that a checkout never waits (service.deps). Each is kept
    open once opened (opened only when needed): as SQLAlchemy's overflow, any past 5 were closed on
    return and opened again by the next busy request, a new PostgreSQL backend process each time
    (under 50 readers, 8 % of the API's time went into opening and closing connections)."""
    pool: dict[str, Any] = {} if connections is None else {"pool_size": connections, "max_overflow": 0}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        memory = path in ("", ":memory:")
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **({} if memory else pool)
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            # The API and the worker write concurrently: WAL lets readers go on during a write.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(url, **pool)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """A connection that sat in the pool for PING_AFTER_IDLE_S or more is pinged before use, and a
    dead one makes the pool drop every connection it held (the server restarted) and open a new one:
    SQLAlchemy's pre-ping, but only after idleness. Pinging every checkout cost a round trip to
    PostgreSQL per session, two per API read: 5.0 against 3.1 ms of the API's CPU per read under 50
    readers. A connection used within the last second went bad only if the server died since; the
    request on it then fails like every request in flight at that moment (503 database_unavailable),
    and the pool is dropped all the same (SQLAlchemy invalidates it on a disconnect error)."""

    @event.listens_for(engine, "checkin")
    def _returned(_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_S:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(conn)
        except Exception as e:
            raise exc.InvalidatePoolError(f"the database did not answer a ping: {type(e).__name__}") from e


WROTE = "evalgate.wrote"  # in Session.info: set once the session has sent anything but a SELECT


def track_writes(maker: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions from `maker` remember whether they wrote (see `wrote`)."""
    event.listen(maker, "do_orm_execute", _mark_statement)
    event.listen(maker, "after_flush", _mark_flush)
    return maker


def wrote(session: Session) -> bool:
    """Whether ending the session may write or wait on a lock: it flushed or executed anything but a
    SELECT through the Session (raw SQL counts as a write), or holds changes its commit would flush."""
    return bool(session.info.get(WROTE) or session.new or session.dirty or session.deleted)


def _mark_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info[WROTE] = True


def _mark_flush(session: Session, _flush: UOWTransaction) -> None:
    session.info[WROTE] = True


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work for tasks and the CLI: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_UNDO = "evalgate.undo_on_rollback"


def on_rollback(session: Session, undo: Callable[[], object]) -> None:
    """Run `undo` if the session's transaction ends without committing. For what a transaction did
    outside the database (a reservation in Redis), which the database's own rollback cannot undo."""
    session.info.setdefault(_UNDO, []).append(undo)


@event.listens_for(Session, "after_commit")
def _forget_undo(session: Session) -> None:
    session.info.pop(_UNDO, None)


@event.listens_for(Session, "after_transaction_end")
def _undo_if_not_committed(session: Session, transaction: SessionTransaction) -> None:
    # after_commit has already emptied the list when the outermost transaction committed.
    if transaction.parent is None and transaction.nested is False:
        for undo in reversed(session.info.pop(_UNDO, [])):
            try:
                undo()
            except Exception:  # one failed undo must not stop the others; the reaper settles what is left
                log.exception("undoing a reservation after a rollback failed")


def insert_if_missing(session: Session, model: type, **values: Any) -> None:
    """INSERT a row unless its key exists (ON CONFLICT DO NOTHING): concurrent first writers of a
    counter row must not collide on creating it."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    inserts: dict[str, Callable[[type], PostgresInsert | SqliteInsert]] = {
        "postgresql": pg_insert,
        "sqlite": sqlite_insert,
    }
    insert = inserts[session.get_bind().dialect.name]
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (or to `revision`)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)
