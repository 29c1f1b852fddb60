"""`voxline talk` / `voxline devices` on a machine without audio: one clear line, exit code 2."""

from __future__ import annotations

import importlib.abc
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from voxline.channels.local_audio import AudioDeviceError, LocalAudioTransport, list_devices

ROOT = Path(__file__).resolve().parents[2]


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes `import sounddevice` fail the way a machine without it (or PortAudio) does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if name == "sounddevice":
            raise self.error


@pytest.fixture
def refuse_sounddevice(monkeypatch: pytest.MonkeyPatch) -> Callable[[Exception], None]:
    def install(error: Exception) -> None:
        monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
        monkeypatch.setattr(sys, "meta_path", [_Refuse(error), *sys.meta_path])

    return install


def test_missing_portaudio_is_one_actionable_line(
    refuse_sounddevice: Callable[[Exception], None],
) -> None:
    refuse_sounddevice(OSError("PortAudio library not found"))
    with pytest.raises(AudioDeviceError, match=r"PortAudio is not available.*libportaudio2"):
        list_devices()
    with pytest.raises(AudioDeviceError, match="PortAudio"):
        LocalAudioTransport()


def test_missing_sounddevice_names_the_extra(
    refuse_sounddevice: Callable[[Exception], None],
) -> None:
    refuse_sounddevice(ImportError("No module named 'sounddevice'"))
    with pytest.raises(AudioDeviceError, match=r"pip install 'voxline\[voice\]'"):
        list_devices()


def _has_audio() -> bool:
    try:
        return any(d.inputs for d in list_devices()) and any(d.outputs for d in list_devices())
    except AudioDeviceError:
        return False


@pytest.mark.parametrize("command", [["devices"], ["talk", "--llm", "fake"]])
def test_commands_fail_cleanly_without_audio(command: list[str]) -> None:
    if _has_audio():
        pytest.skip("this machine has audio devices")
    done = subprocess.run(
        [sys.executable, "-m", "voxline.cli", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
