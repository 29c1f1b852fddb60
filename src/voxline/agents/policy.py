"""What an agent defined over the API may name: the operator's allow-list, and what can run.

An agent in a file on the server's own disk is the operator's own choice, so it may load any
model file and call any server. An agent sent to `/api` is written by whoever holds an API key,
and its spec strings are instructions to this server: `local:/path.gguf`, `whisper:/path` and
`piper:/path` (or a `voice` that is a path) load files, each distinct value a model on its own
thread, kept for the life of the process; `openai-compatible:URL#MODEL` makes the server call
that URL. So an API agent names models, voices and base URLs only from `Settings.api_allowed_*`
(defaults below), never a file path, and every field that could only fail later (an unknown
provider, an unregistered tool, an `approvals.tools` entry the agent does not have) is refused
when the agent is written, with the field named, instead of failing every call.

Defaults, when a setting is unset: the local models that are installed (`local`, `whisper`,
`piper` and the bundled voice `joe`), the server's own default specs, `fake` only when the
default LLM is fake (tests), `openai:*` / `anthropic:*` when their key is set, prefixes that the
operator's code registered (`register_llm`) without an argument, and `openai-compatible:*` under
the base URLs of `VOXLINE_OPENAI_COMPATIBLE_BASE_URL` and of the default LLM. Realtime models:
`openai-realtime:MODEL` with the OpenAI key (or `VOXLINE_OPENAI_REALTIME_BASE_URL`) set,
`openai-realtime:URL#MODEL` under the allowed base URLs (ws/wss compared as http/https); a
Realtime agent's `voice` is one of the model's voices. An explicit list
replaces the defaults. `*` matches any text. A path-shaped value is refused even when a list
names it: use a hosted agent for model files.

Stored agents written before a policy change are checked again when a call starts
(`enforce_agent`), so they are refused cleanly instead of failing mid-call.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from voxline.agents.spec import AgentSpec
from voxline.providers.llm.registry import (
    BaseUrl,
    base_url_within,
    llm_prefixes,
    parse_base_url,
    shown_url,
)
from voxline.providers.realtime.config import VOICES as REALTIME_VOICES
from voxline.providers.realtime.registry import (
    REALTIME_PREFIX,
    http_form,
    is_realtime_spec,
    split_realtime,
)
from voxline.settings import Settings
from voxline.tools.registry import UnknownToolError, get_tool

Loc = tuple[str | int, ...]

# Providers whose argument is a model name or else a path on this server's disk.
_FILE_PROVIDERS = {"local", "whisper", "piper"}
_MODEL_FILE_SUFFIXES = (
    ".gguf",
    ".ggml",
    ".onnx",
    ".json",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".safetensors",
    ".tflite",
    ".model",
)
_COMPATIBLE = "openai-compatible"
_BUILT_IN_LLMS = {"fake", "local", "openai", "anthropic", _COMPATIBLE, REALTIME_PREFIX}


@dataclass(frozen=True)
class Violation:
    """One field an API agent may not have, and why (a sentence for the API user)."""

    loc: Loc
    message: str

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.loc)


class AgentPolicyError(ValidationError):
    """A stored agent that the policy refuses now. A pydantic `ValidationError`, so code that
    already treats "this stored spec no longer validates" as "this agent cannot take calls"
    handles it the same way."""


def looks_like_path(argument: str) -> bool:
    """Whether a model or voice argument would be read as a file or directory path."""
    return (
        any(mark in argument for mark in ("/", "\\", "~", ".."))
        or argument.startswith(".")
        or argument.lower().endswith(_MODEL_FILE_SUFFIXES)
    )


def _split(spec: str) -> tuple[str, str]:
    """`PREFIX:ARGUMENT` the way the registry and the speech factory split it."""
    prefix, _, argument = spec.strip().partition(":")
    return prefix, argument.strip()


def _canonical(spec: str, *, lower: bool = False) -> str:
    prefix, argument = _split(spec)
    prefix = prefix.lower() if lower else prefix
    return f"{prefix}:{argument}" if argument else prefix


def _matches(pattern: str, value: str) -> bool:
    if "*" not in pattern:
        return pattern == value
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


@functools.cache
def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


_BEAM = ("", "#beam=*")


def _installed_whisper_models(bundled: str) -> list[str]:
    """The named Whisper models an API agent may pick: the bundled one, and `base` where its
    wheels (the `whisper-base` extra) are installed."""
    try:
        whisper = importlib.import_module("voxline.providers.stt.whisper")
    except ImportError:  # pragma: no cover - it imports only voxline and numpy
        return [bundled]
    return [bundled, *(["base"] if whisper.model_installed("base") else [])]


@functools.cache
def _bundled_names() -> tuple[str, str, str]:
    """The names of the bundled LLM, Whisper model and Piper voice, read from their modules."""
    try:
        local = importlib.import_module("voxline.providers.llm.local")
        whisper = importlib.import_module("voxline.providers.stt.whisper")
        piper = importlib.import_module("voxline.providers.tts.piper")
    except ImportError:  # pragma: no cover - they import only voxline and numpy
        return "qwen2.5-coder-1.5b", "tiny.en", "joe"
    return str(local.DEFAULT_MODEL), str(whisper.DEFAULT_MODEL), str(piper.DEFAULT_VOICE)


def _compatible_url(argument: str) -> tuple[str, str]:
    url, _, model = argument.rpartition("#")
    return url, model


def _parts(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",")]


@dataclass(frozen=True)
class AllowList:
    """What an API agent may name on this server, resolved from the settings."""

    llms: tuple[str, ...]
    stt: tuple[str, ...]
    tts: tuple[str, ...]
    voices: tuple[str, ...]
    base_urls: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowList:
        llm_name, stt_name, voice_name = _bundled_names()
        default_parts = [p for p in _parts(settings.llm) if p]
        llms = settings.api_allowed_llms
        if llms is None:
            found = ["local", f"local:{llm_name}"] if _installed("xllamacpp") else []
            found += [_canonical(p) for p in default_parts if not _file_spec(p)]
            if any(_split(p)[0] == "fake" for p in default_parts):
                found += ["fake", "fake:*"]
            if settings.openai_api_key is not None:
                found.append("openai:*")
            if settings.anthropic_api_key is not None:
                found.append("anthropic:*")
            # Prefixes the operator's own code registered, bare: no argument chosen by the
            # API user reaches a factory whose argument might be a path.
            found += [p for p in llm_prefixes() if p not in _BUILT_IN_LLMS]
        else:
            found = [_canonical(entry) for entry in llms]
        urls = settings.api_allowed_base_urls
        if urls is None:
            named = [settings.openai_compatible_base_url or ""]
            named.append(http_form(settings.openai_realtime_base_url or ""))
            for part in [*default_parts, *found]:
                prefix, argument = _split(part)
                if prefix == _COMPATIBLE and "*" not in argument:
                    named.append(_compatible_url(argument)[0])
            urls = [url for url in named if parse_base_url(url) is not None]
        if llms is None and urls:
            found.append(f"{_COMPATIBLE}:*")
        if llms is None:
            found += _realtime_defaults(settings, bool(urls))
        stt = settings.api_allowed_stt
        if stt is None:
            whisper = ["local", "whisper"]
            for model in _installed_whisper_models(stt_name):  # with or without `#beam=N`
                whisper += [f"{p}:{model}{beam}" for p in ("local", "whisper") for beam in _BEAM]
            stt = whisper if _installed("faster_whisper") else []
            stt = [*stt, settings.stt] if not _file_spec(settings.stt) else stt
            stt = [*stt, *_hosted_defaults(settings, _HOSTED_STT)]
        tts = settings.api_allowed_tts
        voices = settings.api_allowed_voices
        if tts is None or voices is None:
            piper = _installed("piper")
            if tts is None:
                tts = ["local", "piper", f"local:{voice_name}", f"piper:{voice_name}"]
                tts = tts if piper else []
                tts = [*tts, settings.tts] if not _file_spec(settings.tts) else tts
                tts = [*tts, *_hosted_defaults(settings, _HOSTED_TTS)]
            if voices is None:
                voices = [voice_name] if piper else []
                if _has_key(settings, "openai_api_key"):  # `openai:` speech takes `voice`
                    voices = [*voices, *OPENAI_TTS_VOICES]
        return cls(
            llms=_unique(found),
            stt=_unique(_canonical(s, lower=True) for s in stt),
            tts=_unique(_canonical(s, lower=True) for s in tts),
            voices=_unique(v.strip() for v in voices),
            base_urls=_unique(urls),
        )

    def allows_url(self, url: str) -> bool:
        return any(base_url_within(url, allowed) for allowed in self.base_urls)

    def shown_base_urls(self) -> list[str]:
        return [shown_url(url) for url in self.base_urls]

    def shown_llms(self) -> list[str]:
        return [shown_spec(spec) for spec in self.llms]


def _realtime_defaults(settings: Settings, have_urls: bool) -> list[str]:
    """`openai-realtime:MODEL` with an OpenAI key (or a Realtime base URL the operator set);
    `openai-realtime:URL#MODEL` under the allowed base URLs (checked per URL)."""
    found = []
    if settings.openai_api_key is not None or settings.openai_realtime_base_url:
        found.append(f"{REALTIME_PREFIX}:*")
    elif have_urls:
        found += [f"{REALTIME_PREFIX}:{scheme}://*" for scheme in ("ws", "wss", "http", "https")]
    return found


def _check_realtime(part: str, allow: AllowList) -> str | None:
    url, model = split_realtime(part)
    if not model or looks_like_path(model):
        return f"{REALTIME_PREFIX} needs a model: {REALTIME_PREFIX}:MODEL or :URL#MODEL"
    if url is not None:
        parsed = parse_base_url(http_form(url))
        if parsed is None:
            return (
                f"{REALTIME_PREFIX} needs a plain ws(s) or http(s) base URL (no query, no dot "
                f"segments): {REALTIME_PREFIX}:ws://HOST:PORT/v1#MODEL"
            )
        refused = _refused_base_url(url, http_form(url), parsed, allow)
        if refused is not None:
            return refused
    return _refused_llm(part, allow)


def _refused_base_url(url: str, checked: str, parsed: BaseUrl, allow: AllowList) -> str | None:
    """Why a base URL a spec names may not be used (None when it may): credentials in it, or
    `checked` (its http(s) form) outside the allowed base URLs."""
    if parsed.credentials:
        return f"{shown_url(url)}: credentials in a URL are never accepted"
    if not allow.allows_url(checked):
        urls = tuple(allow.shown_base_urls())
        return f"{shown_url(url)} is not an allowed base URL; " + _allowed_text(
            urls, "VOXLINE_API_ALLOWED_BASE_URLS"
        )
    return None


def _refused_llm(part: str, allow: AllowList) -> str | None:
    """Why a well-formed LLM spec may not be used here: it matches no allowed pattern."""
    if not any(_matches(pattern, _canonical(part)) for pattern in allow.llms):
        return f"{shown_spec(part)!r} is not allowed here; " + _allowed_text(
            tuple(allow.shown_llms()), "GET /api/models; VOXLINE_API_ALLOWED_LLMS"
        )
    return None


def shown_spec(spec: str) -> str:
    """An LLM spec fit for a message: credentials in an `openai-compatible` URL masked."""
    prefix, argument = _split(spec)
    if prefix != _COMPATIBLE:
        return spec
    url, sep, model = argument.rpartition("#")
    return f"{prefix}:{shown_url(url)}{sep}{model}" if sep else f"{prefix}:{shown_url(argument)}"


def _file_spec(spec: str) -> bool:
    prefix, argument = _split(spec)
    return prefix.lower() in _FILE_PROVIDERS and looks_like_path(argument)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value))


_FILE_REFUSED = (
    "names a file; files are never accepted from the API (an agent hosted from a file on the "
    "server may use one)"
)


def _allowed_text(allowed: tuple[str, ...], setting: str) -> str:
    if not allowed:
        return f"nothing may be named here; leave it empty for the server's default ({setting})"
    return f"allowed: {', '.join(allowed)} ({setting})"


def _check_llm_part(part: str, allow: AllowList) -> str | None:
    prefix, argument = _split(part)
    if not part:
        return "an empty spec in the fallback list"
    if prefix == REALTIME_PREFIX:
        return _check_realtime(part, allow)
    if prefix not in llm_prefixes():
        return f"unknown LLM provider {prefix!r}; known: {', '.join(llm_prefixes())}"
    if prefix in _FILE_PROVIDERS and looks_like_path(argument):
        return f"{part!r} {_FILE_REFUSED}"
    if prefix in ("openai", "anthropic") and not argument:
        return f"{prefix} needs a model name: {prefix}:MODEL"
    if prefix == _COMPATIBLE:
        url, model = _compatible_url(argument)
        parsed = parse_base_url(url)
        if parsed is None or not model:
            return (
                f"{_COMPATIBLE} needs a plain http(s) base URL (no query, no dot segments) and "
                f"a model: {_COMPATIBLE}:BASE_URL#MODEL"
            )
        refused = _refused_base_url(url, url, parsed, allow)
        if refused is not None:
            return refused
    return _refused_llm(part, allow)


def _check_llm(spec: str, allow: AllowList) -> str | None:
    parts = _parts(spec)
    problems = []
    for index, part in enumerate(parts):
        problem = _check_llm_part(part, allow)
        if problem is not None:
            where = f"fallback {index + 1} of {len(parts)}: " if len(parts) > 1 else ""
            problems.append(where + problem)
    return "; ".join(problems) or None


# Hosted speech providers are allowed by default when their key is configured (the operator's
# account pays, so the operator's keys decide), as hosted LLMs are.
_HOSTED_STT = {
    "deepgram": "deepgram_api_key",
    "assemblyai": "assemblyai_api_key",
    "openai": "openai_api_key",
}
_HOSTED_TTS = {
    "elevenlabs": "elevenlabs_api_key",
    "cartesia": "cartesia_api_key",
    "openai": "openai_api_key",
}
OPENAI_TTS_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


def _has_key(settings: Settings, name: str) -> bool:
    return getattr(settings, name, None) is not None


def _hosted_defaults(settings: Settings, providers: dict[str, str]) -> list[str]:
    return [f"{prefix}:*" for prefix, key in providers.items() if _has_key(settings, key)]


def _check_speech(value: str, allowed: tuple[str, ...], setting: str) -> str | None:
    """One spec or a fallback list (`deepgram:nova-3,local`): every part must be allowed."""
    for part in (p.strip() for p in value.split(",")):
        problem = _check_speech_part(part, allowed, setting)
        if problem is not None:
            return problem
    return None


def _check_speech_part(value: str, allowed: tuple[str, ...], setting: str) -> str | None:
    prefix, argument = _split(value)
    if looks_like_path(argument) or (not argument and looks_like_path(prefix)):
        return f"{value!r} {_FILE_REFUSED}"
    canonical = _canonical(value, lower=True)
    if not any(_matches(pattern, canonical) for pattern in allowed):
        return f"{value!r} is not available here; " + _allowed_text(allowed, setting)
    return None


def _check_voice(voice: str, allowed: tuple[str, ...]) -> str | None:
    if looks_like_path(voice.strip()):
        return f"{voice!r} {_FILE_REFUSED}"
    if not any(_matches(pattern, voice.strip()) for pattern in allowed):
        return f"{voice!r} is not a voice here; " + _allowed_text(
            allowed, "VOXLINE_API_ALLOWED_VOICES"
        )
    return None


def _voices_for(spec: AgentSpec, allow: AllowList) -> tuple[str, ...]:
    """A Realtime agent's voice is the model's, not a TTS voice of this server."""
    return tuple(sorted(REALTIME_VOICES)) if is_realtime_spec(spec.llm) else allow.voices


def _check_tools(spec: AgentSpec) -> list[Violation]:
    found: list[Violation] = []
    names: list[str] = []
    for index, tool in enumerate(spec.tool_specs()):
        names.append(tool.name)
        if tool.kind != "python":
            continue
        try:
            get_tool(tool.name)
        except UnknownToolError as exc:
            found.append(Violation(("tools", index), str(exc)))
    for index, name in enumerate(spec.approvals.tools):
        if name not in names:
            have = ", ".join(names) or "none"
            message = f"{name!r} is not one of this agent's tools (its tools: {have})"
            found.append(Violation(("approvals", "tools", index), message))
    return found


def check_agent(spec: AgentSpec, settings: Settings) -> list[Violation]:
    """Every reason an agent defined over the API may not run on this server; empty when it
    may. Unset fields (the server's defaults) are always allowed."""
    allow = AllowList.from_settings(settings)
    problems = {
        "llm": _check_llm(spec.llm, allow) if spec.llm else None,
        "stt": _check_speech(spec.stt, allow.stt, "VOXLINE_API_ALLOWED_STT") if spec.stt else None,
        "tts": _check_speech(spec.tts, allow.tts, "VOXLINE_API_ALLOWED_TTS") if spec.tts else None,
        "voice": _check_voice(spec.voice, _voices_for(spec, allow)) if spec.voice else None,
    }
    found = [Violation((field,), problem) for field, problem in problems.items() if problem]
    return found + _check_tools(spec) + _check_side_models(spec, allow) + _check_guardrails(spec)


def _check_side_models(spec: AgentSpec, allow: AllowList) -> list[Violation]:
    """Models an agent names besides its `llm` (a cheaper summarizer, a guardrail classifier)
    run on the server's keys too, so they come from the same allow-list."""
    named: dict[tuple[str | int, ...], str | None] = {
        ("summarization", "llm"): spec.summarization.llm,
    }
    classifier = spec.guardrails.input.classifier
    if classifier is not None:
        named[("guardrails", "input", "classifier", "llm")] = classifier.llm
    found = []
    for loc, model in named.items():
        problem = _check_llm(model, allow) if model else None
        if problem:
            found.append(Violation(loc, problem))
    return found


def _check_guardrails(spec: AgentSpec) -> list[Violation]:
    """Custom checks are Python the server registered; an unknown name could never run."""
    from voxline.guardrails.checks import registered_guardrails

    known = registered_guardrails()
    found = []
    for section, names in (
        ("input", spec.guardrails.input.custom),
        ("output", spec.guardrails.output.custom),
    ):
        for index, name in enumerate(names):
            if name not in known:
                found.append(
                    Violation(
                        ("guardrails", section, "custom", index),
                        f"no guardrail check named {name!r} is registered on this server",
                    )
                )
    return found


def enforce_agent(spec: AgentSpec, settings: Settings) -> None:
    """Raise `AgentPolicyError` (a pydantic `ValidationError`) when a stored API agent may not
    run here any more: for the moment a call starts, where such an agent must be refused
    cleanly. The error hides the values (a URL may carry credentials) and names the fields."""
    found = check_agent(spec, settings)
    if found:
        raise policy_error(found)


def policy_error(found: list[Violation]) -> AgentPolicyError:
    return AgentPolicyError.from_exception_data(
        "AgentSpec",
        [
            {
                "type": PydanticCustomError("agent_policy", "{reason}", {"reason": v.message}),
                "loc": v.loc,
                "input": None,
            }
            for v in found
        ],
        hide_input=True,
    )
