"""Alembic's entry script: runs on the connection `SqlStore.open()` hands over, never its own.

The caller's transaction is reused (Alembic sees it is already inside one), so the whole upgrade
commits or rolls back as a unit together with the lock the caller took before it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from voxline.store.migrations import VERSION_TABLE
from voxline.store.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "voxline's migrations run through SqlStore.open() (or upgrade_to_head), not the alembic CLI"
    )
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
