"""suites belong to the principal that uploaded them: owner/name@version, published suites

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00

Every suite version gets a namespace: `evalgate` for the built-in ones (published, as every partner
may use them), its uploader's principal name for the others. Uniqueness moves from (name, version)
to (namespace, name, version). Jobs keep pointing at their suite version by id; their specs and
signed provenance are left as they were admitted (their digests and signatures cover them), and an
old spec's bare `name@version` is the suite its job row points at.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BUILTIN = "evalgate"  # the reserved namespace as of this revision
NEW_UNIQUE = "uq_suite_versions_namespace_name_version"
# SQLite reflects the old constraint without a name; batch mode names it by this convention.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_on(conn: sa.Connection, columns: list[str]) -> str:
    for uq in sa.inspect(conn).get_unique_constraints("suite_versions"):
        if uq["column_names"] == columns:
            return uq["name"] or f"uq_suite_versions_{'_'.join(columns)}"
    raise RuntimeError(f"suite_versions has no unique constraint on {columns}")


def upgrade() -> None:
    conn = op.get_bind()
    suites = sa.table(
        "suite_versions",
        sa.column("namespace", sa.String),
        sa.column("published", sa.Boolean),
        sa.column("builtin", sa.Boolean),
        sa.column("owner_id", sa.Integer),
    )
    principals = sa.table("principals", sa.column("id", sa.Integer), sa.column("name", sa.String))
    clash = conn.execute(
        sa.select(sa.func.count())
        .select_from(suites.join(principals, principals.c.id == suites.c.owner_id))
        .where(suites.c.builtin.is_(False), principals.c.name == BUILTIN)
    ).scalar_one()
    if clash:
        raise RuntimeError(
            f"a principal named {BUILTIN!r} owns uploaded suites, and {BUILTIN!r} is now the namespace of the "
            "built-in suites: move its suites to another principal (suite_versions.owner_id) and upgrade again"
        )
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("namespace", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.false()))
    conn.execute(suites.update().where(suites.c.builtin.is_(True)).values(namespace=BUILTIN, published=True))
    owner_name = sa.select(principals.c.name).where(principals.c.id == suites.c.owner_id).scalar_subquery()
    conn.execute(suites.update().where(suites.c.builtin.is_(False)).values(namespace=owner_name))
    # An upload without an owner cannot be made through the API; it stays an operator's, unpublished.
    conn.execute(suites.update().where(suites.c.namespace.is_(None)).values(namespace=BUILTIN))
    old = _unique_on(conn, ["name", "version"])
    with op.batch_alter_table("suite_versions", schema=None, naming_convention=NAMING) as batch_op:
        batch_op.alter_column("namespace", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint(NEW_UNIQUE, ["namespace", "name", "version"])


def downgrade() -> None:
    # Fails if two namespaces hold the same name@version: names were global before.
    with op.batch_alter_table("suite_versions", schema=None) as batch_op:
        batch_op.drop_constraint(NEW_UNIQUE, type_="unique")
        batch_op.create_unique_constraint("uq_suite_versions_name_version", ["name", "version"])
        batch_op.drop_column("published")
        batch_op.drop_column("namespace")
