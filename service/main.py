"""create_app(): settings, DB, budgets, the dispatcher, routers, error handling.

Without a broker (embedded mode) the API process runs jobs itself, on one thread.
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.approvals.endpoints import requests_router as approval_requests_router
from service.approvals.endpoints import router as approvals_router
from service.auth.dependencies import AnyCaller
from service.config import Settings, get_settings
from service.db import make_engine, migrate, session_scope
from service.deps import api_connections
from service.errors import (
    EvalgateError,
    InternalError,
    InvalidRequest,
    MalformedBody,
    UnknownRoute,
    UnsupportedMethod,
)
from service.ingress import Ingress
from service.jobs.context import LazyContext, build_context
from service.jobs.dispatch import CeleryDispatcher, Dispatcher, EmbeddedDispatcher
from service.jobs.endpoints import router as jobs_router
from service.jobs.recovery import Recovery, RecoveryLoop, for_worker
from service.jobs.runner import fail_job, run_job
from service.observability import metrics
from service.observability.http import CallerObserved, RequestObserved
from service.observability.http import router as metrics_router
from service.observability.work import run_observed
from service.openapi import declare_errors
from service.outages import as_error
from service.policies.endpoints import router as policies_router
from service.quotas.endpoints import router as budget_router
from service.quotas.service import Budgets
from service.registry import service as registry
from service.registry.endpoints import router as registry_router
from service.release.dependencies import SignerDep
from service.release.signing import Signer
from service.reproductions.endpoints import router as reproductions_router
from service.sanctions.endpoints import router as sanctions_router
from service.sandbox.errors import SandboxError
from service.schema import make_sessionmaker
from service.site.endpoints import router as site_router
from service.transparency.endpoints import router as transparency_router
from service.twins.endpoints import router as twins_router

log = logging.getLogger(__name__)
REQUEST_ID = "X-Request-ID"


def _embedded_worker(app: FastAPI, settings: Settings) -> tuple[Dispatcher, RecoveryLoop]:
    """One worker thread in this process, on the same sessions and budgets as the API, and the
    recovery loop (jobs.recovery) beside it."""
    sessions, budgets = app.state.sessionmaker, app.state.budgets
    context = LazyContext(lambda: build_context(settings, sessions, budgets))

    def run(job_id: str) -> object:
        return run_observed(sessions, job_id, lambda: run_one(job_id))

    def run_one(job_id: str) -> object:
        try:
            ctx = context.get()
        except SandboxError as e:  # no Docker engine: the job cannot run, and must not wait forever
            log.error("cannot run job %s: %s", job_id, e)
            return fail_job(sessions, budgets, job_id, e)
        return run_job(ctx, job_id)

    dispatcher = EmbeddedDispatcher(run)

    def recovery() -> Recovery:
        try:
            return for_worker(context.get(), dispatcher)
        except SandboxError:  # no engine (yet): recover jobs; sandboxes wait for the engine
            return Recovery(settings, sessions, budgets, dispatcher)

    # What a previous process left: its leftovers go, and jobs it never took are handed over now
    # (the ones it held are the reaper's once their claims run out).
    first = recovery()
    first.sweep_leftovers()
    first.reconcile(older_than_s=0)
    return dispatcher, RecoveryLoop(recovery, every_s=settings.lease_s / 2).start()


def settle_heap() -> None:
    """Moves every object made so far (modules, routes, schemas, the app itself: about 230,000) out
    of the garbage collector's sight. A full collection walks every tracked object, and with them in
    it took 125–145 ms, during which the API answered nobody: measured as stalls of that length under
    load, the reads' p99. Objects made later (caches, requests) are collected as before."""
    gc.collect()
    gc.freeze()


class RequestIds:
    """Gives every request an id (the client's X-Request-ID if it sent a sane one), echoes it in the
    answer, and turns an exception into the API's error shape, never a traceback: an outage (the
    database, Redis, a full disk; service.outages) into its 503 or 507 with Retry-After, anything
    else into a 500 that names the id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID.lower().encode(), b"").decode("latin-1")
        request_id = given if 8 <= len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            outage = as_error(e)
            if outage is None:
                log.exception("request %s failed", request_id)
            else:  # expected while a dependency is away: one line, no traceback
                log.warning("request %s: %s (%s: %s)", request_id, outage.code, type(e).__name__, str(e)[:200])
            if started:
                raise
            error = outage or InternalError(f"an unexpected error occurred; request id {request_id}")
            headers = {**(error.headers() or {}), REQUEST_ID: request_id}
            response = JSONResponse(status_code=error.status_code, content=error.to_dict(), headers=headers)
            await response(scope, receive, send)


def _router_error(request: Request, exc: HTTPException) -> JSONResponse | None:
    """What Starlette and FastAPI raise themselves (no endpoint raises HTTPException) as the API's
    error: a body the parser cannot read, an address no route has (404; the results site answers its
    own unknown addresses with a page, service/site), a method the address does not take (405)."""
    error: EvalgateError
    headers = None
    if exc.status_code == MalformedBody.status_code:
        error = MalformedBody(f"the body cannot be read: {exc.detail}")
    elif exc.status_code == UnknownRoute.status_code:
        error = UnknownRoute("no endpoint has this address", alternatives=["GET /docs lists every endpoint"])
    elif exc.status_code == UnsupportedMethod.status_code:
        allowed = _allowed_methods(request)
        error = UnsupportedMethod(
            f"this address does not take {request.method}; it takes {', '.join(allowed)}",
            alternatives=[f"{m} {request.url.path}" for m in allowed],
        )
        headers = {"Allow": ", ".join(allowed)}
    else:
        return None
    return JSONResponse(status_code=error.status_code, content=error.to_dict(), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this address. Starlette's own `Allow` names only the first
    route's, and one address is often two routes (`GET /v1/jobs`, `POST /v1/jobs`)."""
    found: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.matches(request.scope)[0] is not Match.NONE:
            found |= set(route.methods or ())
    return sorted(found)


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    """`dispatcher` replaces the one chosen from settings (tests record what is enqueued and when)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = str(settings.database_url)
        migrate(url)
        engine = make_engine(url, connections=api_connections(settings.api_threads))
        app.state.settings = settings
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.session_slots = anyio.Semaphore(settings.api_threads)
        app.state.sessionmaker = make_sessionmaker(engine)
        with session_scope(app.state.sessionmaker) as s:
            registry.ensure_builtin_suites(s, settings)
        assert settings.signing_key_path is not None
        app.state.signer = Signer.load_or_create(settings.signing_key_path)
        app.state.budgets = Budgets.build(settings, app.state.sessionmaker)
        loop = None
        if dispatcher is not None:
            app.state.dispatcher = dispatcher
        elif settings.embedded:
            app.state.dispatcher, loop = _embedded_worker(app, settings)
        else:
            app.state.dispatcher = CeleryDispatcher(settings)
        settle_heap()
        yield
        gc.unfreeze()  # what outlives the app (a test process's) is collected as before
        if loop is not None:
            loop.stop()
        app.state.dispatcher.close()
        engine.dispose()

    app = FastAPI(
        title="evalgate",
        version=__version__,
        lifespan=lifespan,
        description="Sandboxed remote evaluation: scanned aggregate metrics out, weights and data never.",
    )
    metrics.install()  # counts what this process commits (service/observability/metrics.py)
    # Added first, so it runs inside RequestIds: its refusals carry the request id. CallerObserved
    # runs inside ingress (it logs who called), RequestObserved outside it (it times every answer).
    app.add_middleware(CallerObserved)
    app.add_middleware(Ingress, router=app.router, settings=settings)
    app.add_middleware(RequestObserved)
    app.add_middleware(RequestIds)

    @app.exception_handler(EvalgateError)
    async def _domain_error(request: Request, exc: EvalgateError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.to_dict(), headers=exc.headers())

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return _router_error(request, exc) or await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems: Any = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        error = InvalidRequest("the request does not match the API's schema")
        return JSONResponse(status_code=422, content={**error.to_dict(), "detail": problems})

    app.include_router(registry_router)
    app.include_router(twins_router)
    app.include_router(approvals_router)
    app.include_router(approval_requests_router)
    app.include_router(sanctions_router)
    app.include_router(jobs_router)
    app.include_router(reproductions_router)
    app.include_router(budget_router)
    app.include_router(policies_router)
    app.include_router(transparency_router)
    app.include_router(metrics_router)
    app.include_router(site_router)  # the results site's pages (service/site), not in the OpenAPI
    declare_errors(app)  # every route's error answers, in the OpenAPI document (service/openapi.py)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok", "version": __version__}

    @app.get("/v1/whoami", tags=["meta"])
    def whoami(caller: AnyCaller) -> dict[str, str]:
        """The calling principal."""
        return {"name": caller.name, "role": caller.role, "key_id": caller.key_id}

    @app.get("/v1/attestation-key", tags=["meta"])
    def attestation_key(signer: SignerDep) -> dict[str, str]:
        """The Ed25519 public key that signs released results."""
        return {"algorithm": "ed25519", "key_id": signer.key_id, "public_key": signer.public_key_b64}

    return app
