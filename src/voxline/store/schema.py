"""The tables behind `SqlStore`, in SQLAlchemy Core so one definition serves every dialect.

Timestamps are epoch seconds in double precision because the record models carry floats and a
round trip must give back the exact value. There are no foreign keys on purpose: an approval may
be saved before its conversation row exists, and retention deletes children explicitly in the
same transaction, which every backend (including ones without foreign keys) can do alike; the
same goes for an agent's listeners. Constraints are named by convention so that migrations can
refer to them by the same name on every dialect.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

ID = String(255)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    }
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("agent", Text, nullable=False, default=""),
    Column("subject", Text, nullable=True, index=True),
    Column("channel", Text, nullable=False, default="text"),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False, index=True),
    Column("metadata", JSON, nullable=False),
)

turns = Table(
    "turns",
    metadata,
    Column("conversation_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("data", JSON, nullable=False),
    PrimaryKeyConstraint("conversation_id", "id"),
    # Unique: a conversation's order is decided once, whoever writes (see SeqConflictError).
    Index("uq_turns_conversation_seq", "conversation_id", "seq", unique=True),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False, index=True),
    Column("call_id", Text, nullable=False),
    Column("tool", Text, nullable=False),
    Column("arguments", JSON, nullable=False),
    Column("subject", Text, nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("applied", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    Column("decided_at", Double, nullable=True),
    Column("connection_id", Text, nullable=True),
    Column("claimed_by", Text, nullable=True),
)

agents = Table(
    "agents",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", ID, nullable=False, unique=True),
    Column("spec", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

listeners = Table(
    "listeners",
    metadata,
    Column("id", ID, primary_key=True),
    Column("agent_id", ID, nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("address", ID, nullable=False),
    Column("idle_timeout", Double, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    UniqueConstraint("kind", "address"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Text, nullable=False),
    Column("key_hash", ID, nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("scopes", JSON, nullable=False, server_default=text("'[]'")),
)

# Keys that may be used once across the fleet until they expire (a call's CallSid).
once_keys = Table(
    "once_keys",
    metadata,
    Column("key", ID, primary_key=True),
    Column("expires_at", Double, nullable=False, index=True),
)

# The audit log (who did what, when): written once, read newest first, by conversation or tool.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", ID, primary_key=True),
    Column("at", Double, nullable=False, index=True),
    Column("action", String(32), nullable=False, index=True),
    Column("actor", Text, nullable=False),
    Column("conversation_id", ID, nullable=True, index=True),
    Column("connection_id", Text, nullable=True),
    Column("subject", Text, nullable=True),
    Column("agent", Text, nullable=True),
    Column("tool", ID, nullable=True, index=True),
    Column("outcome", String(32), nullable=True),
    Column("details", JSON, nullable=False),
)
