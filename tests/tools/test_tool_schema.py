"""The decorator: schemas from type hints and docstrings, validation, registration."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from voxline.tools.base import RunContext, Tool, ToolOptions
from voxline.tools.decorator import FunctionTool, tool
from voxline.tools.registry import UnknownToolError, all_tools, get_tool
from voxline.tools.schema import ToolArgumentsError


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(BaseModel):
    """A postal address."""

    street: str
    city: str
    title: str = "home"  # a field literally named "title" must survive title stripping


class Node(BaseModel):
    label: str
    children: list[Node] = []


def _walk(node: Any) -> list[dict[str, Any]]:
    """Every dict in a schema, to check that no pydantic title survives anywhere."""
    if isinstance(node, dict):
        return [node, *(d for value in node.values() for d in _walk(value))]
    if isinstance(node, list):
        return [d for item in node for d in _walk(item)]
    return []


def test_google_docstring_gives_description_and_parameter_docs() -> None:
    @tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int | None = None) -> str:
        """Get the current weather for a city.

        Use it whenever the caller asks about the weather.

        Args:
            city: The city name, e.g. "Paris".
            unit: Temperature unit.
            days: How many days of forecast,
                counted from today.
        """
        return city

    assert get_weather.description == (
        "Get the current weather for a city.\n\nUse it whenever the caller asks about the weather."
    )
    assert get_weather.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'The city name, e.g. "Paris".'},
            "unit": {
                "type": "string",
                "enum": ["c", "f"],
                "default": "c",
                "description": "Temperature unit.",
            },
            "days": {
                "anyOf": [{"type": "integer"}, {"type": "null"}],
                "default": None,
                "description": "How many days of forecast,\ncounted from today.",
            },
        },
        "required": ["city"],
        "additionalProperties": False,
    }


def test_rest_docstring_and_annotated_field_description_wins() -> None:
    @tool
    def book(seats: Annotated[int, Field(description="From Field.", ge=1)], note: str = "") -> str:
        """Book seats.

        :param seats: From the docstring.
        :param note: Anything the kitchen should know.
        """
        return note

    props = book.parameters["properties"]
    assert props["seats"] == {"type": "integer", "minimum": 1, "description": "From Field."}
    assert props["note"]["description"] == "Anything the kitchen should know."
    assert book.parameters["required"] == ["seats"]


def test_lists_enums_and_nested_models_are_inlined_without_titles() -> None:
    @tool
    def ship(items: list[int], unit: Unit, to: Address, ctx: RunContext) -> str:
        """Ship items."""
        return ""

    schema = ship.parameters
    assert "$defs" not in schema
    assert all("$ref" not in d and not isinstance(d.get("title"), str) for d in _walk(schema))
    props = schema["properties"]
    assert props["items"] == {"type": "array", "items": {"type": "integer"}}
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"]}
    assert props["to"]["description"] == "A postal address."
    assert props["to"]["additionalProperties"] is False
    assert set(props["to"]["properties"]) == {"street", "city", "title"}
    assert props["to"]["required"] == ["street", "city"]
    assert schema["required"] == ["items", "unit", "to"]


def test_run_context_parameter_is_hidden_from_the_model() -> None:
    @tool
    def whoami(context: RunContext, loud: bool = False) -> str:
        """Say who is calling."""
        return context.subject or ""

    assert list(whoami.parameters["properties"]) == ["loud"]
    assert whoami.parameters["required"] == []


def test_recursive_model_keeps_its_definitions() -> None:
    @tool
    def plant(tree: Node) -> str:
        """Plant a tree."""
        return tree.label

    schema = plant.parameters
    assert set(schema["$defs"]) == {"Node"}
    assert schema["properties"]["tree"] == {"$ref": "#/$defs/Node"}
    assert schema["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert all(not isinstance(d.get("title"), str) for d in _walk(schema))


def test_tool_without_parameters_has_an_empty_closed_object() -> None:
    @tool
    async def ping() -> str:
        return "pong"

    assert ping.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert ping.description == ""


def test_options_and_overrides() -> None:
    @tool(name="lookup-order", description="Find an order.", timeout=5, retries=2, backoff=0.2)
    def find(order_id: str) -> str:
        """Ignored docstring."""
        return order_id

    assert find.name == "lookup-order"
    assert find.options == ToolOptions(timeout=5, retries=2, backoff=0.2)
    assert find.definition().description == "Find an order."
    assert find.definition().parameters is find.parameters
    assert isinstance(find, Tool)


def test_decorated_function_stays_callable() -> None:
    @tool
    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add"
    assert isinstance(add, FunctionTool)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "invalid arguments for get_temp: city: field required"),
        (
            {"city": "Oslo", "days": "soon"},
            "invalid arguments for get_temp: days: input should be a valid integer",
        ),
        ({"city": "Oslo", "mood": 1}, "mood: extra inputs are not permitted"),
        ({"city": "Oslo", "unit": "kelvin"}, "unit: input should be 'c' or 'f'"),
    ],
)
def test_invalid_arguments_explain_what_to_fix(arguments: dict[str, Any], message: str) -> None:
    @tool
    def get_temp(city: str, days: int = 1, unit: Literal["c", "f"] = "c") -> str:
        """Temperature."""
        return city

    with pytest.raises(ToolArgumentsError) as caught:
        get_temp.check_arguments(arguments)
    assert message in str(caught.value)


def test_valid_arguments_are_coerced_and_nested_models_built() -> None:
    @tool
    def deliver(to: Address, count: int) -> str:
        """Deliver."""
        return ""

    checked = deliver.check_arguments({"to": {"street": "1 Main St", "city": "Oslo"}, "count": "3"})
    assert checked == {"to": Address(street="1 Main St", city="Oslo"), "count": 3}


@pytest.mark.parametrize("name", ["has space", "", "x" * 65, "dots.not.allowed"])
def test_names_providers_reject_fail_at_decoration(name: str) -> None:
    def f() -> None:
        """F."""

    with pytest.raises(ValueError, match="tool name"):
        tool(name=name)(f)


def test_signatures_the_model_cannot_call_fail_at_decoration() -> None:
    def untyped(city):  # type: ignore[no-untyped-def]
        return city

    def variadic(*cities: str) -> None:
        return None

    with pytest.raises(TypeError, match="city needs a type hint"):
        tool(untyped)
    with pytest.raises(TypeError, match="cities must be passable by keyword"):
        tool(variadic)


def test_decorator_registers_by_name_and_later_definitions_replace() -> None:
    @tool(name="registry_probe")
    def first() -> str:
        return "1"

    assert get_tool("registry_probe") is first

    @tool(name="registry_probe")
    def second() -> str:
        return "2"

    assert get_tool("registry_probe") is second
    assert all_tools()["registry_probe"] is second


def test_unknown_registry_name_lists_what_exists() -> None:
    @tool
    def registry_known() -> None:
        """Known."""

    with pytest.raises(UnknownToolError) as caught:
        get_tool("registry_missing")
    assert "no tool named 'registry_missing'" in str(caught.value)
    assert "registry_known" in str(caught.value)
