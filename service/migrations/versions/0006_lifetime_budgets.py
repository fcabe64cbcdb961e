"""leakage you can bound: lifetime budgets per asset, settlement at the padded completion time,
operators' own lifetime caps per asset

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lifetime_usage",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "asset_id", "principal_id", "resource"),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ended", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("settle_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lifetime_parts", sa.JSON(), nullable=True))
        batch_op.create_foreign_key("fk_budget_reservations_model", "model_versions", ["model_version_id"], ["id"])
    # Reservations settled before: they ended then.
    op.execute("UPDATE budget_reservations SET ended = settled")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lifetime_bits", sa.Float(), nullable=True))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lifetime_bits", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("lifetime_rows", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("output_policy", sa.JSON(), nullable=False, server_default=sa.text("'{\"kind\": \"full\"}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("output_policy")
        batch_op.drop_column("lifetime_rows")
        batch_op.drop_column("lifetime_bits")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_column("lifetime_bits")
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_budget_reservations_model", type_="foreignkey")
        batch_op.drop_column("lifetime_parts")
        batch_op.drop_column("settle_at")
        batch_op.drop_column("ended")
        batch_op.drop_column("model_version_id")
    op.drop_table("lifetime_usage")
