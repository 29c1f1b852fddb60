"""The audit log on Redis, a part `RedisStore` delegates to (it is long enough already).

Layout, with `P` for the store's prefix:

    P audit_entries                 hash: entry id -> the entry as JSON (written once)
    P audit                         sorted set: entry id by time (every entry)
    P audit_by:conversation:{id}    sorted set: the entries of one conversation, by time
    P audit_by:tool:{name}          sorted set: the entries about one tool, by time

An entry is added by one script (the id is claimed with HSETNX, and indexed only when it was
new), so a retried append never changes or double-indexes an entry. Listing walks the narrowest
index newest first and filters the rest of the query on the decoded entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from redis.asyncio import Redis

from voxline.store.base import AuditQuery, AuditRecord

# KEYS: the entries hash, then every index. ARGV: id, entry JSON, time.
_APPEND = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  for i = 2, #KEYS do redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1]) end
end
"""
_PAGE = 200  # ids read per round trip while filtering


class RedisAuditLog:
    """`append_audit` and `list_audit` over the store's client and key scheme.

    It takes the store's `client` getter (not a client) because the store connects in `open()`,
    after this part exists, and refuses with a clear error while it is closed."""

    def __init__(self, client: Callable[[], Redis], key: Callable[..., str]) -> None:
        self._redis = client
        self._key = key

    async def append_audit(self, record: AuditRecord) -> None:
        keys = [self._key("audit_entries"), self._key("audit")]
        if record.conversation_id:
            keys.append(self._key("audit_by", "conversation", record.conversation_id))
        if record.tool:
            keys.append(self._key("audit_by", "tool", record.tool))
        script = self._redis().register_script(_APPEND)
        await script(keys=keys, args=[record.id, record.model_dump_json(), repr(record.at)])

    async def list_audit(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        query = query or AuditQuery()
        if query.conversation_id is not None:
            index = self._key("audit_by", "conversation", query.conversation_id)
        elif query.tool is not None:
            index = self._key("audit_by", "tool", query.tool)
        else:
            index = self._key("audit")
        newest = "+inf" if query.until is None else f"({query.until!r}"
        oldest = "-inf" if query.since is None else repr(query.since)
        redis = self._redis()
        found: list[AuditRecord] = []
        offset = 0
        while len(found) < query.limit:
            page = await redis.zrevrangebyscore(index, newest, oldest, start=offset, num=_PAGE)
            ids = [str(entry_id) for entry_id in page]  # the client decodes responses
            if not ids:
                break
            offset += len(ids)
            for raw in await redis.hmget(self._key("audit_entries"), ids):
                if raw is None:
                    continue
                entry = AuditRecord.model_validate(json.loads(raw))
                if _matches(entry, query):
                    found.append(entry)
                    if len(found) == query.limit:
                        break
        return found


def _matches(entry: AuditRecord, query: AuditQuery) -> bool:
    return (
        (query.conversation_id is None or entry.conversation_id == query.conversation_id)
        and (query.action is None or entry.action == query.action)
        and (query.tool is None or entry.tool == query.tool)
        and (query.actor is None or entry.actor == query.actor)
    )
