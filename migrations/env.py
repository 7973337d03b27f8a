"""Alembic environment: libtagger passes an open connection; the CLI fallback uses the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from libtagger.library.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    # Batch mode: SQLite cannot ALTER most things in place, so tables are copied and swapped.
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
