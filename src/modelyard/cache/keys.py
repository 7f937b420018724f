"""Cache keys: who asks (the tenant), what model, and everything in the body that changes the answer.

A key is the SHA-256 of a canonical JSON document built from the request body. Fields that cannot
change the answer are left out (``stream``, ``stream_options``, ``user``, ``metadata``, ``store``,
the gateway's own ``cache`` control and the control-plane fields the gateway never forwards), and
equivalent spellings are made equal: a text-only content list and the same text as a string, an
Anthropic ``system`` string and its one text block, Anthropic ``cache_control`` markers (they
change what the vendor caches, not what it answers). Everything else — every sampling parameter,
tools, ``tool_choice``, ``response_format``, ``seed``, ``stop``, ``max_tokens`` — stays in, so an
unknown new parameter changes the key rather than being silently shared.

The semantic cache splits the same body in two: the *partition* (tenant, model, parameters, tools,
system prompt, and the numbers the conversation mentions) must match exactly, and the
*conversation* (earlier turns as context, the last user turn as the query) is compared by
embeddings. Numbers are matched exactly because sentence embeddings barely see them: a GSM8K
problem with its numbers changed scores ~0.95 against the original (benchmarks/semantic_cache.py),
as high as a true paraphrase, while its answer is different.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.providers.base import WireProtocol
from modelyard.routing.chat import CONTROL_FIELDS

__all__ = [
    "IGNORED_FIELDS",
    "Conversation",
    "conversation_of",
    "exact_key",
    "numbers_of",
    "partition_key",
    "tenant_of",
]

IGNORED_FIELDS = (
    frozenset({"stream", "stream_options", "user", "metadata", "store", "cache"})
    # control-plane fields, stripped before any upstream call; a conversation id stays in the key
    | (CONTROL_FIELDS - {"conversation_id"})
)
"""Body fields that never change the answer, so never part of a key."""


def tenant_of(principal: Any) -> str:
    """Whose cache a request may read: the key's team, else the key itself; the master key and an
    open gateway each have their own partition."""
    key = getattr(principal, "key", None)
    if key is not None:
        team = getattr(key, "team_id", None)
        return f"team:{team}" if team else f"key:{key.id}"
    if principal is not None and getattr(principal, "hint", "-") != "-":
        return "master"
    return "anonymous"


def _text_only(parts: list[Any]) -> str | None:
    """The text of a content list made only of text parts (None if it holds anything else)."""
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None
        if set(part) - {"type", "text", "cache_control"}:
            return None
        texts.append(part["text"])
    return "".join(texts)


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _content(content: Any) -> Any:
    if isinstance(content, list):
        text = _text_only(content)
        if text is not None:
            return text
        return _strip_cache_control(content)
    return content


def _messages(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    out = []
    for message in messages:
        if isinstance(message, dict):
            message = {
                k: (_content(v) if k == "content" else _strip_cache_control(v)) for k, v in message.items()
            }
        out.append(message)
    return out


def normalized_body(protocol: WireProtocol, body: dict[str, Any]) -> dict[str, Any]:
    """The body as the key sees it: ignored fields out, equivalent spellings made equal."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in IGNORED_FIELDS:
            continue
        if name == "messages":
            value = _messages(value)
        elif name == "system":
            value = _content(value)
        elif name == "tools":
            value = _strip_cache_control(value)
        out[name] = value
    out["protocol"] = protocol.value
    return out


def _digest(document: Any) -> str:
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def exact_key(tenant: str, model: str, protocol: WireProtocol, body: dict[str, Any]) -> str:
    """The exact-cache key of a request (hex SHA-256)."""
    normal = normalized_body(protocol, body)
    normal["model"] = model
    return _digest({"tenant": tenant, "body": normal})


@dataclass(frozen=True, slots=True)
class Conversation:
    """A request split for the semantic cache."""

    query: str
    """The last user turn's text: what is compared by meaning."""
    context: str
    """The earlier turns (user and assistant) as text; empty for a first question."""
    partition_fields: dict[str, Any]
    """Everything else, matched exactly: parameters, tools, system prompt."""


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_of(text: str) -> tuple[str, ...]:
    """The numbers a text mentions, as a sorted tuple (``1,000`` and ``1000`` alike)."""
    return tuple(sorted(match.group().replace(",", "") for match in _NUMBER.finditer(text)))


def _message_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _text_only(content)
    return None


def conversation_of(protocol: WireProtocol, body: dict[str, Any]) -> Conversation | None:
    """The conversation of a body, or None when it cannot be compared by meaning (no final user
    turn, or a turn with images, files, tool calls or tool results)."""
    normal = normalized_body(protocol, body)
    messages = normal.pop("messages", None)
    if not isinstance(messages, list) or not messages:
        return None
    system_parts: list[Any] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.append(message.get("content"))
            continue
        if role not in ("user", "assistant") or message.get("tool_calls") or message.get("tool_call_id"):
            return None
        text = _message_text(message.get("content"))
        if text is None:
            return None
        turns.append((str(role), text))
    if not turns or turns[-1][0] != "user":
        return None
    if system_parts:
        normal["system_messages"] = system_parts
    context = "\n".join(f"{role}: {text}" for role, text in turns[:-1])
    return Conversation(query=turns[-1][1], context=context, partition_fields=normal)


def partition_key(tenant: str, model: str, conversation: Conversation) -> str:
    """Requests that may share semantic-cache entries: same tenant, model, parameters, tools and
    system prompt. Only the conversation's meaning is compared within a partition."""
    fields = dict(conversation.partition_fields)
    fields["model"] = model
    fields["numbers"] = numbers_of(conversation.context + "\n" + conversation.query)
    return _digest({"tenant": tenant, "semantic": fields, "has_context": bool(conversation.context)})
