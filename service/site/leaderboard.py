"""A leaderboard: the released jobs of one suite version on one dataset version, one row each, as
the caller may see them (the visibility rules of the API: a partner sees its own jobs, and a release
only from its padded time; researchers and operators see every release).

The query reads a few columns of every matching job (and the sort metric, extracted by the
database), filters, sorts and pages them here, and loads the full results of one page only, plus one
per model version for the chart. See bench/site_leaderboard.py for what that costs at 10,000 rows.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

from service.auth.roles import Role
from service.auth.service import Caller
from service.db import utcnow
from service.jobs.models import Job
from service.jobs.states import JobState
from service.jobs.views import partner_view
from service.registry.models import DatasetVersion, ModelVersion, SuiteVersion
from service.release import service as release_service
from service.release.models import Result
from service.site.sessions import pseudonym

PAGE_SIZE = 50
Order = Literal["asc", "desc"]
# Columns a leaderboard sorts by besides its metrics.
DATE, MODEL = "released", "model"


@dataclass(frozen=True)
class Filters:
    model: str | None = None  # name@version
    partner: str | None = None  # a public name (pseudonym)
    since: date | None = None
    until: date | None = None
    sort: str = DATE
    order: Order = "desc"
    page: int = 1


@dataclass(frozen=True)
class Cell:
    """One metric of one release: its value and noise, or why it was withheld, or not asked."""

    value: float | None = None
    scale: float | None = None
    epsilon: float | None = None
    on_counts: bool = False
    withheld: str | None = None


@dataclass(frozen=True)
class Row:
    job_id: str
    model: str
    partner: str
    released_at: datetime
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Point:
    model: str
    value: float
    error: float | None  # the noise scale in the metric's units, if known
    approximate: bool  # noise on counts: the bar is scale ÷ dataset rows
    job_id: str


@dataclass
class Page:
    suite: SuiteVersion
    dataset: DatasetVersion
    metrics: list[str]
    rows: list[Row]
    total: int
    filters: Filters
    pages: int
    models: list[str] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)
    chart_metric: str | None = None
    chart: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class Board:
    suite: SuiteVersion
    dataset: DatasetVersion
    releases: int


def model_ref(m: ModelVersion) -> str:
    return f"{m.name}@{m.version}"


def suite_ref(s: SuiteVersion) -> str:
    return f"{s.namespace}/{s.name}@{s.version}"


def dataset_ref(d: DatasetVersion) -> str:
    return f"{d.name}@{d.version}"


@dataclass(frozen=True)
class _Seen:
    """What the listing needs of one release before its page is chosen."""

    job_id: str
    model_version_id: int
    principal_id: int
    released_at: datetime
    sort_value: float | None


@dataclass
class _Selection:
    """The rows a page shows, out of how many, and the chart's rows (the latest per model version)."""

    total: int
    shown: list[_Seen]
    latest: dict[int, _Seen]
    model_ids: set[int]  # on the whole board, for the filter's options
    principal_ids: set[int]


def _partner_selection(
    session: Session,
    caller: Caller,
    buckets: list[float],
    where: list[Any],
    sort_metric: str | None,
    filters: Filters,
    names: Callable[[int], str],
    model_refs: Callable[[int], str],
    model_order: Callable[[int], Any],
    page: tuple[int, int | None],
) -> _Selection:
    """A partner's board: its own releases, each from its padded time (jobs.views.partner_view), so
    it is chosen, sorted and paged here, where that time is known."""
    until = _day_end(filters.until)
    sort_col = Result.metrics[sort_metric].as_float() if sort_metric else None
    q = select(Job, *([sort_col] if sort_col is not None else [])).join(Result, Result.job_id == Job.id)
    q = q.where(*where, Job.principal_id == caller.principal_id).options(lazyload("*"))
    seen = []
    for job, *value in session.execute(q):
        state, _, finished = partner_view(job, buckets)
        if state != JobState.RELEASED or finished is None:
            continue  # not yet at its padded time, or cancelled before it: not released for its partner
        v = value[0] if value else None
        seen.append(_Seen(job.id, job.model_version_id, job.principal_id, finished, None if v is None else float(v)))
    chosen = [
        s
        for s in seen
        if (not filters.model or model_refs(s.model_version_id) == filters.model)
        and (not filters.partner or names(s.principal_id) == filters.partner)
        and (filters.since is None or s.released_at >= _day_start(filters.since))
        and (until is None or s.released_at < until)
    ]
    reverse = filters.order == "desc"
    if filters.sort == MODEL:
        chosen.sort(key=lambda s: (model_order(s.model_version_id), s.released_at), reverse=reverse)
    elif sort_metric is not None:
        # Withheld or not asked go last whichever the order.
        with_value = sorted((s for s in chosen if s.sort_value is not None), key=lambda s: s.sort_value or 0.0)
        if reverse:
            with_value.reverse()
        chosen = with_value + [s for s in chosen if s.sort_value is None]
    else:
        chosen.sort(key=lambda s: (s.released_at, s.job_id), reverse=reverse)
    latest: dict[int, _Seen] = {}
    for s in chosen:
        if s.model_version_id not in latest or s.released_at > latest[s.model_version_id].released_at:
            latest[s.model_version_id] = s
    number, size = page
    shown = chosen if size is None else chosen[(number - 1) * size : number * size]
    return _Selection(len(chosen), shown, latest, {s.model_version_id for s in seen}, {s.principal_id for s in seen})


def _sql_selection(
    session: Session,
    where: list[Any],
    sort_metric: str | None,
    filters: Filters,
    partner_ids: dict[str, int],
    model_ids: dict[str, int],
    page: tuple[int, int | None],
) -> _Selection:
    """Researchers' and operators' board: every release, chosen, sorted and paged by the database
    (a release's date is its real end, as their API shows it). The board's indexes
    (site/models.py) serve the date order and the chart's look-ups; a metric order sorts the board."""
    released = Job.finished_at  # set when a job ends, so on every release
    chosen = list(where)
    if filters.model:
        chosen.append(Job.model_version_id == model_ids.get(filters.model, -1))
    if filters.partner:
        chosen.append(Job.principal_id == partner_ids.get(filters.partner, -1))
    if filters.since is not None:
        chosen.append(released >= _day_start(filters.since))
    if (until := _day_end(filters.until)) is not None:
        chosen.append(released < until)
    # A released job has its result (released in the same transaction), so only a metric order
    # reads results; the rest is answered from the board's covering index (site/models.py).
    cols = (Job.id, Job.model_version_id, Job.principal_id, released)
    base = select(*cols).where(*chosen)
    total = session.execute(select(func.count()).select_from(Job).where(*chosen)).scalar_one()
    desc = filters.order == "desc"
    number, size = page

    def paged(q: Any) -> Any:
        return q if size is None else q.limit(size).offset((number - 1) * size)

    if sort_metric is not None:
        value = Result.metrics[sort_metric].as_float()
        ids = select(Job.id).where(*chosen)
        ordered = select(Result.job_id).where(Result.job_id.in_(ids))
        # Withheld (or not asked) last, whichever the order.
        ordered = ordered.order_by((value.desc() if desc else value.asc()).nulls_last(), Result.job_id)
        page_ids = list(session.execute(paged(ordered)).scalars())
        found = {r[0]: r for r in session.execute(select(*cols).where(Job.id.in_(page_ids)))}
        rows = [found[i] for i in page_ids if i in found]
    elif filters.sort == MODEL:
        keys = [ModelVersion.created_at, ModelVersion.id]
        q = base.join(ModelVersion, ModelVersion.id == Job.model_version_id)
        q = q.order_by(*[k.desc() if desc else k.asc() for k in keys], released.desc(), Job.id.desc())
        rows = list(session.execute(paged(q)))
    else:
        q = base.order_by(released.desc(), Job.id.desc()) if desc else base.order_by(released.asc(), Job.id.asc())
        rows = list(session.execute(paged(q)))
    shown = [_Seen(r[0], r[1], r[2], r[3] or utcnow(), None) for r in rows]
    # The chart's rows: one indexed look-up per model version (ix_jobs_leaderboard_model).
    latest = {}
    for model_id in sorted(model_ids.values()):
        q = base.where(Job.model_version_id == model_id).order_by(released.desc(), Job.id.desc()).limit(1)
        for job_id, model, principal, at in session.execute(q):
            latest[model] = _Seen(job_id, model, principal, at or utcnow(), None)
    return _Selection(total, shown, latest, set(model_ids.values()), set(partner_ids.values()))


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _day_end(day: date | None) -> datetime | None:
    """The moment after `day` (UTC), or None when there is none to bound by: no day given, or the
    last day a date can be (9999-12-31: every release is on or before it)."""
    if day is None or day == date.max:
        return None
    return _day_start(day + timedelta(days=1))


def boards(session: Session, caller: Caller, buckets: list[float]) -> list[Board]:
    """Every (suite version, dataset version) pair with a release the caller may see, most releases first."""
    counts: dict[tuple[int, int], int] = {}
    q = select(Job).join(Result, Result.job_id == Job.id).where(Job.state == JobState.RELEASED)
    if caller.role == Role.PARTNER:
        for job in session.execute(q.where(Job.principal_id == caller.principal_id).options(lazyload("*"))).scalars():
            if partner_view(job, buckets)[0] == JobState.RELEASED:
                key = (job.suite_version_id, job.dataset_version_id)
                counts[key] = counts.get(key, 0) + 1
    else:
        grouped = (
            select(Job.suite_version_id, Job.dataset_version_id, func.count())
            .join(Result, Result.job_id == Job.id)
            .where(Job.state == JobState.RELEASED)
            .group_by(Job.suite_version_id, Job.dataset_version_id)
        )
        counts = {(s, d): n for s, d, n in session.execute(grouped)}
    found = []
    for (suite_id, dataset_id), n in counts.items():
        suite, dataset = session.get(SuiteVersion, suite_id), session.get(DatasetVersion, dataset_id)
        if suite is not None and dataset is not None:
            found.append(Board(suite, dataset, n))
    return sorted(found, key=lambda b: (-b.releases, suite_ref(b.suite), dataset_ref(b.dataset)))


def _shown_released(session: Session, caller: Caller, buckets: list[float], *where: Any) -> Any:
    """For a partner: a condition keeping only its own jobs it sees released now (from their padded
    times, jobs.views.partner_view), so no list of the board (metric names, suites, datasets, models)
    shows a release before its partner may see it, nor one it cancelled first."""
    q = select(Job).where(Job.state == JobState.RELEASED, Job.principal_id == caller.principal_id, *where)
    jobs = session.execute(q.options(lazyload("*"))).scalars()
    return Job.id.in_([j.id for j in jobs if partner_view(j, buckets)[0] == JobState.RELEASED])


def board_refs(session: Session, caller: Caller, buckets: list[float]) -> tuple[list[str], list[str]]:
    """The suites and the datasets of every board with a release the caller's jobs list shows
    (the leaderboard's suite and dataset filters): one scan of the board index."""
    q = select(Job.suite_version_id, Job.dataset_version_id).where(Job.state == JobState.RELEASED).distinct()
    if caller.role == Role.PARTNER:
        q = q.where(_shown_released(session, caller, buckets))
    pairs = list(session.execute(q))
    suites = session.execute(select(SuiteVersion).where(SuiteVersion.id.in_({s for s, _ in pairs}))).scalars()
    datasets = session.execute(select(DatasetVersion).where(DatasetVersion.id.in_({d for _, d in pairs}))).scalars()
    return sorted(suite_ref(s) for s in suites), sorted(dataset_ref(d) for d in datasets)


def find_board(session: Session, suite: str, dataset: str) -> tuple[SuiteVersion, DatasetVersion] | None:
    """The pair named `owner/name@version` and `name@version`, if both exist."""
    s_name, _, s_version = suite.rpartition("@")
    owner, _, s_name = s_name.rpartition("/")
    d_name, _, d_version = dataset.rpartition("@")
    q = select(SuiteVersion).where(
        SuiteVersion.namespace == owner, SuiteVersion.name == s_name, SuiteVersion.version == s_version
    )
    s = session.execute(q).scalar_one_or_none()
    d = session.execute(
        select(DatasetVersion).where(DatasetVersion.name == d_name, DatasetVersion.version == d_version)
    ).scalar_one_or_none()
    return None if s is None or d is None else (s, d)


def _partner_names(secret: bytes, ids: Iterable[int]) -> dict[int, str]:
    return {i: pseudonym(secret, i) for i in ids}


_NAMES: OrderedDict[tuple[Any, ...], list[str]] = OrderedDict()
_NAMES_LOCK = threading.Lock()


def _metric_names(session: Session, where: list[Any], key: tuple[Any, ...]) -> list[str]:
    """Every metric asked for on this board (the distinct metric lists of its jobs' specs). Reading
    them means reading every job's spec, so they are kept per board and caller, and read again when
    the board's releases change (their count or latest end, from the board's index: a release is
    never undone, so a board with neither changed has the same jobs)."""
    count, last = session.execute(select(func.count(), func.max(Job.finished_at)).where(*where)).one()
    version = (*key, count, last)
    with _NAMES_LOCK:
        if version in _NAMES:
            _NAMES.move_to_end(version)
            return _NAMES[version]
    lists = select(Job.spec["metrics"].as_string()).where(*where).distinct()
    names: set[str] = set()
    for (text,) in session.execute(lists):
        if text:
            names.update(str(n) for n in json.loads(text))
    found = sorted(names)
    with _NAMES_LOCK:
        _NAMES[version] = found
        while len(_NAMES) > 256:
            _NAMES.popitem(last=False)
    return found


def cells(result: Result, metrics: list[str]) -> dict[str, Cell]:
    withheld = {s["metric"]: str(s["reason"]) for s in result.disclosure.get("suppressed", [])}
    noise = result.disclosure.get("noise", {})
    out = {}
    for name in metrics:
        n = noise.get(name) or {}
        if name in result.metrics:
            out[name] = Cell(
                value=float(result.metrics[name]),
                scale=None if n.get("scale") is None else float(n["scale"]),
                epsilon=None if n.get("epsilon") is None else float(n["epsilon"]),
                on_counts=n.get("on") == "counts",
            )
        elif name in withheld:
            out[name] = Cell(withheld=withheld[name])
        else:
            out[name] = Cell()
    return out


def page(
    session: Session,
    caller: Caller,
    buckets: list[float],
    secret: bytes,
    suite: SuiteVersion,
    dataset: DatasetVersion,
    filters: Filters,
    *,
    page_size: int | None = PAGE_SIZE,
    chart_metric: str | None = None,
) -> Page:
    """One page of the board (`page_size` None: every row, for exports)."""
    spec_where: list[Any] = [
        Job.suite_version_id == suite.id,
        Job.dataset_version_id == dataset.id,
        Job.state == JobState.RELEASED,
    ]
    partner = caller.role == Role.PARTNER
    if partner:
        spec_where.append(Job.principal_id == caller.principal_id)
        spec_where.append(_shown_released(session, caller, buckets, *spec_where))
    board_key = (str(session.get_bind().engine.url), suite.id, dataset.id, caller.principal_id if partner else None)
    metrics = _metric_names(session, spec_where, board_key)
    sort_metric = filters.sort if filters.sort in metrics else None
    # The board's model versions and partners (the filters' options), from its index alone.
    on_board = select(Job.model_version_id, Job.principal_id).where(*spec_where).distinct()
    pairs = list(session.execute(on_board))
    models = {
        m.id: m
        for m in session.execute(
            select(ModelVersion).where(ModelVersion.id.in_({m for m, _ in pairs})).options(lazyload("*"))
        ).scalars()
    }
    ordered_models = sorted(models, key=lambda i: (models[i].created_at, i))
    names = _partner_names(secret, {p for _, p in pairs})
    wanted = (max(filters.page, 1), page_size)
    if caller.role == Role.PARTNER:
        position = {i: k for k, i in enumerate(ordered_models)}
        chosen = _partner_selection(
            session, caller, buckets, spec_where, sort_metric, filters, names.__getitem__,
            lambda i: model_ref(models[i]), position.__getitem__, wanted,
        )  # fmt: skip
    else:
        chosen = _sql_selection(
            session, spec_where, sort_metric, filters, {n: i for i, n in names.items()},
            {model_ref(m): i for i, m in models.items()}, wanted,
        )  # fmt: skip
    total = chosen.total
    size = page_size or max(total, 1)
    pages = max(1, -(-total // size))
    number = min(max(filters.page, 1), pages)
    if number != wanted[0]:  # past the last page: show the last
        return page(
            session, caller, buckets, secret, suite, dataset, Filters(**{**filters.__dict__, "page": number}),
            page_size=page_size, chart_metric=chart_metric,
        )  # fmt: skip
    model_options = [model_ref(models[i]) for i in ordered_models if i in chosen.model_ids]
    partner_options = sorted(names[i] for i in chosen.principal_ids)
    shown, latest = chosen.shown, chosen.latest
    chart_metric = chart_metric if chart_metric in metrics else (sort_metric or (metrics[0] if metrics else None))
    results = release_service.for_jobs(session, [s.job_id for s in shown] + [s.job_id for s in latest.values()])
    rows = [
        Row(s.job_id, model_ref(models[s.model_version_id]), names[s.principal_id], s.released_at, cells(r, metrics))
        for s in shown
        if (r := results.get(s.job_id)) is not None
    ]
    chart = []
    if chart_metric is not None:
        for model_id in [i for i in ordered_models if i in latest]:
            s = latest[model_id]
            cell = cells(results[s.job_id], [chart_metric])[chart_metric]
            if cell.value is None:
                continue
            error = cell.scale
            if error is not None and cell.on_counts:
                error = error / max(dataset.rows, 1)
            chart.append(Point(model_ref(models[model_id]), cell.value, error, cell.on_counts, s.job_id))
    return Page(
        suite=suite,
        dataset=dataset,
        metrics=metrics,
        rows=rows,
        total=total,
        filters=Filters(**{**filters.__dict__, "page": number}),
        pages=pages,
        models=model_options,
        partners=partner_options,
        chart_metric=chart_metric,
        chart=chart,
    )
