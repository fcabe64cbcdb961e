"""The results site's pages and forms (`/site`). Not in the OpenAPI document: they are for people.

Every page resolves the caller from its session cookie (sessions.py) and then asks the same services
the API endpoints ask, so a role sees on a page no more than its API calls show it. Forms are small
(ingress caps them at 4 KiB before they are read, `form_limit`), and a form's session and CSRF token
are checked before anything it asks is done."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.auth.roles import Role
from service.config import Settings
from service.deps import SessionDep, SettingsDep
from service.site import chart as charts
from service.site import jobpage, reproduce, sessions, signin
from service.site import leaderboard as boards
from service.site.console import endpoints as console
from service.site.partner import endpoints as partner
from service.site.problems import PageError
from service.site.rendering import HEADERS, SignedDep, error_page, render, secret_of, to_sign_in
from service.site.sessions import COOKIE, Signed

HERE = Path(__file__).parent
router = APIRouter(prefix="/site", include_in_schema=False)
router.include_router(signin.router)  # before the catch-all below
router.include_router(reproduce.router)  # the job page's reproduction form
router.include_router(console.router)  # operators' pages (service/site/console)
router.include_router(partner.router)  # partners' own pages (service/site/partner)
STATIC = {p.name: p.read_bytes() for p in (HERE / "static").iterdir() if p.suffix in {".css", ".js", ".svg"}}
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


@router.get("/", name="home")
def home(request: Request, signed: SignedDep, session: SessionDep, settings: SettingsDep) -> Response:
    if signed is None:
        return to_sign_in(request)
    found = boards.boards(session, signed.caller, settings.timing_buckets_s)
    return render(request, "boards.html", signed, boards=found, refs=boards)


def _filters(
    model: str | None, partner: str | None, since: str | None, until: str | None, sort: str, order: str, page: int
) -> boards.Filters:
    def day(text: str | None) -> date | None:
        try:
            return date.fromisoformat(text) if text else None
        except ValueError:
            raise PageError(
                400, "That date is not one we can read", f"{text!r} is not a date like 2026-11-27."
            ) from None

    return boards.Filters(
        model=model or None,
        partner=partner or None,
        since=day(since),
        until=day(until),
        sort=sort or boards.DATE,
        order="asc" if order == "asc" else "desc",
        page=max(1, page),
    )


class BoardQuery:
    """The leaderboard's query string: which board, its filters, sort and page."""

    def __init__(
        self,
        suite: str = "",
        dataset: str = "",
        model: str = "",
        partner: str = "",
        since: str = "",
        until: str = "",
        sort: str = boards.DATE,
        order: str = "desc",
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        chart: str = "",
    ):
        self.suite, self.dataset, self.chart = suite, dataset, chart
        self.args = (model, partner, since, until, sort, order, page)
        self.raw = {
            "suite": suite,
            "dataset": dataset,
            "model": model,
            "partner": partner,
            "since": since,
            "until": until,
            "sort": sort,
            "order": order,
            "chart": chart,
        }


def _board_page(
    session: SessionDep, settings: Settings, signed: Signed, q: BoardQuery, page_size: int | None
) -> boards.Page:
    found = boards.find_board(session, q.suite, q.dataset)
    if found is None:
        raise PageError(
            404,
            "No such leaderboard",
            f"There is no suite {q.suite or '(none given)'} or no dataset {q.dataset or '(none given)'} here. "
            "The list of leaderboards shows every pair with a release you can see.",
        )
    filters = _filters(*q.args)
    return boards.page(
        session,
        signed.caller,
        settings.timing_buckets_s,
        secret_of(settings),
        *found,
        filters,
        page_size=page_size,
        chart_metric=q.chart or None,
    )


@router.get("/leaderboard", name="leaderboard")
def leaderboard(
    request: Request, signed: SignedDep, session: SessionDep, settings: SettingsDep, q: Annotated[BoardQuery, Depends()]
) -> Response:
    if signed is None:
        return to_sign_in(request)
    try:
        page = _board_page(session, settings, signed, q, boards.PAGE_SIZE)
    except PageError as e:
        return error_page(request, signed, e)
    suites, datasets = boards.board_refs(
        session, signed.caller, settings.timing_buckets_s
    )  # the suite and dataset filters
    return render(
        request,
        "leaderboard.html",
        signed,
        suites=sorted({*suites, boards.suite_ref(page.suite)}),
        datasets=sorted({*datasets, boards.dataset_ref(page.dataset)}),
        page=page,
        q=q.raw,
        refs=boards,
        chart=charts.draw(page.chart),
        you=sessions.pseudonym(secret_of(settings), signed.caller.principal_id)
        if signed.caller.role == Role.PARTNER
        else None,
    )


def _export_rows(page: boards.Page) -> list[dict[str, Any]]:
    rows = []
    for r in page.rows:
        row: dict[str, Any] = {
            "job_id": r.job_id,
            "model": r.model,
            "partner": r.partner,
            "released_at": r.released_at.isoformat(),
        }
        for name in page.metrics:
            c = r.cells[name]
            row[name] = c.value
            row[f"{name}.noise_scale"] = c.scale
            row[f"{name}.noise_on"] = ("counts" if c.on_counts else "value") if c.scale is not None else None
            row[f"{name}.epsilon"] = c.epsilon
            row[f"{name}.withheld"] = c.withheld
        rows.append(row)
    return rows


def _cell_text(v: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is quoted as text."""
    text = "" if v is None else str(v)
    return "'" + text if isinstance(v, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/leaderboard.csv")
def leaderboard_csv(
    request: Request, signed: SignedDep, session: SessionDep, settings: SettingsDep, q: Annotated[BoardQuery, Depends()]
) -> Response:
    if signed is None:
        return to_sign_in(request)
    try:
        page = _board_page(session, settings, signed, q, None)
    except PageError as e:
        return error_page(request, signed, e)
    rows = _export_rows(page)
    out = io.StringIO()
    columns = ["job_id", "model", "partner", "released_at"] + [
        f"{m}{part}" for m in page.metrics for part in ("", ".noise_scale", ".noise_on", ".epsilon", ".withheld")
    ]
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell_text(row[c]) for c in columns])
    name = f"{page.suite.name}-{page.suite.version}_{page.dataset.name}-{page.dataset.version}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/leaderboard.json")
def leaderboard_json(
    request: Request, signed: SignedDep, session: SessionDep, settings: SettingsDep, q: Annotated[BoardQuery, Depends()]
) -> Response:
    if signed is None:
        return to_sign_in(request)
    try:
        page = _board_page(session, settings, signed, q, None)
    except PageError as e:
        return error_page(request, signed, e)
    body = {
        "suite": boards.suite_ref(page.suite),
        "dataset": boards.dataset_ref(page.dataset),
        "metrics": page.metrics,
        "rows": _export_rows(page),
    }
    name = f"{page.suite.name}-{page.suite.version}_{page.dataset.name}-{page.dataset.version}.json"
    return Response(
        json.dumps(body, indent=1),
        media_type="application/json",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/jobs/{job_id}", name="job")
def job(request: Request, job_id: str, signed: SignedDep, session: SessionDep, settings: SettingsDep) -> Response:
    if signed is None:
        return to_sign_in(request)
    try:
        view = jobpage.load(session, request.app.state.signer, settings, signed.caller, job_id, secret_of(settings))
    except PageError as e:
        return error_page(request, signed, e)
    base = str(request.base_url).rstrip("/")
    return render(request, "job.html", signed, job=view, base_url=base)


@router.get("/static/{name}")
def static(name: str) -> Response:
    body = STATIC.get(name)
    if body is None:
        return Response("not found", status_code=404, media_type="text/plain")
    suffix = Path(name).suffix
    return Response(
        body, media_type=TYPES[suffix], headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
    )


@router.get("/{rest:path}")
def not_found(request: Request, rest: str, session: SessionDep) -> Response:
    signed = sessions.current(session, request.cookies.get(COOKIE))
    return error_page(
        request,
        signed,
        PageError(
            404, "Page not found", "There is no page at this address. The leaderboards list is a good place to start."
        ),
    )
