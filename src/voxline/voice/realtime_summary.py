"""Summaries for a Realtime call: the turn store and the server's items shrink together.

The cascaded pipeline summarizes after each reply (`Session._maybe_summarize`); a Realtime call
answers through the engine instead, so `RealtimeSummaries` does the same after each completed
response. The summary is written by a text model (`summarization.llm`, else the text models
after the Realtime spec in the agent's `llm`): a Realtime model cannot answer `LLM.stream`.

When a summary replaces turns (whoever made it: the `summary_created` event), each replaced
turn's server item is deleted (`conversation.item.delete`) and one system message holding the
summary is inserted at the start of the server's conversation (`previous_item_id: "root"`), so
the model's context matches the turn store. Which item belongs to which turn is learnt from the
server's `conversation.item.added`/`done`: the engine's `realtime_item` metadata (the caller's
and the model's audio items), the `call_id` of tool items, and the text of message items the
client created (greetings, notes, seeded history). A reconnect re-seeds a fresh server, so the
map starts over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from voxline.conversation.session import Session
from voxline.conversation.summarizer import Summarizer
from voxline.conversation.turns import (
    BotTurn,
    DtmfTurn,
    SystemTurn,
    ToolCallTurn,
    ToolResultTurn,
    Turn,
    UserTurn,
)
from voxline.providers.llm.base import LLM
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.realtime import events as wire
from voxline.providers.realtime.client import RealtimeClient
from voxline.providers.realtime.events import RealtimeEvent
from voxline.providers.realtime.history import DTMF_NOTE
from voxline.providers.realtime.voice_llm import RealtimeVoiceLLM

log = structlog.get_logger("voxline.voice.realtime_summary")

ROOT = "root"  # `previous_item_id` that inserts an item at the start of the conversation


def text_model(llm: LLM | None) -> LLM | None:
    """`llm` without its speech-to-speech stand-ins; None when nothing that writes text is left."""
    if llm is None or isinstance(llm, RealtimeVoiceLLM):
        return None
    if isinstance(llm, FallbackLLM):
        texts = [m for m in (text_model(member) for member in llm.llms) if m is not None]
        if not texts:
            return None
        return texts[0] if len(texts) == 1 else FallbackLLM(texts)
    return llm


def summary_item(text: str) -> dict[str, Any]:
    """The system message holding a summary, at the start of the server's conversation."""
    return {**wire.message_item("system", text), "previous_item_id": ROOT}


def _message_text(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    parts = content if isinstance(content, list) else []
    return "".join(
        str(part.get("text") or part.get("transcript") or "")
        for part in parts
        if isinstance(part, Mapping)
    )


def _said(turn: Turn) -> tuple[str, str] | None:
    """(role, text) of the message item a turn is sent as, as `seed_items` sends it."""
    if isinstance(turn, UserTurn):
        return "user", turn.content
    if isinstance(turn, BotTurn):
        return "assistant", turn.content
    if isinstance(turn, SystemTurn):
        return "system", turn.content
    if isinstance(turn, DtmfTurn):
        return "user", DTMF_NOTE.format(digits=turn.digits)
    return None


class RealtimeSummaries:
    """Runs the agent's summaries on a Realtime call and mirrors them on the server."""

    def __init__(self, session: Session, client: RealtimeClient) -> None:
        self.session = session
        self.client = client
        self.items: dict[str, str] = {}  # turn id -> server item id
        self.summarizer: Summarizer | None = None
        policy = session.spec.summarization
        own = session.summarizer  # built by the session at start, with the agent's summary LLM
        llm = text_model(own.llm) if own is not None else None
        if policy.enabled and llm is not None:
            self.summarizer = Summarizer(policy, llm)
        elif policy.enabled:
            log.info(
                "summaries off for this Realtime call: the agent has no text model "
                "(set summarization.llm, or a text model after the Realtime spec in llm)",
                session_id=session.id,
            )
        self._unsubscribe = session.bus.on("summary_created", self._on_summary)

    def close(self) -> None:
        self._unsubscribe()

    def after_response(self) -> None:
        """A response is done: summarize in the background when the policy says so."""
        summarizer, turns = self.summarizer, self.session.turns
        if summarizer is not None and summarizer.should_summarize(turns.all()):
            self.session.tasks.spawn(summarizer.summarize(turns), name="realtime summary")

    def on_event(self, event: RealtimeEvent) -> None:
        """Every server event: learns which item is which turn's."""
        if event.type in ("conversation.item.added", "conversation.item.done"):
            self._learn(wire.item_of(event))
        elif event.type == "conversation.item.deleted":
            item_id = event.text("item_id")
            self.items = {t: i for t, i in self.items.items() if i != item_id}
        elif event.type in (wire.CONNECTION_LOST, wire.RECONNECTED):
            self.items.clear()  # a new server is seeded afresh: its items have new ids

    def _learn(self, item: Mapping[str, Any]) -> None:
        item_id = str(item.get("id") or "")
        if not item_id or item_id in self.items.values():
            return
        turn = self._turn_of(item, item_id)
        if turn is not None:
            self.items[turn.id] = item_id

    def _turn_of(self, item: Mapping[str, Any], item_id: str) -> Turn | None:
        unmapped = [t for t in self.session.turns.all() if t.id not in self.items]
        for turn in unmapped:
            if turn.metadata.get("realtime_item") == item_id:
                return turn
        kind, call_id = item.get("type"), item.get("call_id")
        if kind in ("function_call", "function_call_output"):
            want = ToolCallTurn if kind == "function_call" else ToolResultTurn
            return next((t for t in unmapped if isinstance(t, want) and t.call_id == call_id), None)
        said = (str(item.get("role") or ""), _message_text(item).strip())
        if kind != "message" or not said[1]:
            return None
        for turn in unmapped:
            mine = _said(turn)
            if mine is not None and (mine[0], mine[1].strip()) == said:
                return turn
        return None

    def _on_summary(self, **payload: Any) -> None:
        """A summary replaced turns: delete their items, insert the summary at the start."""
        summary, replaced = payload.get("turn"), payload.get("replaced") or []
        if not isinstance(summary, SystemTurn):
            return
        deleted = 0
        for turn_id in replaced:
            item_id = self.items.pop(str(turn_id), None)
            if item_id is not None:
                self.client.send({"type": "conversation.item.delete", "item_id": item_id})
                deleted += 1
        self.client.send(summary_item(summary.content))
        log.info(
            "realtime conversation summarized",
            session_id=self.session.id,
            replaced=len(replaced),
            items_deleted=deleted,
        )
