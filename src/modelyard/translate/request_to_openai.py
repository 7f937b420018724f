"""Anthropic Messages request -> OpenAI Chat Completions request.

Used when a caller speaking the Anthropic protocol is served by an OpenAI-format model.

Choices worth knowing:

* ``system`` (a string or a list of text blocks) becomes one leading system message; blocks are
  joined with a blank line.
* ``tool_result`` blocks become ``role: "tool"`` messages placed *before* the rest of their user
  message (OpenAI requires tool messages right after the assistant's tool calls). A result marked
  ``is_error`` gets the prefix :data:`TOOL_ERROR_PREFIX`, which the reverse translation turns back
  into ``is_error``. Images inside a tool result go into the following user message, since OpenAI
  tool messages carry text only.
* ``thinking`` (extended thinking) is dropped: OpenAI-format servers do not take it and the
  translation cannot know whether the model is a reasoning model. Thinking blocks in assistant
  history are dropped as well (their signatures mean nothing to another model).
* Anthropic-only fields (``top_k``, ``cache_control``, ``service_tier``, ``container``, ...) are
  dropped: only fields with an OpenAI equivalent are copied.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict
from modelyard.translate._content import anthropic_image_to_openai_url

TOOL_ERROR_PREFIX = "[tool error] "


def anthropic_request_to_openai(body: JSONDict) -> JSONDict:
    """Translate an Anthropic Messages request body into an OpenAI chat.completions body."""
    out: JSONDict = {}
    if "model" in body:
        out["model"] = body["model"]
    messages: list[JSONDict] = []
    system_text = _system_text(body.get("system"))
    if system_text:
        messages.append({"role": "system", "content": system_text})
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequestError("messages: required, a list of {role, content} objects", param="messages")
    for i, message in enumerate(raw_messages):
        messages.extend(_message_to_openai(message, where=f"messages[{i}]"))
    out["messages"] = messages

    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        out["stop"] = list(stop)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out["user"] = str(metadata["user_id"])
    if body.get("stream"):
        out["stream"] = True
        # Always ask for usage: the Anthropic stream reports it and the gateway accounts for it.
        out["stream_options"] = {"include_usage": True}
    elif "stream" in body:
        out["stream"] = False

    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool_to_openai(tool, where=f"tools[{i}]") for i, tool in enumerate(tools)]
        out.update(_tool_choice_to_openai(body.get("tool_choice")))
    return out


def _system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        texts: list[str] = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise InvalidRequestError(
                    f"system[{i}]: system blocks must be text blocks ({{'type': 'text', 'text': ...}})",
                    param="system",
                )
            texts.append(str(block.get("text", "")))
        return "\n\n".join(t for t in texts if t)
    raise InvalidRequestError("system: must be a string or a list of text blocks", param="system")


def _message_to_openai(message: Any, *, where: str) -> list[JSONDict]:
    if not isinstance(message, dict):
        raise InvalidRequestError(f"{where}: each message must be an object with 'role' and 'content'")
    role = message.get("role")
    content = message.get("content")
    if role == "user":
        return _user_to_openai(content, where=where)
    if role == "assistant":
        return [_assistant_to_openai(content, where=where)]
    raise InvalidRequestError(
        f"{where}: role {role!r} is not valid in Anthropic messages; use 'user' or 'assistant' "
        "(put system instructions in the top-level 'system' field)"
    )


def _blocks(content: Any, *, where: str) -> list[JSONDict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise InvalidRequestError(f"{where}.content: must be a string or a list of content blocks")


def _user_to_openai(content: Any, *, where: str) -> list[JSONDict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[JSONDict] = []
    parts: list[JSONDict] = []
    for j, block in enumerate(_blocks(content, where=where)):
        bwhere = f"{where}.content[{j}]"
        kind = block.get("type")
        if kind == "tool_result":
            message, images = _tool_result_to_openai(block, where=bwhere)
            tool_messages.append(message)
            parts.extend(images)
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(
                {
                    "type": "image_url",
                    "image_url": {"url": anthropic_image_to_openai_url(block, where=bwhere)},
                }
            )
        elif kind == "document":
            parts.append(_document_to_openai(block, where=bwhere))
        else:
            raise InvalidRequestError(
                f"{bwhere}: content block type {kind!r} cannot be sent to an OpenAI-format model; "
                "use text, image, document or tool_result blocks"
            )
    messages = list(tool_messages)
    if parts or not tool_messages:
        messages.append({"role": "user", "content": _user_content(parts)})
    return messages


def _user_content(parts: list[JSONDict]) -> str | list[JSONDict]:
    """A single text part is sent as a plain string, which every OpenAI-compatible server takes."""
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _tool_result_to_openai(block: JSONDict, *, where: str) -> tuple[JSONDict, list[JSONDict]]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise InvalidRequestError(f"{where}: a tool_result block needs the 'tool_use_id' it answers")
    content = block.get("content")
    texts: list[str] = []
    images: list[JSONDict] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, item in enumerate(content):
            iwhere = f"{where}.content[{k}]"
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                texts.append(str(item.get("text", "")))
            elif kind == "image":
                url = anthropic_image_to_openai_url(item, where=iwhere)
                images.append({"type": "image_url", "image_url": {"url": url}})
            else:
                raise InvalidRequestError(
                    f"{iwhere}: tool_result content of type {kind!r} cannot be sent to an "
                    "OpenAI-format model; use text or image blocks"
                )
    elif content is not None:
        raise InvalidRequestError(f"{where}.content: must be a string or a list of text/image blocks")
    text = "\n".join(texts)
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _document_to_openai(block: JSONDict, *, where: str) -> JSONDict:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if isinstance(source, dict) and kind == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if isinstance(source, dict) and kind == "base64":
        media_type = source.get("media_type", "application/pdf")
        file: JSONDict = {"file_data": f"data:{media_type};base64,{source.get('data', '')}"}
        file["filename"] = str(block.get("title") or "document.pdf")
        return {"type": "file", "file": file}
    raise InvalidRequestError(
        f"{where}: document source type {kind!r} cannot be sent to an OpenAI-format model; "
        "send the document as base64 or as text"
    )


def _assistant_to_openai(content: Any, *, where: str) -> JSONDict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    tool_calls: list[JSONDict] = []
    for j, block in enumerate(_blocks(content, where=where)):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            tool_calls.append(_tool_use_to_openai(block, where=f"{where}.content[{j}]"))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # signed by Anthropic, meaningless to another model
        else:
            raise InvalidRequestError(
                f"{where}.content[{j}]: assistant block type {kind!r} cannot be sent to an "
                "OpenAI-format model; use text and tool_use blocks"
            )
    message: JSONDict = {"role": "assistant"}
    # Anthropic splits one answer into several text blocks (around citations); they join seamlessly.
    message["content"] = "".join(texts) if texts or not tool_calls else None
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _tool_use_to_openai(block: JSONDict, *, where: str) -> JSONDict:
    tool_id = block.get("id")
    name = block.get("name")
    if not isinstance(tool_id, str) or not isinstance(name, str):
        raise InvalidRequestError(f"{where}: a tool_use block needs a string 'id' and 'name'")
    arguments = orjson.dumps(block.get("input", {})).decode()
    return {"id": tool_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_to_openai(tool: Any, *, where: str) -> JSONDict:
    if not isinstance(tool, dict):
        raise InvalidRequestError(f"{where}: each tool must be an object")
    kind = tool.get("type")
    if "input_schema" not in tool or kind not in (None, "custom"):
        raise InvalidRequestError(
            f"{where}: tool {tool.get('name')!r} (type {kind!r}) is an Anthropic server tool with no "
            "OpenAI equivalent; remove it or define it as a custom tool with an input_schema",
            param="tools",
        )
    function: JSONDict = {"name": tool.get("name")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: Any) -> JSONDict:
    """``tool_choice`` and ``parallel_tool_calls`` for the OpenAI body (empty when not given)."""
    if choice is None:
        return {}
    if not isinstance(choice, dict):
        raise InvalidRequestError(
            "tool_choice: must be an object such as {'type': 'auto'}", param="tool_choice"
        )
    kind = choice.get("type")
    out: JSONDict = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        if not choice.get("name"):
            raise InvalidRequestError(
                "tool_choice: type 'tool' needs the 'name' of the tool to call", param="tool_choice"
            )
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise InvalidRequestError(
            f"tool_choice: type {kind!r} is not one of auto, any, tool, none", param="tool_choice"
        )
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False
    return out
