"""OpenAI Chat Completions request -> Anthropic Messages request.

Used when a caller speaking the OpenAI protocol is served by an Anthropic-format model.

Choices worth knowing:

* ``system`` and ``developer`` messages, wherever they appear, become the top-level ``system``
  string (joined with a blank line): Anthropic has no system role inside ``messages``. When a
  system part carries a prompt-cache ``cache_control`` mark, ``system`` is a list of text blocks
  instead, each keeping its mark; ``cache_control`` on user text parts is kept too (untouched).
* Anthropic requires user and assistant turns to alternate, so consecutive messages of the same
  role are merged into one; ``tool`` messages become ``tool_result`` blocks of a user message, and
  ``tool_result`` blocks are put first in their user message as Anthropic requires.
* ``response_format`` has no Anthropic equivalent: ``json_object`` and ``json_schema`` become an
  instruction appended to the system prompt (see :func:`json_instruction`).
* ``temperature`` above 1 is clamped to 1 (Anthropic's range is 0..1).
* ``n > 1`` and ``logprobs`` raise InvalidRequestError. ``seed``, penalties, ``logit_bias``,
  ``reasoning_effort``, ``store`` and ``metadata`` are dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict
from modelyard.translate._content import openai_image_to_anthropic, openai_text_of, parse_base64_data_url
from modelyard.translate.request_to_openai import TOOL_ERROR_PREFIX

_MAX_ANTHROPIC_TEMPERATURE = 1.0


def openai_request_to_anthropic(body: JSONDict, *, default_max_tokens: int = 4096) -> JSONDict:
    """Translate an OpenAI chat.completions request body into an Anthropic Messages body.

    ``default_max_tokens`` is used when the caller set neither ``max_completion_tokens`` nor
    ``max_tokens`` (Anthropic requires ``max_tokens``).
    """
    _reject_unsupported(body)
    out: JSONDict = {}
    if "model" in body:
        out["model"] = body["model"]
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequestError("messages: required, a list of {role, content} objects", param="messages")
    system_parts: list[str] = []
    system_marks: list[Any] = []  # each system part's cache_control (None: unmarked)
    turns: list[tuple[str, list[JSONDict]]] = []
    for i, message in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"{where}: each message must be an object with 'role' and 'content'")
        role = message.get("role")
        if role in ("system", "developer"):
            text = openai_text_of(message.get("content"), where=where)
            if text:
                system_parts.append(text)
                system_marks.append(_cache_control_of(message))
        elif role == "user":
            turns.append(("user", _user_blocks(message.get("content"), where=where)))
        elif role == "assistant":
            turns.append(("assistant", _assistant_blocks(message, where=where)))
        elif role == "tool":
            turns.append(("user", [_tool_message_to_result(message, where=where)]))
        else:
            raise InvalidRequestError(
                f"{where}: role {role!r} cannot be sent to an Anthropic model; use system, developer, "
                "user, assistant or tool (legacy 'function' messages: use tools and tool messages)"
            )
    instruction = json_instruction(body.get("response_format"))
    if instruction:
        system_parts.append(instruction)
    if any(mark is not None for mark in system_marks):
        # Prompt-cache breakpoints survive: the system prompt goes as blocks, marks in place.
        out["system"] = [
            {"type": "text", "text": text, **({"cache_control": mark} if mark is not None else {})}
            for text, mark in zip(system_parts, [*system_marks, None], strict=False)
        ]
    elif system_parts:
        out["system"] = "\n\n".join(system_parts)
    out["messages"] = _merge_turns(turns)

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out["max_tokens"] = max_tokens if max_tokens is not None else default_max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = list(stop)
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        out["temperature"] = min(float(temperature), _MAX_ANTHROPIC_TEMPERATURE)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if "stream" in body:
        out["stream"] = bool(body["stream"])

    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool_to_anthropic(tool, where=f"tools[{i}]") for i, tool in enumerate(tools)]
        choice = _tool_choice_to_anthropic(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    return out


def _reject_unsupported(body: JSONDict) -> None:
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported by Anthropic models; send n=1 (or omit it) and make several requests",
            param="n",
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InvalidRequestError(
            "logprobs are not supported by Anthropic models; remove 'logprobs' and 'top_logprobs'",
            param="logprobs",
        )


def json_instruction(response_format: Any) -> str:
    """The system-prompt instruction standing in for OpenAI's ``response_format`` ('' for none)."""
    if not isinstance(response_format, dict):
        return ""
    kind = response_format.get("type")
    if kind == "json_object":
        return "Respond with only a JSON object, with no text before or after it."
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return "Respond with only a JSON object, with no text before or after it."
        return (
            "Respond with only a JSON object matching this JSON schema, with no text before or after it: "
            + orjson.dumps(schema).decode()
        )
    return ""


def _user_blocks(content: Any, *, where: str) -> list[JSONDict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content: must be a string or a list of content parts")
    blocks: list[JSONDict] = []
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = str(part.get("text", ""))
            if text:  # Anthropic rejects empty text blocks
                block: JSONDict = {"type": "text", "text": text}
                if isinstance(part.get("cache_control"), dict):
                    block["cache_control"] = part["cache_control"]  # passed through untouched
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(openai_image_to_anthropic(part, where=pwhere))
        elif kind == "file":
            blocks.append(_file_to_document(part, where=pwhere))
        else:
            raise InvalidRequestError(
                f"{pwhere}: content part of type {kind!r} cannot be sent to an Anthropic model; "
                "use text, image_url or file parts"
            )
    return blocks


def _cache_control_of(message: JSONDict) -> Any:
    """A system message's ``cache_control`` (on the message, or on its last marked part)."""
    mark = message.get("cache_control")
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("cache_control"), dict):
                mark = part["cache_control"]
    return mark if isinstance(mark, dict) else None


def _file_to_document(part: JSONDict, *, where: str) -> JSONDict:
    file = part.get("file")
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise InvalidRequestError(
            f"{where}: file parts need inline 'file_data' (a base64 data: URL); uploaded file ids "
            "cannot be sent to an Anthropic model"
        )
    media_type, data = parse_base64_data_url(data_url, where=where)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks(message: JSONDict, *, where: str) -> list[JSONDict]:
    blocks: list[JSONDict] = []
    content = message.get("content")
    if isinstance(content, list):
        text = openai_text_of(content, where=where)
    elif isinstance(content, str):
        text = content
    elif content is None:
        text = ""
    else:
        raise InvalidRequestError(f"{where}.content: must be a string, a list of text parts, or null")
    if message.get("refusal") and not text:
        text = str(message["refusal"])
    if text:
        blocks.append({"type": "text", "text": text})
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise InvalidRequestError(f"{where}.tool_calls: must be a list")
    for j, call in enumerate(tool_calls):
        blocks.append(_tool_call_to_tool_use(call, where=f"{where}.tool_calls[{j}]"))
    return blocks


def _tool_call_to_tool_use(call: Any, *, where: str) -> JSONDict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict):
        raise InvalidRequestError(f"{where}: a tool call needs 'id' and 'function': {{name, arguments}}")
    call_id = call.get("id")
    name = function.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
        raise InvalidRequestError(f"{where}: a tool call needs a string 'id' and 'function.name'")
    arguments = function.get("arguments")
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        tool_input: Any = {}
    elif isinstance(arguments, str):
        try:
            tool_input = orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"{where}: tool call {call_id!r} ({name}) has arguments that are not valid JSON ({exc}); "
                "send function.arguments as a JSON object encoded as a string"
            ) from exc
    else:
        tool_input = arguments
    if not isinstance(tool_input, dict):
        raise InvalidRequestError(
            f"{where}: tool call {call_id!r} ({name}) has arguments that are not a JSON object; "
            "Anthropic tool inputs must be objects, e.g. '{\"x\": 1}'"
        )
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def _tool_message_to_result(message: JSONDict, *, where: str) -> JSONDict:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(f"{where}: a tool message needs the 'tool_call_id' it answers")
    text = openai_text_of(message.get("content"), where=where)
    block: JSONDict = {"type": "tool_result", "tool_use_id": call_id}
    if text.startswith(TOOL_ERROR_PREFIX):
        text = text[len(TOOL_ERROR_PREFIX) :]
        block["is_error"] = True
    block["content"] = text
    return block


def _merge_turns(turns: list[tuple[str, list[JSONDict]]]) -> list[JSONDict]:
    """Merge consecutive same-role turns; tool results first in each user message."""
    merged: list[tuple[str, list[JSONDict]]] = []
    for role, blocks in turns:
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    messages: list[JSONDict] = []
    for role, blocks in merged:
        if role == "user":
            results = [b for b in blocks if b["type"] == "tool_result"]
            blocks = results + [b for b in blocks if b["type"] != "tool_result"]
        content: str | list[JSONDict]
        if not blocks:
            content = ""
        elif len(blocks) == 1 and blocks[0]["type"] == "text":
            content = blocks[0]["text"]
        else:
            content = blocks
        messages.append({"role": role, "content": content})
    return messages


def _tool_to_anthropic(tool: Any, *, where: str) -> JSONDict:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequestError(
            f"{where}: tool type {kind!r} cannot be sent to an Anthropic model; use "
            "{'type': 'function', 'function': {name, description, parameters}}",
            param="tools",
        )
    out: JSONDict = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice_to_anthropic(choice: Any, parallel_tool_calls: Any) -> JSONDict | None:
    out: JSONDict
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequestError(
            "tool_choice: must be 'auto', 'required', 'none' or "
            "{'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    if parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing asked: leave Anthropic's default
    return out
