"""The talk page in a real browser: Debian's Chromium driven by Playwright, against a real
loopback server with a scripted model. The microphone is Chromium's fake capture device playing
a WAV that espeak-ng speaks (it loops, so the question comes again while a long answer plays:
that is the barge-in). Speech models are stand-ins (any loud audio is speech, and every spoken
turn is heard as the same question), so the tests check the page and the wire, not recognition.
Spoken calls run over each transport, forced with `?transport=`: WebRTC (Opus both ways, events
on a data channel, the server's aiortc peer) and the WebSocket; a typed call takes the page's own
choice, and a server without the `webrtc` extra sends the page to the socket.

Screenshots at desktop size and at 390x844 go to artifacts/screenshots/, which CI keeps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.server.conftest import EnvFactory, lookup_order
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.providers.stt.base import Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.tools.decorator import FunctionTool
from voxline.voice.providers import SpeechProviders

from .conftest import CHROMIUM

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
HEARD = "what is the weather today"
REPLY = "It will be sunny all day."
LONG_REPLY = " ".join(
    ["The forecast says sunshine all morning and a light breeze after lunch."] * 5
)
WAIT_MS = 15000


class LevelVAD:
    """Speech is anything louder than -30 dBFS peak: the fake microphone is clean."""

    label = "level"
    sample_rate = 16000
    chunk_samples = 160

    def stream(self) -> LevelVAD:
        return self

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        peak = float(np.abs(chunk.astype(np.float32)).max()) if len(chunk) else 0.0
        scale = 1.0 if chunk.dtype == np.float32 else 32768.0
        return 1.0 if peak / scale > 0.03 else 0.0

    def reset(self) -> None:
        return None


class OneQuestionSTT:
    """Hears every spoken turn as `HEARD` (a stand-in: recognition is not what is tested)."""

    label = "one question"
    sample_rate = 16000

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], *, language: str | None = None
    ) -> Transcript:
        return Transcript(HEARD, audio_duration=len(pcm) / 16000)


class SineTTS:
    """Speaks a 440 Hz tone, 20 ms per character: a tone survives Opus, a constant level does
    not, and the WebRTC test measures the agent's voice as the browser received it."""

    label = "sine"
    sample_rate = 16000

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        t = np.arange(round(len(text) * 0.02 * 16000)) / 16000
        yield AudioChunk((np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16), 16000, text)


# The page's peer connections, kept where the test can ask them for their statistics.
KEEP_PEERS = """
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  window.__peers = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__peers.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""
RECEIVED_ENERGY = """
async () => {
  let energy = 0;
  for (const pc of window.__peers || []) {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") energy += s.totalAudioEnergy || 0;
    });
  }
  return energy;
}
"""


@pytest.fixture(autouse=True)
def speech(monkeypatch: pytest.MonkeyPatch) -> None:
    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        return SpeechProviders(OneQuestionSTT(), SineTTS(), LevelVAD())

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espeak-ng's question, padded with silence so each loop is a turn of its own."""
    raw = tmp_path_factory.mktemp("mic") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), HEARD], check=True, timeout=30)
    import wave

    with wave.open(str(raw)) as src:
        rate, frames = src.getframerate(), src.readframes(src.getnframes())
    speech = np.frombuffer(frames, dtype="<i2")
    pcm = np.concatenate([np.zeros(rate // 3, "<i2"), speech, np.zeros(rate * 5 // 2, "<i2")])
    out = raw.with_name("question.wav")
    with wave.open(str(out), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(rate)
        dst.writeframes(pcm.tobytes())
    return out


@pytest.fixture
async def browser(question_wav: Path) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={question_wav}",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def helper() -> Agent:
    return Agent(
        name="helper",
        instructions="You help people in their browser.",
        tools=[FunctionTool(lookup_order)],
        turn={"min_interruption_duration": 0.3},
    )


def other() -> Agent:
    return Agent(name="other", instructions="Another agent.")


@pytest.fixture
def errors() -> Iterator[list[str]]:
    found: list[str] = []
    yield found
    assert not found, f"the page threw: {found}"


async def test_a_typed_question_is_answered_with_tool_latency_and_events(
    make_env: EnvFactory, browser: object, errors: list[str]
) -> None:
    script = [
        FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "A7"})]),
        FakeReply(REPLY, token_delay=0.01),
    ]
    async with make_env(script, agents=[helper(), other()]) as env:
        page = await browser.new_page(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(env.twilio.base + "/")
        await page.wait_for_function(
            "document.querySelectorAll('#agent-select option').length === 2"
        )
        await page.fill("#message", "where is order A7?")
        await page.click("#send")
        bot = page.locator(".turn.bot .text", has_text=REPLY)
        await bot.wait_for(timeout=WAIT_MS)
        # With no `?transport=`, the page chose WebRTC where the server has aiortc.
        expected = "WebRTC" if importlib.util.find_spec("aiortc") else "WebSocket"
        assert await page.inner_text("#transport-name") == expected
        await page.locator(".turn.tool", has_text="lookup_order").wait_for(timeout=WAIT_MS)
        await page.locator("#latency-rows tr.typed").first.wait_for(timeout=WAIT_MS)
        assert "ms" in (await page.locator("#latency-rows tr.typed").first.inner_text())
        events = await page.locator("#events-list").inner_text()
        assert "lookup_order started" in events and "thinking" in events
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "typed-desktop.png"), full_page=True)

        async with page.expect_download() as info:
            await page.click("#export-json")
        download = await info.value
        exported = await asyncio.to_thread(Path(await download.path()).read_text)
        assert REPLY in exported and "where is order A7?" in exported

        # A reload resumes the conversation with its tool call shown.
        await page.reload()
        await page.fill("#message", "thanks")
        await page.click("#send")
        await page.locator(".turn.tool", has_text="lookup_order").wait_for(timeout=WAIT_MS)
        await page.locator(".turn.bot .text", has_text=REPLY).first.wait_for(timeout=WAIT_MS)


@pytest.mark.parametrize(("transport", "shown"), [("webrtc", "WebRTC"), ("ws", "WebSocket")])
async def test_a_spoken_question_is_answered_and_a_barge_in_strikes_out_the_unheard_rest(
    make_env: EnvFactory, browser: object, errors: list[str], transport: str, shown: str
) -> None:
    """Over each transport, forced (`?transport=webrtc` never falls back to the socket)."""
    if transport == "webrtc":
        pytest.importorskip("aiortc", reason="the webrtc extra is not installed")
    script = [FakeReply(LONG_REPLY, token_delay=0.005)] + [FakeReply(REPLY)] * 4
    async with make_env(script, agents=[helper()]) as env:
        page = await browser.new_page(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.add_init_script(KEEP_PEERS)
        await page.goto(f"{env.twilio.base}/?transport={transport}")
        await page.click("#talk")
        await page.locator("#transport-name", has_text=shown).wait_for(timeout=WAIT_MS)
        await page.locator(".turn.user .text", has_text=HEARD).first.wait_for(timeout=WAIT_MS)
        await page.locator(".turn.bot .text", has_text="The forecast").first.wait_for(
            timeout=WAIT_MS
        )
        await page.locator("#latency-rows tr.spoken").first.wait_for(timeout=WAIT_MS)
        if transport == "webrtc":  # the agent's voice arrived on the remote track, not silence
            async with asyncio.timeout(WAIT_MS / 1000):
                while await page.evaluate(RECEIVED_ENERGY) < 0.01:  # noqa: ASYNC110 (stats: no event)
                    await asyncio.sleep(0.1)
        row = await page.locator("#latency-rows tr.spoken").first.inner_text()
        assert row.count("ms") >= 3  # end of turn, transcript, first token, ... in ms
        level = await page.get_attribute("#level-bar", "data-level")
        assert level is not None  # the meter runs (its value depends on where the loop is)
        # The WAV loops: the question comes again while the long answer plays, and cuts it.
        await page.locator(".turn.bot.interrupted .unheard").first.wait_for(timeout=WAIT_MS)
        events = await page.locator("#events-list").inner_text()
        assert "transcribing" in events and "interrupted" in events
        # The words heard at the question's pause reached the page before its transcript.
        assert await page.locator("#events-list .event.interim", has_text=HEARD).count() > 0
        assert await page.locator("#events-list .event.clear").count() > 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"spoken-{transport}-desktop.png"))
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(
            path=str(SCREENSHOTS / f"spoken-{transport}-mobile.png"), full_page=True
        )


async def test_the_page_falls_back_to_the_socket_where_the_server_has_no_webrtc(
    make_env: EnvFactory, browser: object, errors: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "voxline.server.webrtc_routes", None)  # as without aiortc
    async with make_env([FakeReply(REPLY)], agents=[helper()]) as env:
        page = await browser.new_page(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(env.twilio.base + "/")
        await page.fill("#message", "hello?")
        await page.click("#send")
        await page.locator(".turn.bot .text", has_text=REPLY).wait_for(timeout=WAIT_MS)
        assert await page.inner_text("#transport-name") == "WebSocket"
        assert not await page.locator("#notice").is_visible()  # the fallback is silent
