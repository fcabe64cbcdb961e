"""The hash chain detects an edited, inserted, deleted or reordered event, and the CLI says so."""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import delete, select, update

from service.db import session_scope
from service.ledger import service as ledger
from service.ledger.models import AuditEvent, AuditHead
from tests.harness import concurrently


@pytest.fixture
def filled(sessions):
    with session_scope(sessions) as s:
        for i in range(5):
            ledger.append(s, actor="test", action="thing.done", subject=f"thing:{i}", data={"i": i})
    return sessions


def verify(sessions):
    with session_scope(sessions) as s:
        return ledger.verify(s)


def test_intact_log_verifies(filled):
    v = verify(filled)
    assert v.ok and v.size == 5 and v.problem is None


def test_edited_record_is_detected(filled):
    with session_scope(filled) as s:
        e = s.get(AuditEvent, 3)
        e.record = e.record.replace('"i":2', '"i":99')
    v = verify(filled)
    assert not v.ok and v.first_bad_seq == 3 and "leaf" in v.problem


def test_edited_record_with_recomputed_leaf_breaks_the_chain(filled):
    with session_scope(filled) as s:
        e = s.get(AuditEvent, 2)
        e.record = e.record.replace('"i":1', '"i":42')
        e.leaf_hash = ledger.leaf_hash(e.record)
    assert verify(filled).first_bad_seq == 2


def test_edited_index_column_is_detected(filled):
    with session_scope(filled) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(subject="thing:other"))
    assert not verify(filled).ok


def test_deleted_event_is_detected(filled):
    with session_scope(filled) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    v = verify(filled)
    assert not v.ok and "gap" in v.problem


def test_deleted_last_event_is_detected_by_the_head(filled):
    with session_scope(filled) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
    v = verify(filled)
    assert not v.ok and "head" in v.problem


def test_inserted_event_is_detected(filled):
    with session_scope(filled) as s:
        for e in s.execute(select(AuditEvent).where(AuditEvent.seq >= 3).order_by(AuditEvent.seq.desc())).scalars():
            e.seq += 100  # make room, then renumber: what an attacker inserting mid-log must do
        s.flush()
        fake = json.dumps({"seq": 3, "action": "thing.done", "subject": "thing:fake", "data": {}})
        s.add(
            AuditEvent(
                seq=3,
                action="thing.done",
                subject="thing:fake",
                record=fake,
                leaf_hash=ledger.leaf_hash(fake),
                chain_hash="0" * 64,
            )
        )
        for e in s.execute(select(AuditEvent).where(AuditEvent.seq >= 103).order_by(AuditEvent.seq)).scalars():
            e.seq -= 99
    assert verify(filled).first_bad_seq == 3


def test_concurrent_appends_keep_one_chain(sessions):
    def worker(n):
        for i in range(10):
            with session_scope(sessions) as s:
                ledger.append(s, actor=f"t{n}", action="x", subject=f"s{n}", data={"i": i})

    concurrently(worker, 4)
    v = verify(sessions)
    assert v.ok and v.size == 40
    with session_scope(sessions) as s:
        assert s.get(AuditHead, 1).size == 40


def test_cli_audit_verify_exit_codes(filled, db_settings):
    env = {
        **os.environ,
        "EVALGATE_DATA_DIR": str(db_settings.data_dir),
        "EVALGATE_DATABASE_URL": db_settings.database_url,
    }
    ok = subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", "verify"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "intact: 5 events" in ok.stdout
    with session_scope(filled) as s:
        s.get(AuditEvent, 1).record = "{}"
    bad = subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", "verify"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "BROKEN at event 1" in bad.stderr


def test_recent_events_of_one_action_newest_first_and_no_older(sessions):
    from datetime import timedelta

    from service.db import utcnow

    with session_scope(sessions) as s:
        ledger.append(s, actor="t", action="job.refused", subject="principal:old")
    since = utcnow() + timedelta(microseconds=1)
    with session_scope(sessions) as s:
        for who in ("a", "b"):
            ledger.append(s, actor="t", action="job.refused", subject=f"principal:{who}")
            ledger.append(s, actor="t", action="job.created", subject=f"principal:{who}")
    with session_scope(sessions) as s:
        found = ledger.recent(s, "job.refused", since)
    assert [e["subject"] for e in found] == ["principal:b", "principal:a"]
    with session_scope(sessions) as s:
        assert [e["subject"] for e in ledger.events_for(s, "principal:a", "job.refused")] == ["principal:a"]
