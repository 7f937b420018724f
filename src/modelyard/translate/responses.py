"""Non-streaming responses: OpenAI ``chat.completion`` <-> Anthropic ``message``."""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelyard.providers.base import JSONDict
from modelyard.translate.mapping import (
    anthropic_usage_to_openai,
    map_finish_reason_to_anthropic,
    map_stop_reason_to_openai,
    new_anthropic_id,
    new_openai_id,
    new_tool_use_id,
    openai_usage_to_anthropic,
)


def reasoning_text(message_or_delta: JSONDict) -> str:
    """The reasoning text of an OpenAI message or delta ('' if none).

    Not part of the OpenAI API: vLLM, DeepSeek and llama.cpp send ``reasoning_content``; newer
    vLLM and some routers send ``reasoning``.
    """
    for key in ("reasoning_content", "reasoning"):
        value = message_or_delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def parse_tool_arguments(arguments: Any) -> JSONDict:
    """Tool call arguments as an input object; never loses them.

    Empty arguments are ``{}``; text that is not a JSON object is kept as ``{"_raw_arguments": ...}``.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    text = arguments if isinstance(arguments, str) else str(arguments)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": text}
    if isinstance(parsed, dict):
        return parsed
    return {"_raw_arguments": text}


def openai_response_to_anthropic(resp: JSONDict, *, model: str) -> JSONDict:
    """Translate an OpenAI ``chat.completion`` into an Anthropic ``message`` for ``model``.

    ``reasoning_content`` becomes a leading thinking block with an empty signature; a refusal
    becomes text with stop reason ``refusal``; cached prompt tokens are reported as
    ``cache_read_input_tokens`` and left out of ``input_tokens``.
    """
    choices = resp.get("choices") or []
    choice: JSONDict = choices[0] if choices and isinstance(choices[0], dict) else {}
    message: JSONDict = choice.get("message") or {}
    content: list[JSONDict] = []
    reasoning = reasoning_text(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):  # some servers send content parts back
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    tool_calls = message.get("tool_calls") or []
    for call in tool_calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_use_id(),
                "name": function.get("name", ""),
                "input": parse_tool_arguments(function.get("arguments")),
            }
        )
    stop_reason = map_finish_reason_to_anthropic(choice.get("finish_reason"))
    if refusal:
        stop_reason = "refusal"
    elif tool_calls and stop_reason in (None, "end_turn"):
        stop_reason = "tool_use"  # some servers report "stop" after tool calls
    elif stop_reason is None:
        stop_reason = "end_turn"
    usage = resp.get("usage")
    return {
        "id": new_anthropic_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(usage if isinstance(usage, dict) else {}),
    }


def anthropic_response_to_openai(resp: JSONDict, *, model: str) -> JSONDict:
    """Translate an Anthropic ``message`` into an OpenAI ``chat.completion`` for ``model``.

    Text blocks are joined (they are pieces of one answer), thinking goes to
    ``reasoning_content``, tool_use blocks become ``tool_calls`` with the same ids.
    Server-tool blocks (web search and the like) have no OpenAI shape and are left out.
    """
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[JSONDict] = []
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input", {})).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: JSONDict = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    usage = resp.get("usage")
    return {
        "id": new_openai_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": map_stop_reason_to_openai(resp.get("stop_reason")) or "stop",
            }
        ],
        "usage": anthropic_usage_to_openai(usage if isinstance(usage, dict) else {}),
    }
