"""sessions of the results site, and the index its leaderboards walk

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 23:40:00

`site_sessions` holds one row per signed-in browser (service/site/sessions.py): the SHA-256 of its
cookie's token, the API key it was made from (checked again on every request), its form token and
its expiry. `ix_jobs_leaderboard` and `ix_jobs_leaderboard_model` serve a leaderboard: the released jobs of
one suite version on one dataset version, newest first, and the latest of each model version. (Numbered 0012 but written after 0013, which was merged first: it
follows 0013.)
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_site_sessions_api_key_id", "site_sessions", ["api_key_id"])
    op.create_index("ix_site_sessions_expires_at", "site_sessions", ["expires_at"])
    op.create_index(
        "ix_jobs_leaderboard",
        "jobs",
        ["suite_version_id", "dataset_version_id", "state", "finished_at", "id", "model_version_id", "principal_id"],
    )
    op.create_index(
        "ix_jobs_leaderboard_model",
        "jobs",
        ["suite_version_id", "dataset_version_id", "state", "model_version_id", "finished_at", "id", "principal_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_leaderboard_model", table_name="jobs")
    op.drop_index("ix_jobs_leaderboard", table_name="jobs")
    op.drop_index("ix_site_sessions_expires_at", table_name="site_sessions")
    op.drop_index("ix_site_sessions_api_key_id", table_name="site_sessions")
    op.drop_table("site_sessions")
