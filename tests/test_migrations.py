"""Migrations build exactly the schema the models describe, and carry data forward."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.db import Base, make_engine, migrate
from tests import factories


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migrated_schema_matches_the_models(db, tmp_path, request):
    import service.schema  # noqa: F401  (every model on Base.metadata)

    url = request.getfixturevalue("postgres_url") if db == "postgres" else factories.settings(tmp_path).database_url
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_release_gate_migration_keeps_quota_rows_and_types_old_suites(tmp_path):
    url = factories.settings(tmp_path).database_url
    migrate(url, "0002")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO row_usage (principal_id, day, rows) VALUES (1, '20261126', 700)"))
        conn.execute(
            text(
                "INSERT INTO row_grants (job_id, principal_id, day, granted, settled) "
                "VALUES ('j1', 1, '20261126', 700, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO suite_versions (name, version, sha256, entrypoint, metrics, builtin, approved, "
                "created_at) VALUES ('old', '1.0.0', 'ab', 'main.py', '[\"score\"]', 0, 1, '2026-11-26')"
            )
        )
    migrate(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT principal_id, resource, day, amount FROM daily_usage")).all() == [
            (1, "rows", "20261126", 700)
        ]
        assert conn.execute(text("SELECT job_id, resource, granted FROM daily_grants")).all() == [("j1", "rows", 700)]
        metrics = conn.execute(text("SELECT metrics FROM suite_versions WHERE name = 'old'")).scalar_one()
    assert '"score": {"kind": "real", "min": -1000000.0, "max": 1000000.0}' in metrics
    engine.dispose()


def test_budget_migration_gives_unfinished_jobs_their_reservations(tmp_path):
    url = factories.settings(tmp_path).database_url
    migrate(url, "0003")
    engine = make_engine(url)
    spec = '{"privacy": {"epsilon_total": 0.4}, "leakage_bits": 52.0, "resources": {"query_budget": 900}}'
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO principals (id, name, role, created_at) VALUES (1, 'acme', 'partner', '2026-11-26')")
        )
        conn.execute(
            text(
                "INSERT INTO dataset_versions (id, name, version, sha256, size_bytes, rows, features, classes, "
                "visibility, created_at) VALUES (1, 'd', '1', 'ab', 1, 600, 16, 3, 'private', '2026-11-26')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO model_versions (id, name, version, sha256, size_bytes, status, signature, created_at) "
                "VALUES (1, 'm', '1', 'cd', 1, 'active', '{}', '2026-11-26')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO suite_versions (id, name, version, sha256, entrypoint, metrics, builtin, approved, "
                "created_at) VALUES (1, 's', '1.0.0', 'ef', 'main.py', '{}', 1, 1, '2026-11-26')"
            )
        )
        for job_id, state in (("running-1", "running"), ("queued-1", "queued"), ("done-1", "released")):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, principal_id, state, spec, spec_sha256, suite_version_id, model_version_id, "
                    "dataset_version_id, cancel_requested, attempts, created_at, updated_at, release_key) VALUES "
                    f"('{job_id}', 1, '{state}', :spec, 'x', 1, 1, 1, 0, 0, '2026-11-26', '2026-11-26', 'k')"
                ),
                {"spec": spec},
            )
        conn.execute(
            text(
                "INSERT INTO daily_grants (job_id, resource, principal_id, day, granted, settled) "
                "VALUES ('running-1', 'rows', 1, '20261126', 700, 0)"
            )
        )
    migrate(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT job_id, epsilon_micro, millibits, rows, day, settled FROM budget_reservations ORDER BY job_id")
        ).all()
    # A job that had started keeps the rows it was granted; one still queued keeps its query budget.
    assert [tuple(r) for r in rows] == [
        ("queued-1", 400_000, 52_000, 900, rows[0][4], 0),
        ("running-1", 400_000, 52_000, 700, "20261126", 0),
    ]
    engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_namespace_migration_puts_suites_in_their_owners_namespaces(db, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if db == "postgres" else factories.settings(tmp_path).database_url
    migrate(url, "0006")
    engine = make_engine(url)
    with engine.begin() as conn:
        for pid, name in ((1, "acme"), (2, "globex")):
            conn.execute(
                text(
                    "INSERT INTO principals (id, name, role, created_at) VALUES (:id, :name, 'partner', '2026-11-28')"
                ),
                {"id": pid, "name": name},
            )
        for sid, name, builtin, owner in ((1, "classification", True, None), (2, "mine", False, 1), (3, "x", False, 2)):
            conn.execute(
                text(
                    "INSERT INTO suite_versions (id, name, version, sha256, entrypoint, metrics, builtin, approved, "
                    "owner_id, mode, created_at) VALUES (:id, :name, '1.0.0', 'ab', 'main.py', '{}', :builtin, "
                    "true, :owner, 'metrics', '2026-11-28')"
                ),
                {"id": sid, "name": name, "builtin": builtin, "owner": owner},
            )
    migrate(url)
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id, namespace, published FROM suite_versions ORDER BY id")).all()
        assert [(i, ns, bool(p)) for i, ns, p in rows] == [
            (1, "evalgate", True),
            (2, "acme", False),
            (3, "globex", False),
        ]
        # The same name@version may now live in another namespace, but not twice in one.
        insert = text(
            "INSERT INTO suite_versions (id, namespace, name, version, sha256, entrypoint, metrics, builtin, "
            "approved, published, owner_id, mode, created_at) VALUES (:id, :ns, 'mine', '1.0.0', 'cd', 'main.py', "
            "'{}', false, false, false, 2, 'metrics', '2026-11-28')"
        )
        conn.execute(insert, {"id": 4, "ns": "globex"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"id": 5, "ns": "acme"})
    engine.dispose()
