"""Operators' governance commands, on the database directly (like `evalgate quotas`), recorded as
`cli:<user>`: `evalgate approvals list|grant|deny`, `evalgate partners suspension|lift`, `evalgate
models usage|license|retire|purge` and `evalgate datasets usage|license|retire`. Heavy imports wait until a command
runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import click

from service.policies.commands import _actor, _echo, _fail, _open

if TYPE_CHECKING:
    from service.config import Settings


def _enqueue(settings: Settings, job_ids: list[str]) -> None:
    """Hand queued jobs to the workers now where there is a broker; embedded, the API's reconciler
    takes them (jobs.recovery)."""
    if not job_ids or not settings.broker_url:
        return
    from service.jobs.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher(settings)
    try:
        for job_id in job_ids:
            dispatcher.enqueue(job_id)
    finally:
        dispatcher.close()


# -- approvals ---------------------------------------------------------------------------------------------


@click.group()
def approvals() -> None:
    """Requests above policy (and suites, where two operators approve): list, grant, deny."""


@approvals.command("list")
@click.option("--state", type=click.Choice(["pending", "granted", "denied", "withdrawn"]), default="pending")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
def approvals_list(state: str, limit: int) -> None:
    """Approval requests in STATE, newest first."""
    from service.approvals import service as approvals_service
    from service.approvals.models import RequestState

    settings, sessions = _open()
    with sessions() as s:
        for found in approvals_service.listing(s, settings, RequestState(state), limit):
            _echo(found)
            click.echo("---")


def _decide(request_id: int, reason: str, verb: Literal["grant", "deny"]) -> None:
    from service.approvals import service as approvals_service
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.quotas.service import Budgets

    settings, sessions = _open()
    runnable: list[str] = []
    try:
        with session_scope(sessions) as s:
            if verb == "grant":
                found, runnable = approvals_service.grant(s, settings, request_id, reason, _actor())
            else:
                found = approvals_service.deny(
                    s, settings, Budgets.build(settings, sessions), request_id, reason, _actor()
                )
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    _enqueue(settings, runnable)
    _echo(found)


@approvals.command("grant")
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="why: recorded on the audit log")
def approvals_grant(request_id: int, reason: str) -> None:
    """Grant request REQUEST_ID: its job runs with exactly what it asked."""
    _decide(request_id, reason, "grant")


@approvals.command("deny")
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="why: recorded on the audit log, shown to the partner")
def approvals_deny(request_id: int, reason: str) -> None:
    """Deny request REQUEST_ID: its job ends cancelled, with the reason."""
    _decide(request_id, reason, "deny")


# -- partners: suspensions ---------------------------------------------------------------------------------


@click.group()
def partners() -> None:
    """Partners' suspensions for tripping hard rules: show, lift."""


@partners.command("suspension")
@click.argument("name")
def partners_suspension(name: str) -> None:
    """NAME's suspension, today's hard-rule trips and its limit."""
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.sanctions import service as sanctions

    settings, sessions = _open()
    try:
        with session_scope(sessions) as s:  # a suspension that is due is recorded when read
            found = sanctions.read(s, settings, name)
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    _echo(found)


@partners.command("lift")
@click.argument("name")
@click.option("--reason", required=True, help="why: recorded on the audit log")
def partners_lift(name: str, reason: str) -> None:
    """Lift NAME's suspension; its trips so far stop counting."""
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.sanctions import service as sanctions

    settings, sessions = _open()
    try:
        with session_scope(sessions) as s:
            found = sanctions.lift(s, settings, name, reason, _actor())
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")
    _echo(found)


# -- models and datasets: usage, license terms, retirement ---------------------------------------------------


def _usage(kind: Literal["model", "dataset"], ref: str) -> None:
    from service.errors import EvalgateError
    from service.registry import lifecycle

    _, sessions = _open()
    try:
        with sessions() as s:
            _echo(lifecycle.usage(s, kind, ref))
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")


def _license(
    kind: Literal["model", "dataset"], ref: str, terms: str, spdx: str | None, url: str | None, reason: str
) -> None:
    from pydantic import ValidationError

    from service.db import session_scope
    from service.errors import EvalgateError
    from service.registry import lifecycle
    from service.registry.schemas import LicenseRead

    try:
        license_ = LicenseRead(terms=terms, spdx=spdx, url=url)
    except ValidationError as e:
        _fail("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()), 2)
    _, sessions = _open()
    try:
        with session_scope(sessions) as s:
            row = lifecycle.set_license(s, kind, ref, license_, reason=reason, actor=_actor())
            click.echo(f"{kind} {row.ref}: {row.license}")
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")


@click.group()
def models() -> None:
    """Model versions: which partners used them, their license terms, retirement, purging weights."""


@models.command("usage")
@click.argument("ref")
def models_usage(ref: str) -> None:
    """Which partners used model REF (name@version), with their jobs and releases."""
    _usage("model", ref)


@models.command("license")
@click.argument("ref")
@click.option("--terms", required=True, help="the terms in a few words")
@click.option("--spdx", default=None, help="an SPDX license id")
@click.option("--url", default=None, help="where the terms are")
@click.option("--reason", required=True, help="why: recorded on the audit log")
def models_license(ref: str, terms: str, spdx: str | None, url: str | None, reason: str) -> None:
    """Set model REF's license terms (a short text and an SPDX id or a URL)."""
    _license("model", ref, terms, spdx, url, reason)


def _retire(kind: Literal["model", "dataset"], ref: str, confirm: str | None) -> None:
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.registry import lifecycle
    from service.registry.errors import RetirementUnconfirmed

    _, sessions = _open()
    try:
        with session_scope(sessions) as s:
            set_status = lifecycle.set_model_status if kind == "model" else lifecycle.set_dataset_status
            row = set_status(s, ref, "retired", _actor(), confirm=confirm)
            click.echo(f"{kind} {row.ref}: {row.status}")
    except RetirementUnconfirmed as e:
        for line in e.alternatives:
            click.echo(line)
        _fail(f"{e.code}: {e.detail}", 3)
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}")


@models.command("retire")
@click.argument("ref")
@click.option("--confirm", default=None, help="the token the first attempt printed")
def models_retire(ref: str, confirm: str | None) -> None:
    """Retire model REF; with released jobs, the first attempt lists them and prints a token."""
    _retire("model", ref, confirm)


@models.command("purge")
@click.argument("ref")
@click.option("--reason", required=True, help="why: recorded on the audit log")
def models_purge(ref: str, reason: str) -> None:
    """Delete retired model REF's weights; its released jobs can then no longer be reproduced."""
    from service.db import session_scope
    from service.errors import EvalgateError
    from service.registry import lifecycle

    settings, sessions = _open()
    try:
        with session_scope(sessions) as s:
            deleted = lifecycle.purge_model(s, settings.data_dir, ref, reason=reason, actor=_actor())
    except EvalgateError as e:
        _fail(f"{e.code}: {e.detail}" + "".join(f"\n  - {a}" for a in e.alternatives))
    click.echo(
        f"model {ref}: weights {'deleted' if deleted else 'already gone, or kept for a version with the same bytes'}"
    )


@click.group()
def datasets() -> None:
    """Dataset versions: which partners used them, their license terms, retirement."""


@datasets.command("usage")
@click.argument("ref")
def datasets_usage(ref: str) -> None:
    """Which partners used dataset REF (name@version), with their jobs and releases."""
    _usage("dataset", ref)


@datasets.command("license")
@click.argument("ref")
@click.option("--terms", required=True, help="the terms in a few words")
@click.option("--spdx", default=None, help="an SPDX license id")
@click.option("--url", default=None, help="where the terms are")
@click.option("--reason", required=True, help="why: recorded on the audit log")
def datasets_license(ref: str, terms: str, spdx: str | None, url: str | None, reason: str) -> None:
    """Set dataset REF's license terms (a short text and an SPDX id or a URL)."""
    _license("dataset", ref, terms, spdx, url, reason)


@datasets.command("retire")
@click.argument("ref")
@click.option("--confirm", default=None, help="the token the first attempt printed")
def datasets_retire(ref: str, confirm: str | None) -> None:
    """Retire dataset REF; with released jobs, the first attempt lists them and prints a token."""
    _retire("dataset", ref, confirm)
