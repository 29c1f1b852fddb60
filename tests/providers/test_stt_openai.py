"""voxline's OpenAI recognizer (the official SDK) against a loopback fake of the transcription
endpoint: one multipart WAV per utterance, the model and language as form fields, the key as a
bearer token; silence never leaves; an HTTP error is the provider's failure."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.providers.stt_fakes import FakeOpenAI, tone
from tests.server.twilio_emulator import running
from voxline.providers.stt.openai import create_openai_stt
from voxline.settings import Settings

PHRASES = {5000: "what is the capital of france"}


def settings(base: str) -> Settings:
    return Settings(openai_api_key=SecretStr("test-key"), openai_base_url=f"{base}/v1")


async def test_an_utterance_is_one_request_with_its_wav() -> None:
    fake = FakeOpenAI(PHRASES)
    async with running(fake.app()) as (base, _):
        stt = create_openai_stt("gpt-4o-transcribe", settings(base))
        heard = await stt.transcribe(tone(5000, 0.8), language="en")
        silent = await stt.transcribe(tone(0, 0.5))
    assert heard.text == "what is the capital of france"
    assert heard.audio_duration == pytest.approx(0.8)
    assert silent.text == ""
    [request] = fake.requests  # the silence was never sent
    assert request["model"] == "gpt-4o-transcribe" and request["language"] == "en"
    assert request["response_format"] == "json"
    assert request["seconds"] == pytest.approx(0.8)
    assert stt.label == "openai:gpt-4o-transcribe"


async def test_a_failing_endpoint_raises_for_the_fallback_to_catch() -> None:
    import openai

    fake = FakeOpenAI(PHRASES, fail=500)
    async with running(fake.app()) as (base, _):
        stt = create_openai_stt("whisper-1", settings(base))
        with pytest.raises(openai.APIStatusError):
            await stt.transcribe(tone(5000, 0.5))
    assert len(fake.requests) == 2  # one retry, then the error


async def test_a_wrong_key_is_refused() -> None:
    import openai

    fake = FakeOpenAI(PHRASES, api_key="another-key")
    async with running(fake.app()) as (base, _):
        stt = create_openai_stt("whisper-1", settings(base))
        with pytest.raises(openai.AuthenticationError):
            await stt.transcribe(tone(5000, 0.5))
