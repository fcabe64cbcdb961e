"""twin jobs: a job's target (its versions, or their twin and stand-in), a twin job's report, and the
per-partner daily quota of twin jobs

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 05:30:00

`jobs.target` is `real` for every job admitted before (the server default fills them); `twin` marks a
job run on the dataset's synthetic twin beside the model's stand-in (service.jobs.twin), whose capped
stdout, stderr and release-gate verdict `jobs.twin_report` keeps for its partner. A twin job that the
gate would release ends `judged` (a state, stored as text: no schema change). An operator's live
`twin_jobs_per_day` on `partner_policies`: null keeps the default, EVALGATE_TWIN_JOBS_PER_DAY.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("target", sa.String(length=8), nullable=False, server_default="real"))
        batch.add_column(sa.Column("twin_report", sa.JSON(), nullable=True))
    with op.batch_alter_table("partner_policies") as batch:
        batch.add_column(sa.Column("twin_jobs_per_day", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partner_policies") as batch:
        batch.drop_column("twin_jobs_per_day")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("twin_report")
        batch.drop_column("target")
