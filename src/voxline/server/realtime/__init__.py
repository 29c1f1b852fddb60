"""voxline as an OpenAI Realtime-compatible server: `/v1/realtime?model=AGENT`.

Any Realtime client (the `openai` SDK, the Agents SDK's realtime runner, a browser app) talks to
any voxline agent, whose own cascaded pipeline (VAD -> STT -> LLM -> TTS) answers behind the
protocol. See docs/realtime.md for what is supported.
"""

from voxline.server.realtime.routes import REALTIME_PATH, RealtimeRoutes

__all__ = ["REALTIME_PATH", "RealtimeRoutes"]
