"""Hosted voices chosen by spec string, keys and base URLs from settings, and `voxline doctor`
showing each configured voice with whether its key is set (never the key)."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from voxline.agents.spec import AgentSpec
from voxline.doctor import collect_report, render
from voxline.providers.factory import create_tts
from voxline.providers.llm.base import ConfigurationError, MissingKeyError
from voxline.providers.tts.base import OutputChannel, for_channel
from voxline.providers.tts.cartesia import CartesiaTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS
from voxline.providers.tts.fallback import FallbackTTS
from voxline.providers.tts.openai_speech import OpenAISpeechTTS
from voxline.settings import Settings
from voxline.voice.providers import tts_spec_for

KEYS = {
    "elevenlabs_api_key": "el-secret-key",
    "cartesia_api_key": "ca-secret-key",
    "openai_api_key": "oa-secret-key",
}


def keyed(**values: object) -> Settings:
    return Settings(**(KEYS | values))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ELEVENLABS_API_KEY", "CARTESIA_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"VOXLINE_{name}", raising=False)


def test_specs_pick_the_hosted_voices_with_their_keys_models_and_base_urls() -> None:
    settings = keyed(
        elevenlabs_base_url="http://127.0.0.1:9/",
        cartesia_base_url="https://proxy.example.test/cartesia",
        openai_base_url="http://127.0.0.1:9/v1",
    )
    eleven = create_tts("elevenlabs:voice-1", settings)
    assert isinstance(eleven, ElevenLabsTTS) and eleven.label == "elevenlabs:voice-1"
    assert eleven.url().startswith("ws://127.0.0.1:9/v1/text-to-speech/voice-1/stream-input?")
    assert "model_id=eleven_flash_v2_5" in eleven.url()
    turbo = create_tts("elevenlabs:v#eleven_turbo_v2_5", settings)
    assert isinstance(turbo, ElevenLabsTTS) and "model_id=eleven_turbo_v2_5" in turbo.url()
    cartesia = create_tts("cartesia:voice-2#sonic-3.5", settings)
    assert isinstance(cartesia, CartesiaTTS) and cartesia.model == "sonic-3.5"
    assert cartesia._connection.url == "wss://proxy.example.test/cartesia/tts/websocket"
    speech = create_tts("openai:gpt-4o-mini-tts", settings)
    assert isinstance(speech, OpenAISpeechTTS) and speech.label == "openai:gpt-4o-mini-tts"
    assert str(speech._client.base_url) == "http://127.0.0.1:9/v1/"
    assert create_tts("openai", settings).label == "openai:gpt-4o-mini-tts"


def test_a_comma_separated_spec_is_a_fallback_chain_and_adapts_to_the_channel() -> None:
    chain = create_tts("elevenlabs:voice-1, cartesia:voice-2", keyed())
    assert isinstance(chain, FallbackTTS)
    assert chain.label == "fallback(elevenlabs:voice-1,cartesia:voice-2)"
    phone = for_channel(chain, OutputChannel(8000))
    assert isinstance(phone, FallbackTTS) and phone.sample_rate == 8000
    assert isinstance(phone.voices[0], ElevenLabsTTS)
    assert "output_format=ulaw_8000" in phone.voices[0].url()


def test_a_missing_key_or_voice_is_one_line_naming_what_to_set() -> None:
    with pytest.raises(MissingKeyError, match="set ELEVENLABS_API_KEY"):
        create_tts("elevenlabs:voice-1", Settings())
    with pytest.raises(ConfigurationError, match="set CARTESIA_API_KEY"):
        create_tts("cartesia:voice-2,openai:gpt-4o-mini-tts", Settings())  # no voice has a key
    with pytest.raises(ConfigurationError, match="set OPENAI_API_KEY"):
        create_tts("openai:gpt-4o-mini-tts", Settings())
    with pytest.raises(ConfigurationError, match="needs a voice id"):
        create_tts("elevenlabs", keyed())
    with pytest.raises(ConfigurationError, match="empty TTS spec"):
        create_tts("elevenlabs:a,", keyed())
    with pytest.raises(ConfigurationError, match="cartesia:VOICE"):
        create_tts("polly:joanna", keyed())


def test_in_a_chain_a_voice_without_a_key_is_skipped_with_a_warning_while_another_remains() -> None:
    with capture_logs() as logs:
        voice = create_tts("cartesia:voice-2,elevenlabs:voice-1", keyed(cartesia_api_key=None))
    assert isinstance(voice, ElevenLabsTTS)
    [warning] = [entry for entry in logs if "skipped" in entry["event"]]
    assert "set CARTESIA_API_KEY" in warning["event"] and warning["log_level"] == "warning"
    with pytest.raises(ConfigurationError, match="needs a voice id"):  # not hidden: a mistake
        create_tts("elevenlabs,cartesia:voice-2", keyed())


def test_keys_come_from_the_vendors_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", "from-env")
    monkeypatch.setenv("VOXLINE_CARTESIA_BASE_URL", "ws://127.0.0.1:7")
    settings = Settings()
    assert settings.elevenlabs_api_key is not None
    assert settings.elevenlabs_api_key.get_secret_value() == "from-env"
    assert settings.cartesia_base_url == "ws://127.0.0.1:7"


def test_the_agents_voice_names_the_hosted_voice_when_the_spec_does_not() -> None:
    spec = AgentSpec(name="a", tts="elevenlabs", voice="voice-9")
    assert create_tts(tts_spec_for(spec), keyed()).label == "elevenlabs:voice-9"


def test_doctor_lists_each_voice_and_whether_its_key_is_set_never_the_key() -> None:
    settings = keyed(tts="elevenlabs:voice-1,cartesia:voice-2", cartesia_api_key=None)
    tts = [item for item in collect_report(settings, load=False) if item.role == "tts"]
    assert [(item.provider, item.key_present) for item in tts] == [
        ("elevenlabs:voice-1", True),
        ("cartesia:voice-2", False),
    ]
    text = render(collect_report(settings, load=False))
    assert "elevenlabs:voice-1, key set (ELEVENLABS_API_KEY)" in text
    assert "fix tts: cartesia:voice-2 needs an API key: set CARTESIA_API_KEY" in text
    assert all(secret not in text for secret in KEYS.values())


def test_doctor_shows_a_bad_hosted_spec_as_a_fix() -> None:
    report = collect_report(keyed(tts="elevenlabs"), load=False)
    [tts] = [item for item in report if item.role == "tts"]
    assert tts.model_present is False and "needs a voice id" in tts.detail
