"""dataset lifecycle: a dataset version's status, active → deprecated → retired, as a model version's

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 04:40:00

`status` on `dataset_versions` (service/registry/lifecycle): a retired dataset version takes no new
jobs, and its released jobs reproduce as `could_not_run` / `asset_retired`. Every version registered
before is active.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        # The server default fills the rows already there; new rows get theirs from the model.
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="active"))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("status")
