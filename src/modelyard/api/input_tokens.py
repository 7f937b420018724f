"""``POST /v1/responses/input_tokens``: OpenAI's input-token count, answered by modelyard's counter
for the deployment that would serve the model.

Request (OpenAI Responses shape): ``model`` (required here: it picks the tokenizer), ``input`` (a
string or a list of input items: messages with text / image parts, ``function_call`` and
``function_call_output`` items), ``instructions``, ``tools`` (function tools). As a modelyard
extension, a chat-completions ``messages`` array (with chat ``tools``) is accepted instead of
``input``. Response: ``{"object": "response.input_tokens", "input_tokens": N}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.api.asgi import RequestContext, Send, send_json
from modelyard.api.validate import check_model, check_openai_chat
from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict, WireProtocol
from modelyard.state import AppState

__all__ = ["input_tokens", "responses_input_to_chat"]

_TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text")


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _content(content: Any, where: str) -> str | list[JSONDict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail(f"'{where}' must be a string or an array of content parts", where)
    parts: list[JSONDict] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id") or ""
            parts.append({"type": "image_url", "image_url": {"url": str(url), "detail": part.get("detail")}})
        elif kind in ("input_file", "input_audio"):
            parts.append({"type": "text", "text": orjson.dumps(part).decode()})
        else:
            raise _fail(
                f"'{where}[{j}]' must be a content part of type input_text, input_image or input_file",
                f"{where}[{j}]",
            )
    return parts


def responses_input_to_chat(body: JSONDict) -> list[JSONDict]:
    """Chat-completions messages for a Responses ``instructions`` + ``input``."""
    messages: list[JSONDict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _fail("'instructions' must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list):
        raise _fail("'input' must be a string or an array of input items", "input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _fail(f"'{where}' must be an object (a message or another input item)", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _fail(
                    f"'{where}.role' must be user, assistant, system or developer; got {role!r}",
                    f"{where}.role",
                )
            messages.append({"role": role, "content": _content(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            if not isinstance(item.get("name"), str):
                raise _fail(f"'{where}.name' is required for a function_call item", f"{where}.name")
            call = {
                "id": str(item.get("call_id") or item.get("id") or f"call_{i}"),
                "type": "function",
                "function": {"name": item["name"], "arguments": str(item.get("arguments") or "")},
            }
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        elif kind == "reasoning":
            summary = item.get("summary") or []
            text = " ".join(s.get("text", "") for s in summary if isinstance(s, dict))
            if text:
                messages.append({"role": "assistant", "content": text})
        else:
            raise _fail(
                f"'{where}.type' {kind!r} is not counted here; send message, function_call, "
                "function_call_output or reasoning items",
                f"{where}.type",
            )
    return messages


def _chat_tools(tools: Any) -> list[JSONDict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _fail("'tools' must be an array of tools", "tools")
    out: list[JSONDict] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _fail(f"'tools[{i}]' must be an object", f"tools[{i}]")
        if isinstance(tool.get("function"), dict):  # already chat-completions shaped
            out.append(tool)
        elif tool.get("type") == "function" and isinstance(tool.get("name"), str):
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            out.append({"type": "function", "function": fn})
        else:
            out.append({"type": "function", "function": {"name": str(tool.get("type")), "parameters": tool}})
    return out


async def input_tokens(state: AppState, body: dict[str, Any], ctx: RequestContext, send: Send) -> None:
    check_model(body)
    if "messages" in body:
        if "input" in body:
            raise _fail("send either 'input' (Responses items) or 'messages' (chat), not both", "input")
        chat: JSONDict = {"model": body["model"], "messages": body["messages"]}
        if body.get("tools") is not None:
            chat["tools"] = body["tools"]
        server = state.config.server
        check_openai_chat(chat, max_messages=server.max_messages, max_output_tokens=server.max_output_tokens)
    elif "input" in body:
        chat = {"model": body["model"], "messages": responses_input_to_chat(body)}
        tools = _chat_tools(body.get("tools"))
        if tools:
            chat["tools"] = tools
    else:
        raise _fail(
            "missing 'input' (a string or an array of input items); modelyard also accepts a "
            "chat-completions 'messages' array",
            "input",
        )
    target = state.registry.resolve(body["model"])
    ctx.model = str(body["model"])
    ctx.deployment = target.label
    assert state.context is not None
    tokens = await state.context.count_for_target(target, chat, WireProtocol.OPENAI, ctx.request_id)
    await send_json(send, 200, {"object": "response.input_tokens", "input_tokens": tokens}, ctx)
