from alembic import context
from sqlalchemy import text

from service import schema  # noqa: F401  (registers every table on Base.metadata)
from service.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        url = config.get_main_option("sqlalchemy.url")
        assert url is not None  # db.migrate() sets it
        engine = make_engine(url)
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite alters a table by copying it and dropping the old one, which foreign keys
                # from rows of other tables would refuse; the pragma only changes outside a transaction.
                connection.execute(text("PRAGMA foreign_keys=OFF"))
                connection.commit()
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                connection.execute(text("PRAGMA foreign_keys=ON"))
                connection.commit()
        engine.dispose()
    else:
        context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
