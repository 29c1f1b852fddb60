"""Schemathesis fuzzes every API operation from the published OpenAPI schema: whatever it sends,
the server answers without a 5xx. Bounded to a few hundred requests in all."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import KEY
from voxline import Agent
from voxline.server import ServerConfig, build_server, create_app
from voxline.settings import Settings

# Per operation (about 18 of them). CI runs a fixed, repeatable sample (a red build should mean a
# change broke something, not that the dice found an old bug); set VOXLINE_FUZZ_EXAMPLES to
# explore further with fresh random inputs.
EXPLORE = int(os.environ.get("VOXLINE_FUZZ_EXAMPLES", "0"))
EXAMPLES = EXPLORE or 20


@pytest.fixture(scope="module")
def live_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server in a thread of its own: schemathesis calls it synchronously."""
    data: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        ServerConfig(
            agents=[Agent(name="front-desk")],
            settings=Settings(
                data_dir=data,
                llm="fake",
                api_key=KEY,
                api_rate_limit=10_000,
                api_rate_burst=10_000,
                twilio_validate_signatures=False,
            ),
        )
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = build_server(app, host="127.0.0.1", port=sock.getsockname()[1], log_level="error")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_no_request_makes_the_server_fail(live_base: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_base}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # every route is in the schema

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=not EXPLORE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_fails(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        never_fails()
