"""The console's approvals: custom suites waiting for an operator, with every file of their bundles,
and requests above policy to grant or deny with a reason, through the same `service.approvals`
functions as the API (two operators where the deployment says so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from service.approvals import service as approvals
from service.approvals.models import RequestKind, RequestState
from service.deps import SessionDep
from service.errors import EvalgateError
from service.ingress import form_limit
from service.jobs import service as jobs_service
from service.jobs.dispatch import commit_then_enqueue
from service.registry import contents
from service.registry import service as registry
from service.site.console.access import (
    in_transaction,
    operator_form,
    page_refusal,
    say,
    see_other,
    text,
)
from service.site.rendering import NOT_FOUND, SignedDep, error_page, render
from service.site.sessions import Signed

router = APIRouter(include_in_schema=False)  # under /site/console: endpoints.py includes it


def _approvals_page(
    request: Request, signed: Signed, session: Any, status: int = 200, notice: str = "", problem: str = ""
) -> Response:
    settings = request.app.state.settings
    suites = registry.awaiting_approval(session)
    pending = approvals.listing(session, settings, RequestState.PENDING, REQUESTS_SHOWN)
    return render(
        request,
        "console/approvals.html",
        signed,
        status,
        suites=suites,
        files={s.id: contents.bundle_files(settings.data_dir, s) for s in suites},
        waiting=jobs_service.waiting_for_suites(session),
        suite_requests={r.suite: r for r in pending if r.kind == RequestKind.SUITE},
        requests=[r for r in pending if r.kind == RequestKind.EXCEPTION],
        grants_needed=approvals.grants_needed(settings),
        shown=contents.Shown,
        file_limit=contents.FILE_SHOWN_BYTES,
        bundle_limit=contents.BUNDLE_SHOWN_BYTES,
        notice=notice,
        problem=problem,
        section="approvals",
    )


REQUESTS_SHOWN = 200
PAST = {"grant": "granted", "deny": "denied"}
DONE = {
    "suite": "Approved {}: its waiting jobs are queued.",
    "suite-first": "Your approval of {} is recorded. Another operator must approve it too before its jobs run.",
    "granted": "Request {} is granted: its job runs with exactly what it asked.",
    "granted-first": "Your grant of request {} is recorded. Another operator must grant it too.",
    "denied": "Request {} is denied: its job is cancelled, and its partner sees your reason.",
}


@router.get("/approvals", name="console_approvals")
def approvals_page(
    request: Request, signed: SignedDep, session: SessionDep, done: str = "", what: str = ""
) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    assert signed is not None
    notice = DONE[done].format(what[:200]) if done in DONE else ""
    return _approvals_page(request, signed, session, notice=notice)


async def _decided(request: Request, signed: Signed, work: Callable[[Session], str], failed: str) -> Response:
    """Run a decision in one transaction (`work(session)` -> the redirect's query); on a refusal, the
    approvals page again with why, and nothing done."""
    try:
        query = await in_transaction(request, work)
    except EvalgateError as e:
        problem, status = f"{failed}: {say(e)}", e.status_code
        return await in_transaction(request, lambda s: _approvals_page(request, signed, s, status, problem=problem))
    return see_other(f"/site/console/approvals?{query}")


@router.post("/approvals/suite", openapi_extra=form_limit())
async def approve_suite(request: Request) -> Response:
    """Approve a suite's code as POST /v1/suites/.../approve does (two operators where the deployment
    says so); its waiting jobs are queued."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    ref, reason = text(form, "suite", 300), text(form, "reason", 1000)
    settings, dispatcher = request.app.state.settings, request.app.state.dispatcher

    def approve(session: Session) -> str:
        row, queued = approvals.approve_suite(session, settings, ref, signed.caller.actor, reason or None)
        commit_then_enqueue(session, dispatcher, queued)
        return urlencode({"done": "suite" if row.approved else "suite-first", "what": row.ref})

    return await _decided(request, signed, approve, f"{ref or 'That suite'} was not approved")


@router.post("/approvals/requests/{request_id}/{verb}", openapi_extra=form_limit())
async def decide_request(request: Request, request_id: int, verb: str) -> Response:
    """Grant or deny a request above policy with a reason, as POST /v1/approval-requests/{id}/{verb}."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    if verb not in PAST:
        return error_page(request, signed, NOT_FOUND)
    reason = text(form, "reason", 1000)
    app = request.app.state
    actor = signed.caller.actor

    def decide(session: Session) -> str:
        if verb == "deny":
            approvals.deny(session, app.settings, app.budgets, request_id, reason, actor)
            return urlencode({"done": "denied", "what": request_id})
        found, runnable = approvals.grant(session, app.settings, request_id, reason, actor)
        commit_then_enqueue(session, app.dispatcher, runnable)
        return urlencode(
            {"done": "granted" if found.state == RequestState.GRANTED else "granted-first", "what": request_id}
        )

    return await _decided(request, signed, decide, f"Request {request_id} was not {PAST[verb]}")
