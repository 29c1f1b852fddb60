"""`voxline doctor`: for each role, which provider is configured, whether its model is there,
how long it takes to load, and what to install when something is missing. Each voice of the
TTS spec gets its own row (a fallback chain lists every voice), and so does each recognizer of
the STT spec (`deepgram:nova-3,local` is two rows); a hosted one shows whether its key is set
(never the key), which variable sets it, and the host its base URL points at when overridden.

Every check catches `ConfigurationError` and reports its one-line message, so a broken install
reads as a list of fixes, never as a traceback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from voxline.providers.llm.base import ConfigurationError
from voxline.settings import Settings


@runtime_checkable
class _Labelled(Protocol):
    label: str


@runtime_checkable
class _Loadable(Protocol):
    def load(self) -> float: ...


@dataclass(frozen=True)
class RoleReport:
    role: str  # "llm" | "stt" | "tts" | "vad"
    provider: str  # the spec as configured, e.g. "local" or "openai:gpt-4.1-mini"
    model_present: bool | None  # None: a hosted model, nothing to install locally
    load_seconds: float | None = None
    detail: str = ""  # the model's label when it is present, else the fix
    key_present: bool | None = None  # hosted voices: whether their API key is configured


def _check_local(role: str, spec: str, create: Callable[[], _Labelled], load: bool) -> RoleReport:
    """Create the provider (presence checks) and, with `load`, load its model, timing both."""
    started = time.perf_counter()
    try:
        provider = create()
        if load and isinstance(provider, _Loadable):
            provider.load()
    except ConfigurationError as exc:
        return RoleReport(role, spec, model_present=False, detail=str(exc))
    seconds = time.perf_counter() - started if load else None
    return RoleReport(role, spec, model_present=True, load_seconds=seconds, detail=provider.label)


def _create_llm(settings: Settings) -> _Labelled:
    from voxline.providers.llm.local import create_local_llm

    _, _, model = settings.llm.partition(":")
    return create_local_llm(model or None, settings)


def collect_report(settings: Settings, *, load: bool = True) -> list[RoleReport]:
    """Check every role; with `load`, load each local model and time it."""
    from voxline.providers import factory

    if settings.llm.partition(":")[0] == "local":
        llm = _check_local("llm", settings.llm, lambda: _create_llm(settings), load)
    else:
        llm = RoleReport("llm", settings.llm, model_present=None, detail="hosted model")
    return [
        llm,
        *_check_stt(settings, load),
        *_check_tts(settings, load),
        _check_local("vad", settings.vad, lambda: factory.create_vad(settings.vad), load),
    ]


def _check_stt(settings: Settings, load: bool) -> list[RoleReport]:
    """One row per recognizer of the STT spec (a fallback chain lists each)."""
    from voxline.providers import factory

    parts = [part.strip() for part in settings.stt.split(",") if part.strip()] or ["local"]
    return [
        _check_part(
            "stt",
            part,
            settings,
            load,
            factory.create_stt,
            factory.stt_key_present,
            factory.HOSTED_STT,
        )
        for part in parts
    ]


def _check_tts(settings: Settings, load: bool) -> list[RoleReport]:
    """One row per voice of the TTS spec (a fallback chain lists each)."""
    from voxline.providers import factory

    parts = [part.strip() for part in settings.tts.split(",") if part.strip()]
    return [
        _check_part(
            "tts",
            part,
            settings,
            load,
            factory.create_tts,
            factory.tts_key_present,
            factory.HOSTED_TTS,
        )
        for part in parts
    ]


def _check_part(
    role: str,
    part: str,
    settings: Settings,
    load: bool,
    create: Callable[[str, Settings], _Labelled],
    key_present: Callable[[str, Settings], bool | None],
    hosted: Mapping[str, tuple[str, ...]],
) -> RoleReport:
    """A local provider is created (and with `load`, loaded). A hosted one shows whether its
    key is set, by the variable that sets it (never the key), and where it points when its
    base URL is overridden; it is created only when its key is set (that checks its spec and
    makes no request), so a missing key reads as that one fix."""
    name = part.partition(":")[0].lower()
    key = key_present(name, settings)
    if key is None:
        return _check_local(role, part, functools.partial(create, part, settings), load)
    variable = hosted[name][1]
    if not key:
        fix = f"{part} needs an API key: set {variable}"
        return RoleReport(role, part, None, detail=fix, key_present=False)
    try:
        label = create(part, settings).label
    except ConfigurationError as exc:
        return RoleReport(role, part, False, detail=str(exc), key_present=True)
    detail = f"{label}, key set ({variable})"
    base = urlsplit(getattr(settings, f"{name}_base_url", None) or "")
    if base.hostname:
        detail += f", at {base.hostname}" + (f":{base.port}" if base.port else "")
    return RoleReport(role, part, None, detail=detail, key_present=True)


def render(report: list[RoleReport]) -> str:
    """A plain table, one row per role, then the fixes for anything missing."""
    rows = [("role", "provider", "model", "load", "detail")]
    for item in report:
        present = {True: "present", False: "MISSING", None: "hosted"}[item.model_present]
        seconds = "-" if item.load_seconds is None else f"{item.load_seconds:.2f} s"
        rows.append((item.role, item.provider, present, seconds, item.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]
    missing = [item for item in report if item.model_present is False or item.key_present is False]
    if missing:
        lines.append("")
        lines += [f"fix {item.role}: {item.detail}" for item in missing]
    return "\n".join(line.rstrip() for line in lines)
