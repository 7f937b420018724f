"""Request bodies the suites send, and the facts of the recordings they are checked against."""

from __future__ import annotations

from typing import Any

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
}
OPENAI_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_local_time",
            "description": "Local time in a time zone",
            "parameters": TIME_SCHEMA,
        },
    },
]
ANTHROPIC_TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER_SCHEMA},
    {"name": "get_local_time", "description": "Local time in a time zone", "input_schema": TIME_SCHEMA},
]
QUESTION = "What is the capital of France?"


def openai_chat(
    model: str, *, stream: bool = False, include_usage: bool = False, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}],
        **extra,
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def anthropic_messages(model: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "system": "Answer briefly.",
        "messages": [{"role": "user", "content": QUESTION}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return body


# What the recordings say (tests/fakes/recordings/*): checked against what translation delivers.
TEXT_ANSWER = "The capital of France is Paris."
OPENAI_TOOL_CALLS = [
    ("call_Yk3nVq8fT2pLm0aRcW5sJxHd", "get_weather", '{"city":"Paris","unit":"celsius"}'),
    ("call_Q7bZr1uNe4GtH9oKs6MvCyAf", "get_local_time", '{"timezone":"Europe/Paris"}'),
]
ANTHROPIC_TOOL_USES = [
    ("toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
    ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_local_time", '{"timezone": "Europe/Paris"}'),
]
ANTHROPIC_TOOL_TEXT = "I'll look up the weather and the local time in Paris."
OPENAI_REASONING = "Okay, the user asks for 17 * 24. 17*24 = 408."
OPENAI_REASONED_ANSWER = "17 × 24 = **408**."
ANTHROPIC_THINKING = "Let me work this out. 17 × 24 = 17 × 20 + 17 × 4 = 340 + 68 = 408."
ANTHROPIC_SIGNATURE_PREFIX = "EqQBCgIYAhIM"
ANTHROPIC_THOUGHTFUL_ANSWER = "17 × 24 = **408**."
TRUNCATED_ANSWER = "Once upon a time, in a quiet village"
