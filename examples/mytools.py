"""Tools for `concierge.json`: the agent names them, and importing this module registers them.

From the repository: `voxline chat --agent examples/concierge.json --import ./examples/mytools.py`
(a file path), or from this folder: `voxline chat --agent concierge.json --import mytools`.
"""

import voxline


@voxline.tool
def get_weather(city: str, day: str = "today") -> str:
    """Look up the weather forecast.

    Args:
        city: The city, e.g. "Paris".
        day: "today", "tomorrow" or a weekday.
    """
    return f"Sunny and 22 degrees in {city} {day}."


@voxline.tool(needs_approval=True, timeout=5, retries=2)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves first).

    Args:
        order_id: The order.
        amount: Dollars to refund.
    """
    return f"Refunded ${amount:.2f} on {order_id}."
