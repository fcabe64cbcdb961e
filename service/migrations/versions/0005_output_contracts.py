"""right numbers: models' output contracts and inference configuration; datasets' task, features-only
copy, class counts and warnings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions registered before: their contract, inference configuration and features-only copy are
    # worked out the first time a job uses them (registry.service), from the files the service holds.
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contract", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("inference", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task", sa.String(length=16), nullable=False, server_default="classification"))
        batch_op.add_column(sa.Column("features_dtype", sa.String(length=16), nullable=False, server_default="float32"))
        batch_op.add_column(sa.Column("features_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("class_counts", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=16), nullable=False, server_default="metrics"))
        batch_op.add_column(sa.Column("rows", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.drop_column("rows")
        batch_op.drop_column("mode")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        for column in ("warnings", "class_counts", "features_sha256", "features_dtype", "task"):
            batch_op.drop_column(column)
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("inference")
        batch_op.drop_column("contract")
