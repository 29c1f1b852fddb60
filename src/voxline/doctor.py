"""`voxline doctor`: for each role, which provider is configured, whether its model is there,
how long it takes to load, and what to install when something is missing. Each voice of the
TTS spec gets its own row (a fallback chain lists every voice); a hosted voice shows whether
its key is set (never the key) and which variable sets it. The same goes for each recognizer of
the STT spec (`deepgram:nova-3,local` is two rows).

Every check catches `ConfigurationError` and reports its one-line message, so a broken install
reads as a list of fixes, never as a traceback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
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
    """One row per recognizer of the STT spec (a fallback chain lists each). A hosted one shows
    whether its key is set, by the variable that sets it (never the key), and where it points
    when its base URL is overridden; creating it makes no request."""
    from voxline.providers import factory

    reports = []
    for part in [part.strip() for part in settings.stt.split(",") if part.strip()] or ["local"]:
        name = part.partition(":")[0].lower()
        key = factory.stt_key_present(name, settings)
        if key is None:
            create = (lambda spec: lambda: factory.create_stt(spec, settings))(part)
            reports.append(_check_local("stt", part, create, load))
            continue
        _, variable, base_field = factory.HOSTED_STT[name]
        if not key:
            fix = f"{part} needs an API key: set {variable}"
            reports.append(RoleReport("stt", part, None, detail=fix, key_present=False))
            continue
        try:
            label = factory.create_stt(part, settings).label
        except ConfigurationError as exc:
            reports.append(RoleReport("stt", part, False, detail=str(exc), key_present=True))
            continue
        detail = f"{label}, key set ({variable})"
        base = urlsplit(getattr(settings, base_field) or "")
        if base.hostname:
            detail += f", at {base.hostname}" + (f":{base.port}" if base.port else "")
        reports.append(RoleReport("stt", part, None, detail=detail, key_present=True))
    return reports


def _check_tts(settings: Settings, load: bool) -> list[RoleReport]:
    """One row per voice of the TTS spec. A hosted voice is created (no request is made: that
    checks its spec) only when its key is set; a missing key is a fix, named by its variable."""
    from voxline.providers import factory

    reports: list[RoleReport] = []
    for part in (part.strip() for part in settings.tts.split(",") if part.strip()):
        name = part.partition(":")[0].lower()
        key = factory.tts_key_present(name, settings)
        if key is None:
            create = functools.partial(factory.create_tts, part, settings)
            reports.append(_check_local("tts", part, create, load))
            continue
        variable = factory.HOSTED_TTS[name][1]
        if not key:
            fix = f"{name} voices need an API key: set {variable}"
            reports.append(RoleReport("tts", part, None, detail=fix, key_present=False))
            continue
        try:
            label = factory.create_tts(part, settings).label
        except ConfigurationError as exc:
            reports.append(RoleReport("tts", part, False, detail=str(exc), key_present=True))
            continue
        detail = f"{label}, key set ({variable})"
        reports.append(RoleReport("tts", part, None, detail=detail, key_present=True))
    return reports


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
