"""each running job's sandbox has a host uid of its own

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 21:30:00

`jobs.sandbox_uid` holds the uid a running job's container runs as, allocated from the deployment's
range when the job's sandbox is prepared and cleared when the job leaves `running`. Unique, so two
jobs never hold the same uid (NULLs, the jobs not running, do not collide).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sandbox_uid", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_sandbox_uid", "jobs", ["sandbox_uid"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_sandbox_uid", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sandbox_uid")
