"""The dev set of `tool_precision.py`: six tools with realistic fake results, and the requests.

Each case names the calls it needs, in order (none for small talk, statements and questions no
tool answers; none either when a needed value is missing, where the model must ask), and the
words the spoken answer must contain when it reports a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voxline.tools.base import Tool
from voxline.tools.decorator import tool

INSTRUCTIONS = (
    "You are the phone assistant of Northwind, a shop that also helps with everyday tasks. "
    "Speak naturally and keep answers to one or two short sentences."
)
MAX_TOKENS = 60  # a spoken answer's first sentences are what the measures need

ORDERS = {
    "12345": {"status": "delivered", "delivered_on": "Monday", "total": "$42.50", "city": "Lyon"},
    "777": {"status": "in transit", "expected": "Friday", "total": "$18.00", "city": "Leeds"},
    "4512": {"status": "delivered", "delivered_on": "yesterday", "total": "$99.90", "city": "Graz"},
    "A-77": {"status": "processing", "expected": "next week", "total": "$7.25", "city": "Turin"},
    "9001": {"status": "delivered", "delivered_on": "June 3", "total": "$120.00", "city": "Cork"},
}
WEATHER = {"paris": ("light rain", 14), "tokyo": ("sunny", 22), "oslo": ("snow", -3)}


def dev_tools() -> list[Tool]:
    @tool
    async def get_weather(city: str) -> str:
        """Get today's weather forecast for a city.

        Args:
            city: The city name.
        """
        sky, high = WEATHER.get(city.lower(), ("cloudy", 17))
        return json.dumps({"city": city, "forecast": sky, "high_c": high})

    @tool
    async def lookup_order(order_id: str) -> str:
        """Look up the status of a customer's order by its order number.

        Args:
            order_id: The order number.
        """
        order = ORDERS.get(order_id.upper())
        if order is None:
            return json.dumps({"error": f"no order {order_id}"})
        return json.dumps({"order_id": order_id, **order})

    @tool
    async def refund_order(order_id: str) -> str:
        """Refund a delivered order by its order number.

        Args:
            order_id: The order number.
        """
        order = ORDERS.get(order_id.upper())
        if order is None or order["status"] != "delivered":
            return json.dumps({"error": "only delivered orders can be refunded"})
        return json.dumps({"refunded": order["total"], "arrives_in": "3 to 5 days"})

    @tool
    async def book_table(restaurant: str, people: int, time: str) -> str:
        """Book a table at a restaurant.

        Args:
            restaurant: The restaurant's name.
            people: How many people.
            time: When, as the caller said it.
        """
        return json.dumps({"booked": True, "restaurant": restaurant, "reference": "BK-3301"})

    @tool
    async def set_timer(minutes: int) -> str:
        """Start a countdown timer.

        Args:
            minutes: Length of the timer in minutes.
        """
        return json.dumps({"timer": "started", "ends_in_minutes": minutes})

    @tool
    async def flight_status(flight_number: str) -> str:
        """Get the live status of a flight by its flight number.

        Args:
            flight_number: The flight number, like BA117.
        """
        return json.dumps({"flight": flight_number, "status": "delayed", "new_departure": "18:40"})

    return [get_weather, lookup_order, refund_order, book_table, set_timer, flight_status]


Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # none | ask | one | two
    text: str
    calls: tuple[Call, ...] = ()
    report: tuple[str, ...] = ()  # any of these in the answer = the result was reported


def _c(name: str, **arguments: Any) -> Call:
    return (name, arguments)


NONE = [
    "Hello, how are you?",
    "Hi there!",
    "Good morning.",
    "Thanks, that's all.",
    "Thank you so much, bye.",
    "I live on Main Street.",
    "My name is Sarah.",
    "I just got back from Paris.",
    "My order arrived yesterday, it was great.",
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 12?",
    "Tell me a joke.",
    "Can you recommend a good book?",
    "What are your opening hours?",
    "What does a timer do?",
    "Is it normal for flights to be delayed in winter?",
    "I love rainy days.",
    "What's your favourite restaurant?",
    "Can you hear me?",
    "Sorry, I was distracted for a second.",
    "How do I boil an egg?",
    "It's raining here today.",
]
ASK = [
    ("What's the weather like?", "city"),
    ("Can you check my order?", "order"),
    ("I want a refund.", "order"),
    ("Set a timer please.", "minutes"),
    ("Book a table for me.", "restaurant"),
    ("Is my flight on time?", "flight"),
]
ONE = [
    Case(
        "w1", "one", "What's the weather in Paris?", (_c("get_weather", city="paris"),), ("rain",)
    ),
    Case(
        "w2",
        "one",
        "Will it be sunny in Tokyo today?",
        (_c("get_weather", city="tokyo"),),
        ("sun",),
    ),
    Case(
        "w3",
        "one",
        "Do I need a coat in Oslo?",
        (_c("get_weather", city="oslo"),),
        ("snow", "-3", "cold"),
    ),
    Case(
        "w4",
        "one",
        "How warm is it in Madrid?",
        (_c("get_weather", city="madrid"),),
        ("17", "cloud"),
    ),
    Case(
        "o1",
        "one",
        "Where is my order 777?",
        (_c("lookup_order", order_id="777"),),
        ("transit", "friday"),
    ),
    Case(
        "o2",
        "one",
        "Has order 4512 arrived?",
        (_c("lookup_order", order_id="4512"),),
        ("delivered", "yesterday"),
    ),
    Case(
        "o3",
        "one",
        "Can you check order A-77 for me?",
        (_c("lookup_order", order_id="a-77"),),
        ("process", "next week"),
    ),
    Case(
        "o4",
        "one",
        "What's the status of order 9001?",
        (_c("lookup_order", order_id="9001"),),
        ("delivered", "june"),
    ),
    Case(
        "r1",
        "one",
        "Please refund order 9001.",
        (_c("refund_order", order_id="9001"),),
        ("120", "refund"),
    ),
    Case(
        "r2",
        "one",
        "I'd like a refund for order 4512.",
        (_c("refund_order", order_id="4512"),),
        ("99", "refund"),
    ),
    Case(
        "b1",
        "one",
        "Book a table at Luigi's for two people at 7 pm.",
        (_c("book_table", restaurant="luigi's", people=2),),
        ("booked", "bk-3301", "book"),
    ),
    Case(
        "b2",
        "one",
        "Can you reserve a table for 4 at The Ivy tonight at eight?",
        (_c("book_table", restaurant="the ivy", people=4),),
        ("booked", "bk-3301", "book", "reserv"),
    ),
    Case(
        "t1",
        "one",
        "Set a timer for 10 minutes.",
        (_c("set_timer", minutes=10),),
        ("10", "ten", "timer"),
    ),
    Case(
        "t2",
        "one",
        "Start a five minute timer.",
        (_c("set_timer", minutes=5),),
        ("5", "five", "timer"),
    ),
    Case(
        "t3",
        "one",
        "Remind me in 20 minutes, set a timer.",
        (_c("set_timer", minutes=20),),
        ("20", "twenty", "timer"),
    ),
    Case(
        "f1",
        "one",
        "Is flight BA117 on time?",
        (_c("flight_status", flight_number="ba117"),),
        ("delay", "18:40"),
    ),
    Case(
        "f2",
        "one",
        "What's the status of flight LH400?",
        (_c("flight_status", flight_number="lh400"),),
        ("delay", "18:40"),
    ),
    Case(
        "f3",
        "one",
        "When does my flight AF1234 leave?",
        (_c("flight_status", flight_number="af1234"),),
        ("18:40", "delay"),
    ),
    Case(
        "w5",
        "one",
        "I'm flying to Tokyo tomorrow. What's the weather there?",
        (_c("get_weather", city="tokyo"),),
        ("sun",),
    ),
    Case(
        "o5",
        "one",
        "Hi, order 12345, where is it?",
        (_c("lookup_order", order_id="12345"),),
        ("delivered", "monday"),
    ),
    Case(
        "t4",
        "one",
        "Timer for 15 minutes.",
        (_c("set_timer", minutes=15),),
        ("15", "fifteen", "timer"),
    ),
    Case(
        "f4",
        "one",
        "Track flight UA90 for me.",
        (_c("flight_status", flight_number="ua90"),),
        ("delay", "18:40"),
    ),
]
TWO = [
    Case(
        "c1",
        "two",
        "Check order 12345 and refund it if it was delivered.",
        (_c("lookup_order", order_id="12345"), _c("refund_order", order_id="12345")),
        ("42.50", "refund"),
    ),
    Case(
        "c2",
        "two",
        "Look up order 9001, and if it's delivered, refund it.",
        (_c("lookup_order", order_id="9001"), _c("refund_order", order_id="9001")),
        ("120", "refund"),
    ),
    Case(
        "c3",
        "two",
        "Check order 777 and refund it if it was delivered.",
        (_c("lookup_order", order_id="777"),),
        ("transit", "not", "friday"),
    ),
    Case(
        "c4",
        "two",
        "What's the weather in Paris and in Oslo?",
        (_c("get_weather", city="paris"), _c("get_weather", city="oslo")),
        ("snow", "-3"),
    ),
    Case(
        "c5",
        "two",
        "Where is order 12345 going, and what's the weather there?",
        (_c("lookup_order", order_id="12345"), _c("get_weather", city="lyon")),
        ("17", "cloud"),
    ),
    Case(
        "c6",
        "two",
        "Check flight BA117 and set a timer for 30 minutes.",
        (_c("flight_status", flight_number="ba117"), _c("set_timer", minutes=30)),
        ("30", "thirty", "timer"),
    ),
    Case(
        "c7",
        "two",
        "What's the weather in Tokyo? Then book a table at Sushi Ko for 2 at 7.",
        (_c("get_weather", city="tokyo"), _c("book_table", restaurant="sushi ko", people=2)),
        ("booked", "bk-3301", "book"),
    ),
    Case(
        "c8",
        "two",
        "Refund order 4512, then tell me the status of order 777.",
        (_c("refund_order", order_id="4512"), _c("lookup_order", order_id="777")),
        ("transit", "friday"),
    ),
]
CASES = (
    [Case(f"n{i + 1}", "none", text) for i, text in enumerate(NONE)]
    + [Case(f"a{i + 1}", "ask", text, report=(word,)) for i, (text, word) in enumerate(ASK)]
    + ONE
    + TWO
)
