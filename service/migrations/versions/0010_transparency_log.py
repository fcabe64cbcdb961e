"""the transparency log of releases, and each release's attestation and leaf

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 23:00:00

`tlog_leaves` holds the log's entries (a commitment per release), `tlog_nodes` the hashes of its
perfect subtrees (level 0: the leaf hashes), from which every root and proof is made, and
`tlog_head` its size, the row an append locks first. `results.envelope` is a release's DSSE envelope
and `results.leaf_index` its entry; both stay null for releases made before this revision, which have
no attestation.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tlog_leaves",
        sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    head = op.create_table(
        "tlog_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0}])
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("envelope", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("leaf_index", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_results_leaf_index", ["leaf_index"])


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint("uq_results_leaf_index", type_="unique")
        batch.drop_column("leaf_index")
        batch.drop_column("envelope")
    op.drop_table("tlog_head")
    op.drop_table("tlog_nodes")
    op.drop_table("tlog_leaves")
