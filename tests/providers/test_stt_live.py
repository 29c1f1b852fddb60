"""A call's recognition over hosted streams (`LiveTranscriber`) against the loopback fakes: the
phone's µ-law reaches the provider unchanged, a turn's words come back at its end, a socket that
drops mid-sentence is reconnected and hears the turn again from its start (no word lost or
doubled), a provider that refuses gives way to the next of the chain (streaming or batch), and
every failure reaches `on_failure`."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.providers.stt_fakes import FakeAssemblyAI, FakeDeepgram, frames, mulaw_tone, wait_for
from voxline.audio import mulaw_decode, resample
from voxline.providers.stt import live as live_module
from voxline.providers.stt.assemblyai import AssemblyAISTT
from voxline.providers.stt.base import PCM16, SttEvent, SttEventKind, SttStreamError, Transcript
from voxline.providers.stt.fallback import FallbackSTT
from voxline.providers.stt.live import LiveTranscriber

pytest.importorskip("deepgram", reason="needs deepgram-sdk (the deepgram or dev extra)")
from voxline.providers.stt.deepgram import DeepgramSTT

QUESTION = 5000
PHRASES = {QUESTION: "what time is it"}
CALL = mulaw_tone(0, 0.4) + mulaw_tone(QUESTION, 1.0) + mulaw_tone(0, 0.6)
ONSET = 0.4


class Recorder:
    def __init__(self) -> None:
        self.failures: list[tuple[Exception, str]] = []
        self.events: list[SttEvent] = []

    def failed(self, error: Exception, message: str) -> None:
        self.failures.append((error, message))

    def heard(self, event: SttEvent) -> None:
        self.events.append(event)


class BatchSTT:
    label = "batch"
    sample_rate = 16000

    def __init__(self) -> None:
        self.heard: list[float] = []

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        self.heard.append(len(pcm) / 16000)
        return Transcript("from the batch recognizer")


def transcriber(stt: object, recorder: Recorder) -> LiveTranscriber:
    return LiveTranscriber(
        stt,  # type: ignore[arg-type]
        language="en",
        on_event=recorder.heard,
        on_failure=recorder.failed,
    )


async def speak(live: LiveTranscriber, mulaw: bytes = CALL) -> PCM16:
    """The listener's part: each 20 ms frame as 16 kHz PCM plus its µ-law, at 4x real time;
    the turn starts at `ONSET`. Returns the turn's PCM."""
    turn: list[PCM16] = []
    for index, frame in enumerate(frames(mulaw, 160)):
        pcm = resample(mulaw_decode(frame), 8000, 16000)
        live.push(pcm, frame)
        if index * 0.02 >= ONSET:
            if not turn:
                live.turn_started(ONSET)
            turn.append(pcm)
        await asyncio.sleep(0.005)
    return np.concatenate(turn)


async def test_phone_audio_goes_as_is_and_the_turn_comes_back_whole() -> None:
    recorder = Recorder()
    async with FakeDeepgram(PHRASES) as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        pcm = await speak(live)
        transcript = await live.finish_turn(pcm)
        await live.aclose()
        conn = fake.connections[0]
    assert transcript.text == "what time is it"
    assert bytes(conn.audio) == CALL
    assert conn.query["encoding"] == "mulaw" and conn.query["endpointing"] == "300"
    assert [c["type"] for c in conn.controls][-1] == "CloseStream"
    assert not recorder.failures
    assert SttEventKind.INTERIM in {e.kind for e in recorder.events}


async def test_the_providers_end_of_turn_is_seen_and_reset_by_the_next_turn() -> None:
    recorder = Recorder()
    async with FakeDeepgram(PHRASES) as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        await speak(live)
        await wait_for(lambda: live.provider_ended)
        assert live.text_so_far() == "what time is it"
        live.turn_started(2.0)
        assert not live.provider_ended
        await live.aclose()


async def test_a_socket_dropped_mid_sentence_is_reconnected_and_hears_the_turn_again() -> None:
    recorder = Recorder()
    async with FakeDeepgram(PHRASES, drops={0: 0.9}) as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        pcm = await speak(live)
        transcript = await live.finish_turn(pcm)
        await live.aclose()
        first, second = fake.connections
    assert transcript.text == "what time is it"  # once: the dropped socket's words forgotten
    assert [message for _, message in recorder.failures] == [
        "speech recognizer deepgram:nova-3 dropped: reconnecting"
    ]
    assert CALL.startswith(bytes(first.audio))
    assert bytes(second.audio) == CALL  # the re-send reaches back before the turn's start


async def test_a_refusing_provider_gives_way_to_the_next_streaming_one() -> None:
    recorder = Recorder()
    async with (
        FakeDeepgram(PHRASES, api_key="another-key") as deepgram,
        FakeAssemblyAI({QUESTION: "my number is four one five"}) as assembly,
    ):
        chain = FallbackSTT(
            [
                DeepgramSTT("nova-3", api_key="test-key", base_url=deepgram.url),
                AssemblyAISTT("universal-streaming", api_key="test-key", base_url=assembly.url),
            ]
        )
        live = transcriber(chain, recorder)
        pcm = await speak(live)
        transcript = await live.finish_turn(pcm)
        await live.aclose()
        assert deepgram.attempts == 1  # a refused key is not tried twice
        assert bytes(assembly.connections[0].audio).startswith(CALL[:8000])
    assert transcript.text == "my number is four one five"
    [(error, message)] = recorder.failures
    assert isinstance(error, SttStreamError) and not error.retryable
    assert message == (
        "speech recognizer deepgram:nova-3 could not connect: "
        "falling back to assemblyai:universal-streaming"
    )


async def test_an_unreachable_provider_is_retried_then_a_batch_one_takes_over() -> None:
    recorder = Recorder()
    batch = BatchSTT()
    unreachable = DeepgramSTT("nova-3", api_key="test-key", base_url="ws://127.0.0.1:9")
    live = transcriber(FallbackSTT([unreachable, batch]), recorder)
    live.push(np.zeros(320, np.int16), bytes([0xFF]) * 160)
    await wait_for(lambda: live.batch is not None)
    assert live.batch is batch
    assert [message for _, message in recorder.failures] == [
        "speech recognizer deepgram:nova-3 could not connect: reconnecting",
        "speech recognizer deepgram:nova-3 could not connect: falling back to batch",
    ]
    transcript = await live.finish_turn(np.ones(16000, np.int16))
    assert transcript.text == "from the batch recognizer"
    await live.aclose()


async def test_with_nothing_left_the_turn_fails_loudly() -> None:
    recorder = Recorder()
    async with FakeDeepgram(PHRASES, api_key="another-key") as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        pcm = await speak(live, CALL[:8000])
        with pytest.raises(SttStreamError, match="no speech recognizer is available"):
            await live.finish_turn(pcm)
        await live.aclose()
    assert recorder.failures[-1][1] == (
        "no speech recognizer is left for this call: turns cannot be transcribed"
    )


async def test_an_unanswered_finalize_falls_back_to_the_latest_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_module, "FINALIZE_TIMEOUT", 0.2)
    recorder = Recorder()
    async with FakeDeepgram(PHRASES, answer_finalize=False) as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        pcm = await speak(live, mulaw_tone(0, 0.4) + mulaw_tone(QUESTION, 0.5))  # no pause
        await wait_for(lambda: live.text_so_far().startswith("what time"))
        transcript = await live.finish_turn(pcm)
        await live.aclose()
        assert fake.connections[0].of("Finalize")
    assert transcript.text.startswith("what time")


async def test_a_turn_that_starts_while_the_last_one_is_finalized_keeps_its_own_words() -> None:
    recorder = Recorder()
    async with FakeDeepgram({QUESTION: "what time is it", 9000: "and on sunday"}) as fake:
        live = transcriber(DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url), recorder)
        first = await speak(
            live, mulaw_tone(0, 0.4) + mulaw_tone(QUESTION, 1.0) + mulaw_tone(0, 0.4)
        )
        await wait_for(lambda: live.text_so_far() == "what time is it")
        ending = asyncio.create_task(live.finish_turn(first))
        live.turn_started(1.9)  # the caller goes on before the first turn's words are taken
        for frame in frames(mulaw_tone(9000, 0.6), 160):
            live.push(resample(mulaw_decode(frame), 8000, 16000), frame)
            await asyncio.sleep(0.005)
        assert (await ending).text == "what time is it"
        await wait_for(lambda: live.text_so_far().startswith("and on"))
        assert "what" not in live.text_so_far()
        await live.aclose()
