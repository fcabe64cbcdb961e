"""ε per partner and dataset version: spent atomically, never past the budget, on SQLite and Postgres."""

from service.auth import service as auth
from service.db import session_scope
from service.ledger.models import AuditEvent
from service.quotas import epsilon
from service.registry.models import DatasetVersion
from tests.helpers import concurrently


def _partner_and_dataset(sessions):
    with session_scope(sessions) as s:
        key, _ = auth.create_key(s, name="acme", role="partner", expires_in=auth.parse_duration("1d"))
        d = DatasetVersion(name="d", version="1", sha256="ab" * 32, size_bytes=1, rows=1000, features=2, classes=2)
        s.add(d)
        s.flush()
        return key.principal_id, d.id


def test_concurrent_spends_never_pass_the_budget(sessions):
    principal_id, dataset_id = _partner_and_dataset(sessions)

    def spend(i):
        with session_scope(sessions) as s:
            return epsilon.try_spend(
                s,
                principal_id=principal_id,
                dataset=s.get(DatasetVersion, dataset_id),
                epsilon=0.3,
                budget=1.0,
                job_id=f"job-{i}",
                actor="test",
            )

    results = concurrently(spend, 12)
    assert results.count(True) == 3  # 0.9 of 1.0; a fourth would overspend
    with session_scope(sessions) as s:
        assert epsilon.spent(s, principal_id, dataset_id) == 0.9
        assert s.query(AuditEvent).filter(AuditEvent.action == "privacy.epsilon_spent").count() == 3


def test_sums_are_exact_and_a_refund_gives_back_what_was_spent(sessions):
    principal_id, dataset_id = _partner_and_dataset(sessions)
    with session_scope(sessions) as s:
        d = s.get(DatasetVersion, dataset_id)
        for i in range(10):  # ten spends of 0.1: exactly 1.0, not 0.9999999999999999
            assert epsilon.try_spend(
                s, principal_id=principal_id, dataset=d, epsilon=0.1, budget=1.0, job_id=f"j{i}", actor="test"
            )
        assert epsilon.spent(s, principal_id, dataset_id) == 1.0
        assert not epsilon.try_spend(
            s, principal_id=principal_id, dataset=d, epsilon=0.000001, budget=1.0, job_id="over", actor="test"
        )
        epsilon.refund(s, principal_id=principal_id, dataset=d, epsilon=0.1, job_id="j9", actor="test")
        assert epsilon.spent(s, principal_id, dataset_id) == 0.9
