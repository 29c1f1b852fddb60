"""The "check, then act" pair of tools and a bare reply engine, shared by the multi-step tool
tests on scripted providers (`test_tool_steps.py`) and on the local provider
(`tests/local/test_local_tool_turns.py`); the engine also serves `test_reply_joining.py`."""

from __future__ import annotations

from voxline.conversation.engine import Delivery, ReplyEngine
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import TurnStore
from voxline.events import EventBus
from voxline.tools.base import RunContext, Tool
from voxline.tools.decorator import tool
from voxline.tools.executor import ToolExecutor


def order_tools(log: list[str]) -> list[Tool]:
    """`lookup_order` (a delivered order) and `refund_order`; each run is appended to `log`."""

    @tool
    async def lookup_order(order_id: str) -> str:
        """Look up an order.

        Args:
            order_id: The order number.
        """
        log.append(f"lookup {order_id}")
        return '{"status": "delivered", "total": "$42.50"}'

    @tool
    async def refund_order(order_id: str) -> str:
        """Refund a delivered order.

        Args:
            order_id: The order number.
        """
        log.append(f"refund {order_id}")
        return '{"refunded": "$42.50"}'

    return [lookup_order, refund_order]


def reply_engine(conversation_id: str, tools: list[Tool]) -> tuple[ReplyEngine, TurnStore]:
    """An engine that delivers at once, with nothing but its turns, bus and tools."""
    bus = EventBus()
    turns = TurnStore(conversation_id, bus)
    engine = ReplyEngine(
        turns,
        bus,
        StateMachine(bus, SessionState.LISTENING),
        ToolExecutor(tools),
        Delivery(auto=True),
        lambda call_id: RunContext(conversation_id=conversation_id, call_id=call_id),
    )
    return engine, turns
