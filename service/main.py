"""create_app(): settings, DB, routers, error handlers, and the embedded worker when there is no broker."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import __version__
from service.auth.dependencies import AnyCaller
from service.config import Settings, get_settings
from service.db import make_engine, make_sessionmaker, migrate, session_scope
from service.errors import EvalgateError
from service.registry import service as registry

log = logging.getLogger(__name__)


def _start_dispatcher(app: FastAPI, settings: Settings):
    from service.jobs import service as jobs_service
    from service.jobs.dispatch import CeleryDispatcher, EmbeddedDispatcher

    if not settings.embedded:
        return CeleryDispatcher(settings)
    from service.jobs.runner import fail_job, run_job
    from service.sandbox.errors import SandboxError
    from service.worker import build_context, sweep_orphans

    state = {"ctx": None}

    def run(job_id: str):
        if state["ctx"] is None:
            try:
                state["ctx"] = build_context(settings)
            except SandboxError as e:  # no Docker engine: the job cannot run, and must not wait forever
                log.error("cannot run job %s: %s", job_id, e)
                return fail_job(app.state.sessionmaker, job_id, e)
            sweep_orphans(state["ctx"])
        return run_job(state["ctx"], job_id)

    dispatcher = EmbeddedDispatcher(run)
    # Jobs left queued or running by a previous process are resumed, as Celery would redeliver them.
    with session_scope(app.state.sessionmaker) as s:
        for job_id in jobs_service.unfinished_ids(s):
            dispatcher.enqueue(job_id)
    return dispatcher


def create_app(settings: Settings | None = None, dispatcher=None) -> FastAPI:
    """`dispatcher` replaces the one chosen from settings (tests record what is enqueued and when)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessionmaker = make_sessionmaker(engine)
        with session_scope(app.state.sessionmaker) as s:
            registry.ensure_builtin_suites(s, settings)
        from service.quotas.guards import AdmissionGuards
        from service.quotas.store import make_quota
        from service.release.signing import Signer

        app.state.signer = Signer.load_or_create(settings.signing_key_path)
        app.state.quota = make_quota(settings, app.state.sessionmaker)
        app.state.bits = make_quota(settings, app.state.sessionmaker, "millibits")
        app.state.guards = AdmissionGuards(
            redis_url=settings.redis_url, namespace=settings.queue, window_s=settings.release_window_s
        )
        app.state.dispatcher = dispatcher or _start_dispatcher(app, settings)
        yield
        app.state.dispatcher.close()
        engine.dispose()

    app = FastAPI(
        title="evalgate",
        version=__version__,
        lifespan=lifespan,
        description="Sandboxed remote evaluation: scanned aggregate metrics out, weights and data never.",
    )

    @app.exception_handler(EvalgateError)
    async def _domain_error(request: Request, exc: EvalgateError):
        return JSONResponse(status_code=exc.status_code, content=exc.to_dict(), headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse(
            status_code=422, content={"error": "invalid_request", "detail": problems, "alternatives": []}
        )

    from service.jobs.endpoints import router as jobs_router
    from service.quotas.endpoints import router as budget_router
    from service.registry.endpoints import router as registry_router

    app.include_router(registry_router)
    app.include_router(jobs_router)
    app.include_router(budget_router)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict:
        """Liveness."""
        return {"status": "ok", "version": __version__}

    @app.get("/v1/whoami", tags=["meta"])
    def whoami(caller: AnyCaller) -> dict:
        """The calling principal."""
        return {"name": caller.name, "role": caller.role, "key_id": caller.key_id}

    @app.get("/v1/attestation-key", tags=["meta"])
    def attestation_key(request: Request) -> dict:
        """The Ed25519 public key that signs released results."""
        signer = request.app.state.signer
        return {"algorithm": "ed25519", "key_id": signer.key_id, "public_key": signer.public_key_b64}

    return app
