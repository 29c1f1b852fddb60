"""`/api/agents`: agents as JSON (`AgentSpec`), created, read, replaced and deleted.

Only what the server can run, and what its operator allows, is accepted: beyond the schema, the
agent policy (`voxline.agents.policy`) refuses file paths, unlisted models, voices and base URLs,
unregistered Python tools and `approvals.tools` the agent does not have, each a 422 naming the
field, so a stored agent runs rather than failing every call later. Each write is a single store
operation, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Response
from fastapi.exceptions import RequestValidationError

from voxline.agents.policy import check_agent
from voxline.agents.spec import AgentSpec
from voxline.conversation.turns import new_id
from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.api.models import AgentList, AgentOut
from voxline.store.base import AgentRecord
from voxline.store.errors import ConflictError

router = APIRouter(
    tags=["agents"],
    dependencies=[Depends(authorized)],
    responses=error_responses(401, 413, 422, 429),
)


def agent_out(record: AgentRecord) -> AgentOut:
    return AgentOut(
        id=record.id,
        name=record.name,
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
        spec=AgentSpec.model_validate(record.spec),
    )


async def load_agent(api: Api, agent_id: str) -> AgentRecord:
    record = await api.store.get_agent(agent_id)
    if record is None:
        raise ApiError(404, f"no agent with id {agent_id!r}")
    return record


def _check_runnable(api: Api, spec: AgentSpec) -> None:
    violations = check_agent(spec, api.hub.settings)
    if violations:
        raise RequestValidationError(
            [
                {"loc": ("body", *v.loc), "msg": v.message, "type": "agent_policy"}
                for v in violations
            ]
        )
    if spec.name in api.hub.agents:
        raise ApiError(409, f"{spec.name!r} is the name of an agent hosted from files")


async def _save(api: Api, record: AgentRecord) -> None:
    try:
        await api.store.save_agent(record)
    except ConflictError as exc:
        raise ApiError(409, f"another agent is already named {record.name!r}") from exc


@router.post("/agents", status_code=201, responses=error_responses(409))
async def create_agent(spec: AgentSpec, api: Api) -> AgentOut:
    """Define an agent. Its `name` must be unique; calls reach it through listeners."""
    _check_runnable(api, spec)
    record = AgentRecord(
        id=new_id("agent"), name=spec.name, spec=spec.model_dump(mode="json", exclude_unset=True)
    )
    await _save(api, record)
    return agent_out(record)


@router.get("/agents")
async def list_agents(api: Api) -> AgentList:
    return AgentList(agents=[agent_out(r) for r in await api.store.list_agents()])


@router.get("/agents/{agent_id}", responses=error_responses(404))
async def get_agent(agent_id: str, api: Api) -> AgentOut:
    return agent_out(await load_agent(api, agent_id))


@router.put("/agents/{agent_id}", responses=error_responses(404, 409))
async def replace_agent(agent_id: str, spec: AgentSpec, api: Api) -> AgentOut:
    """Replace the definition. Calls in progress keep the old one; the next call gets this one.
    Renaming starts new conversations: history is kept per agent name."""
    record = await load_agent(api, agent_id)
    _check_runnable(api, spec)
    updated = record.model_copy(
        update={
            "name": spec.name,
            "spec": spec.model_dump(mode="json", exclude_unset=True),
            "version": record.version + 1,
            "updated_at": time.time(),
        }
    )
    await _save(api, updated)
    return agent_out(updated)


@router.delete("/agents/{agent_id}", status_code=204, responses=error_responses(404))
async def delete_agent(agent_id: str, api: Api) -> Response:
    """Delete the agent and its listeners (their feed clients are told and disconnected)."""
    record = await load_agent(api, agent_id)
    for listener in await api.store.list_listeners(agent_id=record.id):
        await api.listeners.delete(listener, "agent deleted")
    if not await api.store.delete_agent(record.id):
        raise ApiError(404, f"no agent with id {agent_id!r}")
    return Response(status_code=204)
