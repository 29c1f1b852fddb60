"""What `voxline agents validate` checks beyond the JSON Schema: that an agent file can run here.

A file can be valid JSON, field by field, and still fail on its first call: a tool that no
imported module registers, an LLM prefix nobody knows, a voice file that is not there. Those are
reported now, with the field named, so `ok` means the agent will start. A hosted key that is not
set is only a warning: keys belong to the deployment, and the same file is checked on a laptop
without them.

Unlike the API's policy (`agents/policy.py`), nothing is refused for being a file path or an
arbitrary URL: an agent file on the operator's own disk is the operator's choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voxline.agents.spec import AgentSpec
from voxline.providers.llm.base import ConfigurationError, MissingKeyError
from voxline.providers.llm.registry import create_llm, llm_prefixes
from voxline.settings import Settings
from voxline.tools.registry import UnknownToolError, all_tools, get_tool


@dataclass(frozen=True)
class Finding:
    """One problem: `field` is a dotted path into the agent JSON (`tools[1]`, `llm`)."""

    field: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_runnable(spec: AgentSpec, settings: Settings) -> list[Finding]:
    """Every reason `spec` would fail to start here (fatal) or might (warnings), in field order.
    Tools are looked up in the registry as it is now: import the modules that define them
    first (`--import`)."""
    found = _check_tools(spec)
    for field, value in _llm_fields(spec):
        found += _check_llm(field, value, settings)
    if spec.stt:
        found += _check_speech("stt", spec.stt, _create_stt)
    if spec.tts or spec.voice:
        from voxline.voice.providers import tts_spec_for

        field = "tts" if spec.tts else "voice"
        found += _check_speech(field, tts_spec_for(spec), _create_tts)
    return found


def _check_tools(spec: AgentSpec) -> list[Finding]:
    found: list[Finding] = []
    names: list[str] = []
    for index, tool in enumerate(spec.tool_specs()):
        names.append(tool.name)
        if tool.kind != "python":
            continue  # a client tool is answered by the debug feed's client, not by code here
        try:
            get_tool(tool.name)
        except UnknownToolError:
            known = ", ".join(sorted(all_tools())) or "none"
            found.append(
                Finding(
                    f"tools[{index}]",
                    f"unknown tool {tool.name!r}: no imported module registers it (registered: "
                    f"{known}); pass the module that defines it, e.g. --import mytools or "
                    "--import ./mytools.py",
                )
            )
    for index, name in enumerate(spec.approvals.tools):
        if name not in names:
            have = ", ".join(names) or "none"
            found.append(
                Finding(
                    f"approvals.tools[{index}]",
                    f"{name!r} is not one of this agent's tools (its tools: {have})",
                )
            )
    return found


def _llm_fields(spec: AgentSpec) -> list[tuple[str, str]]:
    """Every LLM spec the agent names: its own, the summarizer's, a guardrail classifier's."""
    fields = [("llm", spec.llm), ("summarization.llm", spec.summarization.llm)]
    classifier = spec.guardrails.input.classifier
    if classifier is not None:
        fields.append(("guardrails.input.classifier.llm", classifier.llm))
    return [(field, value) for field, value in fields if value]


def _check_llm(field: str, spec: str, settings: Settings) -> list[Finding]:
    """Each part of a fallback list on its own, so a chain reports every broken link. A part is
    built (cheap: nothing connects or loads until the first request) so that its factory's
    own checks run: a missing model name, a local model file that is not there."""
    parts = [part.strip() for part in spec.split(",")]
    found: list[Finding] = []
    for index, part in enumerate(parts):
        where = f"{field} (fallback {index + 1} of {len(parts)})" if len(parts) > 1 else field
        prefix = part.partition(":")[0]
        if prefix not in llm_prefixes():
            known = ", ".join(llm_prefixes())
            found.append(Finding(where, f"unknown LLM provider {prefix!r}; known: {known}"))
            continue
        try:
            create_llm(part, settings)
        except ConfigurationError as exc:
            missing_key = isinstance(exc, MissingKeyError)
            if missing_key and len(parts) > 1:
                message = f"{exc} (skipped at run time: the rest of the list answers)"
            else:
                message = str(exc)
            found.append(Finding(where, message, fatal=not missing_key))
    return found


def _check_speech(field: str, spec: str, create: Callable[[str], object]) -> list[Finding]:
    try:
        create(spec)
    except ConfigurationError as exc:
        return [Finding(field, str(exc))]
    return []


def _create_stt(spec: str) -> object:
    from voxline.providers.factory import create_stt

    return create_stt(spec)


def _create_tts(spec: str) -> object:
    from voxline.providers.factory import create_tts

    return create_tts(spec)
