import asyncio

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


agent = voxline.Agent(
    name="concierge",
    instructions="You are a hotel concierge. Answer in one or two short sentences; use your tools.",
    llm="local",  # the embedded model: no key; or "openai:gpt-4.1-mini", "anthropic:…"
    greeting="Hello, how can I help?",
    tools=[get_weather, refund],
)


async def main() -> None:
    async with voxline.Session(agent) as session:
        session.on("bot_text_delta", lambda turn, delta: print(delta, end="", flush=True))
        await session.send_text("What's the weather in Paris tomorrow?")
        print()


asyncio.run(main())
