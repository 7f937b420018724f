"""A long, deterministic conversation (with a tool call and its result in the middle)."""

from __future__ import annotations

from typing import Any

TOPICS = ("the harbour", "a lighthouse", "tides", "the fish market", "storms", "old maps", "ferries")


def turn_text(n: int, role: str) -> str:
    topic = TOPICS[n % len(TOPICS)]
    if role == "user":
        return f"Question {n}: tell me something about {topic} in the town, and how it changed over time."
    return (
        f"Answer {n}: {topic.capitalize()} has a long history here; people remember it for the "
        f"work it gave, the stories told about it and the way it shaped the streets near the water."
    )


def conversation(turns: int, *, system: str = "You are a concise local historian.") -> list[dict[str, Any]]:
    """OpenAI chat messages: system, then ``turns`` user/assistant pairs, then a final user turn;
    turn 3 calls a tool and gets its result."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for n in range(turns):
        messages.append({"role": "user", "content": turn_text(n, "user")})
        if n == 3:
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "tide_table", "arguments": "{}"},
                        }
                    ],
                }
            )
            result = "High tide 06:12, low 12:30."
            messages.append({"role": "tool", "tool_call_id": "call_1", "content": result})
        messages.append({"role": "assistant", "content": turn_text(n, "assistant")})
    messages.append({"role": "user", "content": "Last question: what should I visit first tomorrow?"})
    return messages


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "tide_table",
            "description": "Today's tides in the harbour.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
