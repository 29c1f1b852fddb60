"""Alembic migrations for `SqlStore`, run in-process by `SqlStore.open()` (no alembic.ini).

The scripts ship inside the package and are found through the `voxline.store:migrations` resource
location, so an installed wheel migrates its own database. A new revision is written by hand next
to `versions/v0001_initial.py`, with `op.batch_alter_table` for any ALTER so SQLite can follow;
`tests/store/test_migrations.py` fails, listing the difference, until the migrated schema matches
`schema.metadata` again.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

# Our own name, so a database that already holds an application's Alembic history keeps it.
VERSION_TABLE = "voxline_alembic_version"


def alembic_config(connection: Connection) -> Config:
    """A config that runs our scripts on `connection` (read back by `env.py`)."""
    config = Config()
    config.set_main_option("script_location", "voxline.store:migrations")
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    """Apply every missing revision inside the caller's transaction."""
    command.upgrade(alembic_config(connection), "head")
