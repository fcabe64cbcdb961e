"""Append-only audit log with a hash chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.canonical import canonical_json
from service.db import utcnow
from service.ledger.models import AuditEvent, AuditHead

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

GENESIS = "0" * 64


def leaf_hash(record: str) -> str:
    return hashlib.sha256(b"\x00" + record.encode()).hexdigest()


def chain_hash(prev: str, leaf: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(leaf)).hexdigest()


def append(
    session: Session, *, actor: str, action: str, subject: str, data: dict[str, Any] | None = None
) -> AuditEvent:
    """Append one event in the caller's transaction, so it lands exactly when the change it records."""
    bumped = cast(
        "CursorResult[Any]",  # an UPDATE's result, which Session.execute's annotation does not say
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(size=AuditHead.size + 1)),
    )
    if bumped.rowcount != 1:
        raise RuntimeError("audit_head row missing: run the migrations")
    head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    session.refresh(head)
    seq = head.size
    record = canonical_json(
        {
            "seq": seq,
            "ts": utcnow().isoformat(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "data": data or {},
        }
    )
    leaf = leaf_hash(record)
    chained = chain_hash(head.head_hash, leaf)
    event = AuditEvent(seq=seq, action=action, subject=subject, record=record, leaf_hash=leaf, chain_hash=chained)
    session.add(event)
    head.head_hash = chained
    session.flush()
    return event


@dataclass
class Verification:
    ok: bool
    size: int
    head_hash: str
    problem: str | None = None
    first_bad_seq: int | None = None


def _problem(event: AuditEvent, expected_seq: int, prev: str) -> str | None:
    """What is wrong with one event, given the chain before it; None if nothing."""
    if event.seq != expected_seq:
        return f"sequence gap: expected {expected_seq}, found {event.seq}"
    try:
        record = json.loads(event.record)
    except ValueError:
        return "record is not JSON"
    if record.get("seq") != event.seq or record.get("action") != event.action or record.get("subject") != event.subject:
        return "indexed columns disagree with the record"
    if leaf_hash(event.record) != event.leaf_hash:
        return "record does not match its leaf hash"
    if chain_hash(prev, event.leaf_hash) != event.chain_hash:
        return "chain hash broken"
    return None


def verify(session: Session) -> Verification:
    """Recompute every hash from the records: detects an edited, inserted, deleted or reordered event."""
    head = session.get(AuditHead, 1)
    prev = GENESIS
    expected_seq = 1
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        problem = _problem(event, expected_seq, prev)
        if problem is not None:
            return Verification(False, expected_seq - 1, prev, problem, event.seq)
        prev = event.chain_hash
        expected_seq += 1
    size = expected_seq - 1
    if head is None:
        return Verification(size == 0, size, prev, None if size == 0 else "head missing")
    if head.size != size or head.head_hash != prev:
        return Verification(False, size, prev, f"head says {head.size} events, log has {size}", size + 1)
    return Verification(True, size, prev)


def events_for(session: Session, subject: str, action: str | None = None) -> list[dict[str, Any]]:
    """One subject's events (of one action), oldest first."""
    q = select(AuditEvent).where(AuditEvent.subject == subject)
    if action is not None:
        q = q.where(AuditEvent.action == action)
    return [json.loads(r.record) for r in session.execute(q.order_by(AuditEvent.seq)).scalars()]


def recent(session: Session, action: str, since: datetime) -> list[dict[str, Any]]:
    """Events of one action appended at `since` or later, newest first. Events are appended in time
    order, so the walk stops at the first older one rather than reading the whole log."""
    found = []
    q = select(AuditEvent.record).where(AuditEvent.action == action).order_by(AuditEvent.seq.desc())
    for record in session.execute(q.execution_options(yield_per=256)).scalars():
        event = json.loads(record)
        if datetime.fromisoformat(event["ts"]) < since:
            break
        found.append(event)
    return found
