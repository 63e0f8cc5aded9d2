"""Alembic's entry point for the alert store: run by alerting.database.migrate on its connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from alerting.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch: SQLite alters a table by copying it; Alembic's batch mode does that for us.
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # `alembic -x` style use with sqlalchemy.url set, for writing a new revision
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        _run(conn)
