"""Request mapping for the embedded llama.cpp provider: OpenAI chat bodies in, llama.cpp
arguments and OpenAI-shaped chunks out. Pure functions, no I/O."""

from __future__ import annotations

import secrets

import orjson

from modelyard.errors import (
    InvalidRequestError,
    UnsupportedCapabilityError,
)
from modelyard.providers.base import JSONDict, SSEEvent


class _ChunkMaker:
    """Builds ``chat.completion.chunk`` SSE events that share one id, created time and model."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._base: JSONDict = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage

    def event(self, delta: JSONDict, finish_reason: str | None = None) -> SSEEvent:
        chunk = {
            **self._base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return SSEEvent(data=orjson.dumps(chunk))

    def usage_event(self, usage: JSONDict) -> SSEEvent:
        return SSEEvent(data=orjson.dumps({**self._base, "choices": [], "usage": usage}))


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _usage(prompt_tokens: int, completion_tokens: int) -> JSONDict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _call_head(index: int, call_id: str, name: str) -> JSONDict:
    return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}


def _tool_call(tool_names: tuple[str, ...], text: str) -> JSONDict | None:
    """The ``tool_calls`` entry for generated text (arguments, or ``{name, arguments}``)."""
    call_id = "call_" + secrets.token_hex(12)
    if len(tool_names) == 1:
        return {"id": call_id, "type": "function", "function": {"name": tool_names[0], "arguments": text}}
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # cut off by max_tokens: no complete call to report
    if not isinstance(parsed, dict) or parsed.get("name") not in tool_names:
        return None
    arguments = orjson.dumps(parsed.get("arguments", {})).decode()
    return {"id": call_id, "type": "function", "function": {"name": parsed["name"], "arguments": arguments}}


def _number(body: JSONDict, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{key} must be a number, got {value!r}", param=key)
    return float(value)


def _max_tokens(body: JSONDict) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{key} must be a positive integer, got {value!r}", param=key)
        return value
    return None


def _response_format_grammar(response_format: object) -> tuple[str, str | None] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return ("json", None)
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return ("json_schema", orjson.dumps(schema).decode()) if schema else ("json", None)
    if kind in (None, "text"):
        return None
    raise InvalidRequestError(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema",
        param="response_format",
    )


def _forced_tools(body: JSONDict) -> tuple[tuple[str, ...], str, tuple[str, str | None] | None]:
    """For a forced tool choice: the candidate names, a system note, and the arguments grammar."""
    tools = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return (), "", None
    if choice == "required":
        chosen = tools
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        chosen = [t for t in tools if t.get("name") == wanted]
        if not chosen:
            raise InvalidRequestError(
                f"tool_choice names function {wanted!r}, which is not in tools", param="tool_choice"
            )
    else:
        raise InvalidRequestError(
            f"tool_choice {choice!r} is not supported; use auto, none, required or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )

    def parameters(tool: JSONDict) -> JSONDict:
        return tool.get("parameters") or {"type": "object", "properties": {}}

    lines = [
        f"- {t['name']}: {t.get('description', '')} (arguments: {orjson.dumps(parameters(t)).decode()})"
        for t in chosen
    ]
    if len(chosen) == 1:
        note = "Call this function. Reply with only its arguments as a JSON object.\n" + lines[0]
        schema: JSONDict = parameters(chosen[0])
    else:
        note = 'Call one of these functions. Reply with only {"name": ..., "arguments": {...}}.\n'
        note += "\n".join(lines)
        schema = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"name": {"const": t["name"]}, "arguments": parameters(t)},
                    "required": ["name", "arguments"],
                }
                for t in chosen
            ]
        }
    return tuple(t["name"] for t in chosen), note, ("json_schema", orjson.dumps(schema).decode())


def _with_system_note(messages: list[JSONDict], note: str) -> list[JSONDict]:
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


_UNSUPPORTED_PARTS = {"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file"}


def _text_content(content: object, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"messages[{index}].content must be a string or a list of parts", param=f"messages[{index}]"
        )
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _UNSUPPORTED_PARTS:
            what = "images" if "image" in str(kind) else "audio or files"
            raise UnsupportedCapabilityError(
                f"the embedded model does not accept {what} (messages[{index}] has a {kind!r} part); "
                "send text only, or route to a model that accepts them",
                param=f"messages[{index}].content",
            )
        if isinstance(part, dict) and isinstance(part.get("text") or part.get("refusal"), str):
            texts.append(part.get("text") or part["refusal"])
    return "\n".join(texts)


def _normalize_messages(raw: object, template_supports_tools: bool) -> list[JSONDict]:
    """OpenAI messages → ``{"role", "content"}`` dicts the GGUF's chat template can render."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    tool_names: dict[str, str] = {}
    out: list[JSONDict] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{index}] must be an object", param=f"messages[{index}]")
        role = message.get("role")
        content = _text_content(message.get("content"), index)
        if role == "developer":
            role = "system"
        if role in ("system", "user"):
            out.append({"role": role, "content": content})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            for call in calls:
                tool_names[str(call.get("id"))] = call.get("function", {}).get("name", "tool")
            if calls and template_supports_tools:
                out.append({"role": "assistant", "content": content, "tool_calls": calls})
            else:
                functions = [c.get("function") or {} for c in calls]
                rendered = [f"[called {f.get('name')} with {f.get('arguments')}]" for f in functions]
                out.append({"role": "assistant", "content": "\n".join([content, *rendered]).strip()})
        elif role in ("tool", "function"):
            call_id = str(message.get("tool_call_id"))
            name = message.get("name") or tool_names.get(call_id, "tool")
            if template_supports_tools and role == "tool":
                out.append({"role": "tool", "content": content, "tool_call_id": call_id})
            else:
                out.append({"role": "user", "content": f"[result of {name}]\n{content}"})
        else:
            raise InvalidRequestError(
                f"messages[{index}].role {role!r} is not one of system, developer, user, assistant, tool",
                param=f"messages[{index}].role",
            )
    return out
