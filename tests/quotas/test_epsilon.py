"""ε per partner and dataset version: spent atomically, never past the budget, on SQLite and Postgres."""

from service.db import session_scope
from service.quotas import repository as repo
from service.quotas.service import to_micro
from tests import factories
from tests.harness import concurrently


def _partner_and_dataset(sessions):
    with session_scope(sessions) as s:
        partner_id, _ = factories.principal(s, "acme", "partner")
        return partner_id, factories.dataset_row(s).id


def test_concurrent_spends_never_pass_the_budget(sessions):
    principal_id, dataset_id = _partner_and_dataset(sessions)

    def spend(i):
        with session_scope(sessions) as s:
            return repo.try_spend_epsilon(s, principal_id, dataset_id, to_micro(0.3), to_micro(1.0))

    results = concurrently(spend, 12)
    assert results.count(True) == 3  # 0.9 of 1.0; a fourth would overspend
    with session_scope(sessions) as s:
        assert repo.epsilon_spent_micro(s, principal_id, dataset_id) == 900_000


def test_sums_are_exact_and_a_refund_gives_back_what_was_spent(sessions):
    principal_id, dataset_id = _partner_and_dataset(sessions)
    with session_scope(sessions) as s:
        for _ in range(10):  # ten spends of 0.1: exactly 1.0, not 0.9999999999999999
            assert repo.try_spend_epsilon(s, principal_id, dataset_id, to_micro(0.1), to_micro(1.0))
        assert repo.epsilon_spent_micro(s, principal_id, dataset_id) == 1_000_000
        assert not repo.try_spend_epsilon(s, principal_id, dataset_id, to_micro(0.000001), to_micro(1.0))
        repo.give_back_epsilon(s, principal_id, dataset_id, to_micro(0.1))
        assert repo.epsilon_spent_micro(s, principal_id, dataset_id) == 900_000
