"""From a Python signature to what the model sees (a JSON Schema) and back (validated arguments).

Pydantic does the type work, so everything it understands (Optional, Literal, enums, lists,
nested models, `Annotated[..., Field(...)]`) works in tools for free. What this module adds is
the part providers care about: a schema without pydantic's noise (titles, `$ref`s that small
local models and some vendors handle badly) and error messages a model can correct itself from.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import docstring_parser
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from voxline.tools.base import RunContext

# Providers reject other tool names (OpenAI: ^[a-zA-Z0-9_-]{1,64}$), so fail at decoration time.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEFS_PREFIX = "#/$defs/"
# Keys whose values are data, not subschemas: never strip or rewrite inside them.
_DATA_KEYS = frozenset({"default", "enum", "const", "examples"})
# Keys whose values map names to subschemas: keep the names, clean the subschemas.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "patternProperties"})


class ToolArgumentsError(ValueError):
    """The model sent arguments that do not fit the tool; the message tells it what to fix.

    The executor never retries these and never counts them against the circuit breaker: the
    tool is fine, the call was wrong.
    """


@dataclass(frozen=True)
class ToolSignature:
    """Everything derived once from a tool function, at decoration time."""

    description: str
    parameters: dict[str, Any]
    arguments_model: type[BaseModel]
    context_param: str | None  # the parameter that receives the RunContext, if any


def check_tool_name(name: str) -> str:
    if not _TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


def inspect_tool(fn: Callable[..., Any], name: str) -> ToolSignature:
    """Build the arguments model and the clean schema of `fn`; raises TypeError when unusable."""
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise TypeError(f"cannot resolve the type hints of tool {name}: {exc}") from exc
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"tool {name}: parameter {param.name} must be passable by keyword")
        if param.name not in hints:
            raise TypeError(f"tool {name}: parameter {param.name} needs a type hint")
        hint = hints[param.name]
        if _is_run_context(hint):
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hint, default)
    model = create_model(
        f"{name}_arguments",
        __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        **fields,
    )
    param_docs = {p.arg_name: p.description for p in doc.params if p.description}
    return ToolSignature(
        description=_describe_doc(doc),
        parameters=_provider_schema(model.model_json_schema(), param_docs),
        arguments_model=model,
        context_param=context_param,
    )


def validate_arguments(
    signature: ToolSignature, tool_name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Validated keyword arguments (nested models stay model instances, as the function expects)."""
    try:
        validated = signature.arguments_model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolArgumentsError(
            f"invalid arguments for {tool_name}: {_describe_errors(exc)}"
        ) from exc
    return dict(validated)


def _is_run_context(hint: Any) -> bool:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return isinstance(hint, type) and issubclass(hint, RunContext)


def _describe_doc(doc: docstring_parser.Docstring) -> str:
    parts = [doc.short_description, doc.long_description]
    return "\n\n".join(p.strip() for p in parts if p)


def _describe_errors(exc: ValidationError) -> str:
    messages = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        text = error["msg"][:1].lower() + error["msg"][1:]
        messages.append(f"{where}: {text}" if where else text)
    return "; ".join(messages)


def _provider_schema(raw: dict[str, Any], param_docs: dict[str, str]) -> dict[str, Any]:
    defs = raw.pop("$defs", {})
    try:
        schema = _inline_refs(raw, defs, frozenset())
    except _RecursiveSchema:
        # A self-referencing model cannot be inlined; keep the references and their targets.
        schema = {**raw, "$defs": defs} if defs else raw
    cleaned: dict[str, Any] = _clean(schema)
    for prop_name, prop in cleaned.get("properties", {}).items():
        if prop_name in param_docs and "description" not in prop:
            prop["description"] = param_docs[prop_name]
    cleaned.setdefault("properties", {})
    cleaned.setdefault("required", [])
    return cleaned


class _RecursiveSchema(Exception):
    pass


def _inline_refs(node: Any, defs: dict[str, Any], expanding: frozenset[str]) -> Any:
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not (isinstance(ref, str) and ref.startswith(_DEFS_PREFIX)):
        return _map_subschemas(node, lambda sub: _inline_refs(sub, defs, expanding))
    key = ref.removeprefix(_DEFS_PREFIX)
    if key in expanding:
        raise _RecursiveSchema(key)
    target = _inline_refs(defs[key], defs, expanding | {key})
    # Siblings of the reference (the field's own description, default) win over the target's.
    siblings = _inline_refs({k: v for k, v in node.items() if k != "$ref"}, defs, expanding)
    return {**target, **siblings}


def _clean(node: Any) -> Any:
    """Drop pydantic's generated titles and close every object that lists its properties."""
    if not isinstance(node, dict):
        return node
    kept = {k: v for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    out = _map_subschemas(kept, _clean)
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def _map_subschemas(node: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Apply `fn` to every subschema of `node`, leaving data (defaults, enums) and names alone."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA_KEYS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: fn(sub) for name, sub in value.items()}
        elif isinstance(value, list):
            out[key] = [fn(item) for item in value]
        else:
            out[key] = fn(value)
    return out
