"""`voxline doctor`: for each role, which provider is configured, whether its model is there,
how long it takes to load, and what to install when something is missing.

Every check catches `ConfigurationError` and reports its one-line message, so a broken install
reads as a list of fixes, never as a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
        _check_local("stt", settings.stt, lambda: factory.create_stt(settings.stt), load),
        _check_local("tts", settings.tts, lambda: factory.create_tts(settings.tts), load),
        _check_local("vad", settings.vad, lambda: factory.create_vad(settings.vad), load),
    ]


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
    missing = [item for item in report if item.model_present is False]
    if missing:
        lines.append("")
        lines += [f"fix {item.role}: {item.detail}" for item in missing]
    return "\n".join(line.rstrip() for line in lines)
