"""Request dependencies every domain shares: the session and the settings. A dependency that does
no I/O is `async def`: FastAPI runs a plain `def` one in a worker thread, a hop that costs more
than the work (profiled: dozens of hops a request). Each domain's own
(`BudgetsDep`, `DispatcherDep`, `VisibleJob`, ...) live in its `dependencies.py`; auth's in auth/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import wrote


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def api_connections(threads: int) -> int:
    """Database connections an API process opens at most, so that no checkout ever waits: sessions
    of requests (at most `threads` at once: `get_session` takes a slot first) + sessions a worker
    thread opens and closes itself (authentication, forms: at most one per thread) + the embedded
    worker and its recovery loop. A checkout that waited would hold its thread while the session it
    waits for waits for a thread (to validate its answer, or for its next dependency): a deadlock
    that sufficiently many concurrent requests reached (seen at 50 clients with 8 threads)."""
    return 2 * threads + 5


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; committed when the endpoint returns, rolled back on any error.

    Its scope is the endpoint function (`SessionDep`), not the request: FastAPI closes a
    request-scoped `yield` dependency only after the response has been sent, so a client acting on a
    201 could look for what it created before it was committed. A function-scoped one is closed once
    the endpoint's answer is serialized and before it is sent; a failed commit is then a 500, never
    a success that did not happen.

    At most `api_threads` requests hold a session at once (the others wait here, on the event loop,
    holding nothing); the body has been read before: a slow upload holds no slot.

    `async`: making a session does no I/O, and ending one that only read costs less than the worker
    thread hop a plain generator would take on each side (profiled: 2 of a read's 5 hops). A session
    that wrote is committed (or rolled back) in a worker thread: that may wait on a lock or a disk."""
    slots: anyio.Semaphore = request.app.state.session_slots  # see api_connections
    async with slots:
        session = request.app.state.sessionmaker()
        try:
            yield session
        except BaseException:
            await _end(session, commit=False)
            raise
        await _end(session, commit=True)


async def _end(session: Session, *, commit: bool) -> None:
    if wrote(session):
        await run_in_threadpool(_finish, session, commit)
    else:
        _finish(session, commit)


def _finish(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
