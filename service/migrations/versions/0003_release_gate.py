"""release gate: typed metrics, ε spend, daily leakage, release keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Suites registered before metrics had kinds: their numbers are bounded reals, the least trusting kind.
LEGACY_DECL = {"kind": "real", "min": -1000000.0, "max": 1000000.0}


def upgrade() -> None:
    op.create_table('daily_usage',
    sa.Column('principal_id', sa.Integer(), nullable=False),
    sa.Column('resource', sa.String(length=16), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('principal_id', 'resource', 'day')
    )
    op.create_table('daily_grants',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('resource', sa.String(length=16), nullable=False),
    sa.Column('principal_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('granted', sa.BigInteger(), nullable=False),
    sa.Column('settled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('job_id', 'resource')
    )
    op.execute("INSERT INTO daily_usage (principal_id, resource, day, amount) "
               "SELECT principal_id, 'rows', day, rows FROM row_usage")
    op.execute("INSERT INTO daily_grants (job_id, resource, principal_id, day, granted, settled) "
               "SELECT job_id, 'rows', principal_id, day, granted, settled FROM row_grants")
    op.drop_table('row_usage')
    op.drop_table('row_grants')

    op.create_table('epsilon_spend',
    sa.Column('principal_id', sa.Integer(), nullable=False),
    sa.Column('dataset_version_id', sa.Integer(), nullable=False),
    sa.Column('spent_micro', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_versions.id'], ),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], ),
    sa.PrimaryKeyConstraint('principal_id', 'dataset_version_id')
    )

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('release_key', sa.String(length=64), nullable=False, server_default=''))
        batch_op.create_index(batch_op.f('ix_jobs_release_key'), ['release_key'], unique=False)
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disclosure', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))

    # Suite metrics: a list of names becomes a mapping of name to declaration.
    suites = sa.table('suite_versions', sa.column('id', sa.Integer), sa.column('metrics', sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(suites.c.id, suites.c.metrics)).all():
        if isinstance(row.metrics, list):
            conn.execute(suites.update().where(suites.c.id == row.id)
                         .values(metrics={name: dict(LEGACY_DECL) for name in row.metrics}))


def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_column('disclosure')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_release_key'))
        batch_op.drop_column('release_key')
    op.drop_table('epsilon_spend')
    op.create_table('row_usage',
    sa.Column('principal_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('principal_id', 'day')
    )
    op.create_table('row_grants',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('principal_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('granted', sa.Integer(), nullable=False),
    sa.Column('settled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.execute("INSERT INTO row_usage (principal_id, day, rows) "
               "SELECT principal_id, day, amount FROM daily_usage WHERE resource = 'rows'")
    op.execute("INSERT INTO row_grants (job_id, principal_id, day, granted, settled) "
               "SELECT job_id, principal_id, day, granted, settled FROM daily_grants WHERE resource = 'rows'")
    op.drop_table('daily_grants')
    op.drop_table('daily_usage')
