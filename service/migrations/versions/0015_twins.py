"""twins: each dataset version's synthetic twin and each model version's stand-in

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 02:10:00

`twins` holds the current twin of one model or dataset version: its file's digest, whether the
service made it or an operator uploaded it, and its provenance (what was released to make it).
"""

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "twins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "asset_id", name="uq_twins_kind_asset_id"),
    )


def downgrade() -> None:
    op.drop_table("twins")
