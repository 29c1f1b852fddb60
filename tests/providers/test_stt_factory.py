"""STT spec strings: hosted recognizers take their keys and base URLs from settings, a missing
key or SDK is one actionable line, `a,b` is a fallback chain, and `voxline doctor` shows each
recognizer of the chain with whether its key is set (never the key)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from voxline.doctor import collect_report, render
from voxline.providers.factory import create_stt
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt.assemblyai import AssemblyAISTT
from voxline.providers.stt.base import PCM16, StreamingSTT, Transcript
from voxline.providers.stt.fallback import FallbackSTT
from voxline.providers.stt.openai import OpenAISTT
from voxline.settings import Settings

KEYS = Settings(
    deepgram_api_key=SecretStr("dg-secret-value"),
    assemblyai_api_key=SecretStr("aai-secret-value"),
    openai_api_key=SecretStr("oa-secret-value"),
    deepgram_base_url="ws://127.0.0.1:9",
)


def test_hosted_specs_make_their_providers() -> None:
    pytest.importorskip("deepgram")
    from voxline.providers.stt.deepgram import DeepgramSTT

    nova = create_stt("deepgram:nova-3", KEYS)
    assert isinstance(nova, DeepgramSTT) and isinstance(nova, StreamingSTT)
    assert nova.base_url == "ws://127.0.0.1:9" and not nova.flux
    flux = create_stt("deepgram:flux-general-en", KEYS)
    assert isinstance(flux, DeepgramSTT) and flux.flux
    assembly = create_stt("assemblyai:universal-streaming", KEYS)
    assert isinstance(assembly, AssemblyAISTT) and assembly.base_url.startswith("wss://")
    whisper = create_stt("openai:whisper-1", KEYS)
    assert isinstance(whisper, OpenAISTT) and not isinstance(whisper, StreamingSTT)


def test_keys_and_base_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-env")
    monkeypatch.setenv("VOXLINE_ASSEMBLYAI_API_KEY", "from-env-too")
    monkeypatch.setenv("VOXLINE_ASSEMBLYAI_BASE_URL", "https://streaming.eu.assemblyai.com")
    settings = Settings()
    assert settings.deepgram_api_key is not None
    assembly = create_stt("assemblyai:universal-streaming")
    assert isinstance(assembly, AssemblyAISTT)
    assert assembly.base_url == "wss://streaming.eu.assemblyai.com"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("deepgram:nova-3", "VOXLINE_DEEPGRAM_API_KEY"),
        ("assemblyai:universal-streaming", "VOXLINE_ASSEMBLYAI_API_KEY"),
        ("openai:gpt-4o-transcribe", "OPENAI_API_KEY"),
        ("assemblyai:nano", "unknown AssemblyAI streaming model"),
        ("deepgram", "needs a model"),
        ("rev:ai", "unknown STT provider"),
        ("deepgram:nova-3,", "empty provider"),
    ],
)
def test_what_is_wrong_is_one_line(spec: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DEEPGRAM_API_KEY", "ASSEMBLYAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"VOXLINE_{variable}", raising=False)
    with pytest.raises(ConfigurationError, match=says) as error:
        create_stt(spec, Settings(_env_file=None))  # type: ignore[call-arg]
    assert "\n" not in str(error.value)


class Broken:
    label = "broken"
    sample_rate = 16000

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        raise RuntimeError("down")


class Working:
    label = "working"
    sample_rate = 16000

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        return Transcript("hello")


async def test_a_chain_transcribes_with_the_first_that_works() -> None:
    import numpy as np

    chain = FallbackSTT([Broken(), Working()])
    assert (await chain.transcribe(np.ones(1600, np.int16))).text == "hello"
    with pytest.raises(RuntimeError, match="down"):
        await FallbackSTT([Broken()]).transcribe(np.ones(1600, np.int16))
    assert create_stt("assemblyai:universal-streaming,openai:whisper-1", KEYS).label == (
        "assemblyai:universal-streaming,openai:whisper-1"
    )


def test_a_chain_leaves_out_a_recognizer_without_its_key() -> None:
    settings = KEYS.model_copy(update={"deepgram_api_key": None})
    alone = create_stt("deepgram:nova-3,openai:whisper-1", settings)
    assert isinstance(alone, OpenAISTT)  # Deepgram left out, with one warning
    chain = create_stt("deepgram:nova-3,assemblyai:universal-streaming,openai:whisper-1", KEYS)
    assert isinstance(chain, FallbackSTT) and len(chain.providers) == 3
    nobody = settings.model_copy(update={"assemblyai_api_key": None})
    with pytest.raises(ConfigurationError, match="VOXLINE_DEEPGRAM_API_KEY"):
        create_stt("deepgram:nova-3,assemblyai:universal-streaming", nobody)
    with pytest.raises(ConfigurationError, match="unknown AssemblyAI"):  # a typo is not skipped
        create_stt("assemblyai:nano,openai:whisper-1", KEYS)


def test_doctor_lists_each_recognizer_and_whether_its_key_is_set() -> None:
    settings = KEYS.model_copy(
        update={"stt": "deepgram:nova-3,assemblyai:universal-streaming", "assemblyai_api_key": None}
    )
    pytest.importorskip("deepgram")
    report = [row for row in collect_report(settings, load=False) if row.role == "stt"]
    assert [(row.provider, row.key_present) for row in report] == [
        ("deepgram:nova-3", True),
        ("assemblyai:universal-streaming", False),
    ]
    text = render(collect_report(settings, load=False))
    assert "key set (DEEPGRAM_API_KEY), at 127.0.0.1:9" in text
    assert (
        "fix stt: assemblyai:universal-streaming needs an API key: set ASSEMBLYAI_API_KEY" in text
    )
    assert "secret-value" not in text
