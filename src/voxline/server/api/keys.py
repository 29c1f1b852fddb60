"""`/api/keys`: create (the token is shown once), list and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from voxline.server.api.auth import create_api_key, revoke_api_key
from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.api.models import KeyCreate, KeyCreated, KeyList, KeyOut
from voxline.store.base import ApiKeyRecord

router = APIRouter(
    tags=["keys"], dependencies=[Depends(authorized)], responses=error_responses(401, 413, 429)
)


def key_out(record: ApiKeyRecord) -> KeyOut:
    return KeyOut.model_validate(record.model_dump(include=set(KeyOut.model_fields)))


@router.post("/keys", status_code=201, responses=error_responses(422))
async def create_key(body: KeyCreate, api: Api) -> KeyCreated:
    """A new key. Keep the `token`: it is not stored and cannot be shown again."""
    token, record = await create_api_key(api.store, body.name, body.scopes)
    return KeyCreated(**key_out(record).model_dump(), token=token)


@router.get("/keys")
async def list_keys(api: Api) -> KeyList:
    return KeyList(keys=[key_out(r) for r in await api.store.list_api_keys()])


@router.delete("/keys/{key_id}", status_code=204, responses=error_responses(404))
async def revoke_key(key_id: str, api: Api) -> Response:
    """Revoke a key: requests with it are refused from now on (it stays listed as revoked)."""
    if not await revoke_api_key(api.store, key_id):
        raise ApiError(404, f"no API key with id {key_id!r}")
    return Response(status_code=204)
