"""Real local models, loaded once per test session (each load costs seconds on a small CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxline.settings import Settings


@pytest.fixture(scope="session")
def local_settings() -> Settings:
    """The user's real cache dir: the 1.1 GB model is joined once per machine, not per run."""
    return Settings()


@pytest.fixture(scope="session")
def llm(local_settings: Settings) -> Iterator[object]:
    from voxline.providers.llm.base import ConfigurationError
    from voxline.providers.llm.local import create_local_llm

    try:
        model = create_local_llm(None, local_settings)
    except ConfigurationError as exc:  # the `local` extra (runtime or weights) is not installed
        pytest.skip(str(exc))
    model.load()
    yield model


@pytest.fixture(scope="session")
def stt() -> object:
    from voxline.providers.factory import create_stt

    return create_stt("whisper:tiny.en")


@pytest.fixture(scope="session")
def tts() -> object:
    """The bundled voice with its random prosody noise off, so every run hears the same audio
    (with the trained noise, tiny.en sometimes hears "Paris" as "pairs")."""
    from voxline.providers.tts.piper import create_piper_tts

    return create_piper_tts(variation=0.0)
