"""OpenAI Responses API (``POST /v1/responses``) ↔ Chat Completions: pure translation, no I/O.

A Responses request becomes a Chat Completions request that the gateway's chat machinery serves
from any model (OpenAI-compatible, Anthropic or local); the chat answer becomes a Responses
object. Streams are translated by :class:`~modelyard.translate.responses_api_stream.ResponsesStream`.

Choices worth knowing:

* ``instructions`` becomes a leading system message; as in the OpenAI API it is *not* carried
  along a ``previous_response_id`` chain (each request gives its own).
* Input items: messages (``input_text``, ``input_image`` by URL or data URL, ``input_file`` with
  ``file_data``, ``output_text``/``refusal`` in assistant messages), ``function_call`` and
  ``function_call_output``. ``reasoning`` items are skipped (a reasoning trace means nothing to
  another model). Anything else — ``item_reference``, file ids, built-in tool calls — is a 400
  that names the item.
* Only ``function`` tools are served; built-in tools (web search, file search, computer use…) are
  a 400: the gateway has no such tools to run.
* ``text.format`` ``json_schema`` / ``json_object`` become ``response_format``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict

PASSTHROUGH_TYPES = frozenset({"reasoning"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _text_parts(content: Any, where: str, *, assistant: bool) -> str | list[JSONDict]:
    """Message content as Chat Completions content: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail(f"{where}.content must be a string or an array of content parts", f"{where}.content")
    parts: list[JSONDict] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise _fail(f"{at}.text must be a string", f"{at}.text")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and not assistant:
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _fail(
                    f"{at}: input_image needs 'image_url' (an http(s) URL or a data: URL); file ids are "
                    "not supported by this gateway",
                    f"{at}.image_url",
                )
            image: JSONDict = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and not assistant:
            data = part.get("file_data")
            if not isinstance(data, str) or not data:
                raise _fail(
                    f"{at}: input_file needs 'file_data' (a base64 data: URL); file ids and URLs are "
                    "not supported by this gateway",
                    f"{at}.file_data",
                )
            file: JSONDict = {"file_data": data}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise _fail(f"{at}: content part type {kind!r} is not supported here", f"{at}.type")
    if assistant or all(p["type"] == "text" for p in parts):
        return "".join(str(p.get("text", "")) for p in parts)
    return parts


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        text = _text_parts(output, where, assistant=False)
        if isinstance(text, str):
            return text
    raise _fail(f"{where}.output must be a string (or text parts)", f"{where}.output")


def input_to_messages(value: Any, param: str = "input") -> list[JSONDict]:
    """A request's ``input`` (a string or an array of items) as neutral chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _fail(f"'{param}' must be a string or an array of input items", param)
    messages: list[JSONDict] = []
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise _fail(f"{where} must be an object (a message or an item with a 'type')", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _fail(
                    f"{where}.role must be one of user, assistant, system, developer; got {role!r}",
                    f"{where}.role",
                )
            content = _text_parts(item.get("content"), where, assistant=role != "user")
            if (
                role == "assistant"
                and messages
                and messages[-1]["role"] == "assistant"
                and not messages[-1].get("tool_calls")
            ):
                messages[-1]["content"] = (messages[-1]["content"] or "") + str(content)
                continue
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise _fail(f"{where}: a function_call needs 'call_id' and 'name' strings", where)
            if not isinstance(arguments, str):
                raise _fail(f"{where}.arguments must be a JSON string", f"{where}.arguments")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _fail(f"{where}: a function_call_output needs a 'call_id' string", f"{where}.call_id")
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": _output_text(item.get("output"), where)}
            )
        elif kind in PASSTHROUGH_TYPES:
            continue
        else:
            raise _fail(
                f"{where}: input item type {kind!r} is not supported by this gateway (supported: "
                "message, function_call, function_call_output, reasoning)",
                f"{where}.type",
            )
    return messages


def _tools(tools: Any) -> list[JSONDict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _fail("'tools' must be an array", "tools")
    out: list[JSONDict] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _fail(
                f"tools[{i}]: tool type {kind!r} is not supported; this gateway serves function tools",
                f"tools[{i}].type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(f"tools[{i}].name must be a non-empty string", f"tools[{i}].name")
        function: JSONDict = {"name": name, "parameters": tool.get("parameters") or {"type": "object"}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _fail("'tool_choice' must be auto, none, required or {type: function, name}", "tool_choice")


def _response_format(text: Any) -> JSONDict | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: JSONDict = {"name": str(fmt.get("name") or "response"), "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": schema}
    raise _fail(
        "'text.format' must be {type: text}, {type: json_object} or {type: json_schema, schema}", "text"
    )


def check_request(body: JSONDict, max_output_tokens: int) -> None:
    """The checks of a Responses request that need no store (each a 400 naming the field)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("missing required field 'model' (a model name; GET /v1/models lists them)", "model")
    if "input" not in body:
        raise _fail("missing required field 'input' (a string or an array of input items)", "input")
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _fail(f"'{name}' must be a string", name)
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _fail(f"'{name}' must be true or false", name)
    if body.get("background"):
        raise _fail("background responses are not supported by this gateway; omit 'background'", "background")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _fail("'max_output_tokens' must be a positive integer", "max_output_tokens")
    if isinstance(limit, int) and limit > max_output_tokens:
        raise _fail(
            f"'max_output_tokens' is {limit}; the most this gateway allows is {max_output_tokens}",
            "max_output_tokens",
        )
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            raise _fail(f"'{name}' must be a number from {low} to {high}", name)


def to_chat(body: JSONDict, history: list[JSONDict]) -> tuple[JSONDict, list[JSONDict]]:
    """(the Chat Completions request, this request's input as neutral messages)."""
    new = input_to_messages(body.get("input"))
    if not new and not history:
        raise _fail("'input' must hold at least one message or item", "input")
    lead: list[JSONDict] = []
    if body.get("instructions"):
        lead.append({"role": "system", "content": body["instructions"]})
    chat: JSONDict = {"model": body["model"], "messages": [*lead, *history, *new]}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, new


def response_skeleton(body: JSONDict, response_id: str, created_at: float | None = None) -> JSONDict:
    """A Responses object for ``body`` with no output yet (status ``in_progress``)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at if created_at is not None else time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [{**t, "strict": t.get("strict", True)} for t in body.get("tools") or []],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def usage_of(chat_usage: Any) -> JSONDict:
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> JSONDict:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(call: JSONDict, item_id: str | None = None, status: str = "completed") -> JSONDict:
    fn = call.get("function") or {}
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": str(call.get("id")),
        "name": str(fn.get("name")),
        "arguments": str(fn.get("arguments") or "{}"),
    }


def finish_status(response: JSONDict, finish_reason: Any) -> None:
    """Set ``status`` (and ``incomplete_details``) from a chat finish reason."""
    if finish_reason == "length":
        response["status"], response["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"], response["incomplete_details"] = "incomplete", {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def from_chat(chat: JSONDict, skeleton: JSONDict) -> JSONDict:
    """The Responses object of a (non-streamed) chat completion."""
    response = dict(skeleton)
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[JSONDict] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item(content))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            output.append(function_call_item(call))
    response["output"] = output
    response["usage"] = usage_of(chat.get("usage"))
    finish_status(response, choice.get("finish_reason"))
    return response


def output_to_messages(output: list[JSONDict]) -> list[JSONDict]:
    """A response's output items as neutral messages (one assistant message)."""
    text: list[str] = []
    calls: list[JSONDict] = []
    for item in output:
        if item.get("type") == "message":
            text += [
                str(p.get("text", "")) for p in item.get("content") or () if p.get("type") == "output_text"
            ]
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"},
                }
            )
    message: JSONDict = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def input_items(value: Any) -> list[JSONDict]:
    """The request's input as items with ids (for ``GET /v1/responses/{id}/input_items``)."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    items: list[JSONDict] = []
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict):
            entry = {"type": "message", **item} if "type" not in item else dict(item)
            if entry.get("type") == "message" and isinstance(entry.get("content"), str):
                kind = "output_text" if entry.get("role") == "assistant" else "input_text"
                entry["content"] = [{"type": kind, "text": entry["content"]}]
            entry.setdefault("id", new_id("msg" if entry["type"] == "message" else "item"))
            items.append(entry)
    return items


__all__ = [
    "check_request",
    "finish_status",
    "from_chat",
    "function_call_item",
    "input_items",
    "input_to_messages",
    "message_item",
    "new_id",
    "output_to_messages",
    "response_skeleton",
    "to_chat",
    "usage_of",
]
