"""Summaries on a Realtime call: the turn store and the server's items are replaced together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.providers.realtime_server import FakeRealtimeServer, Reply
from voxline import Agent
from voxline.conversation.session import Session
from voxline.conversation.turns import SystemTurn
from voxline.providers.llm.fake import FakeLLM
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.realtime.config import PCM24
from voxline.providers.realtime.voice_llm import RealtimeVoiceLLM
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.voice.realtime import RealtimeVoiceEngine
from voxline.voice.realtime_summary import text_model

SUMMARY = "The caller asked about orders 1 and 2: both shipped. Facts:\n- order 1 shipped"
POLICY = {"max_turns": 5, "keep_last": 2, "max_tokens": None, "debounce_turns": 4}


class Out:
    playing = False

    def play(self, item_id: str, audio: bytes) -> None:
        pass

    def clear(self) -> None:
        pass

    def played_bytes(self, item_id: str) -> int:
        return 0


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 (polling what another task does)
            await asyncio.sleep(0.01)


async def test_summary_replaces_the_server_items(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}")
    await store.open()
    script = [Reply(f"Order {n} shipped.", b"\x00\x10" * 2400) for n in range(1, 4)]
    summarizer = FakeLLM([SUMMARY])
    async with FakeRealtimeServer(script, vad=False) as server:
        spec = f"openai-realtime:{server.ws_url}#gpt-realtime"
        settings = Settings(data_dir=tmp_path, llm="fake")
        agent = Agent(name="shop", llm=spec, summarization=POLICY)
        llm = FallbackLLM([RealtimeVoiceLLM("rt"), summarizer])
        session = Session(agent, llm=llm, store=store, settings=settings, channel="voice")
        await session.start(greet=False)
        engine = RealtimeVoiceEngine(session, spec, Out(), audio=PCM24)
        await engine.start()
        try:
            conn = await server.connection()
            for n in range(1, 4):
                engine.say_as_user(f"Where is order {n}?")
                await eventually(lambda: len(conn.of("response.create")) == n)  # noqa: B023
                await eventually(
                    lambda: sum(e["type"] == "response.done" for e in conn.sent) == n  # noqa: B023
                )
            await eventually(lambda: bool(conn.of("conversation.item.delete")))
            await eventually(lambda: any(i.get("role") == "system" for i in conn.items))

            turns = session.turns.all()
            summary = turns[0]
            assert isinstance(summary, SystemTurn) and summary.summary
            assert summary.content == SUMMARY
            assert [getattr(t, "content", None) for t in turns[1:]] == [
                "Where is order 3?",
                "Order 3 shipped.",
            ]
            assert len(summarizer.requests) == 1
            # exactly the four replaced turns' items went, the summary came in at the start
            added = [e["item"]["id"] for e in conn.sent if e["type"] == "conversation.item.added"]
            deleted = [e["item_id"] for e in conn.of("conversation.item.delete")]
            assert sorted(deleted) == sorted(added[:4])  # user and answer of orders 1 and 2
            creates = [e for e in conn.of("conversation.item.create") if "previous_item_id" in e]
            assert len(creates) == 1 and creates[0]["previous_item_id"] == "root"
            texts = [
                (item.get("role"), item["content"][0].get("text") or "") for item in conn.items
            ]
            assert texts == [
                ("system", SUMMARY),
                ("user", "Where is order 3?"),
                ("assistant", ""),  # the fake's audio item carries a transcript, not text
            ]
            assert conn.items[2]["content"][0]["transcript"] == "Order 3 shipped."
        finally:
            await engine.close()
            await session.close()
            await store.close()


def test_no_text_model_means_no_summarizer() -> None:
    realtime = RealtimeVoiceLLM("rt")
    assert text_model(realtime) is None
    assert text_model(FallbackLLM([realtime])) is None
    fake = FakeLLM()
    assert text_model(FallbackLLM([realtime, fake])) is fake


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
