"""Live sessions over shared memory: unique turn order, approvals decided exactly once.

- `turns (conversation_id, seq)` becomes unique, so two writers of one conversation (two calls
  from one caller on two workers) can never store the same position twice. Databases written
  before this may hold duplicates from that very bug: each such conversation is renumbered first,
  keeping the order it had (seq, then creation time, then id).
- `once_keys`: keys used once across the fleet (a call's CallSid, so a call token admits one
  socket), each kept until it expires.
- `approvals` gain `connection_id` (the live connection that asked, where the outcome goes) and
  `claimed_by` (who is applying the decision, set once by compare-and-set).
- `api_keys` gain `scopes` (what a key may do beyond the REST API, such as deciding approvals);
  keys made before have none.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _renumber_duplicates() -> None:
    bind = op.get_bind()
    turns = sa.table(
        "turns",
        sa.column("conversation_id", sa.String),
        sa.column("id", sa.String),
        sa.column("seq", sa.Integer),
        sa.column("created_at", sa.Double),
    )
    duplicated = bind.execute(
        sa.select(turns.c.conversation_id)
        .group_by(turns.c.conversation_id)
        .having(sa.func.count() > sa.func.count(sa.distinct(turns.c.seq)))
    ).scalars()
    for conversation_id in list(duplicated):
        rows = bind.execute(
            sa.select(turns.c.id)
            .where(turns.c.conversation_id == conversation_id)
            .order_by(turns.c.seq, turns.c.created_at, turns.c.id)
        ).scalars()
        for position, turn_id in enumerate(list(rows)):
            bind.execute(
                sa.update(turns)
                .where(turns.c.conversation_id == conversation_id, turns.c.id == turn_id)
                .values(seq=position)
            )


def upgrade() -> None:
    _renumber_duplicates()
    op.create_table(
        "once_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_once_keys_expires_at", "once_keys", ["expires_at"])
    with op.batch_alter_table("turns") as batch:
        batch.drop_index("ix_turns_conversation_seq")
        batch.create_index("uq_turns_conversation_seq", ["conversation_id", "seq"], unique=True)
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("connection_id", sa.Text, nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.Text, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scopes", sa.JSON, nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    op.drop_index("ix_once_keys_expires_at", "once_keys")
    op.drop_table("once_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("claimed_by")
        batch.drop_column("connection_id")
    with op.batch_alter_table("turns") as batch:
        batch.drop_index("uq_turns_conversation_seq")
        batch.create_index("ix_turns_conversation_seq", ["conversation_id", "seq"])
