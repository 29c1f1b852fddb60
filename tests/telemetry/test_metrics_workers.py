"""`voxline serve --workers 2`: whichever worker a scrape reaches, `/metrics` counts the calls
of both (prometheus_client's multiprocess mode, set up by the CLI).

Skipped, saying why, where PostgreSQL (VOXLINE_TEST_POSTGRES_URL) or Redis
(VOXLINE_TEST_REDIS_URL) is not reachable: workers share their store and broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_workers import wait_healthy
from tests.ports import free_port
from tests.server.twilio_emulator import PUBLIC, TOKEN, Twilio, eventually
from tests.store.conftest import REDIS_URL
from tests.telemetry.conftest import sample, scrape

CALLS = 4
ANSWER = "Hello! This is the fake model speaking."  # what VOXLINE_LLM=fake says


@pytest.fixture
def server(scratch_database: str, redis_key_prefix: str, tmp_path: Path) -> Iterator[str]:
    """One `voxline serve --workers 2` on a loopback port; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "VOXLINE_REDIS_URL": REDIS_URL,
        "VOXLINE_REDIS_KEY_PREFIX": redis_key_prefix,
        "VOXLINE_LLM": "fake",
        "VOXLINE_DATA_DIR": str(tmp_path),
        "VOXLINE_LOG_LEVEL": "WARNING",
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    command = [sys.executable, "-m", "voxline.cli", "serve", "--workers", "2"]
    command += ["--port", str(port), "--db", scratch_database, "--public-url", PUBLIC]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_every_worker_answers_for_all_of_them(server: str) -> None:
    await wait_healthy(server)

    async def both_up() -> bool:
        return sample(await scrape(server), "voxline_workers") == 2

    await eventually(both_up)  # a live gauge summed over the two workers' files
    before = await scrape(server)
    twilio = Twilio(server)
    for n in range(CALLS):
        sid = f"CA{n:032d}"
        caller = f"+1415555{n:04d}"
        twiml = await twilio.call(caller, call_sid=sid)
        setup: dict[str, Any] = {"callSid": sid, "from": caller}  # as the webhook was told
        async with twilio.relay(twiml, **setup) as call:
            await call.prompt("hello?")
            assert await call.reply() == ANSWER

    async def settled() -> bool:
        return sample(await scrape(server), "voxline_sessions_live") == 0

    await eventually(settled)
    # several scrapes, each to whichever worker the kernel picks: all see every call
    for _ in range(6):
        after = await scrape(server)
        assert sample(after, "voxline_workers") == 2
        turns = sample(after, "voxline_turns_total") - sample(before, "voxline_turns_total")
        assert turns == CALLS
        calls = sample(after, "voxline_sessions_total", channel="voice")
        assert calls - sample(before, "voxline_sessions_total", channel="voice") == CALLS
        name = "voxline_llm_time_to_first_token_seconds_count"
        llm_lines = [line for line in after.splitlines() if "_llm_" in line]
        assert sample(after, name) - sample(before, name) == CALLS, llm_lines
        assert sample(after, "voxline_sessions_live") == 0
        assert sample(after, "voxline_session_errors_total") == 0
