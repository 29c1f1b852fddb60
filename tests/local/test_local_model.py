import hashlib
from pathlib import Path

import pytest

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.llm.local_model import assemble


def make_parts(tmp_path: Path) -> tuple[list[Path], str]:
    parts = []
    for index, content in enumerate([b"first-", b"second-", b"third"]):
        part = tmp_path / f"part{index}.bin"
        part.write_bytes(content)
        parts.append(part)
    return parts, hashlib.sha256(b"first-second-third").hexdigest()


def test_joins_parts_in_order_and_announces_it(tmp_path: Path) -> None:
    parts, digest = make_parts(tmp_path)
    messages: list[str] = []
    target = assemble(parts, tmp_path / "cache" / "m.gguf", sha256=digest, announce=messages.append)
    assert target.read_bytes() == b"first-second-third"
    assert len(messages) == 2 and "joining 3 parts" in messages[0]


def test_reuses_a_complete_file_without_rewriting(tmp_path: Path) -> None:
    parts, digest = make_parts(tmp_path)
    target = assemble(parts, tmp_path / "m.gguf", sha256=digest, announce=lambda _: None)
    for part in parts:
        part.write_bytes(b"X" * part.stat().st_size)  # same sizes, other bytes: not read again
    messages: list[str] = []
    assert assemble(parts, target, sha256=digest, announce=messages.append) == target
    assert target.read_bytes() == b"first-second-third"
    assert messages == []


def test_checksum_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    parts, _ = make_parts(tmp_path)
    target = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ConfigurationError) as caught:
        assemble(parts, target, sha256="0" * 64, announce=lambda _: None)
    assert "sha256" in str(caught.value) and "\n" not in str(caught.value)
    assert list(target.parent.iterdir()) == []


def test_truncated_copy_is_replaced(tmp_path: Path) -> None:
    parts, digest = make_parts(tmp_path)
    target = tmp_path / "m.gguf"
    target.write_bytes(b"first-")  # an interrupted copy made by hand
    assemble(parts, target, sha256=digest, announce=lambda _: None)
    assert target.read_bytes() == b"first-second-third"
