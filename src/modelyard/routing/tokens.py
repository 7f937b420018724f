"""Token counts for a request: the real tokenizer where one is at hand, else a calibrated estimate."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.providers.base import CallContext, JSONDict, WireProtocol
from modelyard.providers.registry import Target
from modelyard.translate import anthropic_request_to_openai

# English text averages close to 4 characters per token for the BPE vocabularies of OpenAI and
# Anthropic models; JSON punctuation in tool schemas tokenises denser, hence 3.5 for structure.
CHARS_PER_TOKEN_TEXT = 4.0
CHARS_PER_TOKEN_JSON = 3.5
PER_MESSAGE_OVERHEAD = 4


def _text_chars(content: Any) -> tuple[int, int]:
    """(text characters, structured characters) of a message content."""
    if isinstance(content, str):
        return len(content), 0
    text = structured = 0
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                text += len(block["text"])
            elif block.get("type") in ("tool_use", "tool_result"):
                structured += len(orjson.dumps(block.get("input", block.get("content", ""))))
            elif block.get("type") == "image":
                structured += 1600 * 4  # Anthropic bills ~1,600 tokens for a typical image
    return text, structured


def estimate_anthropic_tokens(body: JSONDict) -> int:
    text, structured = 0, 0
    system = body.get("system")
    if system is not None:
        t, s = _text_chars(system)
        text, structured = text + t, structured + s
    messages = body.get("messages") or []
    for message in messages:
        t, s = _text_chars(message.get("content"))
        text, structured = text + t, structured + s
    if body.get("tools"):
        structured += len(orjson.dumps(body["tools"]))
    return int(text / CHARS_PER_TOKEN_TEXT + structured / CHARS_PER_TOKEN_JSON) + PER_MESSAGE_OVERHEAD * len(
        messages
    )


async def count_anthropic_request(target: Target, body: JSONDict, request_id: str) -> int:
    """Input tokens of an Anthropic request for the model that would serve it."""
    provider = target.provider
    upstream = dict(body)
    upstream["model"] = target.upstream_model
    count = getattr(provider, "count_tokens", None)
    if count is not None:
        if provider.protocol is WireProtocol.OPENAI:
            upstream = anthropic_request_to_openai({**body, "max_tokens": 1})
            upstream["model"] = target.upstream_model
        return int(await count(upstream, CallContext(request_id)))
    return estimate_anthropic_tokens(body)
