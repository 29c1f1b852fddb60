"""Running the app on uvicorn with a graceful shutdown that lets calls finish.

uvicorn closes WebSockets at once on shutdown (close code 1012), which would cut every caller
off mid-sentence. So the first SIGTERM/SIGINT only starts draining: new calls are refused
(webhooks answer 503, so Twilio uses the fallback URL; `/health` turns 503), and uvicorn is told
to stop when the calls in progress end or the grace period runs out. A second signal stops at
once.
"""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from voxline.server.hub import ConversationHub

WS_HARD_LIMIT = 1 << 20  # bytes; the app enforces its own, smaller limit with a log line


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: ConversationHub, grace: float) -> None:
        super().__init__(config)
        self.hub = hub
        self.grace = grace
        self._drain_requested = False
        self._drain: asyncio.Task[bool] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        self._drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain is None:
            self._drain = asyncio.create_task(self.hub.drain(self.grace))
        if self._drain is not None and self._drain.done():
            self.should_exit = True
        return await super().on_tick(counter)


def build_server(app: Starlette, *, host: str, port: int, **uvicorn_options: Any) -> GracefulServer:
    """A uvicorn server for an app from `create_app`, draining calls on the first signal."""
    hub: ConversationHub = app.state.hub
    settings = hub.settings
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        ws_max_size=max(WS_HARD_LIMIT, 2 * settings.twilio_max_frame_bytes),
        proxy_headers=False,  # the app reads forwarding headers itself (public URL, signatures)
        **uvicorn_options,
    )
    return GracefulServer(config, hub, settings.shutdown_grace_period)
