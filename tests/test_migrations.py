"""Migrations build exactly the schema the models describe, and carry data forward."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

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
