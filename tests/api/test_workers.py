"""Two `voxline serve` processes sharing PostgreSQL and Redis behave as one platform: an agent
made on one answers calls on the other, a call on one is watched (and talked into) from the
other, and a conversation texted on one continues in a call on the other.

Skipped, saying why, where PostgreSQL (VOXLINE_TEST_POSTGRES_URL) or Redis
(VOXLINE_TEST_REDIS_URL) is not reachable.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import KEY, ApiClient
from tests.ports import free_port
from tests.server.twilio_emulator import PUBLIC, TOKEN, Twilio, eventually
from tests.store.conftest import REDIS_URL

HELLO = "Hello from whichever worker you reached."
START_TIMEOUT = 60.0


@pytest.fixture
def workers(
    scratch_database: str, redis_key_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """Two servers on two loopback ports; yields their base URLs."""
    env = {
        **os.environ,
        "VOXLINE_REDIS_URL": REDIS_URL,
        "VOXLINE_REDIS_KEY_PREFIX": redis_key_prefix,
        "VOXLINE_API_KEY": KEY,
        "VOXLINE_LLM": "fake",
        "VOXLINE_DATA_DIR": str(tmp_path),
        "VOXLINE_LOG_LEVEL": "WARNING",
        "VOXLINE_API_RATE_LIMIT": "1000",  # the test polls; rate limiting has its own test
        "TWILIO_AUTH_TOKEN": TOKEN,
    }
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voxline.cli",
                "serve",
                "--port",
                str(port),
                "--db",
                scratch_database,
                "--public-url",
                PUBLIC,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker-{port}.log").open("w"),
        )
        for port in ports
    ]
    try:
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


async def wait_healthy(base: str) -> None:
    async with asyncio.timeout(START_TIMEOUT), httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def test_any_worker_serves_any_call(workers: tuple[str, str]) -> None:
    for base in workers:
        await wait_healthy(base)
    one, two = (ApiClient(base, Twilio(base)) for base in workers)

    # an agent created through worker 1 answers a call on worker 2 ...
    agent = await one.create_agent({"name": "shared", "llm": f"fake:{HELLO}"})
    listener = await one.listen(agent["id"], websocket="/ws/shared")
    async with one.feed(listener["feed_url"]) as feed:  # ... watched from worker 1
        async with two.listener_call(listener["websocket_url"], caller="+14155550199") as call:
            started = await feed.until("call_started")
            await call.prompt("hello?")
            assert await call.reply() == HELLO
            # text for the call on worker 2, sent through worker 1
            injected = await one.call(
                "POST", f"/api/calls/{started['call_id']}/messages", json={"text": "still there?"}
            )
            assert injected.status_code == 202, injected.text
            assert await call.reply() == HELLO
        await feed.until("call_ended")
    spoken = [e["delta"] for e in feed.events if e["type"] == "bot_text"]
    assert "".join(spoken) == HELLO * 2
    heard = [e["text"] for e in feed.events if e["type"] == "user_utterance"]
    assert heard == ["hello?", "still there?"]

    # a conversation texted on worker 1 continues in a call on worker 2, history included
    phone = await one.listen(agent["id"], number="+18005550101")
    assert await one.twilio.text("do you open on sundays?") == [HELLO]
    twiml = await two.twilio.call()
    params = {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}
    assert params["voxlineListener"] == phone["id"]
    assert params["voxlineGreeting"] == "contextual"  # worker 2 saw the SMS history
    async with two.twilio.relay(twiml) as call:
        assert await call.reply() == HELLO

    async def whole_history() -> bool:
        listed = await one.call("GET", "/api/calls", params={"agent_id": agent["id"]})
        assert listed.status_code == 200, listed.text
        calls = listed.json()
        by_subject = [c for c in calls["calls"] if c["subject"] == "phone:+14155550100"]
        if len(by_subject) != 1:
            return False
        detail = (await one.call("GET", f"/api/calls/{by_subject[0]['id']}")).json()
        contents = [t["data"].get("content") for t in detail["turns"]]
        return contents[:2] == ["do you open on sundays?", HELLO] and contents[-1] == HELLO

    await eventually(whole_history)
