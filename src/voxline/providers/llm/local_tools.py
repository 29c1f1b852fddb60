"""Tool calling for the small local model in its own chat format: speech first, calls after.

Qwen2.5's chat template (read from the GGUF's `tokenizer.chat_template`) lists tools in the
system message inside `<tools></tools>`, has the model answer a call as
`<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`, and hands results back inside
`<tool_response>` in a user-role message. `render_prompt` writes exactly that, so:

- the rendered prompt only ever grows at its end: a tool result is appended, the system message
  is never edited, and llama.cpp's prompt cache stays valid across every step of a turn;
- a result reads as a tool's output, not as something the caller said ("Thank you for your
  refund" came from results sent as user turns).

A step that may speak or call is decoded without a grammar, so speech streams from its first
token at the model's full speed; a logit bias on "{" (`local.CALL_BIAS`) moves the
speak-or-call boundary. When the first visible char opens a call (`<` or `{`) the step is
stopped there and the call is written in short constrained steps on the same cached prompt,
which only grows: the canonical opening `<tool_call>\n{"name": "` is appended, the tool's
name is chosen by `name_grammar` (no step at all with one tool), then its arguments are written
under `arguments_grammar` (the tool's JSON schema). A step that may only speak uses
`speech_grammar`; speech never holds markup or JSON (it would be read aloud): `StepParser`
stops a reply at the first `<`, `{` or backtick.

A 1.5B model still over-calls and fills required arguments with guesses, so checks sit around
the call (`LocalLLM` acts on them). Once the name is known: a call whose tool the caller's
words are not about (`about_caller`) is not written when those words hold no value it could
take (`may_hold_value`), and after a result this turn it reports that result instead. Once the
arguments are written: a call whose required string or number argument does not occur anywhere
the caller (or an earlier tool result) said it is turned into a question for that value, and a
call repeating one already made this turn is turned into a spoken answer.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxline.providers.llm.base import (
    ChatMessage,
    LLMEvent,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
)

# What the model is told about when to call; measured in `benchmarks/tool_precision.py`.
TOOL_RULES = (
    "Call a function only when the user asks for exactly what it does and has said every "
    "value it needs. Otherwise answer in plain spoken words, with no function: greetings, "
    "thanks, small talk, things the user tells you, general knowledge, advice, jokes. If the "
    "user wants a function but did not say a value it needs, ask for that value; never guess "
    "one. After a function's result, call the next function the request still needs, or tell "
    "the user the result in plain words."
)
# Qwen2.5's own tool section, as its chat template writes it (double braces included).
_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# A spoken reply starts with a word and never holds markup or JSON (it would be read aloud).
_SPEECH = r"/[^\s<{\[`][^<{`]*/"
_MARKUP = "<{`"
_WORD = re.compile(r"[a-z0-9]+")
_SMALL_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBER_WORDS = {word: value for value, word in enumerate(_SMALL_NUMBERS.split())} | {
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
    "hundred": 100,
}


def system_text(instructions: str, tools: Sequence[ToolDefinition]) -> str:
    """The whole system message: the agent's instructions, the calling rules, the tools."""
    if not tools:
        return instructions
    lines = [instructions.rstrip() + "\n\n" + TOOL_RULES + _TOOLS_HEAD]
    for tool in tools:
        function = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        }
        lines.append(json.dumps({"type": "function", "function": function}))
    return "\n".join(lines) + _TOOLS_TAIL


def render_prompt(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> str:
    """The prompt text Qwen2.5's chat template makes of `messages`, ready for the assistant.

    Leading system messages are the system message (merged); a later one (a summary, a note)
    is rendered where it stands, so adding it never changes what came before. Tool results
    sharing a step share one user-role message of `<tool_response>` blocks, as the template
    does.
    """
    lead = 0
    while lead < len(messages) and messages[lead].role == "system":
        lead += 1
    instructions = "\n\n".join(m.content or "" for m in messages[:lead]) or DEFAULT_SYSTEM
    parts = [f"<|im_start|>system\n{system_text(instructions, tools)}<|im_end|>\n"]
    rest = messages[lead:]
    for index, message in enumerate(rest):
        if message.role == "tool":
            if index == 0 or rest[index - 1].role != "tool":
                parts.append("<|im_start|>user")
            parts.append(f"\n<tool_response>\n{message.content or ''}\n</tool_response>")
            if index == len(rest) - 1 or rest[index + 1].role != "tool":
                parts.append("<|im_end|>\n")
        elif message.role == "assistant" and message.tool_calls:
            parts.append("<|im_start|>assistant")
            if message.content:
                parts.append("\n" + message.content)
            parts.extend(_render_call(call) for call in message.tool_calls)
            parts.append("<|im_end|>\n")
        else:
            parts.append(f"<|im_start|>{message.role}\n{message.content or ''}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _render_call(call: ToolCallRequest) -> str:
    try:
        arguments: Any = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = call.arguments
    body = f'{{"name": "{call.name}", "arguments": {json.dumps(arguments)}}}'
    return f"\n<tool_call>\n{body}\n</tool_call>"


CALL_OPENING = '<tool_call>\n{"name": "'
"""Appended to the prompt once the model opens a call: the call is written in the template's
own format whatever the model's first token was (`{`, `<tool_call>`), so the next step's
prompt, which shows the call as `_render_call` writes it, extends this one."""


def arguments_opening(name: str) -> str:
    """What precedes a call's arguments: the opening, the tool's name and the arguments key."""
    return f'{CALL_OPENING}{name}", "arguments": '


def speech_grammar() -> str:
    """An llguidance grammar for a step that may only speak (tool_choice "none", and the
    spoken answer that replaces a call the checks stopped)."""
    return f"%llguidance {{}}\nstart: speech\nspeech: {_SPEECH}\n"


def name_grammar(tools: Sequence[ToolDefinition]) -> str:
    """One of `tools`' names and the closing quote, written after `CALL_OPENING`."""
    names = " | ".join(json.dumps(tool.name + '"') for tool in tools)
    return f"%llguidance {{}}\nstart: {names}\n"


def arguments_grammar(tool: ToolDefinition) -> str:
    """A JSON object valid against the tool's parameter schema, written after
    `arguments_opening`; the step ends with the object."""
    schema = tool.parameters or {"type": "object"}
    return f"%llguidance {{}}\nstart: args\nargs: %json {json.dumps(schema)}\n"


class StepParser:
    """Turns a step's output into events: speech streams out as `TextDelta`s from its first
    token; a first visible char that opens a call (`<`, `{`) makes the step a call and ends
    it (`done`), and so does markup later in speech, which is never spoken (`markup`).
    Without tools (`speech_only`) the text passes through untouched."""

    def __init__(self, *, speech_only: bool = False, markup: bool = True) -> None:
        self.raw = ""
        # "speech" | "call", decided by the first visible char (no tools: always speech)
        self.kind: str | None = "speech" if speech_only else None
        self.markup = markup and not speech_only
        self.done = False

    def feed(self, text: str) -> list[LLMEvent]:
        if self.done:
            return []
        self.raw += text
        if self.kind is None:
            text = self.raw.lstrip()
            if not text:
                return []
            if text[0] in "<{":
                self.kind, self.done = "call", True
                return []
            self.kind = "speech"
        if self.markup:
            cut = next((i for i, ch in enumerate(text) if ch in _MARKUP), None)
            if cut is not None:
                self.done, text = True, text[:cut].rstrip()
        return [TextDelta(text)] if text else []


def parse_arguments(raw: str) -> dict[str, Any] | None:
    """The arguments object an arguments step wrote; None when it was cut off.

    Cut off means the step hit its token cap, which happens when the model has no value to
    write and invents one without end ("order_id": "123456789012…", "minutes": 1000000…): the
    call is then treated as one whose required values were not said."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


_RUNAWAY = re.compile(r'\d{12}|"[^"]{64,}$')


def runaway(raw: str) -> bool:
    """Whether the arguments written so far hold a value no caller says: twelve digits in a
    row, or an unclosed string of 64 chars (the model inventing without end)."""
    return _RUNAWAY.search(raw) is not None


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Verdict:
    """What to do with a call the model chose: run it (`call`, possibly with invented optional
    arguments removed), or not, with a `note` telling the model what to say instead."""

    call: ToolCallRequest | None
    note: str = ""


def review_call(
    call: ToolCallRequest, tool: ToolDefinition, messages: Sequence[ChatMessage]
) -> Verdict:
    """Keep calls whose values the caller actually gave; stop repeats within the turn.

    A value counts as given when its words occur in what the caller said, in a tool result,
    or in the instructions/summaries (facts the agent was told). Enum values are choices, not
    facts, and are always accepted. An invented optional value is dropped; an invented
    required one turns the call into a question, or, after a tool has answered this turn,
    into reporting that answer (a later step reaching for an unrelated tool).
    """
    arguments = call.parsed_arguments()
    if _repeats(call, arguments, messages):
        return Verdict(
            None,
            f"{call.name} was already called with these values; its result is above. "
            "Answer the user with it, without calling anything.",
        )
    known = _words(" ".join(m.content or "" for m in messages if m.role != "assistant"))
    properties = tool.parameters.get("properties", {}) if tool.parameters else {}
    required = set(tool.parameters.get("required", [])) if tool.parameters else set()
    missing = [name.replace("_", " ") for name in sorted(required - arguments.keys())]
    for name, value in list(arguments.items()):
        spec = properties.get(name, {})
        if "enum" in spec or "const" in spec or _given(value, known):
            continue
        if name in required:
            missing.append(name.replace("_", " "))
        else:
            del arguments[name]
    if missing and has_results(messages):
        # A further step inventing values is the model reaching for a tool it does not need:
        # the request is answered by what the earlier steps found.
        return Verdict(
            None,
            f"{call.name} is not needed: the user did not ask for it. Tell the user what the "
            "results above say; call nothing.",
        )
    if missing and not _about(tool, _last_said(messages)):
        # Nothing the caller said is about this tool ("What is the capital of France?" with a
        # weather tool): asking them for a city would be absurd, so the model just answers.
        return Verdict(None)
    if missing:
        return Verdict(
            None,
            f"The user has not said the {' and '.join(missing)} for {call.name}. Ask them for "
            "it in one short question; never answer with a guess.",
        )
    return Verdict(ToolCallRequest(call.id, call.name, json.dumps(arguments)))


_PLAIN = frozenset(
    {
        "get",
        "set",
        "the",
        "for",
        "with",
        "from",
        "that",
        "this",
        "what",
        "which",
        "when",
        "where",
        "your",
        "about",
        "into",
        "make",
        "give",
        "take",
        "find",
        "check",
        "tell",
        "show",
        "list",
        "name",
        # Times of day say when, not what: "It's raining here today." is not about a tool
        # described as "today's weather forecast".
        "today",
        "tonight",
        "tomorrow",
    }
)


def _last_said(messages: Sequence[ChatMessage]) -> str:
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


def _about(tool: ToolDefinition, said: str) -> bool:
    """Whether the caller's words share a content word with the tool's name or description
    (compared on their first five letters, so "refunds" meets "refund")."""
    topic = f"{tool.name.replace('_', ' ')} {tool.description}"
    stems = {w[:5] for w in _words(topic) if len(w) > 3 and w not in _PLAIN}
    return any(w[:5] in stems for w in _words(said) if len(w) > 3 and w not in _PLAIN)


def about_caller(tool: ToolDefinition, messages: Sequence[ChatMessage]) -> bool:
    """Whether the caller's last words are about `tool` (see `_about`)."""
    return _about(tool, _last_said(messages))


def may_hold_value(messages: Sequence[ChatMessage]) -> bool:
    """Whether the caller's last words hold anything a tool argument could take: a number
    (digits or a number word) or a name (a capitalised word that does not start a sentence).
    "Hello, how are you?" holds none, so a call there could only invent its values; "Do I need
    a coat in Oslo?" holds "Oslo", so the call is written and its values checked."""
    return bool(_values(_last_said(messages)))


def _values(said: str) -> set[str]:
    """What in `said` a tool argument could take (see `may_hold_value`), lowercased."""
    found = {w.lower() for w in re.findall(r"\d+", said)} | (_words(said) & _NUMBER_WORDS.keys())
    for sentence in re.split(r"[.!?]+\s*", said):
        for word in re.findall(r"[A-Za-z][\w'-]*", sentence)[1:]:
            if word[0].isupper() and word not in ("I", "I'm", "I'd", "I'll", "I've"):
                found.add(word.lower())
    return found


def nothing_new_for(tool: ToolDefinition, messages: Sequence[ChatMessage]) -> bool:
    """`tool` was already called since the caller last spoke, and every value the caller's
    words hold is in those calls' arguments: a further call could only repeat one ("the
    weather in Paris" asked again after its result). "Paris and Oslo" after Paris's result
    still holds a new value, so a second call is left to write."""
    earlier = ""
    for message in reversed(messages):
        if message.role == "user":
            break
        earlier += " ".join(c.arguments.lower() for c in message.tool_calls if c.name == tool.name)
    if not earlier:
        return False
    return all(value in earlier for value in _values(_last_said(messages)))


def has_results(messages: Sequence[ChatMessage]) -> bool:
    """A tool has answered since the caller last spoke."""
    for message in reversed(messages):
        if message.role == "user":
            return False
        if message.role == "tool":
            return True
    return False


def _repeats(
    call: ToolCallRequest, arguments: dict[str, Any], messages: Sequence[ChatMessage]
) -> bool:
    for message in reversed(messages):
        if message.role == "user":
            return False
        for earlier in message.tool_calls:
            if earlier.name == call.name and _loose(earlier.arguments) == arguments:
                return True
    return False


def _loose(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _given(value: Any, known: set[str]) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int | float):
        number = int(value) if float(value).is_integer() else value
        return str(number) in known or any(_NUMBER_WORDS.get(word) == number for word in known)
    if isinstance(value, str):
        return all(
            word in known or _clock_number(word, known) for word in _WORD.findall(value.lower())
        )
    if isinstance(value, list):
        return all(_given(item, known) for item in value)
    if isinstance(value, dict):
        return all(_given(item, known) for item in value.values())
    return False


def _clock_number(word: str, known: set[str]) -> bool:
    """Digits in a string value that the caller said as a number or a time: "8" or "eight"
    written as "20:00" or "8 pm" (the minutes "00" and the 12-hour shift are not invented)."""
    if not word.isdigit():
        return word in ("am", "pm")
    value = int(word)
    if value == 0:
        return True
    said = {int(w) for w in known if w.isdigit()} | {
        _NUMBER_WORDS[w] for w in known if w in _NUMBER_WORDS
    }
    return any(value in (n, n + 12, n - 12) for n in said)
