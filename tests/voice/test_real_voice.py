"""The whole voice loop on the embedded models, in real time: a caller asks about the weather,
the agent calls its tool, and what the agent says aloud, heard back by Whisper, names the city.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.weather_tool import get_weather
from voxline import Agent
from voxline.audio import resample
from voxline.settings import Settings
from voxline.simulate import simulate_call
from voxline.voice.providers import SpeechProviders

from .speech import QUESTION, espeak

pytestmark = pytest.mark.slow


async def test_a_spoken_weather_question_is_answered_aloud_with_the_tool(tmp_path: Path) -> None:
    caller = espeak(QUESTION, tmp_path)
    pytest.importorskip("xllamacpp", reason="needs the local extra")
    pytest.importorskip("piper", reason="needs the piper extra")
    from voxline.providers.factory import create_stt, create_vad
    from voxline.providers.llm.local import create_local_llm
    from voxline.providers.tts.piper import create_piper_tts

    settings = Settings()  # the user's cache: the model is joined once per machine
    llm = create_local_llm(None, settings)
    speech = SpeechProviders(create_stt("local"), create_piper_tts(variation=0.0), create_vad())
    agent = Agent(
        name="weather",
        instructions="You are a weather line. Use get_weather, then answer in one short sentence.",
        tools=[get_weather],
    )
    result = await simulate_call(caller, agent, speech, settings=settings, llm=llm)

    assert any(
        name == "get_weather" and "paris" in arguments.lower()
        for name, arguments in result.tool_calls
    ), result.transcript
    [turn] = result.latencies
    assert turn.complete
    heard = await speech.stt.transcribe(resample(result.audio, result.sample_rate, 16000))
    # the tool's result (sunny, 22 degrees) is what was said aloud; Whisper may mishear a name
    spoken = heard.text.lower()
    assert "sunny" in spoken or "22" in spoken, (heard.text, result.transcript)
    # The reply was spoken after the question, not over it.
    voiced = np.flatnonzero(np.abs(result.audio) > 300) / result.sample_rate
    assert voiced[0] > caller.duration - 1.5
