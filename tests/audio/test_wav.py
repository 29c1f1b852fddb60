"""WAV reading across rates, widths, layouts, and the corrupt files it must refuse."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voxline.audio.codecs import AudioFormatError, mulaw_encode
from voxline.audio.wav import read_wav, write_wav

TONE = (np.sin(np.arange(800) * 2 * np.pi / 40) * 12000).astype(np.int16)


def stdlib_wav(raw: bytes, *, channels: int, width: int, rate: int) -> bytes:
    """A WAV written by the standard library, an implementation independent of ours."""
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(raw)
    return out.getvalue()


def riff(
    data: bytes,
    *,
    tag: int,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    extensible: bool = False,
    before_data: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits
    )
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHIH", 22, bits, 0, tag) + guid_tail
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 44100, 48000])
def test_pcm16_round_trip_at_common_rates(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, TONE, rate)
    frame = read_wav(path)
    assert frame.sample_rate == rate
    np.testing.assert_array_equal(frame.pcm, TONE)


def test_stereo_is_averaged_to_mono() -> None:
    left = np.full(100, 1000, dtype=np.int16)
    right = np.full(100, 3000, dtype=np.int16)
    both = np.stack([left, right], axis=1).reshape(-1)
    frame = read_wav(stdlib_wav(both.tobytes(), channels=2, width=2, rate=44100))
    assert frame.sample_rate == 44100
    assert frame.pcm.tolist() == [2000] * 100


def test_8_bit_unsigned_pcm() -> None:
    raw = bytes([128, 255, 0, 192])
    assert read_wav(stdlib_wav(raw, channels=1, width=1, rate=8000)).pcm.tolist() == [
        0,
        32512,
        -32768,
        16384,
    ]


def test_24_and_32_bit_pcm_keep_the_top_16_bits() -> None:
    values = TONE.astype(np.int32)
    raw24 = b"".join(int(v << 8).to_bytes(3, "little", signed=True) for v in values)
    raw32 = (values << 16).astype("<i4").tobytes()
    for raw, width in ((raw24, 3), (raw32, 4)):
        frame = read_wav(stdlib_wav(raw, channels=1, width=width, rate=48000))
        np.testing.assert_array_equal(frame.pcm, TONE)


def test_extensible_24_bit_stereo() -> None:
    values = TONE.astype(np.int32)
    raw = b"".join(int(v << 8).to_bytes(3, "little", signed=True) * 2 for v in values)
    frame = read_wav(riff(raw, tag=1, channels=2, bits=24, rate=96000, extensible=True))
    assert frame.sample_rate == 96000
    np.testing.assert_array_equal(frame.pcm, TONE)


def test_float_wav_is_scaled_and_clipped() -> None:
    floats = np.array([0.0, 0.5, -1.0, 2.0, np.nan], dtype="<f4")
    frame = read_wav(riff(floats.tobytes(), tag=3, bits=32))
    assert frame.pcm.tolist() == [0, 16384, -32767, 32767, 0]


def test_mulaw_wav_decodes_like_telephony_audio() -> None:
    frame = read_wav(riff(mulaw_encode(TONE), tag=7, bits=8, rate=8000))
    assert np.abs(frame.pcm.astype(int) - TONE).max() < 400


def test_chunks_before_data_are_skipped_including_odd_sized_ones() -> None:
    listing = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # padded to even length
    frame = read_wav(riff(TONE.tobytes(), tag=1, before_data=listing))
    np.testing.assert_array_equal(frame.pcm, TONE)


def test_a_streamed_size_reads_to_the_end_of_the_file() -> None:
    frame = read_wav(riff(TONE.tobytes(), tag=1, data_size=0xFFFFFFFF))
    np.testing.assert_array_equal(frame.pcm, TONE)


def test_paths_bytes_and_file_objects_are_all_accepted(tmp_path: Path) -> None:
    blob = stdlib_wav(TONE.tobytes(), channels=1, width=2, rate=16000)
    path = tmp_path / "a.wav"
    path.write_bytes(blob)
    for source in (path, str(path), blob, bytearray(blob), io.BytesIO(blob)):
        np.testing.assert_array_equal(read_wav(source).pcm, TONE)


def test_write_wav_produces_a_standard_file_and_refuses_other_dtypes() -> None:
    out = io.BytesIO()
    write_wav(out, TONE, 22050)
    with wave.open(io.BytesIO(out.getvalue())) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (
            1,
            2,
            22050,
        )
    with pytest.raises(TypeError):
        write_wav(io.BytesIO(), TONE.astype(np.float32), 16000)


GOOD = riff(TONE.tobytes(), tag=1)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "not a WAV file"),
        (b"ID3\x04\x00" + bytes(100), "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a WAV file"),
        (GOOD[:30], "ends inside its fmt chunk"),
        (GOOD[:36], "no data chunk"),
        (GOOD[:-101], "truncated WAV file: the data chunk declares 1600 bytes but only 1499"),
        (riff(TONE.tobytes()[:-1], tag=1), "not a whole number of 2-byte frames"),
        (riff(b"\x00" * 10, tag=6, bits=8), "unsupported WAV encoding: A-law"),
        (riff(b"\x00" * 10, tag=2, bits=4), "unsupported WAV encoding: MS ADPCM"),
        (riff(b"\x00" * 12, tag=1, bits=12), "unsupported WAV sample size: 12-bit"),
        (riff(b"\x00" * 10, tag=1, channels=0), "0 channels"),
        (
            b"RIFF\x24\x00\x00\x00WAVEdata\x04\x00\x00\x00\x00\x00\x00\x00",
            "data chunk comes before fmt",
        ),
    ],
)
def test_corrupt_files_are_rejected_with_a_reason(blob: bytes, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        read_wav(blob)


def test_a_wrong_block_align_is_corrupt() -> None:
    blob = bytearray(GOOD)
    blob[32:34] = struct.pack("<H", 3)  # block align field of the fmt chunk
    with pytest.raises(AudioFormatError, match="block align 3"):
        read_wav(bytes(blob))
