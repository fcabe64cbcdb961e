"""one owner for budgets: a reservation per job; the sandbox outcome recorded at gating

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 20:00:00
"""

import json
import math
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNFINISHED = ("submitted", "awaiting_approval", "queued", "running", "gating")


def upgrade() -> None:
    op.create_table(
        "budget_reservations",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("dataset_version_id", sa.Integer(), nullable=False),
        sa.Column("epsilon_micro", sa.BigInteger(), nullable=False),
        sa.Column("millibits", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.String(length=8), nullable=False),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.Column("ran", sa.Boolean(), nullable=True),
        sa.Column("rows_used", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_version_id"], ["dataset_versions.id"]),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_budget_reservations_open", "budget_reservations", ["principal_id", "settled"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("result_raw", sa.LargeBinary(), nullable=True))

    # Jobs admitted before this revision and not yet ended get the reservation they would have had.
    # Their model rows were reserved when they started (then the grant is copied) or not yet (then
    # they keep their query budget: counted on no day, a one-off at the upgrade).
    conn = op.get_bind()
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("principal_id", sa.Integer),
        sa.column("dataset_version_id", sa.Integer),
        sa.column("state", sa.String),
        sa.column("spec", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    grants = sa.table("daily_grants", sa.column("job_id"), sa.column("resource"), sa.column("granted"), sa.column("day"))
    reservations = sa.table(
        "budget_reservations",
        *(sa.column(c) for c in ("job_id", "principal_id", "dataset_version_id", "epsilon_micro", "millibits", "rows",
                                 "day", "settled", "created_at")),
    )
    now = datetime.now(UTC)
    for job in conn.execute(sa.select(jobs).where(jobs.c.state.in_(UNFINISHED))).all():
        spec = job.spec if isinstance(job.spec, dict) else json.loads(job.spec)
        grant = conn.execute(
            sa.select(grants.c.granted, grants.c.day).where(grants.c.job_id == job.id, grants.c.resource == "rows")
        ).first()
        conn.execute(
            reservations.insert().values(
                job_id=job.id,
                principal_id=job.principal_id,
                dataset_version_id=job.dataset_version_id,
                epsilon_micro=math.ceil(round(spec.get("privacy", {}).get("epsilon_total", 0.0) * 1_000_000, 3)),
                millibits=math.ceil(round(spec.get("leakage_bits", 0.0) * 1000, 6)),
                rows=grant.granted if grant else int(spec["resources"]["query_budget"]),
                day=grant.day if grant else now.strftime("%Y%m%d"),
                settled=False,
                created_at=now,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_raw")
        batch_op.drop_column("outcome")
    op.drop_index("ix_budget_reservations_open", table_name="budget_reservations")
    op.drop_table("budget_reservations")
