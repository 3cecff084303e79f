"""Alembic environment: the URL comes from the caller's config (``fp db upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from registry.store.tables import metadata

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set in the Alembic config")
    engine = create_engine(url)
    with engine.connect() as connection:
        # Serialise concurrent upgrades (several processes starting at once).
        connection.exec_driver_sql("SELECT pg_advisory_lock(7214001)")
        context.configure(connection=connection, target_metadata=metadata,
                          version_table="fp_alembic_version")
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("SELECT pg_advisory_unlock(7214001)")
        connection.commit()
    engine.dispose()


run_migrations_online()
