"""Read any common WAV file as mono PCM16; write PCM16 WAV files.

Reading walks the RIFF chunks itself instead of using the stdlib `wave` module, because on
Python 3.11 `wave` rejects WAVE_FORMAT_EXTENSIBLE (how most tools write 24-bit and multichannel
files) and 32-bit float, and it silently returns fewer frames from a truncated file. A recording
fed to `voxline simulate` should either play as it sounds or fail with a message that says why.
Writing only ever produces plain PCM16, which `wave` handles well.
"""

from __future__ import annotations

import os
import struct
import wave
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from voxline.audio.codecs import AudioFormatError, mulaw_decode
from voxline.audio.frames import AudioFrame

WavSource = str | os.PathLike[str] | bytes | bytearray | BinaryIO

_PCM = 0x0001
_FLOAT = 0x0003
_MULAW = 0x0007
_EXTENSIBLE = 0xFFFE
_STREAMED_SIZE = 0xFFFFFFFF  # written by tools that did not know the length (pipes)
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0011: "IMA ADPCM", 0x0055: "MP3"}


def read_wav(source: WavSource) -> AudioFrame:
    """Decode a WAV file to mono PCM16 at its own sample rate (resample separately).

    Accepts 8/16/24/32-bit integer PCM, 32/64-bit float and 8-bit mu-law, in plain or
    extensible headers, with any number of channels (averaged to mono).
    """
    data = _read_all(source)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFormatError("not a WAV file: it does not start with a RIFF/WAVE header")
    fmt: tuple[int, int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if body + size > len(data):
                raise AudioFormatError("corrupt WAV file: the file ends inside its fmt chunk")
            fmt = _parse_fmt(data[body : body + size])
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError("corrupt WAV file: the data chunk comes before fmt")
            if size == _STREAMED_SIZE or (size == 0 and body < len(data)):
                size = len(data) - body
            elif body + size > len(data):
                raise AudioFormatError(
                    f"truncated WAV file: the data chunk declares {size} bytes but only "
                    f"{len(data) - body} are present"
                )
            return AudioFrame(_to_mono_pcm16(data[body : body + size], *fmt[:4]), fmt[4])
        pos = body + size + (size & 1)  # chunks are padded to an even length
    if fmt is None:
        raise AudioFormatError("corrupt WAV file: no fmt chunk found")
    raise AudioFormatError("truncated WAV file: no data chunk found")


def write_wav(
    dest: str | os.PathLike[str] | BinaryIO, pcm: npt.NDArray[np.int16], sample_rate: int
) -> None:
    """Write mono PCM16 samples as a standard WAV file."""
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise TypeError(f"write_wav takes 1-D int16 samples, got {pcm.dtype} {pcm.shape}")
    target: str | BinaryIO = os.fspath(dest) if isinstance(dest, str | os.PathLike) else dest
    with wave.open(target, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.astype("<i2", copy=False).tobytes())


def _read_all(source: WavSource) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return handle.read()
    return source.read()


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    """Returns (format tag, channels, bits per sample, block align, sample rate)."""
    if len(body) < 16:
        raise AudioFormatError(f"corrupt WAV file: fmt chunk has {len(body)} bytes, needs 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise AudioFormatError("corrupt WAV file: extensible fmt chunk is too short")
        (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the subformat GUID
    if tag not in (_PCM, _FLOAT, _MULAW):
        name = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        raise AudioFormatError(
            f"unsupported WAV encoding: {name}; convert it to PCM (e.g. 16-bit) first"
        )
    if channels == 0 or rate == 0:
        raise AudioFormatError(
            f"corrupt WAV file: {channels} channels at {rate} Hz cannot be played"
        )
    supported = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _MULAW: (8,)}[tag]
    if bits not in supported:
        raise AudioFormatError(
            f"unsupported WAV sample size: {bits}-bit; supported here: "
            + ", ".join(f"{b}-bit" for b in supported)
        )
    if block_align != channels * bits // 8:
        raise AudioFormatError(
            f"corrupt WAV file: block align {block_align} does not match {channels} channels "
            f"of {bits}-bit samples"
        )
    return tag, channels, bits, block_align, rate


def _to_mono_pcm16(
    raw: bytes, tag: int, channels: int, bits: int, block_align: int
) -> npt.NDArray[np.int16]:
    if len(raw) % block_align:
        raise AudioFormatError(
            f"truncated WAV file: {len(raw)} data bytes is not a whole number of "
            f"{block_align}-byte frames"
        )
    samples = _decode_samples(raw, tag, bits)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _decode_samples(raw: bytes, tag: int, bits: int) -> npt.NDArray[np.float64]:
    """Samples on the 16-bit scale, as floats so channels can be averaged without overflow."""
    if tag == _FLOAT:
        floats = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
        return np.nan_to_num(floats) * 32767.0
    if tag == _MULAW:
        return mulaw_decode(raw).astype(np.float64)
    if bits == 8:  # 8-bit WAV is the one unsigned format
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if bits == 24:
        # Keep the two most significant bytes of each little-endian triple: 24 -> 16 bits.
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        return triples[:, 1:].copy().view("<i2").reshape(-1).astype(np.float64)
    return (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.float64)
