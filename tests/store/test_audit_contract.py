"""The audit log part of the `Store` contract, on every backend of `conftest.STORE_FACTORIES`."""

from __future__ import annotations

from voxline.store.base import AuditAction, AuditQuery, AuditRecord, ConversationRecord, Store


def entry(number: int, **fields: object) -> AuditRecord:
    values: dict[str, object] = {
        "id": f"audit-{number:03d}",
        "at": 1000.0 + number,
        "action": AuditAction.TOOL_RUN,
        "actor": "agent:support",
        "conversation_id": "conv-1",
        "tool": "refund",
        "outcome": "ok",
    }
    values.update(fields)
    return AuditRecord.model_validate(values)


async def test_an_entry_round_trips(store: Store) -> None:
    record = AuditRecord(
        id="audit-1",
        at=1234.5678,
        action=AuditAction.APPROVAL_DECIDED,
        actor="key:key_1 (ops)",
        conversation_id="conv-1",
        connection_id="CA123",
        subject="phone:+14155550100",
        agent="support",
        tool="refund",
        outcome="approved",
        details={"approval_id": "appr-1", "arguments": {"order": "A1", "amount": 20.5}},
    )
    await store.append_audit(record)
    assert await store.list_audit() == [record]


async def test_entries_are_written_once(store: Store) -> None:
    await store.append_audit(entry(1))
    await store.append_audit(entry(1, outcome="error", at=5000.0))  # a retry, or a forgery
    assert await store.list_audit() == [entry(1)]


async def test_listing_is_newest_first_and_filters(store: Store) -> None:
    await store.append_audit(entry(1))
    await store.append_audit(entry(2, conversation_id="conv-2"))
    await store.append_audit(entry(3, tool="lookup"))
    await store.append_audit(
        entry(4, action=AuditAction.APPROVAL_DECIDED, actor="key:key_9", outcome="rejected")
    )
    await store.append_audit(entry(5, conversation_id=None, tool=None))

    def ids(records: list[AuditRecord]) -> list[str]:
        return [r.id[-1] for r in records]

    assert ids(await store.list_audit()) == ["5", "4", "3", "2", "1"]
    assert ids(await store.list_audit(AuditQuery(conversation_id="conv-1"))) == ["4", "3", "1"]
    assert ids(await store.list_audit(AuditQuery(tool="refund"))) == ["4", "2", "1"]
    action = AuditAction.APPROVAL_DECIDED
    assert ids(await store.list_audit(AuditQuery(action=action))) == ["4"]
    assert ids(await store.list_audit(AuditQuery(actor="agent:support", tool="refund"))) == [
        "2",
        "1",
    ]
    assert ids(await store.list_audit(AuditQuery(since=1002.0, until=1004.0))) == ["3", "2"]
    both = AuditQuery(conversation_id="conv-1", action=AuditAction.TOOL_RUN)
    assert ids(await store.list_audit(both)) == ["3", "1"]


async def test_pages_follow_one_another(store: Store) -> None:
    for number in range(1, 8):
        await store.append_audit(entry(number))
    first = await store.list_audit(AuditQuery(limit=3))
    second = await store.list_audit(AuditQuery(limit=3, until=first[-1].at))
    third = await store.list_audit(AuditQuery(limit=3, until=second[-1].at))
    assert [r.id[-1] for r in first + second + third] == list("7654321")


async def test_retention_keeps_the_audit_log(store: Store) -> None:
    await store.upsert_conversation(ConversationRecord(id="conv-1", updated_at=10.0))
    await store.append_audit(entry(1))
    assert await store.delete_conversations_before(100.0) == 1
    assert await store.list_audit(AuditQuery(conversation_id="conv-1")) == [entry(1)]
