"""per-partner limits and per-dataset-version policies, set live by operators

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 23:20:00

`partner_policies` and `dataset_policies` hold what an operator set (service/policies); a null column
keeps the deployment's default (the EVALGATE_* setting). `version` is the row's ETag. Nothing is
carried over: EVALGATE_PARTNER_QUOTAS, where a deployment set it, stays the default of its partners.
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_policies",
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id"), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("public_name", sa.String(128), nullable=True),
        sa.Column("rows_per_day", sa.BigInteger(), nullable=True),
        sa.Column("max_query_budget", sa.BigInteger(), nullable=True),
        sa.Column("epsilon_budget", sa.Float(), nullable=True),
        sa.Column("max_epsilon_per_metric", sa.Float(), nullable=True),
        sa.Column("bits_per_day", sa.Float(), nullable=True),
        sa.Column("releases_per_window", sa.Integer(), nullable=True),
        sa.Column("max_concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(96), nullable=False),
    )
    op.create_table(
        "dataset_policies",
        sa.Column("dataset_version_id", sa.Integer(), sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("dp_mechanism", sa.String(16), nullable=True),
        sa.Column("epsilon_per_metric", sa.Float(), nullable=True),
        sa.Column("max_epsilon_per_metric", sa.Float(), nullable=True),
        sa.Column("epsilon_budget", sa.Float(), nullable=True),
        sa.Column("suppress_below_rows", sa.Integer(), nullable=True),
        sa.Column("suppress_below_class_rows", sa.Integer(), nullable=True),
        sa.Column("min_dataset_rows", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(96), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_policies")
    op.drop_table("partner_policies")
