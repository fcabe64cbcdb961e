"""A partner's pages (`/site/me/...`): its jobs, its budget, its suites, and a submit form that shows
what the job would cost (the API's dry run) before the partner confirms it.

Pages call the services the partner's API calls call (jobs.views, jobs.admission, quotas, registry),
so a page shows no more than those calls would. To anyone but a partner these pages do not exist
(the site's 404). The submit form is a POST with the session's CSRF token, checked after the session
and before a byte of the form is parsed; a confirmed submission goes through the same admission as
`POST /v1/jobs`, lock, audit log and refusals included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.auth.roles import Role
from service.config import Settings
from service.db import session_scope
from service.deps import SessionDep, SettingsDep
from service.errors import EvalgateError
from service.ingress import form_limit
from service.jobs import admission
from service.jobs.schemas import JobCreate
from service.jobs.views import listing
from service.quotas.service import Budgets, Partner
from service.registry import repository as registry_repo
from service.registry import service as registry
from service.site import sessions
from service.site.rendering import (
    HEADERS,
    SignedDep,
    form_sender,
    refused,
    render,
    role_refusal,
)
from service.site.sessions import Signed

router = APIRouter(prefix="/me", include_in_schema=False)
FIELDS = ("suite", "model", "dataset", "metrics", "epsilon")
# A bundle as large as `bundle_max_bytes` allows by default, and its multipart framing; the upload
# itself then holds the bundle to the setting as it is now (registry.upload_suite).
UPLOAD_FORM_BYTES = int(Settings.model_fields["bundle_max_bytes"].default) + (64 << 10)


def _partner(request: Request, signed: Signed | None) -> Signed | Response:
    """The signed-in partner, or the answer to anyone else: sign in first, or not found."""
    return role_refusal(request, signed, Role.PARTNER) or signed  # type: ignore[return-value]


@router.get("/", name="my_jobs")
def my_jobs(request: Request, signed: SignedDep, session: SessionDep, settings: SettingsDep) -> Response:
    if isinstance(who := _partner(request, signed), Response):
        return who
    jobs = listing(session, who.caller, settings.timing_buckets_s, None, 200)
    return render(request, "partner/jobs.html", who, jobs=jobs, section="jobs")


@router.get("/budget", name="my_budget")
def my_budget(request: Request, signed: SignedDep, session: SessionDep) -> Response:
    if isinstance(who := _partner(request, signed), Response):
        return who
    budgets: Budgets = request.app.state.budgets
    read = budgets.read(session, Partner(who.caller.principal_id, who.caller.name))
    return render(request, "partner/budget.html", who, budget=read, section="budget")


def _suites_page(request: Request, session: Session, who: Signed, status: int = 200, **context: Any) -> Response:
    mine = [s for s in registry_repo.suites_usable_by(session, who.caller.principal_id) if not s.builtin]
    own = [s for s in mine if s.owner_id == who.caller.principal_id]
    return render(request, "partner/suites.html", who, status, suites=own, section="suites", **context)


@router.get("/suites", name="my_suites")
def my_suites(request: Request, signed: SignedDep, session: SessionDep) -> Response:
    if isinstance(who := _partner(request, signed), Response):
        return who
    return _suites_page(request, session, who)


@router.post("/suites", openapi_extra=form_limit(UPLOAD_FORM_BYTES))
async def upload_suite(request: Request) -> Response:
    """A suite bundle uploaded from the page: the same upload as `POST /v1/suites` (its own limit,
    checks and refusals), after the session and, before the bundle is looked at, the CSRF token."""
    who = await _form_sender(request)
    if isinstance(who, Response):
        return who
    async with request.form(max_files=1, max_fields=4) as form:
        if not sessions.tokens_match(who.csrf_token, form.get("csrf")):
            return refused(request, who)
        upload = form.get("bundle")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return await run_in_threadpool(
                _in_session,
                request,
                lambda s: _suites_page(request, s, who, 422, problem="Choose a bundle file first."),
            )

        def store(session: Session) -> Response:
            settings = request.app.state.settings
            try:
                row, created = registry.upload_suite(
                    session,
                    settings,
                    stream=upload.file,
                    owner_id=who.caller.principal_id,
                    owner=who.caller.name,
                    role=who.caller.role,
                    actor=who.caller.actor,
                )
            except EvalgateError as e:
                session.rollback()
                return _suites_page(request, session, who, e.status_code, refusal=e.to_dict())
            done = f"Uploaded {row.ref}" if created else f"{row.ref} was uploaded before with these exact files"
            return _suites_page(request, session, who, note=done + ".")

        return await run_in_threadpool(_in_session, request, store)


def _in_session(request: Request, work: Callable[[Session], Response]) -> Response:
    with session_scope(request.app.state.sessionmaker) as session:
        return work(session)


async def _form_sender(request: Request) -> Signed | Response:
    """Who sends a form, from the session cookie alone, before a byte of the form is read."""
    return await form_sender(request, Role.PARTNER)


def _choices(session: Any, signed: Signed) -> dict[str, list[str]]:
    return {
        "suites": [s.ref for s in registry_repo.suites_usable_by(session, signed.caller.principal_id)],
        "models": [m.ref for m in registry_repo.models(session) if m.status == "active"],
        "datasets": [d.ref for d in registry_repo.datasets(session) if d.status != "retired"],
    }


@router.get("/submit", name="submit_form")
def submit_form(request: Request, signed: SignedDep, session: SessionDep) -> Response:
    if isinstance(who := _partner(request, signed), Response):
        return who
    return render(request, "partner/submit.html", who, form={}, choices=_choices(session, who), section="submit")


def _job_request(form: dict[str, str]) -> JobCreate:
    metrics = [m.strip() for m in form.get("metrics", "").replace("\n", ",").split(",") if m.strip()]
    body: dict[str, Any] = {
        "suite": form.get("suite", ""),
        "model": form.get("model", ""),
        "dataset": form.get("dataset", ""),
    }
    body["metrics"] = metrics
    if form.get("epsilon", "").strip():
        body["epsilon"] = form["epsilon"].strip()
    return JobCreate.model_validate(body)


@router.post("/submit", openapi_extra=form_limit())
async def submit(request: Request) -> Response:
    """`action=preview`: the dry run's answer under the form; `action=confirm`: the submission."""
    who = await _form_sender(request)
    if isinstance(who, Response):
        return who
    raw = await request.form()
    if not sessions.tokens_match(who.csrf_token, raw.get("csrf")):
        return refused(request, who)
    form = {k: str(raw.get(k) or "")[:1000] for k in FIELDS}
    confirm = raw.get("action") == "confirm"
    return await run_in_threadpool(_answer, request, who, form, confirm)


def _answer(request: Request, signed: Signed, form: dict[str, str], confirm: bool) -> Response:
    app = request.app.state
    with session_scope(app.sessionmaker) as session:
        context: dict[str, Any] = {"form": form, "choices": _choices(session, signed), "section": "submit"}
        try:
            req = _job_request(form)
        except ValidationError as e:
            problems = [f"{'.'.join(map(str, err['loc'])) or 'form'}: {err['msg']}" for err in e.errors()]
            return render(request, "partner/submit.html", signed, 422, problems=problems, **context)
        try:
            if not confirm:
                try:
                    preview = admission.preview(session, app.settings, app.budgets, signed.caller, req)
                finally:
                    session.rollback()  # a dry run writes nothing
                return render(request, "partner/submit.html", signed, preview=preview, **context)
            job, _ = admission.admit(session, app.settings, app.budgets, app.dispatcher, signed.caller, req)
        except EvalgateError as e:
            status = e.status_code if 400 <= e.status_code < 500 else 400
            return render(request, "partner/submit.html", signed, status, refusal=e.to_dict(), **context)
        return RedirectResponse(f"/site/jobs/{job.id}", status_code=303, headers=HEADERS)
