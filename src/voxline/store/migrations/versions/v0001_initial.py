"""The initial schema: conversations, turns, approvals, agents, listeners and API keys.

Databases made before migrations existed (by `create_all`) already hold the first three tables,
identical to these, so every table is created only where it is missing: such a database upgrades
in place, keeping its rows, and a fresh one gets everything.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(255)


def _tables() -> list[tuple[str, list[sa.schema.SchemaItem], list[tuple[str, list[str]]]]]:
    """(table, columns and constraints, indexes), frozen as of this revision."""
    return [
        (
            "conversations",
            [
                sa.Column("id", ID, primary_key=True),
                sa.Column("agent", sa.Text, nullable=False),
                sa.Column("subject", sa.Text, nullable=True),
                sa.Column("channel", sa.Text, nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("updated_at", sa.Double, nullable=False),
                sa.Column("metadata", sa.JSON, nullable=False),
            ],
            [
                ("ix_conversations_subject", ["subject"]),
                ("ix_conversations_updated_at", ["updated_at"]),
            ],
        ),
        (
            "turns",
            [
                sa.Column("conversation_id", ID, nullable=False),
                sa.Column("id", ID, nullable=False),
                sa.Column("kind", sa.String(32), nullable=False),
                sa.Column("seq", sa.Integer, nullable=False),
                sa.Column("version", sa.Integer, nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("data", sa.JSON, nullable=False),
                sa.PrimaryKeyConstraint("conversation_id", "id"),
            ],
            [("ix_turns_conversation_seq", ["conversation_id", "seq"])],
        ),
        (
            "approvals",
            [
                sa.Column("id", ID, primary_key=True),
                sa.Column("conversation_id", ID, nullable=False),
                sa.Column("call_id", sa.Text, nullable=False),
                sa.Column("tool", sa.Text, nullable=False),
                sa.Column("arguments", sa.JSON, nullable=False),
                sa.Column("subject", sa.Text, nullable=True),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("reason", sa.Text, nullable=True),
                sa.Column("result", sa.Text, nullable=True),
                sa.Column("applied", sa.Boolean, nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("decided_at", sa.Double, nullable=True),
            ],
            [
                ("ix_approvals_conversation_id", ["conversation_id"]),
                ("ix_approvals_status", ["status"]),
            ],
        ),
        (
            "agents",
            [
                sa.Column("id", ID, primary_key=True),
                sa.Column("name", ID, nullable=False),
                sa.Column("spec", sa.JSON, nullable=False),
                sa.Column("version", sa.Integer, nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("updated_at", sa.Double, nullable=False),
                sa.UniqueConstraint("name", name="uq_agents_name"),
            ],
            [],
        ),
        (
            "listeners",
            [
                sa.Column("id", ID, primary_key=True),
                sa.Column("agent_id", ID, nullable=False),
                sa.Column("kind", sa.String(16), nullable=False),
                sa.Column("address", ID, nullable=False),
                sa.Column("idle_timeout", sa.Double, nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("last_seen_at", sa.Double, nullable=False),
                sa.UniqueConstraint("kind", "address", name="uq_listeners_kind_address"),
            ],
            [("ix_listeners_agent_id", ["agent_id"])],
        ),
        (
            "api_keys",
            [
                sa.Column("id", ID, primary_key=True),
                sa.Column("name", sa.Text, nullable=False),
                sa.Column("key_hash", ID, nullable=False),
                sa.Column("prefix", sa.String(32), nullable=False),
                sa.Column("created_at", sa.Double, nullable=False),
                sa.Column("revoked", sa.Boolean, nullable=False),
                sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
            ],
            [],
        ),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, items, indexes in _tables():
        if name in existing:
            continue
        op.create_table(name, *items)
        for index_name, columns in indexes:
            op.create_index(index_name, name, columns)


def downgrade() -> None:
    for name, _items, _indexes in reversed(_tables()):
        op.drop_table(name)
