"""a worker holds a lease on each job it runs

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 22:40:00

`jobs.lease_owner` names the worker running the job and `jobs.lease_expires_at` when its claim
runs out unless renewed (jobs.leases). A reaper recovers jobs whose lease ran out; the index serves
its scan of runnable jobs.
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(96), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
    op.create_index("ix_jobs_lease_expires_at", "jobs", ["lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_lease_expires_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
