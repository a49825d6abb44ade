"""Alembic environment: runs on the connection the app hands over (storage.upgrade_schema), or DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from storage import Base, normalise_url

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run migrations on the given connection, or on DATABASE_URL from the command line."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = normalise_url(os.environ.get("DATABASE_URL", "sqlite:///instance/cec.sqlite3"))
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
