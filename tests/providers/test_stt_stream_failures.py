"""What ends a streaming recognizer's stream, the same for each direct-socket provider against
its loopback fake: a refused key (an error not worth retrying), a provider error (with its
description or close code) and a socket dropped mid-stream."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import pytest

from tests.providers.stt_fakes import FakeAssemblyAI, FakeDeepgram, FakeSocketServer, mulaw_tone
from tests.providers.stt_streams import collect, send
from voxline.providers.stt.base import (
    LINEAR16_16K,
    MULAW_8K,
    StreamingSTT,
    StreamOptions,
    SttStreamError,
)

QUESTION = 5000
PHRASES = {QUESTION: "what time is it"}


@dataclass(frozen=True)
class Provider:
    """One provider's recognizer and fake, and what its failures say."""

    fake: Callable[..., FakeSocketServer]
    recognizer: Callable[[str], StreamingSTT]  # the fake's url -> the recognizer on it
    refused_format: StreamOptions
    provider_error: str  # what a provider error's message matches
    dropped: str  # what a dropped socket's message matches


def assemblyai(url: str) -> StreamingSTT:
    from voxline.providers.stt.assemblyai import AssemblyAISTT

    return AssemblyAISTT("universal-streaming", api_key="test-key", base_url=url)


def deepgram(url: str) -> StreamingSTT:
    from voxline.providers.stt.deepgram import DeepgramSTT  # needs deepgram-sdk

    return DeepgramSTT("nova-3", api_key="test-key", base_url=url)


PROVIDERS = [
    pytest.param(
        Provider(
            FakeAssemblyAI,
            assemblyai,
            StreamOptions(LINEAR16_16K),
            provider_error=r"the fake broke|3005",
            dropped=r"no close frame|failed",
        ),
        id="assemblyai",
    ),
    pytest.param(
        Provider(
            FakeDeepgram,
            deepgram,
            StreamOptions(MULAW_8K),
            provider_error="the fake broke",
            dropped=r"deepgram:nova-3: (the socket failed|closed)",
        ),
        id="deepgram",
        marks=pytest.mark.skipif(
            find_spec("deepgram") is None, reason="needs deepgram-sdk (the deepgram or dev extra)"
        ),
    ),
]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refused_key_is_not_worth_retrying(provider: Provider) -> None:
    async with provider.fake(PHRASES, api_key="another-key") as fake:
        stt = provider.recognizer(fake.url)
        with pytest.raises(SttStreamError, match="401") as refused:
            await stt.open_stream(provider.refused_format)
    assert refused.value.retryable is False


async def fail_mid_stream(provider: Provider, seconds: float, **fault: Any) -> SttStreamError:
    """Stream `seconds` of speech into a fake told to fail (`errors=` or `drops=`), and return
    the error that ends the stream (the test fails if none does)."""
    async with provider.fake(PHRASES, **fault) as fake:
        stream = await provider.recognizer(fake.url).open_stream(StreamOptions(MULAW_8K))
        send(stream, mulaw_tone(QUESTION, seconds))
        with pytest.raises(SttStreamError) as failed:
            await collect(stream)
        await stream.close()
    return failed.value


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_provider_error_ends_the_stream_with_its_description(provider: Provider) -> None:
    failed = await fail_mid_stream(provider, 0.5, errors={0: 0.2})
    assert re.search(provider.provider_error, str(failed))
    assert failed.retryable


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dropped_socket_ends_the_stream_with_an_error(provider: Provider) -> None:
    failed = await fail_mid_stream(provider, 1.0, drops={0: 0.3})
    assert re.search(provider.dropped, str(failed))
