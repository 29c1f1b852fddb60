"""G.711 mu-law against the standard's values and error bounds; PCM16 byte helpers."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.audio.codecs import (
    AudioFormatError,
    mulaw_decode,
    mulaw_encode,
    pcm16_from_bytes,
    pcm16_to_bytes,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


@pytest.mark.parametrize(
    ("sample", "code"),
    [(0, 0xFF), (-1, 0x7F), (1, 0xFF), (8, 0xFE), (-8, 0x7E), (32767, 0x80), (-32768, 0x00)],
)
def test_known_encodings(sample: int, code: int) -> None:
    assert mulaw_encode(np.array([sample], dtype=np.int16)) == bytes([code])


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        (0xFF, 0),
        (0x7F, 0),
        (0xFE, 8),
        (0xF0, 120),
        (0xEF, 132),
        (0x8F, 16764),
        (0x0F, -16764),
        (0x80, 32124),
        (0x00, -32124),
    ],
)
def test_known_decodings(code: int, sample: int) -> None:
    assert mulaw_decode(bytes([code]))[0] == sample


def test_every_code_survives_decode_then_encode() -> None:
    codes = bytes(range(256))
    back = mulaw_encode(mulaw_decode(codes))
    # 0x7F is "negative zero"; it decodes to 0, which encodes as 0xFF.
    assert [i for i in range(256) if back[i] != i] == [0x7F]
    assert back[0x7F] == 0xFF


def test_round_trip_error_stays_within_half_a_quantisation_step() -> None:
    decoded = mulaw_decode(mulaw_encode(ALL_SAMPLES)).astype(np.int32)
    original = ALL_SAMPLES.astype(np.int32)
    error = np.abs(decoded - original)
    magnitude = np.abs(original)
    inside = magnitude <= 32635
    # A segment is 16 steps covering a doubling of the biased magnitude: error <= biased / 32.
    assert np.all(error[inside] <= (magnitude[inside] + 132) / 32)
    assert error[magnitude < 100].max() <= 4
    assert error.max() <= 644  # clipping at the top of the range
    assert np.all(np.diff(decoded) >= 0)  # quantisation never reorders samples


def test_decode_reads_any_bytes_like_and_encode_needs_int16() -> None:
    payload = bytes([0xFF, 0x80, 0x00])
    for data in (payload, bytearray(payload), memoryview(payload)):
        assert mulaw_decode(data).tolist() == [0, 32124, -32124]
    with pytest.raises(TypeError, match="int16"):
        mulaw_encode(np.zeros(4, dtype=np.float32))


def test_pcm16_bytes_are_little_endian_and_viewed_without_copy() -> None:
    data = bytearray(b"\x01\x00\xff\xff\x00\x80")
    pcm = pcm16_from_bytes(data)
    assert pcm.dtype == np.int16 and pcm.tolist() == [1, -1, -32768]
    data[0] = 2
    assert pcm[0] == 2  # same memory
    assert pcm16_to_bytes(pcm) == bytes(data)


@pytest.mark.parametrize("size", [1, 3, 321])
def test_odd_byte_counts_are_rejected_with_a_clear_error(size: int) -> None:
    with pytest.raises(AudioFormatError, match=f"even number of bytes.*got {size}"):
        pcm16_from_bytes(b"\x00" * size)


def test_empty_payloads_are_fine() -> None:
    assert pcm16_from_bytes(b"").shape == (0,)
    assert mulaw_decode(b"").shape == (0,)
    assert mulaw_encode(np.zeros(0, dtype=np.int16)) == b""


def test_pcm16_to_bytes_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError):
        pcm16_to_bytes(np.zeros(2, dtype=np.int32))
