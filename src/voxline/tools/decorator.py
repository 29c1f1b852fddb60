"""`@tool`: a typed Python function becomes something the model can call.

The schema and the arguments model are built once, at decoration time, so a bad signature fails
at import and not in the middle of a phone call. The decorated object stays callable like the
original function, so the function can still be unit-tested and reused directly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from voxline.providers.llm.base import ToolDefinition
from voxline.tools.base import RunContext, ToolOptions
from voxline.tools.registry import register_tool
from voxline.tools.schema import check_tool_name, inspect_tool, validate_arguments

P = ParamSpec("P")
R = TypeVar("R")


class FunctionTool(Generic[P, R]):
    """A `Tool` backed by a Python function, sync or async."""

    __name__: str  # copied from the function by `functools.update_wrapper`

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        options: ToolOptions | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn)
        self.name: str = check_tool_name(fn.__name__ if name is None else name)
        self._signature = inspect_tool(fn, self.name)
        self.description: str = self._signature.description if description is None else description
        self.parameters: dict[str, Any] = self._signature.parameters
        self.options: ToolOptions = options or ToolOptions()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"

    def definition(self) -> ToolDefinition:
        return ToolDefinition(self.name, self.description, self.parameters)

    def check_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments; raises `ToolArgumentsError` with a model-readable reason.

        Public so the executor can reject a malformed call before a human is asked to approve it.
        """
        return validate_arguments(self._signature, self.name, arguments)

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> Any:
        kwargs = self.check_arguments(arguments)
        if self._signature.context_param is not None:
            kwargs[self._signature.context_param] = ctx
        call: Callable[..., Any] = self._fn
        if self._is_async:
            return await call(**kwargs)
        # A blocking tool (an HTTP client, a database driver) must not stall audio for everyone.
        return await asyncio.to_thread(call, **kwargs)


@overload
def tool(fn: Callable[P, R], /) -> FunctionTool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    needs_approval: bool | None = None,
    breaker_threshold: int | None = None,
    breaker_reset: float | None = None,
) -> Callable[[Callable[P, R]], FunctionTool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    needs_approval: bool | None = None,
    breaker_threshold: int | None = None,
    breaker_reset: float | None = None,
) -> FunctionTool[P, R] | Callable[[Callable[P, R]], FunctionTool[P, R]]:
    """Turn a function into a registered tool; use bare (`@tool`) or with options.

    Options left out keep `ToolOptions`' defaults, so those defaults live in one place.
    """
    given: dict[str, Any] = {
        "timeout": timeout,
        "retries": retries,
        "backoff": backoff,
        "needs_approval": needs_approval,
        "breaker_threshold": breaker_threshold,
        "breaker_reset": breaker_reset,
    }
    options = ToolOptions(**{k: v for k, v in given.items() if v is not None})

    def wrap(func: Callable[P, R]) -> FunctionTool[P, R]:
        made = FunctionTool(func, name=name, description=description, options=options)
        return register_tool(made)

    return wrap if fn is None else wrap(fn)
