"""A tool module for CLI tests: imported by `voxline chat --import tests.weather_tool`."""

from __future__ import annotations

from voxline import tool

FORECASTS = {"paris": "sunny, 22 degrees", "rome": "sunny, 27 degrees"}


@tool
def get_weather(city: str, day: str = "today") -> str:
    """Get the weather forecast for a city.

    Args:
        city: The city name, e.g. "Paris".
        day: "today" or "tomorrow".
    """
    return f"{city} {day}: {FORECASTS.get(city.lower(), 'no forecast available')}"
