"""`voxline doctor` as an operator runs it, with hosted speech configured in the environment:
a row per configured recognizer and voice, whether each key is set and by which variable, where
an overridden base URL points, a fix line for each missing key, and no key anywhere in what it
prints (its output or its logs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRETS = {
    "VOXLINE_DEEPGRAM_API_KEY": "dg-secret-0123456789",
    "ELEVENLABS_API_KEY": "el-secret-0123456789",
    "OPENAI_API_KEY": "sk-secret-0123456789",
}


def run_doctor(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """`voxline doctor --no-load` in an empty directory (no `.env`), with only `environment`
    besides what a process needs to start."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "voxline.cli", "doctor", "--no-load"],
        cwd=tmp_path,
        env=keep | {"XDG_DATA_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)} | environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_doctor_shows_each_hosted_provider_and_its_key_never_the_key(tmp_path: Path) -> None:
    pytest.importorskip("deepgram", reason="needs deepgram-sdk (the deepgram or dev extra)")
    done = run_doctor(
        tmp_path,
        VOXLINE_STT="deepgram:nova-3,assemblyai:universal-streaming,local",
        VOXLINE_TTS="elevenlabs:voice-1,cartesia:voice-2,openai:gpt-4o-mini-tts",
        VOXLINE_DEEPGRAM_BASE_URL="ws://127.0.0.1:9",
        VOXLINE_ELEVENLABS_BASE_URL="http://127.0.0.1:7",
        VOXLINE_LOG_LEVEL="DEBUG",
        **SECRETS,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        (line.split()[0], line.split()[1]): line
        for line in done.stdout.splitlines()
        if line.startswith(("stt ", "tts "))
    }
    assert rows[("stt", "deepgram:nova-3")].endswith(
        "deepgram:nova-3, key set (DEEPGRAM_API_KEY), at 127.0.0.1:9"
    )
    assert "needs an API key" in rows[("stt", "assemblyai:universal-streaming")]
    assert ("stt", "local") in rows
    assert rows[("tts", "elevenlabs:voice-1")].endswith(
        "elevenlabs:voice-1, key set (ELEVENLABS_API_KEY), at 127.0.0.1:7"
    )
    assert "needs an API key" in rows[("tts", "cartesia:voice-2")]
    assert rows[("tts", "openai:gpt-4o-mini-tts")].endswith(
        "openai:gpt-4o-mini-tts, key set (OPENAI_API_KEY)"
    )
    fixes = [line for line in done.stdout.splitlines() if line.startswith("fix ")]
    assert fixes == [
        "fix stt: assemblyai:universal-streaming needs an API key: set ASSEMBLYAI_API_KEY",
        "fix tts: cartesia:voice-2 needs an API key: set CARTESIA_API_KEY",
    ]
    for secret in SECRETS.values():
        assert secret not in done.stdout and secret not in done.stderr
