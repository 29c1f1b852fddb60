"""G.711 mu-law and raw PCM16 conversions, done by table lookup.

Telephony audio arrives as 8-bit mu-law 50 times a second per caller. A 256-entry decode table
and a 65,536-entry encode table (128 KiB, shared by every session) turn each conversion into one
numpy fancy-index: no Python loop per sample and no `audioop` (removed in Python 3.13).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_BIAS = 0x84  # 132: G.711 adds it so every magnitude has a leading one to find.
_CLIP = 32635  # the largest magnitude that still fits once biased (32635 + 132 = 32767).


class AudioFormatError(ValueError):
    """Audio bytes that cannot be what they claim to be (odd PCM16 length, corrupt WAV...)."""


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF  # mu-law bytes are sent inverted
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # Indexed by the int16 sample reinterpreted as uint16, so encoding needs no sign handling.
    samples = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0x00)
    biased = np.minimum(np.abs(samples), _CLIP) + _BIAS
    # The segment (exponent) is the position of the leading one above bit 7.
    exponent = np.zeros_like(biased)
    for bit in range(8, 15):
        exponent += biased >= (1 << bit)
    mantissa = (biased >> (exponent + 3)) & 0x0F
    table: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return table


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def mulaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """G.711 mu-law bytes to PCM16 samples (one new array; the input is only read)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """PCM16 samples to G.711 mu-law bytes."""
    if pcm.dtype != np.int16:
        raise TypeError(f"mu-law encoding takes int16 samples, got {pcm.dtype}")
    return _ENCODE[pcm.view(np.uint16)].tobytes()


def pcm16_from_bytes(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Little-endian PCM16 bytes as an int16 view of the same memory (no copy).

    An odd byte count means a sample was split or a byte was lost; guessing would shift every
    later sample by one byte and turn speech into noise, so it is an error here.
    """
    size = memoryview(data).nbytes
    if size % 2:
        raise AudioFormatError(
            f"PCM16 audio must have an even number of bytes (2 per sample), got {size}"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def pcm16_to_bytes(pcm: npt.NDArray[np.int16]) -> bytes:
    """PCM16 samples as little-endian bytes, the order every wire format here uses."""
    if pcm.dtype != np.int16:
        raise TypeError(f"PCM16 encoding takes int16 samples, got {pcm.dtype}")
    return pcm.astype("<i2", copy=False).tobytes()
