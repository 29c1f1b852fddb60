"""`/api/audit`: the audit log (tool runs and approval decisions: who, what, when), newest first.

Entries are written by `voxline.guardrails.audit` and never change, so paging is by time: pass
the `next_until` of a page as `until` to get the one after it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import error_responses
from voxline.store.base import AuditAction, AuditQuery

router = APIRouter(
    tags=["audit"], dependencies=[Depends(authorized)], responses=error_responses(401, 413, 429)
)

Text = Annotated[str | None, Query(max_length=255)]


class AuditEntryOut(BaseModel):
    id: str
    at: float = Field(description="When, in seconds since the epoch.")
    action: AuditAction
    actor: str = Field(
        description="Who: 'agent:NAME' for a tool an agent ran, 'key:ID (NAME)' for a decision "
        "made with an API key."
    )
    conversation_id: str | None
    connection_id: str | None
    subject: str | None
    agent: str | None
    tool: str | None
    outcome: str | None = Field(
        description="ok, error, not_run, pending_approval, ran_after_approval, rejected; for a "
        "decision, approved or rejected."
    )
    details: dict[str, Any] = Field(
        description="Arguments (personal data masked), attempts, duration, approval id, reason."
    )


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_until: float | None = Field(
        description="Pass as `until` for the next (older) page; empty on the last page."
    )


@router.get("/audit", responses=error_responses(422))
async def list_audit(
    api: Api,
    conversation_id: Text = None,
    action: AuditAction | None = None,
    tool: Text = None,
    actor: Text = None,
    since: float | None = None,
    until: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Entries matching every filter given: `since` inclusive, `until` exclusive."""
    query = AuditQuery(
        conversation_id=conversation_id,
        action=action,
        tool=tool,
        actor=actor,
        since=since,
        until=until,
        limit=limit,
    )
    found = await api.store.list_audit(query)
    entries = [AuditEntryOut.model_validate(record.model_dump()) for record in found]
    next_until = found[-1].at if len(found) == limit else None
    return AuditPage(entries=entries, next_until=next_until)
