"""Checks of request bodies: every problem is a 400 that names the field and says what is expected.

Only what the gateway relies on, or what an upstream would reject late and expensively, is
checked here; unknown fields pass through to the upstream untouched (new API features keep working).
"""

from __future__ import annotations

from typing import Any

from modelyard.errors import InvalidRequestError

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
OPENAI_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
ANTHROPIC_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "search_result",
        "container_upload",
    }
)


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "list": "array",
            "dict": "object",
        }.get(type(value).__name__, "value")
    )


def _one_of(value: Any, names: frozenset[str]) -> bool:
    """``value in names`` for any JSON value (a list or object as a key would raise TypeError)."""
    return isinstance(value, str) and value in names


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _fail("missing required field 'model' (the model name; GET /v1/models lists them)", "model")
    if not isinstance(model, str) or not model:
        raise _fail(f"'model' must be a non-empty string, got {_type_name(model)}", "model")
    return model


def _check_range(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _fail(f"'{name}' must be a number, got {_type_name(value)}", name)
    if not low <= value <= high:
        raise _fail(f"'{name}' must be between {low:g} and {high:g}, got {value}", name)


def check_max_tokens(body: dict[str, Any], name: str, limit: int, *, required: bool = False) -> None:
    value = body.get(name)
    if value is None:
        if required:
            raise _fail(f"missing required field '{name}' (the most tokens to generate)", name)
        return
    if not _is_int(value):
        raise _fail(f"'{name}' must be an integer, got {_type_name(value)}", name)
    if value < 1:
        raise _fail(f"'{name}' must be at least 1, got {value}", name)
    if value > limit:
        raise _fail(
            f"'{name}' is {value}; the most this gateway allows is {limit} (server.max_output_tokens)", name
        )


def _check_stop(value: Any, name: str) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail(f"'{name}' must be a string or an array of strings", name)


def _check_bool(body: dict[str, Any], name: str) -> None:
    if name in body and body[name] is not None and not isinstance(body[name], bool):
        raise _fail(f"'{name}' must be true or false, got {_type_name(body[name])}", name)


def _check_messages_list(body: dict[str, Any], max_messages: int) -> list[Any]:
    messages = body.get("messages")
    if messages is None:
        raise _fail("missing required field 'messages' (an array of {role, content} objects)", "messages")
    if not isinstance(messages, list):
        raise _fail(f"'messages' must be an array, got {_type_name(messages)}", "messages")
    if not messages:
        raise _fail("'messages' must contain at least one message", "messages")
    if len(messages) > max_messages:
        raise _fail(
            f"'messages' has {len(messages)} entries; the limit is {max_messages} (server.max_messages)",
            "messages",
        )
    return messages


def check_openai_chat(body: dict[str, Any], *, max_messages: int, max_output_tokens: int) -> None:
    check_model(body)
    for i, message in enumerate(_check_messages_list(body, max_messages)):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _fail(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in OPENAI_ROLES:  # (a dict is unhashable: no `in`)
            raise _fail(
                f"'{where}.role' must be one of {', '.join(sorted(OPENAI_ROLES))}; got {role!r}",
                f"{where}.role",
            )
        content = message.get("content")
        if content is None:
            # Only an assistant turn may omit content (it then carries tool_calls).
            if role != "assistant":
                raise _fail(f"'{where}.content' is required for a {role} message", f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not _one_of(part.get("type"), OPENAI_PART_TYPES):
                    raise _fail(
                        f"'{where}.content[{j}]' must be a content part with type one of "
                        f"{', '.join(sorted(OPENAI_PART_TYPES))}",
                        f"{where}.content[{j}]",
                    )
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise _fail(f"'{where}.content[{j}].text' must be a string", f"{where}.content[{j}].text")
                if part["type"] == "image_url" and not isinstance(
                    (part.get("image_url") or {}).get("url"), str
                ):
                    raise _fail(
                        f"'{where}.content[{j}].image_url.url' must be a string (https:// or data: URL)",
                        f"{where}.content[{j}].image_url",
                    )
        elif not isinstance(content, str):
            raise _fail(
                f"'{where}.content' must be a string or an array of content parts", f"{where}.content"
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail(f"'{where}.tool_call_id' is required for a tool message", f"{where}.tool_call_id")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise _fail(f"'{where}.tool_calls' must be an array", f"{where}.tool_calls")
            for j, call in enumerate(tool_calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(fn, dict)
                    or not isinstance(fn.get("name"), str)
                    or not isinstance(call.get("id"), str)
                ):
                    raise _fail(
                        f"'{where}.tool_calls[{j}]' needs 'id' and 'function' with 'name' and 'arguments'",
                        f"{where}.tool_calls[{j}]",
                    )
    for name in ("max_tokens", "max_completion_tokens"):
        check_max_tokens(body, name, max_output_tokens)
    _check_range(body, "temperature", 0, 2)
    _check_range(body, "top_p", 0, 1)
    _check_range(body, "presence_penalty", -2, 2)
    _check_range(body, "frequency_penalty", -2, 2)
    _check_bool(body, "stream")
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= 128):
        raise _fail("'n' must be an integer from 1 to 128", "n")
    _check_stop(body.get("stop"), "stop")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _fail(f"'seed' must be an integer, got {_type_name(seed)}", "seed")
    for name in ("user",):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _fail(f"'{name}' must be a string", name)
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _fail("'metadata' must be an object of string keys and values", "metadata")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("'tools' must be an array of {type: 'function', function: {...}}", "tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _fail(
                    f"'tools[{i}]' must be {{type: 'function', function: {{name, parameters}}}}",
                    f"tools[{i}]",
                )
    choice = body.get("tool_choice")
    if choice is not None and not (choice in ("none", "auto", "required") or isinstance(choice, dict)):
        raise _fail(
            "'tool_choice' must be 'none', 'auto', 'required' or {type: 'function', function: {name}}",
            "tool_choice",
        )
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise _fail(
                "'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format"
            )
        if kind == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("name"), str):
            raise _fail("'response_format.json_schema' needs a 'name' and a 'schema'", "response_format")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _fail("'stream_options' must be an object", "stream_options")
        if not body.get("stream"):
            raise _fail("'stream_options' is only allowed when 'stream' is true", "stream_options")


def check_anthropic_messages(
    body: dict[str, Any], *, max_messages: int, max_output_tokens: int, count_only: bool = False
) -> None:
    check_model(body)
    if not count_only:
        check_max_tokens(body, "max_tokens", max_output_tokens, required=True)
    for i, message in enumerate(_check_messages_list(body, max_messages)):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _fail(f"{where}: each message must be an object with 'role' and 'content'", where)
        if message.get("role") not in ("user", "assistant"):
            raise _fail(
                f"{where}.role: must be 'user' or 'assistant' (put system prompts in the top-level "
                f"'system' field); got {message.get('role')!r}",
                f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not _one_of(block.get("type"), ANTHROPIC_BLOCK_TYPES):
                    got = block.get("type") if isinstance(block, dict) else _type_name(block)
                    raise _fail(
                        f"{where}.content.{j}: unknown content block type {got!r}", f"{where}.content.{j}"
                    )
                if block["type"] == "text" and not isinstance(block.get("text"), str):
                    raise _fail(f"{where}.content.{j}.text: must be a string", f"{where}.content.{j}.text")
                if block["type"] == "tool_use" and not (
                    isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
                ):
                    raise _fail(
                        f"{where}.content.{j}: a tool_use block needs 'id', 'name' and 'input'",
                        f"{where}.content.{j}",
                    )
                if block["type"] == "tool_result" and not isinstance(block.get("tool_use_id"), str):
                    raise _fail(
                        f"{where}.content.{j}.tool_use_id: required for a tool_result block",
                        f"{where}.content.{j}",
                    )
        elif not isinstance(content, str):
            raise _fail(
                f"{where}.content: must be a string or an array of content blocks", f"{where}.content"
            )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _fail("system: must be a string or an array of text blocks", "system")
    _check_range(body, "temperature", 0, 1)
    _check_range(body, "top_p", 0, 1)
    _check_bool(body, "stream")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _fail("stop_sequences: must be an array of strings", "stop_sequences")
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
    ):
        raise _fail("tools: must be an array of {name, description, input_schema}", "tools")
    choice = body.get("tool_choice")
    if choice is not None and (
        not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        raise _fail("tool_choice: must be {type: 'auto' | 'any' | 'tool' | 'none'}", "tool_choice")
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive")
    ):
        raise _fail("thinking: must be {type: 'enabled', budget_tokens: N} or {type: 'disabled'}", "thinking")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _fail("metadata: must be an object", "metadata")


def embedding_inputs(body: dict[str, Any], max_inputs: int) -> list[str]:
    """The texts to embed, from ``input`` (a string or an array of strings)."""
    check_model(body)
    if "input" not in body:
        raise _fail("missing required field 'input' (a string or an array of strings)", "input")
    raw = body["input"]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(_is_int(x) or isinstance(x, list) for x in raw):
        raise _fail("'input' as token arrays is not supported here; send the text instead", "input")
    else:
        raise _fail("'input' must be a string or an array of strings", "input")
    if not inputs:
        raise _fail("'input' must not be empty", "input")
    if len(inputs) > max_inputs:
        raise _fail(f"'input' has {len(inputs)} items; the limit is {max_inputs}", "input")
    if any(not s for s in inputs):
        raise _fail("'input' must not contain empty strings", "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _fail("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return inputs
