"""Local TTS, STT and VAD for real: a spoken round trip and speech/silence detection."""

import re

import numpy as np
import pytest
import soxr

from voxline.providers.factory import create_vad
from voxline.providers.stt.whisper import WhisperSTT
from voxline.providers.tts.piper import PiperTTS

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning.",
    "My flight leaves at seven thirty from gate twelve.",
    "Could you check the weather in Paris?",
]
NUMBER_WORDS = {"seven": "7", "thirty": "30", "twelve": "12", "730": "7 30"}


def words(text: str) -> list[str]:
    tokens = re.sub(r"[^a-z0-9 ]", " ", text.lower().replace(":", " ")).split()
    return " ".join(NUMBER_WORDS.get(token, token) for token in tokens).split()


async def speak(tts: PiperTTS, text: str) -> np.ndarray:
    chunks = [chunk async for chunk in tts.synthesize(text)]
    assert chunks and all(chunk.sample_rate == tts.sample_rate for chunk in chunks)
    assert " ".join(chunk.text for chunk in chunks) == text
    audio = np.concatenate([chunk.pcm for chunk in chunks])
    resampled = soxr.resample(audio, tts.sample_rate, 16000)
    return np.asarray(resampled, dtype=np.int16)


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_round_trip_tts_to_stt_keeps_the_words(
    tts: PiperTTS, stt: WhisperSTT, sentence: str
) -> None:
    transcript = await stt.transcribe(await speak(tts, sentence))
    assert words(transcript.text) == words(sentence)
    assert transcript.segments and transcript.segments[-1].end <= transcript.audio_duration + 0.5


async def test_long_text_streams_one_chunk_per_sentence_or_clause(tts: PiperTTS) -> None:
    text = (
        "Hello there. When the storm finally passed over the quiet valley late that night, "
        "the farmers walked out to their fields, counted the broken fences, and began to "
        "repair every one of them before the sun came up again."
    )
    chunks = [chunk async for chunk in tts.synthesize(text)]
    assert chunks[0].text == "Hello there."
    assert len(chunks) >= 3
    assert all(chunk.duration > 0.2 for chunk in chunks)


async def test_vad_hears_speech_and_not_silence_or_noise(tts: PiperTTS) -> None:
    vad = create_vad("silero")
    speech = await speak(tts, SENTENCES[0])
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.01, 16000) * 32767).astype(np.int16)
    silence = np.zeros(16000, dtype=np.int16)

    def probabilities(audio: np.ndarray) -> list[float]:
        stream = vad.stream()
        n = len(audio) // vad.chunk_samples * vad.chunk_samples
        return [stream.process(c) for c in audio[:n].reshape(-1, vad.chunk_samples)]

    assert max(probabilities(silence)) < 0.2
    assert max(probabilities(noise)) < 0.3
    speech_probs = probabilities(speech)
    assert np.mean(np.array(speech_probs) > 0.5) > 0.5


def test_vad_streams_keep_separate_state() -> None:
    vad = create_vad("local")
    one, two = vad.stream(), vad.stream()
    rng = np.random.default_rng(1)
    chunk = (rng.normal(0, 0.3, vad.chunk_samples)).astype(np.float32)
    first = one.process(chunk)
    for _ in range(5):
        one.process(chunk)
    assert two.process(chunk) == pytest.approx(first)
    with pytest.raises(ValueError):
        one.process(np.zeros(100, dtype=np.int16))
