"""reproductions of released jobs, the HMAC of a release's raw result, and the job a run reproduces

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 01:40:00

`reproductions` holds one row per request to reproduce a released job (service/reproductions): who
asked, the outcome and reason, and its transparency-log entry. A reproduction's run is a job row
whose `reproduces` names the original. `results.raw_hmac` is the HMAC of a release's raw (pre-noise)
result under the server secret; releases made before this revision have none (a reproduction of
one ends `no_reference`). (Numbered 0014 beside governance's work, which followed it as 0015; there is no
0013.)
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reproduces", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_jobs_reproduces", ["reproduces"], unique=False)
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw_hmac", sa.String(length=64), nullable=True))
    op.create_table(
        "reproductions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("reason", sa.String(length=24), nullable=True),
        sa.Column("error_class", sa.String(length=32), nullable=True),
        sa.Column("log_record", sa.JSON(), nullable=True),
        sa.Column("leaf_index", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("leaf_index"),
    )
    op.create_index("ix_reproductions_job_id", "reproductions", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_reproductions_job_id", table_name="reproductions")
    op.drop_table("reproductions")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("raw_hmac")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_reproduces")
        batch_op.drop_column("reproduces")
