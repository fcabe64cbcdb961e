"""The service's Prometheus counters and histograms, counted from the audit log as it commits.

Every admission decision, job transition and release is appended to the audit log in the transaction
that makes it (DESIGN.md), so the metrics watch those appends rather than the code paths: no path
that moves a job can forget to count it. An append is noted when it is flushed and counted only when
its transaction commits (a rolled-back admission, or a release rolled back by a crash, is never
counted), once, in the process that committed it.

Each process counts what it committed, in its own registry: the API (admissions, refusals, cancels,
and everything its embedded worker does) serves them on `GET /metrics` to operators; a Celery
worker on its own port (`EVALGATE_METRICS_PORT`). Prometheus adds them up across processes.
Nothing here carries a partner's name: what is per partner is read from the database by the API
(gauges.py), and only operators see it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Mapper, Session, object_session

from service.jobs.models import Job
from service.jobs.states import TERMINAL, JobState
from service.ledger.models import AuditEvent

log = logging.getLogger(__name__)

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

JOBS_SUBMITTED = Counter("evalgate_jobs_submitted", "Job submissions decided: admitted, reused or refused")
JOBS_ADMITTED = Counter("evalgate_jobs_admitted", "Jobs admitted (a new job row with its budgets reserved)")
JOBS_REUSED = Counter("evalgate_jobs_reused", "Submissions answered with an earlier job (the same release)")
JOBS_REFUSED = Counter("evalgate_jobs_refused", "Submissions refused at admission, by error code", ["code"])
JOBS_ENDED = Counter("evalgate_jobs_ended", "Jobs ended, by final state and error class", ["state", "error_class"])
JOB_PHASE = Histogram(
    "evalgate_job_phase_seconds",
    "Time a job spent in each phase: queued (queued until a worker starts it), sandbox_start (volumes and "
    "containers made and started), run (the rest of its time running), gate (gating until its end)",
    ["phase"],
    buckets=PHASE_BUCKETS,
)
MODEL_ROWS = Counter("evalgate_model_rows_served", "Model rows the sidecars predicted for jobs")
GATE_OUTCOMES = Counter(
    "evalgate_gate_outcomes",
    "Jobs judged by the release gate: released (every metric), withheld (released with a metric "
    "withheld), rejected (the output refused)",
    ["outcome"],
)
METRICS_WITHHELD = Counter("evalgate_gate_metrics_withheld", "Metrics withheld from releases (too few rows)")
HTTP_LATENCY = Histogram(
    "evalgate_http_request_duration_seconds",
    "HTTP requests by method, route template (never the raw path) and status",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)

_PENDING = "evalgate_metrics_pending"
# A phase is timed when the job leaves it the ordinary way; a cancel or a failure cuts it short, and
# that time is not the phase's (the gate is timed whatever ends it: the gate decided).
_PHASES: dict[tuple[str, str], str] = {
    (JobState.QUEUED, JobState.RUNNING): "queued",
    (JobState.RUNNING, JobState.GATING): "run",
}
Effect = Callable[[], None]


def _ts(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["ts"])


def _entered(connection: Connection, event_row: AuditEvent) -> datetime | None:
    """When the job entered the state this transition leaves: the time of its previous transition."""
    previous = connection.execute(
        select(AuditEvent.record)
        .where(
            AuditEvent.subject == event_row.subject,
            AuditEvent.action == "job.transition",
            AuditEvent.seq < event_row.seq,
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if previous is None else _ts(json.loads(previous))


def _timings(session: Session, subject: str) -> dict[str, float]:
    """The sandbox's own timings, from the job row this transaction holds (never loaded here)."""
    job = session.identity_map.get(Session.identity_key(Job, subject.removeprefix("job:")))
    outcome = getattr(job, "outcome", None) or {}
    return dict(outcome.get("timings") or {})


def _transition(connection: Connection, session: Session, row: AuditEvent, record: dict[str, Any]) -> list[Effect]:
    data = record.get("data") or {}
    frm, to = str(data.get("from")), str(data.get("to"))
    effects: list[Effect] = []
    if to in TERMINAL:
        labels = {"state": str(to), "error_class": str(data.get("error_class") or "none")}
        effects.append(JOBS_ENDED.labels(**labels).inc)
    phase = _PHASES.get((frm, to)) or ("gate" if frm == JobState.GATING and to in TERMINAL else None)
    if frm == JobState.GATING and to == JobState.REJECTED:
        effects.append(GATE_OUTCOMES.labels(outcome="rejected").inc)
    if to == JobState.GATING:
        rows = int((data.get("queries") or {}).get("rows") or 0)
        effects.append(partial(MODEL_ROWS.inc, rows))
    entered = _entered(connection, row) if phase else None
    if phase and entered is not None:
        seconds = max(0.0, (_ts(record) - entered).total_seconds())
        if phase == "run":
            start = _timings(session, row.subject).get("start")
            if start is not None:
                effects.append(partial(JOB_PHASE.labels(phase="sandbox_start").observe, start))
                seconds = max(0.0, seconds - start)
        effects.append(partial(JOB_PHASE.labels(phase=phase).observe, seconds))
    return effects


def _effects(connection: Connection, session: Session, row: AuditEvent) -> list[Effect]:
    record = json.loads(row.record)
    data = record.get("data") or {}
    match row.action:
        case "job.submitted":
            return [JOBS_SUBMITTED.inc, JOBS_ADMITTED.inc]
        case "job.reused":
            return [JOBS_SUBMITTED.inc, JOBS_REUSED.inc]
        case "job.refused":
            return [JOBS_SUBMITTED.inc, JOBS_REFUSED.labels(code=str(data.get("reason") or "unknown")).inc]
        case "job.transition":
            return _transition(connection, session, row, record)
        case "result.released":
            withheld = len((data.get("disclosure") or {}).get("suppressed") or [])
            outcome = "withheld" if withheld else "released"
            return [GATE_OUTCOMES.labels(outcome=outcome).inc, partial(METRICS_WITHHELD.inc, withheld)]
    return []


def _noted(mapper: Mapper[Any], connection: Connection, row: AuditEvent) -> None:
    session = object_session(row)
    if session is None:
        return
    try:
        effects = _effects(connection, session, row)
    except Exception:  # counting must never fail the transaction it watches
        log.exception("metrics: cannot read audit event %s", row.action)
        return
    session.info.setdefault(_PENDING, []).extend(effects)


def _committed(session: Session) -> None:
    for effect in session.info.pop(_PENDING, []):
        effect()


def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def install() -> None:
    """Watch the audit log in this process (idempotent): the API app and the worker call it."""
    if not event.contains(AuditEvent, "after_insert", _noted):
        event.listen(AuditEvent, "after_insert", _noted)
        event.listen(Session, "after_commit", _committed)
        event.listen(Session, "after_rollback", _rolled_back)
