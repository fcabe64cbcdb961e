"""The console's pages and forms (`/site/console/...`), for operators only.

Pages call the domain services the operators' API and CLI call (policies, quotas, jobs, registry,
auth); nothing here queries a table itself. Forms are POSTs with the session's CSRF token, checked
(access.operator_form) before anything they ask is done. Here: partners and their limits, usage
over the last days, the queue, lifting a suspension; approvals.py, datasets.py and keys.py hold the rest."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.db import utcnow
from service.deps import SessionDep, SettingsDep
from service.errors import EvalgateError
from service.ingress import form_limit
from service.jobs import service as jobs_service
from service.policies import errors as policy_errors
from service.policies import service as policies
from service.policies.schemas import PartnerPolicyValues
from service.quotas import usage
from service.sanctions import service as sanctions
from service.site.console import approvals, datasets, keys, usage_chart
from service.site.console import partners as views
from service.site.console.access import in_transaction, operator_form, page_refusal, say, see_other, text
from service.site.problems import PageError
from service.site.rendering import SignedDep, error_page, render
from service.site.sessions import Signed

router = APIRouter(prefix="/console", include_in_schema=False)
router.include_router(approvals.router)
router.include_router(datasets.router)
router.include_router(keys.router)
LIMITS_FORM_BYTES = 64 << 10  # a partner's lists of models and datasets may be long
USAGE_DAYS = 30


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, as a person says it: 45 s, 12 min, 3 h 5 min, 2 days."""
    if since is None:
        return "—"
    s = max(0, int((now - since).total_seconds()))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days" if s >= 2 * 86400 else "1 day"


# -- partners -----------------------------------------------------------------------------------------------


def _partners(
    request: Request, signed: Signed, session: Any, status: int = 200, notice: str = "", problem: str = ""
) -> Response:
    now = utcnow()
    rows = views.partner_rows(session, request.app.state.settings, request.app.state.budgets, now)
    return render(
        request,
        "console/partners.html",
        signed,
        status,
        rows=rows,
        now=now,
        notice=notice,
        problem=problem,
        section="partners",
    )


@router.get("/", name="console")
def partners_page(request: Request, signed: SignedDep, session: SessionDep, lifted: str = "") -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    assert signed is not None
    notice = f"{lifted[:64]}'s suspension is lifted: its next submission is admitted as usual." if lifted else ""
    return _partners(request, signed, session, notice=notice)


@router.post("/partners/{partner}/lift", openapi_extra=form_limit())
async def lift_suspension(request: Request, partner: str) -> Response:
    """Lift a partner's suspension with a reason, as POST /v1/partners/{partner}/suspension/lift."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    reason, settings = text(form, "reason", 1000), request.app.state.settings

    def lift(session: Any) -> None:
        sanctions.lift(session, settings, partner, reason, signed.caller.actor)

    try:
        await in_transaction(request, lift)
    except EvalgateError as e:
        problem, status = f"{partner}'s suspension was not lifted: {say(e)}", e.status_code
        return await in_transaction(request, lambda s: _partners(request, signed, s, status, problem=problem))
    return see_other(f"/site/console/?{urlencode({'lifted': partner})}")


def _partner_page(
    request: Request,
    signed: Signed,
    form: views.LimitsForm,
    changes: list[Any],
    status: int = 200,
    problems: list[str] | None = None,
    notice: str = "",
    tried: dict[str, Any] | None = None,
) -> Response:
    return render(
        request,
        "console/partner.html",
        signed,
        status,
        form=form,
        changes=changes,
        problems=problems or [],
        notice=notice,
        tried=tried,
        show=views.show,
        label=views.label,
        section="partners",
    )


@router.get("/partners/{partner}", name="console_partner")
def partner_page(
    request: Request, partner: str, signed: SignedDep, session: SessionDep, settings: SettingsDep, saved: int = 0
) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    assert signed is not None
    try:
        read = policies.read_partner(session, settings, partner)
    except policy_errors.PolicySubjectNotFound:
        return error_page(request, signed, _no_partner(partner))
    notice = (
        f"Saved. {partner}'s limits are at version {read.version}; they apply to the next submission." if saved else ""
    )
    return _partner_page(request, signed, views.form_of(settings, read), views.history(session, partner), notice=notice)


def _no_partner(partner: str) -> PageError:
    return PageError(404, "No such partner", f"There is no partner named {partner}. The partners page lists them all.")


@router.post("/partners/{partner}", openapi_extra=form_limit(LIMITS_FORM_BYTES))
async def change_limits(request: Request, partner: str) -> Response:
    """The form's values replace what is set for the partner, if its policy is still at the version the
    form was filled from; a stale form is refused (412) and shows what is there now."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    settings = request.app.state.settings
    sent = views.submitted(form)
    body = views.validate(sent)

    def apply(session: Any) -> tuple[int, views.LimitsForm | None, list[Any], list[str]]:
        """(status, the form to show again or None when saved, the history, the problems)."""
        read = policies.read_partner(session, settings, partner)
        if isinstance(body, list):
            return 422, views.form_of(settings, read, sent.typed, sent.reason), views.history(session, partner), body
        values = PartnerPolicyValues.model_validate(body.model_dump(exclude={"reason"}))
        try:
            with session.begin_nested():  # a refused change leaves nothing behind
                policies.set_partner(
                    session,
                    settings,
                    partner,
                    values,
                    reason=body.reason,
                    actor=signed.caller.actor,
                    if_match=sent.version,
                )
        except policy_errors.PolicyChanged:
            fresh = views.form_of(settings, read)  # what is there now, at its version: nothing typed is kept
            problem = (
                f"Nothing was saved: another change was made to {partner}'s limits since you opened this form "
                f"(they are now at version {read.version}). Its values are in the form below and the change is at "
                "the top of the history; apply your change to them if it still makes sense."
            )
            return 412, fresh, views.history(session, partner), [problem]
        except EvalgateError as e:
            return (
                e.status_code,
                views.form_of(settings, read, sent.typed, sent.reason),
                views.history(session, partner),
                [say(e)],
            )
        return 303, None, [], []

    try:
        status, shown, changes, problems = await in_transaction(request, apply)
    except policy_errors.PolicySubjectNotFound:
        return error_page(request, signed, _no_partner(partner))
    if shown is None:
        return see_other(f"/site/console/partners/{partner}?saved=1")
    tried = {views.label(k): v for k, v in sent.typed.items()} if status == 412 else None
    return _partner_page(request, signed, shown, changes, status, problems, tried=tried)


# -- usage over the last days -------------------------------------------------------------------------------


@router.get("/usage", name="console_usage")
def usage_page(
    request: Request, signed: SignedDep, session: SessionDep, measure: str = usage_chart.DEFAULT
) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    chosen = usage_chart.MEASURES.get(measure, usage_chart.MEASURES[usage_chart.DEFAULT])
    chart = usage_chart.draw(usage.daily(session, USAGE_DAYS), chosen, utcnow().date(), USAGE_DAYS)
    return render(
        request,
        "console/usage.html",
        signed,
        chart=chart,
        measure=chosen,
        measures=usage_chart.MEASURES.values(),
        days=USAGE_DAYS,
        section="usage",
    )


# -- the queue ----------------------------------------------------------------------------------------------


@router.get("/queue", name="console_queue")
def queue_page(request: Request, signed: SignedDep, session: SessionDep) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    return render(
        request,
        "console/queue.html",
        signed,
        queue=jobs_service.queue(session),
        now=utcnow(),
        age=age,
        section="queue",
    )
