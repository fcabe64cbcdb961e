"""The job page's form that asks for a reproduction (service.reproductions): the same rules, charges
and refusals as `POST /v1/jobs/{id}/reproduce`, behind the session and its CSRF token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.db import session_scope
from service.errors import EvalgateError, NotFound
from service.ingress import form_limit
from service.jobs import service as jobs_service
from service.jobs.dispatch import commit_then_enqueue
from service.reproductions import service as reproductions
from service.site import sessions
from service.site.problems import PageError
from service.site.rendering import HEADERS, error_page, refused
from service.site.sessions import COOKIE, Signed

router = APIRouter(include_in_schema=False)  # under /site: endpoints.py includes it


@router.post("/jobs/{job_id}/reproduce", openapi_extra=form_limit())
async def reproduce(request: Request, job_id: str) -> Response:
    state = request.app.state
    factory = state.sessionmaker

    def find() -> Signed | None:
        with session_scope(factory) as session:
            return sessions.current(session, request.cookies.get(COOKIE))

    signed = await run_in_threadpool(find)  # who asks, before a byte of the form is read
    if signed is None:
        return RedirectResponse("/site/sign-in", status_code=303, headers=HEADERS)
    form = await request.form()
    if not sessions.tokens_match(signed.csrf_token, form.get("csrf")):
        return refused(request, signed)
    caller = signed.caller

    def ask() -> None:
        with factory() as session:
            job = jobs_service.get_visible(session, caller, job_id)
            try:
                with state.budgets.admission(caller.principal_id):
                    _, run = reproductions.request(session, state.settings, state.budgets, caller, job)
                    commit_then_enqueue(session, state.dispatcher, [run] if run is not None else [])
            except EvalgateError as e:
                session.rollback()
                reproductions.record_refusal(session, caller, job.id, e.code)
                session.commit()
                raise

    try:
        await run_in_threadpool(ask)
    except NotFound:
        return error_page(
            request,
            signed,
            PageError(404, "Job not found", f"There is no job {job_id} that you can see."),
        )
    except EvalgateError as e:
        more = f" What you can do: {'; '.join(e.alternatives)}." if e.alternatives else ""
        return error_page(
            request, signed, PageError(e.status_code, "The reproduction was not started", e.detail + more)
        )
    return RedirectResponse(f"/site/jobs/{job_id}#repro", status_code=303, headers=HEADERS)
