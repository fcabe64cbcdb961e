"""governance: approval requests above policy, sanctions, license terms

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 01:40:00

`approval_requests` (a job's request above its partner's policy, or a custom suite's approval where
two operators must approve) and `approval_decisions` (each operator's grant or denial, with the
reason): service/approvals. `partner_trips` (hard-rule trips, dated when the partner can see them) and
`partner_suspensions`: service/sanctions, with a per-partner `hard_rule_trips_per_day` in
`partner_policies`. `license` on model and dataset versions: their terms (service/registry/lifecycle).
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("suite_version_id", sa.Integer(), nullable=True),
        sa.Column("principal_id", sa.Integer(), nullable=True),
        sa.Column("exceptions", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["suite_version_id"], ["suite_versions.id"]),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    op.create_index("ix_approval_requests_state", "approval_requests", ["state"])
    op.create_index("ix_approval_requests_suite_version_id", "approval_requests", ["suite_version_id"])
    op.create_index("ix_approval_requests_principal_id", "approval_requests", ["principal_id"])
    op.create_table(
        "approval_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_approval_decisions_request_id", "approval_decisions", ["request_id"])
    op.create_table(
        "partner_trips",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=96), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_partner_trips_principal_id", "partner_trips", ["principal_id"])
    op.create_index("ix_partner_trips_at", "partner_trips", ["at"])
    op.create_table(
        "partner_suspensions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("trips", sa.JSON(), nullable=False),
        sa.Column("suspended_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("suspended_by", sa.String(length=96), nullable=False),
        sa.Column("lifted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=96), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_partner_suspensions_principal_id", "partner_suspensions", ["principal_id"])
    with op.batch_alter_table("partner_policies") as batch:
        batch.add_column(sa.Column("hard_rule_trips_per_day", sa.Integer(), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("license", sa.JSON(), nullable=True))
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("license", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("license")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("license")
    with op.batch_alter_table("partner_policies") as batch:
        batch.drop_column("hard_rule_trips_per_day")
    op.drop_index("ix_partner_suspensions_principal_id", table_name="partner_suspensions")
    op.drop_table("partner_suspensions")
    op.drop_index("ix_partner_trips_at", table_name="partner_trips")
    op.drop_index("ix_partner_trips_principal_id", table_name="partner_trips")
    op.drop_table("partner_trips")
    op.drop_index("ix_approval_decisions_request_id", table_name="approval_decisions")
    op.drop_table("approval_decisions")
    op.drop_index("ix_approval_requests_principal_id", table_name="approval_requests")
    op.drop_index("ix_approval_requests_suite_version_id", table_name="approval_requests")
    op.drop_index("ix_approval_requests_state", table_name="approval_requests")
    op.drop_table("approval_requests")
