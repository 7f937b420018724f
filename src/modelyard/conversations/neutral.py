"""Each protocol's turns ↔ the protocol-neutral stored form (pure functions, no I/O).

The neutral form is an OpenAI Chat Completions message (``user``, ``assistant`` with optional
``tool_calls``, ``tool``): every protocol the gateway speaks already translates to and from it
(:mod:`modelyard.translate`), so a conversation begun on ``/v1/messages`` continues on
``/v1/chat/completions`` (or ``/v1/responses``) and the other way round. System and developer
messages are not history: they become the conversation's system prompt.

What does not survive a trip through the neutral form: Anthropic ``thinking`` blocks and
``cache_control`` marks in *stored* turns (the new turn is forwarded as sent).
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.conversations.model import JSONDict
from modelyard.providers.base import WireProtocol
from modelyard.translate import (
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
)
from modelyard.translate._content import openai_text_of

SYSTEM_ROLES = frozenset({"system", "developer"})


def split_system(messages: list[Any]) -> tuple[str | None, list[JSONDict]]:
    """(the system prompt the messages give, or None; the other messages)."""
    parts: list[str] = []
    rest: list[JSONDict] = []
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") in SYSTEM_ROLES:
            text = openai_text_of(message.get("content"), where=f"messages[{i}]")
            if text:
                parts.append(text)
        elif isinstance(message, dict):
            rest.append(message)
    return ("\n\n".join(parts) if parts else None), rest


def new_turn(client: WireProtocol, body: JSONDict) -> tuple[str | None, list[JSONDict]]:
    """(system prompt given by this request or None, its messages in the neutral form)."""
    if client is WireProtocol.ANTHROPIC:
        converted = anthropic_request_to_openai(
            {"messages": body.get("messages"), "system": body.get("system")}
        )
        return split_system(converted["messages"])
    return split_system(list(body.get("messages") or []))


def expanded_body(
    client: WireProtocol, body: JSONDict, system: str | None, history: list[JSONDict]
) -> JSONDict:
    """``body`` with the stored ``history`` before its messages and ``system`` as its system prompt."""
    out = dict(body)
    if client is WireProtocol.ANTHROPIC:
        if history:
            earlier = openai_request_to_anthropic({"messages": history, "max_tokens": 1})["messages"]
            out["messages"] = [*earlier, *body["messages"]]
        if system is not None and not body.get("system"):
            out["system"] = system
        return out
    _, new = split_system(list(body.get("messages") or []))
    lead: list[JSONDict] = [{"role": "system", "content": system}] if system is not None else []
    if history or system is not None:
        out["messages"] = [*lead, *history, *new]
    return out


def clean_assistant(message: Any) -> JSONDict | None:
    """An answer's assistant message reduced to what the neutral form keeps."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if not isinstance(content, str):
        content = openai_text_of(content, where="answer") if isinstance(content, list) else None
    out: JSONDict = {"role": "assistant", "content": content}
    calls = [
        {
            "id": str(call.get("id")),
            "type": "function",
            "function": {
                "name": str((call.get("function") or {}).get("name")),
                "arguments": str((call.get("function") or {}).get("arguments") or "{}"),
            },
        }
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    ]
    if calls:
        out["tool_calls"] = calls
    elif content is None:
        out["content"] = ""
    return out


def answer_of_json(client: WireProtocol, raw: bytes) -> JSONDict | None:
    """The assistant message of a non-streamed answer in the client's protocol (None: none)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if client is WireProtocol.ANTHROPIC:
        data = anthropic_response_to_openai(data, model=str(data.get("model", "")))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return clean_assistant(choices[0].get("message"))


__all__ = ["answer_of_json", "clean_assistant", "expanded_body", "new_turn", "split_system"]
