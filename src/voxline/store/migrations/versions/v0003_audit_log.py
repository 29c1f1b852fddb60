"""The audit log: who ran which tool, who approved or rejected which call, and when.

- `audit_log`: one row per entry, never updated; indexed by time (listing newest first), by
  action, conversation and tool (the usual questions: everything in this call, every refund).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=True),
        sa.Column("connection_id", sa.Text, nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("agent", sa.Text, nullable=True),
        sa.Column("tool", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_index("ix_audit_log_conversation_id", "audit_log", ["conversation_id"])
    op.create_index("ix_audit_log_tool", "audit_log", ["tool"])


def downgrade() -> None:
    for column in ("tool", "conversation_id", "action", "at"):
        op.drop_index(f"ix_audit_log_{column}", "audit_log")
    op.drop_table("audit_log")
